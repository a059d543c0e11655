//! Image references: `[registry[:port]/]path[:tag][@sha256:hex]`, with Docker's defaults
//! (`docker.io`, `library/`, `latest`).

use std::fmt;

use super::OciError;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host as written (`127.0.0.1:5000`, `docker.io`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag, if one was written (or `latest` when neither tag nor digest was).
    pub tag: Option<String>,
    /// Digest (`sha256:…`), if one was written.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `text`. The error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Reference, OciError> {
        let bad = |why: &str| OciError::Reference { reference: text.to_owned(), reason: why.to_owned() };
        let text = text.trim();
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(|e| bad(&e))?;
                (rest, Some(digest.to_owned()))
            }
            None => (text, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') => {
                (first.to_owned(), path.to_owned())
            }
            _ => ("docker.io".to_owned(), rest.to_owned()),
        };
        let (path, tag) = match path.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path.to_owned(), Some(tag.to_owned())),
            _ => (path, None),
        };
        if let Some(tag) = &tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && !tag.starts_with(['.', '-']);
            if !ok {
                return Err(bad(&format!("tag `{tag}` is not valid (letters, digits, `_`, `.`, `-`; at most 128)")));
            }
        }
        if path.is_empty()
            || !path.split('/').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                    && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            })
        {
            return Err(bad(&format!("repository `{path}` is not valid (lower-case letters, digits, `.`, `_`, `-`, separated by `/`)")));
        }
        let repository = if registry == "docker.io" && !path.contains('/') { format!("library/{path}") } else { path };
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_owned()) } else { tag };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// The host:port to connect to (Docker Hub's API lives at `registry-1.docker.io`).
    pub fn endpoint(&self) -> &str {
        if self.registry == "docker.io" { "registry-1.docker.io" } else { &self.registry }
    }

    /// The tag or digest to ask the registry for (the digest when both are written).
    pub fn target(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Checks that `digest` is `sha256:` and 64 lower-case hex digits.
pub fn check_digest(digest: &str) -> Result<(), String> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(()),
        Some(_) => Err(format!("digest `{digest}` is not `sha256:` followed by 64 lower-case hex digits")),
        None => Err(format!("digest `{digest}` is not a `sha256:` digest (the only algorithm piste accepts)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_style_references() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("docker.io", "library/busybox", Some("latest")));
        assert_eq!(r.endpoint(), "registry-1.docker.io");
        let r = Reference::parse("127.0.0.1:5000/app/web:1.2").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.target()), ("127.0.0.1:5000", "app/web", "1.2"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!((r.tag.as_deref(), r.target()), (None, d.as_str()));
        assert_eq!(r.pinned(&d), format!("localhost/x@{d}"));
        assert!(Reference::parse("Foo/Bar").is_err());
        assert!(Reference::parse("x@sha256:12").is_err());
        assert!(Reference::parse("reg.example/x:-bad").is_err());
    }
}
