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

/// `piste serve`'s runtime: at most [`MAX_BLOCKING_THREADS`] blocking threads, and a worker
/// that runs out of work gives back the memory it freed (`crate::alloc`).
fn server_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    crate::alloc::tune_for_serving();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .on_thread_park(crate::alloc::collect_when_parked)
        .build()?)
}

/// Blocking threads of `piste serve` (tokio's default: 512). The server's blocking work is
/// file I/O of logs and artifacts, planning (git, YAML) and git fetches; bursts of webhooks and
/// log chunks made tokio start 30 to 100 of them on a 2-core machine, each with its own
/// allocator heap holding pages (`cargo bench --bench serve -- rss`: 34 MiB with 22 threads,
/// 50 MiB with 106, after the same 100 pipelines). Past this many, blocking work waits its turn.
const MAX_BLOCKING_THREADS: usize = 16;

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
    server_runtime()?.block_on(async move {
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

pub fn register(url: &str, req: &scheduler::protocol::RegisterRequest, config: &Path, ca_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let cfg = runner::agent::register(url, req, config, ca_file).await?;
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

/// The store `piste serve --config <config>` uses (its `database`, else SQLite in `data_dir`).
async fn open_store(config: &Config) -> anyhow::Result<Backend> {
    Backend::open(config.database.as_deref().unwrap_or(""), &config.data_dir).await.context("opening the database")
}

pub fn token_create(config: &Path, user: &str, expires_days: Option<u32>, label: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    if !cfg.knows_user(user) {
        anyhow::bail!(
            "`{user}` is not a user of `{}`: name them in a project's `members`, in `admins`, or in a `[[user]]` first",
            config.display()
        );
    }
    runtime()?.block_on(async move {
        let store = open_store(&cfg).await?;
        let clock = server::Clock::system();
        let (token, row) = server::auth::create_access_token(&store, user, label, expires_days, clock.now_ms()).await?;
        let until = row.expires_at.map_or_else(|| "never expires".to_string(), |t| format!("expires {}", server::pipelines::iso_time(t)));
        eprintln!("token #{} for `{user}` ({until}); send it as `Authorization: Bearer <token>`; it is shown only now:", row.id);
        println!("{token}");
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn token_list(config: &Path, user: Option<&str>) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    runtime()?.block_on(async move {
        let store = open_store(&cfg).await?;
        let now = server::Clock::system().now_ms();
        println!("{:>5}  {:<20}  {:<20}  {:<24}  {:<24}  state", "id", "user", "label", "created", "expires");
        for t in server::store::Store::access_tokens(&store, user).await? {
            let state = match (t.revoked_at, t.expires_at) {
                (Some(_), _) => "revoked",
                (None, Some(e)) if e <= now => "expired",
                _ => "active",
            };
            let expires = t.expires_at.map_or_else(|| "never".into(), server::pipelines::iso_time);
            println!(
                "{:>5}  {:<20}  {:<20}  {:<24}  {:<24}  {state}",
                t.id,
                t.user,
                t.label,
                server::pipelines::iso_time(t.created_at),
                expires
            );
        }
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn token_revoke(config: &Path, id: i64) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    runtime()?.block_on(async move {
        let store = open_store(&cfg).await?;
        let done = server::store::Store::revoke_access_token(&store, id, server::Clock::system().now_ms()).await?;
        store.close().await;
        if done {
            eprintln!("token #{id} revoked");
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("error: no active token #{id} (see `piste token list`)");
            Ok(ExitCode::from(1))
        }
    })
}
