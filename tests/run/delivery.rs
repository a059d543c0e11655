//! Build → push → sign → gitops commit under `piste run` (`fixtures/delivery/package.gitlab-ci.yml`):
//! Debian's docker-registry on loopback, `skopeo` inspecting what was pushed, the signature and
//! the provenance verified with `openssl`, the deployment repository pinned to the digest in a
//! one-line commit. The signing key comes from `--sign-key`; the job never sees it.

use std::path::Path;

use crate::Project;
use crate::registry::{Registry, signing_key};
use crate::steps::{deploy_repo, git};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A project holding the package pipeline and its `app/`.
fn package_project() -> Project {
    let p = Project::new(&std::fs::read_to_string(repo_root().join("fixtures/delivery/package.gitlab-ci.yml")).unwrap());
    for f in ["Dockerfile", "index.html"] {
        p.write(&format!("app/{f}"), &std::fs::read_to_string(repo_root().join("fixtures/delivery/app").join(f)).unwrap());
    }
    p.commit();
    p
}

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files(&p)),
            Ok(t) if t.is_file() => out.push((p.display().to_string(), std::fs::read(&p).unwrap_or_default())),
            _ => {}
        }
    }
    out
}

#[test]
fn an_image_is_built_pushed_signed_and_pinned_in_the_deployment_under_piste_run() {
    let reg = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = signing_key(keys.path());
    let p = package_project();
    let sha = {
        let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).current_dir(p.path()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let deploy = tempfile::tempdir().unwrap();
    let bare = deploy_repo(deploy.path());
    let (registry_var, deploy_var) = (format!("REGISTRY={}", reg.host), format!("DEPLOY_REPO={}", bare.display()));
    let args = ["--executor", "shell", "--var", &registry_var, "--var", &deploy_var];
    let r = p.run(&[&args[..], &["--sign-key", key.to_str().unwrap()]].concat());
    assert_eq!(r.code, Some(0), "{}", r.debug());

    // skopeo, an independent client, reads one OCI manifest under both tags.
    let digest = reg.inspect("app/web:main", false)["Digest"].as_str().unwrap().to_string();
    assert_eq!(reg.inspect(&format!("app/web:{}", &sha[..8]), false)["Digest"], digest.as_str());
    assert_eq!(reg.raw("app/web:main")["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let config = reg.inspect("app/web:main", true);
    assert_eq!(config["config"]["Labels"]["org.opencontainers.image.revision"], sha.as_str(), "{config:#}");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/srv/httpd"]));

    // Signed with the key given on the command line; the provenance names this build.
    let statement = reg.verify_attached("app/web", &digest, &public);
    let deps = &statement["predicate"]["buildDefinition"]["resolvedDependencies"];
    assert_eq!(deps[0]["digest"]["gitCommit"], sha.as_str(), "{statement:#}");
    assert_eq!(statement["predicate"]["buildDefinition"]["internalParameters"]["job"], "package");
    let package = r.log("package");
    let has = |log: &[String], s: &str| log.iter().any(|l| l.contains(s));
    assert!(
        has(&package, &format!("pushed {}/app/web@{digest} (signed=true); no key in the job's environment or files", reg.host)),
        "{package:#?}"
    );
    assert!(has(&package, "Signing with the runner's key"), "{package:#?}");

    // The deployment is pinned to the digest, in a one-line commit.
    assert_eq!(git(&bare, &["diff", "--numstat", "main~1", "main"]), "1\t1\tenvs/prod/kustomization.yaml");
    assert!(git(&bare, &["show", "main:envs/prod/kustomization.yaml"]).contains(&format!("    digest: {digest}")));
    let commit = git(&bare, &["rev-parse", "main"]);
    assert!(has(&r.log("deploy"), &format!("deployed {}/app/web@{digest} in {commit}", reg.host)), "{:#?}", r.log("deploy"));

    // The key is in no log line and no file piste keeps in the project.
    let pem = std::fs::read_to_string(&key).unwrap();
    let body = pem.lines().nth(1).unwrap();
    assert!(!r.stdout.contains(body) && !r.stderr.contains(body));
    for (path, bytes) in files(&p.path().join(".piste")) {
        assert!(!bytes.windows(body.len()).any(|w| w == body.as_bytes()), "the signing key is in `{path}`");
    }

    // The same commit again, unsigned: the same digest (reproducible), nothing uploaded, no new
    // deployment commit, and the log says the image is not signed.
    let again = p.run(&args);
    assert_eq!(again.code, Some(0), "{}", again.debug());
    assert_eq!(reg.inspect("app/web:main", false)["Digest"], digest.as_str());
    let package = again.log("package");
    assert!(has(&package, "skipped (present)") && !has(&package, ": uploaded"), "{package:#?}");
    assert!(has(&package, "the image is not signed") && has(&package, "(signed=false)"), "{package:#?}");
    assert_eq!(git(&bare, &["rev-parse", "main"]), commit);
}

/// Under `piste run`: a `--secret` passed as a build argument that lands in the image stops
/// the push before any byte; the job fails naming where, never the value.
#[test]
fn a_secret_in_a_build_arg_stops_the_push_under_piste_run() {
    let reg = Registry::start();
    let p = Project::new(&format!(
        "package:\n  run:\n    - name: image\n      step: piste/image-build@v1\n      inputs:\n        destinations: [\"{}/app/leaky:1\"]\n        build_args: [\"TOKEN=$REGISTRY_PASSWORD\"]\n",
        reg.host
    ));
    p.write("Dockerfile", "FROM scratch\nARG TOKEN\nENV API_TOKEN=$TOKEN\n");
    p.commit();
    let secret = "hunter2-registry-password";
    let r = p.run(&["--executor", "shell", "--secret", &format!("REGISTRY_PASSWORD={secret}")]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    let reason = r.finished("package")[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("masked value(s) found in the image") && reason.contains("config.config.Env[0]"), "{reason}");
    assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
    assert!(!reg.log().contains("PUT /v2/app/leaky/manifests"), "nothing was pushed");
}
