//! One file out of an artifacts archive, without extracting anything: what a child pipeline's
//! `trigger:include:artifact` reads (GitLab's `Ci::ArtifactFileReader`).

use std::io::{self, Read};

/// What [`read_file`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum FileInArchive {
    /// The regular file's bytes.
    Found(Vec<u8>),
    /// No regular file has this path.
    Missing,
    /// The file is larger than the limit (its size).
    TooLarge(u64),
}

/// Finds the regular file `wanted` (a relative path; `./` and empty segments ignored on both
/// sides) in a zstd or gzip tar archive and reads it whole when it is at most `limit` bytes.
/// Blocking.
pub fn read_file(archive: impl Read, wanted: &str, limit: u64) -> io::Result<FileInArchive> {
    let clean = |p: &str| p.split('/').filter(|s| !s.is_empty() && *s != ".").collect::<Vec<_>>().join("/");
    let wanted = clean(wanted);
    let mut tar = tar::Archive::new(super::codec::decoder(archive)?);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if clean(&entry.path()?.to_string_lossy()) != wanted {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Ok(FileInArchive::Missing);
        }
        let size = entry.size();
        if size > limit {
            return Ok(FileInArchive::TooLarge(size));
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry.by_ref().take(limit).read_to_end(&mut out)?;
        return Ok(FileInArchive::Found(out));
    }
    Ok(FileInArchive::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (p, data) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, data).unwrap();
            paths.push(std::path::PathBuf::from(p));
        }
        let mut out = Vec::new();
        super::super::write_archive(dir.path(), &paths, &mut out).unwrap();
        out
    }

    #[test]
    fn finds_one_file_and_refuses_oversized_ones() {
        let a = archive(&[("ci/child.yml", b"job:\n  script: [x]\n"), ("big.yml", &[b'x'; 100])]);
        assert_eq!(read_file(&a[..], "./ci/child.yml", 1000).unwrap(), FileInArchive::Found(b"job:\n  script: [x]\n".to_vec()));
        assert_eq!(read_file(&a[..], "absent.yml", 1000).unwrap(), FileInArchive::Missing);
        assert_eq!(read_file(&a[..], "big.yml", 10).unwrap(), FileInArchive::TooLarge(100));
        assert_eq!(read_file(&a[..], "ci", 1000).unwrap(), FileInArchive::Missing, "a directory is no file");
    }
}
