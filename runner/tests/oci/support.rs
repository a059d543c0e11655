//! Harness: Debian's `docker-registry` on 127.0.0.1 (plain, htpasswd, or token auth with a
//! token server written here), a busybox base image pushed to it with `skopeo`, a log
//! collector, and command helpers. Everything is stopped when dropped.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bollard::Docker;
use bollard::body_full;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use runner::joblog::{Input, LogWriter};
use runner::oci::{BuildRequest, Credentials, Login, RegistryOptions};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const USER: &str = "ci-robot";
pub const PASSWORD: &str = "correct-horse-battery";
/// The busybox image in the local Docker Engine that tests push to their registry as a base.
pub const BASE_IMAGE: &str = "piste-test/oci-busybox:1";

pub enum Auth {
    None,
    Basic,
    Token,
}

/// A running `docker-registry`.
pub struct Registry {
    pub host: String,
    pub dir: TempDir,
    child: Child,
    token_server: Option<tokio::sync::oneshot::Sender<()>>,
    authenticated: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn need(cmd: &str, package: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(found, "`{cmd}` is missing: these tests need Debian's `{package}` (`scripts/deps.sh` installs it)");
}

impl Registry {
    pub async fn start(auth: Auth) -> Registry {
        need("docker-registry", "docker-registry");
        need("skopeo", "skopeo");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut token_server = None;
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Basic => {
                need("htpasswd", "apache2-utils");
                let out = Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]).output().unwrap();
                assert!(out.status.success());
                std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
                format!("auth:\n  htpasswd:\n    realm: piste-test\n    path: {}\n", dir.path().join("htpasswd").display())
            }
            Auth::Token => {
                let (key, cert) = (dir.path().join("token.key"), dir.path().join("token.pem"));
                openssl(
                    &[
                        "req",
                        "-x509",
                        "-newkey",
                        "ec",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-256",
                        "-nodes",
                        "-days",
                        "1",
                        "-subj",
                        "/CN=piste-test-token",
                    ],
                    &[("-keyout", &key), ("-out", &cert)],
                );
                // Its own thread and runtime: the test blocks its own on skopeo while skopeo
                // asks this server for tokens.
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let realm = format!("http://{}/token", listener.local_addr().unwrap());
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let cert_c = cert.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(async move {
                        listener.set_nonblocking(true).unwrap();
                        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                        tokio::select! {
                            _ = serve_tokens(listener, key, cert_c) => {}
                            _ = stopped => {}
                        }
                    });
                });
                token_server = Some(stop);
                format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: piste-test-registry\n    issuer: piste-test-issuer\n    rootcertbundle: {}\n",
                    cert.display()
                )
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: piste-test-secret\n{auth_yaml}",
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
        let mut reg = Registry { host, dir, child, token_server, authenticated: !matches!(auth, Auth::None) };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(format!("http://{}/v2/", reg.host)).send().await.is_ok() {
                return reg;
            }
            if let Some(status) = reg.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}): {}", reg.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("docker-registry did not answer on {} within 10 s: {}", reg.host, reg.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Requests in the registry's access log whose line contains `method` and `path_part`.
    pub fn requests(&self, method: &str, path_part: &str) -> usize {
        self.log().lines().filter(|l| l.contains(&format!("\"{method} /v2/")) && l.contains(path_part)).count()
    }

    /// skopeo's credentials flags for this registry.
    pub fn creds(&self, flag: &str) -> Vec<String> {
        if self.authenticated { vec![format!("--{flag}creds={USER}:{PASSWORD}")] } else { vec![] }
    }

    pub fn options(&self, password: &str) -> RegistryOptions {
        let mut credentials = Credentials::default();
        if self.authenticated {
            credentials.insert(&self.host, Login { username: USER.into(), password: password.into() });
        }
        RegistryOptions { credentials, ca_bundle: None, insecure: vec![] }
    }

    /// Pushes the busybox base image to `base/busybox:1` with skopeo; returns its digest.
    pub async fn push_base(&self) -> String {
        ensure_base_image().await;
        let dest = format!("docker://{}/base/busybox:1", self.host);
        let mut args = vec!["copy".to_owned(), "--quiet".into(), "--dest-tls-verify=false".into(), "--format=oci".into()];
        args.extend(self.creds("dest-"));
        args.extend([format!("docker-daemon:{BASE_IMAGE}"), dest]);
        skopeo(&args);
        self.digest_of("base/busybox:1")
    }

    /// The manifest digest of `repo:tag` according to skopeo.
    pub fn digest_of(&self, reference: &str) -> String {
        let v = self.inspect(reference, false);
        v["Digest"].as_str().unwrap().to_owned()
    }

    /// `skopeo inspect` (`--config` when `config`).
    pub fn inspect(&self, reference: &str, config: bool) -> serde_json::Value {
        let mut args = vec!["inspect".to_owned(), "--tls-verify=false".into()];
        if config {
            args.push("--config".into());
        }
        args.extend(self.creds(""));
        args.push(format!("docker://{}/{reference}", self.host));
        serde_json::from_str(&skopeo(&args)).unwrap()
    }

    /// `skopeo inspect --raw`: the manifest as stored.
    pub fn raw(&self, reference: &str) -> serde_json::Value {
        let mut args = vec!["inspect".to_owned(), "--raw".into(), "--tls-verify=false".into()];
        args.extend(self.creds(""));
        args.push(format!("docker://{}/{reference}", self.host));
        serde_json::from_str(&skopeo(&args)).unwrap()
    }

    /// Tags of `repo` according to skopeo (none when the repository does not exist).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let mut args = vec!["list-tags".to_owned(), "--tls-verify=false".into()];
        args.extend(self.creds(""));
        args.push(format!("docker://{}/{repo}", self.host));
        let out = Command::new("skopeo").args(&args).output().unwrap();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("NAME_UNKNOWN") || err.contains("not known") || err.contains("404"), "skopeo list-tags failed: {err}");
            return vec![];
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What the Docker Engine pulled from this registry (a `FROM` of an engine build, a
        // test's `docker run`): its names carry this registry's port, so no later run uses
        // them again. The images stay when other names hold them (the engine's build cache).
        let listed = docker_cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        let prefix = format!("{}/", self.host);
        let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|n| n.starts_with(&prefix) && !n.ends_with(":<none>"))
            .map(str::to_owned)
            .collect();
        if !names.is_empty() {
            let _ = Command::new("docker").arg("rmi").args(&names).output();
        }
        if let Some(stop) = self.token_server.take() {
            let _ = stop.send(());
        }
    }
}

pub fn skopeo(args: &[String]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("run skopeo");
    assert!(out.status.success(), "skopeo {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn openssl(args: &[&str], paths: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    for (flag, path) in paths {
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        cmd.arg(path);
    }
    let out = cmd.output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A minimal token server, as Docker's token spec describes: `GET /token?service=…&scope=…`
/// with Basic credentials → `{"token": JWT}` (ES256, the certificate in `x5c`), granting every
/// action asked for; a wrong login gets 401.
async fn serve_tokens(listener: tokio::net::TcpListener, key: PathBuf, cert: PathBuf) {
    use rustls_pki_types::pem::PemObject;
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(&key).unwrap();
    let cert = rustls_pki_types::CertificateDer::from_pem_file(&cert).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pair = std::sync::Arc::new(
        ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, key.secret_pkcs8_der(), &rng).unwrap(),
    );
    let x5c = STANDARD.encode(cert.as_ref());
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let (pair, x5c) = (pair.clone(), x5c.clone());
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).into_owned();
            let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
            let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
            let authorized = head.lines().any(|l| l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == expected);
            let (status, body) = if authorized {
                let access: Vec<serde_json::Value> = url
                    .query_pairs()
                    .filter(|(k, _)| k == "scope")
                    .filter_map(|(_, v)| {
                        let parts: Vec<&str> = v.split(':').collect();
                        (parts.len() == 3).then(
                            || serde_json::json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}),
                        )
                    })
                    .collect();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": "piste-test-issuer", "sub": USER, "aud": "piste-test-registry",
                    "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()), "access": access,
                });
                let signing_input =
                    format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
                let sig = pair.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()).unwrap();
                let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
                ("200 OK", serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string())
            } else {
                ("401 Unauthorized", r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong login"}]}"#.to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// A log writer and what it received, as text.
pub struct Collected {
    pub writer: LogWriter,
    task: tokio::task::JoinHandle<String>,
}

impl Collected {
    pub fn new() -> Collected {
        let (writer, mut rx) = LogWriter::channel(64);
        let task = tokio::spawn(async move {
            let mut text = String::new();
            while let Some(input) = rx.recv().await {
                match input {
                    Input::Line(l) => {
                        text.push_str(&l);
                        text.push('\n');
                    }
                    Input::Bytes(b) => text.push_str(&String::from_utf8_lossy(&b)),
                    Input::Stream(mut s) => {
                        while let Some(b) = s.recv().await {
                            text.push_str(&String::from_utf8_lossy(&b));
                        }
                    }
                }
            }
            text
        });
        Collected { writer, task }
    }

    pub async fn text(self) -> String {
        drop(self.writer);
        self.task.await.unwrap()
    }
}

/// A build request for `context` to `destinations` on `reg`.
pub fn request(reg: &Registry, context: &Path, destinations: &[&str]) -> BuildRequest {
    BuildRequest {
        context: context.to_owned(),
        dockerfile: "Dockerfile".into(),
        destinations: destinations.iter().map(|d| format!("{}/{d}", reg.host)).collect(),
        source_date_epoch: 1_700_000_000,
        source: Some("https://forge.example/group/app".into()),
        revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
        registry: reg.options(PASSWORD),
        scratch: context.parent().unwrap().join("scratch"),
        ..BuildRequest::default()
    }
}

/// Writes `files` (path, content, mode) under `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &str, u32)]) {
    use std::os::unix::fs::PermissionsExt;
    for (path, content, mode) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
}

pub fn docker_cli(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().expect("run the docker CLI")
}

static BASE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Imports [`BASE_IMAGE`] into the Docker Engine from Debian's busybox-static (nothing pulled).
async fn ensure_base_image() {
    BASE.get_or_init(|| async {
        let docker = Docker::connect_with_local_defaults().expect("these tests need the Docker Engine");
        docker.ping().await.expect("these tests need a running Docker Engine (`/var/run/docker.sock`)");
        if docker.inspect_image(BASE_IMAGE).await.is_ok() {
            return;
        }
        let lock = std::fs::File::create(std::env::temp_dir().join("piste-oci-test-image.lock")).unwrap();
        let lock = tokio::task::spawn_blocking(move || {
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("lock the image lock file");
            lock
        })
        .await
        .unwrap();
        if docker.inspect_image(BASE_IMAGE).await.is_err() {
            let (repo, tag) = BASE_IMAGE.rsplit_once(':').unwrap();
            let options = CreateImageOptionsBuilder::default()
                .from_src("-")
                .repo(repo)
                .tag(tag)
                .changes(vec!["ENV PATH=/bin".to_owned(), r#"CMD ["sh"]"#.to_owned()])
                .build();
            let mut progress = docker.create_image(Some(options), Some(body_full(rootfs().into())), None);
            while let Some(item) = progress.next().await {
                item.expect("import the busybox base image");
            }
        }
        drop(lock);
    })
    .await;
}

/// `/bin/busybox` and its applets as symlinks, `/etc/passwd`, `/tmp`.
fn rootfs() -> Vec<u8> {
    let mut busybox = Vec::new();
    std::fs::File::open("/bin/busybox")
        .expect("these tests build their base image from Debian's `busybox-static` (`/bin/busybox`)")
        .read_to_end(&mut busybox)
        .unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [("bin/", 0o755), ("tmp/", 0o1777), ("etc/", 0o755)] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        tar.append_data(&mut h, dir, std::io::empty()).unwrap();
    }
    let mut add = |path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("bin/busybox", 0o755, &busybox);
    add("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
    for applet in String::from_utf8(list.stdout).unwrap().lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox").unwrap();
    }
    tar.into_inner().unwrap()
}

/// An HTTP proxy in front of a registry that answers `503` to the first `fail` `PATCH`
/// requests (without forwarding them), as an overloaded registry or load balancer would. With
/// `announce_subject`, it answers a manifest push that has a `subject` with the `OCI-Subject`
/// header, as a registry with the OCI referrers API does (Debian's registry 2.8 has none).
pub struct FlakyProxy {
    pub host: String,
    pub failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FlakyProxy {
    pub fn start(upstream: &str, fail: usize) -> FlakyProxy {
        FlakyProxy::start_with(upstream, fail, false)
    }

    pub fn start_with(upstream: &str, fail: usize, announce_subject: bool) -> FlakyProxy {
        use std::sync::atomic::AtomicUsize;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let failed = std::sync::Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (upstream, counter) = (upstream.to_owned(), failed.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else { return };
                        let (upstream, counter) = (upstream.clone(), counter.clone());
                        tokio::spawn(async move {
                            let _ = proxy_connection(client, &upstream, &counter, fail, announce_subject).await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        FlakyProxy { host, failed, stop: Some(stop) }
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Relays requests one by one, each on a new upstream connection (`Connection: close`).
async fn proxy_connection(
    mut client: tokio::net::TcpStream,
    upstream: &str,
    counter: &std::sync::atomic::AtomicUsize,
    fail: usize,
    announce_subject: bool,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut chunk = [0u8; 65536];
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        while buf.len() < end + length {
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let request: Vec<u8> = buf.drain(..end + length).collect();
        if head.starts_with("PATCH ") && counter.load(Ordering::SeqCst) < fail {
            counter.fetch_add(1, Ordering::SeqCst);
            client.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await?;
            continue;
        }
        // Same request, `Connection: close`, so that the response ends with the connection.
        let mut lines: Vec<&str> =
            head[..head.len() - 4].split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
        lines.push("Connection: close");
        let mut forwarded = format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes();
        forwarded.extend_from_slice(&request[end..]);
        let mut up = tokio::net::TcpStream::connect(upstream).await?;
        up.write_all(&forwarded).await?;
        let mut response = Vec::new();
        up.read_to_end(&mut response).await?;
        let body = &request[end..];
        if announce_subject && head.starts_with("PUT ") && head.contains("/manifests/") && body.windows(10).any(|w| w == b"\"subject\":") {
            if let Some(eol) = response.windows(2).position(|w| w == b"\r\n") {
                response.splice(eol + 2..eol + 2, b"OCI-Subject: announced\r\n".iter().copied());
            }
        }
        client.write_all(&response).await?;
    }
}
