//! Dockerfiles with `RUN`: built by the Docker Engine (bollard, classic builder), exported
//! (`docker save`'s tarball), and turned back into layers and a configuration that piste's
//! own pusher sends — so auth, digests, the leak gate and the provenance are the same as for
//! native builds. The image is untagged from the Engine afterwards (its build cache stays).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion, RemoveImageOptionsBuilder};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::build::{Assembled, Base, BuildRequest, Layer, LayerSource};
use super::dockerfile::{self, Dockerfile, Op};
use super::ignore::Ignore;
use super::image::{Descriptor, ImageConfig, media};
use super::layer;
use super::leak::Scanner;
use super::reference::Reference;
use super::{Log, OciError, blocking};

/// How long the Engine has to answer a ping.
const PING: Duration = Duration::from_secs(10);
/// Largest JSON file read from an exported image.
const MAX_JSON: u64 = 16 << 20;

/// Builds with the Engine and exports the result into `work`.
pub async fn build(req: &BuildRequest, file: &Dockerfile, path: &Path, work: &Path, log: &Log) -> Result<Assembled, OciError> {
    let run_at = file.stages.iter().flat_map(|s| &s.instructions).find(|i| matches!(i.op, Op::Run(_))).map(|i| i.line).unwrap_or(1);
    let unavailable = |why: String| {
        OciError::Engine(format!(
            "{}:{run_at}: this Dockerfile has `RUN`, which needs the Docker Engine, and none answered ({why}). \
             Give the runner a Docker Engine (`DOCKER_HOST` or `/var/run/docker.sock`), or remove the `RUN` instructions to build without one.",
            path.display()
        ))
    };
    let docker = match req.docker_host.as_deref() {
        None => Docker::connect_with_local_defaults(),
        Some(h) if h.starts_with("unix://") => Docker::connect_with_unix(h, 120, bollard::API_DEFAULT_VERSION),
        Some(h) => Docker::connect_with_http(h, 120, bollard::API_DEFAULT_VERSION),
    }
    .map_err(|e| unavailable(e.to_string()))?;
    let docker = tokio::time::timeout(PING, async {
        docker.ping().await?;
        docker.negotiate_version().await
    })
    .await
    .map_err(|_| unavailable(format!("no answer within {PING:?}")))?
    .map_err(|e| unavailable(e.to_string()))?;

    // The context, as the docker CLI sends it: `.dockerignore` applied, the Dockerfile added.
    let context_tar = work.join("context.tar");
    let (context, dockerfile_path, tar_path) = (req.context.clone(), path.to_owned(), context_tar.clone());
    blocking(move || context_archive(&context, &dockerfile_path, &tar_path)).await?;
    let body = tokio::fs::read(&context_tar)
        .await
        .map_err(|e| OciError::Io { what: "cannot read the build context archive".into(), source: e })?;

    let tag = format!("piste-build/{}:{}", std::process::id(), hex::encode(getrandom_bytes()));
    let build_args: HashMap<String, String> = req.build_args.iter().cloned().collect();
    let mut labels: HashMap<String, String> = req.labels.iter().cloned().collect();
    if let Some(s) = &req.source {
        labels.insert("org.opencontainers.image.source".into(), s.clone());
    }
    if let Some(r) = &req.revision {
        labels.insert("org.opencontainers.image.revision".into(), r.clone());
    }
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile(DOCKERFILE)
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&build_args)
        .labels(&labels)
        .version(BuilderVersion::BuilderV1);
    if let Some(t) = &req.target {
        options = options.target(t);
    }
    let credentials: HashMap<String, DockerCredentials> = req
        .registry
        .credentials
        .iter()
        .map(|(host, login)| {
            (
                host.to_owned(),
                DockerCredentials {
                    username: Some(login.username.clone()),
                    password: Some(login.password.clone()),
                    serveraddress: Some(host.to_owned()),
                    ..DockerCredentials::default()
                },
            )
        })
        .collect();
    let mut stream = docker.build_image(options.build(), Some(credentials), Some(bollard::body_full(body.into())));
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        log.line(format!("  {line}")).await;
                    }
                }
                if let Some(detail) = info.error_detail {
                    failure = Some(detail.message.unwrap_or_default());
                }
            }
            Err(e) => failure = Some(e.to_string()),
        }
    }
    let cleanup = async {
        let _ = docker.remove_image(&tag, Some(RemoveImageOptionsBuilder::default().noprune(true).build()), None).await;
    };
    if let Some(message) = failure {
        cleanup.await;
        return Err(OciError::Engine(format!("the Docker Engine could not build `{}`: {message}", path.display())));
    }
    let exported = work.join("image.tar");
    let result = async {
        let mut out = tokio::fs::File::create(&exported)
            .await
            .map_err(|e| OciError::Io { what: format!("cannot create `{}`", exported.display()), source: e })?;
        let mut stream = docker.export_image(&tag);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| OciError::Engine(format!("could not export the built image: {e}")))?;
            out.write_all(&chunk).await.map_err(|e| OciError::Io { what: "cannot write the exported image".into(), source: e })?;
        }
        out.flush().await.map_err(|e| OciError::Io { what: "cannot write the exported image".into(), source: e })
    }
    .await;
    cleanup.await;
    result?;
    let scanner = Scanner::new(&req.masked);
    let (tar, dir) = (exported.clone(), work.to_owned());
    let mut image = blocking(move || read_saved(&tar, &dir, scanner.as_ref())).await?;
    log.line(format!("exported {} layers from the Docker Engine", image.layers.len())).await;
    image.bases = bases(&docker, req, file).await;
    Ok(image)
}

/// Name of the Dockerfile inside the context archive.
const DOCKERFILE: &str = ".piste-build.Dockerfile";

fn getrandom_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the system's random source");
    b
}

/// Writes the build context (`.dockerignore` applied) plus the Dockerfile to `out`.
fn context_archive(context: &Path, dockerfile: &Path, out: &Path) -> Result<(), OciError> {
    let ignore = Ignore::load(context)?;
    let file = std::fs::File::create(out).map_err(|e| OciError::Io { what: format!("cannot create `{}`", out.display()), source: e })?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(false);
    let io = |e: std::io::Error| OciError::Io { what: "cannot write the build context archive".into(), source: e };
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = context.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| OciError::Io { what: format!("cannot list `{}`", dir.display()), source: e })?;
        for entry in entries {
            let entry = entry.map_err(io)?;
            let p = rel.join(entry.file_name());
            let Some(p_str) = p.to_str() else { continue };
            if ignore.excluded(p_str) && !ignore.has_exceptions() {
                continue;
            }
            let ft = entry.file_type().map_err(io)?;
            if ft.is_dir() {
                stack.push(p.clone());
                if !ignore.excluded(p_str) {
                    tar.append_path_with_name(entry.path(), &p).map_err(io)?;
                }
            } else if !ignore.excluded(p_str) {
                tar.append_path_with_name(entry.path(), &p).map_err(io)?;
            }
        }
    }
    let text =
        std::fs::read(dockerfile).map_err(|e| OciError::Io { what: format!("cannot read `{}`", dockerfile.display()), source: e })?;
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, DOCKERFILE, &text[..]).map_err(io)?;
    tar.into_inner().map_err(io)?;
    Ok(())
}

/// Reads a `docker save` tarball: its configuration, and each layer recompressed into `dir`
/// (diff_ids checked against the configuration's).
pub fn read_saved(tar_path: &Path, dir: &Path, scanner: Option<&Scanner>) -> Result<Assembled, OciError> {
    let io = |e: std::io::Error| OciError::Io { what: format!("cannot read the exported image `{}`", tar_path.display()), source: e };
    let file = std::fs::File::open(tar_path).map_err(io)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut json: HashMap<String, Vec<u8>> = HashMap::new();
    let mut layers: HashMap<String, layer::Written> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let name = entry.path().map_err(io)?.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            if let Some(target) = entry.link_name().map_err(io)? {
                let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                links.insert(name.clone(), normalise(&base.join(target)));
            }
        } else if name.ends_with(".json") {
            let mut bytes = Vec::new();
            (&mut entry).take(MAX_JSON).read_to_end(&mut bytes).map_err(io)?;
            json.insert(name, bytes);
        } else if name.starts_with("blobs/") && kind.is_file() && entry.size() <= MAX_JSON {
            // Docker ≥ 25 saves an OCI layout: the configuration is a blob too. Small blobs
            // are kept (one may be the configuration) and recompressed from memory.
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io)?;
            let out = dir.join(format!("exported-{}.tar.gz", layers.len()));
            let what = format!("exported layer `{name}`");
            if let Ok(written) = layer::recompress(&bytes[..], &out, scanner, &what) {
                layers.insert(name.clone(), written);
            }
            json.insert(name, bytes);
        } else if name.ends_with("layer.tar") || (name.starts_with("blobs/") && kind.is_file()) {
            let out = dir.join(format!("exported-{}.tar.gz", layers.len()));
            let what = format!("exported layer `{name}`");
            let written = layer::recompress(&mut entry, &out, scanner, &what)?;
            layers.insert(name, written);
        }
    }
    let manifest = json.get("manifest.json").ok_or_else(|| OciError::Engine("the exported image has no `manifest.json`".into()))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| OciError::Engine(format!("the exported image's `manifest.json` is not JSON: {e}")))?;
    let first = &manifest[0];
    let config_name = first["Config"].as_str().ok_or_else(|| OciError::Engine("`manifest.json` names no `Config`".into()))?;
    let config = json.get(config_name).ok_or_else(|| OciError::Engine(format!("the exported image lacks `{config_name}`")))?.clone();
    let parsed = ImageConfig::parse(&config, "the built image")?;
    let names: Vec<&str> = first["Layers"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    let mut out = Vec::new();
    let mut findings = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut key = name.to_string();
        for _ in 0..8 {
            match links.get(&key) {
                Some(t) => key = t.clone(),
                None => break,
            }
        }
        let written = layers.get(&key).ok_or_else(|| OciError::Engine(format!("the exported image lacks layer `{name}`")))?;
        let expected = parsed.rootfs.diff_ids.get(i).map(String::as_str).unwrap_or("");
        if written.diff_id != expected {
            return Err(OciError::DigestMismatch {
                what: format!("exported layer {}", i + 1),
                expected: expected.to_owned(),
                actual: written.diff_id.clone(),
            });
        }
        findings.extend(
            written
                .findings
                .iter()
                .map(|f| super::leak::Finding { location: f.location.replace(&format!("`{key}`"), &format!("{}", i + 1)), form: f.form }),
        );
        out.push(Layer {
            desc: Descriptor {
                media_type: media::OCI_LAYER_GZIP.into(),
                digest: written.digest.clone(),
                size: written.size,
                platform: None,
                artifact_type: None,
                annotations: BTreeMap::new(),
            },
            source: LayerSource::File(written.path.clone()),
        });
    }
    Ok(Assembled { config, layers: out, bases: Vec::new(), findings })
}

fn normalise(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

/// The base images the Engine used, pinned by the digests it knows them by.
async fn bases(docker: &Docker, req: &BuildRequest, file: &Dockerfile) -> Vec<Base> {
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    for (name, default) in &file.global_args {
        let value = req.build_args.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).or_else(|| default.clone()).unwrap_or_default();
        global.insert(name.clone(), value);
    }
    let mut out: Vec<Base> = Vec::new();
    for (i, stage) in file.stages.iter().enumerate() {
        let Ok(from) = dockerfile::expand(&stage.from, &global, '\\') else { continue };
        if from.eq_ignore_ascii_case("scratch") || file.stages[..i].iter().any(|s| s.name.as_deref() == Some(&from.to_ascii_lowercase())) {
            continue;
        }
        let Ok(reference) = Reference::parse(&from) else { continue };
        let digest = match &reference.digest {
            Some(d) => Some(d.clone()),
            None => docker.inspect_image(&from).await.ok().and_then(|img| {
                img.repo_digests.unwrap_or_default().into_iter().find_map(|rd| rd.split_once('@').map(|(_, d)| d.to_owned()))
            }),
        };
        if let Some(digest) = digest
            && !out.iter().any(|b| b.digest == digest)
        {
            out.push(Base { host: reference.registry.clone(), repo: reference.repository.clone(), digest });
        }
    }
    out
}
