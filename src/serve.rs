//! `piste serve` and `piste runner ...`: wiring only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use server::store::Backend;
use server::{AppState, Config};
use tokio_util::sync::CancellationToken;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn on_ctrl_c(token: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping…");
            token.cancel();
        }
    });
}

pub fn serve(
    config: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut cfg = match &config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(d) = data_dir {
        // `--data-dir` is relative to where the command runs; the file's `data_dir` to the file.
        cfg.data_dir = server::config::absolute(&d).with_context(|| format!("resolving `{}`", d.display()))?;
    } else if config.is_none() {
        cfg.data_dir = server::config::absolute(&cfg.data_dir).context("resolving the data directory")?;
    }
    if database.is_some() {
        cfg.database = database;
    }
    if cfg.runner_registration_token.is_empty() {
        eprintln!("warning: no `runner_registration_token` in the configuration: runners cannot register");
    }
    runtime()?.block_on(async move {
        std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating `{}`", cfg.data_dir.display()))?;
        let store = Backend::open(cfg.database_url().as_deref().unwrap_or(""), &cfg.data_dir).await.context("opening the database")?;
        let listener = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        eprintln!("piste serve: listening on http://{addr} · data in `{}` · {} project(s)", cfg.data_dir.display(), cfg.projects.len());
        let shutdown = CancellationToken::new();
        on_ctrl_c(shutdown.clone());
        let blobs = server::blob::Blobs::open(&cfg).context("opening the blob storage")?;
        let state = Arc::new(AppState::new(cfg, store, blobs));
        server::serve(listener, state, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn register(url: &str, token: &str, name: &str, tags: &[String], config: &Path) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let cfg = runner::agent::register(url, token, name, tags, config).await?;
        eprintln!("registered `{}` with {url}; its token is in `{}` (keep it private)", cfg.name, config.display());
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_runner(
    config: &Path,
    kind: runner::run::ExecutorKind,
    concurrency: usize,
    work_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = runner::agent::RunnerConfig::load(config)?;
    let work_dir = work_dir.unwrap_or_else(|| config.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf).join("builds"));
    runtime()?.block_on(async move {
        let (executor, containers, reason) = runner::run::choose_executor(kind).await?;
        eprintln!("piste runner `{}`: executor {reason}; up to {concurrency} job(s) at once; server {}", cfg.name, cfg.url);
        let shutdown = CancellationToken::new();
        on_ctrl_c(shutdown.clone());
        let agent = runner::agent::Agent::new(cfg, executor, containers, concurrency.max(1), work_dir);
        agent.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
