//! `git http-backend` behind Debian's nginx (HTTPS with a certificate from a CA made here,
//! Basic authentication) through fcgiwrap, on 127.0.0.1; and static files over https for
//! `include:remote`. Stopped when dropped.

// Shared by test binaries that each use a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::tls_ca::TestCa;

/// The user name and password nginx accepts.
pub const USER: &str = "ci";
pub const PASSWORD: &str = "glpat-transport-test-token";

/// A process killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(program: &str, args: &[&str], log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("`{program}` (see scripts/deps.sh): {e}"));
    Proc(child)
}

pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("`{program}` (see scripts/deps.sh): {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub struct HttpsForge {
    /// `https://127.0.0.1:<port>/`: a repository `<repos>/x.git` is at `<base>x.git`.
    pub base: String,
    pub ca: TestCa,
    _nginx: Proc,
    _fcgiwrap: Proc,
}

impl HttpsForge {
    /// Serves the bare repositories under `repos`; its files go to `dir`.
    pub fn serve(repos: &Path, dir: &Path) -> HttpsForge {
        std::fs::create_dir_all(dir).unwrap();
        let ca = TestCa::new(&dir.join("ca"));
        let (cert, key) = ca.issue("forge");
        let hash = run("openssl", &["passwd", "-apr1", PASSWORD]);
        std::fs::write(dir.join("htpasswd"), format!("{USER}:{hash}\n")).unwrap();
        let socket = dir.join("fcgi.sock");
        let fcgiwrap = spawn("/usr/sbin/fcgiwrap", &["-s", &format!("unix:{}", socket.display())], &dir.join("fcgiwrap.log"));
        let backend = Path::new(&run("git", &["--exec-path"])).join("git-http-backend");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        for t in ["client", "fastcgi", "proxy", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(format!("tmp/{t}"))).unwrap();
        }
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log info;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/client;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
             proxy_temp_path {d}/tmp/proxy;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  \
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    \
             location / {{\n      auth_basic \"git\";\n      auth_basic_user_file {d}/htpasswd;\n      \
             include /etc/nginx/fastcgi_params;\n      fastcgi_param SCRIPT_FILENAME {backend};\n      \
             fastcgi_param GIT_PROJECT_ROOT {repos};\n      fastcgi_param GIT_HTTP_EXPORT_ALL \"\";\n      \
             fastcgi_param PATH_INFO $uri;\n      fastcgi_param REMOTE_USER $remote_user;\n      fastcgi_pass unix:{socket};\n    }}\n  }}\n}}\n",
            cert = cert.display(),
            key = key.display(),
            backend = backend.display(),
            repos = repos.display(),
            socket = socket.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let nginx = spawn(
            "/usr/sbin/nginx",
            &["-p", dir.to_str().unwrap(), "-c", conf_path.to_str().unwrap(), "-e", &format!("{d}/nginx-error.log")],
            &dir.join("nginx.log"),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        HttpsForge { base: format!("https://127.0.0.1:{port}/"), ca, _nginx: nginx, _fcgiwrap: fcgiwrap }
    }
}

/// Static files over https from nginx with a certificate of a CA made here: what
/// `include:remote` fetches. `/slow/...` is sent at 64 bytes a second; `/to-http` redirects to
/// plain http and `/moved` to `/ci.yml`.
pub struct HttpsFiles {
    /// `https://127.0.0.1:<port>`, without a trailing slash.
    pub base: String,
    pub ca: TestCa,
    _nginx: Proc,
}

impl HttpsFiles {
    /// Serves the files under `root`; nginx's own files go to `dir`.
    pub fn serve(root: &Path, dir: &Path) -> HttpsFiles {
        std::fs::create_dir_all(dir).unwrap();
        let ca = TestCa::new(&dir.join("ca"));
        let (cert, key) = ca.issue("files");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        for t in ["client", "fastcgi", "proxy", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(format!("tmp/{t}"))).unwrap();
        }
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log info;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/client;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
             proxy_temp_path {d}/tmp/proxy;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  \
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    \
             root {root};\n    location /slow/ {{ limit_rate 64; }}\n    \
             location = /to-http {{ return 302 http://127.0.0.1:{port}/ci.yml; }}\n    \
             location = /moved {{ return 301 https://127.0.0.1:{port}/ci.yml; }}\n  }}\n}}\n",
            cert = cert.display(),
            key = key.display(),
            root = root.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let nginx = spawn(
            "/usr/sbin/nginx",
            &["-p", dir.to_str().unwrap(), "-c", conf_path.to_str().unwrap(), "-e", &format!("{d}/nginx-error.log")],
            &dir.join("nginx.log"),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        HttpsFiles { base: format!("https://127.0.0.1:{port}"), ca, _nginx: nginx }
    }
}
