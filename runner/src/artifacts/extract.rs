//! Extracting an untrusted tar.zst (or a tar.gz from before) without writing outside the
//! destination.
//!
//! Every entry is checked here; `tar::Archive::unpack` is not used. The archive is read in
//! raw mode so that GNU long names and PAX headers are parsed by us, with a size bound,
//! instead of being read whole into memory.
//!
//! What is refused (an [`ArtifactError::Unsafe`] naming the entry; extraction stops):
//! absolute paths and `..` components; any entry whose parent path goes through a symlink or
//! a non-directory, whether that symlink came from this archive (the two-step escape) or was
//! already in `dest` — each directory is opened with `O_NOFOLLOW`; symlinks whose target is
//! absolute, climbs above `dest`, or has `..` after a name; hard links (all of them: our
//! archives never contain any); device files, fifos, sparse and unknown entry types; non-file
//! entries that carry data.
//!
//! Files and symlinks are written under a temporary name in their final directory and renamed
//! into place, so an existing symlink at that name is replaced, never written through, and a
//! failed entry leaves no partial file behind. Modes keep the permission bits only (setuid,
//! setgid and sticky are stripped); directories always stay owner-writable (`| 0o700`) so
//! later entries can be written into them. Owners and mtimes are not restored. On error,
//! entries extracted before the failing one stay in `dest`.

use std::cell::Cell;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::fsat::{self, WalkError};
use super::{ArtifactError, ExtractSummary, Limits, check_symlink_target, relative_components};

/// Largest GNU long-name / long-link / PAX header accepted.
const MAX_METADATA: u64 = 64 * 1024;
/// Longest entry path accepted (Linux `PATH_MAX`): we open paths one component at a time, so
/// nothing else would bound their depth.
const MAX_PATH: usize = 4096;

/// Extracts the archive (zstd or gzip, told by its magic bytes) `archive` into `dest` (created if missing), within `limits`.
pub fn extract(archive: impl Read, dest: &Path, limits: &Limits) -> Result<ExtractSummary, ArtifactError> {
    let io_err = |op: &'static str| move |source| ArtifactError::Io { op, path: dest.to_owned(), source };
    fs::create_dir_all(dest).map_err(io_err("create destination"))?;
    let root = fsat::open_root(dest).map_err(io_err("open destination"))?;

    let mut x = Extractor { root, limits, summary: ExtractSummary::default(), last: String::from("(start)"), buf: vec![0u8; 256 * 1024] };
    let mut archive = tar::Archive::new(super::codec::decoder(archive).map_err(|e| x.corrupt(e))?);
    let entries = archive.entries().map_err(|e| x.corrupt(e))?.raw(true);
    let mut meta = Metadata::default();
    for entry in entries {
        let mut entry = entry.map_err(|e| x.corrupt(e))?;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::GNULongName => {
                let mut name = x.read_metadata(&mut entry, meta.long_name.is_some())?;
                while name.last() == Some(&0) {
                    name.pop();
                }
                meta.long_name = Some(name);
                continue;
            }
            EntryType::GNULongLink => {
                let mut link = x.read_metadata(&mut entry, meta.long_link.is_some())?;
                while link.last() == Some(&0) {
                    link.pop();
                }
                meta.long_link = Some(link);
                continue;
            }
            EntryType::XHeader => {
                let pax = x.read_metadata(&mut entry, meta.pax_seen)?;
                meta.pax_seen = true;
                x.parse_pax(&pax, &mut meta)?;
                continue;
            }
            EntryType::XGlobalHeader => {
                x.last = String::from("(PAX global header)");
                x.count_entry()?;
                x.read_metadata(&mut entry, false)?;
                continue;
            }
            _ => {}
        }
        let name = meta.long_name.take().or(meta.pax_path.take());
        let name = name.unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let link = meta.long_link.take().or(meta.pax_link.take());
        let link = link.or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
        meta = Metadata::default();
        x.last = shown(&name);
        x.count_entry()?;
        if name.len() > MAX_PATH {
            return Err(x.refuse(format!("path longer than {MAX_PATH} bytes")));
        }
        let comps = relative_components(&name).map_err(|r| x.refuse(r))?;
        // A `.git` component would write a repository's configuration or hooks (say
        // `core.fsmonitor`), which git then runs in a later job: never, at any depth, any case.
        if comps.iter().any(|c| c.eq_ignore_ascii_case(b".git")) {
            return Err(x.refuse("a `.git` path component: archives never write into git metadata"));
        }
        let mode = entry.header().mode().map_err(|e| x.corrupt(e))? & 0o777;
        let is_file = matches!(kind, EntryType::Regular | EntryType::Continuous);
        if !is_file && entry.size() != 0 {
            return Err(x.refuse("non-file entry carrying data"));
        }
        match kind {
            EntryType::Directory => x.dir(&comps, mode)?,
            EntryType::Symlink => x.symlink(&comps, link.as_deref())?,
            _ if is_file => x.file(&comps, mode, &mut entry)?,
            EntryType::Link => return Err(x.refuse("hard links are not extracted")),
            EntryType::Char | EntryType::Block => return Err(x.refuse("device file")),
            EntryType::Fifo => return Err(x.refuse("fifo")),
            EntryType::GNUSparse => return Err(x.refuse("sparse files are not supported")),
            _ => return Err(x.refuse("unsupported entry type")),
        }
    }
    if meta.long_name.is_some() || meta.long_link.is_some() || meta.pax_seen {
        return Err(x.corrupt(io::Error::new(io::ErrorKind::UnexpectedEof, "extension header at end of archive")));
    }
    Ok(x.summary)
}

/// An entry name for messages: lossy UTF-8, cut after 256 characters.
fn shown(name: &[u8]) -> String {
    let full = String::from_utf8_lossy(name);
    match full.char_indices().nth(256) {
        Some((cut, _)) => format!("{}…", &full[..cut]),
        None => full.into_owned(),
    }
}

/// Extension headers waiting for the entry they describe.
#[derive(Default)]
struct Metadata {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_seen: bool,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
}

struct Extractor<'a> {
    root: OwnedFd,
    limits: &'a Limits,
    summary: ExtractSummary,
    /// The entry being (or last) extracted, for error messages.
    last: String,
    /// The copy buffer, reused from file to file.
    buf: Vec<u8>,
}

impl Extractor<'_> {
    fn refuse(&self, reason: impl Into<String>) -> ArtifactError {
        ArtifactError::Unsafe { entry: self.last.clone(), reason: reason.into() }
    }

    fn corrupt(&self, source: io::Error) -> ArtifactError {
        ArtifactError::Corrupt { after: self.last.clone(), source }
    }

    fn limit(&self, what: &'static str, limit: u64) -> ArtifactError {
        ArtifactError::Limit { what, limit, entry: self.last.clone() }
    }

    fn count_entry(&mut self) -> Result<(), ArtifactError> {
        if self.summary.entries >= self.limits.max_entries {
            return Err(self.limit("entries", self.limits.max_entries));
        }
        self.summary.entries += 1;
        Ok(())
    }

    fn read_metadata<R: Read>(&self, entry: &mut tar::Entry<'_, R>, duplicate: bool) -> Result<Vec<u8>, ArtifactError> {
        if duplicate {
            return Err(self.refuse("two extension headers of one kind for one entry"));
        }
        if entry.size() > MAX_METADATA {
            return Err(self.refuse(format!("extension header larger than {MAX_METADATA} bytes")));
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| self.corrupt(e))?;
        Ok(data)
    }

    fn parse_pax(&self, pax: &[u8], meta: &mut Metadata) -> Result<(), ArtifactError> {
        for ext in tar::PaxExtensions::new(pax) {
            let ext = ext.map_err(|e| self.corrupt(e))?;
            match ext.key_bytes() {
                b"path" => meta.pax_path = Some(ext.value_bytes().to_vec()),
                b"linkpath" => meta.pax_link = Some(ext.value_bytes().to_vec()),
                b"size" => return Err(self.refuse("PAX size records are not supported")),
                _ => {} // times, owners, xattrs: not restored
            }
        }
        Ok(())
    }

    /// Opens (creating) the parent directory of an entry, refusing symlinks on the way.
    fn parent<'c>(&self, comps: &'c [&'c [u8]]) -> Result<(OwnedFd, &'c [u8]), ArtifactError> {
        let Some((name, dirs)) = comps.split_last() else {
            return Err(self.refuse("empty path"));
        };
        match fsat::open_dirs(&self.root, dirs, true) {
            Ok(fd) => Ok((fd, name)),
            Err(WalkError::NotDir(i)) => {
                let at = String::from_utf8_lossy(&dirs[..=i].join(&b'/')).into_owned();
                Err(self.refuse(format!("its parent `{at}` is a symlink or not a directory")))
            }
            Err(WalkError::Missing) => Err(self.refuse("parent directory vanished")),
            Err(WalkError::Io(e)) => Err(self.io(e)),
        }
    }

    fn io(&self, source: io::Error) -> ArtifactError {
        ArtifactError::Io { op: "extract", path: self.last.clone().into(), source }
    }

    fn dir(&mut self, comps: &[&[u8]], mode: u32) -> Result<(), ArtifactError> {
        if comps.is_empty() {
            return Ok(()); // `./`: the destination itself
        }
        let (parent, name) = self.parent(comps)?;
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(self.io(e.into())),
        }
        let fd = fsat::open_dir(&parent, name)
            .map_err(|e| if fsat::is_not_dir(e) { self.refuse("exists and is a symlink or not a directory") } else { self.io(e.into()) })?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode | 0o700)).map_err(|e| self.io(e.into()))?;
        self.summary.dirs += 1;
        Ok(())
    }

    fn symlink(&mut self, comps: &[&[u8]], target: Option<&[u8]>) -> Result<(), ArtifactError> {
        let target = target.unwrap_or_default();
        check_symlink_target(comps.len(), target).map_err(|r| self.refuse(r))?;
        let (parent, name) = self.parent(comps)?;
        let tmp = TempName::create(&parent, |tmp| rustix::fs::symlinkat(target, &parent, tmp)).map_err(|e| self.io(e.into()))?;
        tmp.rename_to(name).map_err(|e| self.replace_error(e))?;
        self.summary.symlinks += 1;
        Ok(())
    }

    fn file<R: Read>(&mut self, comps: &[&[u8]], mode: u32, entry: &mut tar::Entry<'_, R>) -> Result<(), ArtifactError> {
        let size = entry.size();
        if size > self.limits.max_entry_bytes {
            return Err(self.limit("bytes in one file", self.limits.max_entry_bytes));
        }
        let total = self.summary.bytes.saturating_add(size);
        if total > self.limits.max_total_bytes {
            return Err(self.limit("bytes in total", self.limits.max_total_bytes));
        }
        let (parent, name) = self.parent(comps)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut fd = None;
        let tmp = TempName::create(&parent, |tmp| {
            fd = Some(rustix::fs::openat(&parent, tmp, flags, Mode::from_raw_mode(0o600))?);
            Ok(())
        })
        .map_err(|e| self.io(e.into()))?;
        let Some(fd) = fd else { return Err(self.io(io::Error::other("temp file not opened"))) };
        let mut file = File::from(fd);
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(self.buf.len());
            let n = match entry.read(&mut self.buf[..want]) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "archive ends inside a file");
                    return Err(self.corrupt(e));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt(e)),
            };
            file.write_all(&self.buf[..n]).map_err(|e| self.io(e))?;
            left -= n as u64;
        }
        rustix::fs::fchmod(file.as_fd(), Mode::from_raw_mode(mode)).map_err(|e| self.io(e.into()))?;
        drop(file);
        tmp.rename_to(name).map_err(|e| self.replace_error(e))?;
        self.summary.files += 1;
        self.summary.bytes = total;
        Ok(())
    }

    fn replace_error(&self, e: Errno) -> ArtifactError {
        if e == Errno::ISDIR || e == Errno::NOTEMPTY || e == Errno::EXIST || e == Errno::NOTDIR {
            self.refuse("a directory already exists at this path")
        } else {
            self.io(e.into())
        }
    }
}

/// A uniquely named temporary entry in a directory, removed on drop unless renamed.
struct TempName<'d> {
    dir: &'d OwnedFd,
    name: Vec<u8>,
    armed: bool,
}

impl<'d> TempName<'d> {
    /// Calls `make` with fresh names until it does not fail with `EEXIST`.
    fn create(dir: &'d OwnedFd, mut make: impl FnMut(&[u8]) -> Result<(), Errno>) -> Result<TempName<'d>, Errno> {
        thread_local! { static COUNTER: Cell<u64> = const { Cell::new(0) }; }
        loop {
            let n = COUNTER.with(|c| {
                c.set(c.get().wrapping_add(1));
                c.get()
            });
            let name = format!(".piste-extract-{}-{n}", std::process::id()).into_bytes();
            match make(&name) {
                Ok(()) => return Ok(TempName { dir, name, armed: true }),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn rename_to(mut self, name: &[u8]) -> Result<(), Errno> {
        rustix::fs::renameat(self.dir, self.name.as_slice(), self.dir, name)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempName<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = rustix::fs::unlinkat(self.dir, self.name.as_slice(), AtFlags::empty());
        }
    }
}
