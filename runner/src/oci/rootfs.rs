//! The files of an image, read from its layers: what `COPY --from=<image>` copies, and what
//! `COPY --from=<stage>` finds in the stage's base image.
//!
//! Layers are fetched by digest into the build's work directory (once per build, whatever
//! asks), then read in order as tar streams (gzip, zstd or plain), applying whiteouts
//! (`.wh.<name>` removes a path, `.wh..wh..opq` empties a directory). Only the files a `COPY`
//! asks for are written out, each to a numbered file of the work directory: a path inside a
//! layer is data, never a place to write, so a hostile layer cannot write outside (`../x`,
//! absolute names and links are just names here). Directories, links and modes are kept as
//! the image has them; owners become 0 as for every `COPY` without `--chown`.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use super::image::Descriptor;
use super::layer::{Entry, Kind};
use super::push::Registries;
use super::registry::short;
use super::{Log, OciError, blocking};

/// Most entries kept from one image (names and modes; contents only for wanted files).
pub const MAX_ENTRIES: usize = 1_000_000;

/// Which paths a `COPY` wants: each source (relative, maybe a glob), itself and what is below.
#[derive(Clone)]
pub struct Wanted {
    sources: Vec<(String, Option<GlobMatcher>)>,
}

impl Wanted {
    pub fn new(sources: &[String]) -> Result<Wanted, String> {
        let mut out = Vec::new();
        for s in sources {
            let glob = if s.contains(['*', '?', '[']) {
                Some(GlobBuilder::new(s).literal_separator(true).build().map_err(|e| format!("`{s}`: {e}"))?.compile_matcher())
            } else {
                None
            };
            out.push((s.clone(), glob));
        }
        Ok(Wanted { sources: out })
    }

    fn wants(&self, path: &str) -> bool {
        self.sources.iter().any(|(s, glob)| match glob {
            None => s.is_empty() || path == s || path.strip_prefix(s.as_str()).is_some_and(|r| r.starts_with('/')),
            // A match, or anything under one (`COPY --from=x /usr/lib/*/ /d/` copies directories).
            Some(g) => {
                let mut p = path;
                loop {
                    if g.is_match(p) {
                        return true;
                    }
                    match p.rsplit_once('/') {
                        Some((parent, _)) => p = parent,
                        None => return false,
                    }
                }
            }
        })
    }
}

/// The files of an image: path → entry (file contents in the work directory).
#[derive(Default, Clone)]
pub struct RootFs {
    pub files: BTreeMap<String, Entry>,
    /// Symbolic links of the image, wanted or not: to say why a path through one is missing.
    pub links: BTreeMap<String, String>,
}

impl RootFs {
    /// Why `src` (relative) is not in this image, with a hint when a component of it is a link.
    pub fn missing(&self, src: &str) -> Option<String> {
        let mut prefix = String::new();
        for c in src.split('/') {
            prefix = if prefix.is_empty() { c.to_string() } else { format!("{prefix}/{c}") };
            if let Some(target) = self.links.get(&prefix) {
                return Some(format!(
                    "`/{prefix}` is a link to `{target}` in the image (paths through links are not followed): give the path it points to"
                ));
            }
        }
        None
    }
}

/// Where a build keeps the layers it fetched, by digest, and numbers the files it extracts.
pub struct LayerCache {
    dir: PathBuf,
    fetched: tokio::sync::Mutex<HashMap<String, PathBuf>>,
    next: std::sync::atomic::AtomicU64,
}

impl LayerCache {
    pub fn new(dir: PathBuf) -> LayerCache {
        LayerCache { dir, fetched: Default::default(), next: std::sync::atomic::AtomicU64::new(0) }
    }

    async fn fetch(&self, regs: &Registries, host: &str, repo: &str, d: &Descriptor, log: &Log) -> Result<PathBuf, OciError> {
        let mut fetched = self.fetched.lock().await;
        if let Some(p) = fetched.get(&d.digest) {
            return Ok(p.clone());
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| OciError::Io { what: format!("cannot create `{}`", self.dir.display()), source: e })?;
        let path = self.dir.join(d.digest.trim_start_matches("sha256:"));
        let session = regs.get(host).session(repo, false, &[]).await?;
        let size = session.get_blob_to_file(repo, &d.digest, &path).await?;
        log.line(format!("  fetched layer {} of {host}/{repo} ({})", short(&d.digest), super::build::human(size))).await;
        fetched.insert(d.digest.clone(), path.clone());
        Ok(path)
    }

    /// The files `wanted` of the image whose layers are `layers` (in `repo` of `host`).
    pub async fn read(
        &self,
        regs: &Registries,
        host: &str,
        repo: &str,
        layers: &[Descriptor],
        wanted: &Wanted,
        log: &Log,
    ) -> Result<RootFs, OciError> {
        let mut fs = RootFs::default();
        for d in layers {
            let blob = self.fetch(regs, host, repo, d, log).await?;
            let (wanted, out_dir) = (wanted.clone(), self.dir.clone());
            let next = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let what = format!("layer {} of {host}/{repo}", short(&d.digest));
            let prior = std::mem::take(&mut fs);
            fs = blocking(move || apply_layer(prior, &blob, &wanted, &out_dir.join(format!("x{next}")), &what)).await?;
        }
        Ok(fs)
    }
}

/// Opens a layer blob as a tar stream, telling gzip, zstd and plain tar apart by magic bytes.
fn open_tar(path: &Path, what: &str) -> Result<Box<dyn Read>, OciError> {
    let io = |e| OciError::Io { what: format!("cannot read {what}"), source: e };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(io)?;
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(file);
    Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(head))
    } else if n >= 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(head).map_err(io)?)
    } else {
        Box::new(head)
    })
}

/// `path` as a clean relative name (`./a//b/` → `a/b`); `None` for what names nothing usable.
fn clean(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn remove_tree(fs: &mut RootFs, path: &str) {
    let below = format!("{path}/");
    fs.files.retain(|k, _| k != path && !k.starts_with(&below));
    fs.links.retain(|k, _| k != path && !k.starts_with(&below));
}

/// Applies one layer to `fs`; wanted files' contents go to `out` (a directory made here).
fn apply_layer(mut fs: RootFs, blob: &Path, wanted: &Wanted, out: &Path, what: &str) -> Result<RootFs, OciError> {
    let io = |e| OciError::Io { what: format!("cannot read {what}"), source: e };
    let mut archive = tar::Archive::new(open_tar(blob, what)?);
    let mut written = 0u64;
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = clean(&raw) else { continue };
        let (dir, name) = path.rsplit_once('/').map_or(("", path.as_str()), |(d, n)| (d, n));
        if name == ".wh..wh..opq" {
            let below = format!("{dir}/");
            fs.files.retain(|k, _| !k.starts_with(&below));
            fs.links.retain(|k, _| !k.starts_with(&below));
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            remove_tree(&mut fs, &if dir.is_empty() { gone.to_string() } else { format!("{dir}/{gone}") });
            continue;
        }
        if fs.files.len() + fs.links.len() >= MAX_ENTRIES {
            return Err(OciError::Build(format!("{what}: more than {MAX_ENTRIES} entries")));
        }
        // A missing or malformed mode (links often have none) reads as the usual default.
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let kind = entry.header().entry_type();
        // A later entry replaces an earlier one of the same path (a directory keeps what is below).
        if !kind.is_dir() {
            remove_tree(&mut fs, &path);
        }
        if kind.is_symlink() {
            let target = entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
            fs.links.insert(path.clone(), target.clone());
            if wanted.wants(&path) {
                fs.files.insert(path.clone(), Entry { path, kind: Kind::Symlink(target), mode: 0o777, uid: 0, gid: 0 });
            }
        } else if kind.is_dir() {
            if wanted.wants(&path) {
                fs.files.insert(path.clone(), Entry { path, kind: Kind::Dir, mode, uid: 0, gid: 0 });
            }
        } else if kind.is_hard_link() {
            if !wanted.wants(&path) {
                continue;
            }
            let target = entry.link_name_bytes().and_then(|t| clean(&String::from_utf8_lossy(&t))).unwrap_or_default();
            match fs.files.get(&target).map(|e| e.kind.clone()) {
                Some(k @ Kind::File { .. }) => {
                    fs.files.insert(path.clone(), Entry { path, kind: k, mode, uid: 0, gid: 0 });
                }
                _ => {
                    return Err(OciError::Build(format!(
                        "{what}: `/{path}` is a hard link to `/{target}`, which this `COPY` does not copy: copy `/{target}` too"
                    )));
                }
            }
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            if !wanted.wants(&path) {
                continue;
            }
            std::fs::create_dir_all(out).map_err(|e| OciError::Io { what: format!("cannot create `{}`", out.display()), source: e })?;
            let source = out.join(written.to_string());
            written += 1;
            let mut file = std::fs::File::create(&source)
                .map_err(|e| OciError::Io { what: format!("cannot create `{}`", source.display()), source: e })?;
            let size = std::io::copy(&mut entry, &mut file).map_err(io)?;
            fs.files.insert(path.clone(), Entry { path, kind: Kind::File { source, size }, mode, uid: 0, gid: 0 });
        }
        // Devices and FIFOs are not copied by `COPY` either.
    }
    Ok(fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(dir: &Path, name: &str, entries: &[(&str, Option<&str>)]) -> PathBuf {
        let path = dir.join(name);
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast()));
        for (p, content) in entries {
            let mut h = tar::Header::new_gnu();
            match content {
                Some(c) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(c.len() as u64);
                    h.set_mode(0o755);
                    // Written raw: the tar crate refuses to write a hostile name like `../x`.
                    h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
                    h.set_cksum();
                    tar.append(&h, c.as_bytes()).unwrap();
                }
                None if p.ends_with('/') => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o750);
                    tar.append_data(&mut h, p, std::io::empty()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    tar.append_link(&mut h, p, "usr/lib").unwrap();
                }
            }
        }
        tar.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts_and_only_wanted_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let one = layer(
            dir.path(),
            "1",
            &[
                ("usr/", None),
                ("usr/bin/", None),
                ("usr/bin/tool", Some("v1")),
                ("usr/bin/old", Some("x")),
                ("etc/big", Some("no")),
                ("lib", None),
            ],
        );
        let two = layer(dir.path(), "2", &[("usr/bin/tool", Some("v2")), ("usr/bin/.wh.old", Some("")), ("../../escape", Some("e"))]);
        let wanted = Wanted::new(&["usr/bin".into(), "escape".into()]).unwrap();
        let fs = apply_layer(RootFs::default(), &one, &wanted, &dir.path().join("x1"), "layer 1").unwrap();
        assert!(fs.files.contains_key("usr/bin/old") && !fs.files.contains_key("etc/big"), "only wanted files");
        let fs = apply_layer(fs, &two, &wanted, &dir.path().join("x2"), "layer 2").unwrap();
        let names: Vec<&str> = fs.files.keys().map(String::as_str).collect();
        assert_eq!(names, ["usr/bin", "usr/bin/tool"], "the whiteout removed `old`; `../../escape` names nothing");
        let Kind::File { source, size } = &fs.files["usr/bin/tool"].kind else { panic!("a file") };
        assert_eq!((std::fs::read_to_string(source).unwrap().as_str(), *size), ("v2", 2));
        assert!(source.starts_with(dir.path().join("x2")), "contents go to numbered files of the work directory");
        assert_eq!((fs.files["usr/bin"].mode, fs.files["usr/bin/tool"].mode), (0o750, 0o755));
        assert!(fs.missing("lib/x").unwrap().contains("`/lib` is a link to `usr/lib`"));
        let globbed = Wanted::new(&["usr/*/tool".into()]).unwrap();
        assert!(globbed.wants("usr/bin/tool") && !globbed.wants("usr/bin"));
    }
}
