//! Reuse of job results under `piste run` (shell executor): a job whose inputs did not change
//! since it passed is recorded as passed with the earlier result; what it reads decides.
//!
//! Every job appends a line to `$RUNS/<job>` (a directory outside the project), so "ran" and
//! "reused" are counted from what the processes did, not only from what piste says.

use serde_json::Value;

use crate::{Project, Run};

struct Counter {
    dir: tempfile::TempDir,
}

impl Counter {
    fn new() -> Counter {
        Counter { dir: tempfile::tempdir().unwrap() }
    }

    fn var(&self) -> String {
        format!("RUNS={}", self.dir.path().display())
    }

    /// How many times `job` ran.
    fn runs(&self, job: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join(job)).map_or(0, |s| s.lines().count())
    }
}

fn run(p: &Project, c: &Counter, extra: &[&str]) -> Run {
    let var = c.var();
    let mut args = vec!["--executor", "shell", "--jobs", "2", "--var", var.as_str()];
    args.extend_from_slice(extra);
    p.run(&args)
}

fn reused_from<'a>(r: &'a Run, job: &str) -> Option<&'a Value> {
    r.finished(job).last().and_then(|e| e.get("reused_from"))
}

const COUNT: &str = "echo ran >> \"$RUNS/$CI_JOB_NAME\"";

fn pipeline() -> String {
    format!(
        "stages: [build, test, deploy]
build:
  stage: build
  script:
    - '{COUNT}'
    - mkdir -p dist && cat src.txt > dist/app.txt
    - echo VERSION=1.$(wc -c < src.txt) > build.env
  artifacts:
    paths: [dist/]
    reports:
      dotenv: build.env
test:
  stage: test
  script:
    - '{COUNT}'
    - test \"$(cat dist/app.txt)\" = hello
broken:
  stage: test
  allow_failure: true
  script:
    - '{COUNT}'
    - exit 3
manual:
  stage: test
  when: manual
  script: ['{COUNT}']
stepped:
  stage: test
  run:
    - name: one
      script: '{COUNT}'
deploy:
  stage: deploy
  environment: production
  script:
    - '{COUNT}'
    - echo \"got $(cat dist/app.txt) version $VERSION\"
"
    )
}

#[test]
fn a_second_pipeline_on_the_same_tree_reuses_every_eligible_job_and_nothing_else() {
    let p = Project::new(&pipeline());
    p.write("src.txt", "hello");
    p.commit();
    let c = Counter::new();
    let first = run(&p, &c, &["--reuse"]);
    assert_eq!(first.code, Some(0), "{}", first.debug());
    for job in ["build", "test", "broken", "stepped", "deploy"] {
        assert_eq!(c.runs(job), 1, "{job}: {}", first.debug());
        assert!(reused_from(&first, job).is_none(), "{job}");
    }
    assert_eq!(first.status("broken"), "failed");

    let second = run(&p, &c, &["--reuse"]);
    assert_eq!(second.code, Some(0), "{}", second.debug());
    // Reused: not run again, recorded as passed, and said so in the event and the log.
    for job in ["build", "test"] {
        assert_eq!(c.runs(job), 1, "{job} ran again: {}", second.debug());
        assert_eq!(second.status(job), "success");
        let from = reused_from(&second, job).unwrap_or_else(|| panic!("{job} not reused: {}", second.debug()));
        assert_eq!(from["pipeline"], 1);
        assert_eq!(from["job"], job);
        let log = second.log(job);
        assert!(log.first().is_some_and(|l| l.contains("reused from pipeline 1, job")), "{job}: {log:?}");
        let file = std::fs::read_to_string(p.path().join(format!(".piste/pipelines/2/{job}.log"))).unwrap();
        assert!(file.contains("reused from pipeline 1, job") && file.contains("Job succeeded"), "{file}");
    }
    // A failure is never reused; a job with an environment or `run:` steps always runs.
    for job in ["broken", "stepped", "deploy"] {
        assert_eq!(c.runs(job), 2, "{job}: {}", second.debug());
        assert!(reused_from(&second, job).is_none(), "{job}");
    }
    assert_eq!(second.status("broken"), "failed");
    // The reused build's artifacts and dotenv reach the job that runs after it.
    assert!(second.log("deploy").iter().any(|l| l == "got hello version 1.5"), "{:?}", second.log("deploy"));

    // A manual job runs when named, and is never reused.
    for _ in 0..2 {
        let r = run(&p, &c, &["--reuse", "manual"]);
        assert_eq!(r.status("manual"), "success", "{}", r.debug());
        assert!(reused_from(&r, "manual").is_none());
    }
    assert_eq!(c.runs("manual"), 2);

    // `--no-reuse` runs everything, even with the project's switch on.
    std::fs::write(p.path().join(".piste/config.toml"), "reuse = true\n").unwrap();
    let third = run(&p, &c, &["--no-reuse"]);
    assert_eq!(third.code, Some(0), "{}", third.debug());
    assert_eq!((c.runs("build"), c.runs("test")), (2, 2), "{}", third.debug());
    assert!(reused_from(&third, "build").is_none());

    // The project's switch alone reuses.
    let fourth = run(&p, &c, &[]);
    assert_eq!(fourth.code, Some(0), "{}", fourth.debug());
    assert_eq!((c.runs("build"), c.runs("test")), (2, 2), "{}", fourth.debug());
    assert!(reused_from(&fourth, "build").is_some());
}

#[test]
fn without_the_switch_only_jobs_with_piste_reuse_true_are_reused_and_false_opts_out() {
    let p = Project::new(&format!(
        "opted:\n  variables: {{PISTE_REUSE: 'true'}}\n  script: ['{COUNT}']\nplain:\n  script: ['{COUNT}']\nout:\n  variables: {{PISTE_REUSE: 'false'}}\n  script: ['{COUNT}']\n"
    ));
    let c = Counter::new();
    for _ in 0..2 {
        let r = run(&p, &c, &[]);
        assert_eq!(r.code, Some(0), "{}", r.debug());
    }
    assert_eq!((c.runs("opted"), c.runs("plain"), c.runs("out")), (1, 2, 2));
    // `--reuse` makes every job eligible: `plain`'s success is kept, then reused; `out` opts out.
    let r = run(&p, &c, &["--reuse"]);
    assert_eq!((c.runs("opted"), c.runs("plain"), c.runs("out")), (1, 3, 3), "{}", r.debug());
    let r = run(&p, &c, &["--reuse"]);
    assert_eq!((c.runs("opted"), c.runs("plain"), c.runs("out")), (1, 3, 4), "{}", r.debug());
}

#[test]
fn changing_one_file_reruns_exactly_the_jobs_whose_inputs_include_it() {
    let mut yaml = String::from("stages: [test, package]\n");
    for comp in ["api", "web", "worker"] {
        yaml.push_str(&format!(
            "test-{comp}:\n  stage: test\n  rules:\n    - changes: [{comp}/**/*]\n  script:\n    - '{COUNT}'\n    - cat {comp}/src/main.txt\n  artifacts:\n    paths: [{comp}/src/]\n"
        ));
    }
    // Reads the whole tree, and the artifacts of the tests.
    yaml.push_str(&format!("package:\n  stage: package\n  script: ['{COUNT}', 'ls api/src web/src worker/src']\n"));
    let p = Project::new(&yaml);
    for comp in ["api", "web", "worker"] {
        p.write(&format!("{comp}/src/main.txt"), comp);
    }
    p.write("README", "docs");
    p.commit();
    let c = Counter::new();
    let first = run(&p, &c, &["--reuse"]);
    assert_eq!(first.code, Some(0), "{}", first.debug());

    // A file outside every component: the components' tests are reused, `package` reads it.
    p.write("README", "more docs");
    p.commit();
    let second = run(&p, &c, &["--reuse"]);
    assert_eq!(second.code, Some(0), "{}", second.debug());
    let counts = |c: &Counter| ["test-api", "test-web", "test-worker", "package"].map(|j| c.runs(j));
    assert_eq!(counts(&c), [1, 1, 1, 2], "{}", second.debug());

    // One component's file: its test runs, the others are reused.
    p.write("web/src/main.txt", "web v2");
    p.commit();
    let third = run(&p, &c, &["--reuse"]);
    assert_eq!(third.code, Some(0), "{}", third.debug());
    assert_eq!(counts(&c), [1, 2, 1, 3], "{}", third.debug());
    assert_eq!(reused_from(&third, "test-api").map(|f| f["pipeline"].clone()), Some(1.into()));
    assert!(reused_from(&third, "test-web").is_none());
}

#[test]
fn a_job_that_failed_runs_again_and_its_later_success_is_reused() {
    // The job fails while `ok` is absent from the runner's directory; the tree does not change.
    let p = Project::new(&format!("check:\n  script:\n    - '{COUNT}'\n    - test -e \"$RUNS/ok\"\n"));
    let c = Counter::new();
    assert_eq!(run(&p, &c, &["--reuse"]).status("check"), "failed");
    assert_eq!(run(&p, &c, &["--reuse"]).status("check"), "failed");
    assert_eq!(c.runs("check"), 2);
    std::fs::write(c.dir.path().join("ok"), "").unwrap();
    assert_eq!(run(&p, &c, &["--reuse"]).status("check"), "success");
    let r = run(&p, &c, &["--reuse"]);
    assert_eq!(r.status("check"), "success");
    assert_eq!(c.runs("check"), 3);
    assert_eq!(reused_from(&r, "check").map(|f| f["pipeline"].clone()), Some(3.into()));
}

#[test]
fn the_terminal_says_which_jobs_were_reused_and_from_where() {
    let p = Project::new(&format!("quick:\n  script: ['{COUNT}']\n"));
    let c = Counter::new();
    let text = |c: &Counter| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["run", "--executor", "shell", "--reuse", "--var", &c.var()])
            .current_dir(p.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = text(&c);
    assert!(!first.contains("reused"), "{first}");
    let second = text(&c);
    assert_eq!(c.runs("quick"), 1);
    assert!(second.contains("✔ passed: reused from pipeline 1, job 1001 (quick)"), "{second}");
    assert!(second.contains("↺ reused from pipeline 1, job 1001 (quick)"), "{second}");
    assert!(second.contains("↺ 1 of 1 jobs reused"), "{second}");
}
