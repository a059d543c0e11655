//! `GIT_SUBMODULE_STRATEGY`: the submodules of a checked-out slot, cloned by the `git` program.
//!
//! GitLab Runner runs `git submodule update --init [--recursive] [--depth N]
//! $GIT_SUBMODULE_UPDATE_FLAGS -- $GIT_SUBMODULE_PATHS` after checking out the project; piste
//! runs the same command, with these differences, all for safety:
//!
//! - Submodules are cloned afresh for every job that asks for them: `.git/modules` and the
//!   submodule directories are emptied first. A job can write into its checkout (a container
//!   job too), and git would run what a job planted in a submodule's config (a filter, an
//!   `fsmonitor`) or follow a `.git` file pointing elsewhere. `core.hooksPath` is `/dev/null`
//!   for every git process started here.
//! - The slot's `.git/config` is not written: the submodules' URLs, resolved, are given to git
//!   as `GIT_CONFIG_*` variables, so that the slot stays as [`super::Workspaces`] made it.
//!   (Those variables reach nested submodules too: one with the name of a top-level submodule
//!   would be fetched from that submodule's URL.)
//! - Credentials (the job token on the server) travel as an `Authorization` header scoped to the
//!   server's URL (`http.<url>.extraHeader`, in `GIT_CONFIG_*`): never in a URL, so neither in
//!   a `.git/config` nor in the log; absolute URLs to other hosts get no credential.
//!
//! URLs (GitLab's "Git submodules" page): a relative URL (`../other.git`) resolves against the
//! project's URL, as git resolves it against the superproject's remote; an absolute URL is used
//! as written. `GIT_SUBMODULE_FORCE_HTTPS` rewrites `git@host:path` and `ssh://[user@]host/path`
//! into `https://host/path` (GitLab does it for its own host only; the runner has no ssh key,
//! so an ssh URL could not work on any host).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{WorkspaceError, clean::remove_tree, ensure_dir, io_err};

/// `GIT_SUBMODULE_STRATEGY`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SubmoduleStrategy {
    /// The default: submodule directories stay empty.
    #[default]
    None,
    /// The top-level submodules.
    Normal,
    /// Submodules of submodules too.
    Recursive,
}

/// What `GIT_SUBMODULE_*` ask for, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmoduleSpec {
    pub strategy: SubmoduleStrategy,
    /// `GIT_SUBMODULE_PATHS`: pathspecs (`:(exclude)path` and `:!path` exclude).
    pub paths: Vec<String>,
    /// `GIT_SUBMODULE_UPDATE_FLAGS`, checked against [`UPDATE_FLAGS`].
    pub update_flags: Vec<String>,
    /// `GIT_SUBMODULE_FORCE_HTTPS`.
    pub force_https: bool,
    /// `GIT_SUBMODULE_DEPTH`, else `GIT_DEPTH` (0: full history).
    pub depth: Option<u32>,
}

/// The flags of `git submodule update` a job may add (GitLab passes any; piste refuses those
/// that would reach outside the slot or change what the superproject records).
pub const UPDATE_FLAGS: &str = "--remote, --jobs N, --depth N, --recommend-shallow, --no-recommend-shallow, --single-branch, --no-single-branch, --force, --checkout, --progress, --quiet";

impl SubmoduleSpec {
    /// Parses the variables; `depth` is `GIT_SUBMODULE_DEPTH`, `fallback_depth` `GIT_DEPTH`.
    pub fn parse(
        strategy: Option<&str>,
        paths: Option<&str>,
        update_flags: Option<&str>,
        force_https: Option<&str>,
        depth: Option<&str>,
        fallback_depth: Option<u32>,
    ) -> Result<SubmoduleSpec, WorkspaceError> {
        let strategy = match strategy.unwrap_or("").trim() {
            "" | "none" => SubmoduleStrategy::None,
            "normal" => SubmoduleStrategy::Normal,
            "recursive" => SubmoduleStrategy::Recursive,
            other => {
                return Err(WorkspaceError::Submodules(format!(
                    "unknown GIT_SUBMODULE_STRATEGY `{}`; expected none, normal or recursive",
                    other.chars().take(64).collect::<String>()
                )));
            }
        };
        let depth = match depth.map(str::trim).filter(|d| !d.is_empty()) {
            Some(d) => Some(d.parse::<u32>().map_err(|_| {
                WorkspaceError::Submodules(format!(
                    "GIT_SUBMODULE_DEPTH `{}` is not a number of commits",
                    d.chars().take(64).collect::<String>()
                ))
            })?),
            None => fallback_depth,
        };
        let force_https = matches!(force_https.map(|v| v.trim().to_ascii_lowercase()).as_deref(), Some("true" | "1" | "yes"));
        let paths: Vec<String> = paths.unwrap_or("").split_whitespace().map(str::to_owned).collect();
        Ok(SubmoduleSpec { strategy, paths, update_flags: parse_update_flags(update_flags.unwrap_or(""))?, force_https, depth })
    }
}

fn parse_update_flags(text: &str) -> Result<Vec<String>, WorkspaceError> {
    let fail = |m: String| WorkspaceError::Submodules(format!("GIT_SUBMODULE_UPDATE_FLAGS `{}`: {m}", text.trim()));
    let mut out = Vec::new();
    let mut tokens = text.split_whitespace();
    let number = |name: &str, value: Option<&str>| -> Result<String, WorkspaceError> {
        match value {
            Some(v) if v.parse::<u32>().is_ok() => Ok(v.to_owned()),
            Some(v) => Err(fail(format!("`{name}` needs a number, got `{v}`"))),
            None => Err(fail(format!("`{name}` needs a number"))),
        }
    };
    while let Some(token) = tokens.next() {
        let (name, inline) = match token.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (token, None),
        };
        match name {
            "--remote"
            | "--recommend-shallow"
            | "--no-recommend-shallow"
            | "--single-branch"
            | "--no-single-branch"
            | "--force"
            | "-f"
            | "--checkout"
            | "--progress"
            | "--quiet"
            | "-q"
                if inline.is_none() =>
            {
                out.push(name.to_owned())
            }
            "--jobs" | "-j" | "--depth" => {
                let value = number(name, inline.or_else(|| tokens.next()))?;
                let long = if name == "-j" { "--jobs" } else { name };
                out.push(format!("{long}={value}"));
            }
            "--recursive" | "--init" => {
                return Err(fail(format!("`{name}` is set by GIT_SUBMODULE_STRATEGY (`normal` or `recursive`); remove it")));
            }
            _ => return Err(fail(format!("`{token}` is not supported; use {UPDATE_FLAGS}"))),
        }
    }
    Ok(out)
}

/// Where submodules come from and how they are reached.
#[derive(Debug, Clone, Default)]
pub struct SubmoduleSource {
    /// The project's URL, which relative submodule URLs resolve against (GitLab's rule). `None`:
    /// relative URLs are refused.
    pub base_url: Option<String>,
    /// Basic credentials sent only to URLs under `prefix`: `(prefix, user, password)`.
    pub credentials: Option<(String, String, String)>,
    /// Certificate authorities for `https://`.
    pub ca_file: Option<PathBuf>,
    /// Also allow `file://` and local paths (`piste run` on the user's machine; never on a
    /// runner, where they would read the runner's own files).
    pub allow_file: bool,
    /// Ignore the user's and the system's git configuration (on a runner).
    pub isolated: bool,
}

/// How often a running `git` is checked for the job's cancellation.
const CANCEL_POLL: Duration = Duration::from_millis(25);
/// The end of `git`'s output kept for the log.
const MAX_OUTPUT: usize = 16 * 1024;
/// A transfer below 1 KB/s for this long is given up (s).
const LOW_SPEED_SECONDS: u32 = 60;

/// One submodule as `.gitmodules` declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Declared {
    name: String,
    path: String,
    url: String,
}

/// Clones the submodules of the checkout at `dir` as `spec` asks; returns git's output (for the
/// job log, credentials removed). Nothing happens with the `none` strategy.
pub fn update(dir: &Path, spec: &SubmoduleSpec, source: &SubmoduleSource, cancel: &CancellationToken) -> Result<String, WorkspaceError> {
    if spec.strategy == SubmoduleStrategy::None {
        return Ok(String::new());
    }
    let declared = declared(dir)?;
    reset(dir, &declared)?;
    if declared.is_empty() {
        return Ok(String::new());
    }
    let mut config: Vec<(String, String)> = vec![
        ("core.hooksPath".into(), "/dev/null".into()),
        ("http.lowSpeedLimit".into(), "1000".into()),
        ("http.lowSpeedTime".into(), LOW_SPEED_SECONDS.to_string()),
        ("http.followRedirects".into(), "false".into()),
        ("credential.helper".into(), String::new()),
    ];
    let mut https_hosts = Vec::new();
    for sm in &declared {
        let url = resolve_url(&sm.url, source.base_url.as_deref())
            .map_err(|m| WorkspaceError::Submodules(format!("submodule `{}`: {m}", sm.name)))?;
        let url = if spec.force_https {
            match force_https(&url) {
                Some((https, host)) => {
                    https_hosts.push(host);
                    https
                }
                None => url,
            }
        } else {
            url
        };
        if !source.allow_file && is_local(&url) {
            return Err(WorkspaceError::Submodules(format!(
                "submodule `{}`: `{}` is a path on the runner; use a `git://`, `http(s)://` or relative URL",
                sm.name,
                git_remote::redact(&url)
            )));
        }
        config.push((format!("submodule.{}.url", sm.name), url));
    }
    // Nested submodules (`recursive`) with ssh URLs on the same hosts.
    https_hosts.sort();
    https_hosts.dedup();
    for host in https_hosts {
        config.push((format!("url.https://{host}/.insteadOf"), format!("git@{host}:")));
        config.push((format!("url.https://{host}/.insteadOf"), format!("ssh://git@{host}/")));
    }
    if let Some((prefix, user, password)) = &source.credentials {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        config.push((format!("http.{prefix}.extraHeader"), format!("Authorization: Basic {basic}")));
    }
    if let Some(ca) = &source.ca_file {
        config.push(("http.sslCAInfo".into(), ca.to_string_lossy().into_owned()));
    }
    let mut args: Vec<String> = vec!["submodule".into(), "update".into(), "--init".into()];
    if spec.strategy == SubmoduleStrategy::Recursive {
        args.push("--recursive".into());
    }
    if let Some(depth) = spec.depth.filter(|d| *d > 0) {
        if !spec.update_flags.iter().any(|f| f.starts_with("--depth")) {
            args.push(format!("--depth={depth}"));
        }
    }
    args.extend(spec.update_flags.iter().cloned());
    args.push("--".into());
    args.extend(spec.paths.iter().cloned());

    let mut cmd = Command::new("git");
    if source.isolated {
        cmd.env_clear();
        for name in ["PATH", "HOME", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"] {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1").env("GIT_CONFIG_GLOBAL", "/dev/null");
    } else {
        for name in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_CONFIG_PARAMETERS",
        ] {
            cmd.env_remove(name);
        }
        if std::env::var_os("GIT_SSH_COMMAND").is_none() {
            // ssh asks about unknown hosts on the terminal: never wait for an answer.
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
    }
    let protocols = if source.allow_file { "file:git:http:https:ssh" } else { "git:http:https:ssh" };
    cmd.env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("GIT_ALLOW_PROTOCOL", protocols)
        .env("GIT_CONFIG_COUNT", config.len().to_string());
    for (i, (k, v)) in config.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), k).env(format!("GIT_CONFIG_VALUE_{i}"), v);
    }
    cmd.current_dir(dir).args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let secret = source.credentials.as_ref().map(|(_, _, p)| p.clone());
    let scrub = |text: String| match &secret {
        Some(s) if !s.is_empty() => text.replace(s.as_str(), "[MASKED]"),
        _ => text,
    };
    let (ok, output) = run(cmd, cancel)?;
    let output = scrub(output);
    if ok {
        Ok(output)
    } else {
        let shown = if output.trim().is_empty() { "git gave no reason".to_owned() } else { output.trim().to_owned() };
        Err(WorkspaceError::Submodules(format!("`git {}` failed:\n{shown}", args.join(" "))))
    }
}

/// Runs `cmd`, its stdout and stderr interleaved into one bounded text; `Canceled` when `cancel`
/// fires (the process is killed).
fn run(mut cmd: Command, cancel: &CancellationToken) -> Result<(bool, String), WorkspaceError> {
    let mut child = cmd.spawn().map_err(|e| WorkspaceError::Submodules(format!("cannot run `git` (needed for submodules): {e}")))?;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let readers: Vec<_> =
        [child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), child.stderr.take().map(|s| Box::new(s) as _)]
            .into_iter()
            .flatten()
            .map(|mut pipe| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut buf) {
                        if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
    drop(tx);
    let mut kept = Vec::new();
    let keep = |kept: &mut Vec<u8>, chunk: Vec<u8>| {
        kept.extend_from_slice(&chunk);
        if kept.len() > MAX_OUTPUT {
            kept.drain(..kept.len() - MAX_OUTPUT);
        }
    };
    let status = loop {
        while let Ok(chunk) = rx.try_recv() {
            keep(&mut kept, chunk);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if cancel.is_cancelled() => {
                kill_group(&mut child);
                return Err(WorkspaceError::Canceled);
            }
            Ok(None) => std::thread::sleep(CANCEL_POLL),
            Err(e) => return Err(WorkspaceError::Submodules(format!("waiting for `git`: {e}"))),
        }
    };
    for r in readers {
        let _ = r.join();
    }
    while let Ok(chunk) = rx.try_recv() {
        keep(&mut kept, chunk);
    }
    // git's progress lines end with `\r`: keep the last state of each.
    let text = String::from_utf8_lossy(&kept).into_owned();
    let lines: Vec<&str> = text.lines().map(|l| l.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("")).filter(|l| !l.is_empty()).collect();
    Ok((status.success(), lines.join("\n")))
}

fn kill_group(child: &mut std::process::Child) {
    // `git submodule` runs clones as children: they end when their pipes close.
    let _ = child.kill();
    let _ = child.wait();
}

/// The submodules `.gitmodules` declares (at the checked-out commit), in file order.
fn declared(dir: &Path) -> Result<Vec<Declared>, WorkspaceError> {
    let file = dir.join(".gitmodules");
    match std::fs::symlink_metadata(&file) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(WorkspaceError::Submodules("`.gitmodules` is not a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("inspect", &file)(e)),
    }
    // libgit2 follows `[include] path = …` in a config file, git does not in `.gitmodules`: a
    // commit's `.gitmodules` must not make the runner read its own files.
    let text = std::fs::read(&file).map_err(io_err("read", &file))?;
    let includes = String::from_utf8_lossy(&text)
        .lines()
        .any(|l| l.trim_start().strip_prefix('[').is_some_and(|rest| rest.trim_start().to_ascii_lowercase().starts_with("include")));
    if includes {
        return Err(WorkspaceError::Submodules("`.gitmodules` may not have `[include]` or `[includeIf]` sections".into()));
    }
    let config =
        git2::Config::open(&file).map_err(|e| WorkspaceError::Submodules(format!("`.gitmodules` cannot be read: {}", e.message())))?;
    let mut names: Vec<String> = Vec::new();
    let mut entries =
        config.entries(Some(r"^submodule\..*\.(path|url)$")).map_err(|e| WorkspaceError::Submodules(e.message().to_owned()))?;
    while let Some(Ok(entry)) = entries.next() {
        let Ok(key) = entry.name() else { continue };
        let Some(name) = key.strip_prefix("submodule.").and_then(|k| k.rsplit_once('.')).map(|(n, _)| n.to_owned()) else { continue };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut out = Vec::new();
    for name in names {
        let get = |k: &str| config.get_string(&format!("submodule.{name}.{k}")).ok();
        let (Some(path), Some(url)) = (get("path"), get("url")) else {
            return Err(WorkspaceError::Submodules(format!("`.gitmodules`: submodule `{name}` needs both `path` and `url`")));
        };
        if name.contains(['\n', '\0']) || crate::artifacts::relative_components(path.as_bytes()).is_err() || url.starts_with('-') {
            return Err(WorkspaceError::Submodules(format!("`.gitmodules`: submodule `{name}` has an unusable path or URL")));
        }
        out.push(Declared { name, path, url });
    }
    Ok(out)
}

/// Empties `.git/modules` and every declared submodule directory (see the module
/// documentation), never following a symlink.
fn reset(dir: &Path, declared: &[Declared]) -> Result<(), WorkspaceError> {
    let modules = dir.join(".git/modules");
    if std::fs::symlink_metadata(&modules).is_ok() {
        remove_tree(&modules)?;
    }
    for sm in declared {
        let mut at = dir.to_path_buf();
        let parts: Vec<_> = Path::new(&sm.path).components().collect();
        let mut ok = true;
        for c in &parts[..parts.len().saturating_sub(1)] {
            at.push(c);
            if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
                ok = false;
                break;
            }
        }
        if !ok {
            // Not where the commit has it: git will say so.
            continue;
        }
        let path = dir.join(&sm.path);
        if std::fs::symlink_metadata(&path).is_ok() {
            remove_tree(&path)?;
            ensure_dir(&path)?;
        }
    }
    Ok(())
}

/// Whether git would read `url` from this machine's disk.
fn is_local(url: &str) -> bool {
    url.starts_with("file:") || !url.contains("://") && !is_scp_like(url)
}

fn is_scp_like(url: &str) -> bool {
    match (url.find(':'), url.find('/')) {
        (Some(colon), slash) => !url.contains("://") && slash.is_none_or(|s| colon < s) && colon > 0,
        _ => false,
    }
}

/// A submodule URL as git will fetch it: relative ones (`./x`, `../x`) against `base`, as git
/// resolves them against the superproject's remote.
pub fn resolve_url(url: &str, base: Option<&str>) -> Result<String, String> {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return Ok(url.to_owned());
    }
    let Some(base) = base else {
        return Err(format!("the relative URL `{url}` needs the project's URL, and there is none"));
    };
    // git: the base's trailing `/` goes; each `../` removes one component of it.
    let mut base = base.trim_end_matches('/').to_owned();
    let (floor, sep) = if let Some(i) = base.find("://") {
        // Never above the host.
        let host_end = base[i + 3..].find('/').map_or(base.len(), |j| i + 3 + j);
        (host_end, '/')
    } else if is_scp_like(&base) {
        (base.find(':').unwrap_or(0) + 1, '/')
    } else {
        (0, '/')
    };
    let mut rest = url;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            let cut = base[floor..].rfind(sep).map(|j| floor + j);
            match cut {
                Some(j) if j >= floor && j > 0 => base.truncate(j),
                _ if base.len() > floor => base.truncate(floor),
                _ => return Err(format!("the relative URL `{url}` goes above the project's host")),
            }
            rest = r;
        } else {
            break;
        }
    }
    let base = base.trim_end_matches('/');
    if base.ends_with(':') { Ok(format!("{base}{rest}")) } else { Ok(format!("{base}/{rest}")) }
}

/// `git@host:path` and `ssh://[user@]host[:port]/path` as `https://host/path`, with the host.
fn force_https(url: &str) -> Option<(String, String)> {
    let (host, path) = if let Some(rest) = url.strip_prefix("ssh://").or_else(|| url.strip_prefix("git+ssh://")) {
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        (host.split_once(':').map_or(host, |(h, _)| h).to_owned(), path.to_owned())
    } else if is_scp_like(url) {
        let (authority, path) = url.split_once(':')?;
        (authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_owned(), path.trim_start_matches('/').to_owned())
    } else {
        return None;
    };
    (!host.is_empty() && !host.as_bytes().contains(&b'/')).then(|| (format!("https://{host}/{path}"), host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_against_the_project_url_as_git_does() {
        let base = Some("https://gitlab.example.com/group/app.git");
        assert_eq!(resolve_url("../lib.git", base).unwrap(), "https://gitlab.example.com/group/lib.git");
        assert_eq!(resolve_url("../../other/lib.git", base).unwrap(), "https://gitlab.example.com/other/lib.git");
        assert_eq!(resolve_url("./sub.git", base).unwrap(), "https://gitlab.example.com/group/app.git/sub.git");
        assert!(resolve_url("../../../x.git", base).unwrap_err().contains("above the project's host"));
        assert_eq!(resolve_url("../lib.git", Some("git@host:group/app.git")).unwrap(), "git@host:group/lib.git");
        assert_eq!(resolve_url("../lib.git", Some("/srv/git/app.git/")).unwrap(), "/srv/git/lib.git");
        assert_eq!(resolve_url("git://h/x.git", None).unwrap(), "git://h/x.git");
        assert!(resolve_url("../x.git", None).unwrap_err().contains("needs the project's URL"));
    }

    #[test]
    fn force_https_rewrites_ssh_urls() {
        assert_eq!(force_https("git@gitlab.com:group/x.git").unwrap().0, "https://gitlab.com/group/x.git");
        assert_eq!(force_https("ssh://git@gitlab.com:2222/group/x.git").unwrap().0, "https://gitlab.com/group/x.git");
        assert_eq!(force_https("https://gitlab.com/group/x.git"), None);
        assert_eq!(force_https("/srv/x.git"), None);
    }

    #[test]
    fn update_flags_gitlab_documents_are_accepted_others_refused() {
        let ok = parse_update_flags("--remote --jobs 4 --depth=2 -j 3 --no-single-branch").unwrap();
        assert_eq!(ok, ["--remote", "--jobs=4", "--depth=2", "--jobs=3", "--no-single-branch"]);
        let err = |t: &str| parse_update_flags(t).unwrap_err().to_string();
        assert!(err("--reference /srv/x").contains("`--reference` is not supported; use --remote"), "{}", err("--reference /srv/x"));
        assert!(err("--jobs many").contains("`--jobs` needs a number, got `many`"));
        assert!(err("--depth").contains("`--depth` needs a number"));
        assert!(err("--recursive").contains("GIT_SUBMODULE_STRATEGY"));
        assert!(err("--merge").contains("not supported"));
    }

    #[test]
    fn strategies_and_depth() {
        let spec = SubmoduleSpec::parse(Some("recursive"), Some("a :(exclude)b"), None, Some("true"), None, Some(3)).unwrap();
        assert_eq!(spec.strategy, SubmoduleStrategy::Recursive);
        assert_eq!(spec.paths, ["a", ":(exclude)b"]);
        assert!(spec.force_https);
        // GitLab: GIT_SUBMODULE_DEPTH defaults to GIT_DEPTH.
        assert_eq!(spec.depth, Some(3));
        assert_eq!(SubmoduleSpec::parse(Some("normal"), None, None, None, Some("1"), Some(3)).unwrap().depth, Some(1));
        let err = SubmoduleSpec::parse(Some("deep"), None, None, None, None, None).unwrap_err().to_string();
        assert!(err.contains("unknown GIT_SUBMODULE_STRATEGY `deep`; expected none, normal or recursive"), "{err}");
        assert!(SubmoduleSpec::parse(None, None, None, None, Some("x"), None).unwrap_err().to_string().contains("GIT_SUBMODULE_DEPTH `x`"));
    }
}
