//! `register`: the runner token lands in a private file, never twice.

use std::os::unix::fs::PermissionsExt;

use runner::agent::{AgentError, RunnerConfig, register};

use crate::support::World;

#[tokio::test]
async fn register_writes_a_private_config() {
    let w = World::new().await;
    let path = w.tmp.path().join("runner.toml");
    let tags = vec!["docker".to_owned(), "linux".to_owned()];
    let config =
        register(&format!("{}/", w.fake.url()), &req(&w.fake.state.registration_token, "node-1", &tags), &path, None).await.unwrap();

    assert_eq!(config.url, w.fake.url(), "the trailing slash is dropped");
    assert_eq!((config.name.as_str(), config.tags.as_slice()), ("node-1", tags.as_slice()));
    assert!(w.fake.state.runner_tokens().contains(&config.token), "the token is the one the server issued");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the file holding the token is private");
    assert_eq!(RunnerConfig::load(&path).unwrap(), config);
    let leftovers: Vec<_> =
        std::fs::read_dir(w.tmp.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "runner.toml" && n != "git").collect();
    assert!(leftovers.is_empty(), "no temporary file is left: {leftovers:?}");
    assert!(!format!("{config:?}").contains(&config.token), "Debug never shows the token");
}

#[tokio::test]
async fn register_refuses_to_overwrite_a_config() {
    let w = World::new().await;
    let path = w.tmp.path().join("runner.toml");
    let first = register(&w.fake.url(), &req(&w.fake.state.registration_token, "node-1", &[]), &path, None).await.unwrap();

    let err = register(&w.fake.url(), &req(&w.fake.state.registration_token, "node-2", &[]), &path, None).await.unwrap_err();
    assert!(matches!(err, AgentError::ConfigExists { .. }), "{err}");
    assert!(err.to_string().contains("remove it"), "{err}");
    assert_eq!(w.fake.state.registrations(), 1, "the server is not asked for a runner that would be orphaned");
    assert_eq!(RunnerConfig::load(&path).unwrap(), first, "the first runner's file is intact");

    // An empty file (e.g. made by `touch`) holds no token: it may be filled.
    let empty = w.tmp.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    register(&w.fake.url(), &req(&w.fake.state.registration_token, "node-3", &[]), &empty, None).await.unwrap();
}

#[tokio::test]
async fn a_wrong_registration_token_is_refused_and_writes_nothing() {
    let w = World::new().await;
    let path = w.tmp.path().join("runner.toml");
    let err = register(&w.fake.url(), &req("not-the-token", "node-1", &[]), &path, None).await.unwrap_err();
    match &err {
        AgentError::Refused { status, message, .. } => {
            assert_eq!(*status, 401);
            assert!(message.contains("invalid_registration_token"), "{message}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(!path.exists());

    let err = register("ftp://example", &req("t", "n", &[]), &path, None).await.unwrap_err();
    assert!(matches!(err, AgentError::InvalidUrl { .. }), "{err}");
    let err = register("http://127.0.0.1:1", &req("t", "n", &[]), &path, None).await.unwrap_err();
    assert!(matches!(err, AgentError::Unreachable { .. }), "{err}");
}

fn req(token: &str, name: &str, tags: &[String]) -> scheduler::protocol::RegisterRequest {
    scheduler::protocol::RegisterRequest { registration_token: token.into(), name: name.into(), tags: tags.to_vec(), ..Default::default() }
}
