//! `include:remote` on this machine: an https GET with a size limit and a time limit, the
//! body kept on disk by URL when the include asks for `cache:`.
//!
//! Only with `--allow-remote` (the resolver has no fetcher otherwise): fetching a URL named in
//! a pipeline file is a decision. TLS is rustls with webpki's roots plus `--ca-file`; plain
//! http, and redirects to it, are refused. Failures of the network (no answer, a timeout) mean
//! "could not check"; an HTTP error status, a body too large or not UTF-8 mean "invalid".

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pipeline_spec::include::{RemoteRequest, ResolveError};
use sha2::{Digest, Sha256};

/// What a fetch may take.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// PEM bundle of extra certificate authorities.
    pub ca_file: Option<PathBuf>,
    /// Largest body read (GitLab's `max_yaml_size_bytes` is 2 MiB: a larger file cannot load).
    pub max_bytes: u64,
    /// Whole request, connection to last byte.
    pub timeout: Duration,
    /// Where `cache:` keeps bodies (one file per URL, named by its SHA-256).
    pub cache_dir: Option<PathBuf>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions { ca_file: None, max_bytes: 2 * 1024 * 1024, timeout: Duration::from_secs(10), cache_dir: None }
    }
}

/// Fetches remote includes.
#[derive(Debug, Clone)]
pub struct RemoteFetcher {
    client: reqwest::Client,
    opts: RemoteOptions,
}

impl RemoteFetcher {
    pub fn new(opts: RemoteOptions) -> Result<RemoteFetcher, String> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("piste/", env!("CARGO_PKG_VERSION")))
            .https_only(true)
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("more than 5 redirects")
                } else if attempt.url().scheme() != "https" {
                    attempt.error("a redirect left https")
                } else {
                    attempt.follow()
                }
            }));
        if let Some(path) = &opts.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA file `{}`: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("the CA file `{}` is not a PEM certificate bundle: {e}", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(RemoteFetcher { client, opts })
    }

    /// The body at `request.url`: from the cache when `cache:` allows and it is fresh (and
    /// matches `integrity:` when given), else fetched.
    pub fn fetch(&self, request: &RemoteRequest<'_>) -> Result<String, ResolveError> {
        let url = reqwest::Url::parse(request.url).map_err(|e| ResolveError::Other(format!("not a URL: {e}")))?;
        if url.scheme() != "https" {
            return Err(ResolveError::Unavailable("piste fetches `include:remote` over https only".into()));
        }
        let cached = self.cache_path(request.url);
        if let (Some(ttl), Some(path)) = (request.cache_secs, &cached) {
            if let Some(text) = fresh(path, Duration::from_secs(ttl)) {
                if request.integrity.is_none_or(|i| i.matches(text.as_bytes())) {
                    return Ok(text);
                }
            }
        }
        let bytes = self.get(url)?;
        let text = String::from_utf8(bytes).map_err(|_| ResolveError::Other("the file is not UTF-8 text".into()))?;
        if let (Some(_), Some(path)) = (request.cache_secs, &cached) {
            store(path, text.as_bytes());
        }
        Ok(text)
    }

    fn cache_path(&self, url: &str) -> Option<PathBuf> {
        self.opts.cache_dir.as_ref().map(|d| d.join(hex::encode(Sha256::digest(url.as_bytes()))))
    }

    /// The GET, on a thread of its own so that callers inside or outside a runtime may block.
    fn get(&self, url: reqwest::Url) -> Result<Vec<u8>, ResolveError> {
        let client = self.client.clone();
        let limit = self.opts.max_bytes;
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ResolveError::Other(format!("cannot start the HTTP client: {e}")))?;
                rt.block_on(get(&client, url, limit))
            })
            .join()
            .unwrap_or_else(|_| Err(ResolveError::Other("the fetch failed".into())))
        })
    }
}

async fn get(client: &reqwest::Client, url: reqwest::Url, limit: u64) -> Result<Vec<u8>, ResolveError> {
    use futures_util::StreamExt as _;
    let response = client.get(url).send().await.map_err(network)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ResolveError::Other(format!("the server answered HTTP {status}")));
    }
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(ResolveError::Other(format!("the file is larger than the {limit} bytes piste reads")));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(network)?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(ResolveError::Other(format!("the file is larger than the {limit} bytes piste reads")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A failure to reach the file: "could not check", with the cause.
fn network(e: reqwest::Error) -> ResolveError {
    let what = if e.is_timeout() { "it did not answer in time".to_string() } else { crate::job::error_chain(&e) };
    ResolveError::Unavailable(format!("cannot fetch it: {what}"))
}

/// The cached body at `path` when younger than `ttl`.
fn fresh(path: &Path, ttl: Duration) -> Option<String> {
    let age = std::fs::metadata(path).ok()?.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok())?;
    if age > ttl {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// Keeps a body, atomically; a cache that cannot be written is only a slower next time.
fn store(path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) {
        if std::io::Write::write_all(&mut tmp, bytes).is_ok() {
            let _ = tmp.persist(path);
        }
    }
}
