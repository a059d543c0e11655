//! Hostile archives: every one is refused, names the entry, and writes nothing outside `dest`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use runner::artifacts::{ArtifactError, Limits, extract};
use tar::EntryType;

use crate::{RawTar, Sandbox, mode_of};

/// Extracts into `ws/`, expects a refusal naming `entry`, and checks that nothing appeared
/// beside `ws/` (where `victim/` is the only thing the test put there).
fn refused(sb: &Sandbox, archive: &[u8], entry: &str) -> ArtifactError {
    let err = extract(archive, &sb.ws(), &Limits::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("`{entry}`")), "error does not name `{entry}`: {msg}");
    let outside: Vec<String> = sb.outside_ws().into_iter().filter(|p| p != "victim" && p != "victim/file").collect();
    assert_eq!(outside, Vec::<String>::new(), "written outside dest");
    if sb.base().join("victim/file").exists() {
        assert_eq!(fs::read_to_string(sb.base().join("victim/file")).unwrap(), "original");
    }
    let leftovers: Vec<String> = sb.inside_ws().into_iter().filter(|p| p.contains(".piste-")).collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    err
}

fn unsafe_reason(err: &ArtifactError) -> &str {
    match err {
        ArtifactError::Unsafe { reason, .. } => reason,
        other => panic!("expected an Unsafe refusal, got {other:?}"),
    }
}

fn victim(sb: &Sandbox) -> String {
    let dir = sb.base().join("victim");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("file"), "original").unwrap();
    dir.display().to_string()
}

#[test]
fn parent_dir_components() {
    let sb = Sandbox::new();
    let tgz = RawTar::new().file("ok", "fine").file("../escaped", "x").gz();
    let err = refused(&sb, &tgz, "../escaped");
    assert_eq!(unsafe_reason(&err), "`..` path component");
    assert!(sb.ws().join("ok").exists(), "entries before the bad one are kept");
    for name in ["a/../../escaped", "./../escaped", "a/b/../../../escaped"] {
        let sb = Sandbox::new();
        refused(&sb, &RawTar::new().file(name, "x").gz(), name);
    }
}

#[test]
fn absolute_paths() {
    let sb = Sandbox::new();
    let abs = format!("{}/escaped", sb.base().display());
    let err = refused(&sb, &RawTar::new().file(&abs, "x").gz(), &abs);
    assert_eq!(unsafe_reason(&err), "absolute path");
    let sb = Sandbox::new();
    refused(&sb, &RawTar::new().dir("/").file("/tmp-piste-test-abs", "x").gz(), "/");
}

#[test]
fn symlink_to_absolute_dir_then_file_through_it() {
    let sb = Sandbox::new();
    victim(&sb);
    let target = format!("{}/victim", sb.base().display());
    let tgz = RawTar::new().symlink("link", &target).file("link/file", "pwned").gz();
    let err = refused(&sb, &tgz, "link");
    assert_eq!(unsafe_reason(&err), "symlink to an absolute path");
    assert!(!sb.ws().join("link").exists());
}

#[test]
fn symlink_to_etc_then_passwd() {
    // The classic shape, aimed at a name that does not exist under /etc so that even a broken
    // extractor would not damage the machine running the tests.
    let sb = Sandbox::new();
    let probe = "piste-extract-escape-probe";
    let tgz = RawTar::new().symlink("etc", "/etc").file(&format!("etc/{probe}"), "pwned").gz();
    refused(&sb, &tgz, "etc");
    let escaped = Path::new("/etc").join(probe);
    let existed = escaped.exists();
    let _ = fs::remove_file(&escaped);
    assert!(!existed, "wrote through the symlink into /etc");
}

#[test]
fn two_step_escape_through_an_inside_symlink() {
    // The symlink itself is harmless (it points inside), but nothing is written through it.
    let sb = Sandbox::new();
    let tgz = RawTar::new().dir("sub").symlink("link", "sub").file("link/file", "x").gz();
    let err = refused(&sb, &tgz, "link/file");
    assert!(unsafe_reason(&err).contains("`link` is a symlink"), "{err}");
    assert_eq!(fs::read_link(sb.ws().join("link")).unwrap(), Path::new("sub"));
    assert!(!sb.ws().join("sub/file").exists());
}

#[test]
fn escape_through_a_symlink_already_in_dest() {
    let sb = Sandbox::new();
    let target = victim(&sb);
    symlink(&target, sb.ws().join("evil")).unwrap();
    let err = refused(&sb, &RawTar::new().file("evil/file", "pwned").gz(), "evil/file");
    assert!(unsafe_reason(&err).contains("`evil` is a symlink"), "{err}");
    let err = refused(&sb, &RawTar::new().dir("evil/sub").gz(), "evil/sub");
    assert!(unsafe_reason(&err).contains("symlink"), "{err}");
    let err = refused(&sb, &RawTar::new().dir("evil").gz(), "evil");
    assert!(unsafe_reason(&err).contains("symlink"), "{err}");
}

#[test]
fn file_replaces_an_existing_symlink_instead_of_writing_through_it() {
    let sb = Sandbox::new();
    let target = victim(&sb);
    symlink(format!("{target}/file"), sb.ws().join("f")).unwrap();
    extract(&RawTar::new().file("f", "new content").gz()[..], &sb.ws(), &Limits::default()).unwrap();
    assert!(fs::symlink_metadata(sb.ws().join("f")).unwrap().is_file());
    assert_eq!(fs::read_to_string(sb.ws().join("f")).unwrap(), "new content");
    assert_eq!(fs::read_to_string(sb.base().join("victim/file")).unwrap(), "original");
}

#[test]
fn symlinks_climbing_out() {
    for (name, target) in [("a", "../../.."), ("a", ".."), ("deep/er/a", "../../../x"), ("b", "sub/../../x"), ("c", "")] {
        let sb = Sandbox::new();
        let err = refused(&sb, &RawTar::new().symlink(name, target).gz(), name);
        assert!(unsafe_reason(&err).contains("symlink"), "{name} -> {target}: {err}");
        assert!(fs::symlink_metadata(sb.ws().join(name)).is_err(), "{name} was created");
    }
}

#[test]
fn hard_links_are_refused() {
    let sb = Sandbox::new();
    let tgz = RawTar::new().entry(EntryType::Link, b"pw", b"/etc/passwd", 0o644, b"").gz();
    let err = refused(&sb, &tgz, "pw");
    assert_eq!(unsafe_reason(&err), "hard links are not extracted");
    assert!(!sb.ws().join("pw").exists());
    let sb = Sandbox::new();
    let tgz = RawTar::new().file("a", "x").entry(EntryType::Link, b"b", b"a", 0o644, b"").gz();
    refused(&sb, &tgz, "b");
}

#[test]
fn devices_and_fifos_are_refused() {
    for (kind, reason) in [(EntryType::Char, "device file"), (EntryType::Block, "device file"), (EntryType::Fifo, "fifo")] {
        let sb = Sandbox::new();
        let err = refused(&sb, &RawTar::new().entry(kind, b"dev", b"", 0o666, b"").gz(), "dev");
        assert_eq!(unsafe_reason(&err), reason);
        assert!(fs::symlink_metadata(sb.ws().join("dev")).is_err());
    }
}

#[test]
fn pax_and_gnu_long_names_are_checked_too() {
    let sb = Sandbox::new();
    let tgz = RawTar::new().pax(&[("path", "../pax-escaped")]).file("innocent", "x").gz();
    refused(&sb, &tgz, "../pax-escaped");
    assert!(!sb.ws().join("innocent").exists());

    let sb = Sandbox::new();
    let long = format!("../{}", "n".repeat(150));
    let mut raw = RawTar::new();
    raw.entry(EntryType::GNULongName, b"././@LongLink", b"", 0o644, long.as_bytes());
    raw.file("short", "x");
    refused(&sb, &raw.gz(), &long);

    let sb = Sandbox::new();
    let deep = "d/".repeat(3000);
    let err = extract(&RawTar::new().pax(&[("path", &deep)]).dir("x").gz()[..], &sb.ws(), &Limits::default()).unwrap_err();
    assert_eq!(unsafe_reason(&err), "path longer than 4096 bytes");
    assert!(sb.inside_ws().is_empty());

    let sb = Sandbox::new();
    let tgz = RawTar::new().pax(&[("linkpath", "/etc")]).symlink("l", "fine").gz();
    let err = refused(&sb, &tgz, "l");
    assert_eq!(unsafe_reason(&err), "symlink to an absolute path");
}

#[test]
fn pax_long_names_are_honoured() {
    let sb = Sandbox::new();
    let long = format!("{}/file", "d".repeat(120));
    let tgz = RawTar::new().pax(&[("path", &long), ("mtime", "1")]).file("short", "data").gz();
    let summary = extract(&tgz[..], &sb.ws(), &Limits::default()).unwrap();
    assert_eq!(summary.files, 1);
    assert_eq!(fs::read_to_string(sb.ws().join(&long)).unwrap(), "data");
    assert!(!sb.ws().join("short").exists());
}

#[test]
fn setuid_and_sticky_bits_are_stripped() {
    let sb = Sandbox::new();
    let tgz = RawTar::new()
        .entry(EntryType::Regular, b"suid", b"", 0o6755, b"#!/bin/sh\n")
        .entry(EntryType::Directory, b"sticky", b"", 0o1777, b"")
        .entry(EntryType::Directory, b"readonly", b"", 0o555, b"")
        .entry(EntryType::Regular, b"readonly/f", b"", 0o400, b"x")
        .gz();
    extract(&tgz[..], &sb.ws(), &Limits::default()).unwrap();
    assert_eq!(mode_of(&sb.ws().join("suid")), 0o755);
    assert_eq!(mode_of(&sb.ws().join("sticky")), 0o777);
    assert_eq!(mode_of(&sb.ws().join("readonly")), 0o755);
    assert_eq!(mode_of(&sb.ws().join("readonly/f")), 0o400);
}

#[test]
fn gzip_bomb_stops_at_the_entry_limit() {
    // 64 MiB of zeros compresses to about 64 KiB.
    let zeros = vec![0u8; 64 << 20];
    let tgz = RawTar::new().file("small", "x").entry(EntryType::Regular, b"bomb", b"", 0o644, &zeros).gz();
    assert!(tgz.len() < 1 << 20);
    let sb = Sandbox::new();
    let limits = Limits { max_entry_bytes: 1 << 20, ..Limits::default() };
    let err = extract(&tgz[..], &sb.ws(), &limits).unwrap_err();
    assert!(matches!(err, ArtifactError::Limit { what: "bytes in one file", .. }), "{err:?}");
    assert!(err.to_string().contains("`bomb`"), "{err}");
    assert!(!sb.ws().join("bomb").exists());
    assert_eq!(sb.inside_ws(), ["small"]);
}

#[test]
fn total_and_entry_count_limits() {
    let mut raw = RawTar::new();
    for i in 0..10 {
        raw.entry(EntryType::Regular, format!("f{i}").as_bytes(), b"", 0o644, &[b'x'; 1000]);
    }
    let tgz = raw.gz();

    let sb = Sandbox::new();
    let limits = Limits { max_total_bytes: 4500, ..Limits::default() };
    let err = extract(&tgz[..], &sb.ws(), &limits).unwrap_err();
    assert!(matches!(err, ArtifactError::Limit { what: "bytes in total", limit: 4500, .. }), "{err:?}");
    assert!(err.to_string().contains("`f4`"), "{err}");
    assert_eq!(sb.inside_ws().len(), 4);

    let sb = Sandbox::new();
    let limits = Limits { max_entries: 3, ..Limits::default() };
    let err = extract(&tgz[..], &sb.ws(), &limits).unwrap_err();
    assert!(matches!(err, ArtifactError::Limit { what: "entries", limit: 3, .. }), "{err:?}");
    assert_eq!(sb.inside_ws().len(), 3);

    let sb = Sandbox::new();
    let exact = Limits { max_entries: 10, max_total_bytes: 10_000, max_entry_bytes: 1000 };
    let summary = extract(&tgz[..], &sb.ws(), &exact).unwrap();
    assert_eq!((summary.entries, summary.files, summary.bytes), (10, 10, 10_000));
}

#[test]
fn oversized_extension_headers_are_refused_before_reading() {
    let sb = Sandbox::new();
    let huge = vec![b'a'; 1 << 20];
    let mut raw = RawTar::new();
    raw.entry(EntryType::GNULongName, b"././@LongLink", b"", 0o644, &huge).file("x", "y");
    let err = extract(&raw.gz()[..], &sb.ws(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArtifactError::Unsafe { .. }), "{err:?}");
    assert!(err.to_string().contains("extension header larger than"), "{err}");
}

#[test]
fn non_file_entries_carrying_data_are_refused() {
    // A directory header that claims a terabyte would otherwise make us skip a terabyte.
    let sb = Sandbox::new();
    let tgz = RawTar::new().entry_sized(EntryType::Directory, b"d", b"", 0o755, 1 << 40, b"").gz();
    let err = extract(&tgz[..], &sb.ws(), &Limits::default()).unwrap_err();
    assert_eq!(unsafe_reason(&err), "non-file entry carrying data");
}

#[test]
fn corrupt_and_truncated_archives() {
    let sb = Sandbox::new();
    let err = extract(&b"definitely not gzip"[..], &sb.ws(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err:?}");

    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(10_000);
        h.set_cksum();
        b.append_data(&mut h, "big", &[7u8; 10_000][..]).unwrap();
        b.into_inner().unwrap()
    };
    let truncated = crate::gzip(&tar[..3000]);
    let err = extract(&truncated[..], &sb.ws(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err:?}");
    assert!(!sb.ws().join("big").exists(), "partial file left behind");
    assert!(sb.inside_ws().is_empty(), "{:?}", sb.inside_ws());

    let mut bad_sum = tar.clone();
    bad_sum[0] ^= 1;
    let err = extract(&crate::gzip(&bad_sum)[..], &sb.ws(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err:?}");
}

#[test]
fn directory_where_a_file_goes_is_refused() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.ws().join("taken/inner")).unwrap();
    let err = extract(&RawTar::new().file("taken", "x").gz()[..], &sb.ws(), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("`taken`"), "{err}");
    assert!(sb.ws().join("taken/inner").is_dir());
    let err =
        extract(&RawTar::new().file("taken/inner/f", "x").file("taken/inner/f/g", "y").gz()[..], &sb.ws(), &Limits::default()).unwrap_err();
    assert!(unsafe_reason(&err).contains("not a directory"), "{err}");
}

/// An artifact carrying `.git/config` once set `core.fsmonitor` in a later job's checkout, which
/// git then ran: no entry with a `.git` component is written, at any depth, in any case.
#[test]
fn git_metadata_is_never_written() {
    for name in [".git/config", "./.git/hooks/post-checkout", "sub/.git/config", ".GIT/config", ".git"] {
        let sb = Sandbox::new();
        let tgz = RawTar::new().file("ok", "fine").file(name, "[core]\n\tfsmonitor = touch /tmp/pwned\n").gz();
        let err = refused(&sb, &tgz, name);
        assert!(unsafe_reason(&err).contains("`.git`"), "{name}: {err}");
        assert!(!sb.ws().join(".git").exists() && !sb.ws().join("sub/.git").exists() && !sb.ws().join(".GIT").exists(), "{name}");
    }
    let sb = Sandbox::new();
    let tgz = RawTar::new().file(".gitignore", "x").file("a.git/file", "y").file(".github/ci.yml", "z").gz();
    extract(&tgz[..], &sb.ws(), &Limits::default()).expect("names that only look like `.git` are fine");
}

#[test]
fn zstd_archives_get_the_same_checks() {
    let sb = Sandbox::new();
    let err = extract(&RawTar::new().file("../evil", "x").zst()[..], &sb.ws(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArtifactError::Unsafe { .. }), "{err:?}");
    let err = extract(&RawTar::new().file(".git/config", "x").zst()[..], &sb.ws(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArtifactError::Unsafe { .. }), "{err:?}");
    let archive = RawTar::new().file("big", &"z".repeat(100_000)).zst();
    let err = extract(&archive[..archive.len() - 8], &sb.ws(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err:?}");
    assert!(sb.inside_ws().is_empty(), "{:?}", sb.inside_ws());
}
