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
        req("repo", "the deployment repository: a path, git://, https:// or ssh URL"),
        opt("branch", "the branch to change (default: the remote's default branch)"),
        req("file", "the file to change, relative to the repository's root"),
        opt("key", "a key path in a YAML file (Helm values), e.g. `image.tag`"),
        opt("kustomize_image", "the `name` of an `images:` entry of a kustomization.yaml"),
        opt("imagepolicy", "a Flux setter marker: `ns:name` (the whole image) or `ns:name:tag` / `ns:name:name`"),
        req("value", "the new value (for kustomize and Flux, an image reference, a tag or a digest)"),
        opt("credentials_variable", "the variable holding an https token (`TOKEN` or `USER:TOKEN`)"),
        opt("ssh_key_variable", "the variable holding an ssh private key"),
        opt("author", "the commit author, `Name <email>` (default: `piste <piste@localhost>`)"),
        opt("message", "the commit message's first line"),
    ],
    one_of: &[&["key", "kustomize_image", "imagepolicy"]],
};

/// Every built-in step, by name.
pub const CATALOGUE: &[StepDef] = &[GITOPS_BUMP];

/// The step called `name` (`piste/gitops-bump@v1`).
pub fn find(name: &str) -> Option<&'static StepDef> {
    CATALOGUE.iter().find(|s| s.name == name)
}

/// The names of the built-in steps, for messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    CATALOGUE.iter().map(|s| s.name)
}
