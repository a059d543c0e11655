//! Archiving at disk speed (issue 12): 1 GiB of incompressible files and 1 GiB of text through
//! piste's archiver and extractor, against `zstd -1` and `gzip -1` on the same bytes (a tar of
//! the same files), all in one run so the ratios hold on a noisy machine. Peak memory is the
//! process's high-water mark (`VmHWM`): it must stay flat, whatever the data size.
//!
//! Run: `cargo bench -p runner --bench archive` (`PISTE_BENCH_MIB=256` for a smaller run).
//! Needs `tar`, `zstd` and `gzip` on PATH (scripts/deps.sh) and about 5 GiB free in the temp dir.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use runner::artifacts::{Limits, extract, write_archive};

const FILE_MIB: usize = 4;

fn main() {
    let total_mib: usize = std::env::var("PISTE_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let work = tempfile::tempdir().expect("a temp dir");
    println!("archiving {total_mib} MiB per row, files of {FILE_MIB} MiB; ratios within this run (shared machine: expect noise)");
    println!(
        "{:<14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>9} {:>10}",
        "data", "piste MB/s", "zstd -1 MB/s", "gzip -1 MB/s", "piste/zstd", "extract MB/s", "ratio", "peak MiB"
    );
    for kind in [Kind::Incompressible, Kind::Text] {
        let dir = work.path().join(kind.name());
        let files = generate(&dir, kind, total_mib);
        let bytes = (total_mib * 1024 * 1024) as f64;
        let tar = work.path().join("input.tar");
        run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&dir).arg("."));

        let archive = work.path().join("out.tar.zst");
        settle();
        let start = Instant::now();
        let out = BufWriter::with_capacity(256 * 1024, File::create(&archive).unwrap());
        let summary = write_archive(&dir, &files, out).expect("archive");
        let piste = mbps(bytes, start);

        settle();
        let start = Instant::now();
        run(Command::new("zstd").args(["-1", "-q", "-f"]).arg(&tar).arg("-o").arg(work.path().join("cli.zst")));
        let zstd = mbps(bytes, start);
        settle();
        let start = Instant::now();
        let gz = File::create(work.path().join("cli.gz")).unwrap();
        run(Command::new("gzip").args(["-1", "-c"]).arg(&tar).stdout(gz));
        let gzip = mbps(bytes, start);

        let dest = work.path().join("extracted");
        settle();
        let start = Instant::now();
        extract(File::open(&archive).unwrap(), &dest, &Limits::default()).expect("extract");
        let extracted = mbps(bytes, start);

        println!(
            "{:<14} {piste:>14.0} {zstd:>14.0} {gzip:>14.0} {:>13.0}% {extracted:>14.0} {:>9.3} {:>10.1}",
            kind.name(),
            100.0 * piste / zstd,
            summary.bytes as f64 / bytes,
            peak_mib()
        );
        for p in [&dir, &dest] {
            fs::remove_dir_all(p).unwrap();
        }
        for f in ["input.tar", "out.tar.zst", "cli.zst", "cli.gz"] {
            fs::remove_file(work.path().join(f)).unwrap();
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Incompressible,
    Text,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Incompressible => "incompressible",
            Kind::Text => "text",
        }
    }
}

/// Writes `total_mib` MiB in files of [`FILE_MIB`] MiB under `dir`, streaming (flat memory).
/// Incompressible files carry no telling extension: the entropy probe has to find them.
fn generate(dir: &Path, kind: Kind, total_mib: usize) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut files = Vec::new();
    for i in 0..total_mib / FILE_MIB {
        let rel = PathBuf::from(format!("d{}/f{i}.{}", i % 8, if matches!(kind, Kind::Text) { "log" } else { "bin" }));
        fs::create_dir_all(dir.join(&rel).parent().unwrap()).unwrap();
        let mut out = BufWriter::new(File::create(dir.join(&rel)).unwrap());
        let mut left = FILE_MIB * 1024 * 1024;
        let mut line = 0u64;
        while left > 0 {
            let chunk: Vec<u8> = match kind {
                Kind::Incompressible => (0..8192)
                    .flat_map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed.to_le_bytes()
                    })
                    .collect(),
                Kind::Text => {
                    line += 1;
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    format!(
                        "2026-12-05T12:{:02}:{:02}.{:03}Z INFO job {} step {}: compiled `crate_{}` in {} ms ({} warnings)\n",
                        (seed >> 8) % 60,
                        (seed >> 16) % 60,
                        (seed >> 24) % 1000,
                        i,
                        line,
                        (seed >> 32) % 500,
                        (seed >> 40) % 10_000,
                        (seed >> 56) % 4
                    )
                    .into_bytes()
                }
            };
            let n = chunk.len().min(left);
            out.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        out.flush().unwrap();
        files.push(rel);
    }
    files
}

/// Writes back the dirty pages the previous step left, so that no step pays for another's
/// writes (each still pays for its own, as a job would).
fn settle() {
    run(&mut Command::new("sync"));
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/deps.sh installs tar, zstd, gzip)"));
    assert!(status.success(), "{cmd:?} failed");
}

fn mbps(bytes: f64, start: Instant) -> f64 {
    bytes / 1e6 / start.elapsed().as_secs_f64()
}

/// The process's peak resident memory so far, in MiB.
fn peak_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}
