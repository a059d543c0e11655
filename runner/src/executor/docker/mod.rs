//! The docker executor: each job runs in a container of its image, through the Docker Engine
//! API (bollard), as gitlab-runner's docker executor does.
//!
//! # Decisions
//!
//! - **Script delivery.** The script is copied into the created container as
//!   `/.piste/step_script` (a tar upload before start) and run by
//!   `sh -c 'bash FILE if there is bash, else sh FILE'` — after the image's entrypoint if it has
//!   one, as GitLab does (`entrypoint: [""]` removes it). A file has no argument-length limit;
//!   the job's stdin is empty (no `OpenStdin`).
//! - **Output.** Attached before start (nothing is missed), stdout and stderr merged in the
//!   order the Engine forwards them; the container's log driver is `none`, so the output is
//!   not written a second time to the Engine's disk.
//! - **Container.** Workspace bind-mounted at `project_dir`, which is also the working
//!   directory; the image's default user; never privileged; no Docker socket.
//! - **Services** run on a bridge network created for the job (only when it has services: it
//!   costs time), reachable by their `alias` and by the two names GitLab derives from the image.
//!   They get the job's variables plus their own. When a service image declares ports
//!   (`EXPOSE`), the job waits up to [`SERVICE_WAIT`] for them to accept connections (from
//!   this host, on the container's address), then goes on with a warning, as GitLab does.
//! - **after_script** runs in a second container of the same image with the same mounts,
//!   network and variables, as GitLab does: it works whatever state the first one is in.
//! - **Timeout and cancellation** kill the job container (`SIGKILL`); then `after_script` runs.
//! - **Cleanup.** Every container and network is labelled `piste.managed=true` and
//!   `piste.job=<id>` and removed when the job ends, whatever the outcome. If the job's
//!   future is dropped, a background task removes them (a runtime shut down right after may
//!   never run it: to stop jobs on exit, cancel their tokens and await them);
//!   [`cleanup_leftovers`] removes what a killed process left, at start-up.

mod cleanup;
mod image;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::body_full;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountType, NetworkingConfig};
use bollard::query_parameters::{AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use futures_util::StreamExt;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

pub use cleanup::{LeftoverFilter, cleanup_leftovers};

use self::cleanup::Resources;
use self::image::{ensure_image, service_aliases};
use super::log::{JobLog, human};
use super::{
    AfterScriptEnd, Error, Executor, FailureReason, ImageSpec, JobReport, JobRequest, Outcome, RunFuture, ServiceSpec, after_script_env,
    report_after_script, script, validate_env,
};

/// How long a job waits for the ports its services expose.
pub const SERVICE_WAIT: Duration = Duration::from_secs(30);

/// How long [`DockerExecutor::connect`] waits for the Engine to answer.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Directory of the script files inside job containers.
const SCRIPT_DIR: &str = ".piste";

/// Runs jobs in Docker containers. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
    default_image: Option<ImageSpec>,
    service_wait: Duration,
}

impl DockerExecutor {
    /// Connects to the local Engine (`DOCKER_HOST`, else the default socket) and checks within a
    /// few seconds that it answers, so that a caller can fall back to the shell executor.
    pub async fn connect() -> Result<Self, Error> {
        Self::with_client(Docker::connect_with_local_defaults().map_err(Error::DockerUnavailable)?).await
    }

    /// Uses `docker` after checking that it answers, and speaks the Engine's API version when
    /// it is older than bollard's.
    pub async fn with_client(docker: Docker) -> Result<Self, Error> {
        let docker = tokio::time::timeout(PING_TIMEOUT, async {
            docker.ping().await.map_err(Error::DockerUnavailable)?;
            docker.negotiate_version().await.map_err(Error::DockerUnavailable)
        })
        .await
        .map_err(|_| Error::DockerTimeout(PING_TIMEOUT))??;
        Ok(Self { docker, default_image: None, service_wait: SERVICE_WAIT })
    }

    /// The Engine client, e.g. for [`cleanup_leftovers`].
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The image of jobs that have none (GitLab's `[runners.docker] image`).
    pub fn with_default_image(mut self, image: ImageSpec) -> Self {
        self.default_image = Some(image);
        self
    }

    /// How long to wait for services' exposed ports; zero disables the wait.
    pub fn with_service_wait(mut self, wait: Duration) -> Self {
        self.service_wait = wait;
        self
    }

    async fn run_job(&self, req: JobRequest, out: Sender<Vec<u8>>, cancel: CancellationToken) -> JobReport {
        let started = Instant::now();
        let log = JobLog::new(out);
        let mut res = Resources::new(self.docker.clone(), &req.id);
        let mut progress = Progress::default();
        let image = req.image.clone().or_else(|| self.default_image.clone());
        let end = match (&image, validate_env(&req.env)) {
            (_, Err(msg)) => Step::Failed(msg),
            (None, _) => Step::Failed("the job has no `image` and the docker executor has no default image".into()),
            (Some(image), Ok(())) => tokio::select! {
                biased;
                () = cancel.cancelled() => Step::Canceled,
                () = tokio::time::sleep(req.timeout) => Step::TimedOut,
                end = self.main_steps(&req, image, &log, &mut res, &mut progress) => end,
            },
        };
        if let Step::TimedOut | Step::Canceled = end {
            let what = if let Step::TimedOut = end { format!("timed out after {}", human(req.timeout)) } else { "canceled".into() };
            log.warning(&format!("job {what}: stopping its container")).await;
            if let Some(container) = &progress.job_container {
                res.kill(container).await;
            }
        }
        log.end_open_sections().await;
        let outcome = match end {
            Step::Exited(_) if req.script_outcome.is_some() => req.script_outcome.clone().unwrap_or(Outcome::Success),
            Step::Exited(0) => Outcome::Success,
            Step::Exited(code) => Outcome::Failed { exit_code: Some(code), reason: FailureReason::ScriptFailure },
            Step::TimedOut => Outcome::Failed { exit_code: None, reason: FailureReason::JobTimeout },
            Step::Canceled => Outcome::Canceled,
            Step::Failed(msg) => {
                log.error(&msg).await;
                Outcome::Failed { exit_code: None, reason: FailureReason::RunnerSystemFailure(msg) }
            }
        };

        let mut after_script_exit = None;
        if let (true, false, Some(image)) = (progress.script_started, req.after_script.is_empty(), &image) {
            log.section_start("after_script", "Running after_script").await;
            let env = after_script_env(&req.env, &outcome);
            let name = res.container_name("after");
            let script = script::job_script(&req.after_script);
            let run = self.run_script_container(&req, image, &name, "after_script", &script, &env, &log, &res);
            let end = match tokio::time::timeout(req.after_script_timeout, run).await {
                Ok(Ok(code)) => AfterScriptEnd::Exited(code),
                Ok(Err(msg)) => AfterScriptEnd::Failed(msg),
                Err(_) => {
                    res.kill(&name).await;
                    AfterScriptEnd::TimedOut
                }
            };
            after_script_exit = report_after_script(&log, end, req.after_script_timeout).await;
            log.end_open_sections().await;
        }

        if let Err(e) = res.remove().await {
            tracing::error!(job = %req.id, "{e}");
            log.warning(&e).await;
        }
        JobReport { outcome, after_script_exit, duration: started.elapsed() }
    }

    /// Prepares the image and services, then runs the script: everything the job timeout covers.
    async fn main_steps(&self, req: &JobRequest, image: &ImageSpec, log: &JobLog, res: &mut Resources, progress: &mut Progress) -> Step {
        log.section_start("prepare_executor", "Preparing the \"docker\" executor").await;
        log.info(&format!("Using Docker executor with image {} ...", image.name)).await;
        match ensure_image(&self.docker, &image.name, &image.pull_policy).await {
            Ok(id) => log.info(&format!("Using docker image {id} for {} ...", image.name)).await,
            Err(msg) => return Step::Failed(msg),
        }
        if !req.services.is_empty()
            && let Err(msg) = self.start_services(req, log, res).await
        {
            return Step::Failed(msg);
        }
        log.section_end("prepare_executor").await;
        if req.script_outcome.is_some() {
            // The job's steps ran already: only `after_script` is left (see `run_job`).
            progress.script_started = true;
            return Step::Exited(0);
        }

        log.section_start("step_script", "Executing \"step_script\" stage of the job script").await;
        let name = res.container_name("build");
        progress.job_container = Some(name.clone());
        progress.script_started = true;
        let script = script::job_script(&req.script);
        let end = match self.run_script_container(req, image, &name, "step_script", &script, &req.env, log, res).await {
            Ok(code) => Step::Exited(code),
            Err(msg) => Step::Failed(msg),
        };
        log.section_end("step_script").await;
        end
    }

    async fn start_services(&self, req: &JobRequest, log: &JobLog, res: &mut Resources) -> Result<(), String> {
        let network = res.create_network().await.map_err(api_error("create the job's network"))?;
        let mut started = Vec::new();
        for (i, service) in req.services.iter().enumerate() {
            log.info(&format!("Starting service {} ...", service.name)).await;
            validate_env(&service.variables)?;
            let image_id = ensure_image(&self.docker, &service.name, &service.pull_policy).await.map_err(|msg| format!("service {msg}"))?;
            let name = res.container_name(&format!("svc{i}"));
            let aliases = service_aliases(&service.name, service.alias.as_deref());
            let body = ContainerCreateBody {
                image: Some(service.name.clone()),
                entrypoint: entrypoint(&service.entrypoint),
                cmd: service.command.clone(),
                env: Some(env_list(&merge_env(&req.env, &service.variables))),
                labels: Some(res.labels()),
                host_config: Some(HostConfig { network_mode: Some(network.clone()), privileged: Some(false), ..Default::default() }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        network.clone(),
                        EndpointSettings { aliases: Some(aliases), ..Default::default() },
                    )])),
                }),
                ..Default::default()
            };
            let what = format!("start service `{}`", service.name);
            self.docker
                .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
                .await
                .map_err(api_error(&what))?;
            self.docker.start_container(&name, None).await.map_err(api_error(&what))?;
            started.push((service, name, image_id));
        }
        if !self.service_wait.is_zero() {
            self.wait_for_services(&started, &network, log).await;
        }
        Ok(())
    }

    /// Waits until the ports each service image exposes accept TCP connections.
    async fn wait_for_services(&self, services: &[(&ServiceSpec, String, String)], network: &str, log: &JobLog) {
        let deadline = tokio::time::Instant::now() + self.service_wait;
        let mut announced = false;
        for (service, container, image_id) in services {
            let ports = self.exposed_tcp_ports(image_id).await;
            if ports.is_empty() {
                continue;
            }
            if !announced {
                log.info(&format!("Waiting for services to be up and running (timeout {})...", human(self.service_wait))).await;
                announced = true;
            }
            let ip = self.container_ip(container, network).await;
            for port in ports {
                let reachable = match ip {
                    Some(ip) => wait_for_port(SocketAddr::new(ip, port), deadline).await,
                    None => false,
                };
                if !reachable {
                    log.warning(&format!(
                        "Service {} probably didn't start properly: port {port}/tcp did not accept connections within {}",
                        service.name,
                        human(self.service_wait)
                    ))
                    .await;
                    break;
                }
            }
        }
    }

    async fn exposed_tcp_ports(&self, image_id: &str) -> Vec<u16> {
        let Ok(image) = self.docker.inspect_image(image_id).await else { return Vec::new() };
        let ports = image.config.and_then(|c| c.exposed_ports).unwrap_or_default();
        ports.iter().filter_map(|p| p.strip_suffix("/tcp").or((!p.contains('/')).then_some(p.as_str()))?.parse().ok()).collect()
    }

    async fn container_ip(&self, container: &str, network: &str) -> Option<IpAddr> {
        let info = self.docker.inspect_container(container, None).await.ok()?;
        let endpoint = info.network_settings?.networks?.remove(network)?;
        endpoint.ip_address?.parse().ok()
    }

    /// Creates, starts and follows a container running `script`; returns its exit code.
    #[allow(clippy::too_many_arguments)]
    async fn run_script_container(
        &self,
        req: &JobRequest,
        image: &ImageSpec,
        name: &str,
        script_name: &str,
        script: &str,
        env: &[(String, String)],
        log: &JobLog,
        res: &Resources,
    ) -> Result<i32, String> {
        let inline = script.len() <= script::INLINE_MAX;
        let workspace =
            std::path::absolute(&req.workspace).map_err(|e| format!("cannot resolve the workspace `{}`: {e}", req.workspace.display()))?;
        let body = ContainerCreateBody {
            image: Some(image.name.clone()),
            entrypoint: entrypoint(&image.entrypoint),
            cmd: Some(if inline {
                vec!["sh".into(), "-c".into(), script::SHELL_DETECT_INLINE.into(), "sh".into(), script.to_string()]
            } else {
                vec!["sh".into(), "-c".into(), script::SHELL_DETECT.into(), "sh".into(), format!("/{SCRIPT_DIR}/{script_name}")]
            }),
            env: Some(env_list(env)),
            working_dir: Some(req.project_dir.clone()),
            labels: Some(res.labels()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    typ: Some(MountType::BIND),
                    source: Some(workspace.to_string_lossy().into_owned()),
                    target: Some(req.project_dir.clone()),
                    ..Default::default()
                }]),
                network_mode: res.network().map(str::to_owned),
                log_config: Some(HostConfigLogConfig { typ: Some("none".into()), config: None }),
                privileged: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let docker = &self.docker;
        docker
            .create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body)
            .await
            .map_err(api_error(&format!("create a container of image `{}`", image.name)))?;
        if !inline {
            let tar = script_archive(script_name, script).map_err(|e| format!("cannot pack the {script_name} script: {e}"))?;
            docker
                .upload_to_container(name, Some(UploadToContainerOptionsBuilder::default().path("/").build()), body_full(tar.into()))
                .await
                .map_err(api_error("copy the script into the job container"))?;
        }
        let attach = AttachContainerOptionsBuilder::default().stream(true).stdout(true).stderr(true).build();
        let mut output = docker.attach_container(name, Some(attach)).await.map_err(api_error("attach to the job container"))?.output;
        docker.start_container(name, None).await.map_err(api_error("start the job container"))?;
        while let Some(frame) = output.next().await {
            match frame {
                Ok(frame) => log.output(&frame.into_bytes()).await,
                Err(e) => return Err(format!("lost the output of the job container: {e}")),
            }
        }
        match docker.wait_container(name, None).next().await {
            Some(Ok(exit)) => Ok(i32::try_from(exit.status_code).unwrap_or(1)),
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(i32::try_from(code).unwrap_or(1)),
            Some(Err(e)) => Err(format!("cannot get the exit code of the job container: {}", api_message(&e))),
            None => Err("cannot get the exit code of the job container: the Engine sent nothing".into()),
        }
    }
}

impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn run(&self, req: JobRequest, out: Sender<Vec<u8>>, cancel: CancellationToken) -> RunFuture<'_> {
        Box::pin(self.run_job(req, out, cancel))
    }

    fn cleanup_leftovers<'a>(&'a self, job_id_prefix: &'a str) -> Pin<Box<dyn Future<Output = Result<usize, Error>> + Send + 'a>> {
        Box::pin(async move {
            let filter = LeftoverFilter { job_id_prefix: Some(job_id_prefix.to_owned()), older_than: None };
            cleanup_leftovers(&self.docker, &filter).await
        })
    }
}

/// How the part of the job under the job timeout ended.
enum Step {
    Exited(i32),
    TimedOut,
    Canceled,
    Failed(String),
}

/// What the main steps got to, for what follows when they were cut short.
#[derive(Default)]
struct Progress {
    job_container: Option<String>,
    script_started: bool,
}

/// Polls `addr` until it accepts a connection or `deadline` passes.
async fn wait_for_port(addr: SocketAddr, deadline: tokio::time::Instant) -> bool {
    loop {
        let attempt = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await;
        match attempt {
            Ok(Ok(_)) => return true,
            Err(_) => return false,
            Ok(Err(_)) if tokio::time::Instant::now() >= deadline => return false,
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The Engine's form of an `entrypoint:` override: `[""]` (or `[]`) clears the image's.
fn entrypoint(spec: &Option<Vec<String>>) -> Option<Vec<String>> {
    match spec {
        None => None,
        Some(args) if args.iter().all(String::is_empty) => Some(vec![String::new()]),
        Some(args) => Some(args.clone()),
    }
}

fn env_list(env: &[(String, String)]) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// `base` with `overrides` applied: one entry per name, the override's value winning.
fn merge_env(base: &[(String, String)], overrides: &[(String, String)]) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = base.iter().filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k)).cloned().collect();
    merged.extend(overrides.iter().cloned());
    merged
}

/// A tar holding `.piste/<name>` (to be extracted at `/`).
fn script_archive(name: &str, script: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    tar.append_data(&mut dir, format!("{SCRIPT_DIR}/"), std::io::empty())?;
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o644);
    file.set_size(script.len() as u64);
    tar.append_data(&mut file, format!("{SCRIPT_DIR}/{name}"), script.as_bytes())?;
    tar.into_inner()
}

/// The Engine's own message for server errors (it names the image, container or path).
fn api_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        e => e.to_string(),
    }
}

fn api_error(what: &str) -> impl Fn(DockerError) -> String + '_ {
    move |e| format!("cannot {what}: {}", api_message(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_entrypoint_clears_the_image_entrypoint() {
        assert_eq!(entrypoint(&None), None);
        assert_eq!(entrypoint(&Some(vec![])), Some(vec![String::new()]));
        assert_eq!(entrypoint(&Some(vec![String::new()])), Some(vec![String::new()]));
        assert_eq!(entrypoint(&Some(vec!["/init".into()])), Some(vec!["/init".into()]));
    }

    #[test]
    fn service_variables_override_job_variables() {
        let job = vec![("A".into(), "1".into()), ("B".into(), "2".into())];
        let service = vec![("B".into(), "3".into())];
        assert_eq!(merge_env(&job, &service), vec![("A".into(), "1".into()), ("B".into(), "3".into())]);
    }

    #[test]
    fn script_archive_holds_the_script() {
        let tar = script_archive("step_script", "echo hi\n").unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, [".piste/", ".piste/step_script"]);
    }
}
