//! A job's artifacts for people: the archive's files with their sizes, and one file read out of
//! the archive to view or download. Same access as the archive itself (`auth::job`).
//!
//! Nothing is extracted to disk: a file is found by comparing its cleaned path with the
//! requested one while the archive streams through the decoder (zstd, or gzip for archives made
//! before), so a path cannot reach outside the archive whatever it holds; entries whose paths
//! are absolute or hold `..` are left out. Bounded: at most [`MAX_ENTRIES`] entries listed,
//! previews of [`PREVIEW_BYTES`], downloads streamed through a small channel, and at most
//! [`READS_AT_ONCE`] archive reads (and log searches, `log_search.rs`) at once. The listing of
//! an archive is kept beside it (`artifact-files/<sha256>.json`, content-addressed like the
//! archive) after it was first read. A file's bytes are served with a media type from a short
//! list of safe ones (text as `text/plain`, even HTML and SVG; common images) or as an
//! attachment, with `nosniff` and a sandboxing Content-Security-Policy.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{self, Caller, Need};
use crate::blob::{BlobStore, artifact_key};
use crate::error::{ApiResult, Error};
use crate::store::{JobRow, PipelineRow, Store};
use crate::web::job::{ArtifactFile, BrowseDir, FilePreview, JobRef};

/// Most entries listed from one archive.
pub const MAX_ENTRIES: usize = 50_000;
/// Longest entry path kept (longer ones are left out).
pub const MAX_PATH: usize = 4096;
/// Bytes of a file the view page shows.
pub const PREVIEW_BYTES: usize = 512 * 1024;
/// Archive reads and log searches at once (each is a blocking thread reading a blob).
pub const READS_AT_ONCE: usize = 4;
/// Archives the job page lists itself; bigger ones are listed by the browser.
pub const LIST_ON_JOB_PAGE: u64 = 64 * 1024 * 1024;

pub(crate) static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READS_AT_ONCE);

/// How long a reader of a streamed answer may take nothing before the read stops.
const STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Hands `value` to a streamed answer's channel from a blocking thread: `false` when the client
/// is gone, or took nothing for [`STALL`] (so a client that stops reading gives its read slot
/// back).
pub(crate) fn send_blocking<T>(tx: &tokio::sync::mpsc::Sender<T>, value: T) -> bool {
    tokio::runtime::Handle::current().block_on(async { matches!(tokio::time::timeout(STALL, tx.send(value)).await, Ok(Ok(()))) })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    /// Bytes once extracted (0 for folders and links).
    pub size: u64,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// A symbolic link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// `GET /api/v1/jobs/{id}/artifacts/files`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Listing {
    /// Size of the archive as stored.
    pub archive_bytes: u64,
    pub entries: Vec<Entry>,
    /// The archive holds more than [`MAX_ENTRIES`] entries.
    pub truncated: bool,
}

impl Listing {
    pub fn files(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| matches!(e.kind, Kind::File | Kind::Symlink))
    }
}

/// An entry's path as listed: `./` and `.` segments dropped, no trailing slash; `None` for the
/// archive's root, absolute paths, `..` and overlong paths.
pub fn clean_entry_path(raw: &str) -> Option<String> {
    if raw.starts_with('/') || raw.len() > MAX_PATH || raw.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A requested path: as listed, or refused (`None`): no empty, `.` or `..` segment.
pub fn clean_request_path(raw: &str) -> Option<&str> {
    let ok =
        !raw.is_empty() && raw.len() <= MAX_PATH && !raw.contains('\0') && raw.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    ok.then_some(raw)
}

/// Lists an archive (zstd or gzip tar). Blocking.
pub fn list_archive(archive: impl Read, archive_bytes: u64) -> std::io::Result<Listing> {
    let mut tar = tar::Archive::new(crate::runners::archive_decoder(archive)?);
    let mut entries = Vec::new();
    let mut truncated = false;
    for entry in tar.entries()? {
        let entry = entry?;
        let Some(path) = clean_entry_path(&entry.path()?.to_string_lossy()) else { continue };
        if entries.len() == MAX_ENTRIES {
            truncated = true;
            break;
        }
        let kind = kind_of(entry.header().entry_type());
        let target = match kind {
            Kind::Symlink => entry.link_name()?.map(|t| t.to_string_lossy().chars().take(MAX_PATH).collect()),
            _ => None,
        };
        let size = if kind == Kind::File { entry.size() } else { 0 };
        entries.push(Entry { path, size, kind, target });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Listing { archive_bytes, entries, truncated })
}

fn kind_of(t: tar::EntryType) -> Kind {
    if t.is_file() || t == tar::EntryType::Continuous {
        Kind::File
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

/// What a search for one file found.
#[derive(Debug)]
pub enum Found {
    /// A regular file of this size: its bytes follow.
    File(u64),
    /// No entry has this path (or it is no regular file).
    Missing,
}

/// Finds the regular file `wanted` in an archive and hands its bytes to `send`, at most `limit`
/// of them, in pieces of up to 64 KiB; `found` is called first. Blocking. Stops when `send`
/// says the reader is gone.
pub fn read_file(
    archive: impl Read,
    wanted: &str,
    limit: u64,
    found: impl FnOnce(Found),
    mut send: impl FnMut(Bytes) -> bool,
) -> std::io::Result<()> {
    let mut tar = tar::Archive::new(crate::runners::archive_decoder(archive)?);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if clean_entry_path(&entry.path()?.to_string_lossy()).as_deref() != Some(wanted) {
            continue;
        }
        if kind_of(entry.header().entry_type()) != Kind::File {
            break;
        }
        found(Found::File(entry.size()));
        let mut left = limit;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = entry.read(&mut buf[..want])?;
            if n == 0 || !send(Bytes::copy_from_slice(&buf[..n])) {
                break;
            }
            left -= n as u64;
        }
        return Ok(());
    }
    found(Found::Missing);
    Ok(())
}

/// The media type a file is served with, and whether inline: text as plain text (HTML, SVG and
/// scripts too: they are never run from here), images as images, the rest as a download.
pub fn media_type(path: &str) -> (&'static str, bool) {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "png" => ("image/png", true),
        "jpg" | "jpeg" => ("image/jpeg", true),
        "gif" => ("image/gif", true),
        "webp" => ("image/webp", true),
        "json" | "sarif" => ("application/json", true),
        "txt" | "log" | "md" | "markdown" | "rst" | "csv" | "tsv" | "yaml" | "yml" | "toml" | "ini" | "cfg" | "conf" | "env" | "xml"
        | "html" | "htm" | "svg" | "css" | "js" | "ts" | "sh" | "bash" | "py" | "rb" | "rs" | "go" | "java" | "kt" | "c" | "h" | "cpp"
        | "hpp" | "diff" | "patch" | "sql" | "properties" | "gradle" | "lock" | "sum" | "mod" | "tf" | "hcl" | "dockerfile" | "junit"
        | "out" | "err" | "sha256" | "pem" | "crt" => ("text/plain; charset=utf-8", true),
        _ if matches!(name.as_str(), "dockerfile" | "makefile" | "readme" | "license" | "changelog") => ("text/plain; charset=utf-8", true),
        _ => ("application/octet-stream", false),
    }
}

/// The policy of a served file: nothing runs, nothing loads, as a sandboxed document.
const FILE_CSP: &str = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox; frame-ancestors 'none'";

/// The archive's digest (hex) of a job, or 404.
fn digest_of(job: &JobRow) -> ApiResult<&str> {
    job.artifacts.as_deref().and_then(|d| d.strip_prefix("sha256:")).ok_or(Error::NotFound("artifacts"))
}

fn listing_key(digest: &str) -> String {
    format!("artifact-files/{digest}.json")
}

/// Opens the archive as a blocking reader (call the result's reads from `spawn_blocking`).
pub(crate) async fn archive_reader(state: &AppState, digest: &str) -> ApiResult<(u64, impl Read + Send + 'static)> {
    let blob = state.blobs.get(&artifact_key(digest), None).await?.ok_or(Error::NotFound("artifacts"))?;
    let reader = tokio_util::io::StreamReader::new(blob.stream.map(|r| r.map_err(std::io::Error::other)));
    Ok((blob.size, tokio_util::io::SyncIoBridge::new(reader)))
}

/// The listing of the archive `digest`: kept beside it once read. `max_archive`: read the
/// archive only when it is at most this big (`None` otherwise).
pub async fn listing(state: &AppState, digest: &str, max_archive: u64) -> ApiResult<Option<Listing>> {
    let key = listing_key(digest);
    if let Some(blob) = state.blobs.get(&key, None).await? {
        let mut bytes = Vec::new();
        let mut s = blob.stream;
        while let Some(piece) = s.next().await {
            bytes.extend_from_slice(&piece?);
        }
        match serde_json::from_slice(&bytes) {
            Ok(l) => return Ok(Some(l)),
            Err(e) => tracing::warn!(key = %key, error = %e, "artifacts listing unreadable: listed again"),
        }
    }
    let size = state.blobs.head(&artifact_key(digest)).await?.ok_or(Error::NotFound("artifacts"))?;
    if size > max_archive {
        return Ok(None);
    }
    let _permit = READS.acquire().await.map_err(|e| Error::Internal(e.into()))?;
    let (size, reader) = archive_reader(state, digest).await?;
    let listed = tokio::task::spawn_blocking(move || list_archive(reader, size)).await.map_err(|e| Error::Internal(e.into()))?;
    let listing = listed.map_err(|e| Error::Conflict(format!("the artifacts archive cannot be read: {e}")))?;
    match serde_json::to_vec(&listing) {
        Ok(json) => {
            if let Err(e) = state.blobs.put(&key, Bytes::from(json)).await {
                tracing::warn!(key = %key, error = %e, "artifacts listing not kept");
            }
        }
        Err(e) => tracing::warn!(error = %e, "artifacts listing not encoded"),
    }
    Ok(Some(listing))
}

/// `GET /api/v1/jobs/{id}/artifacts/files`: the archive's entries with their sizes.
pub async fn files(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<i64>) -> ApiResult<Response> {
    let (job, _) = auth::job(&state, &caller, id, false).await?;
    let listing = listing(&state, digest_of(&job)?, u64::MAX).await?.ok_or(Error::NotFound("artifacts"))?;
    Ok(axum::Json(listing).into_response())
}

#[derive(Deserialize)]
pub struct FileQuery {
    path: String,
    /// Present: as an attachment.
    download: Option<String>,
}

/// `GET /api/v1/jobs/{id}/artifacts/file?path=P[&download=1]`: one file's bytes, streamed.
pub async fn file(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<FileQuery>,
) -> ApiResult<Response> {
    let (job, _) = auth::job(&state, &caller, id, false).await?;
    let digest = digest_of(&job)?.to_string();
    let path =
        clean_request_path(&q.path).ok_or_else(|| Error::BadRequest(format!("`{}` is not a path in an archive", q.path)))?.to_string();
    let permit = READS.acquire().await.map_err(|e| Error::Internal(e.into()))?;
    let (_, reader) = archive_reader(&state, &digest).await?;
    let (found_tx, found_rx) = tokio::sync::oneshot::channel();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let wanted = path.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let error_tx = tx.clone();
        let result = read_file(reader, &wanted, u64::MAX, |f| drop(found_tx.send(f)), |b| send_blocking(&tx, Ok(b)));
        if let Err(e) = result {
            send_blocking(&error_tx, Err(e));
        }
    });
    let size = match found_rx.await {
        Ok(Found::File(size)) => size,
        Ok(Found::Missing) => return Err(Error::NotFound("file in the artifacts")),
        Err(_) => return Err(Error::Conflict("the artifacts archive cannot be read".into())),
    };
    let (media, inline) = media_type(&path);
    let inline = inline && q.download.is_none();
    let name: String = path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .collect();
    let disposition = format!("{}; filename=\"{name}\"", if inline { "inline" } else { "attachment" });
    let body = Body::from_stream(tokio_stream_of(rx));
    let mut response = (
        [
            (header::CONTENT_TYPE, media.to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "private, max-age=300".into()),
        ],
        body,
    )
        .into_response();
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(FILE_CSP));
    Ok(response)
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The job and its pipeline, for pages: the page refusal when the caller may not read them.
async fn page_job(state: &AppState, caller: &Caller, id: i64, path: &str) -> Result<(JobRow, PipelineRow), Response> {
    let found = async {
        let j = state.store.job(id).await?.ok_or(Error::NotFound("job"))?;
        let p = state.store.pipeline(j.pipeline_id).await?.ok_or(Error::NotFound("pipeline"))?;
        ApiResult::Ok((j, p))
    };
    let (j, p) = found.await.map_err(IntoResponse::into_response)?;
    if let Err(d) = auth::check(&state.config, caller, &p.project, Need::Read) {
        return Err(auth::page_refusal(&state.config, d, path));
    }
    Ok((j, p))
}

fn job_ref(j: &JobRow, p: &PipelineRow) -> JobRef {
    JobRef { id: j.id as u64, name: j.name.clone(), pipeline_id: p.id as u64, project: p.project.clone() }
}

#[derive(Deserialize)]
pub struct BrowseQuery {
    dir: Option<String>,
}

/// `GET /jobs/{id}/artifacts?dir=a/b`: one folder of the archive.
pub async fn browse(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<BrowseQuery>,
) -> Result<Response, Response> {
    let (j, p) = page_job(&state, &caller, id, &format!("/jobs/{id}/artifacts")).await?;
    let dir = match q.dir.as_deref().map(|d| d.trim_matches('/')).filter(|d| !d.is_empty()) {
        None => String::new(),
        Some(d) => clean_request_path(d).ok_or_else(|| Error::BadRequest(format!("`{d}` is not a folder")).into_response())?.to_string(),
    };
    let digest = digest_of(&j).map_err(IntoResponse::into_response)?;
    let listing = listing(&state, digest, u64::MAX)
        .await
        .map_err(IntoResponse::into_response)?
        .ok_or(Error::NotFound("artifacts").into_response())?;
    Ok(Html(crate::web::pages::artifacts_page(&job_ref(&j, &p), &folder(&listing, &dir))).into_response())
}

/// What the browser shows of `dir`: subfolders with the files under them, and files.
pub fn folder(listing: &Listing, dir: &str) -> BrowseDir {
    let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    let mut dirs: Vec<(String, usize, u64)> = Vec::new();
    let mut files = Vec::new();
    for e in &listing.entries {
        let Some(rest) = e.path.strip_prefix(&prefix) else { continue };
        let is_file = matches!(e.kind, Kind::File | Kind::Symlink);
        match rest.split_once('/') {
            Some((sub, _)) => {
                let i = match dirs.iter().position(|(n, _, _)| n == sub) {
                    Some(i) => i,
                    None => {
                        dirs.push((sub.to_string(), 0, 0));
                        dirs.len() - 1
                    }
                };
                if is_file {
                    dirs[i].1 += 1;
                    dirs[i].2 += e.size;
                }
            }
            None if e.kind == Kind::Dir && !dirs.iter().any(|(n, _, _)| n == rest) => dirs.push((rest.to_string(), 0, 0)),
            None if is_file => files.push(ArtifactFile { path: e.path.clone(), size: e.size, link: e.target.clone() }),
            None => {}
        }
    }
    dirs.sort();
    BrowseDir {
        dir: dir.to_string(),
        dirs,
        files,
        archive_bytes: listing.archive_bytes,
        total_files: listing.files().count(),
        total_bytes: listing.files().map(|e| e.size).sum(),
        truncated: listing.truncated,
    }
}

/// `GET /jobs/{id}/artifacts/{*path}`: one file, its first [`PREVIEW_BYTES`] shown as text
/// (when they are UTF-8) or as an image. A folder's path goes to the browser.
pub async fn view(State(state): State<Arc<AppState>>, caller: Caller, Path((id, path)): Path<(i64, String)>) -> Result<Response, Response> {
    let (j, p) = page_job(&state, &caller, id, &format!("/jobs/{id}/artifacts/{}", crate::web::job::encode_path(&path))).await?;
    let wanted =
        clean_request_path(&path).ok_or_else(|| Error::BadRequest(format!("`{path}` is not a path in an archive")).into_response())?;
    let digest = digest_of(&j).map_err(IntoResponse::into_response)?.to_string();
    let permit = READS.acquire().await.map_err(|e| Error::Internal(e.into()).into_response())?;
    let (_, reader) = archive_reader(&state, &digest).await.map_err(IntoResponse::into_response)?;
    let owned = wanted.to_string();
    let read = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut found = None;
        let mut head = Vec::new();
        read_file(
            reader,
            &owned,
            PREVIEW_BYTES as u64,
            |f| found = Some(f),
            |b| {
                head.extend_from_slice(&b);
                true
            },
        )
        .map(|()| (found, head))
    })
    .await
    .map_err(|e| Error::Internal(e.into()).into_response())?;
    let (found, head) = read.map_err(|e| Error::Conflict(format!("the artifacts archive cannot be read: {e}")).into_response())?;
    let size = match found {
        Some(Found::File(size)) => size,
        _ => {
            // A folder's path: its listing.
            let listing = listing(&state, &digest, u64::MAX).await.map_err(IntoResponse::into_response)?;
            if listing.is_some_and(|l| l.entries.iter().any(|e| e.path.starts_with(&format!("{wanted}/")))) {
                return Ok(Redirect::to(&format!("/jobs/{id}/artifacts?dir={}", crate::web::job::encode_component(wanted))).into_response());
            }
            return Err(Error::NotFound("file in the artifacts").into_response());
        }
    };
    let (media, _) = media_type(wanted);
    let preview = if media.starts_with("image/") { FilePreview::Image } else { text_preview(&head, size) };
    Ok(Html(crate::web::pages::artifact_file_page(&job_ref(&j, &p), wanted, size, &preview)).into_response())
}

/// Text when the bytes are UTF-8 without NUL (a character cut at the end of the preview is
/// dropped), else binary.
fn text_preview(head: &[u8], size: u64) -> FilePreview {
    let valid = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
        Err(_) => return FilePreview::Binary,
    };
    if valid.contains('\0') {
        return FilePreview::Binary;
    }
    FilePreview::Text { text: valid.to_string(), truncated: (valid.len() as u64) < size }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_traversal_refused() {
        assert_eq!(clean_entry_path("./out/a.txt").as_deref(), Some("out/a.txt"));
        assert_eq!(clean_entry_path("out/./b/").as_deref(), Some("out/b"));
        assert_eq!(clean_entry_path("./"), None);
        assert_eq!(clean_entry_path("../etc/passwd"), None);
        assert_eq!(clean_entry_path("a/../../b"), None);
        assert_eq!(clean_entry_path("/etc/passwd"), None);
        assert_eq!(clean_request_path("out/a.txt"), Some("out/a.txt"));
        for bad in ["", "../x", "a/../b", "a//b", "./a", "/a", "a/", "a\0b"] {
            assert_eq!(clean_request_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn media_types_never_serve_active_content() {
        assert_eq!(media_type("report/index.html"), ("text/plain; charset=utf-8", true));
        assert_eq!(media_type("logo.SVG"), ("text/plain; charset=utf-8", true));
        assert_eq!(media_type("shot.png"), ("image/png", true));
        assert_eq!(media_type("app.bin"), ("application/octet-stream", false));
        assert_eq!(media_type("bin/Dockerfile"), ("text/plain; charset=utf-8", true));
    }

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, *data).unwrap();
        }
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        tar.append_link(&mut link, "out/link", "../../etc/passwd").unwrap();
        zstd::encode_all(&tar.into_inner().unwrap()[..], 1).unwrap()
    }

    #[test]
    fn an_archive_lists_and_gives_one_file() {
        let zst = archive(&[("./out/b.txt", b"bee\n"), ("out/a.txt", b"hello"), ("top.bin", &[0, 1, 2])]);
        let listing = list_archive(&zst[..], zst.len() as u64).unwrap();
        let listed: Vec<(&str, u64, Kind)> = listing.entries.iter().map(|e| (e.path.as_str(), e.size, e.kind)).collect();
        assert_eq!(
            listed,
            [("out/a.txt", 5, Kind::File), ("out/b.txt", 4, Kind::File), ("out/link", 0, Kind::Symlink), ("top.bin", 3, Kind::File)]
        );
        assert_eq!(listing.entries[2].target.as_deref(), Some("../../etc/passwd"), "a link is listed, never followed");
        let mut got = Vec::new();
        let mut found = None;
        read_file(
            &zst[..],
            "out/b.txt",
            u64::MAX,
            |f| found = Some(f),
            |b| {
                got.extend_from_slice(&b);
                true
            },
        )
        .unwrap();
        assert!(matches!(found, Some(Found::File(4))) && got == b"bee\n");
        for missing in ["out/link", "out", "nothing"] {
            let mut found = None;
            read_file(&zst[..], missing, u64::MAX, |f| found = Some(f), |_| true).unwrap();
            assert!(matches!(found, Some(Found::Missing)), "{missing}: {found:?}");
        }
        let mut got = Vec::new();
        read_file(
            &zst[..],
            "out/a.txt",
            2,
            |_| {},
            |b| {
                got.extend_from_slice(&b);
                true
            },
        )
        .unwrap();
        assert_eq!(got, b"he", "bounded");
        let d = folder(&listing, "");
        assert_eq!(d.dirs, [("out".to_string(), 3, 9)]);
        assert_eq!(d.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["top.bin"]);
        assert_eq!((d.total_files, d.total_bytes), (4, 12));
        assert_eq!(folder(&listing, "out").files.len(), 3);
    }

    #[test]
    fn previews_tell_text_from_binary() {
        assert!(matches!(text_preview(b"hello", 5), FilePreview::Text { truncated: false, .. }));
        assert!(matches!(text_preview("h\u{e9}".as_bytes(), 100), FilePreview::Text { truncated: true, .. }));
        assert!(matches!(text_preview(&"h\u{e9}".as_bytes()[..2], 3), FilePreview::Text { .. }), "a character cut at the end");
        assert!(matches!(text_preview(b"a\0b", 3), FilePreview::Binary));
        assert!(matches!(text_preview(&[0xff, 0xfe, b'a'], 3), FilePreview::Binary));
    }
}
