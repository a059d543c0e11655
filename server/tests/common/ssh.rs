//! Debian's sshd on an ephemeral port of 127.0.0.1, with a host key and one user key made
//! here: repositories are reached as `ssh://<user>@127.0.0.1:<port>/<absolute path>`. Stopped
//! when dropped.

use std::path::{Path, PathBuf};

use super::https_forge::{Proc, run, spawn};

pub struct SshForge {
    /// `ssh://<user>@127.0.0.1:<port>`: a repository at `/a/b.git` is at `<base>/a/b.git`.
    pub base: String,
    /// The user's private key (OpenSSH format, no passphrase).
    pub key: PathBuf,
    /// A known_hosts file holding the server's host key.
    pub known_hosts: PathBuf,
    _sshd: Proc,
}

impl SshForge {
    /// Serves this machine's files to the key it makes; its files go to `dir`.
    pub fn serve(dir: &Path) -> SshForge {
        std::fs::create_dir_all(dir).unwrap();
        let (host_key, user_key) = (dir.join("host_key"), dir.join("user_key"));
        for k in [&host_key, &user_key] {
            run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", "piste-test", "-f", k.to_str().unwrap()]);
        }
        std::fs::copy(user_key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
        // sshd's privilege separation directory (Debian's service makes it at boot).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let user = run("id", &["-un"]);
        let d = dir.display();
        let conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAllowUsers {user}\n",
            host_key.display()
        );
        std::fs::write(dir.join("sshd_config"), conf).unwrap();
        let sshd = spawn("/usr/sbin/sshd", &["-D", "-e", "-f", dir.join("sshd_config").to_str().unwrap()], &dir.join("sshd.log"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd did not listen: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {}\n", host_pub.join(" "))).unwrap();
        SshForge { base: format!("ssh://{user}@127.0.0.1:{port}"), key: user_key, known_hosts, _sshd: sshd }
    }

    /// The URL of the repository at `path` (absolute).
    pub fn url(&self, path: &Path) -> String {
        format!("{}{}", self.base, path.display())
    }
}
