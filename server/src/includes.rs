//! Includes on the server beyond the projects' mirrors: GitLab templates from
//! `[includes] templates_dir`, remote files whose URL the operator allowed
//! (`[includes] remote_allow`), and which hosts name this server in component addresses.
//!
//! A remote include is fetched only when its URL matches the allow-list — and so must every
//! redirect — over https (rustls, webpki's roots plus the top-level `ca_file`), within
//! `remote_timeout_ms` and `remote_max_bytes`. A body is kept in memory by URL when the include
//! asks for `cache:` (GitLab's `include:cache`), for that long, at most `remote_cache_entries`
//! bodies; `integrity:` is checked by the loader on whatever is returned, and a kept body that
//! does not match it is fetched again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pipeline_spec::include::{IncludeResolver, RemoteRequest, ResolveError};

use crate::config::{Config, IncludesConfig};
use crate::git::TreeResolver;

/// Largest template read (GitLab's own are a few KiB; the YAML layer stops at 2 MiB).
const MAX_TEMPLATE_BYTES: u64 = 8 * 1024 * 1024;

/// The URL patterns `include:remote` may fetch.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    patterns: Vec<UrlPattern>,
}

#[derive(Debug, Clone)]
struct UrlPattern {
    host: String,
    port: u16,
    /// Path and query, `*` matching any run of characters.
    rest: String,
}

impl AllowList {
    /// Reads `https://host[:port]/path` patterns; `*` may appear in the path only.
    pub fn new(patterns: &[String]) -> Result<AllowList, String> {
        let mut out = Vec::new();
        for p in patterns {
            let url = reqwest::Url::parse(p).map_err(|e| format!("`{p}` is not a URL: {e}"))?;
            if url.scheme() != "https" {
                return Err(format!("`{p}`: only `https://` URLs may be allowed"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!("`{p}`: a pattern holds no credentials"));
            }
            let host = url.host_str().ok_or_else(|| format!("`{p}` names no host"))?;
            if host.contains('*') {
                return Err(format!("`{p}`: the host is written out in full (`*` may appear in the path only)"));
            }
            let port = url.port_or_known_default().unwrap_or(443);
            out.push(UrlPattern { host: host.to_ascii_lowercase(), port, rest: path_and_query(&url) });
        }
        Ok(AllowList { patterns: out })
    }

    pub fn allows(&self, url: &reqwest::Url) -> bool {
        if url.scheme() != "https" || !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { return false };
        let rest = path_and_query(url);
        self.patterns.iter().any(|p| p.host.eq_ignore_ascii_case(host) && p.port == port && wildcard(&p.rest, &rest))
    }
}

fn path_and_query(url: &reqwest::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// `*` matches any run of characters; everything else matches itself. Linear in practice:
/// greedy with one backtrack point.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if i < p.len() && p[i] == t[j] {
            i += 1;
            j += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&b| b == b'*')
}

/// What the server keeps for includes between pipelines (one per [`crate::AppState`]).
pub struct Includes {
    config: IncludesConfig,
    allow: Arc<AllowList>,
    ca_file: Option<PathBuf>,
    client: OnceLock<Result<reqwest::Client, String>>,
    /// URL → (body, fetched at, ms).
    cache: Mutex<HashMap<String, (Arc<str>, i64)>>,
    /// Hosts besides `$CI_SERVER_FQDN` that name this server in component addresses.
    hosts: Vec<String>,
}

impl Includes {
    pub fn new(config: &Config) -> Includes {
        let mut hosts: Vec<String> = config.includes.component_hosts.clone();
        if let Some(url) = config.external_url.as_deref().and_then(|u| reqwest::Url::parse(u).ok()) {
            if let Some(host) = url.host_str() {
                hosts.push(match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_string(),
                });
            }
        }
        Includes {
            allow: Arc::new(AllowList::new(&config.includes.remote_allow).unwrap_or_default()),
            config: config.includes.clone(),
            ca_file: config.ca_file.clone(),
            client: OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
            hosts,
        }
    }

    /// The resolver a pipeline is loaded with: mirrors through `tree`, the rest here. `now_ms`
    /// is the server's clock; remote fetches block on `runtime` (call from `spawn_blocking`).
    pub fn resolver<'a>(&'a self, tree: &'a TreeResolver, now_ms: i64, runtime: Option<tokio::runtime::Handle>) -> PipelineResolver<'a> {
        PipelineResolver { tree, includes: self, now_ms, runtime }
    }

    fn client(&self) -> Result<&reqwest::Client, ResolveError> {
        let built = self.client.get_or_init(|| {
            let allow = self.allow.clone();
            let mut builder = reqwest::Client::builder()
                .user_agent(concat!("piste/", env!("CARGO_PKG_VERSION")))
                .https_only(true)
                .timeout(Duration::from_millis(self.config.remote_timeout_ms))
                .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() >= 5 {
                        attempt.error("more than 5 redirects")
                    } else if !allow.allows(attempt.url()) {
                        attempt.error("a redirect leaves `[includes] remote_allow`")
                    } else {
                        attempt.follow()
                    }
                }));
            if let Some(path) = &self.ca_file {
                let pem = std::fs::read(path).map_err(|e| format!("cannot read `ca_file` `{}`: {e}", path.display()))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("`ca_file` `{}` is not a PEM certificate bundle: {e}", path.display()))?;
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            builder.build().map_err(|e| format!("cannot set up the HTTP client: {e}"))
        });
        built.as_ref().map_err(|e| ResolveError::Other(e.clone()))
    }

    fn remote(&self, request: &RemoteRequest<'_>, now_ms: i64, runtime: Option<&tokio::runtime::Handle>) -> Result<String, ResolveError> {
        let url = reqwest::Url::parse(request.url).map_err(|e| ResolveError::Other(format!("not a URL: {e}")))?;
        if !self.allow.allows(&url) {
            return Err(ResolveError::Unavailable(
                "this server fetches only the URLs its `[includes] remote_allow` lists, over https".into(),
            ));
        }
        if let Some(ttl) = request.cache_secs {
            let kept = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(request.url).cloned();
            if let Some((body, at)) = kept {
                let fresh = now_ms.saturating_sub(at) < (ttl as i64).saturating_mul(1000);
                if fresh && request.integrity.is_none_or(|i| i.matches(body.as_bytes())) {
                    return Ok(body.to_string());
                }
            }
        }
        let client = self.client()?.clone();
        let limit = self.config.remote_max_bytes;
        let runtime = runtime.ok_or_else(|| ResolveError::Other("remote includes are fetched from the server's runtime only".into()))?;
        let body = runtime.block_on(get(&client, url, limit))?;
        let text = String::from_utf8(body).map_err(|_| ResolveError::Other("the file is not UTF-8 text".into()))?;
        if request.cache_secs.is_some() {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= self.config.remote_cache_entries && !cache.contains_key(request.url) {
                if let Some(oldest) = cache.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone()) {
                    cache.remove(&oldest);
                }
            }
            if self.config.remote_cache_entries > 0 {
                cache.insert(request.url.to_string(), (Arc::from(text.as_str()), now_ms));
            }
        }
        Ok(text)
    }

    fn template(&self, name: &str) -> Result<String, ResolveError> {
        let Some(dir) = &self.config.templates_dir else {
            return Err(ResolveError::Unavailable("GitLab's templates are not available: set `[includes] templates_dir`".into()));
        };
        read_template(dir, name)
    }
}

/// `dir/name`, which must stay inside `dir` (links included), bounded, UTF-8.
fn read_template(dir: &Path, name: &str) -> Result<String, ResolveError> {
    let missing = || ResolveError::Unavailable(format!("template `{name}` is not in `[includes] templates_dir`"));
    if name.split('/').any(|p| p.is_empty() || p == "." || p == "..") || name.contains('\0') {
        return Err(ResolveError::Other(format!("template `{name}` is not a relative path")));
    }
    let full = dir.join(name);
    let (real, base) = match (full.canonicalize(), dir.canonicalize()) {
        (Ok(r), Ok(b)) => (r, b),
        (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        (Err(e), _) | (_, Err(e)) => return Err(ResolveError::Other(e.to_string())),
    };
    if !real.starts_with(&base) {
        return Err(ResolveError::Other(format!("template `{name}` is a link out of `[includes] templates_dir`")));
    }
    let meta = std::fs::metadata(&real).map_err(|e| ResolveError::Other(e.to_string()))?;
    if !meta.is_file() || meta.len() > MAX_TEMPLATE_BYTES {
        return Err(ResolveError::Other(format!("template `{name}` is not a regular file of at most {MAX_TEMPLATE_BYTES} bytes")));
    }
    let bytes = std::fs::read(&real).map_err(|e| ResolveError::Other(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| ResolveError::Other(format!("template `{name}` is not UTF-8 text")))
}

async fn get(client: &reqwest::Client, url: reqwest::Url, limit: u64) -> Result<Vec<u8>, ResolveError> {
    use futures_util::StreamExt as _;
    let response = client.get(url).send().await.map_err(network)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ResolveError::Other(format!("the server answered HTTP {status}")));
    }
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(ResolveError::Other(format!("the file is larger than `[includes] remote_max_bytes` ({limit})")));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(network)?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(ResolveError::Other(format!("the file is larger than `[includes] remote_max_bytes` ({limit})")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn network(e: reqwest::Error) -> ResolveError {
    if e.is_timeout() {
        return ResolveError::Unavailable("it did not answer within `[includes] remote_timeout_ms`".into());
    }
    ResolveError::Unavailable(format!("cannot fetch it: {}", crate::error::chain(&e)))
}

/// A pipeline's include resolver on the server.
pub struct PipelineResolver<'a> {
    tree: &'a TreeResolver,
    includes: &'a Includes,
    now_ms: i64,
    runtime: Option<tokio::runtime::Handle>,
}

impl IncludeResolver for PipelineResolver<'_> {
    fn read(&self, project: Option<&str>, path: &str, git_ref: Option<&str>) -> Result<String, ResolveError> {
        self.tree.read(project, path, git_ref)
    }

    fn glob(&self, project: Option<&str>, pattern: &str, git_ref: Option<&str>) -> Result<Vec<String>, ResolveError> {
        self.tree.glob(project, pattern, git_ref)
    }

    fn tags(&self, project: Option<&str>) -> Result<Vec<String>, ResolveError> {
        self.tree.tags(project)
    }

    fn commit(&self, project: Option<&str>, git_ref: &str) -> Result<String, ResolveError> {
        self.tree.commit(project, git_ref)
    }

    fn component_host(&self, host: &str) -> bool {
        self.includes.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    fn template(&self, name: &str) -> Result<String, ResolveError> {
        self.includes.template(name)
    }

    fn remote(&self, request: &RemoteRequest<'_>) -> Result<String, ResolveError> {
        self.includes.remote(request, self.now_ms, self.runtime.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns name a scheme, host and port in full; `*` in the path matches any run of
    /// characters, `/` included; a URL with credentials or over http is never allowed.
    #[test]
    fn allow_list_patterns() {
        let list = AllowList::new(&[
            "https://gitlab.gnome.org/GNOME/citemplates/raw/*".to_string(),
            "https://ci.example:8443/exact.yml".to_string(),
        ])
        .unwrap();
        let ok = |u: &str| list.allows(&reqwest::Url::parse(u).unwrap());
        assert!(ok("https://gitlab.gnome.org/GNOME/citemplates/raw/master/flatpak/flatpak_ci_initiative.yml"));
        assert!(ok("https://GITLAB.gnome.org/GNOME/citemplates/raw/x.yml"));
        assert!(!ok("https://gitlab.gnome.org/GNOME/other/raw/x.yml"));
        assert!(!ok("http://gitlab.gnome.org/GNOME/citemplates/raw/x.yml"));
        assert!(!ok("https://gitlab.gnome.org.evil.test/GNOME/citemplates/raw/x.yml"));
        assert!(!ok("https://user:pw@gitlab.gnome.org/GNOME/citemplates/raw/x.yml"));
        assert!(ok("https://ci.example:8443/exact.yml"));
        assert!(!ok("https://ci.example/exact.yml"));
        assert!(!ok("https://ci.example:8443/exact.yml?x=1"));
        for bad in ["http://a/x", "https://*.example/x", "https://u:p@a/x", "not a url"] {
            assert!(AllowList::new(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(wildcard("/a/*/c*", "/a/b/x/cd"));
        assert!(!wildcard("/a/*/c", "/a/b/cd"));
    }
}
