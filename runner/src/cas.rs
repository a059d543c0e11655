//! Content-addressed blob store on local disk.
//!
//! Layout under the root:
//!
//! ```text
//! root/tmp/                 blobs being written (random names, never read)
//! root/sha256/ab/<64 hex>   finished blobs, named by the sha256 of their bytes
//! ```
//!
//! A blob is streamed into `tmp/` while it is hashed, fsynced, then renamed into place, and the
//! directory that received it is fsynced: a blob path that exists always holds complete bytes
//! that match its name, even after a crash. Storing bytes that are already present is a no-op.
//! Nothing is held in memory beyond one copy buffer.
//!
//! [`Store::adopt`] takes a file its caller already hashed while writing it (an archive
//! written by [`crate::artifacts::write_archive`] into `root/tmp/`) and renames it into place
//! without reading it again or fsyncing it: those blobs live as long as one `piste run`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

const COPY_BUFFER: usize = 64 * 1024;
const PREFIX: &str = "sha256:";

/// A sha256 digest, written `sha256:<64 lowercase hex>`.
///
/// [`FromStr`] accepts exactly that canonical form and nothing else (no uppercase hex, no
/// whitespace, no other algorithm), because digests arrive from HTTP clients and two spellings
/// of one digest must never name two different things.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The sha256 of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0xf)] as char);
        }
        s
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Why a string is not a canonical digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest `{input}`: {reason}; expected `sha256:` followed by 64 lowercase hex digits")]
pub struct ParseDigestError {
    input: String,
    reason: &'static str,
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Digest, ParseDigestError> {
        let fail = |reason| ParseDigestError {
            // Bound what we echo back: the input comes from the network.
            input: s.chars().take(80).collect(),
            reason,
        };
        let hex = s.strip_prefix(PREFIX).ok_or_else(|| fail("missing `sha256:` prefix"))?;
        if hex.len() != 64 {
            return Err(fail("wrong length"));
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let hi = hex_value(pair[0]).ok_or_else(|| fail("not lowercase hex"))?;
            let lo = hex_value(pair[1]).ok_or_else(|| fail("not lowercase hex"))?;
            *byte = hi << 4 | lo;
        }
        Ok(Digest(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Errors from [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// Reading the caller's stream failed; nothing was stored.
    #[error("reading the blob stream failed")]
    Read(#[source] io::Error),
    /// The bytes received do not hash to the digest the client announced; nothing was stored.
    #[error("digest mismatch: expected `{expected}`, received bytes hash to `{actual}`")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// No blob with this digest is stored.
    #[error("blob `{0}` is not in the store")]
    NotFound(Digest),
    /// A filesystem operation on the store failed.
    #[error("cannot {op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CasError + 'a {
    move |source| CasError::Io { op, path: path.to_owned(), source }
}

/// A content-addressed store rooted at one directory. Safe to share between threads and
/// processes: every write goes through a private temp file and an atomic rename.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Store> {
        let root = root.into();
        fs::create_dir_all(root.join("tmp"))?;
        fs::create_dir_all(root.join("sha256"))?;
        Ok(Store { root })
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Streams `reader` into the store and returns its digest. Idempotent.
    pub fn put(&self, reader: impl Read) -> Result<Digest, CasError> {
        let (tmp, digest) = self.spool(reader)?;
        self.commit(tmp, &digest)?;
        Ok(digest)
    }

    /// Like [`Store::put`], but refuses (and stores nothing) when the bytes do not hash to
    /// `expected`.
    pub fn put_expected(&self, reader: impl Read, expected: &Digest) -> Result<Digest, CasError> {
        let (tmp, actual) = self.spool(reader)?;
        if actual != *expected {
            // Dropping `tmp` deletes the temp file.
            return Err(CasError::DigestMismatch { expected: *expected, actual });
        }
        self.commit(tmp, &actual)?;
        Ok(actual)
    }

    /// Moves `file`, whose sha256 the caller computed while writing it, into the store under
    /// `digest`: a rename when it is on the store's file system (it should be in
    /// [`Store::root`]`/tmp`), otherwise a copy that is hashed and checked. The file is gone
    /// afterwards either way; when the blob was already stored, nothing else changes (dedup).
    pub fn adopt(&self, file: &Path, digest: &Digest) -> Result<(), CasError> {
        let dest = self.path(digest);
        if dest.is_file() {
            let _ = fs::remove_file(file);
            return Ok(());
        }
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        match fs::rename(file, &dest) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(18) => {
                // EXDEV: another file system; copy it, checking the digest on the way.
                let src = File::open(file).map_err(io_err("open", file))?;
                self.put_expected(io::BufReader::new(src), digest)?;
                let _ = fs::remove_file(file);
                Ok(())
            }
            Err(e) => Err(CasError::Io { op: "rename into", path: dest, source: e }),
        }
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File, CasError> {
        let path = self.path(d);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => CasError::NotFound(*d),
            _ => CasError::Io { op: "open blob", path, source: e },
        })
    }

    /// Whether a blob with this digest is stored.
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Where the blob with this digest lives (whether or not it is stored).
    pub fn path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    /// Re-hashes a stored blob: `Ok(false)` means the file on disk no longer matches its name.
    pub fn verify(&self, d: &Digest) -> Result<bool, CasError> {
        let mut file = self.open_blob(d)?;
        let path = self.path(d);
        let mut hasher = Sha256::new();
        io::copy(&mut file, &mut HashSink(&mut hasher)).map_err(io_err("read blob", &path))?;
        Ok(Digest(hasher.finalize().into()) == *d)
    }

    /// Copies the stream into a fresh temp file, hashing as it goes.
    fn spool(&self, mut reader: impl Read) -> Result<(TempFile, Digest), CasError> {
        let mut tmp = TempFile::create(&self.root.join("tmp"))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; COPY_BUFFER];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CasError::Read(e)),
            };
            hasher.update(&buf[..n]);
            tmp.file.write_all(&buf[..n]).map_err(io_err("write", &tmp.path))?;
        }
        tmp.file.sync_all().map_err(io_err("fsync", &tmp.path))?;
        Ok((tmp, Digest(hasher.finalize().into())))
    }

    fn commit(&self, tmp: TempFile, digest: &Digest) -> Result<(), CasError> {
        let dest = self.path(digest);
        if dest.is_file() {
            return Ok(()); // already stored: `tmp` is deleted on drop
        }
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        fs::rename(&tmp.path, &dest).map_err(io_err("rename into", &dest))?;
        tmp.disarm();
        // Make the rename itself durable.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync", dir))?;
        Ok(())
    }
}

/// A temp file that deletes itself unless [`TempFile::disarm`]ed.
struct TempFile {
    file: File,
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn create(dir: &Path) -> Result<TempFile, CasError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("put-{}-{nanos:x}-{n}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok(TempFile { file, path, armed: true }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CasError::Io { op: "create temp file in", path, source: e }),
            }
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("cas")).unwrap();
        (dir, store)
    }

    fn tmp_entries(store: &Store) -> usize {
        fs::read_dir(store.root().join("tmp")).unwrap().count()
    }

    #[test]
    fn digest_display_and_parse_round_trip() {
        let d = Digest::of(b"hello");
        assert_eq!(d.to_string(), HELLO);
        assert_eq!(HELLO.parse::<Digest>().unwrap(), d);
        assert_eq!(format!("{d:?}"), format!("Digest({HELLO})"));
    }

    #[test]
    fn digest_parse_is_strict() {
        let hex = &HELLO[7..];
        let bad = [
            String::new(),
            hex.to_owned(),                           // no prefix
            format!("SHA256:{hex}"),                  // prefix case
            format!("sha512:{hex}"),                  // other algorithm
            format!("sha256:{}", hex.to_uppercase()), // uppercase hex
            format!("sha256:{}", &hex[..63]),         // short
            format!("sha256:{hex}0"),                 // long
            format!(" {HELLO}"),                      // whitespace
            format!("{HELLO}\n"),
            format!("sha256:{}g", &hex[..63]), // non-hex
            format!("sha256:{}é", &hex[..62]), // multi-byte char, 64 bytes
        ];
        for input in bad {
            let err = input.parse::<Digest>().expect_err(&input);
            assert!(err.to_string().contains("expected `sha256:`"), "{err}");
        }
    }

    #[test]
    fn put_stores_under_its_digest() {
        let (_dir, store) = store();
        let d = store.put(&b"hello"[..]).unwrap();
        assert_eq!(d.to_string(), HELLO);
        assert!(store.contains(&d));
        let path = store.path(&d);
        assert!(path.ends_with(format!("sha256/2c/{}", d.hex())));
        let mut got = String::new();
        store.open_blob(&d).unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
        assert!(store.verify(&d).unwrap());
        assert_eq!(tmp_entries(&store), 0);
    }

    #[test]
    fn put_is_idempotent() {
        let (_dir, store) = store();
        let a = store.put(&b"same bytes"[..]).unwrap();
        let b = store.put(&b"same bytes"[..]).unwrap();
        assert_eq!(a, b);
        assert_eq!(tmp_entries(&store), 0);
        let files = fs::read_dir(store.path(&a).parent().unwrap()).unwrap().count();
        assert_eq!(files, 1);
    }

    #[test]
    fn put_streams_large_input() {
        let (_dir, store) = store();
        let data = vec![7u8; 3 * COPY_BUFFER + 17];
        let d = store.put(&data[..]).unwrap();
        assert_eq!(d, Digest::of(&data));
        assert_eq!(fs::metadata(store.path(&d)).unwrap().len(), data.len() as u64);
    }

    #[test]
    fn put_expected_accepts_matching_digest() {
        let (_dir, store) = store();
        let expected: Digest = HELLO.parse().unwrap();
        assert_eq!(store.put_expected(&b"hello"[..], &expected).unwrap(), expected);
        assert!(store.contains(&expected));
    }

    #[test]
    fn put_expected_refuses_mismatch_and_leaves_nothing() {
        let (_dir, store) = store();
        let expected: Digest = HELLO.parse().unwrap();
        let err = store.put_expected(&b"hellO"[..], &expected).unwrap_err();
        let actual = Digest::of(b"hellO");
        match &err {
            CasError::DigestMismatch { expected: e, actual: a } => {
                assert_eq!((*e, *a), (expected, actual));
            }
            other => panic!("unexpected error {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(HELLO) && msg.contains(&actual.to_string()), "{msg}");
        assert!(!store.contains(&expected) && !store.contains(&actual));
        assert_eq!(tmp_entries(&store), 0);
    }

    #[test]
    fn failing_reader_stores_nothing() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("connection reset"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let (_dir, store) = store();
        let err = store.put(Broken(3)).unwrap_err();
        assert!(matches!(err, CasError::Read(_)), "{err:?}");
        assert_eq!(tmp_entries(&store), 0);
        assert!(!store.contains(&Digest::of(b"xxx")));
    }

    #[test]
    fn adopt_renames_and_dedups() {
        let (_dir, store) = store();
        let a = store.root().join("tmp/a");
        fs::write(&a, b"hello").unwrap();
        let d: Digest = HELLO.parse().unwrap();
        store.adopt(&a, &d).unwrap();
        assert!(!a.exists() && store.verify(&d).unwrap());
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = inode(&store.path(&d));
        let b = store.root().join("tmp/b");
        fs::write(&b, b"hello").unwrap();
        store.adopt(&b, &d).unwrap();
        assert!(!b.exists(), "the duplicate is dropped");
        assert_eq!(inode(&store.path(&d)), before, "the stored blob is kept, not replaced");
    }

    #[test]
    fn missing_blob_is_not_found() {
        let (_dir, store) = store();
        let d = Digest::of(b"absent");
        assert!(!store.contains(&d));
        assert!(matches!(store.open_blob(&d), Err(CasError::NotFound(x)) if x == d));
    }

    #[test]
    fn verify_detects_corruption() {
        let (_dir, store) = store();
        let d = store.put(&b"original"[..]).unwrap();
        fs::write(store.path(&d), b"tampered").unwrap();
        assert!(!store.verify(&d).unwrap());
    }
}
