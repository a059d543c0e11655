//! Smart HTTP for runners: a CGI bridge to git's own `git http-backend`, read-only.
//!
//! Only what a clone or fetch needs is served: `GET /info/refs?service=git-upload-pack` and
//! `POST /git-upload-pack`. Pushing (`git-receive-pack`, either way) is refused with 403, the
//! "dumb" protocol (plain files under the repository) with 403, anything else is 404.
//! Authentication (the job token) is the caller's business; `REMOTE_USER` is only passed on.
//!
//! The backend runs with an empty environment plus the CGI variables (`GIT_PROJECT_ROOT`,
//! `GIT_HTTP_EXPORT_ALL`, `PATH_INFO`, `REQUEST_METHOD`, `QUERY_STRING`, `CONTENT_TYPE`,
//! `CONTENT_LENGTH`, `REMOTE_USER`), the client's `Git-Protocol` header as `GIT_PROTOCOL`
//! (protocol v2), its `Content-Encoding` (git gzips large requests), a fixed `PATH`, no system
//! config, and `safe.directory` set to the mirror.
//!
//! Sizes: the request body is held in memory and capped at [`MAX_REQUEST_BODY`] (upload-pack
//! requests are lists of wants and haves: small); the response, which carries the pack, is
//! streamed ([`GitHttpBody`]) in chunks of 64 KiB through a channel of a few chunks, so a
//! clone of any size uses bounded memory. Dropping the response body (the client went away)
//! or the `serve` future kills the backend; its own children (`upload-pack`,
//! `pack-objects`) end at their next write to the closed pipe.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

use super::GitError;

/// Largest request body accepted (git's own `GIT_HTTP_MAX_REQUEST_BUFFER` default is 10 MB).
/// Larger requests get 413; raise axum's body limit on the route to at least this.
pub const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;
/// Largest CGI header block read from the backend.
const MAX_CGI_HEADERS: usize = 64 * 1024;
/// Size of the chunks the pack is streamed in.
const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the backend and the client.
const CHANNEL_CHUNKS: usize = 4;
/// What is kept of the backend's stderr for the log.
const MAX_STDERR: usize = 16 * 1024;

/// Where Debian installs the backend; other systems are asked with `git --exec-path`.
const DEBIAN_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// One smart HTTP request, relative to the repository (`/info/refs`, `/git-upload-pack`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitHttpRequest {
    pub method: String,
    /// The part of the URL path after the repository, e.g. `/info/refs`.
    pub path_info: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub content_type: Option<String>,
    /// `gzip` when git compressed the request body.
    pub content_encoding: Option<String>,
    /// The `Git-Protocol` header (`version=2`), passed on as `GIT_PROTOCOL`.
    pub git_protocol: Option<String>,
    /// Who is fetching (e.g. `job-42`), for the backend's `REMOTE_USER`.
    pub remote_user: Option<String>,
    pub body: Vec<u8>,
}

impl GitHttpRequest {
    /// Builds a request from the HTTP method, the path after the repository, the query and
    /// the headers that matter (`Content-Type`, `Content-Encoding`, `Git-Protocol`).
    pub fn new(method: &str, path_info: &str, query: &str, headers: &HeaderMap, body: Vec<u8>) -> GitHttpRequest {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        GitHttpRequest {
            method: method.to_string(),
            path_info: path_info.to_string(),
            query: query.to_string(),
            content_type: header("content-type"),
            content_encoding: header("content-encoding"),
            git_protocol: header("git-protocol"),
            remote_user: None,
            body,
        }
    }
}

/// The backend's answer: its CGI `Status:` (200 when absent), its headers, and the body as a
/// stream.
#[derive(Debug)]
pub struct GitHttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: GitHttpBody,
}

impl GitHttpResponse {
    fn refuse(status: u16, message: &str) -> GitHttpResponse {
        GitHttpResponse {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: GitHttpBody::full(format!("{message}\n")),
        }
    }
}

/// A response body: a [`Stream`] of chunks (convert with `axum::body::Body::from`). An
/// error item means the backend failed midway: the client must see a broken transfer, not
/// a short pack.
#[derive(Debug)]
pub struct GitHttpBody(Inner);

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<io::Result<Bytes>>),
}

impl GitHttpBody {
    fn full(bytes: impl Into<Bytes>) -> GitHttpBody {
        GitHttpBody(Inner::Full(Some(bytes.into())))
    }

    /// Reads the whole body, failing past `limit` bytes (for tests and small answers).
    pub async fn collect(mut self, limit: usize) -> io::Result<Vec<u8>> {
        use futures_util::StreamExt;
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() > limit {
                return Err(io::Error::other(format!("body larger than {limit} bytes")));
            }
        }
        Ok(out)
    }
}

impl Stream for GitHttpBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.0 {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(Ok)),
            Inner::Stream(rx) => rx.poll_recv(cx),
        }
    }
}

impl From<GitHttpBody> for axum::body::Body {
    fn from(body: GitHttpBody) -> axum::body::Body {
        match body.0 {
            Inner::Full(Some(bytes)) => axum::body::Body::from(bytes),
            Inner::Full(None) => axum::body::Body::empty(),
            stream @ Inner::Stream(_) => axum::body::Body::from_stream(GitHttpBody(stream)),
        }
    }
}

/// Serves one smart HTTP request for the bare repository `mirror_dir` with git's
/// `http-backend` (Debian's `/usr/lib/git-core/git-http-backend`, else the one next to `git`).
/// Refusals (push, dumb protocol, unknown paths, oversized bodies) are responses, not errors;
/// errors are failures to run the backend or to read its answer.
pub async fn serve(mirror_dir: &Path, req: GitHttpRequest) -> Result<GitHttpResponse, GitError> {
    serve_with(backend()?, mirror_dir, req).await
}

/// [`serve`] with an explicit `git-http-backend` executable.
pub async fn serve_with(backend: &Path, mirror_dir: &Path, req: GitHttpRequest) -> Result<GitHttpResponse, GitError> {
    let query = match check(&req) {
        Ok(q) => q,
        Err((status, message)) => return Ok(GitHttpResponse::refuse(status, message)),
    };
    if req.body.len() > MAX_REQUEST_BODY {
        return Ok(GitHttpResponse::refuse(413, "the request is too large"));
    }
    let encoding = match req.content_encoding.as_deref().map(str::trim) {
        None | Some("" | "identity") => None,
        Some(e @ ("gzip" | "x-gzip")) => Some(e.to_string()),
        Some(_) => return Ok(GitHttpResponse::refuse(415, "only gzip request bodies are understood")),
    };
    let (Some(root), Some(name)) = (mirror_dir.parent(), mirror_dir.file_name().and_then(|n| n.to_str())) else {
        tracing::warn!(mirror = %mirror_dir.display(), "git request refused: the mirror path has no folder or name");
        return Ok(GitHttpResponse::refuse(404, "no such repository"));
    };
    if !root.is_absolute() {
        // The CGI runs in `root` with `GIT_PROJECT_ROOT=root`: a relative root would be resolved
        // twice and point nowhere. `Config::load` makes `data_dir` absolute; refuse loudly.
        tracing::error!(mirror = %mirror_dir.display(), "git request refused: the mirror path is relative");
        return Ok(GitHttpResponse::refuse(500, "the server's mirror path is misconfigured"));
    }
    if !mirror_dir.is_dir() || name.contains(['?', '#', '%']) {
        tracing::warn!(mirror = %mirror_dir.display(), "git request refused: no mirror at this path (was the project fetched?)");
        return Ok(GitHttpResponse::refuse(404, "no such repository"));
    }

    let mut cmd = Command::new(backend);
    cmd.env_clear()
        .current_dir(root)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{name}{}", req.path_info))
        .env("REQUEST_METHOD", &req.method)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_COUNT", "3")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", mirror_dir)
        .env("GIT_CONFIG_KEY_1", "http.receivepack")
        .env("GIT_CONFIG_VALUE_1", "false")
        // Runners fetch the job's commit by sha when no ref names it (e.g. a force-pushed
        // branch): allow wanting any commit reachable from a ref.
        .env("GIT_CONFIG_KEY_2", "uploadpack.allowReachableSHA1InWant")
        .env("GIT_CONFIG_VALUE_2", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(ct) = req.content_type.as_deref().filter(|v| is_header_safe(v)) {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(enc) = encoding {
        cmd.env("HTTP_CONTENT_ENCODING", enc);
    }
    if let Some(p) = req.git_protocol.as_deref().filter(|p| is_git_protocol(p)) {
        cmd.env("GIT_PROTOCOL", p);
    }
    if let Some(user) = req.remote_user.as_deref().filter(|u| is_header_safe(u)) {
        cmd.env("REMOTE_USER", user);
    }
    let mut child = cmd.spawn().map_err(|e| GitError::Backend(format!("cannot start `{}`: {e}", backend.display())))?;
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
        return Err(GitError::Backend("the backend's pipes are missing".into()));
    };
    let body = req.body;
    tokio::spawn(async move {
        // Fails only when the backend stopped reading; its answer says why.
        let _ = stdin.write_all(&body).await;
    });
    let stderr = tokio::spawn(drain(stderr));

    let (head, rest) = match read_cgi_headers(&mut stdout).await {
        Ok(parts) => parts,
        Err(e) => {
            let _ = child.start_kill();
            let stderr = tokio::time::timeout(Duration::from_secs(2), stderr).await.ok().and_then(Result::ok).unwrap_or_default();
            return Err(GitError::Backend(format!(
                "{e}{}",
                if stderr.is_empty() { String::new() } else { format!(": {}", stderr.trim()) }
            )));
        }
    };
    let (status, headers) = parse_cgi_headers(&head);
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(pump(child, stdout, rest, tx, stderr));
    Ok(GitHttpResponse { status, headers, body: GitHttpBody(Inner::Stream(rx)) })
}

/// Checks the request against what is served; the `QUERY_STRING` to pass, or a refusal.
fn check(req: &GitHttpRequest) -> Result<&'static str, (u16, &'static str)> {
    const PUSH: &str = "pushing is not allowed: piste serves repositories read-only";
    let service = req.query.split('&').find_map(|kv| kv.strip_prefix("service="));
    match (req.method.as_str(), req.path_info.as_str()) {
        ("GET", "/info/refs") => match service {
            Some("git-upload-pack") => Ok("service=git-upload-pack"),
            Some("git-receive-pack") => Err((403, PUSH)),
            _ => Err((403, "only git's smart HTTP protocol is served: use git 1.6.6 or later")),
        },
        ("POST", "/git-upload-pack") => Ok(""),
        (_, "/git-receive-pack") => Err((403, PUSH)),
        (_, "/info/refs" | "/git-upload-pack") => Err((405, "method not allowed")),
        _ => Err((404, "not found")),
    }
}

/// A value that can go into the backend's environment: visible ASCII and spaces, bounded.
fn is_header_safe(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// `version=2`, possibly with more `key=value` pairs separated by `:`.
fn is_git_protocol(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b':' | b'.' | b'_' | b'-'))
}

/// Reads the CGI header block; returns it and whatever body bytes came with it.
async fn read_cgi_headers(stdout: &mut ChildStdout) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((end, sep)) = header_end(&buf) {
            let rest = buf.split_off(end + sep);
            buf.truncate(end);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_CGI_HEADERS {
            return Err(io::Error::other("the backend's headers are too long"));
        }
        let n = stdout.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::other("the backend ended before its headers"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the header block ends (`\r\n\r\n` or `\n\n`) and the separator's length.
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The `Status:` (200 when absent) and the other headers of a CGI answer.
fn parse_cgi_headers(head: &str) -> (u16, Vec<(String, String)>) {
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            status = value.split_whitespace().next().and_then(|s| s.parse().ok()).filter(|s| (100..600).contains(s)).unwrap_or(500);
        } else if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && is_header_safe(value) {
            headers.push((name.to_string(), value.to_string()));
        }
    }
    (status, headers)
}

/// Moves the backend's output to the response body until the end or until the client goes
/// away; then the backend is waited for (or, when the client left, killed by dropping it).
async fn pump(
    mut child: Child,
    mut stdout: ChildStdout,
    first: Vec<u8>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    stderr: tokio::task::JoinHandle<String>,
) {
    if !first.is_empty() && tx.send(Ok(Bytes::from(first))).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let read = tokio::select! {
            read = stdout.read(&mut buf) => read,
            () = tx.closed() => return,
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                if tx.send(Ok(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
    let status = tokio::select! {
        status = child.wait() => status,
        () = tx.closed() => return,
    };
    let stderr = stderr.await.unwrap_or_default();
    match status {
        Ok(s) if s.success() => {
            if !stderr.trim().is_empty() {
                tracing::debug!(stderr = %stderr.trim(), "git http-backend");
            }
        }
        Ok(s) => {
            tracing::warn!(status = %s, stderr = %stderr.trim(), "git http-backend failed");
            let _ = tx.send(Err(io::Error::other(format!("git http-backend failed ({s})")))).await;
        }
        Err(e) => {
            let _ = tx.send(Err(e)).await;
        }
    }
}

/// Reads a pipe to its end, keeping the first [`MAX_STDERR`] bytes.
async fn drain(mut pipe: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_STDERR.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The `git-http-backend` executable: Debian's, else the one in `git --exec-path`.
fn backend() -> Result<&'static Path, GitError> {
    static BACKEND: OnceLock<Option<PathBuf>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let debian = PathBuf::from(DEBIAN_BACKEND);
            if debian.is_file() {
                return Some(debian);
            }
            // Once per process, a few milliseconds.
            let out = std::process::Command::new("git").arg("--exec-path").stderr(Stdio::null()).output().ok()?;
            let dir = String::from_utf8(out.stdout).ok()?;
            Some(PathBuf::from(dir.trim()).join("git-http-backend")).filter(|p| p.is_file())
        })
        .as_deref()
        .ok_or_else(|| {
            GitError::Backend(format!("`git-http-backend` not found (looked at `{DEBIAN_BACKEND}` and `git --exec-path`): install git"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, query: &str) -> GitHttpRequest {
        GitHttpRequest { method: method.into(), path_info: path.into(), query: query.into(), ..GitHttpRequest::default() }
    }

    #[test]
    fn only_upload_pack_is_served() {
        assert_eq!(check(&req("GET", "/info/refs", "service=git-upload-pack")), Ok("service=git-upload-pack"));
        assert_eq!(check(&req("POST", "/git-upload-pack", "")), Ok(""));
        assert_eq!(check(&req("GET", "/info/refs", "service=git-receive-pack")).unwrap_err().0, 403);
        assert_eq!(check(&req("POST", "/git-receive-pack", "")).unwrap_err().0, 403);
        assert_eq!(check(&req("GET", "/info/refs", "")).unwrap_err().0, 403);
        assert_eq!(check(&req("GET", "/HEAD", "")).unwrap_err().0, 404);
        assert_eq!(check(&req("GET", "/objects/info/packs", "")).unwrap_err().0, 404);
        assert_eq!(check(&req("PUT", "/git-upload-pack", "")).unwrap_err().0, 405);
        assert_eq!(check(&req("GET", "/../../etc/passwd", "")).unwrap_err().0, 404);
    }

    #[test]
    fn cgi_headers() {
        let (status, headers) = parse_cgi_headers("Status: 403 Forbidden\r\nContent-Type: text/plain\r\nBad Header: x\r\n");
        assert_eq!(status, 403);
        assert_eq!(headers, vec![("Content-Type".to_string(), "text/plain".to_string())]);
        assert_eq!(parse_cgi_headers("Expires: Fri, 01 Jan 1980 00:00:00 GMT").0, 200);
        assert_eq!(parse_cgi_headers("Status: nonsense").0, 500);
        assert_eq!(header_end(b"A: b\r\n\r\nbody"), Some((4, 4)));
        assert_eq!(header_end(b"A: b\n\nbody\r\n\r\n"), Some((4, 2)));
        assert_eq!(header_end(b"A: b\r\n"), None);
    }

    #[test]
    fn protocol_header_values() {
        assert!(is_git_protocol("version=2"));
        assert!(!is_git_protocol("version=2\nX=1"));
        assert!(!is_git_protocol(""));
    }
}
