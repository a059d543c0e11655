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
