//! Everything a job creates in Docker is labelled and removed, on every path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::future::join_all;

use super::super::{labels, sanitize_id};

/// The containers and network of one job. [`Resources::remove`] removes them; if the value is
/// dropped before that (the job's future was dropped), a background task removes them.
pub(super) struct Resources {
    docker: Docker,
    job_id: String,
    /// `piste-<job id>-<unique suffix>`: prefix of every name, unique even when an id is reused.
    prefix: String,
    containers: Vec<String>,
    network: Option<String>,
}

impl Resources {
    pub(super) fn new(docker: Docker, job_id: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let unique = (u64::from(std::process::id()) << 32) ^ u64::from(nanos) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("piste-{}-{:x}", sanitize_id(job_id), unique & 0xff_ffff);
        Self { docker, job_id: job_id.to_owned(), prefix, containers: Vec::new(), network: None }
    }

    pub(super) fn labels(&self) -> HashMap<String, String> {
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        HashMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::JOB.to_owned(), self.job_id.clone()),
            (labels::CREATED.to_owned(), created.to_string()),
        ])
    }

    /// Reserves the name of a container for `role` and records it for removal — before it is
    /// created, so that a creation whose answer was lost is still cleaned up.
    pub(super) fn container_name(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        self.containers.push(name.clone());
        name
    }

    pub(super) fn network(&self) -> Option<&str> {
        self.network.as_deref()
    }

    /// Creates the job's bridge network.
    pub(super) async fn create_network(&mut self) -> Result<String, DockerError> {
        let name = format!("{}-net", self.prefix);
        self.network = Some(name.clone());
        let request =
            NetworkCreateRequest { name: name.clone(), driver: Some("bridge".into()), labels: Some(self.labels()), ..Default::default() };
        self.docker.create_network(request).await?;
        Ok(name)
    }

    /// Kills a container of this job; a container that is not running is not an error.
    pub(super) async fn kill(&self, name: &str) {
        let _ = self.docker.kill_container(name, Some(KillContainerOptionsBuilder::default().signal("KILL").build())).await;
    }

    /// Removes everything this job created. Returns the error of the first removal that failed.
    pub(super) async fn remove(mut self) -> Result<(), String> {
        let containers = std::mem::take(&mut self.containers);
        let network = self.network.take();
        remove_all(&self.docker, containers, network).await
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        if self.containers.is_empty() && self.network.is_none() {
            return;
        }
        let docker = self.docker.clone();
        let containers = std::mem::take(&mut self.containers);
        let network = self.network.take();
        let cleanup = async move {
            if let Err(e) = remove_all(&docker, containers, network).await {
                tracing::error!("could not remove the containers of a dropped job: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(cleanup)),
            // Outside a runtime (or while it shuts down): a thread of our own does it.
            Err(_) => drop(std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(cleanup);
                }
            })),
        }
    }
}

async fn remove_all(docker: &Docker, containers: Vec<String>, network: Option<String>) -> Result<(), String> {
    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    let results = join_all(containers.iter().map(|name| docker.remove_container(name, Some(options.clone())))).await;
    let mut first_error = None;
    for (name, result) in containers.iter().zip(results) {
        match result {
            Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
            // 409: removal already in progress (another cleanup got there first).
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => {}
            Err(e) => {
                first_error.get_or_insert(format!("cannot remove container `{name}`: {e}"));
            }
        }
    }
    if let Some(network) = network {
        match docker.remove_network(&network).await {
            Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => {
                first_error.get_or_insert(format!("cannot remove network `{network}`: {e}"));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Which leftovers [`cleanup_leftovers`] removes. The default matches everything piste manages.
#[derive(Debug, Clone, Default)]
pub struct LeftoverFilter {
    /// Only objects of jobs whose id starts with this (e.g. `p12-` for one pipeline).
    pub job_id_prefix: Option<String>,
    /// Only objects created at least this long ago.
    pub older_than: Option<Duration>,
}

/// Removes containers and networks labelled `piste.managed=true` (as a crashed or killed piste
/// leaves them) that match `filter`; returns how many objects were removed. Meant for start-up.
pub async fn cleanup_leftovers(docker: &Docker, filter: &LeftoverFilter) -> Result<usize, super::super::Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let matches = |labels: Option<&HashMap<String, String>>| {
        let Some(labels) = labels else { return false };
        let job = labels.get(labels::JOB).map(String::as_str).unwrap_or_default();
        let created = labels.get(labels::CREATED).and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
        filter.job_id_prefix.as_deref().is_none_or(|p| job.starts_with(p))
            && filter.older_than.is_none_or(|age| now.saturating_sub(created) >= age.as_secs())
    };
    let by_label = HashMap::from([("label".to_owned(), vec![format!("{}=true", labels::MANAGED)])]);
    let containers = docker.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&by_label).build())).await?;
    let containers: Vec<String> = containers.into_iter().filter(|c| matches(c.labels.as_ref())).filter_map(|c| c.id).collect();
    let networks = docker.list_networks(Some(ListNetworksOptionsBuilder::default().filters(&by_label).build())).await?;
    let networks: Vec<String> = networks.into_iter().filter(|n| matches(n.labels.as_ref())).filter_map(|n| n.id).collect();
    let count = containers.len() + networks.len();
    let mut first_error = remove_all(docker, containers, None).await.err();
    for network in networks {
        if let Err(e) = remove_all(docker, Vec::new(), Some(network)).await {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        None => Ok(count),
        Some(e) => Err(super::super::Error::Cleanup(e)),
    }
}
