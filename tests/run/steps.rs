//! `run:` steps under `piste run` (shell executor): script steps, the built-in
//! `piste/gitops-bump@v1` against a real bare repository, outputs as `NAME_KEY` variables in
//! later steps and later jobs, failures with after_script; and the artifacts leak gate.

use std::path::Path;
use std::process::Command;

use crate::Project;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=someone", "-c", "user.email=someone@example.test", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git must be installed (scripts/deps.sh)");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare deployment repository (branch `main`) holding `fixtures/delivery/deploy`.
pub fn deploy_repo(at: &Path) -> std::path::PathBuf {
    let work = at.join("deploy-work");
    let fixture = repo_root().join("fixtures/delivery/deploy/envs/prod");
    std::fs::create_dir_all(work.join("envs/prod")).unwrap();
    for f in ["values.yaml", "kustomization.yaml"] {
        std::fs::copy(fixture.join(f), work.join("envs/prod").join(f)).unwrap();
    }
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "initial"]);
    let bare = at.join("deploy.git");
    git(at, &["clone", "-q", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()]);
    bare
}

#[test]
fn a_run_pipeline_bumps_the_deploy_repo_and_its_outputs_reach_later_steps_and_jobs() {
    let pipeline = std::fs::read_to_string(repo_root().join("fixtures/delivery/.gitlab-ci.yml")).unwrap();
    let p = Project::new(&pipeline);
    let deploy = tempfile::tempdir().unwrap();
    let bare = deploy_repo(deploy.path());
    let var = format!("DEPLOY_REPO={}", bare.display());
    let r = p.run(&["--executor", "shell", "--var", &var]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let commit = git(&bare, &["rev-parse", "main"]);
    assert_eq!(git(&bare, &["diff", "--numstat", "main~1", "main"]), "1\t1\tenvs/prod/values.yaml");
    assert!(git(&bare, &["show", "main:envs/prod/values.yaml"]).contains("  tag: \"1.4.2\""));
    let log = r.log("deploy");
    let has = |s: &str| log.iter().any(|l| l.contains(s));
    assert!(has("deploying tag 1.4.2"), "{log:#?}");
    assert!(has(&format!("deployed in {commit} (changed=true)")), "an earlier step's outputs, in a later step: {log:#?}");
    assert!(has("section_start:") && has(":step_deploy\r"), "a collapsible section per step: {log:#?}");
    assert!(has("Changed key `image.tag` in `envs/prod/values.yaml`: `1.0.0` → `1.4.2`"), "{log:#?}");
    assert!(has("after_script sees success"), "{log:#?}");
    assert!(r.log("verify").contains(&format!("verify sees DEPLOY_COMMIT={commit}")), "{:?}", r.log("verify"));

    // The same pipeline again: the value is there already, no commit.
    let r = p.run(&["--executor", "shell", "--var", &var]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(git(&bare, &["rev-parse", "main"]), commit);
    assert!(r.log("deploy").iter().any(|l| l.contains("(changed=false)")), "{:?}", r.log("deploy"));
}

#[test]
fn a_failing_step_fails_the_job_with_its_reason_and_after_script_still_runs() {
    let p = Project::new(
        "deploy:\n  run:\n    - name: deploy\n      step: piste/gitops-bump@v1\n      inputs: {repo: $DEPLOY_REPO, file: envs/staging/values.yaml, key: image.tag, value: '2'}\n    - name: never\n      script: echo never runs\n  after_script: ['echo after=$CI_JOB_STATUS']\n",
    );
    let deploy = tempfile::tempdir().unwrap();
    let bare = deploy_repo(deploy.path());
    let r = p.run(&["--executor", "shell", "--var", &format!("DEPLOY_REPO={}", bare.display())]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert_eq!(r.status("deploy"), "failed");
    let reason = r.finished("deploy")[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("step `deploy` (piste/gitops-bump@v1) failed") && reason.contains("`envs/staging/values.yaml` does not exist"),
        "{reason}"
    );
    let log = r.log("deploy");
    assert!(log.iter().any(|l| l == "after=failed"), "{log:#?}");
    assert!(!log.iter().any(|l| l == "never runs"), "{log:#?}");
}

#[test]
fn an_artifact_holding_a_secrets_base64_form_is_refused_with_the_file_named() {
    let p = Project::new(
        "stages: [a, b]\npack:\n  stage: a\n  script:\n    - mkdir -p out && echo ok > out/fine.txt\n    - 'echo \"auth=$(printf %s \"$REGISTRY_PASSWORD\" | base64)\" > out/config.yml'\n  artifacts:\n    paths: [out/]\nafter:\n  stage: b\n  script: [ls out]\n",
    );
    let secret = "hunter2-registry-password";
    let r = p.run(&["--executor", "shell", "--secret", &format!("REGISTRY_PASSWORD={secret}")]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert_eq!(r.status("pack"), "failed");
    let reason = r.finished("pack")[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("artifacts not uploaded: the masked variable `REGISTRY_PASSWORD` (base64) is in `out/config.yml` at byte 5"),
        "{reason}"
    );
    assert!(reason.contains(".piste-leaks.sarif"), "{reason}");
    assert!(r.log("pack").iter().any(|l| l.contains("Leak gate:") && l.contains("out/config.yml")), "{:?}", r.log("pack"));
    assert_ne!(r.status("after"), "success", "nothing was handed on");
    // The SARIF report is in the job's workspace.
    let sarif = walk(&p.path().join(".piste/builds")).into_iter().find(|f| f.ends_with(".piste-leaks.sarif")).expect("a SARIF report");
    let sarif: serde_json::Value = serde_json::from_slice(&std::fs::read(sarif).unwrap()).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let result = &sarif["runs"][0]["results"][0];
    assert_eq!(result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "out/config.yml");
    assert_eq!(result["locations"][0]["physicalLocation"]["region"]["byteOffset"], 5);
    assert!(!r.stdout.contains(secret) && !sarif.to_string().contains(secret));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
