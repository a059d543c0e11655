//! Images: pull policies, and the names GitLab derives from an image reference.

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use super::super::PullPolicy;
use super::api_message;

/// Makes sure the image `name` is present according to `policies` (tried in order, GitLab's
/// semantics; empty means `[if-not-present]`) and returns its id. The error says what was
/// tried and why each attempt failed.
pub(super) async fn ensure_image(docker: &Docker, name: &str, policies: &[PullPolicy]) -> Result<String, String> {
    let policies = if policies.is_empty() { &[PullPolicy::IfNotPresent][..] } else { policies };
    let mut failures = Vec::new();
    for policy in policies {
        let pull = match policy {
            PullPolicy::Never | PullPolicy::IfNotPresent => match local_image(docker, name).await {
                Ok(Some(id)) => return Ok(id),
                Ok(None) if *policy == PullPolicy::Never => {
                    failures.push("is not present locally and the pull policy is `never`".to_owned());
                    continue;
                }
                Ok(None) => "is not present locally and could not be pulled",
                Err(e) => {
                    failures.push(format!("could not be inspected: {}", api_message(&e)));
                    continue;
                }
            },
            PullPolicy::Always => "could not be pulled (pull policy `always`)",
        };
        match pull_image(docker, name).await {
            Ok(()) => match local_image(docker, name).await {
                Ok(Some(id)) => return Ok(id),
                Ok(None) => failures.push("was pulled but is still not present".to_owned()),
                Err(e) => failures.push(format!("could not be inspected after pulling: {}", api_message(&e))),
            },
            Err(e) => failures.push(format!("{pull}: {}", api_message(&e))),
        }
    }
    Err(format!("image `{name}` {}", failures.join("; then it ")))
}

/// The id of the local image `name`, `None` if there is none.
async fn local_image(docker: &Docker, name: &str) -> Result<Option<String>, DockerError> {
    match docker.inspect_image(name).await {
        Ok(image) => Ok(Some(image.id.unwrap_or_else(|| name.to_owned()))),
        Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn pull_image(docker: &Docker, name: &str) -> Result<(), DockerError> {
    let reference = pull_reference(name);
    let options = CreateImageOptionsBuilder::default().from_image(&reference).build();
    let mut progress = docker.create_image(Some(options), None, None);
    while let Some(item) = progress.next().await {
        item?;
    }
    Ok(())
}

/// The reference to pull: `name` with `:latest` added when it has neither tag nor digest (the
/// Engine would otherwise pull every tag).
pub(super) fn pull_reference(name: &str) -> String {
    if name.contains('@') || name.rsplit('/').next().is_some_and(|last| last.contains(':')) {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

/// The network aliases of a service: its own `alias` values (comma- or space-separated), then
/// the two GitLab derives from the image name — tag, digest and registry port removed, `/`
/// replaced by `__` and by `-` (`registry.example.com:5000/tutum/wordpress:1` gives
/// `registry.example.com__tutum__wordpress` and `registry.example.com-tutum-wordpress`).
pub(super) fn service_aliases(image: &str, alias: Option<&str>) -> Vec<String> {
    let mut aliases: Vec<String> = Vec::new();
    let mut add = |a: String| {
        if !a.is_empty() && !aliases.contains(&a) {
            aliases.push(a);
        }
    };
    for a in alias.unwrap_or_default().split([',', ' ']) {
        add(a.trim().to_owned());
    }
    let name = image.split('@').next().unwrap_or(image);
    let mut parts: Vec<&str> = name.split('/').collect();
    if let Some(last) = parts.last_mut() {
        *last = last.split(':').next().unwrap_or(last);
    }
    if parts.len() > 1 {
        parts[0] = parts[0].split(':').next().unwrap_or(parts[0]);
    }
    add(parts.join("__"));
    add(parts.join("-"));
    aliases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_reference_adds_latest_only_without_tag_or_digest() {
        assert_eq!(pull_reference("alpine"), "alpine:latest");
        assert_eq!(pull_reference("alpine:3.20"), "alpine:3.20");
        assert_eq!(pull_reference("localhost:5000/team/app"), "localhost:5000/team/app:latest");
        assert_eq!(pull_reference("localhost:5000/team/app:1"), "localhost:5000/team/app:1");
        assert_eq!(pull_reference("alpine@sha256:abc"), "alpine@sha256:abc");
    }

    #[test]
    fn service_aliases_follow_gitlab() {
        assert_eq!(service_aliases("tutum/wordpress:latest", None), ["tutum__wordpress", "tutum-wordpress"]);
        assert_eq!(
            service_aliases("registry.gitlab-wp.com:4999/tutum/wordpress", None),
            ["registry.gitlab-wp.com__tutum__wordpress", "registry.gitlab-wp.com-tutum-wordpress"]
        );
        assert_eq!(service_aliases("postgres:16", Some("db")), ["db", "postgres"]);
        assert_eq!(service_aliases("redis@sha256:abc", Some("cache, kv")), ["cache", "kv", "redis"]);
    }
}
