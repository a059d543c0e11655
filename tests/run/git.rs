//! The runner's git behaviour under `piste run` (shell executor). GitLab's rules (docs:
//! ci/runners/configure_runners "Git submodule strategy", "Shallow cloning"): submodules are
//! cloned after the checkout, a relative URL resolving against the project's remote; a
//! submodule that cannot be cloned fails the job before its script; `GIT_DEPTH: N` leaves N
//! commits.

use std::process::Command;

use crate::Project;

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=piste",
            "-c",
            "user.email=piste@example.test",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn submodules_depth_and_a_failing_submodule_under_piste_run() {
    // `lib.git` beside the project's `origin` (`<repos>/app.git`), so `../lib.git` names it.
    let repos = tempfile::tempdir().unwrap();
    let lib_work = repos.path().join("lib-work");
    std::fs::create_dir_all(&lib_work).unwrap();
    git(&lib_work, &["init", "-q"]);
    std::fs::write(lib_work.join("lib.txt"), "from-the-submodule\n").unwrap();
    git(&lib_work, &["add", "-A"]);
    git(&lib_work, &["commit", "-qm", "lib"]);
    let lib = repos.path().join("lib.git");
    git(repos.path(), &["clone", "-q", "--bare", lib_work.to_str().unwrap(), lib.to_str().unwrap()]);
    let lib_sha = git(&lib_work, &["rev-parse", "HEAD"]);

    let yml = "sub:\n  variables:\n    GIT_SUBMODULE_STRATEGY: normal\n    GIT_SUBMODULE_PATHS: lib\n  script: [cat lib/lib.txt]\n\
               shallow:\n  variables:\n    GIT_DEPTH: \"1\"\n  script: ['echo \"commits=$(git rev-list --count HEAD) shallow=$(git rev-parse --is-shallow-repository)\"']\n\
               bad:\n  variables:\n    GIT_SUBMODULE_STRATEGY: normal\n    GIT_SUBMODULE_PATHS: broken\n  script: [echo must-not-run]\n";
    let p = Project::new(yml);
    p.git(&["remote", "add", "origin", repos.path().join("app.git").to_str().unwrap()]);
    p.write(
        ".gitmodules",
        "[submodule \"lib\"]\n\tpath = lib\n\turl = ../lib.git\n[submodule \"broken\"]\n\tpath = broken\n\turl = ../missing.git\n",
    );
    p.git(&["add", ".gitmodules"]);
    p.git(&["update-index", "--add", "--cacheinfo", &format!("160000,{lib_sha},lib")]);
    p.git(&["update-index", "--add", "--cacheinfo", &format!("160000,{lib_sha},broken")]);
    p.git(&["commit", "-qm", "submodules"]);

    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.status("sub"), "success", "{}", r.debug());
    let log = r.log("sub").join("\n");
    assert!(log.contains("Updating/initializing submodules...") && log.contains("from-the-submodule"), "{log}");

    assert_eq!(r.status("shallow"), "success", "{}", r.debug());
    assert!(r.log("shallow").iter().any(|l| l.contains("commits=1 shallow=true")), "{}", r.debug());

    assert_eq!(r.status("bad"), "failed", "{}", r.debug());
    let log = r.log("bad").join("\n");
    assert!(log.contains("git submodule update --init") && log.contains("missing.git"), "{log}");
    assert!(!log.contains("must-not-run\n") && !r.log("bad").iter().any(|l| l == "must-not-run"), "{log}");
}
