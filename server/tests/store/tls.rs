//! The PostgreSQL store over TLS: a private cluster with `ssl = on` and a certificate from a
//! CA this test makes, which refuses connections without TLS (`hostnossl … reject`); the store
//! connects with `sslmode=verify-full` and the CA, given in the URL or as piste.toml's
//! `ca_file`. Started here on 127.0.0.1 and stopped after.

use std::path::{Path, PathBuf};
use std::process::Command;

use server::config::Config;
use server::store::{Backend, PgStore, Store};

use crate::tls_ca::TestCa;

fn as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).output().unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL cluster that speaks TLS only.
struct TlsCluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bindir: PathBuf,
    port: u16,
    ca: TestCa,
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql (Debian's postgresql package)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("pg_ctl").is_file())
            .max()
            .expect("pg_ctl under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(&dir.path().join("ca"));
        let (cert, key) = ca.issue("pg");
        let data = dir.path().join("data");
        if is_root() {
            let out = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).output().unwrap();
            assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out = as_postgres(
            &bindir.join("initdb"),
            &["-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        // TLS or nothing over TCP.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        std::fs::copy(&cert, data.join("server.crt")).unwrap();
        std::fs::copy(&key, data.join("server.key")).unwrap();
        if is_root() {
            let out = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).output().unwrap();
            assert!(out.status.success());
        }
        std::fs::set_permissions(data.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c fsync=off",
            dir.path().display()
        );
        let log = dir.path().join("server.log");
        let out = as_postgres(
            &bindir.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "-o", &opts, "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        TlsCluster { _dir: dir, data, bindir, port, ca }
    }

    fn url(&self, params: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?{params}", self.port)
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        as_postgres(&self.bindir.join("pg_ctl"), &["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }
}

#[tokio::test]
async fn postgres_over_tls_with_a_private_ca() {
    let pg = TlsCluster::start();
    let ca = pg.ca.cert.display().to_string();

    // verify-full with the CA in the URL: connected (and the cluster takes nothing but TLS).
    let store = PgStore::connect(&pg.url(&format!("sslmode=verify-full&sslrootcert={ca}"))).await.unwrap();
    assert!(store.counts().await.is_ok());
    store.close().await;

    // The CA from piste.toml's `ca_file`, as `piste serve` opens it.
    let config = Config { database: Some(pg.url("sslmode=verify-full")), ca_file: Some(pg.ca.cert.clone()), ..Config::default() };
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(&config.database_url().unwrap(), dir.path()).await.unwrap();
    assert!(matches!(backend, Backend::Postgres(_)));
    backend.close().await;

    // Without the CA, the server's certificate is not trusted.
    let err = PgStore::connect(&pg.url("sslmode=verify-full")).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("certificate") || format!("{err:?}").contains("UnknownIssuer"), "{err:?}");

    // Without TLS, the cluster refuses: the connections above were encrypted.
    let err = PgStore::connect(&pg.url("sslmode=disable")).await.unwrap_err();
    assert!(format!("{err:?}").contains("no encryption"), "{err:?}");
}
