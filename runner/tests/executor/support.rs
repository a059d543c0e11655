//! Harness: a temp workspace per job, a run helper that collects the streamed output, and the
//! test images, built once from Debian's `busybox-static` through the Docker API.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::body_full;
use bollard::query_parameters::{CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use futures_util::StreamExt;
use runner::executor::{CHUNK_SIZE, DockerExecutor, Executor, JobReport, JobRequest, ShellExecutor, labels};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// Plain busybox: `sh` and the applets on `PATH`, `/www/index.html`, nothing exposed.
pub const IMAGE: &str = "piste-test/busybox:1";
/// Same files; runs `httpd` on port 8080, which it declares with `EXPOSE`.
pub const WEB_IMAGE: &str = "piste-test/busybox-web:1";
/// Same files; `ENTRYPOINT ["env", "FROM_ENTRYPOINT=yes"]`, which then runs the command.
pub const ENTRYPOINT_IMAGE: &str = "piste-test/busybox-entrypoint:1";
/// Content of `/www/index.html` in the test images.
pub const WEB_PAGE: &str = "hello from the service";

const BUSYBOX: &str = "/bin/busybox";

/// A job to run and the workspace it runs in.
pub struct Job {
    pub req: JobRequest,
    pub dir: TempDir,
}

impl Job {
    /// A job running `script` with a fresh workspace, a 30 s timeout and a 10 s after_script
    /// timeout; the id is unique to this test process.
    pub fn new(name: &str, script: &[&str]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().expect("temp workspace");
        let id = format!("t{}-{}-{name}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let req = JobRequest {
            id,
            name: name.to_owned(),
            image: None,
            services: Vec::new(),
            script: script.iter().map(|s| s.to_string()).collect(),
            after_script: Vec::new(),
            script_outcome: None,
            env: Vec::new(),
            workspace: dir.path().to_owned(),
            project_dir: "/builds/group/project".to_owned(),
            timeout: Duration::from_secs(30),
            after_script_timeout: Duration::from_secs(10),
            ledger: None,
        };
        Self { req, dir }
    }

    pub fn workspace(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.workspace().join(name)).ok()
    }
}

/// What a run produced.
pub struct Run {
    pub report: JobReport,
    pub output: String,
    pub chunks: usize,
    pub bytes: usize,
    pub largest_chunk: usize,
}

/// Runs `req` to the end, collecting its output (channel capacity 4, as a slow consumer).
pub async fn run(exec: &dyn Executor, req: JobRequest) -> Run {
    run_until(exec, req, None).await
}

/// Like [`run`], cancelling the job as soon as its output contains `cancel_on`.
pub async fn run_until(exec: &dyn Executor, req: JobRequest, cancel_on: Option<&str>) -> Run {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let cancel_on = cancel_on.map(str::to_owned);
    let consumer = tokio::spawn(async move {
        let (mut text, mut chunks, mut bytes, mut largest) = (Vec::new(), 0, 0, 0);
        while let Some(chunk) = rx.recv().await {
            chunks += 1;
            bytes += chunk.len();
            largest = largest.max(chunk.len());
            // Keep the start of huge outputs only: the tests look at the lines around it.
            if text.len() < 1 << 20 || chunk.iter().any(|&b| b != b'x') {
                text.extend_from_slice(&chunk);
            }
            if cancel_on.as_deref().is_some_and(|m| String::from_utf8_lossy(&text).contains(m)) {
                trigger.cancel();
            }
        }
        (String::from_utf8_lossy(&text).into_owned(), chunks, bytes, largest)
    });
    let report = exec.run(req, tx, cancel).await;
    let (output, chunks, bytes, largest_chunk) = consumer.await.expect("consumer task");
    assert!(largest_chunk <= CHUNK_SIZE, "a chunk of {largest_chunk} bytes is larger than CHUNK_SIZE");
    Run { report, output, chunks, bytes, largest_chunk }
}

/// Waits (polling, at most `limit`) until `done` holds.
pub async fn eventually(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether process `pid` is gone (or a zombie that no longer runs).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

pub fn shell_executor() -> ShellExecutor {
    ShellExecutor::new()
}

/// A docker executor on the local Engine, with the test images present. Fails the test with
/// a clear message when Docker is not reachable: these tests never pass without it.
pub async fn docker_executor() -> DockerExecutor {
    let exec = match DockerExecutor::connect().await {
        Ok(exec) => exec,
        Err(e) => panic!(
            "the docker executor tests need a running Docker Engine (socket `/var/run/docker.sock` or `DOCKER_HOST`), \
             and none answered: {e}. Start Docker (CI: `.ci/run` does) and run the tests again."
        ),
    };
    ensure_test_images(exec.docker()).await;
    exec
}

/// A fresh client on the local Engine (one per test: a client is bound to the runtime it is
/// first used in).
pub async fn docker() -> Docker {
    docker_executor().await.docker().clone()
}

/// Names of containers and networks still labelled with job `id`.
pub async fn leftovers(docker: &Docker, id: &str) -> Vec<String> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{}={id}", labels::JOB)])]);
    let containers =
        docker.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build())).await.unwrap();
    let networks = docker.list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filters).build())).await.unwrap();
    let containers = containers.into_iter().flat_map(|c| c.names.unwrap_or_default());
    containers.chain(networks.into_iter().filter_map(|n| n.name)).collect()
}

pub async fn assert_no_leftovers(docker: &Docker, id: &str) {
    let left = leftovers(docker, id).await;
    assert!(left.is_empty(), "job `{id}` left these behind: {left:?}");
}

static IMAGES: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Imports the test images unless present. Once per process; across processes (nextest runs
/// one test per process) a lock file serialises the imports.
async fn ensure_test_images(docker: &Docker) {
    IMAGES
        .get_or_init(|| async {
            let all = [IMAGE, WEB_IMAGE, ENTRYPOINT_IMAGE];
            if missing_images(docker, &all).await.is_empty() {
                return;
            }
            let lock = std::fs::File::create(std::env::temp_dir().join("piste-test-images.lock")).expect("image lock file");
            let lock = tokio::task::spawn_blocking(move || {
                rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("lock the image lock file");
                lock
            })
            .await
            .unwrap();
            let rootfs = rootfs_tar();
            let env_path = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
            for image in missing_images(docker, &all).await {
                let changes: Vec<&str> = match image {
                    IMAGE => vec![env_path, r#"CMD ["sh"]"#],
                    WEB_IMAGE => vec![env_path, "EXPOSE 8080", r#"CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]"#],
                    _ => vec![env_path, r#"ENTRYPOINT ["env", "FROM_ENTRYPOINT=yes"]"#, r#"CMD ["sh"]"#],
                };
                import(docker, image, &rootfs, &changes).await;
            }
            drop(lock);
        })
        .await;
}

async fn missing_images<'a>(docker: &Docker, images: &[&'a str]) -> Vec<&'a str> {
    let mut missing = Vec::new();
    for image in images {
        if docker.inspect_image(image).await.is_err() {
            missing.push(*image);
        }
    }
    missing
}

async fn import(docker: &Docker, image: &str, rootfs: &[u8], changes: &[&str]) {
    let (repo, tag) = image.rsplit_once(':').unwrap();
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(changes.iter().map(|c| c.to_string()).collect())
        .build();
    let mut progress = docker.create_image(Some(options), Some(body_full(rootfs.to_vec().into())), None);
    while let Some(item) = progress.next().await {
        if let Err(e) = item {
            panic!("cannot import test image `{image}`: {e}");
        }
    }
}

/// `/bin/busybox`, a symlink per applet in `/bin`, `/tmp` and `/www/index.html`.
fn rootfs_tar() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("cannot read `{BUSYBOX}` ({e}): the docker tests build their image from Debian's `busybox-static`: `apt-get install -y busybox-static`")
    });
    let list = std::process::Command::new(BUSYBOX).arg("--list").output().expect("busybox --list");
    let applets = String::from_utf8(list.stdout).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let add_dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        tar.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    for (dir, mode) in [("bin/", 0o755), ("tmp/", 0o1777), ("www/", 0o755), ("etc/", 0o755)] {
        add_dir(&mut tar, dir, mode);
    }
    let mut add_file = |path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data).unwrap();
    };
    add_file("bin/busybox", 0o755, &busybox);
    add_file("www/index.html", 0o644, format!("{WEB_PAGE}\n").as_bytes());
    add_file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox").unwrap();
    }
    tar.into_inner().unwrap()
}

/// One executor under test, for the tests that run against both.
pub struct Backend {
    pub exec: Box<dyn Executor>,
    pub docker: Option<Docker>,
}

impl Backend {
    pub fn shell() -> Self {
        Self { exec: Box::new(shell_executor()), docker: None }
    }

    pub async fn docker() -> Self {
        let exec = docker_executor().await;
        let docker = exec.docker().clone();
        Self { exec: Box::new(exec), docker: Some(docker) }
    }

    /// A job for this backend: the docker one runs in [`IMAGE`].
    pub fn job(&self, name: &str, script: &[&str]) -> Job {
        let mut job = Job::new(name, script);
        if self.docker.is_some() {
            job.req.image = Some(runner::executor::ImageSpec::new(IMAGE));
        }
        job
    }

    /// Where the job sees its workspace.
    pub fn job_dir(&self, job: &Job) -> String {
        match self.docker {
            Some(_) => job.req.project_dir.clone(),
            None => job.workspace().display().to_string(),
        }
    }

    /// Runs the job, then checks that it left no container or network behind.
    pub async fn run(&self, job: &Job) -> Run {
        self.run_until(job, None).await
    }

    pub async fn run_until(&self, job: &Job, cancel_on: Option<&str>) -> Run {
        let run = run_until(self.exec.as_ref(), job.req.clone(), cancel_on).await;
        if let Some(docker) = &self.docker {
            assert_no_leftovers(docker, &job.req.id).await;
        }
        run
    }
}
