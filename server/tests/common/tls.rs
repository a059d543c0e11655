//! A certificate authority made by a test with the `openssl` program, and server
//! certificates it signs for 127.0.0.1 and `localhost`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCa {
    dir: PathBuf,
    /// The authority's certificate (PEM): what a client is told to trust.
    pub cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (Debian's openssl package)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl TestCa {
    /// A new authority in `dir`.
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=piste test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        TestCa { dir: dir.to_path_buf(), cert: dir.join("ca.pem"), key: dir.join("ca.key") }
    }

    /// A server certificate and its key for `127.0.0.1` and `localhost`: `(<name>.pem, <name>.key)`.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key, csr, ext) = (format!("{name}.pem"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"));
        std::fs::write(
            self.dir.join(&ext),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        let (ca_cert, ca_key) = (self.cert.to_str().unwrap(), self.key.to_str().unwrap());
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                ca_cert,
                "-CAkey",
                ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        (self.dir.join(cert), self.dir.join(key))
    }
}
