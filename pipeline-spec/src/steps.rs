//! Built-in delivery steps: the catalogue `piste lint` checks a job's `run:` list against.
//!
//! A job's `run:` (GitLab's CI/CD Steps form) lists steps that run in order: a `script:` step
//! runs through the executor like a job's script; a `step: piste/NAME@v1` step is built into
//! the runner and runs in the runner process on the job's workspace. This module is data only
//! (names, inputs, which are required): the runner implements each entry
//! (`runner::steps::registry`), and a test there checks that both lists name the same steps.

/// One input of a built-in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputDef {
    pub name: &'static str,
    pub required: bool,
    /// What the input means, for error messages and the README.
    pub description: &'static str,
}

/// One built-in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDef {
    /// As written after `step:`, e.g. `piste/gitops-bump@v1`.
    pub name: &'static str,
    pub inputs: &'static [InputDef],
    /// Groups of inputs of which exactly one must be given.
    pub one_of: &'static [&'static [&'static str]],
}

impl StepDef {
    pub fn input(&self, name: &str) -> Option<&InputDef> {
        self.inputs.iter().find(|i| i.name == name)
    }

    pub fn input_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.inputs.iter().map(|i| i.name)
    }
}

const fn req(name: &'static str, description: &'static str) -> InputDef {
    InputDef { name, required: true, description }
}

const fn opt(name: &'static str, description: &'static str) -> InputDef {
    InputDef { name, required: false, description }
}

/// `piste/gitops-bump@v1`: change one value in a deployment repository, commit, push.
pub const GITOPS_BUMP: StepDef = StepDef {
    name: "piste/gitops-bump@v1",
    inputs: &[
        req("repo", "the deployment repository: an absolute path, `git://`, `https://`, `ssh://` or `user@host:path`"),
        opt("branch", "the branch to change (default: the remote's default branch)"),
        req("file", "the file to change, relative to the repository's root"),
        opt("key", "a key path in a YAML file (Helm values), e.g. `image.tag`; in `.argocd-source-<app>.yaml`, a `helm.parameters` name"),
        opt(
            "kustomize_image",
            "the `name` of an `images:` entry of a kustomization.yaml; in `.argocd-source-<app>.yaml`, a `kustomize.images` image",
        ),
        opt("imagepolicy", "a Flux setter marker: `ns:name` (the whole image) or `ns:name:tag` / `ns:name:name`"),
        req("value", "the new value (for kustomize and Flux, an image reference, a tag or a digest)"),
        opt("credentials_variable", "the variable holding an https token (`TOKEN` or `USER:TOKEN`)"),
        opt("ca_file", "https: a PEM bundle of certificate authorities to trust, relative to the checkout (or absolute)"),
        opt("ssh_key_variable", "the variable holding an ssh private key (no passphrase)"),
        opt(
            "known_hosts_variable",
            "ssh: the variable holding `known_hosts` lines for the server (default: the runner user's `~/.ssh/known_hosts`; host keys are always checked)",
        ),
        opt("author", "the commit author, `Name <email>` (default: `piste <piste@localhost>`)"),
        opt("message", "the commit message's first line"),
    ],
    one_of: &[&["key", "kustomize_image", "imagepolicy"]],
};

/// `piste/image-build@v1`: build an OCI image from a Dockerfile (natively without `RUN`, by the
/// runner's Docker Engine with it) and push it to every destination.
pub const IMAGE_BUILD: StepDef = StepDef {
    name: "piste/image-build@v1",
    inputs: &[
        opt("destinations", "where to push: `registry/repository:tag`, one or a list (one manifest, tagged at each)"),
        opt(
            "names",
            "instead of `destinations`: `name:tag` items separated by spaces, pushed under `repository` (`/` in a name becomes `-`, as the Cloud Pi Native kaniko template does)",
        ),
        opt("repository", "with `names`: the registry and path they are pushed under, e.g. `harbor.example/project`"),
        opt("context", "the build context, relative to the checkout (default `.`)"),
        opt("dockerfile", "the Dockerfile, relative to the context (default `Dockerfile`)"),
        opt("build_args", "`NAME=value` build arguments, one or a list"),
        opt(
            "extra_args",
            "kaniko / `docker build` flags as one string (the Cloud Pi Native template's `EXTRA_BUILD_ARGS`): `--build-arg`, `--target`, `--label`, `--destination`, `--registry-mirror`, `--insecure-registry`, `--insecure`; kaniko's cache, snapshot and log flags are ignored",
        ),
        opt("target", "the stage to build (default: the last)"),
        opt("labels", "`key=value` labels added to the image, one or a list"),
        opt("username_variable", "the variable holding the registry user (with `password_variable`)"),
        opt("password_variable", "the variable holding the registry password or robot token"),
        opt("auth_config_variable", "the variable holding a docker `config.json` (default: `DOCKER_AUTH_CONFIG`, else `DOCKER_AUTH`)"),
        opt("insecure_registries", "registries (`host:port`) reached over plain HTTP; loopback ones always may be"),
        opt("ca_file", "a PEM bundle of certificate authorities for the registries, relative to the checkout"),
        opt("signing_key_variable", "the variable holding a PEM ECDSA P-256 key: the image and its provenance are signed"),
    ],
    one_of: &[&["destinations", "names"]],
};

/// `piste/image-copy@v1`: copy (promote) an image by digest to other references.
pub const IMAGE_COPY: StepDef = StepDef {
    name: "piste/image-copy@v1",
    inputs: &[
        req("source", "the image to copy: `registry/repository:tag` or `…@sha256:…`"),
        req("destinations", "where to tag it: `registry/repository:tag`, one or a list"),
        opt("username_variable", "the variable holding the registry user (with `password_variable`)"),
        opt("password_variable", "the variable holding the registry password or robot token"),
        opt("auth_config_variable", "the variable holding a docker `config.json` (default: `DOCKER_AUTH_CONFIG`, else `DOCKER_AUTH`)"),
        opt("insecure_registries", "registries (`host:port`) reached over plain HTTP; loopback ones always may be"),
        opt("ca_file", "a PEM bundle of certificate authorities for the registries, relative to the checkout"),
    ],
    one_of: &[],
};

/// Every built-in step, by name.
pub const CATALOGUE: &[StepDef] = &[GITOPS_BUMP, IMAGE_BUILD, IMAGE_COPY];

/// The step called `name` (`piste/gitops-bump@v1`).
pub fn find(name: &str) -> Option<&'static StepDef> {
    CATALOGUE.iter().find(|s| s.name == name)
}

/// The names of the built-in steps, for messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    CATALOGUE.iter().map(|s| s.name)
}
