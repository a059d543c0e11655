//! A real S3-compatible server for the tests: `moto_server` (PyPI `moto[server]`, installed by
//! `scripts/deps.sh`) on 127.0.0.1, one per test, killed with its process group when dropped.
//! Shared by the server crate's blob tests (`#[path]`) and the end-to-end tests: std only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "moto-test-access-key";
pub const SECRET_KEY: &str = "moto-test-secret-key";
pub const REGION: &str = "us-east-1";

pub struct Moto {
    pub port: u16,
    pub endpoint: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts moto and waits until it answers. Fails loudly when `moto_server` is missing.
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.reopen().unwrap()))
            .process_group(0)
            .spawn()
            .expect("`moto_server` is needed by the S3 tests: run `scripts/deps.sh` (it runs `pip install 'moto[server]'`)");
        let mut moto = Moto { port, endpoint: format!("http://127.0.0.1:{port}"), child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited ({status}): {}", moto.log());
            }
            if moto.request("GET", "/", b"").is_some_and(|(code, _)| code == 200) {
                return moto;
            }
            assert!(Instant::now() < deadline, "moto_server did not answer on port {port} within 60 s: {}", moto.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// One plain HTTP/1.1 request (moto accepts unsigned ones): status and body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).ok()?;
        s.write_all(body).ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((code, body))
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (code, body) = self.request("PUT", &format!("/{bucket}"), b"").expect("moto answers");
        assert_eq!(code, 200, "creating bucket `{bucket}`: {body}");
    }

    /// Every key in `bucket` under `prefix` (pages followed), with its size.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&prefix={prefix}");
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={t}"));
            }
            let (code, body) = self.request("GET", &path, b"").expect("moto answers");
            assert_eq!(code, 200, "listing `{bucket}`: {body}");
            for item in body.split("<Contents>").skip(1) {
                let key = between(item, "<Key>", "</Key>").unwrap_or_default().to_string();
                let size = between(item, "<Size>", "</Size>").and_then(|s| s.parse().ok()).unwrap_or(0);
                out.push((key, size));
            }
            match between(&body, "<NextContinuationToken>", "</NextContinuationToken>") {
                Some(t) if body.contains("<IsTruncated>true</IsTruncated>") => token = Some(t.to_string()),
                _ => return out,
            }
        }
    }

    /// The environment a `piste serve` needs to reach this moto.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), REGION.into()),
        ]
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The shim may have started python as a child: kill the whole group.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
