//! `cache:` kept between jobs and runs, on local disk (`<repo>/.piste/cache` for `piste run`).
//!
//! Layout under the root:
//!
//! ```text
//! root/keys/<encoded key>.tar.zst  one archive per cache key, replaced atomically
//!                                  (`.tar.gz` from before zstd: still restored, replaced at
//!                                  the next save)
//! root/state/<encoded key>         what that archive was made from (see below)
//! root/tmp/                        archives being written (never read)
//! ```
//!
//! The key becomes a file name through percent-encoding of every byte outside
//! `[A-Za-z0-9._-]` (so two keys never share a file and no key can name a path), and a key
//! whose encoding exceeds 200 bytes is stored as `~sha256-<hex of the key>`. Keys are also
//! validated as GitLab does ([`validate_key`]): a key is untrusted text, often built from
//! variables such as `$CI_COMMIT_REF_NAME`.
//!
//! Archives are the deterministic tar.zst of [`crate::artifacts`]: [`CacheStore::save`] collects
//! `cache:paths` / `cache:untracked` with [`artifacts::collect`], streams the archive into
//! `tmp/` and renames it over the previous one, so a concurrent [`CacheStore::restore`] reads
//! either the old archive or the new one, never half of one. Restoring extracts with
//! [`artifacts::extract`]'s checks and [`Limits`]. There is no fsync before the rename: a
//! cache can always be rebuilt, and an archive a crash cut short fails its zstd checksum or
//! tar structure at restore, which is reported as a warning like every cache problem.
//!
//! An unchanged cache is not archived again (GitLab: "Archive is up to date!"): after a save,
//! and after a restore of the job's own key ([`CacheStore::remember`]), `state/` records a
//! fingerprint of the files (path, kind, size, mode, mtime to the nanosecond) and the archive
//! file it matches (size, mtime). A save whose files give the same fingerprint, while the
//! archive is still that file, writes nothing.
//!
//! # What the caller decides
//!
//! - **Policy** (`pull`, `push`, `pull-push`): call [`CacheStore::restore`] before the job
//!   when the policy pulls, [`CacheStore::save`] after it when it pushes.
//! - **`when`** (`on_success`, default; `on_failure`; `always`): whether to call `save` given
//!   the job's result.
//! - **Keys**: expand variables in `key`, `prefix`, `fallback_keys` and `CACHE_FALLBACK_KEY`
//!   first; compute the job's key once with [`CacheStore::key_for`] **before** the script runs
//!   (GitLab computes it when the pipeline is created) and use it for both restore and save;
//!   pass `restore` the key, then `fallback_keys` in order, then `CACHE_FALLBACK_KEY`.
//!   Saving always uses the job's own key, never a fallback.
//! - **Failures**: GitLab reports cache problems as warnings and runs the job anyway; callers
//!   should print [`CacheError`]s as warnings too.
//!
//! # `key:files`
//!
//! GitLab (18.x) hashes the blob ids of the listed files at the pipeline's commit, expanding
//! `*` (not across `/`) and `**` (across `/`) against the repository's files; the key is
//! `<prefix>-<sha1>` or `default` when no file exists. piste hashes the **content** of the
//! files in the workspace with sha256 (a 64-hex digest, so keys differ from GitLab's, which
//! only matters if caches were shared, and they are not): per-file digests are sorted and
//! deduplicated before hashing, so renaming a file keeps the key, as with GitLab. Wildcards
//! are matched against the files present in the workspace (not only tracked ones): compute
//! the key right after checkout, before the job adds files. A symlink is hashed by its target
//! text (git hashes it so too), never followed; directories and missing files are skipped.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::artifacts::{self, ArtifactError, ArtifactSpec, Limits};
use crate::cas::Digest;

/// `cache:key`, with variables already expanded by the caller.
pub type CacheKeySpec = pipeline_spec::model::CacheKey;

/// Largest number of workspace entries visited to expand `key:files` wildcards.
pub const MAX_WALK_ENTRIES: usize = 200_000;
/// Longest accepted cache key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most files hashed for one `key:files` (after wildcard expansion).
pub const MAX_KEY_FILES: usize = 10_000;

/// Errors from the cache. Callers report them as warnings (see the module documentation).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The key (or a fallback key) is not acceptable.
    #[error("invalid cache key `{shown}`: {reason}", shown = shown_key(key))]
    InvalidKey { key: String, reason: &'static str },
    /// A `key:files` entry is not a relative path inside the workspace.
    #[error("`cache:key:files` entry `{entry}`: {reason}")]
    InvalidFile { entry: String, reason: &'static str },
    /// Wildcard expansion met more entries than [`MAX_WALK_ENTRIES`] or matched more than
    /// [`MAX_KEY_FILES`] files.
    #[error("`cache:key:files` entry `{entry}` visits too many files (limit {limit})")]
    TooManyFiles { entry: String, limit: usize },
    /// A filesystem operation failed.
    #[error("cannot {op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Collecting, archiving or extracting failed.
    #[error("cache archive for key `{key}`")]
    Archive {
        key: String,
        #[source]
        source: ArtifactError,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CacheError + use<> {
    let path = path.to_owned();
    move |source| CacheError::Io { op, path, source }
}

fn shown_key(key: &str) -> String {
    key.chars().take(80).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The result of [`CacheStore::save`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveSummary {
    /// The key saved under.
    pub key: String,
    /// Whether an archive was written. `false` when nothing matched `paths`/`untracked`: the
    /// previous archive for the key (if any) is left as it was.
    pub saved: bool,
    /// Entries archived.
    pub entries: u64,
    /// Size of the archive in bytes.
    pub bytes: u64,
    /// sha256 of the archive, when saved.
    pub sha256: Option<Digest>,
    /// GitLab-style warnings for the job log ("`x`: no matching files", ...).
    pub warnings: Vec<String>,
    /// Nothing was archived because the files are exactly those of the stored archive (GitLab:
    /// "Archive is up to date!"); `saved` is `false` then.
    pub up_to_date: bool,
}

/// Caches on local disk under one root directory. Cheap to clone; safe to use from several
/// threads and processes at once.
#[derive(Debug, Clone)]
pub struct CacheStore {
    root: PathBuf,
    limits: Limits,
}

impl CacheStore {
    /// Opens (creating if needed) a cache store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<CacheStore, CacheError> {
        let root = root.into();
        for dir in [root.join("keys"), root.join("state"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(|source| CacheError::Io { op: "create cache directory", path: dir, source })?;
        }
        Ok(CacheStore { root, limits: Limits::default() })
    }

    /// Replaces the extraction bounds used by [`CacheStore::restore`].
    pub fn with_limits(mut self, limits: Limits) -> CacheStore {
        self.limits = limits;
        self
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the archive for `key` lives (whether or not it exists).
    pub fn archive_path(&self, key: &str) -> Result<PathBuf, CacheError> {
        validate_key(key)?;
        Ok(self.root.join("keys").join(format!("{}.tar.zst", file_name(key))))
    }

    /// Where a cache saved before the switch to zstd lives.
    fn legacy_path(&self, key: &str) -> Result<PathBuf, CacheError> {
        validate_key(key)?;
        Ok(self.root.join("keys").join(format!("{}.tar.gz", file_name(key))))
    }

    /// The job's cache key: a literal key as given, or for `key:files` the hash of the
    /// files' content in `workspace` (see the module documentation), with `prefix-` before
    /// it. The result is validated with [`validate_key`].
    pub fn key_for(&self, workspace: &Path, key: &CacheKeySpec) -> Result<String, CacheError> {
        let key = match key {
            CacheKeySpec::Literal(k) => k.clone(),
            CacheKeySpec::Files { files, prefix } => {
                let digest = files_digest(workspace, files)?.unwrap_or_else(|| "default".to_owned());
                match prefix.as_deref() {
                    Some(p) if !p.is_empty() => format!("{p}-{digest}"),
                    _ => digest,
                }
            }
        };
        validate_key(&key)?;
        Ok(key)
    }

    /// Extracts the first archive found among `keys` into `workspace` and returns its key;
    /// `None` when none exists. Empty and repeated keys are skipped; an invalid key is an
    /// error before anything is extracted.
    pub fn restore(&self, workspace: &Path, keys: &[String]) -> Result<Option<String>, CacheError> {
        let mut seen: Vec<&str> = Vec::new();
        for key in keys.iter().map(String::as_str).filter(|k| !k.is_empty()) {
            validate_key(key)?;
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
        for key in seen {
            let mut found = None;
            for path in [self.archive_path(key)?, self.legacy_path(key)?] {
                match File::open(&path) {
                    Ok(f) => {
                        found = Some(f);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(CacheError::Io { op: "open cache archive", path, source }),
                }
            }
            let Some(file) = found else { continue };
            artifacts::extract(file, workspace, &self.limits).map_err(|source| CacheError::Archive { key: key.to_owned(), source })?;
            return Ok(Some(key.to_owned()));
        }
        Ok(None)
    }

    /// Archives `paths` (artifact-style globs) and `untracked` (relative paths the caller
    /// found untracked) from `workspace` under `key`, replacing the previous archive
    /// atomically. Nothing matched: nothing written (see [`SaveSummary::saved`]).
    pub fn save(&self, workspace: &Path, key: &str, paths: &[String], untracked: &[PathBuf]) -> Result<SaveSummary, CacheError> {
        let dest = self.archive_path(key)?;
        let archive_err = |source| CacheError::Archive { key: key.to_owned(), source };
        let spec = ArtifactSpec { paths: paths.to_vec(), exclude: Vec::new(), untracked: untracked.to_vec() };
        let collected = artifacts::collect(workspace, &spec).map_err(archive_err)?;
        let mut warnings = collected.warnings;
        if collected.files.is_empty() {
            return Ok(SaveSummary { key: key.to_owned(), saved: false, entries: 0, bytes: 0, sha256: None, warnings, up_to_date: false });
        }
        let state = self.state_path(key)?;
        let print = fingerprint(workspace, &collected.files);
        let current = print.as_ref().and_then(|p| State::of(p, &dest));
        if current.is_some() && read_state(&state) == current {
            return Ok(SaveSummary { key: key.to_owned(), saved: false, entries: 0, bytes: 0, sha256: None, warnings, up_to_date: true });
        }
        let tmp = TempPath::new(&self.root.join("tmp"));
        let out = File::options().write(true).create_new(true).open(&tmp.0).map_err(io_err("create", &tmp.0))?;
        let mut writer = io::BufWriter::with_capacity(256 * 1024, out);
        let summary = artifacts::write_archive(workspace, &collected.files, &mut writer).map_err(archive_err)?;
        writer.into_inner().map_err(|e| io_err("write", &tmp.0)(e.into_error()))?;
        let _ = fs::remove_file(&state);
        fs::rename(&tmp.0, &dest).map_err(io_err("rename into", &dest))?;
        let _ = fs::remove_file(self.legacy_path(key)?);
        if let Some(now) = print.and_then(|p| State::of(&p, &dest)) {
            write_state(&state, &now);
        }
        warnings.extend(summary.warnings);
        Ok(SaveSummary {
            key: key.to_owned(),
            saved: true,
            entries: summary.entries,
            bytes: summary.bytes,
            sha256: Some(summary.sha256),
            warnings,
            up_to_date: false,
        })
    }

    /// Remembers the files `paths`/`untracked` select in `workspace` right after `key` was
    /// restored into it, so that [`CacheStore::save`] skips the archive when the job changed
    /// none of them. Best effort: without it, the next save archives.
    pub fn remember(&self, workspace: &Path, key: &str, paths: &[String], untracked: &[PathBuf]) -> Result<(), CacheError> {
        let dest = self.archive_path(key)?;
        let spec = ArtifactSpec { paths: paths.to_vec(), exclude: Vec::new(), untracked: untracked.to_vec() };
        let collected = artifacts::collect(workspace, &spec).map_err(|source| CacheError::Archive { key: key.to_owned(), source })?;
        if let Some(now) = fingerprint(workspace, &collected.files).and_then(|p| State::of(&p, &dest)) {
            write_state(&self.state_path(key)?, &now);
        }
        Ok(())
    }

    fn state_path(&self, key: &str) -> Result<PathBuf, CacheError> {
        validate_key(key)?;
        Ok(self.root.join("state").join(file_name(key)))
    }
}

/// What a key's archive was made from: the files' fingerprint, and the archive file it is
/// about (size and mtime), so that an archive replaced by another process invalidates it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    files: String,
    archive_len: u64,
    archive_mtime_ns: i128,
}

impl State {
    fn of(files: &str, archive: &Path) -> Option<State> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(archive).ok()?;
        Some(State {
            files: files.to_owned(),
            archive_len: m.len(),
            archive_mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

fn read_state(path: &Path) -> Option<State> {
    let text = fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    Some(State { files: it.next()?.to_owned(), archive_len: it.next()?.parse().ok()?, archive_mtime_ns: it.next()?.parse().ok()? })
}

fn write_state(path: &Path, state: &State) {
    let _ = fs::write(path, format!("{} {} {}\n", state.files, state.archive_len, state.archive_mtime_ns));
}

/// sha256 over each file's path, kind, size, mode and mtime (to the nanosecond), in the
/// collected order: any file added, removed, rewritten or touched changes it. `None` when a
/// file cannot be read (the caller then archives).
fn fingerprint(workspace: &Path, files: &[PathBuf]) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    for f in files {
        let m = fs::symlink_metadata(workspace.join(f)).ok()?;
        h.update(f.as_os_str().as_bytes());
        h.update([0]);
        h.update(m.mode().to_le_bytes());
        h.update(m.size().to_le_bytes());
        h.update(m.mtime().to_le_bytes());
        h.update(m.mtime_nsec().to_le_bytes());
        if m.file_type().is_symlink() {
            h.update(fs::read_link(workspace.join(f)).ok()?.as_os_str().as_bytes());
        }
        h.update([0xff]);
    }
    Some(hex::encode(h.finalize()))
}

/// Checks a cache key as GitLab does, plus what a file name needs: not empty, at most
/// [`MAX_KEY_BYTES`], no `/` or `\` (nor their URL encodings `%2F`, `%5C`), not `.` or `..`
/// (nor `%2E`, `%2E%2E`), no control characters.
pub fn validate_key(key: &str) -> Result<(), CacheError> {
    let fail = |reason| Err(CacheError::InvalidKey { key: key.to_owned(), reason });
    if key.is_empty() {
        return fail("the key is empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return fail("longer than 1024 bytes");
    }
    if key.contains(['/', '\\']) {
        return fail("it cannot contain `/` or `\\`");
    }
    let upper = key.to_ascii_uppercase();
    if upper.contains("%2F") || upper.contains("%5C") {
        return fail("it cannot contain `%2F` or `%5C`");
    }
    if matches!(upper.replace("%2E", ".").as_str(), "." | "..") {
        return fail("it cannot be `.` or `..`");
    }
    if key.chars().any(char::is_control) {
        return fail("it cannot contain control characters");
    }
    Ok(())
}

/// The file name (without extension) for a valid key: injective, never `.`/`..`, no `/`.
fn file_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // `~` never appears in an encoded name, so hashed names cannot collide with them.
    if out.len() > 200 { format!("~sha256-{}", hex(&Sha256::digest(key.as_bytes()))) } else { out }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temp file name in the store's `tmp/`, removed on drop unless renamed away.
struct TempPath(PathBuf);

impl TempPath {
    fn new(dir: &Path) -> TempPath {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        TempPath(dir.join(format!("save-{}-{nanos:x}-{n}.tar.zst", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// sha256 over the sorted, deduplicated per-file digests; `None` when no file was found.
fn files_digest(workspace: &Path, entries: &[String]) -> Result<Option<String>, CacheError> {
    let mut digests: Vec<[u8; 32]> = Vec::new();
    for entry in entries {
        let pattern = entry.trim_start_matches('/');
        if pattern.is_empty() {
            continue;
        }
        let paths = if pattern.contains('*') { expand(workspace, entry, pattern)? } else { vec![literal(entry, pattern)?] };
        for rel in paths {
            if let Some(d) = hash_entry(workspace, &rel)? {
                digests.push(d);
            }
        }
    }
    if digests.is_empty() {
        return Ok(None);
    }
    digests.sort_unstable();
    digests.dedup();
    let joined: Vec<String> = digests.iter().map(|d| hex(d)).collect();
    Ok(Some(hex(&Sha256::digest(joined.join("-").as_bytes()))))
}

/// A literal `key:files` path, checked to stay inside the workspace.
fn literal(entry: &str, pattern: &str) -> Result<PathBuf, CacheError> {
    let mut out = PathBuf::new();
    for c in Path::new(pattern).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(CacheError::InvalidFile { entry: entry.to_owned(), reason: "`..` is not allowed" }),
        }
    }
    Ok(out)
}

/// The digest of one file, read without following symlinks anywhere on its path; `None`
/// for missing paths, directories and paths that go through a symlink or a non-directory.
fn hash_entry(workspace: &Path, rel: &Path) -> Result<Option<[u8; 32]>, CacheError> {
    let mut at = workspace.to_path_buf();
    let count = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        at.push(c);
        let meta = match fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(None),
            Err(source) => return Err(CacheError::Io { op: "inspect", path: at, source }),
        };
        let last = i + 1 == count;
        if !last && !meta.is_dir() {
            return Ok(None);
        }
        if last {
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = fs::read_link(&at).map_err(|source| CacheError::Io { op: "read symlink", path: at.clone(), source })?;
                return Ok(Some(Sha256::digest(target.as_os_str().as_bytes()).into()));
            }
            if !ft.is_file() {
                return Ok(None);
            }
            return hash_file(&at).map(Some);
        }
    }
    Ok(None)
}

fn hash_file(path: &Path) -> Result<[u8; 32], CacheError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| CacheError::Io { op: "read", path: path.to_owned(), source };
    // O_NOFOLLOW: the path was just checked, but never follow a symlink swapped in since.
    let mut file = File::options().read(true).custom_flags(o_nofollow()).open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(hasher.finalize().into())
}

fn o_nofollow() -> i32 {
    i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0)
}

/// Files in the workspace matching a GitLab wildcard path, relative, sorted. Directories
/// are walked without following symlinks; `.git` directories are skipped.
fn expand(workspace: &Path, entry: &str, pattern: &str) -> Result<Vec<PathBuf>, CacheError> {
    let pattern = Wildcard::new(pattern);
    let mut found = Vec::new();
    let mut visited = 0usize;
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let full = workspace.join(&dir);
        let entries = match fs::read_dir(&full) {
            Ok(e) => e,
            Err(e) if dir.as_os_str().is_empty() => return Err(CacheError::Io { op: "list", path: full, source: e }),
            // A directory that vanished or cannot be read holds no key file.
            Err(_) => continue,
        };
        for item in entries {
            let Ok(item) = item else { continue };
            visited += 1;
            if visited > MAX_WALK_ENTRIES {
                return Err(CacheError::TooManyFiles { entry: entry.to_owned(), limit: MAX_WALK_ENTRIES });
            }
            let Ok(ft) = item.file_type() else { continue };
            let rel = dir.join(item.file_name());
            if ft.is_dir() {
                if item.file_name() != ".git" {
                    stack.push(rel);
                }
            } else if pattern.matches(rel.as_os_str().as_bytes()) {
                found.push(rel);
                if found.len() > MAX_KEY_FILES {
                    return Err(CacheError::TooManyFiles { entry: entry.to_owned(), limit: MAX_KEY_FILES });
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// GitLab's wildcard paths: `**` matches anything (including `/`), `*` anything but `/`,
/// every other character itself. The whole path must match.
#[derive(Debug)]
struct Wildcard {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    Star,
    DoubleStar,
}

impl Wildcard {
    fn new(pattern: &str) -> Wildcard {
        let mut tokens = Vec::new();
        let bytes = pattern.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'*' {
                let double = bytes.get(i + 1) == Some(&b'*');
                let token = if double { Token::DoubleStar } else { Token::Star };
                // Consecutive stars collapse: `***` is `**`.
                match tokens.last_mut() {
                    Some(last @ Token::Star) if double => *last = Token::DoubleStar,
                    Some(Token::Star | Token::DoubleStar) if !double => {}
                    Some(Token::DoubleStar) => {}
                    _ => tokens.push(token),
                }
                i += if double { 2 } else { 1 };
            } else {
                tokens.push(Token::Byte(bytes[i]));
                i += 1;
            }
        }
        Wildcard { tokens }
    }

    /// Dynamic programming over (token, byte): O(tokens × path) time, O(path) memory.
    fn matches(&self, path: &[u8]) -> bool {
        // row[j]: the tokens so far match path[..j].
        let mut row = vec![false; path.len() + 1];
        row[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; path.len() + 1];
            match *token {
                Token::Byte(b) => {
                    for j in 0..path.len() {
                        next[j + 1] = row[j] && path[j] == b;
                    }
                }
                Token::DoubleStar => {
                    let mut any = false;
                    for j in 0..=path.len() {
                        any |= row[j];
                        next[j] = any;
                    }
                }
                Token::Star => {
                    let mut run = false;
                    for j in 0..=path.len() {
                        run = row[j] || (j > 0 && run && path[j - 1] != b'/');
                        next[j] = run;
                    }
                }
            }
            row = next;
        }
        row[path.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_gitlab() {
        let m = |p: &str, s: &str| Wildcard::new(p).matches(s.as_bytes());
        assert!(m("*.lock", "Gemfile.lock"));
        assert!(!m("*.lock", "sub/Gemfile.lock"));
        assert!(m("**.lock", "sub/Gemfile.lock"));
        assert!(m("**/package.json", "a/b/package.json"));
        assert!(!m("**/package.json", "package.json"));
        assert!(m("a/*/c", "a/b/c"));
        assert!(!m("a/*/c", "a/b/x/c"));
        assert!(m("a/**/c", "a/b/x/c"));
        assert!(m("a?b", "a?b"));
        assert!(!m("a?b", "axb"));
        assert!(m("[ab]", "[ab]"));
        assert!(m("***", "x/y"));
        assert!(m("*", ""));
        assert!(!m("x", ""));
    }

    #[test]
    fn file_names_are_injective_and_plain() {
        assert_eq!(file_name("main-v1.2_x"), "main-v1.2_x");
        assert_eq!(file_name("a b"), "a%20b");
        assert_eq!(file_name("a%20b"), "a%2520b");
        assert_eq!(file_name("é"), "%C3%A9");
        let long = "k".repeat(201);
        let name = file_name(&long);
        assert!(name.starts_with("~sha256-") && name.len() == 8 + 64, "{name}");
        assert_eq!(file_name(&"k".repeat(200)), "k".repeat(200));
    }

    #[test]
    fn keys_are_validated() {
        for ok in ["default", "main", "a.b", "...", "%2E%2E%2E", "job name", "ünïcode"] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "/", "a\\b", "%2F", "x%2fy", "%5c", "%2E", "%2e%2E", ".%2E", "a\nb", "a\0b"] {
            assert!(matches!(validate_key(bad), Err(CacheError::InvalidKey { .. })), "{bad:?}");
        }
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
