//! `extra_args` of `piste/image-build@v1`: the flags the Cloud Pi Native kaniko template passes
//! as `$EXTRA_BUILD_ARGS $EXTRA_KANIKO_ARGS` (and `docker build`'s common ones), read as the
//! template's shell reads them — split on whitespace, no quotes — and mapped to what piste
//! does. A flag that would change what is built or where it goes is honoured or refused; one
//! that only tunes kaniko itself (caching, snapshots, logging) is ignored with a note.

/// What the flags ask for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExtraArgs {
    pub build_args: Vec<(String, String)>,
    pub target: Option<String>,
    pub labels: Vec<(String, String)>,
    /// `--destination`: more references to push to.
    pub destinations: Vec<String>,
    /// `--registry-mirror`: Docker Hub mirrors, `host[/path]`.
    pub mirrors: Vec<String>,
    /// `--insecure-registry`: hosts reached over plain HTTP.
    pub insecure: Vec<String>,
    /// `--insecure`: the destinations' registries are reached over plain HTTP.
    pub insecure_destinations: bool,
    /// Flags ignored, for the log.
    pub ignored: Vec<String>,
}

/// Flags that take a value (`--flag value` or `--flag=value`).
const WITH_VALUE: &[&str] = &[
    "build-arg",
    "target",
    "label",
    "destination",
    "registry-mirror",
    "insecure-registry",
    "platform",
    "custom-platform",
    "cache-repo",
    "cache-dir",
    "cache-ttl",
    "snapshot-mode",
    "verbosity",
    "log-format",
    "push-retry",
    "image-fs-extract-retry",
    "image-download-retry",
    "ignore-path",
    "digest-file",
    "image-name-with-digest-file",
    "image-name-tag-with-digest-file",
    "oci-layout-path",
    "kaniko-dir",
    "compression",
    "compression-level",
];

/// Flags of kaniko's own machinery: nothing to do here (piste caches blobs by digest, always
/// builds reproducibly, retries on its own, and outputs the digest as `IMAGE_DIGEST`).
const IGNORED: &[&str] = &[
    "force",
    "cache",
    "no-cache",
    "pull",
    "cache-repo",
    "cache-dir",
    "cache-ttl",
    "cache-copy-layers",
    "cache-run-layers",
    "compressed-caching",
    "snapshot-mode",
    "single-snapshot",
    "use-new-run",
    "cleanup",
    "reproducible",
    "verbosity",
    "log-format",
    "log-timestamp",
    "push-retry",
    "image-fs-extract-retry",
    "image-download-retry",
    "skip-unused-stages",
    "ignore-var-run",
    "ignore-path",
    "digest-file",
    "image-name-with-digest-file",
    "image-name-tag-with-digest-file",
    "kaniko-dir",
    "compression",
    "compression-level",
    "skip-default-registry-fallback",
];

impl ExtraArgs {
    /// Reads `text`; `var` gives a job variable (`--build-arg NAME` takes its value from it, as
    /// kaniko takes it from its environment).
    pub fn parse(text: &str, var: impl Fn(&str) -> Option<String>) -> Result<ExtraArgs, String> {
        let mut out = ExtraArgs::default();
        let mut words = text.split_whitespace();
        while let Some(word) = words.next() {
            let Some(flag) = word.strip_prefix("--") else {
                return Err(format!("`extra_args`: `{word}` is not a flag (`--build-arg NAME=value`, `--target STAGE`, …)"));
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let value = if WITH_VALUE.contains(&name) {
                match inline {
                    Some(v) => Some(v),
                    None => Some(words.next().map(str::to_string).ok_or_else(|| format!("`extra_args`: `--{name}` needs a value"))?),
                }
            } else {
                inline
            };
            let value = || value.clone().unwrap_or_default();
            let pair = |what: &str| -> Result<(String, String), String> {
                let v = value();
                v.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("`extra_args`: `--{what} {v}` is not `NAME=value`"))
            };
            match name {
                "build-arg" => {
                    let v = value();
                    out.build_args.push(match v.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (v.clone(), var(&v).unwrap_or_default()),
                    });
                }
                "target" => out.target = Some(value()),
                "label" => out.labels.push(pair("label")?),
                "destination" => out.destinations.push(value()),
                "registry-mirror" => out.mirrors.push(value()),
                "insecure-registry" => out.insecure.push(value()),
                "insecure" => out.insecure_destinations = true,
                "platform" | "custom-platform" => {
                    if value() != "linux/amd64" {
                        return Err(format!("`extra_args`: `--{name}={}`: piste builds linux/amd64 images only", value()));
                    }
                }
                "skip-tls-verify" | "skip-tls-verify-pull" | "skip-tls-verify-registry" | "insecure-pull" => {
                    return Err(format!(
                        "`extra_args`: `--{name}` is not supported: piste always verifies registries' certificates; give `ca_file` (the template's `CA_BUNDLE`) for a private authority, or `--insecure-registry HOST` for a plain-HTTP registry"
                    ));
                }
                "no-push" => return Err("`extra_args`: `--no-push`: `piste/image-build@v1` builds to push; leave it out".into()),
                "dockerfile" | "context" => {
                    return Err(format!(
                        "`extra_args`: `--{name}`: give the step's `{name}` input (the template's `DOCKERFILE` / `WORKING_DIR`)"
                    ));
                }
                n if IGNORED.contains(&n) => out.ignored.push(format!("--{n}")),
                n => {
                    return Err(format!(
                        "`extra_args`: `--{n}` is not a flag piste knows: it takes `--build-arg`, `--target`, `--label`, `--destination`, `--registry-mirror`, `--insecure-registry`, `--insecure`, and ignores kaniko's cache, snapshot and log flags"
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_extra_build_args_map_to_what_piste_does() {
        let var = |k: &str| (k == "NEXUS_USERNAME").then(|| "ci".to_string());
        let a = ExtraArgs::parse(
            "--target=production --build-arg DOCKERHUB_MIRROR_URL=mirror.example --build-arg NEXUS_USERNAME \
             --registry-mirror registry.dso.example/dockerhub --force --cache=true --label a=b --destination r.example/x:1",
            var,
        )
        .unwrap();
        assert_eq!(a.target.as_deref(), Some("production"));
        assert_eq!(a.build_args, [("DOCKERHUB_MIRROR_URL".into(), "mirror.example".into()), ("NEXUS_USERNAME".into(), "ci".into())]);
        assert_eq!(a.mirrors, ["registry.dso.example/dockerhub"]);
        assert_eq!(a.labels, [("a".into(), "b".into())]);
        assert_eq!(a.destinations, ["r.example/x:1"]);
        assert_eq!(a.ignored, ["--force", "--cache"]);
        assert_eq!(ExtraArgs::parse("", var).unwrap(), ExtraArgs::default());
        // Refused, each saying why.
        let err = |t: &str| ExtraArgs::parse(t, var).unwrap_err();
        assert!(err("--skip-tls-verify").contains("`ca_file`"));
        assert!(err("--no-push").contains("leave it out"));
        assert!(err("--target").contains("needs a value"));
        assert!(err("--frobnicate").contains("not a flag piste knows"));
        assert!(err("production").contains("is not a flag"));
        assert!(err("--label nolabel").contains("is not `NAME=value`"));
        assert!(err("--platform linux/arm64").contains("linux/amd64"));
    }
}
