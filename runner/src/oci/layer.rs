//! Layers: reproducible tar+gzip written in one pass, hashed twice on the way (the tar's
//! SHA-256 is the `diff_id`, the gzip's is the blob digest), files searched by the leak
//! scanner as they are read.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

use super::OciError;
use super::leak::{Finding, Scanner};

/// gzip level of new layers (1: the speed of `gzip -1`; see the README's figures).
pub const GZIP_LEVEL: u32 = 1;

/// What one entry of a layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file, read from `source` when the layer is written.
    File {
        source: PathBuf,
        size: u64,
    },
    Dir,
    Symlink(String),
}

/// One entry: a path inside the image (relative, `/`-separated, no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// A layer written to disk.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    /// `sha256:` of the gzip (the blob).
    pub digest: String,
    /// `sha256:` of the tar.
    pub diff_id: String,
    /// Size of the gzip.
    pub size: u64,
    /// Size of the tar.
    pub tar_size: u64,
    /// Masked values found in entry names or file contents.
    pub findings: Vec<Finding>,
}

/// A writer that hashes and counts what passes through.
pub struct HashWriter<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hasher: Sha256::new(), count: 0 }
    }

    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A tar stream → gzip → file, hashing both sides.
pub type LayerSink = HashWriter<GzEncoder<HashWriter<BufWriter<File>>>>;

/// Opens `out` for a layer.
pub fn sink(out: &Path) -> Result<LayerSink, OciError> {
    let file = File::create(out).map_err(|e| OciError::Io { what: format!("cannot create `{}`", out.display()), source: e })?;
    Ok(HashWriter::new(GzEncoder::new(HashWriter::new(BufWriter::with_capacity(1 << 20, file)), Compression::new(GZIP_LEVEL))))
}

/// Finishes a layer sink: both digests and sizes.
pub fn finish(sink: LayerSink, out: &Path, findings: Vec<Finding>) -> Result<Written, OciError> {
    let io = |e| OciError::Io { what: format!("cannot write `{}`", out.display()), source: e };
    let diff_id = sink.digest();
    let tar_size = sink.count;
    let mut gz = sink.inner.finish().map_err(io)?;
    gz.flush().map_err(io)?;
    Ok(Written { path: out.to_owned(), digest: gz.digest(), diff_id, size: gz.count, tar_size, findings })
}

/// Writes `entries` (sorted here by path) as a layer at `out`, every mtime `epoch`. `what`
/// names the layer in findings (`layer 2 (COPY . /app)`).
pub fn write(entries: &mut [Entry], epoch: u64, out: &Path, scanner: Option<&Scanner>, what: &str) -> Result<Written, OciError> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut findings = Vec::new();
    let mut tar = tar::Builder::new(sink(out)?);
    tar.mode(tar::HeaderMode::Deterministic);
    let io = |path: &str, e: io::Error| OciError::Io { what: format!("cannot add `{path}` to {what}"), source: e };
    for entry in entries.iter() {
        if let Some(form) = scanner.and_then(|s| s.find(entry.path.as_bytes())) {
            findings.push(Finding { location: format!("{what}, the name of `/{}`", entry.path), form });
        }
        let mut h = tar::Header::new_gnu();
        h.set_mtime(epoch);
        h.set_uid(entry.uid);
        h.set_gid(entry.gid);
        h.set_mode(entry.mode);
        match &entry.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", entry.path), io::empty()).map_err(|e| io(&entry.path, e))?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, &entry.path, target).map_err(|e| io(&entry.path, e))?;
            }
            Kind::File { source, size } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*size);
                let file = File::open(source).map_err(|e| io(&entry.path, e))?;
                // The size was read when the entry was listed: a file that changed since
                // is an error, not a corrupt tar.
                let mut limited = file.take(*size);
                let hit = match scanner {
                    Some(s) => {
                        let mut r = s.reader(&mut limited);
                        tar.append_data(&mut h, &entry.path, &mut r).map_err(|e| io(&entry.path, e))?;
                        r.hit
                    }
                    None => {
                        tar.append_data(&mut h, &entry.path, &mut limited).map_err(|e| io(&entry.path, e))?;
                        None
                    }
                };
                if limited.limit() != 0 {
                    return Err(OciError::Build(format!("`{}` changed while it was copied into {what}", source.display())));
                }
                if let Some(form) = hit {
                    findings.push(Finding { location: format!("{what}, file `/{}`", entry.path), form });
                }
            }
        }
    }
    let sink = tar.into_inner().map_err(|e| io("the end of the archive", e))?;
    finish(sink, out, findings)
}

/// Recompresses a tar stream (an exported layer) as a layer at `out`, searching each entry's
/// name and content with `scanner`; the tar bytes are kept as they are.
pub fn recompress(tar_stream: impl Read, out: &Path, scanner: Option<&Scanner>, what: &str) -> Result<Written, OciError> {
    let io = |e: io::Error| OciError::Io { what: format!("cannot recompress {what}"), source: e };
    let mut sink = sink(out)?;
    let mut findings = Vec::new();
    match scanner {
        None => {
            let mut tar_stream = tar_stream;
            io::copy(&mut tar_stream, &mut sink).map_err(io)?;
        }
        Some(scanner) => {
            let tee = Tee { inner: tar_stream, sink: &mut sink };
            let mut archive = tar::Archive::new(tee);
            for entry in archive.entries().map_err(io)? {
                let mut entry = entry.map_err(io)?;
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                if let Some(form) = scanner.find(name.as_bytes()) {
                    findings.push(Finding { location: format!("{what}, the name of `/{name}`"), form });
                }
                let mut r = scanner.reader(&mut entry);
                io::copy(&mut r, &mut io::sink()).map_err(io)?;
                if let Some(form) = r.hit {
                    findings.push(Finding { location: format!("{what}, file `/{name}`"), form });
                }
            }
            let mut rest = archive.into_inner();
            io::copy(&mut rest, &mut io::sink()).map_err(io)?;
        }
    }
    finish(sink, out, findings)
}

/// Reads through, writing what it read to `sink`.
struct Tee<'a, R, W> {
    inner: R,
    sink: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Normalised mode of a file from its permission bits (umask-independent).
pub fn file_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 { 0o755 } else { 0o644 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_entries_give_the_same_digests_whatever_the_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"hello").unwrap();
        let file =
            |p: &str| Entry { path: p.into(), kind: Kind::File { source: dir.path().join("a"), size: 5 }, mode: 0o644, uid: 0, gid: 0 };
        let dir_entry = Entry { path: "d".into(), kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0 };
        let mut one = vec![file("d/x"), dir_entry.clone(), file("d/y")];
        let mut two = vec![file("d/y"), file("d/x"), dir_entry];
        let a = write(&mut one, 1_700_000_000, &dir.path().join("1.tgz"), None, "layer 1").unwrap();
        let b = write(&mut two, 1_700_000_000, &dir.path().join("2.tgz"), None, "layer 1").unwrap();
        assert_eq!((a.digest.clone(), a.diff_id.clone()), (b.digest, b.diff_id));
        let c = write(&mut one, 1_700_000_001, &dir.path().join("3.tgz"), None, "layer 1").unwrap();
        assert_ne!(a.diff_id, c.diff_id);
        // The digest is the gzip file's; the diff_id the tar inside it.
        let gz = std::fs::read(dir.path().join("1.tgz")).unwrap();
        assert_eq!(a.digest, super::super::registry::sha256_digest(&gz));
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(a.diff_id, super::super::registry::sha256_digest(&tar));
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["d/", "d/x", "d/y"]);
    }
}
