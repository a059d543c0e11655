//! Per-job checkout cost: a reused slot (`GIT_STRATEGY: fetch`, the default) against a fresh
//! slot (`clone`, still through alternates) and a plain git2 clone, for a 20-file repository.
//! The target: 50 chained trivial jobs in under 250 ms, so about 1 ms per checkout.

use std::fs;
use std::path::Path;

use git2::{Repository, Signature};
use runner::workspace::{CheckoutSpec, GitStrategy, Workspaces};

fn main() {
    divan::main();
}

/// A repository of 20 small files in a few directories with two commits; returns the shas.
fn fixture(dir: &Path) -> (String, String) {
    let repo = Repository::init(dir).unwrap();
    let sig = Signature::now("bench", "bench@example.com").unwrap();
    let mut shas = Vec::new();
    for round in 0..2 {
        for i in 0..20 {
            let path = dir.join(format!("dir{}/file{i}.txt", i % 4));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, format!("round {round} file {i}\n").repeat(20)).unwrap();
        }
        fs::write(dir.join(".gitignore"), "target/\n").unwrap();
        let mut index = repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let parents: Vec<git2::Commit> = repo.head().ok().and_then(|h| h.peel_to_commit().ok()).into_iter().collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        let id = repo.commit(Some("HEAD"), &sig, &sig, "bench", &tree, &parents).unwrap();
        shas.push(id.to_string());
    }
    (shas[0].clone(), shas[1].clone())
}

struct Setup {
    _dir: tempfile::TempDir,
    repo: std::path::PathBuf,
    ws: Workspaces,
    first: String,
    second: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("app");
    fs::create_dir(&repo).unwrap();
    let (first, second) = fixture(&repo);
    let ws = Workspaces::new(&repo, &repo.join(".piste/builds")).unwrap();
    Setup { _dir: dir, repo, ws, first, second }
}

/// The 50-chained-jobs case: the next job of a pipeline at the same commit, after a job that
/// changed nothing (`script: true`).
#[divan::bench]
fn prepare_unchanged_slot(b: divan::Bencher) {
    let s = setup();
    let spec = CheckoutSpec::new(s.second.clone());
    s.ws.prepare(0, &spec).unwrap();
    b.bench_local(|| s.ws.prepare(0, &spec).unwrap());
}

/// The next job at the same commit after a job that left outputs (an ignored build
/// directory, an untracked file) and edited and deleted tracked files; the mess is made
/// outside the timed part.
#[divan::bench(sample_size = 1)]
fn prepare_after_messy_job(b: divan::Bencher) {
    let s = setup();
    let spec = CheckoutSpec::new(s.second.clone());
    let dir = s.ws.prepare(0, &spec).unwrap();
    b.with_inputs(|| {
        fs::create_dir_all(dir.join("target")).unwrap();
        fs::write(dir.join("target/out.bin"), b"job output").unwrap();
        fs::write(dir.join("report.txt"), b"job output").unwrap();
        fs::write(dir.join("dir0/file0.txt"), b"edited by the job").unwrap();
        fs::remove_file(dir.join("dir1/file1.txt")).unwrap();
    })
    .bench_local_values(|()| s.ws.prepare(0, &spec).unwrap());
}

/// Alternating between two commits that differ in every file.
#[divan::bench]
fn prepare_switching_commits(b: divan::Bencher) {
    let s = setup();
    let specs = [CheckoutSpec::new(s.first.clone()), CheckoutSpec::new(s.second.clone())];
    let mut n = 0usize;
    b.bench_local(|| {
        n += 1;
        s.ws.prepare(0, &specs[n % 2]).unwrap()
    });
}

/// `GIT_STRATEGY: clone`: the slot is recreated (git init + alternates + full checkout).
#[divan::bench]
fn prepare_fresh_slot(b: divan::Bencher) {
    let s = setup();
    let spec = CheckoutSpec { strategy: GitStrategy::Clone, ..CheckoutSpec::new(s.second.clone()) };
    b.bench_local(|| s.ws.prepare(0, &spec).unwrap());
}

/// What a naive design costs per job: a git2 clone of the source.
#[divan::bench(sample_count = 20)]
fn git2_clone(b: divan::Bencher) {
    let s = setup();
    let url = s.repo.to_str().unwrap().to_owned();
    let mut n = 0usize;
    b.bench_local(|| {
        n += 1;
        let into = s.repo.join(format!(".piste/clones/{n}"));
        Repository::clone(&url, &into).unwrap()
    });
}
