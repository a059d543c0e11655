//! Variables: precedence, predefined values, dotenv between jobs, masking.

use crate::Project;

#[test]
fn precedence_pipeline_over_job_over_global_over_predefined() {
    let p = Project::new(
        "variables:\n  WHO: global\n  ONLY_GLOBAL: g\njob:\n  variables:\n    WHO: job\n    REF: \"$CI_COMMIT_REF_NAME\"\n  script:\n    - echo \"who=$WHO only=$ONLY_GLOBAL ref=$REF cli=$CLI\"\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert!(r.log("job").contains(&"who=job only=g ref=main cli=".to_string()), "{:?}", r.log("job"));
    let r = p.run(&["--executor", "shell", "--var", "WHO=cli", "--var", "CLI=yes"]);
    assert!(r.log("job").contains(&"who=cli only=g ref=main cli=yes".to_string()), "{:?}", r.log("job"));
}

#[test]
fn predefined_variables_describe_the_commit_and_job() {
    let p = Project::new(
        "show:\n  stage: test\n  script:\n    - echo \"$CI_JOB_NAME $CI_JOB_STAGE $CI_COMMIT_BRANCH ${#CI_COMMIT_SHA} $CI_COMMIT_SHORT_SHA $CI_PIPELINE_SOURCE\"\n    - test \"$CI_PROJECT_DIR\" = \"$PWD\"\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let line = r.log("show").into_iter().find(|l| l.starts_with("show ")).unwrap_or_default();
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(&parts[..4], ["show", "test", "main", "40"], "{line}");
    assert_eq!(parts[4].len(), 8);
    assert_eq!(parts[5], "push");
}

#[test]
fn dotenv_reports_reach_later_jobs() {
    let p = Project::new(
        "stages: [a, b]\nversion:\n  stage: a\n  script:\n    - echo VERSION=1.2.3 > build.env\n    - echo 'IMAGE_TAG=\"v1\"' >> build.env\n  artifacts:\n    reports:\n      dotenv: build.env\nuse:\n  stage: b\n  script:\n    - echo \"version=$VERSION tag=$IMAGE_TAG\"\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    // GitLab keeps quotes in dotenv values.
    assert!(r.log("use").contains(&"version=1.2.3 tag=\"v1\"".to_string()), "{:?}", r.log("use"));
}

#[test]
fn secrets_are_masked_even_when_split_across_writes() {
    let p = Project::new(
        "leak:\n  script:\n    - printf 'token=%s' \"${SECRET%%-*}\"; sleep 0.2; printf -- '-%s\\n' \"${SECRET#*-}\"\n    - echo \"again $SECRET\"\n",
    );
    let secret = "s3cr3t-value-42";
    let arg = format!("SECRET={secret}");
    let r = p.run(&["--executor", "shell", "--secret", &arg]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret), "secret on the terminal:\n{}", r.debug());
    assert!(r.log("leak").contains(&"token=[MASKED]".to_string()), "{:?}", r.log("leak"));
    assert!(r.log("leak").contains(&"again [MASKED]".to_string()));
    let logs = p.path().join(".piste/pipelines");
    for e in walk(&logs) {
        let text = std::fs::read(&e).unwrap();
        assert!(!text.windows(secret.len()).any(|w| w == secret.as_bytes()), "secret in {}", e.display());
    }
}

#[test]
fn variable_values_are_data_not_shell() {
    let marker = std::env::temp_dir().join(format!("piste-pwned-{}", std::process::id()));
    let hostile = format!("$(touch {})", marker.display());
    let p = Project::new("job:\n  script:\n    - 'echo \"value: $HOSTILE\"'\n");
    let arg = format!("HOSTILE={hostile}");
    let r = p.run(&["--executor", "shell", "--var", &arg]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(r.log("job").contains(&format!("value: {hostile}")), "{:?}", r.log("job"));
    assert!(!marker.exists(), "a variable value was executed");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out
}

/// GitLab's predefined variables a job sees while it runs: `CI_JOB_STATUS` is `running` in the
/// script (the outcome in `after_script`), `CI_JOB_STARTED_AT` and `CI_PIPELINE_CREATED_AT` are
/// ISO 8601 UTC, `CI_PIPELINE_IID` counts the project's pipelines, and a job with
/// `environment:` gets `CI_ENVIRONMENT_NAME/SLUG/URL/ACTION/TIER`.
#[test]
fn run_time_predefined_variables_are_gitlabs() {
    let p = Project::new(
        "deploy:\n  environment:\n    name: review/$CI_COMMIT_REF_NAME\n    url: https://$CI_COMMIT_REF_SLUG.example.test\n  script:\n    - echo \"SAW status=$CI_JOB_STATUS iid=$CI_PIPELINE_IID env=$CI_ENVIRONMENT_NAME slug=$CI_ENVIRONMENT_SLUG url=$CI_ENVIRONMENT_URL action=$CI_ENVIRONMENT_ACTION tier=$CI_ENVIRONMENT_TIER\"\n    - echo \"SAW started=$CI_JOB_STARTED_AT created=$CI_PIPELINE_CREATED_AT\"\n    - echo \"SAW shared=$CI_SHARED_ENVIRONMENT disposable=${CI_DISPOSABLE_ENVIRONMENT:-unset}\"\n  after_script:\n    - echo \"SAW after=$CI_JOB_STATUS\"\n",
    );
    let saw = |r: &crate::Run| r.log("deploy").into_iter().filter_map(|l| l.strip_prefix("SAW ").map(str::to_owned)).collect::<Vec<_>>();
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let lines = saw(&r);
    let slug = pipeline_spec::predefined::environment_slug("review/main");
    assert_eq!(
        lines[0],
        format!("status=running iid=1 env=review/main slug={slug} url=https://main.example.test action=start tier=development")
    );
    let (started, created) = lines[1].split_once(' ').unwrap();
    assert!(iso8601_utc(started.strip_prefix("started=").unwrap()), "{}", lines[1]);
    assert!(iso8601_utc(created.strip_prefix("created=").unwrap()), "{}", lines[1]);
    assert_eq!(lines[2], "shared=true disposable=unset", "the shell executor's environment is shared");
    assert_eq!(lines[3], "after=success");
    let again = p.run(&["--executor", "shell"]);
    assert!(saw(&again)[0].contains(" iid=2 "), "{:?}", saw(&again));
}

/// Concurrent `piste run`s of one project never share a `CI_PIPELINE_IID` (nor a log folder):
/// the number is taken under a lock of `.piste/pipeline-iid.lock`. (Whether their jobs can
/// share the project's workspace slots is another matter: only the numbers are checked.)
#[test]
fn concurrent_runs_get_distinct_pipeline_iids() {
    let p = Project::new("job:\n  script: [\"true\"]\n");
    let runs: Vec<std::process::Child> = (0..4)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_piste"))
                .args(["run", "--executor", "shell", "--format", "json"])
                .current_dir(p.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut iids: Vec<u64> = runs
        .into_iter()
        .map(|c| {
            let r = crate::Run::from(c.wait_with_output().unwrap());
            let finished = r.events.iter().find(|e| e["event"] == "pipeline_finished").unwrap_or_else(|| panic!("{}", r.debug()));
            finished["pipeline"].as_u64().expect("its number")
        })
        .collect();
    iids.sort();
    assert_eq!(iids, [1, 2, 3, 4]);
    assert_eq!(std::fs::read_to_string(p.path().join(".piste/pipeline-iid")).unwrap().trim(), "4");
    for n in 1..=4 {
        assert!(p.path().join(format!(".piste/pipelines/{n}")).is_dir());
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn iso8601_utc(s: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:ddZ";
    s.len() == shape.len() && s.chars().zip(shape.chars()).all(|(c, f)| if f == 'd' { c.is_ascii_digit() } else { c == f })
}

/// `piste run` issues no ID token (a piste server does): the run warns where `id_tokens` is
/// written and says how to give the value, and a `--secret` of that name is what the job gets,
/// masked.
#[test]
fn id_tokens_are_not_issued_locally_and_a_secret_gives_the_value() {
    let p = Project::new(
        "vault:\n  id_tokens:\n    VAULT_ID_TOKEN:\n      aud: https://vault.example.test\n  script:\n    - echo \"jwt=[$VAULT_ID_TOKEN] set=${VAULT_ID_TOKEN:+yes}\"\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(r.stderr.contains("no ID token is issued here, so `$VAULT_ID_TOKEN` stays unset"), "{}", r.debug());
    assert!(r.stderr.contains("`piste run --secret VAULT_ID_TOKEN=…`"), "{}", r.debug());
    assert!(r.log("vault").contains(&"jwt=[] set=".to_string()), "{:?}", r.log("vault"));
    let token = "eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl";
    let r = p.run(&["--executor", "shell", "--secret", &format!("VAULT_ID_TOKEN={token}")]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(r.log("vault").contains(&"jwt=[[MASKED]] set=yes".to_string()), "{:?}", r.log("vault"));
    assert!(!r.stdout.contains(token) && !r.stderr.contains(token), "{}", r.debug());
}
