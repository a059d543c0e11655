//! Git smart HTTP for the fake server: git's own `git http-backend` run as a CGI program.

use std::path::Path;
use std::process::Stdio;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// Runs the backend for repository `<root>/<project>` and relays its answer.
pub async fn serve(root: &Path, project: &str, rest: &str, method: &Method, query: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut cmd = tokio::process::Command::new(BACKEND);
    cmd.env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{project}/{rest}"))
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "piste-ci-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("PATH", "/usr/bin:/bin")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (var, name) in [("GIT_PROTOCOL", "git-protocol"), ("HTTP_CONTENT_ENCODING", "content-encoding")] {
        let value = header(name);
        if !value.is_empty() {
            cmd.env(var, value);
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot start {BACKEND}: {e}")),
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let write = async move {
        let _ = stdin.write_all(&body).await;
        drop(stdin);
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (_, _, _) = tokio::join!(write, stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    let _ = child.wait().await;
    if !err.is_empty() {
        eprintln!("git-http-backend: {}", String::from_utf8_lossy(&err));
    }
    cgi_response(&out)
}

/// Turns a CGI answer (headers, a blank line, the body) into a response.
fn cgi_response(out: &[u8]) -> Response {
    let (head, body) = match find(out, b"\r\n\r\n").map(|i| (i, 4)).or_else(|| find(out, b"\n\n").map(|i| (i, 2))) {
        Some((i, sep)) => (&out[..i], &out[i + sep..]),
        None => return plain(StatusCode::BAD_GATEWAY, "git-http-backend gave no headers".into()),
    };
    let mut builder = Response::builder().status(StatusCode::OK);
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder.body(Body::from(body.to_vec())).unwrap_or_else(|e| plain(StatusCode::BAD_GATEWAY, e.to_string()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn plain(status: StatusCode, text: String) -> Response {
    Response::builder().status(status).body(Body::from(text)).expect("a plain response")
}

/// `Basic <base64(user:password)>`.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn basic_auth_is_base64() {
    assert_eq!(basic_auth("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    assert_eq!(basic_auth("a", "b"), "Basic YTpi");
}
