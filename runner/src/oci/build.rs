//! `piste/image-build@v1`: a Dockerfile to an image pushed to every destination.
//! Without `RUN`, the image is assembled here ([`assemble`]); with `RUN`, the Docker Engine
//! builds it ([`super::engine`]). Either way the leak gate, the push, the provenance and the
//! signature are the same code.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use globset::GlobBuilder;

use super::dockerfile::{self, Dockerfile, Form, Op};
use super::ignore::Ignore;
use super::image::{Descriptor, History, ImageConfig, Index, Manifest, media, oci_layer_type};
use super::layer::{self, Entry, Kind};
use super::leak::{self, Finding, Scanner};
use super::push::{Registries, push_image};
use super::reference::Reference;
use super::registry::{RegistryOptions, short};
use super::rootfs::{LayerCache, RootFs, Wanted};
use super::{Log, OciError, blocking, sign};

/// What to build and where to push it.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The build context (a directory of the job's workspace).
    pub context: PathBuf,
    /// The Dockerfile, relative to the context or absolute.
    pub dockerfile: PathBuf,
    /// Where to push: `registry/repo:tag`, one manifest tagged at each.
    pub destinations: Vec<String>,
    /// `--build-arg` values.
    pub build_args: Vec<(String, String)>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Every date in the image (file mtimes, `created`, history).
    pub source_date_epoch: u64,
    /// Extra labels of the image.
    pub labels: Vec<(String, String)>,
    /// `org.opencontainers.image.source` (the project's URL).
    pub source: Option<String>,
    /// `org.opencontainers.image.revision` (the commit).
    pub revision: Option<String>,
    pub registry: RegistryOptions,
    /// The job's masked values: none may be in the image (raw, base64, percent-encoded).
    pub masked: Vec<String>,
    /// PEM of an ECDSA P-256 key (PKCS#8): signs the image and its provenance; `None`:
    /// unsigned, and the log says so.
    pub signing_key: Option<String>,
    /// What the provenance says about the build.
    pub provenance: Provenance,
    /// Pull-through mirrors of Docker Hub (`host[/path]`, kaniko's `--registry-mirror`): images
    /// of `docker.io` that the native builder reads (`FROM`, `COPY --from`) are fetched from the
    /// first that has them, then from Docker Hub.
    pub registry_mirrors: Vec<String>,
    /// The Docker Engine for `RUN` builds (`unix:///…` or `tcp://…`); `None`: `DOCKER_HOST`,
    /// else the default socket.
    pub docker_host: Option<String>,
    /// A directory for the layers being built (removed after; empty: the system's temp dir).
    pub scratch: PathBuf,
}

/// Facts about the build for the SLSA provenance.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// `builder.id` (the runner's URI).
    pub builder_id: String,
    /// The pipeline and job (`invocationId`).
    pub invocation_id: String,
    pub job: String,
    pub runner: String,
    /// `(path, sha256 hex)` of the pipeline file.
    pub pipeline_file: Option<(String, String)>,
    /// The step's inputs as given.
    pub inputs: serde_json::Value,
    /// RFC 3339 start time of the job.
    pub started_on: Option<String>,
}

/// What a build pushed.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// `sha256:…` of the manifest (`IMAGE_DIGEST`).
    pub digest: String,
    /// Every reference tagged.
    pub references: Vec<String>,
    /// `registry/repo@sha256:…` of the first destination (`IMAGE_REF`).
    pub image_ref: String,
    /// Base images (`name@digest`).
    pub base_images: Vec<String>,
    /// The in-toto statement (SLSA v1.0 provenance).
    pub provenance: serde_json::Value,
    /// Whether `.sig` and `.att` were attached.
    pub signed: bool,
    /// Whether the image was assembled natively (else by the Docker Engine).
    pub native: bool,
}

/// An image ready to push: its configuration and layers, where each layer's bytes are.
pub struct Assembled {
    pub config: Vec<u8>,
    pub layers: Vec<Layer>,
    pub bases: Vec<Base>,
    /// Masked values found in new layers.
    pub findings: Vec<Finding>,
}

pub struct Layer {
    pub desc: Descriptor,
    pub source: LayerSource,
}

#[derive(Debug, Clone)]
pub enum LayerSource {
    /// Built here, on disk.
    File(PathBuf),
    /// A base image's layer, in `repo` of registry `host`.
    Remote { host: String, repo: String },
}

/// A base image, pinned.
#[derive(Debug, Clone)]
pub struct Base {
    pub host: String,
    pub repo: String,
    pub digest: String,
}

impl Base {
    pub fn pinned(&self) -> String {
        format!("{}/{}@{}", self.host, self.repo, self.digest)
    }
}

/// Builds `req`'s Dockerfile and pushes it to every destination.
pub async fn build_and_push(req: &BuildRequest, log: &Log) -> Result<BuildOutput, OciError> {
    let started = jiff::Timestamp::now();
    let path = if req.dockerfile.is_absolute() { req.dockerfile.clone() } else { req.context.join(&req.dockerfile) };
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| OciError::Io { what: format!("cannot read the Dockerfile `{}`", path.display()), source: e })?;
    let file =
        dockerfile::parse(&text).map_err(|e| OciError::Dockerfile { path: path.clone(), line: e.line, col: e.col, message: e.message })?;
    if req.destinations.is_empty() {
        return Err(OciError::Build("no destination: give at least one `registry/repository:tag`".into()));
    }
    let dests = req.destinations.iter().map(|d| Reference::parse(d)).collect::<Result<Vec<_>, _>>()?;
    if let Some(d) = dests.iter().find(|d| d.tag.is_none()) {
        return Err(OciError::Build(format!("destination `{d}` has no tag: piste pushes to tags (the digest is the result)")));
    }
    let scratch = if req.scratch.as_os_str().is_empty() { std::env::temp_dir() } else { req.scratch.clone() };
    std::fs::create_dir_all(&scratch).map_err(|e| OciError::Io { what: format!("cannot create `{}`", scratch.display()), source: e })?;
    let work = tempfile::Builder::new()
        .prefix("image-build-")
        .tempdir_in(&scratch)
        .map_err(|e| OciError::Io { what: format!("cannot create a directory in `{}`", scratch.display()), source: e })?;
    let client = super::registry::Client::new(req.registry.clone(), log.clone())?;
    let regs = Registries::new(client);
    let native = !file.has_run();
    let image = if native {
        log.line(format!("assembling `{}` natively (no `RUN`)", path.display())).await;
        assemble(req, &file, &path, &regs, work.path(), log).await?
    } else {
        log.line(format!("`{}` has `RUN`: building with the Docker Engine", path.display())).await;
        super::engine::build(req, &file, &path, work.path(), log).await?
    };
    // The leak gate: nothing leaves before it passes.
    let mut findings = image.findings.clone();
    if let Some(scanner) = Scanner::new(&req.masked) {
        let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap_or_default();
        findings.extend(leak::scan_config(&scanner, &config));
    }
    if !findings.is_empty() {
        let sarif = leak::sarif(&findings, &req.destinations[0]);
        for f in &findings {
            log.line(format!("leak gate: {f}")).await;
        }
        return Err(OciError::Leak { findings, sarif });
    }
    let pushed = push_image(&regs, &image, &dests, log).await?;
    let statement = sign::provenance(req, &dests, &pushed.digest, &image.bases, started, jiff::Timestamp::now());
    let signed = match &req.signing_key {
        Some(pem) => {
            let key = sign::SigningKey::from_pem(pem)?;
            for (host, repo) in pushed.repositories.iter() {
                let session = regs.get(host).session(repo, true, &[]).await?;
                sign::attach(&session, repo, &pushed.digest, pushed.manifest_size, &key, &statement, req.source_date_epoch, log).await?;
            }
            true
        }
        None => {
            log.line(
                "no signing key (the server's `[signing] key_file`, `piste run --sign-key FILE`, or `signing_key_variable`): the image is not signed and no provenance is attached",
            )
            .await;
            false
        }
    };
    let image_ref = dests[0].pinned(&pushed.digest);
    log.line(format!("pushed {image_ref}")).await;
    Ok(BuildOutput {
        digest: pushed.digest,
        references: dests.iter().map(|d| d.to_string()).collect(),
        image_ref,
        base_images: image.bases.iter().map(Base::pinned).collect(),
        provenance: statement,
        signed,
        native,
    })
}

/// One stage as it is being built.
#[derive(Clone)]
struct StageState {
    config: ImageConfig,
    layers: Vec<Layer>,
    /// Files the stage added, for `COPY --from`.
    files: BTreeMap<String, Entry>,
    base: Option<Base>,
    /// The base image's layers, for `COPY --from` of files the stage did not add.
    base_layers: Vec<Descriptor>,
    shell: Vec<String>,
}

impl Clone for Layer {
    fn clone(&self) -> Self {
        Layer { desc: self.desc.clone(), source: self.source.clone() }
    }
}

/// Assembles a Dockerfile without `RUN`.
pub async fn assemble(
    req: &BuildRequest,
    file: &Dockerfile,
    path: &Path,
    regs: &Registries,
    work: &Path,
    log: &Log,
) -> Result<Assembled, OciError> {
    let at = |line: usize, col: usize, message: String| OciError::Dockerfile { path: path.to_owned(), line, col, message };
    let build_args: HashMap<&str, &str> = req.build_args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    for (name, default) in &file.global_args {
        let value = match build_args.get(name.as_str()) {
            Some(v) => Some((*v).to_owned()),
            None => default.as_ref().map(|d| dockerfile::expand(d, &global, '\\')).transpose().map_err(|e| at(1, 1, e))?,
        };
        global.insert(name.clone(), value.unwrap_or_default());
    }
    let target = match &req.target {
        None => file.stages.len() - 1,
        Some(t) => file
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&t.to_ascii_lowercase()))
            .ok_or_else(|| OciError::Build(format!("target stage `{t}` is not in `{}`", path.display())))?,
    };
    let scanner = Scanner::new(&req.masked);
    let ignore = Ignore::load(&req.context)?;
    let epoch = req.source_date_epoch;
    let created =
        jiff::Timestamp::from_second(epoch as i64).map_err(|e| OciError::Build(format!("SOURCE_DATE_EPOCH {epoch}: {e}")))?.to_string();
    let mut states: Vec<StageState> = Vec::new();
    let mut layer_no = 0;
    let mut findings = Vec::new();
    // Images read by `COPY --from=<image>` (provenance), and the layers fetched to read them.
    let mut copied_from: Vec<Base> = Vec::new();
    let cache = LayerCache::new(work.join("read-layers"));
    for (index, stage) in file.stages.iter().enumerate().take(target + 1) {
        let from = dockerfile::expand(&stage.from, &global, '\\').map_err(|e| at(stage.line, stage.col, e))?;
        let earlier = file.stages[..index].iter().position(|s| s.name.as_deref() == Some(&from.to_ascii_lowercase()));
        let mut state = if from.eq_ignore_ascii_case("scratch") {
            StageState {
                config: ImageConfig::scratch(),
                layers: Vec::new(),
                files: BTreeMap::new(),
                base: None,
                base_layers: Vec::new(),
                shell: default_shell(),
            }
        } else if let Some(i) = earlier.or_else(|| from.parse::<usize>().ok().filter(|i| *i < index)) {
            states[i].clone()
        } else {
            let reference = Reference::parse(&from).map_err(|e| at(stage.line, stage.col, e.to_string()))?;
            let (config, layers, base) = pull_image(regs, &reference, &req.registry_mirrors, log).await?;
            let base_layers = layers.iter().map(|l| l.desc.clone()).collect();
            StageState { config, layers, files: BTreeMap::new(), base: Some(base), base_layers, shell: default_shell() }
        };
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        let mut cmd_set = false;
        for ins in &stage.instructions {
            let at = |m: String| at(ins.line, ins.col, m);
            let mut vars = args.clone();
            for kv in state.config.config.env.iter().flatten() {
                if let Some((k, v)) = kv.split_once('=') {
                    vars.insert(k.to_owned(), v.to_owned());
                }
            }
            let x = |w: &str| dockerfile::expand(w, &vars, '\\').map_err(&at);
            let cfg = &mut state.config.config;
            let mut empty_layer = true;
            match &ins.op {
                Op::Arg(list) => {
                    for (name, default) in list {
                        let value = match (build_args.get(name.as_str()), default) {
                            (Some(v), _) => (*v).to_owned(),
                            (None, Some(d)) => x(d)?,
                            (None, None) => global.get(name).cloned().unwrap_or_default(),
                        };
                        args.insert(name.clone(), value);
                    }
                }
                Op::Env(pairs) => {
                    let env = cfg.env.get_or_insert_with(Vec::new);
                    for (k, raw) in pairs {
                        let v = x(raw)?;
                        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                        env.push(format!("{k}={v}"));
                    }
                }
                Op::Label(pairs) => {
                    let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
                    for (k, v) in pairs {
                        labels.insert(x(k)?, x(v)?);
                    }
                }
                Op::Workdir(dir) => {
                    let dir = x(dir)?;
                    let base = cfg.working_dir.clone().unwrap_or_else(|| "/".into());
                    cfg.working_dir = Some(clean_abs(&if dir.starts_with('/') { dir } else { format!("{base}/{dir}") }));
                }
                Op::User(u) => cfg.user = Some(x(u)?),
                Op::Expose(ports) => {
                    let map = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
                    for p in ports {
                        let p = x(p)?;
                        let p = if p.contains('/') { p } else { format!("{p}/tcp") };
                        map.insert(p, serde_json::json!({}));
                    }
                }
                Op::Volume(paths) => {
                    let map = cfg.volumes.get_or_insert_with(BTreeMap::new);
                    for p in paths {
                        map.insert(x(p)?, serde_json::json!({}));
                    }
                }
                Op::StopSignal(s) => cfg.stop_signal = Some(x(s)?),
                Op::Maintainer(m) => state.config.author = Some(m.clone()),
                Op::Shell(words) => state.shell = words.clone(),
                Op::Entrypoint(form) => {
                    cfg.entrypoint = Some(command(form, &state.shell));
                    if !cmd_set {
                        cfg.cmd = None;
                    }
                }
                Op::Cmd(form) => {
                    cfg.cmd = Some(command(form, &state.shell));
                    cmd_set = true;
                }
                Op::Run(_) => return Err(at("`RUN` needs the Docker Engine".into())),
                Op::Copy { sources, dest, from, chown, chmod, add } => {
                    let owner = chown.as_deref().map(|c| parse_chown(&x(c)?).map_err(&at)).transpose()?;
                    let mode = chmod
                        .as_deref()
                        .map(|c| u32::from_str_radix(&x(c)?, 8).map_err(|_| at(format!("`--chmod={c}` is not an octal mode"))))
                        .transpose()?;
                    let sources = sources.iter().map(|s| x(s)).collect::<Result<Vec<_>, _>>()?;
                    let dest = x(dest)?;
                    let workdir = cfg.working_dir.clone().unwrap_or_else(|| "/".into());
                    let dest_abs = clean_abs(&if dest.starts_with('/') { dest.clone() } else { format!("{workdir}/{dest}") });
                    let dest_is_dir = dest.ends_with('/')
                        || dest == "."
                        || dest.ends_with("/.")
                        || sources.len() > 1
                        || sources.iter().any(|s| is_glob(s));
                    let mut entries = match from {
                        Some(from_ref) => {
                            let written = x(from_ref)?;
                            let name = written.to_ascii_lowercase();
                            let stage_index = file.stages[..index]
                                .iter()
                                .position(|s| s.name.as_deref() == Some(&name))
                                .or_else(|| name.parse::<usize>().ok().filter(|i| *i < index));
                            let wanted = || -> Result<Wanted, OciError> {
                                let rel = sources.iter().map(|s| clean_rel(s)).collect::<Result<Vec<_>, _>>().map_err(&at)?;
                                Wanted::new(&rel).map_err(&at)
                            };
                            match stage_index {
                                Some(i) => {
                                    let from_state = &states[i];
                                    match from_files(&from_state.files, &sources, &dest_abs, dest_is_dir) {
                                        Ok(e) => e,
                                        // Not among the files the stage added: its base image's, under them.
                                        Err(_) if from_state.base.is_some() => {
                                            let base = from_state.base.as_ref().expect("checked");
                                            let mut fs =
                                                cache.read(regs, &base.host, &base.repo, &from_state.base_layers, &wanted()?, log).await?;
                                            fs.files.extend(from_state.files.iter().map(|(k, v)| (k.clone(), v.clone())));
                                            from_files(&fs.files, &sources, &dest_abs, dest_is_dir).map_err(|e| {
                                                at(missing_hint(
                                                    format!("{e} is neither in stage `{name}` nor in its base image"),
                                                    &fs,
                                                    &sources,
                                                ))
                                            })?
                                        }
                                        Err(e) if e.starts_with('`') => {
                                            return Err(at(format!("{e} is not among the files stage `{name}` (`FROM scratch`) added")));
                                        }
                                        Err(e) => return Err(at(e)),
                                    }
                                }
                                None => {
                                    // `--from=<image>`: its files, read from its layers.
                                    let reference = Reference::parse(&written).map_err(|e| {
                                        at(format!("`--from={written}` is neither an earlier stage nor an image reference: {e}"))
                                    })?;
                                    let (_, layers, base) = pull_image(regs, &reference, &req.registry_mirrors, log).await?;
                                    let descs: Vec<Descriptor> = layers.iter().map(|l| l.desc.clone()).collect();
                                    let fs = cache.read(regs, &base.host, &base.repo, &descs, &wanted()?, log).await?;
                                    copied_from.push(base);
                                    from_files(&fs.files, &sources, &dest_abs, dest_is_dir)
                                        .map_err(|e| at(missing_hint(format!("{e} is not in the image `{written}`"), &fs, &sources)))?
                                }
                            }
                        }
                        None => from_context(&req.context, &ignore, &sources, &dest_abs, dest_is_dir, *add).map_err(&at)?,
                    };
                    for e in entries.iter_mut() {
                        if let Some((uid, gid)) = owner {
                            e.uid = uid;
                            e.gid = gid;
                        }
                        if let Some(m) = mode
                            && e.kind != Kind::Dir
                            && !matches!(e.kind, Kind::Symlink(_))
                        {
                            e.mode = m;
                        }
                    }
                    add_parents(&mut entries);
                    layer_no += 1;
                    let what = format!("layer {} (`{}`, {}:{})", state.layers.len() + 1, ins.text, path.display(), ins.line);
                    let out = work.join(format!("layer-{layer_no}.tar.gz"));
                    let scanner_c = scanner.clone();
                    let entries_c = entries.clone();
                    let written = blocking(move || {
                        let mut entries = entries_c;
                        layer::write(&mut entries, epoch, &out, scanner_c.as_ref(), &what)
                    })
                    .await?;
                    log.line(format!(
                        "{}: {} entries, {} ({} uncompressed), {}",
                        ins.text,
                        entries.len(),
                        human(written.size),
                        human(written.tar_size),
                        short(&written.digest)
                    ))
                    .await;
                    findings.extend(written.findings.iter().cloned());
                    for e in entries {
                        state.files.insert(e.path.clone(), e);
                    }
                    state.config.rootfs.diff_ids.push(written.diff_id.clone());
                    state.layers.push(Layer {
                        desc: Descriptor {
                            media_type: media::OCI_LAYER_GZIP.into(),
                            digest: written.digest.clone(),
                            size: written.size,
                            platform: None,
                            artifact_type: None,
                            annotations: BTreeMap::new(),
                        },
                        source: LayerSource::File(written.path),
                    });
                    empty_layer = false;
                }
            }
            state.config.history.push(History {
                created: Some(created.clone()),
                created_by: Some(ins.text.clone()),
                comment: None,
                empty_layer,
            });
        }
        states.push(state);
    }
    let mut state = states.swap_remove(target);
    let labels = state.config.config.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in &req.labels {
        labels.insert(k.clone(), v.clone());
    }
    if let Some(s) = &req.source {
        labels.insert("org.opencontainers.image.source".into(), s.clone());
    }
    if let Some(r) = &req.revision {
        labels.insert("org.opencontainers.image.revision".into(), r.clone());
    }
    if let Some(base) = &state.base {
        labels.insert("org.opencontainers.image.base.digest".into(), base.digest.clone());
        labels.insert("org.opencontainers.image.base.name".into(), format!("{}/{}", base.host, base.repo));
    }
    state.config.created = Some(created);
    let stage_bases = states.iter().chain(std::iter::once(&state)).filter_map(|s| s.base.clone());
    let bases: Vec<Base> = stage_bases.chain(copied_from).fold(Vec::new(), |mut v, b| {
        if !v.iter().any(|x: &Base| x.digest == b.digest) {
            v.push(b);
        }
        v
    });
    Ok(Assembled { config: state.config.to_bytes(), layers: state.layers, bases, findings })
}

fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

fn command(form: &Form, shell: &[String]) -> Vec<String> {
    match form {
        Form::Exec(words) => words.clone(),
        Form::Shell(text) => shell.iter().cloned().chain(std::iter::once(text.clone())).collect(),
    }
}

/// Fetches an image's manifest and configuration, from Docker Hub's mirrors first when it is
/// a `docker.io` image and mirrors are given (then from Docker Hub itself).
async fn pull_image(
    regs: &Registries,
    reference: &Reference,
    mirrors: &[String],
    log: &Log,
) -> Result<(ImageConfig, Vec<Layer>, Base), OciError> {
    if reference.registry == "docker.io" {
        for mirror in mirrors {
            let (host, prefix) = mirror.trim_end_matches('/').split_once('/').unwrap_or((mirror.trim_end_matches('/'), ""));
            let repository = if prefix.is_empty() { reference.repository.clone() } else { format!("{prefix}/{}", reference.repository) };
            let mirrored = Reference { registry: host.to_owned(), repository, ..reference.clone() };
            match pull_base(regs, &mirrored, log).await {
                Ok(found) => return Ok(found),
                Err(e) => log.line(format!("registry mirror `{mirror}` has no `{reference}` ({e}); trying the next")).await,
            }
        }
    }
    pull_base(regs, reference, log).await
}

/// Fetches a base image's manifest (linux/amd64 from an index) and configuration.
async fn pull_base(regs: &Registries, reference: &Reference, log: &Log) -> Result<(ImageConfig, Vec<Layer>, Base), OciError> {
    let reg = regs.get(&reference.registry);
    let session = reg.session(&reference.repository, false, &[]).await?;
    let repo = &reference.repository;
    let mut fetched = session.get_manifest(repo, reference.target()).await?;
    if fetched.media_type.contains("index") || fetched.media_type.contains("manifest.list") {
        let index: Index =
            serde_json::from_slice(&fetched.bytes).map_err(|e| OciError::Build(format!("the index of `{reference}` is not valid: {e}")))?;
        let pick = index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
            .ok_or_else(|| OciError::Build(format!("`{reference}` has no linux/amd64 image")))?;
        super::reference::check_digest(&pick.digest).map_err(|e| OciError::Build(format!("the index of `{reference}`: {e}")))?;
        fetched = session.get_manifest(repo, &pick.digest).await?;
    }
    let manifest: Manifest =
        serde_json::from_slice(&fetched.bytes).map_err(|e| OciError::Build(format!("the manifest of `{reference}` is not valid: {e}")))?;
    // Digests from a registry are data: checked before they name a URL path or a file.
    for d in manifest.layers.iter().chain(std::iter::once(&manifest.config)) {
        super::reference::check_digest(&d.digest).map_err(|e| OciError::Build(format!("the manifest of `{reference}`: {e}")))?;
    }
    let config_bytes = session.get_blob_bytes(repo, &manifest.config.digest).await?;
    let config = ImageConfig::parse(&config_bytes, &format!("`{reference}`"))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(OciError::Build(format!(
            "`{reference}`: its configuration lists {} layers, its manifest {}",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    log.line(format!("base `{reference}`: {} ({} layers)", fetched.digest, manifest.layers.len())).await;
    let layers = manifest
        .layers
        .into_iter()
        .map(|mut d| {
            d.media_type = oci_layer_type(&d.media_type).to_owned();
            Layer { desc: d, source: LayerSource::Remote { host: reference.registry.clone(), repo: repo.clone() } }
        })
        .collect();
    Ok((config, layers, Base { host: reference.registry.clone(), repo: repo.clone(), digest: fetched.digest }))
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// `/a/./b/../c/` → `/a/c`.
fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A source path relative to its root, refusing to leave it.
fn clean_rel(p: &str) -> Result<String, String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("`{p}` is outside the build context"));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn parse_chown(spec: &str) -> Result<(u64, u64), String> {
    let (u, g) = spec.split_once(':').unwrap_or((spec, spec));
    match (u.parse::<u64>(), g.parse::<u64>()) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => Err(format!(
            "`--chown={spec}`: the native builder takes numeric ids (`--chown=1000:1000`): it has no `/etc/passwd` to read names from"
        )),
    }
}

/// Entries for `COPY sources dest` from the context.
fn from_context(
    context: &Path,
    ignore: &Ignore,
    sources: &[String],
    dest: &str,
    dest_is_dir: bool,
    add: bool,
) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for src in sources {
        if add && (src.starts_with("http://") || src.starts_with("https://") || src.starts_with("git@")) {
            return Err(format!("`ADD {src}`: remote sources are not supported (download it in an earlier job and `COPY` it)"));
        }
        let rel = clean_rel(src)?;
        let matches: Vec<String> = if is_glob(&rel) {
            let glob = GlobBuilder::new(&rel)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("`{src}` is not a valid pattern: {e}"))?
                .compile_matcher();
            let mut all = Vec::new();
            walk(context, "", ignore, &mut all)?;
            let found: Vec<String> = all.into_iter().filter(|(p, _)| glob.is_match(p)).map(|(p, _)| p).collect();
            if found.is_empty() {
                return Err(format!("`{src}` matches no file of the build context"));
            }
            found
        } else {
            if !rel.is_empty() && ignore.excluded(&rel) {
                return Err(format!("`{src}` is excluded by `.dockerignore`"));
            }
            vec![rel]
        };
        for rel in matches {
            let full = context.join(&rel);
            let meta = std::fs::symlink_metadata(&full)
                .map_err(|e| format!("`{src}`: `{}` is not in the build context ({e})", if rel.is_empty() { "." } else { &rel }))?;
            if meta.is_dir() {
                let mut below = Vec::new();
                walk(context, &rel, ignore, &mut below)?;
                let root = dest.trim_end_matches('/');
                out.push(dir_entry(root));
                for (p, meta) in below {
                    let under = if rel.is_empty() { p.as_str() } else { &p[rel.len() + 1..] };
                    out.push(entry(&context.join(&p), &format!("{root}/{under}"), &meta)?);
                }
            } else {
                if add && is_archive(&full) {
                    return Err(format!(
                        "`ADD {src}`: a local archive is extracted by `ADD`, which the native builder does not do: extract it first, or use `COPY`"
                    ));
                }
                let name = rel.rsplit('/').next().unwrap_or(&rel);
                let target = if dest_is_dir { format!("{}/{name}", dest.trim_end_matches('/')) } else { dest.to_owned() };
                out.push(entry(&full, &target, &meta)?);
            }
        }
    }
    Ok(out)
}

fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 262];
    let n = std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut head)).unwrap_or(0);
    (n >= 2 && head[..2] == [0x1f, 0x8b])
        || (n >= 262 && &head[257..262] == b"ustar")
        || (n >= 3 && &head[..3] == b"BZh")
        || (n >= 6 && head[..6] == [0xfd, b'7', b'z', b'X', b'Z', 0])
}

fn dir_entry(abs: &str) -> Entry {
    Entry { path: clean_abs(abs).trim_start_matches('/').to_owned(), kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0 }
}

fn entry(full: &Path, target: &str, meta: &std::fs::Metadata) -> Result<Entry, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = clean_abs(target).trim_start_matches('/').to_owned();
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        let t = std::fs::read_link(full).map_err(|e| format!("cannot read the link `{}`: {e}", full.display()))?;
        Kind::Symlink(t.to_string_lossy().into_owned())
    } else if ft.is_file() {
        Kind::File { source: full.to_owned(), size: meta.len() }
    } else {
        return Err(format!("`{}` is neither a file, a directory nor a link", full.display()));
    };
    let mode = match kind {
        Kind::Dir => 0o755,
        Kind::Symlink(_) => 0o777,
        Kind::File { .. } => layer::file_mode(meta.permissions().mode()),
    };
    Ok(Entry { path, kind, mode, uid: 0, gid: 0 })
}

/// Every path under `rel` (relative to `root`), not ignored, with its metadata; symlinks are
/// not followed.
fn walk(root: &Path, rel: &str, ignore: &Ignore, out: &mut Vec<(String, std::fs::Metadata)>) -> Result<(), String> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?;
    names.sort();
    for name in names {
        let name = name.to_str().ok_or_else(|| format!("a file name in `{}` is not UTF-8", dir.display()))?.to_owned();
        let p = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let meta = std::fs::symlink_metadata(root.join(&p)).map_err(|e| format!("cannot read `{p}`: {e}"))?;
        let excluded = ignore.excluded(&p);
        if meta.is_dir() && (!excluded || ignore.has_exceptions()) {
            if !excluded {
                out.push((p.clone(), meta));
            }
            walk(root, &p, ignore, out)?;
        } else if !excluded {
            out.push((p, meta));
        }
    }
    Ok(())
}

/// `e` (a `COPY --from` source not found) with a hint when a link of the image is in the way.
fn missing_hint(e: String, fs: &RootFs, sources: &[String]) -> String {
    let hint = sources.iter().filter_map(|s| clean_rel(s).ok()).find_map(|s| fs.missing(&s));
    match hint {
        Some(h) => format!("{e}: {h}"),
        None => e,
    }
}

/// Entries for `COPY --from=… sources dest` from `files` (what a stage added, or an image's).
/// The error names the source not found, in backticks, for the caller to finish the sentence.
fn from_files(files: &BTreeMap<String, Entry>, sources: &[String], dest: &str, dest_is_dir: bool) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for src in sources {
        let rel = clean_rel(src)?;
        let matched: Vec<&String> = if is_glob(&rel) {
            let glob = GlobBuilder::new(&rel).literal_separator(true).build().map_err(|e| format!("`{src}`: {e}"))?.compile_matcher();
            files.keys().filter(|k| glob.is_match(k)).collect()
        } else {
            files.keys().filter(|k| **k == rel).collect()
        };
        let under: Vec<&String> = files.keys().filter(|k| rel.is_empty() || k.starts_with(&format!("{rel}/"))).collect();
        if matched.is_empty() && under.is_empty() {
            return Err(format!("`{src}`"));
        }
        let root = dest.trim_end_matches('/');
        for key in matched {
            let e = &files[key];
            if e.kind == Kind::Dir {
                out.push(dir_entry(root));
                for k in files.keys().filter(|k| k.starts_with(&format!("{key}/"))) {
                    let mut c = files[k].clone();
                    c.path = clean_abs(&format!("{root}/{}", &k[key.len() + 1..])).trim_start_matches('/').to_owned();
                    out.push(c);
                }
            } else {
                let name = key.rsplit('/').next().unwrap_or(key);
                let mut c = e.clone();
                c.path =
                    clean_abs(&if dest_is_dir { format!("{root}/{name}") } else { dest.to_owned() }).trim_start_matches('/').to_owned();
                out.push(c);
            }
        }
        if !files.contains_key(&rel) {
            // A directory the stage only filled (its entry came from a parent's creation).
            out.push(dir_entry(root));
            for k in under {
                let mut c = files[k].clone();
                let tail = if rel.is_empty() { k.as_str() } else { &k[rel.len() + 1..] };
                c.path = clean_abs(&format!("{root}/{tail}")).trim_start_matches('/').to_owned();
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Adds the missing parent directories of every entry, and keeps the last of duplicates.
fn add_parents(entries: &mut Vec<Entry>) {
    let mut by_path: BTreeMap<String, Entry> = BTreeMap::new();
    for e in entries.drain(..) {
        if e.path.is_empty() {
            continue;
        }
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            by_path.entry(parent.to_owned()).or_insert_with(|| dir_entry(parent));
            p = parent;
        }
        by_path.insert(e.path.clone(), e);
    }
    entries.extend(by_path.into_values());
}

/// `12.3 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_entries_follow_docker_rules() {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ctx.path().join("app/sub")).unwrap();
        std::fs::write(ctx.path().join("app/a.txt"), "a").unwrap();
        std::fs::write(ctx.path().join("app/sub/b.log"), "b").unwrap();
        std::fs::write(ctx.path().join("top.txt"), "t").unwrap();
        let ignore = Ignore::parse("**/*.log\n").unwrap();
        let mut e = from_context(ctx.path(), &ignore, &["app".into()], "/srv/", true, false).unwrap();
        add_parents(&mut e);
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["srv", "srv/a.txt", "srv/sub"]);
        let e = from_context(ctx.path(), &ignore, &["top.txt".into()], "/x/renamed", false, false).unwrap();
        assert_eq!(e[0].path, "x/renamed");
        let e = from_context(ctx.path(), &ignore, &["*.txt".into()], "/d/", true, false).unwrap();
        assert_eq!(e.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["d/top.txt"]);
        assert!(from_context(ctx.path(), &ignore, &["../etc/passwd".into()], "/x", false, false).unwrap_err().contains("outside"));
        assert!(from_context(ctx.path(), &ignore, &["app/sub/b.log".into()], "/x", false, false).unwrap_err().contains(".dockerignore"));
        assert!(parse_chown("app").is_err());
        assert_eq!(parse_chown("10").unwrap(), (10, 10));
        assert_eq!(clean_abs("/a/./b/../c/"), "/a/c");
    }
}
