//! Pushing an assembled image: every destination authorized first, then per repository each
//! blob once (present → skipped, same registry → mounted, else uploaded), then the manifest
//! tagged at each destination.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::build::{Assembled, LayerSource, human};
use super::image::{Descriptor, Manifest, media};
use super::reference::Reference;
use super::registry::{Blob, BlobData, BlobOutcome, Client, Registry, Session, sha256_digest, short};
use super::{Log, OciError};

/// One [`Registry`] per host, created on first use and kept for the build.
pub struct Registries {
    client: Client,
    by_host: std::sync::Mutex<BTreeMap<String, Arc<Registry>>>,
}

impl Registries {
    pub fn new(client: Client) -> Registries {
        Registries { client, by_host: std::sync::Mutex::new(BTreeMap::new()) }
    }

    /// The registry of `host` (the same one for the whole build, so that its scheme and
    /// challenge are found once).
    pub fn get(&self, host: &str) -> Arc<Registry> {
        let mut map = self.by_host.lock().expect("registries lock");
        map.entry(host.to_owned()).or_insert_with(|| self.client.registry(host)).clone()
    }
}

/// What a push did.
pub struct Pushed {
    pub digest: String,
    pub manifest_size: u64,
    /// `(host, repository)` pushed to, in order.
    pub repositories: Vec<(String, String)>,
}

/// Pushes `image` to every destination.
pub async fn push_image(regs: &Registries, image: &Assembled, dests: &[Reference], log: &Log) -> Result<Pushed, OciError> {
    let config = Blob::memory(image.config.clone());
    let manifest = Manifest::oci(
        Descriptor {
            media_type: media::OCI_CONFIG.into(),
            digest: config.digest.clone(),
            size: config.size,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        image.layers.iter().map(|l| l.desc.clone()).collect(),
    )
    .to_bytes();
    let digest = sha256_digest(&manifest);
    // Destinations grouped by repository, in order.
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    for d in dests {
        let tag = d.tag.clone().expect("destinations have tags");
        match groups.iter_mut().find(|(h, r, _)| *h == d.registry && *r == d.repository) {
            Some(g) => g.2.push(tag),
            None => groups.push((d.registry.clone(), d.repository.clone(), vec![tag])),
        }
    }
    // Authorize everything before the first byte: a refused login creates nothing.
    let mut sessions: Vec<Session> = Vec::new();
    for (i, (host, repo, _)) in groups.iter().enumerate() {
        let mut pull_from: Vec<&str> = image
            .layers
            .iter()
            .filter_map(|l| match &l.source {
                LayerSource::Remote { host: h, repo } if h == host => Some(repo.as_str()),
                _ => None,
            })
            .collect();
        pull_from.extend(groups[..i].iter().filter(|(h, _, _)| h == host).map(|(_, r, _)| r.as_str()));
        pull_from.sort();
        pull_from.dedup();
        sessions.push(regs.get(host).session(repo, true, &pull_from).await?);
    }
    let total = image.layers.len() + 1;
    for (i, ((host, repo, tags), session)) in groups.iter().zip(&sessions).enumerate() {
        let earlier = groups[..i].iter().find(|(h, _, _)| h == host).map(|(_, r, _)| r.as_str());
        log.line(format!("pushing to {host}/{repo}")).await;
        let (mut sent, mut skipped) = (0u64, 0usize);
        for (n, layer) in image.layers.iter().enumerate() {
            let d = &layer.desc;
            let what = format!("  layer {}/{total} {} ({})", n + 1, short(&d.digest), human(d.size));
            let outcome = match &layer.source {
                LayerSource::File(path) => {
                    session
                        .push_blob(repo, &Blob { digest: d.digest.clone(), size: d.size, data: BlobData::File(path.clone()) }, earlier)
                        .await?
                }
                LayerSource::Remote { host: from_host, repo: from } => {
                    transfer(regs, session, repo, &d.digest, d.size, from_host, from, earlier).await?
                }
            };
            match &outcome {
                BlobOutcome::Present => {
                    skipped += 1;
                    log.line(format!("{what}: skipped (present)")).await;
                }
                BlobOutcome::Mounted { from } => log.line(format!("{what}: mounted from {host}/{from}")).await,
                BlobOutcome::Uploaded { bytes, retries } => {
                    sent += bytes;
                    let retried = if *retries > 0 { format!(", {retries} retries") } else { String::new() };
                    log.line(format!("{what}: uploaded{retried}")).await;
                }
            }
        }
        match session.push_blob(repo, &config, earlier).await? {
            BlobOutcome::Present => {
                skipped += 1;
                log.line(format!("  config {}: skipped (present)", short(&config.digest))).await;
            }
            BlobOutcome::Mounted { from } => log.line(format!("  config {}: mounted from {host}/{from}", short(&config.digest))).await,
            BlobOutcome::Uploaded { bytes, .. } => {
                sent += bytes;
                log.line(format!("  config {}: uploaded", short(&config.digest))).await;
            }
        }
        log.line(format!("  {} sent, {skipped} of {total} blobs already present", human(sent))).await;
        for tag in tags {
            session.put_manifest(repo, tag, media::OCI_MANIFEST, &manifest).await?;
            log.line(format!("  tagged {host}/{repo}:{tag} → {digest}")).await;
        }
    }
    Ok(Pushed { digest, manifest_size: manifest.len() as u64, repositories: groups.into_iter().map(|(h, r, _)| (h, r)).collect() })
}

/// Makes sure `repo` (on `session`'s registry) has blob `digest`, which is in `from` of
/// registry `from_host`: nothing sent when present, mounted within a registry (from `from`,
/// else from `also`), else streamed through a temporary file.
#[allow(clippy::too_many_arguments)]
pub async fn transfer(
    regs: &Registries,
    session: &Session,
    repo: &str,
    digest: &str,
    size: u64,
    from_host: &str,
    from: &str,
    also: Option<&str>,
) -> Result<BlobOutcome, OciError> {
    if session.has_blob(repo, digest).await? {
        return Ok(BlobOutcome::Present);
    }
    let host = session.registry().host().to_owned();
    if from_host == host && from != repo && session.mount_blob(repo, digest, from).await? {
        return Ok(BlobOutcome::Mounted { from: from.to_owned() });
    }
    if let Some(also) = also.filter(|a| *a != repo)
        && session.mount_blob(repo, digest, also).await?
    {
        return Ok(BlobOutcome::Mounted { from: also.to_owned() });
    }
    let tmp = tempfile::NamedTempFile::new().map_err(|e| OciError::Io { what: "cannot create a temporary file".into(), source: e })?;
    let source = regs.get(from_host).session(from, false, &[]).await?;
    source.get_blob_to_file(from, digest, tmp.path()).await?;
    let blob = Blob { digest: digest.to_owned(), size, data: BlobData::File(tmp.path().to_owned()) };
    session.push_blob(repo, &blob, None).await
}
