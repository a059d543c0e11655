//! Real transports for mirrors: `git http-backend` behind Debian's nginx + fcgiwrap over HTTPS
//! with a certificate from a CA this test makes and Basic authentication, and Debian's sshd
//! with a host key and a user key made here. Both listen on 127.0.0.1 and are stopped after.

use std::path::{Path, PathBuf};

use server::config::Config;
use server::git::{Mirror, Remote};

use crate::Source;
use crate::https_forge::{HttpsForge, PASSWORD as TOKEN, USER, run};
use crate::ssh_forge::SshForge;

/// A bare copy of `src` at `<dir>/repos/app.git`.
fn bare_copy(src: &Source, dir: &Path) -> PathBuf {
    let bare = dir.join("repos/app.git");
    std::fs::create_dir_all(dir.join("repos")).unwrap();
    run("git", &["clone", "-q", "--bare", &src.url(), bare.to_str().unwrap()]);
    bare
}

fn config(dir: &Path, text: &str) -> Config {
    let file = dir.join("piste.toml");
    std::fs::write(&file, text).unwrap();
    Config::load(&file).unwrap()
}

#[test]
fn https_with_a_token_and_a_private_ca() {
    let src = Source::new();
    let one = src.commit(&[(".gitlab-ci.yml", Some("build: {script: [make]}\n"))], "one");
    let dir = src.tmp.path().join("https");
    bare_copy(&src, &dir);
    let forge = HttpsForge::serve(&dir.join("repos"), &dir.join("nginx"));
    let ca = forge.ca.cert.display();
    let url = &format!("{}app.git", forge.base);

    // Through piste.toml: the token from the environment, the CA at the top level.
    // SAFETY: this test binary sets no other environment variable and reads this one here only.
    unsafe { std::env::set_var("PISTE_TEST_REPO_TOKEN", TOKEN) };
    let c = config(
        &dir,
        &format!(
            "ca_file = \"{ca}\"\n[[project]]\nname = \"app\"\nrepo = \"{url}\"\nwebhook_secret = \"0123456789\"\nrepo_username = \"{USER}\"\nrepo_token_env = \"PISTE_TEST_REPO_TOKEN\"\n"
        ),
    );
    let mirror = Mirror::open_or_init(&dir.join("mirrors/app.git")).unwrap();
    mirror.fetch_from(&c.remote(&c.projects[0])).unwrap();
    assert!(mirror.has_commit(&one));
    assert_eq!(mirror.default_head().unwrap(), Some(one.clone()), "HEAD follows the remote's default branch");

    // Credentials written in the URL work too, and never show in an error.
    let two = src.commit(&[("README", Some("two\n"))], "two");
    run("git", &["-C", dir.join("repos/app.git").to_str().unwrap(), "fetch", "-q", &src.url(), "+refs/heads/*:refs/heads/*"]);
    let mut in_url = Remote::new(&url.replace("https://", &format!("https://{USER}:{TOKEN}@")));
    assert!(!format!("{in_url} {in_url:?}").contains(TOKEN));
    in_url.ca_file = Some(forge.ca.cert.clone());
    mirror.fetch_from(&in_url).unwrap();
    assert!(mirror.has_commit(&two));

    // Without the CA: a clear error naming the URL.
    let err = Mirror::open_or_init(&dir.join("mirrors/no-ca.git"))
        .unwrap()
        .fetch_from(&Remote::new(url).with_credentials(USER, TOKEN))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(url.as_str()) && text.to_lowercase().contains("certificate"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");

    // A wrong token: refused, the token nowhere in the message.
    let mut wrong = Remote::new(&url.replace("https://", "https://ci:wrong-token-value@"));
    wrong.ca_file = Some(forge.ca.cert.clone());
    let text = Mirror::open_or_init(&dir.join("mirrors/wrong.git")).unwrap().fetch_from(&wrong).unwrap_err().to_string();
    assert!(text.contains(url.as_str()) && !text.contains("wrong-token-value"), "{text}");
}

#[test]
fn ssh_with_a_key_and_strict_known_hosts() {
    let src = Source::new();
    let one = src.commit(&[(".gitlab-ci.yml", Some("build: {script: [make]}\n"))], "one");
    let dir = src.tmp.path().join("ssh");
    let bare = bare_copy(&src, &dir);
    let forge = SshForge::serve(&dir.join("sshd"));
    let url = forge.url(&bare);
    let c = config(
        &dir,
        &format!(
            "known_hosts = \"{}\"\n[[project]]\nname = \"app\"\nrepo = \"{}\"\nwebhook_secret = \"0123456789\"\nssh_key = \"{}\"\n",
            forge.known_hosts.display(),
            url,
            forge.key.display()
        ),
    );
    let mirror = Mirror::open_or_init(&dir.join("mirrors/app.git")).unwrap();
    mirror.fetch_from(&c.remote(&c.projects[0])).unwrap();
    assert!(mirror.has_commit(&one));

    // A host not in known_hosts is refused: host keys are checked strictly.
    let empty = dir.join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let mut unknown_host = c.remote(&c.projects[0]);
    unknown_host.known_hosts = Some(empty);
    let text = Mirror::open_or_init(&dir.join("mirrors/strict.git")).unwrap().fetch_from(&unknown_host).unwrap_err().to_string();
    assert!(text.contains(&url) && text.contains("Host key verification failed"), "{text}");

    // Another key is refused.
    let other = dir.join("other_key");
    run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", other.to_str().unwrap()]);
    let mut wrong_key = c.remote(&c.projects[0]);
    wrong_key.ssh_key = Some(other);
    let text = Mirror::open_or_init(&dir.join("mirrors/key.git")).unwrap().fetch_from(&wrong_key).unwrap_err().to_string();
    assert!(text.contains("Permission denied"), "{text}");
}
