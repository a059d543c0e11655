//! The OCI distribution protocol, client side: authentication (anonymous, Basic, Bearer
//! tokens from a `WWW-Authenticate` realm), blobs (HEAD before upload, cross-repository mount,
//! chunked `PATCH` uploads resumed from the registry's `Range`, digest checked), manifests
//! (pull with index resolution, push by tag), bounded retries on 408/429/5xx.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderValue, LOCATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::auth::{Challenge, Credentials, Login, basic};
use super::image::media;
use super::{Log, OciError};

/// Attempts per request (the first included) on 408, 429, 5xx and connection errors.
pub const ATTEMPTS: u32 = 5;
/// Times a chunked upload is resumed from the registry's `Range` after a chunk failed.
pub const MAX_RESUMES: u32 = 3;
/// Size of one `PATCH` of a chunked upload.
pub const CHUNK: u64 = 64 << 20;
/// Largest manifest or config read into memory (the distribution spec's manifest limit).
const MAX_MANIFEST: usize = 4 << 20;

/// How registries are reached: credentials, extra CA certificates, plain-HTTP registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub credentials: Credentials,
    /// PEM bundle of CA certificates trusted in addition to the system's (`CI_SERVER_TLS_CA_FILE`).
    pub ca_bundle: Option<PathBuf>,
    /// Registries (`host:port`) reached over plain HTTP. Loopback registries always may be.
    pub insecure: Vec<String>,
}

/// One HTTP client shared by every registry of a build.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    opts: Arc<RegistryOptions>,
    log: Log,
}

impl Client {
    /// A client trusting the system's roots plus `opts.ca_bundle`; proxy variables
    /// (`HTTPS_PROXY`, `NO_PROXY`…) are honoured by reqwest.
    pub fn new(opts: RegistryOptions, log: Log) -> Result<Client, OciError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("piste/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(path) = &opts.ca_bundle {
            let pem = std::fs::read(path)
                .map_err(|e| OciError::Io { what: format!("cannot read the CA bundle `{}`", path.display()), source: e })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| OciError::Credentials(format!("the CA bundle `{}` is not a PEM certificate bundle: {e}", path.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http =
            builder.build().map_err(|e| OciError::Http { registry: String::new(), what: "set up the HTTP client".into(), source: e })?;
        Ok(Client { http, opts: Arc::new(opts), log })
    }

    /// A connection to registry `host` (authenticated lazily, per repository set).
    pub fn registry(&self, host: &str) -> Arc<Registry> {
        let endpoint = if host == "docker.io" { "registry-1.docker.io" } else { host };
        let plain_ok = is_loopback(endpoint) || self.opts.insecure.iter().any(|h| h == host || h == endpoint);
        Arc::new(Registry {
            http: self.http.clone(),
            host: host.to_owned(),
            endpoint: endpoint.to_owned(),
            plain_ok,
            login: self.opts.credentials.get(host).cloned(),
            base: tokio::sync::OnceCell::new(),
            log: self.log.clone(),
        })
    }
}

/// Whether `host[:port]` names this machine (`localhost`, `127.0.0.0/8`, `[::1]`): such
/// registries may be plain HTTP, as the Docker Engine allows.
pub fn is_loopback(host: &str) -> bool {
    let name =
        if let Some(rest) = host.strip_prefix('[') { rest.split(']').next().unwrap_or("") } else { host.split(':').next().unwrap_or("") };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// One registry.
pub struct Registry {
    http: reqwest::Client,
    host: String,
    endpoint: String,
    plain_ok: bool,
    login: Option<Login>,
    /// `https://host/v2/` or, for loopback and insecure registries that do not speak TLS,
    /// `http://host/v2/`; with the challenge `/v2/` answered.
    base: tokio::sync::OnceCell<(Url, Option<Challenge>)>,
    log: Log,
}

/// Authorization for a set of repositories of one registry.
pub struct Session {
    reg: Arc<Registry>,
    /// `repository:NAME:ACTIONS` scopes the token was asked for.
    scopes: Vec<String>,
    header: tokio::sync::Mutex<Option<HeaderValue>>,
}

/// What happened to one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The registry had it: nothing sent.
    Present,
    /// Mounted from another repository of the same registry: nothing sent.
    Mounted { from: String },
    /// Uploaded (`bytes` sent, `retries` requests repeated).
    Uploaded { bytes: u64, retries: u32 },
}

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub enum BlobData {
    Memory(Bytes),
    File(PathBuf),
}

/// A blob to push.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub data: BlobData,
}

impl Blob {
    pub fn memory(bytes: Vec<u8>) -> Blob {
        Blob { digest: sha256_digest(&bytes), size: bytes.len() as u64, data: BlobData::Memory(bytes.into()) }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A manifest as the registry sent it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

impl Registry {
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Authorizes `push` (pull and push) on `repo` and pull on `pull_from`; checks the
    /// credentials now, so that a wrong password fails before anything is sent.
    pub async fn session(self: &Arc<Self>, repo: &str, push: bool, pull_from: &[&str]) -> Result<Session, OciError> {
        let mut scopes = vec![format!("repository:{repo}:{}", if push { "pull,push" } else { "pull" })];
        scopes.extend(pull_from.iter().filter(|r| **r != repo).map(|r| format!("repository:{r}:pull")));
        let session = Session { reg: self.clone(), scopes, header: tokio::sync::Mutex::new(None) };
        session.authorize().await?;
        Ok(session)
    }

    async fn base(&self) -> Result<&(Url, Option<Challenge>), OciError> {
        self.base
            .get_or_try_init(|| async {
                let https = Url::parse(&format!("https://{}/v2/", self.endpoint))
                    .map_err(|e| OciError::Reference { reference: self.host.clone(), reason: e.to_string() })?;
                // A registry that may be plain HTTP gets a short https probe: a server that
                // does not speak TLS may also never answer a ClientHello.
                let mut probe = self.http.get(https.clone());
                if self.plain_ok {
                    probe = probe.timeout(Duration::from_secs(3));
                }
                let first = probe.send().await;
                let (base, response) = match first {
                    Ok(r) => (https, r),
                    Err(e) if self.plain_ok => {
                        let http = Url::parse(&format!("http://{}/v2/", self.endpoint)).expect("same host");
                        match self.http.get(http.clone()).send().await {
                            Ok(r) => (http, r),
                            Err(_) => return Err(self.http_error("reach the registry (https, then http)", e)),
                        }
                    }
                    Err(e) => return Err(self.http_error("reach the registry over https", e)),
                };
                let challenge = match response.status() {
                    s if s.is_success() => None,
                    StatusCode::UNAUTHORIZED => {
                        let header = response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("");
                        Some(Challenge::parse(header).ok_or_else(|| OciError::Registry {
                            registry: self.host.clone(),
                            what: "authenticate".into(),
                            status: 401,
                            detail: format!("unsupported `WWW-Authenticate: {header}` (piste speaks Basic and Bearer)"),
                        })?)
                    }
                    s => return Err(self.status_error("answer `GET /v2/`", s.as_u16(), response).await),
                };
                Ok((base, challenge))
            })
            .await
    }

    fn http_error(&self, what: &str, e: reqwest::Error) -> OciError {
        OciError::Http { registry: self.host.clone(), what: what.to_owned(), source: e }
    }

    async fn status_error(&self, what: &str, status: u16, response: reqwest::Response) -> OciError {
        let body = read_limited(response, 64 << 10).await.unwrap_or_default();
        OciError::Registry { registry: self.host.clone(), what: what.to_owned(), status, detail: registry_errors(&body) }
    }

    fn unauthorized(&self, detail: String) -> OciError {
        OciError::Unauthorized { registry: self.host.clone(), user: self.login.as_ref().map(|l| l.username.clone()), detail }
    }
}

impl Session {
    pub fn registry(&self) -> &Registry {
        &self.reg
    }

    /// (Re)computes the `Authorization` header for this session's scopes.
    async fn authorize(&self) -> Result<(), OciError> {
        let reg = &self.reg;
        let (base, challenge) = reg.base().await?;
        let header = match challenge {
            None => None,
            Some(Challenge::Basic) => {
                let login =
                    reg.login.as_ref().ok_or_else(|| reg.unauthorized("the registry asks for a login and none was given".into()))?;
                let value = basic(login);
                let check =
                    reg.http.get(base.clone()).header(AUTHORIZATION, &value).send().await.map_err(|e| reg.http_error("log in", e))?;
                match check.status() {
                    s if s.is_success() => {}
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        return Err(reg.unauthorized(format!("the registry refused the login ({})", check.status().as_u16())));
                    }
                    s => return Err(reg.status_error("log in", s.as_u16(), check).await),
                }
                Some(value)
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let mut url = Url::parse(realm).map_err(|e| reg.unauthorized(format!("the token realm `{realm}` is not a URL ({e})")))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(service) = service {
                        q.append_pair("service", service);
                    }
                    for scope in &self.scopes {
                        q.append_pair("scope", scope);
                    }
                }
                let mut req = reg.http.get(url);
                if let Some(login) = &reg.login {
                    req = req.header(AUTHORIZATION, basic(login));
                }
                let response = req.send().await.map_err(|e| reg.http_error("get a token from the registry's realm", e))?;
                match response.status() {
                    s if s.is_success() => {}
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        return Err(
                            reg.unauthorized(format!("the token service `{realm}` refused the login ({})", response.status().as_u16()))
                        );
                    }
                    s => return Err(reg.status_error("get a token", s.as_u16(), response).await),
                }
                let body = read_limited(response, 1 << 20).await.map_err(|e| reg.http_error("read the token", e))?;
                let json: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| reg.unauthorized(format!("the token service answered something that is not JSON ({e})")))?;
                let token = json
                    .get("token")
                    .or_else(|| json.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| reg.unauthorized("the token service's answer has no `token`".into()))?;
                Some(format!("Bearer {token}"))
            }
        };
        let header = header
            .map(|h| {
                HeaderValue::from_str(&h).map_err(|_| reg.unauthorized("the credentials hold characters not allowed in a header".into()))
            })
            .transpose()?
            .map(|mut h| {
                h.set_sensitive(true);
                h
            });
        *self.header.lock().await = header;
        Ok(())
    }

    fn url(&self, path: &str) -> Result<Url, OciError> {
        let (base, _) = self.reg.base.get().expect("authorized sessions have a base");
        base.join(path).map_err(|e| OciError::Reference { reference: path.to_owned(), reason: e.to_string() })
    }

    /// Sends the request `make` builds, with authorization, retrying 408/429/5xx and
    /// connection errors ([`ATTEMPTS`] in all, backing off), and once on a 401 after a new
    /// token. Returns the response and how many times it was repeated.
    async fn send<F>(&self, what: &str, make: F) -> Result<(reqwest::Response, u32), OciError>
    where
        F: AsyncFn() -> Result<reqwest::RequestBuilder, OciError>,
    {
        let mut retries = 0;
        let mut reauthorized = false;
        loop {
            let mut req = make().await?;
            if let Some(h) = self.header.lock().await.clone() {
                req = req.header(AUTHORIZATION, h);
            }
            let wait = Duration::from_millis(250 << retries.min(4));
            match req.send().await {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !reauthorized && self.header.lock().await.is_some() => {
                    reauthorized = true;
                    self.authorize().await?;
                }
                Ok(r) if retryable(r.status()) && retries + 1 < ATTEMPTS => {
                    let after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
                    let wait = after.map(|s| Duration::from_secs(s.min(30))).unwrap_or(wait);
                    self.reg.log.line(format!("{what}: the registry answered {}, retrying in {wait:?}", r.status().as_u16())).await;
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
                Ok(r) => return Ok((r, retries)),
                Err(e) if retries + 1 < ATTEMPTS && (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()) => {
                    self.reg.log.line(format!("{what}: {e}; retrying in {wait:?}")).await;
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(self.reg.http_error(what, e)),
            }
        }
    }

    async fn expect(&self, what: &str, response: reqwest::Response, ok: &[StatusCode]) -> Result<reqwest::Response, OciError> {
        let status = response.status();
        if ok.contains(&status) {
            return Ok(response);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let body = read_limited(response, 64 << 10).await.unwrap_or_default();
            return Err(self.reg.unauthorized(format!("{what}: {} {}", status.as_u16(), registry_errors(&body))));
        }
        Err(self.reg.status_error(what, status.as_u16(), response).await)
    }

    /// Whether blob `digest` is in `repo`.
    pub async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool, OciError> {
        let url = self.url(&format!("{repo}/blobs/{digest}"))?;
        let http = &self.reg.http;
        let (r, _) = self.send("check a blob", async || Ok(http.head(url.clone()))).await?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.expect("check a blob", r, &[]).await.unwrap_err()),
        }
    }

    /// Makes sure `repo` has `blob`: nothing is sent when it is there or can be mounted from
    /// `mount_from` (another repository of this registry).
    pub async fn push_blob(&self, repo: &str, blob: &Blob, mount_from: Option<&str>) -> Result<BlobOutcome, OciError> {
        if self.has_blob(repo, &blob.digest).await? {
            return Ok(BlobOutcome::Present);
        }
        let http = &self.reg.http;
        let mut start = self.url(&format!("{repo}/blobs/uploads/"))?;
        if let Some(from) = mount_from.filter(|f| *f != repo) {
            start.query_pairs_mut().append_pair("mount", &blob.digest).append_pair("from", from);
        }
        let (r, mut retries) = self.send("start a blob upload", async || Ok(http.post(start.clone()).header(CONTENT_LENGTH, 0))).await?;
        let r = self.expect("start a blob upload", r, &[StatusCode::CREATED, StatusCode::ACCEPTED]).await?;
        if r.status() == StatusCode::CREATED {
            return Ok(BlobOutcome::Mounted { from: mount_from.unwrap_or_default().to_owned() });
        }
        let mut location = self.location(&r)?;
        match &blob.data {
            BlobData::Memory(bytes) => {
                let mut url = location.clone();
                url.query_pairs_mut().append_pair("digest", &blob.digest);
                let (r, n) = self
                    .send("upload a blob", async || {
                        Ok(http.put(url.clone()).header(CONTENT_TYPE, "application/octet-stream").body(bytes.clone()))
                    })
                    .await?;
                retries += n;
                let r = self.expect("upload a blob", r, &[StatusCode::CREATED]).await?;
                self.check_digest_header(&r, &blob.digest)?;
            }
            BlobData::File(path) => {
                let (mut offset, mut resumes) = (0u64, 0u32);
                while offset < blob.size {
                    let len = CHUNK.min(blob.size - offset);
                    let here = location.clone();
                    let result = self
                        .send("upload a chunk", async || {
                            let mut file = tokio::fs::File::open(path)
                                .await
                                .map_err(|e| OciError::Io { what: format!("cannot open `{}`", path.display()), source: e })?;
                            file.seek(std::io::SeekFrom::Start(offset))
                                .await
                                .map_err(|e| OciError::Io { what: format!("cannot seek in `{}`", path.display()), source: e })?;
                            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 << 10));
                            Ok(http
                                .patch(here.clone())
                                .header(CONTENT_TYPE, "application/octet-stream")
                                .header(CONTENT_RANGE, format!("{offset}-{}", offset + len - 1))
                                .header(CONTENT_LENGTH, len)
                                .body(body))
                        })
                        .await;
                    let r = match result {
                        Ok((r, n)) if r.status() == StatusCode::ACCEPTED => {
                            retries += n;
                            r
                        }
                        other => {
                            // Resume: ask the registry how much it has, go on from there.
                            retries += 1;
                            resumes += 1;
                            if resumes > MAX_RESUMES {
                                return match other {
                                    Ok((r, _)) => Err(self.expect("upload a chunk", r, &[]).await.unwrap_err()),
                                    Err(e) => Err(e),
                                };
                            }
                            let status = self.send("ask for an upload's progress", async || Ok(http.get(here.clone()))).await?.0;
                            let status = self.expect("ask for an upload's progress", status, &[StatusCode::NO_CONTENT]).await?;
                            offset = status
                                .headers()
                                .get(RANGE)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.split_once('-'))
                                .and_then(|(_, end)| end.parse::<u64>().ok())
                                .map_or(0, |end| end + 1);
                            location = self.location(&status).unwrap_or(location);
                            self.reg.log.line(format!("resuming the upload of {} at byte {offset}", short(&blob.digest))).await;
                            continue;
                        }
                    };
                    location = self.location(&r)?;
                    offset += len;
                }
                let mut url = location.clone();
                url.query_pairs_mut().append_pair("digest", &blob.digest);
                let (r, n) = self.send("finish a blob upload", async || Ok(http.put(url.clone()).header(CONTENT_LENGTH, 0))).await?;
                retries += n;
                let r = self.expect("finish a blob upload", r, &[StatusCode::CREATED]).await?;
                self.check_digest_header(&r, &blob.digest)?;
            }
        }
        Ok(BlobOutcome::Uploaded { bytes: blob.size, retries })
    }

    /// Mounts blob `digest` from `from` into `repo` (same registry); `false` when the
    /// registry declined (the upload it opened instead is cancelled).
    pub async fn mount_blob(&self, repo: &str, digest: &str, from: &str) -> Result<bool, OciError> {
        let http = &self.reg.http;
        let mut start = self.url(&format!("{repo}/blobs/uploads/"))?;
        start.query_pairs_mut().append_pair("mount", digest).append_pair("from", from);
        let (r, _) = self.send("mount a blob", async || Ok(http.post(start.clone()).header(CONTENT_LENGTH, 0))).await?;
        let r = self.expect("mount a blob", r, &[StatusCode::CREATED, StatusCode::ACCEPTED]).await?;
        if r.status() == StatusCode::CREATED {
            return Ok(true);
        }
        if let Ok(location) = self.location(&r) {
            let _ = self.send("cancel an upload", async || Ok(http.delete(location.clone()))).await;
        }
        Ok(false)
    }

    fn location(&self, r: &reqwest::Response) -> Result<Url, OciError> {
        let value = r.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| OciError::Registry {
            registry: self.reg.host.clone(),
            what: "start a blob upload".into(),
            status: r.status().as_u16(),
            detail: "the answer has no `Location`".into(),
        })?;
        self.url(value)
    }

    fn check_digest_header(&self, r: &reqwest::Response, expected: &str) -> Result<(), OciError> {
        match r.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            Some(got) if got != expected => Err(OciError::DigestMismatch {
                what: format!("registry `{}`", self.reg.host),
                expected: expected.to_owned(),
                actual: got.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Pushes `bytes` as manifest `reference` (a tag or its digest) of `repo`; returns its digest.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Result<String, OciError> {
        Ok(self.put_manifest_referring(repo, reference, media_type, bytes).await?.0)
    }

    /// [`Session::put_manifest`], and whether the registry answered `OCI-Subject`: it indexed the
    /// manifest's `subject` for the referrers API (OCI distribution 1.1).
    pub async fn put_manifest_referring(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(String, bool), OciError> {
        let digest = sha256_digest(bytes);
        let url = self.url(&format!("{repo}/manifests/{reference}"))?;
        let http = &self.reg.http;
        let body = Bytes::copy_from_slice(bytes);
        let (r, _) =
            self.send("push a manifest", async || Ok(http.put(url.clone()).header(CONTENT_TYPE, media_type).body(body.clone()))).await?;
        let r = self.expect("push a manifest", r, &[StatusCode::CREATED, StatusCode::OK]).await?;
        self.check_digest_header(&r, &digest)?;
        let indexed = r.headers().contains_key("oci-subject");
        Ok((digest, indexed))
    }

    /// The digest of manifest `reference` of `repo`, `None` when there is none.
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> Result<Option<String>, OciError> {
        let url = self.url(&format!("{repo}/manifests/{reference}"))?;
        let http = &self.reg.http;
        let (r, _) = self.send("check a manifest", async || Ok(http.head(url.clone()).header(ACCEPT, media::ACCEPT_MANIFESTS))).await?;
        match r.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(r.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned)),
            _ => Err(self.expect("check a manifest", r, &[]).await.unwrap_err()),
        }
    }

    /// Fetches manifest `reference` (tag or digest) of `repo`, checking its digest when
    /// `reference` is one.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Fetched, OciError> {
        let url = self.url(&format!("{repo}/manifests/{reference}"))?;
        let http = &self.reg.http;
        let what = format!("fetch manifest `{repo}:{reference}`");
        let (r, _) = self.send(&what, async || Ok(http.get(url.clone()).header(ACCEPT, media::ACCEPT_MANIFESTS))).await?;
        let r = self.expect(&what, r, &[StatusCode::OK]).await?;
        let media_type = r.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = read_limited(r, MAX_MANIFEST).await.map_err(|e| self.reg.http_error(&what, e))?;
        let digest = sha256_digest(&bytes);
        if reference.starts_with("sha256:") && reference != digest {
            return Err(OciError::DigestMismatch { what, expected: reference.to_owned(), actual: digest });
        }
        Ok(Fetched { bytes, media_type, digest })
    }

    /// Reads small blob `digest` (a config) into memory, checking its digest.
    pub async fn get_blob_bytes(&self, repo: &str, digest: &str) -> Result<Vec<u8>, OciError> {
        let url = self.url(&format!("{repo}/blobs/{digest}"))?;
        let http = &self.reg.http;
        let what = format!("fetch blob {} of `{repo}`", short(digest));
        let (r, _) = self.send(&what, async || Ok(http.get(url.clone()))).await?;
        let r = self.expect(&what, r, &[StatusCode::OK]).await?;
        let bytes = read_limited(r, MAX_MANIFEST).await.map_err(|e| self.reg.http_error(&what, e))?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(OciError::DigestMismatch { what, expected: digest.to_owned(), actual });
        }
        Ok(bytes)
    }

    /// Streams blob `digest` of `repo` into file `dest`, checking its digest.
    pub async fn get_blob_to_file(&self, repo: &str, digest: &str, dest: &Path) -> Result<u64, OciError> {
        let url = self.url(&format!("{repo}/blobs/{digest}"))?;
        let http = &self.reg.http;
        let what = format!("fetch blob {} of `{repo}`", short(digest));
        let (r, _) = self.send(&what, async || Ok(http.get(url.clone()))).await?;
        let mut r = self.expect(&what, r, &[StatusCode::OK]).await?;
        let io = |e| OciError::Io { what: format!("cannot write `{}`", dest.display()), source: e };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = r.chunk().await.map_err(|e| self.reg.http_error(&what, e))? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(OciError::DigestMismatch { what, expected: digest.to_owned(), actual });
        }
        Ok(size)
    }

    /// Sends a raw request (tests, listing tags).
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, OciError> {
        let url = self.url(path)?;
        let http = &self.reg.http;
        let (r, _) = self.send(path, async || Ok(http.request(Method::GET, url.clone()))).await?;
        let r = self.expect(path, r, &[StatusCode::OK]).await?;
        let body = read_limited(r, MAX_MANIFEST).await.map_err(|e| self.reg.http_error(path, e))?;
        serde_json::from_slice(&body).map_err(|e| OciError::Registry {
            registry: self.reg.host.clone(),
            what: path.into(),
            status: 200,
            detail: e.to_string(),
        })
    }
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Reads at most `limit` bytes of a body (a registry is not trusted with our memory).
async fn read_limited(mut r: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// The distribution spec's `{"errors": [{"code", "message"}]}`, as one line.
fn registry_errors(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(errors) = json.get("errors").and_then(|e| e.as_array())
    {
        return errors
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
                    e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_owned()
}

/// `sha256:0123456789ab` — enough to tell blobs apart in a log.
pub fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "localhost"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["registry.example:5000", "10.0.0.1:5000", "localhost.example"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn registry_errors_read_as_one_line() {
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        assert_eq!(registry_errors(body), "DENIED: requested access to the resource is denied");
        assert_eq!(registry_errors(b"plain"), "plain");
    }
}
