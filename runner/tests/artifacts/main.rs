//! Artifacts end to end: collection semantics, archive round trips, and hostile archives.

mod attacks;
mod collect;
mod roundtrip;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

/// A temp dir holding `ws/` (the workspace or destination) and room beside it, so tests can
/// check that nothing appeared outside.
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("ws")).unwrap();
        Sandbox { dir }
    }

    pub(crate) fn base(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    /// Writes `ws/rel`, creating parent directories.
    pub(crate) fn file(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.ws().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    /// Every path under the sandbox except inside `ws/`, relative, sorted.
    pub(crate) fn outside_ws(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(self.base(), self.base(), &mut out);
        out.retain(|p| p != "ws" && !p.starts_with("ws/"));
        out.sort();
        out
    }

    /// Every path under `ws/`, relative, sorted; symlinks are listed, not followed.
    pub(crate) fn inside_ws(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.ws(), &self.ws(), &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        out.push(path.strip_prefix(root).unwrap().display().to_string());
        if entry.file_type().unwrap().is_dir() {
            walk(root, &path, out);
        }
    }
}

/// Builds tar archives header by header, bypassing the path checks of `tar::Builder`.
pub(crate) struct RawTar {
    builder: tar::Builder<Vec<u8>>,
}

impl RawTar {
    pub(crate) fn new() -> RawTar {
        RawTar { builder: tar::Builder::new(Vec::new()) }
    }

    pub(crate) fn entry(&mut self, kind: EntryType, name: &[u8], link: &[u8], mode: u32, data: &[u8]) -> &mut Self {
        self.entry_sized(kind, name, link, mode, data.len() as u64, data)
    }

    /// An entry whose header claims `size` bytes, followed by `data`.
    pub(crate) fn entry_sized(&mut self, kind: EntryType, name: &[u8], link: &[u8], mode: u32, size: u64, data: &[u8]) -> &mut Self {
        let mut h = Header::new_gnu();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        gnu.linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub(crate) fn file(&mut self, name: &str, data: &str) -> &mut Self {
        self.entry(EntryType::Regular, name.as_bytes(), b"", 0o644, data.as_bytes())
    }

    pub(crate) fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(EntryType::Directory, name.as_bytes(), b"", 0o755, b"")
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(EntryType::Symlink, name.as_bytes(), target.as_bytes(), 0o777, b"")
    }

    /// A PAX extended header (`x`) with the given records, for the next entry.
    pub(crate) fn pax(&mut self, records: &[(&str, &str)]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = format!(" {k}={v}\n");
            // The length counts its own digits: iterate to the fixed point.
            let mut len = body.len() + 1;
            while body.len() + len.to_string().len() != len {
                len = body.len() + len.to_string().len();
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        self.entry(EntryType::XHeader, b"././@PaxHeader", b"", 0o644, &data)
    }

    /// The tar stream, gzipped.
    pub(crate) fn gz(&mut self) -> Vec<u8> {
        let tar = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new())).into_inner().unwrap();
        gzip(&tar)
    }
}

impl RawTar {
    /// The tar stream, in zstd (one compressed frame).
    pub(crate) fn zst(&mut self) -> Vec<u8> {
        let tar = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new())).into_inner().unwrap();
        zstd::encode_all(&tar[..], 3).unwrap()
    }
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

pub(crate) fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}
