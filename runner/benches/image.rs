//! Image builds against Debian's `docker-registry` on loopback (`make bench-image`):
//! - pushing a 200 MiB image (4 × 50 MiB incompressible files, `FROM scratch`) with piste
//!   vs `skopeo copy` of the same blobs (an OCI layout written from piste's layers) to a
//!   fresh registry, in the same run;
//! - re-pushing it (every blob present);
//! - assembling a 1 GiB layer (text-like data, gzip level 1) vs `gzip -1` of the same bytes.
//!
//! Each figure is the median of `RUNS` runs; all on this machine, one after the other.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runner::joblog::LogWriter;
use runner::oci::build::{BuildRequest, assemble};
use runner::oci::dockerfile;
use runner::oci::layer::{self, Entry, Kind};
use runner::oci::leak::Scanner;
use runner::oci::push::{Registries, push_image};
use runner::oci::reference::Reference;
use runner::oci::registry::{Client, RegistryOptions};

const RUNS: usize = 3;
const MIB: u64 = 1 << 20;

struct Registry {
    host: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package `docker-registry`)");
        let reg = Registry { host, child, _dir: dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(&reg.host).is_ok() {
                return reg;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not start on {}", reg.host);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `len` bytes from a xorshift generator: incompressible, like most of an image's binaries.
fn random_file(path: &Path, len: u64, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..len / MIB {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
}

/// `len` bytes of text-like data (words from a small vocabulary): compresses about 3:1.
fn text_file(path: &Path, len: u64) {
    let words: Vec<String> =
        (0..4096u64).map(|i| format!("w{:x}{}", i * 2654435761 % 100_000, "abcdefgh".repeat((i % 3) as usize))).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 88172645463325252u64;
    let mut written = 0u64;
    while written < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = &words[(x % 4096) as usize];
        f.write_all(w.as_bytes()).unwrap();
        f.write_all(if x % 11 == 0 { b"\n" } else { b" " }).unwrap();
        written += w.len() as u64 + 1;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = tempfile::tempdir_in(std::env::var_os("PISTE_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into_os_string())).unwrap();
    let ctx = root.path().join("ctx");
    std::fs::create_dir_all(ctx.join("data")).unwrap();
    for i in 0..4 {
        random_file(&ctx.join(format!("data/part{i}.bin")), 50 * MIB, 1000 + i);
    }
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY data /data\n").unwrap();
    let file = dockerfile::parse(&std::fs::read_to_string(ctx.join("Dockerfile")).unwrap()).unwrap();
    let (log, mut rx) = LogWriter::channel(1024);
    rt.spawn(async move { while rx.recv().await.is_some() {} });

    let mut assemble_t = Vec::new();
    let mut push_t = Vec::new();
    let mut repush_t = Vec::new();
    let mut skopeo_t = Vec::new();
    let mut skopeo_repush_t = Vec::new();
    for run in 0..RUNS {
        let piste_reg = Registry::start();
        let skopeo_reg = Registry::start();
        let req = BuildRequest {
            context: ctx.clone(),
            dockerfile: "Dockerfile".into(),
            destinations: vec![format!("{}/bench/piste:1", piste_reg.host)],
            source_date_epoch: 1_700_000_000,
            scratch: root.path().join("scratch"),
            ..BuildRequest::default()
        };
        let work = root.path().join(format!("work{run}"));
        std::fs::create_dir_all(&work).unwrap();
        rt.block_on(async {
            let regs = Registries::new(Client::new(RegistryOptions::default(), log.clone()).unwrap());
            let t = Instant::now();
            let image = assemble(&req, &file, &ctx.join("Dockerfile"), &regs, &work, &log).await.unwrap();
            assemble_t.push(t.elapsed());
            let dests = vec![Reference::parse(&req.destinations[0]).unwrap()];
            let t = Instant::now();
            push_image(&regs, &image, &dests, &log).await.unwrap();
            push_t.push(t.elapsed());
            let t = Instant::now();
            push_image(&regs, &image, &dests, &log).await.unwrap();
            repush_t.push(t.elapsed());

            // The same blobs as an OCI layout, for skopeo.
            let layout = work.join("layout");
            let blobs = layout.join("blobs/sha256");
            std::fs::create_dir_all(&blobs).unwrap();
            std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
            let mut layers = Vec::new();
            for l in &image.layers {
                if let runner::oci::build::LayerSource::File(p) = &l.source {
                    std::fs::hard_link(p, blobs.join(l.desc.digest.trim_start_matches("sha256:"))).unwrap();
                }
                layers.push(l.desc.clone());
            }
            let config_digest = runner::oci::registry::sha256_digest(&image.config);
            std::fs::write(blobs.join(config_digest.trim_start_matches("sha256:")), &image.config).unwrap();
            let manifest = runner::oci::image::Manifest::oci(
                runner::oci::image::Descriptor {
                    media_type: runner::oci::image::media::OCI_CONFIG.into(),
                    digest: config_digest,
                    size: image.config.len() as u64,
                    platform: None,
 artifact_type: None,
                    annotations: Default::default(),
                },
                layers,
            )
            .to_bytes();
            let md = runner::oci::registry::sha256_digest(&manifest);
            std::fs::write(blobs.join(md.trim_start_matches("sha256:")), &manifest).unwrap();
            let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": runner::oci::image::media::OCI_MANIFEST, "digest": md, "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "bench"}}]});
            std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
            for times in [&mut skopeo_t, &mut skopeo_repush_t] {
                let t = Instant::now();
                let status = Command::new("skopeo")
                    .args(["copy", "--quiet", "--dest-tls-verify=false"])
                    .arg(format!("oci:{}:bench", layout.display()))
                    .arg(format!("docker://{}/bench/skopeo:1", skopeo_reg.host))
                    .status()
                    .expect("skopeo (Debian package `skopeo`)");
                times.push(t.elapsed());
                assert!(status.success());
            }
        });
        std::fs::remove_dir_all(&work).unwrap();
    }
    println!("| what | measured (median of {RUNS}) |");
    println!("|---|---|");
    println!("| assemble the 200 MiB image (one layer, gzip -1) | {} |", secs(median(assemble_t)));
    println!("| push it to a fresh local registry: piste | {} |", secs(median(push_t)));
    println!("| same blobs, `skopeo copy oci:… docker://…` to a fresh registry | {} |", secs(median(skopeo_t)));
    println!("| re-push (every blob present): piste | {} |", secs(median(repush_t)));
    println!("| re-push: skopeo | {} |", secs(median(skopeo_repush_t)));

    // 1 GiB layer vs gzip -1.
    let big = root.path().join("big.txt");
    text_file(&big, 1024 * MIB);
    let size = std::fs::metadata(&big).unwrap().len();
    let scanner = Scanner::new(&["s3cr3t-token-value-1".to_owned(), "another-masked-secret".to_owned()]);
    let mut ours = Vec::new();
    let mut scanned = Vec::new();
    let mut gzip = Vec::new();
    let mut ratio = 0.0;
    for _ in 0..RUNS {
        let out = root.path().join("big.tar.gz");
        for (times, scan) in [(&mut ours, None), (&mut scanned, scanner.as_ref())] {
            let mut entries =
                vec![Entry { path: "big.txt".into(), kind: Kind::File { source: big.clone(), size }, mode: 0o644, uid: 0, gid: 0 }];
            let t = Instant::now();
            let w = layer::write(&mut entries, 1_700_000_000, &out, scan, "bench").unwrap();
            times.push(t.elapsed());
            ratio = w.size as f64 / size as f64;
        }
        let t = Instant::now();
        let status = Command::new("sh").arg("-c").arg(format!("gzip -1 -c '{}' > '{}'", big.display(), out.display())).status().unwrap();
        gzip.push(t.elapsed());
        assert!(status.success());
    }
    let rate = |d: Duration| format!("{:.0} MB/s", size as f64 / d.as_secs_f64() / 1e6);
    let (o, s, g) = (median(ours), median(scanned), median(gzip));
    println!("| 1 GiB layer (text, {:.0}% after gzip): piste tar+gzip+2×SHA-256 | {} ({}) |", ratio * 100.0, secs(o), rate(o));
    println!("| same, with the leak scanner on (2 masked values) | {} ({}) |", secs(s), rate(s));
    println!("| `gzip -1` of the same bytes | {} ({}) |", secs(g), rate(g));
    println!(
        "| piste / gzip -1 speed | {:.0}% (scanner on: {:.0}%) |",
        g.as_secs_f64() / o.as_secs_f64() * 100.0,
        g.as_secs_f64() / s.as_secs_f64() * 100.0
    );
}
