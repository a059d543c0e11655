//! `piste`: the one binary. Parses arguments, calls the libraries, prints, maps errors to exit
//! codes. Exit codes: 0 valid / passed, 1 invalid pipeline / failed, 2 usage or I/O error,
//! 3 (`lint`) could not check: some includes are not available here, 4 (`run`) blocked: the
//! pipeline waits for a manual job that does not allow failure.

mod alloc;
mod logs;
mod output;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pipeline_spec::predefined::PipelineSource;
use runner::local::{LocalOptions, parse_pair};

#[derive(Parser)]
#[command(name = "piste", version, about = "Run GitLab CI pipelines: lint and plan them, run them locally, serve them to runners")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a pipeline: every error with its file:line:col (exit 0 valid, 1 invalid, 2 usage,
    /// 3 could not check: includes unavailable here).
    Lint {
        #[command(flatten)]
        spec: SpecArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = LintFormat::Text)]
        format: LintFormat,
    },
    /// Show the plan as a graph of stages, jobs and needs.
    Graph {
        #[command(flatten)]
        spec: SpecArgs,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// List the jobs the pipeline would create: name, stage, when, allow_failure, needs.
    Jobs {
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Serve pipelines: webhooks in, jobs out to registered runners, a JSON API.
    Serve {
        /// `piste.toml` [default: built-in defaults, no projects].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides the config's `listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Data directory (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// `postgres://...` (overrides `database`; default SQLite in the data directory).
        #[arg(long)]
        database: Option<String>,
    },
    /// Print a job's log from a server; `--follow` streams it live and exits with the job's status.
    Logs {
        /// The job's id (see `GET /api/v1/pipelines/{id}`).
        #[arg(required_unless_present = "pipeline", conflicts_with = "pipeline")]
        job: Option<i64>,
        /// Every job of this pipeline, one after the other.
        #[arg(long)]
        pipeline: Option<i64>,
        /// Keep printing as the job writes, until it ends.
        #[arg(short, long)]
        follow: bool,
        /// The server.
        #[arg(long, env = "PISTE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A personal access token (`piste token create`); not needed for public projects.
        #[arg(long, env = "PISTE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM bundle of certificate authorities to trust for an `https://` server (a private CA).
        #[arg(long, env = "PISTE_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Runners on build nodes.
    Runner {
        #[command(subcommand)]
        command: RunnerCommand,
    },
    /// Users' personal access tokens for the API (`Authorization: Bearer …`), in the server's store.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the pipeline on this machine, in containers or as shell jobs (exit 0 passed, 1 failed,
    /// 2 invalid, 4 blocked: a manual job with `allow_failure: false` waits to be played).
    Run {
        /// Run only these jobs and what they need; manual jobs named here run.
        #[arg(value_name = "JOB")]
        only: Vec<String>,
        #[command(flatten)]
        spec: SpecArgs,
        /// Where jobs run: `docker` when the Docker Engine answers, else `shell`.
        #[arg(long, value_enum, default_value_t = ExecutorArg::Auto)]
        executor: ExecutorArg,
        /// Jobs running at once [default: number of cores].
        #[arg(short = 'j', long = "jobs", value_name = "N")]
        concurrency: Option<usize>,
        /// Include uncommitted changes of the work tree in every job's checkout.
        #[arg(long)]
        worktree: bool,
        /// Masked variable: its value never reaches the terminal, a log or an artifact's metadata. Repeatable.
        #[arg(long = "secret", value_name = "NAME=VALUE", value_parser = parse_pair)]
        secrets: Vec<(String, String)>,
        /// File of masked variables, one `NAME=VALUE` per line.
        #[arg(long = "secrets-file", value_name = "FILE")]
        secrets_file: Option<PathBuf>,
        /// Image for jobs that name none (container executor).
        #[arg(long, value_name = "IMAGE")]
        image: Option<String>,
        /// Sign the images `piste/image-build@v1` pushes (cosign `.sig`, SLSA provenance `.att`)
        /// with this PKCS#8 PEM ECDSA P-256 key; jobs never see it. Without it, images are unsigned.
        #[arg(long = "sign-key", value_name = "FILE")]
        sign_key: Option<PathBuf>,
        /// Reuse the results of jobs whose inputs did not change since they passed, for every job
        /// that may be reused (as `reuse = true` in `.piste/config.toml` does). Without it, only
        /// jobs with the variable `PISTE_REUSE: "true"` are.
        #[arg(long, conflicts_with = "no_reuse")]
        reuse: bool,
        /// Run every job, reusing no earlier result (and keeping none).
        #[arg(long)]
        no_reuse: bool,
        /// Run again when files change (debounced; `.git` and `.piste` are ignored).
        #[arg(long)]
        watch: bool,
        /// Show job results only, not their output (full logs are always in `.piste/pipelines/`).
        #[arg(short, long)]
        quiet: bool,
        /// `json`: JSON Lines events on stdout.
        #[arg(long, value_enum, default_value_t = LintFormat::Text)]
        format: LintFormat,
    },
}

/// `piste runner ...`
#[derive(Subcommand)]
enum RunnerCommand {
    /// Register this machine with a server; writes the runner's token to `--config`.
    Register {
        /// The server, e.g. `http://ci.example:8080`.
        #[arg(long)]
        url: String,
        /// The server's `runner_registration_token`.
        #[arg(long)]
        token: String,
        #[arg(long)]
        name: String,
        /// Comma-separated tags; a job runs here only if all its `tags` are in this list.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// With `--tags`: take jobs without tags too (a runner without tags always does).
        #[arg(long)]
        run_untagged: bool,
        /// Take only jobs of pipelines of protected refs (the ones that get protected secrets).
        #[arg(long)]
        protected: bool,
        /// Comma-separated project names: take only their jobs.
        #[arg(long, value_delimiter = ',')]
        projects: Vec<String>,
        /// PEM bundle of certificate authorities to trust for an `https://` server (a private
        /// CA); kept in `--config` for `piste runner run`.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        #[arg(long, default_value = "runner.toml")]
        config: PathBuf,
    },
    /// Take jobs from the server and run them until Ctrl-C.
    Run {
        #[arg(long, default_value = "runner.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = ExecutorArg::Auto)]
        executor: ExecutorArg,
        /// Jobs running at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Where workspaces live [default: `<config dir>/builds`].
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

/// `piste token ...`: run where `piste serve` runs (same `piste.toml`, same database).
#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for a user the configuration knows and print it (shown once; only its hash is kept).
    Create {
        #[arg(long, default_value = "piste.toml")]
        config: PathBuf,
        /// A user named in `members`, `admins` or a `[[user]]`.
        #[arg(long)]
        user: String,
        /// Days until it expires [default: never].
        #[arg(long, value_name = "DAYS")]
        expires: Option<u32>,
        /// What the token is for (shown by `list`).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (of one user with `--user`): id, user, label, created, expires, revoked.
    List {
        #[arg(long, default_value = "piste.toml")]
        config: PathBuf,
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id (see `list`); it stops working at once.
    Revoke {
        #[arg(long, default_value = "piste.toml")]
        config: PathBuf,
        id: i64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExecutorArg {
    Auto,
    Docker,
    Shell,
}

/// Which pipeline, and for which trigger.
#[derive(Args, Clone)]
pub(crate) struct SpecArgs {
    /// Pipeline file [default: `.gitlab-ci.yml`, else `.gitlab-ci-dso.yml`].
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Pipeline variable (highest precedence; also visible to `include`). Repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_pair)]
    vars: Vec<(String, String)>,
    /// Where `include:project` and `include:component` find PROJECT's files: a git repository
    /// (refs, tags and versions are read in it) or a folder (its files stand for every ref). Repeatable.
    #[arg(long = "project-dir", value_name = "PROJECT=DIR", value_parser = parse_pair)]
    project_dirs: Vec<(String, String)>,
    /// Folder of GitLab's CI templates for `include:template` (laid out as GitLab's
    /// `lib/gitlab/ci/templates`: `Jobs/Build.gitlab-ci.yml`, ...).
    #[arg(long = "templates-dir", value_name = "DIR")]
    templates_dir: Option<PathBuf>,
    /// Fetch `include:remote` files over https (else they are not checked: exit 3).
    #[arg(long = "allow-remote")]
    allow_remote: bool,
    /// PEM file of certificate authorities to trust for `include:remote`, besides the usual ones.
    #[arg(long = "ca-file", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Project root for `include:local` [default: the git work tree, else the file's folder].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Plan as a pipeline for this branch [default: the current git branch].
    #[arg(long, conflicts_with = "tag")]
    branch: Option<String>,
    /// Plan as a pipeline for this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Pipeline source (`push`, `web`, `schedule`, `merge_request_event`, ...) [default: push].
    #[arg(long, value_parser = parse_source)]
    source: Option<PipelineSource>,
    /// Files changed by the push, for `rules:changes` (repeatable) [default: every `changes` matches].
    #[arg(long = "changed", value_name = "PATH")]
    changed: Vec<String>,
    /// Plan a merge request pipeline from the current branch into BRANCH: `rules:changes`
    /// compares with their merge base, as GitLab does (`--changed` overrides).
    #[arg(long = "target-branch", value_name = "BRANCH", conflicts_with = "tag")]
    target_branch: Option<String>,
    /// The most `needs` one job may list (GitLab's instance limit `ci_max_needs`) [default: 50].
    #[arg(long = "max-needs", value_name = "N")]
    max_needs: Option<usize>,
}

fn to_kind(e: ExecutorArg) -> runner::run::ExecutorKind {
    match e {
        ExecutorArg::Auto => runner::run::ExecutorKind::Auto,
        ExecutorArg::Docker => runner::run::ExecutorKind::Docker,
        ExecutorArg::Shell => runner::run::ExecutorKind::Shell,
    }
}

fn parse_source(s: &str) -> Result<PipelineSource, String> {
    s.parse::<PipelineSource>().map_err(|e| e.to_string())
}

#[derive(Clone, Copy, ValueEnum)]
enum LintFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    Text,
    Dot,
    Mermaid,
    Json,
}

impl SpecArgs {
    fn options(&self) -> anyhow::Result<LocalOptions> {
        Ok(LocalOptions {
            file: self.file.clone(),
            dir: std::env::current_dir()?,
            root: self.root.clone(),
            vars: self.vars.clone(),
            project_dirs: self.project_dirs.iter().map(|(p, d)| (p.clone(), PathBuf::from(d))).collect(),
            branch: self.branch.clone(),
            tag: self.tag.clone(),
            source: self.source,
            changed_files: if self.changed.is_empty() { None } else { Some(self.changed.clone()) },
            max_needs: self.max_needs,
            target_branch: self.target_branch.clone(),
            templates_dir: self.templates_dir.clone(),
            allow_remote: self.allow_remote,
            ca_file: self.ca_file.clone(),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_env("PISTE_LOG")).with_writer(std::io::stderr).init();
    let result = match cli.command {
        Command::Lint { spec, format } => spec.options().and_then(|o| output::lint(&o, matches!(format, LintFormat::Json))),
        Command::Graph { spec, format } => spec.options().and_then(|o| output::graph(&o, format)),
        Command::Jobs { spec } => spec.options().and_then(|o| output::jobs(&o)),
        Command::Serve { config, listen, data_dir, database } => serve::serve(config, listen, data_dir, database),
        Command::Logs { job, pipeline, follow, url, token, ca_file } => {
            runner::follow::Server::new(&url, token.as_deref(), ca_file.as_deref())
                .map_err(anyhow::Error::from)
                .and_then(|server| logs::logs(&server, job, pipeline, follow))
        }
        Command::Token { command } => match command {
            TokenCommand::Create { config, user, expires, label } => serve::token_create(&config, &user, expires, &label),
            TokenCommand::List { config, user } => serve::token_list(&config, user.as_deref()),
            TokenCommand::Revoke { config, id } => serve::token_revoke(&config, id),
        },
        Command::Runner { command } => match command {
            RunnerCommand::Register { url, token, name, tags, run_untagged, protected, projects, ca_file, config } => {
                let req = scheduler::protocol::RegisterRequest { registration_token: token, name, tags, run_untagged, protected, projects };
                serve::register(&url, &req, &config, ca_file.as_deref())
            }
            RunnerCommand::Run { config, executor, concurrency, work_dir } => {
                serve::run_runner(&config, to_kind(executor), concurrency, work_dir)
            }
        },
        Command::Run {
            only,
            spec,
            executor,
            concurrency,
            worktree,
            mut secrets,
            secrets_file,
            image,
            sign_key,
            reuse,
            no_reuse,
            watch,
            quiet,
            format,
        } => (|| {
            if let Some(file) = secrets_file {
                secrets.extend(runner::local::read_secrets_file(&file)?);
            }
            let signing_key = match sign_key {
                Some(file) => {
                    let pem = std::fs::read_to_string(&file)
                        .map_err(|e| anyhow::anyhow!("`--sign-key {}`: cannot read it: {e}", file.display()))?;
                    runner::oci::sign::SigningKey::from_pem(&pem).map_err(|e| anyhow::anyhow!("`--sign-key {}`: {e}", file.display()))?;
                    Some(pem)
                }
                None => None,
            };
            run::run(run::RunArgs {
                spec: spec.options()?,
                jobs: only,
                executor: to_kind(executor),
                concurrency: concurrency.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                worktree,
                secrets,
                json: matches!(format, LintFormat::Json),
                watch,
                quiet,
                image,
                signing_key,
                reuse: if no_reuse { Some(false) } else { reuse.then_some(true) },
            })
        })(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}: {e:#}", output::paint("error", output::RED));
            ExitCode::from(2)
        }
    }
}
