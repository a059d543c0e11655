//! collect → write_archive → extract keeps content, modes and symlinks; archives are
//! deterministic and never read from outside the workspace.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use runner::artifacts::codec::{Format, decoder};
use runner::artifacts::{ARCHIVE_MTIME, ArtifactError, ArtifactSpec, Limits, collect, extract, write_archive};
use runner::cas::Digest;

use crate::{Sandbox, mode_of};

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn build_project(sb: &Sandbox) {
    sb.file("bin/tool", "#!/bin/sh\necho hi\n");
    set_mode(&sb.ws().join("bin/tool"), 0o755);
    sb.file("bin/private.key", "-----BEGIN-----");
    set_mode(&sb.ws().join("bin/private.key"), 0o600);
    sb.file("bin/nested/deeper/data.bin", &"x".repeat(200_000));
    fs::create_dir_all(sb.ws().join("bin/empty")).unwrap();
    set_mode(&sb.ws().join("bin/nested"), 0o750);
    symlink("tool", sb.ws().join("bin/tool-link")).unwrap();
    symlink("nested/deeper", sb.ws().join("bin/shortcut")).unwrap();
    let long = format!("bin/{}/{}.txt", "l".repeat(90), "m".repeat(90));
    sb.file(&long, "long name");
    symlink(format!("{}/{}.txt", "l".repeat(90), "m".repeat(90)), sb.ws().join("bin/long-link")).unwrap();
    sb.file("not-collected.txt", "no");
}

fn archive(sb: &Sandbox, files: &[PathBuf]) -> (Vec<u8>, runner::artifacts::ArchiveSummary) {
    let mut out = Vec::new();
    let summary = write_archive(&sb.ws(), files, &mut out).unwrap();
    (out, summary)
}

#[test]
fn round_trip_preserves_content_modes_and_symlinks() {
    let src = Sandbox::new();
    build_project(&src);
    let spec = ArtifactSpec { paths: vec!["bin/".into()], ..ArtifactSpec::default() };
    let collected = collect(&src.ws(), &spec).unwrap();
    assert!(collected.warnings.is_empty(), "{:?}", collected.warnings);
    let (tgz, summary) = archive(&src, &collected.files);
    assert_eq!(summary.entries, collected.files.len() as u64);
    assert_eq!(summary.bytes, tgz.len() as u64);
    assert_eq!(summary.sha256, Digest::of(&tgz));
    assert!(summary.warnings.is_empty());

    let dst = Sandbox::new();
    let x = extract(&tgz[..], &dst.ws(), &Limits::default()).unwrap();
    assert_eq!(x.entries, summary.entries);
    assert_eq!((x.symlinks, x.dirs), (3, 5));
    assert_eq!(dst.inside_ws(), {
        let mut want = src.inside_ws();
        want.retain(|p| p != "not-collected.txt");
        want
    });
    for rel in &collected.files {
        let (a, b) = (src.ws().join(rel), dst.ws().join(rel));
        let (ma, mb) = (fs::symlink_metadata(&a).unwrap(), fs::symlink_metadata(&b).unwrap());
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        if ma.is_symlink() {
            assert_eq!(fs::read_link(&a).unwrap(), fs::read_link(&b).unwrap());
        } else {
            assert_eq!(mode_of(&a), mode_of(&b), "mode of {}", rel.display());
        }
        if ma.is_file() {
            assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        }
    }
    assert_eq!(mode_of(&dst.ws().join("bin/tool")), 0o755);
    assert_eq!(mode_of(&dst.ws().join("bin/private.key")), 0o600);
    assert_eq!(fs::read_to_string(dst.ws().join("bin/long-link")).unwrap(), "long name");
}

#[test]
fn archives_are_deterministic() {
    let sb = Sandbox::new();
    build_project(&sb);
    let spec = ArtifactSpec { paths: vec!["bin".into()], ..ArtifactSpec::default() };
    let files = collect(&sb.ws(), &spec).unwrap().files;
    let (first, s1) = archive(&sb, &files);
    // Touch every file: mtimes must not matter. Shuffled and duplicated input must not either.
    for f in &files {
        let p = sb.ws().join(f);
        if fs::symlink_metadata(&p).unwrap().is_file() {
            let data = fs::read(&p).unwrap();
            fs::write(&p, data).unwrap();
        }
    }
    let mut shuffled = files.clone();
    shuffled.reverse();
    shuffled.push(files[0].clone());
    let (second, s2) = archive(&sb, &shuffled);
    assert_eq!(s1.sha256, s2.sha256);
    assert_eq!(first, second);

    let mut ar = tar::Archive::new(decoder(&first[..]).unwrap());
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!((h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (ARCHIVE_MTIME, 0, 0));
        assert_eq!(h.mode().unwrap() & 0o7000, 0);
        names.push(e.path().unwrap().into_owned());
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn special_bits_are_not_archived() {
    let sb = Sandbox::new();
    sb.file("suid", "x");
    set_mode(&sb.ws().join("suid"), 0o4755);
    let (tgz, _) = archive(&sb, &[PathBuf::from("suid")]);
    let mut ar = tar::Archive::new(decoder(&tgz[..]).unwrap());
    let entry = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.header().mode().unwrap(), 0o755);
}

#[test]
fn paths_that_changed_after_collection_are_skipped_not_followed() {
    let sb = Sandbox::new();
    let outside = sb.base().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "TOP SECRET").unwrap();
    sb.file("a.txt", "a");
    sb.file("dir/b.txt", "b");
    sb.file("gone.txt", "c");
    let files = collect(&sb.ws(), &ArtifactSpec { paths: vec!["*".into()], ..ArtifactSpec::default() }).unwrap().files;
    assert_eq!(files.len(), 4);

    // The job (still running) swaps things around before the runner archives.
    fs::remove_file(sb.ws().join("a.txt")).unwrap();
    symlink(outside.join("secret"), sb.ws().join("a.txt")).unwrap();
    fs::rename(sb.ws().join("dir"), sb.ws().join("dir.old")).unwrap();
    symlink(&outside, sb.ws().join("dir")).unwrap();
    fs::write(outside.join("b.txt"), "TOP SECRET").unwrap();
    fs::remove_file(sb.ws().join("gone.txt")).unwrap();

    let (tgz, summary) = archive(&sb, &files);
    let text = {
        use std::io::Read;
        let mut s = Vec::new();
        decoder(&tgz[..]).unwrap().read_to_end(&mut s).unwrap();
        s
    };
    assert!(!text.windows(10).any(|w| w == b"TOP SECRET"), "read through a symlink");
    assert_eq!(
        summary.warnings,
        [
            "`a.txt`: symlink to an absolute path; skipped",
            "`dir`: symlink to an absolute path; skipped",
            "`dir/b.txt`: now goes through a symlink; skipped",
            "`gone.txt`: vanished before archiving; skipped",
        ]
    );
    assert_eq!(summary.entries, 0);
}

#[test]
fn invalid_paths_are_refused() {
    let sb = Sandbox::new();
    for bad in ["../x", "/etc/passwd", "", "."] {
        let err = write_archive(&sb.ws(), &[PathBuf::from(bad)], Vec::new()).unwrap_err();
        assert!(matches!(err, ArtifactError::InvalidPath { .. }), "{bad}: {err:?}");
    }
}

#[test]
fn write_errors_are_reported() {
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sb = Sandbox::new();
    sb.file("big", &"y".repeat(1 << 20));
    let err = write_archive(&sb.ws(), &[PathBuf::from("big")], Full).unwrap_err();
    assert!(matches!(err, ArtifactError::Io { .. } | ArtifactError::Write(_)), "{err:?}");
}

/// Bytes no compressor can shrink (xorshift), deterministic.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn large_and_already_compressed_files_round_trip_and_are_stored_as_they_are() {
    let src = Sandbox::new();
    let text: String = (0..400_000).map(|i| format!("line {i} of a build log\n")).collect();
    src.file("out/build.log", &text);
    let gz = noise(100_000, 7); // stands for a real .gz: only its name says so
    fs::write(src.ws().join("out/bundle.gz"), &gz).unwrap();
    let random = noise(3 << 20, 11); // no telling name: found by the entropy probe
    fs::write(src.ws().join("out/random.bin"), &random).unwrap();
    fs::create_dir_all(src.ws().join("out/empty/dir")).unwrap();
    set_mode(&src.ws().join("out/build.log"), 0o640);
    let files = collect(&src.ws(), &ArtifactSpec { paths: vec!["out".into()], ..ArtifactSpec::default() }).unwrap().files;
    let (archive, summary) = archive(&src, &files);

    assert_eq!(Format::detect(&archive), Some(Format::Zstd));
    // Both incompressible files went into stored frames (with their tar headers), the text not.
    let incompressible = (gz.len() + random.len()) as u64;
    assert!(summary.stored_bytes >= incompressible && summary.stored_bytes < incompressible + 8192, "{summary:?}");
    // Stored means as they are: the .gz (smaller than one 128 KiB raw block) appears verbatim.
    assert!(archive.windows(gz.len()).any(|w| w == gz), "the .gz file was re-encoded");
    // and costs no more than its size plus block headers; the text is compressed.
    assert!((archive.len() as u64) < incompressible + text.len() as u64 / 5, "archive of {} bytes", archive.len());

    let dst = Sandbox::new();
    let x = extract(&archive[..], &dst.ws(), &Limits::default()).unwrap();
    assert_eq!(x.files, 3);
    assert_eq!(fs::read(dst.ws().join("out/bundle.gz")).unwrap(), gz);
    assert_eq!(fs::read(dst.ws().join("out/random.bin")).unwrap(), random);
    assert_eq!(fs::read_to_string(dst.ws().join("out/build.log")).unwrap(), text);
    assert_eq!(mode_of(&dst.ws().join("out/build.log")), 0o640);
    assert!(dst.ws().join("out/empty/dir").is_dir());
}

#[test]
fn archives_open_with_debian_tar_and_zstd() {
    let src = Sandbox::new();
    build_project(&src);
    fs::write(src.ws().join("bin/blob.zip"), noise(300_000, 3)).unwrap();
    let files = collect(&src.ws(), &ArtifactSpec { paths: vec!["bin".into()], ..ArtifactSpec::default() }).unwrap().files;
    let (archive, summary) = archive(&src, &files);
    assert!(summary.stored_bytes > 300_000);
    let path = src.base().join("a.tar.zst");
    fs::write(&path, &archive).unwrap();
    let dst = Sandbox::new();
    let out = std::process::Command::new("tar")
        .args(["--zstd", "-xf"])
        .arg(&path)
        .arg("-C")
        .arg(dst.ws())
        .output()
        .expect("`tar` must be installed (scripts/deps.sh)");
    assert!(out.status.success(), "tar --zstd -xf: {}", String::from_utf8_lossy(&out.stderr));
    for rel in ["bin/tool", "bin/nested/deeper/data.bin", "bin/blob.zip"] {
        assert_eq!(fs::read(dst.ws().join(rel)).unwrap(), fs::read(src.ws().join(rel)).unwrap(), "{rel}");
    }
    assert_eq!(fs::read_link(dst.ws().join("bin/tool-link")).unwrap(), PathBuf::from("tool"));
    assert_eq!(mode_of(&dst.ws().join("bin/tool")), 0o755);
    let test =
        std::process::Command::new("zstd").args(["-t", "-q"]).arg(&path).output().expect("`zstd` must be installed (scripts/deps.sh)");
    assert!(test.status.success(), "zstd -t: {}", String::from_utf8_lossy(&test.stderr));
}

#[test]
fn gzip_archives_from_before_zstd_still_extract() {
    let src = Sandbox::new();
    build_project(&src);
    // What piste wrote before: the same tar, in gzip.
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all("bin", src.ws().join("bin")).unwrap();
    let tgz = crate::gzip(&builder.into_inner().unwrap());
    assert_eq!(Format::detect(&tgz), Some(Format::Gzip));
    let dst = Sandbox::new();
    let x = extract(&tgz[..], &dst.ws(), &Limits::default()).unwrap();
    assert!(x.files >= 4, "{x:?}");
    assert_eq!(
        fs::read(dst.ws().join("bin/nested/deeper/data.bin")).unwrap(),
        fs::read(src.ws().join("bin/nested/deeper/data.bin")).unwrap()
    );
    assert_eq!(fs::read_link(dst.ws().join("bin/tool-link")).unwrap(), PathBuf::from("tool"));
}
