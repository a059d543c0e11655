//! Delivery end to end, the parts outside piste: Debian's `docker-registry` on 127.0.0.1
//! (stopped when dropped), `skopeo` as an independent client, a signing key made by `openssl`,
//! and the checks of what piste attached: the cosign signature and the SLSA provenance, both
//! verified with `openssl` against the public key. Blocking: usable from plain and async tests.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// A running `docker-registry` without authentication (loopback: plain HTTP is allowed).
pub struct Registry {
    pub host: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn found(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

impl Registry {
    pub fn start() -> Registry {
        for (cmd, package) in [("docker-registry", "docker-registry"), ("skopeo", "skopeo"), ("openssl", "openssl")] {
            assert!(found(cmd), "`{cmd}` is missing: this test needs Debian's `{package}` (`scripts/deps.sh` installs it)");
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n  secret: piste-test-secret\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut reg = Registry { host, dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.host).is_err() {
            if let Some(status) = reg.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}): {}", reg.log());
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen on {}: {}", reg.host, reg.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `skopeo inspect` of `repo:tag` (or `repo@digest`), `--config` when `config`.
    pub fn inspect(&self, reference: &str, config: bool) -> Value {
        let mut args = vec!["inspect", "--tls-verify=false"];
        if config {
            args.push("--config");
        }
        let target = format!("docker://{}/{reference}", self.host);
        args.push(&target);
        serde_json::from_str(&skopeo(&args)).unwrap()
    }

    /// `skopeo inspect --raw`: the manifest as stored.
    pub fn raw(&self, reference: &str) -> Value {
        serde_json::from_str(&skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/{reference}", self.host)])).unwrap()
    }

    /// `GET /v2/<path>` over plain HTTP/1.0 (a manifest or a blob): the body.
    pub fn get(&self, path: &str) -> Vec<u8> {
        let mut s = std::net::TcpStream::connect(&self.host).unwrap();
        write!(
            s,
            "GET /v2/{path} HTTP/1.0\r\nHost: {}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n",
            self.host
        )
        .unwrap();
        let mut response = Vec::new();
        s.read_to_end(&mut response).unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "GET /v2/{path}: {head}");
        response[split + 4..].to_vec()
    }

    /// Checks the cosign signature (`sha256-<hex>.sig` in `repo`) and the SLSA provenance
    /// (`.att`) of `digest` with `openssl` against `public` (PEM); returns the provenance
    /// statement.
    pub fn verify_attached(&self, repo: &str, digest: &str, public: &Path) -> Value {
        let tag = digest.replace(':', "-");
        let scratch = tempfile::tempdir().unwrap();
        // The signature: a simple-signing payload naming the digest, signed.
        let sig: Value = serde_json::from_slice(&self.get(&format!("{repo}/manifests/{tag}.sig"))).unwrap();
        assert_eq!(sig["subject"]["digest"], digest, "{sig:#}");
        let layer = &sig["layers"][0];
        assert_eq!(layer["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json");
        let payload = self.get(&format!("{repo}/blobs/{}", layer["digest"].as_str().unwrap()));
        let parsed: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(parsed["critical"]["image"]["docker-manifest-digest"], digest);
        assert_eq!(parsed["critical"]["identity"]["docker-reference"], format!("{}/{repo}", self.host));
        let signature = STANDARD.decode(layer["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap()).unwrap();
        assert_eq!(openssl_verify(scratch.path(), "sig", public, &payload, &signature), "Verified OK");
        // The provenance: a DSSE envelope of an in-toto statement whose subject is the digest.
        let att: Value = serde_json::from_slice(&self.get(&format!("{repo}/manifests/{tag}.att"))).unwrap();
        assert_eq!(att["layers"][0]["annotations"]["predicateType"], "https://slsa.dev/provenance/v1");
        let envelope: Value =
            serde_json::from_slice(&self.get(&format!("{repo}/blobs/{}", att["layers"][0]["digest"].as_str().unwrap()))).unwrap();
        let statement_bytes = STANDARD.decode(envelope["payload"].as_str().unwrap()).unwrap();
        let mut pae = format!("DSSEv1 28 application/vnd.in-toto+json {} ", statement_bytes.len()).into_bytes();
        pae.extend_from_slice(&statement_bytes);
        let dsse_sig = STANDARD.decode(envelope["signatures"][0]["sig"].as_str().unwrap()).unwrap();
        assert_eq!(openssl_verify(scratch.path(), "att", public, &pae, &dsse_sig), "Verified OK");
        let statement: Value = serde_json::from_slice(&statement_bytes).unwrap();
        assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.trim_start_matches("sha256:"), "{statement:#}");
        statement
    }
}

fn openssl_verify(dir: &Path, name: &str, public: &Path, message: &[u8], signature: &[u8]) -> String {
    let (m, s) = (dir.join(format!("{name}.msg")), dir.join(format!("{name}.sig")));
    std::fs::write(&m, message).unwrap();
    std::fs::write(&s, signature).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&s)
        .arg(&m)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("run skopeo");
    assert!(out.status.success(), "skopeo {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A PKCS#8 ECDSA P-256 key pair made by `openssl` in `dir`: `(private, public)` PEM files.
pub fn signing_key(dir: &Path) -> (PathBuf, PathBuf) {
    let (key, public) = (dir.join("signing.pem"), dir.join("signing.pub.pem"));
    for args in [
        vec!["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key.to_str().unwrap()],
        vec!["pkey", "-pubout", "-in", key.to_str().unwrap(), "-out", public.to_str().unwrap()],
    ] {
        let out = Command::new("openssl").args(&args).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (key, public)
}
