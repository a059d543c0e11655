//! `piste/image-copy@v1`: copies an image (a manifest, or an index and its manifests) by
//! digest to other references — blobs mounted inside a registry, streamed between
//! registries — and tags it there. The manifest's bytes are kept, so its digest is too.

use super::image::{Index, Manifest};
use super::push::{Registries, transfer};
use super::reference::Reference;
use super::registry::{BlobOutcome, Client, RegistryOptions, short};
use super::{Log, OciError};

/// What to copy where.
#[derive(Debug, Clone, Default)]
pub struct CopyRequest {
    /// The image to copy (`registry/repo:tag` or `registry/repo@sha256:…`).
    pub source: String,
    /// Where to tag it (`registry/repo:tag`).
    pub destinations: Vec<String>,
    pub registry: RegistryOptions,
}

/// What a copy did.
#[derive(Debug, Clone)]
pub struct CopyOutput {
    /// `sha256:…` of the copied manifest (`IMAGE_DIGEST`).
    pub digest: String,
    pub references: Vec<String>,
    /// `registry/repo@sha256:…` of the first destination (`IMAGE_REF`).
    pub image_ref: String,
}

/// Copies `req.source` to every destination.
pub async fn copy(req: &CopyRequest, log: &Log) -> Result<CopyOutput, OciError> {
    let source = Reference::parse(&req.source)?;
    let dests = req.destinations.iter().map(|d| Reference::parse(d)).collect::<Result<Vec<_>, _>>()?;
    if dests.is_empty() {
        return Err(OciError::Build("no destination: give at least one `registry/repository:tag`".into()));
    }
    if let Some(d) = dests.iter().find(|d| d.tag.is_none()) {
        return Err(OciError::Build(format!("destination `{d}` has no tag")));
    }
    let regs = Registries::new(Client::new(req.registry.clone(), log.clone())?);
    let from = regs.get(&source.registry).session(&source.repository, false, &[]).await?;
    let top = from.get_manifest(&source.repository, source.target()).await?;
    log.line(format!("copying {} ({})", source, top.digest)).await;
    // The manifests to copy, children first, and every blob they name.
    let mut manifests = Vec::new();
    let mut blobs: Vec<(String, u64)> = Vec::new();
    let is_index = top.media_type.contains("index") || top.media_type.contains("manifest.list");
    let images = if is_index {
        let index: Index =
            serde_json::from_slice(&top.bytes).map_err(|e| OciError::Build(format!("the index of `{source}` is not valid: {e}")))?;
        let mut children = Vec::new();
        for d in &index.manifests {
            super::reference::check_digest(&d.digest).map_err(|e| OciError::Build(format!("the index of `{source}`: {e}")))?;
            children.push(from.get_manifest(&source.repository, &d.digest).await?);
        }
        children
    } else {
        vec![top.clone()]
    };
    for m in &images {
        let manifest: Manifest =
            serde_json::from_slice(&m.bytes).map_err(|e| OciError::Build(format!("a manifest of `{source}` is not valid: {e}")))?;
        for d in manifest.layers.iter().chain(std::iter::once(&manifest.config)) {
            super::reference::check_digest(&d.digest).map_err(|e| OciError::Build(format!("a manifest of `{source}`: {e}")))?;
            if !blobs.iter().any(|(b, _)| *b == d.digest) {
                blobs.push((d.digest.clone(), d.size));
            }
        }
        if is_index {
            manifests.push(m.clone());
        }
    }
    manifests.push(top.clone());
    // Authorize every destination first.
    let mut sessions = Vec::new();
    for d in &dests {
        let pull: Vec<&str> = if d.registry == source.registry { vec![source.repository.as_str()] } else { vec![] };
        sessions.push(regs.get(&d.registry).session(&d.repository, true, &pull).await?);
    }
    for (d, session) in dests.iter().zip(&sessions) {
        for (digest, size) in &blobs {
            let outcome = transfer(&regs, session, &d.repository, digest, *size, &source.registry, &source.repository, None).await?;
            let what = match outcome {
                BlobOutcome::Present => "skipped (present)".to_owned(),
                BlobOutcome::Mounted { from } => format!("mounted from {}/{from}", d.registry),
                BlobOutcome::Uploaded { .. } => "uploaded".to_owned(),
            };
            log.line(format!("  {} → {}/{}: {what}", short(digest), d.registry, d.repository)).await;
        }
        for m in &manifests {
            let reference = if m.digest == top.digest { d.tag.clone().expect("tagged") } else { m.digest.clone() };
            session.put_manifest(&d.repository, &reference, &m.media_type, &m.bytes).await?;
        }
        log.line(format!("  tagged {d} → {}", top.digest)).await;
    }
    Ok(CopyOutput {
        digest: top.digest.clone(),
        references: dests.iter().map(|d| d.to_string()).collect(),
        image_ref: dests[0].pinned(&top.digest),
    })
}
