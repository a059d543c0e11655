//! A `piste serve` behind HTTPS: Debian's nginx terminating TLS with a certificate from a CA
//! made by the test, proxying to the server on loopback, as an operator would deploy it.

use std::path::Path;

use crate::https_forge::{Proc, spawn};
use crate::tls_ca::TestCa;

pub struct TlsProxy {
    /// `https://127.0.0.1:<port>`, without a trailing slash.
    pub url: String,
    pub ca: TestCa,
    _nginx: Proc,
}

impl TlsProxy {
    /// Listens on `port` (chosen by the caller, so the server's `external_url` can name it
    /// before the proxy starts) and forwards to `http://127.0.0.1:<upstream>`; files in `dir`.
    pub fn serve(port: u16, upstream: u16, dir: &Path) -> TlsProxy {
        std::fs::create_dir_all(dir).unwrap();
        let ca = TestCa::new(&dir.join("ca"));
        let (cert, key) = ca.issue("piste");
        for t in ["client", "fastcgi", "proxy", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(format!("tmp/{t}"))).unwrap();
        }
        let d = dir.display();
        // Bodies stream both ways (log chunks, artifacts, git packs, long polls): no buffering,
        // no size limit of the proxy's own (the server enforces its limits).
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log info;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/client;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
             proxy_temp_path {d}/tmp/proxy;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  \
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    \
             client_max_body_size 0;\n    location / {{\n      proxy_pass http://127.0.0.1:{upstream};\n      \
             proxy_http_version 1.1;\n      proxy_set_header Host $host:$server_port;\n      proxy_buffering off;\n      \
             proxy_request_buffering off;\n      proxy_read_timeout 120s;\n    }}\n  }}\n}}\n",
            cert = cert.display(),
            key = key.display(),
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
        TlsProxy { url: format!("https://127.0.0.1:{port}"), ca, _nginx: nginx }
    }
}
