//! `include:component`: addresses, versions, and where a component's file is.
//!
//! GitLab's rules (CI/CD components page; `Gitlab::Ci::Components::InstancePath`):
//! - The address is `HOST/PROJECT/NAME@VERSION`. `HOST` is the instance's `$CI_SERVER_FQDN`
//!   (components of another instance cannot be used); the last `/` separates the project's
//!   full path from the component's name.
//! - The component's file is `templates/NAME.yml`, else `templates/NAME/template.yml`, in the
//!   project's repository at the commit the version names.
//! - `VERSION` is a commit SHA, a tag, a branch (a tag wins over a branch of the same name, a
//!   full SHA over a tag), `~latest` (the latest released version, pre-releases left out), or a
//!   partial semantic version: `1` is the latest `1.x.y`, `1.2` the latest `1.2.y`.
//!
//! piste has no CI/CD Catalog: a project's released versions are its tags that are semantic
//! versions as the Catalog requires them (`1.2.3`, `1.2.3-rc.1`; no `v` prefix, GitLab 16.10).

use std::cmp::Ordering;

/// `HOST/PROJECT/NAME@VERSION`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address<'a> {
    pub host: &'a str,
    pub project: &'a str,
    pub name: &'a str,
    pub version: &'a str,
}

/// Why an address cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    NoVersion,
    NoProject,
    Malformed(&'static str),
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressError::NoVersion => f.write_str("it has no `@VERSION`"),
            AddressError::NoProject => f.write_str("it does not name a project and a component (`HOST/GROUP/PROJECT/NAME@VERSION`)"),
            AddressError::Malformed(why) => f.write_str(why),
        }
    }
}

impl<'a> Address<'a> {
    /// Splits an (already expanded) address as GitLab's `InstancePath` does.
    pub fn parse(address: &'a str) -> Result<Address<'a>, AddressError> {
        let (path, version) = address.split_once('@').ok_or(AddressError::NoVersion)?;
        if version.is_empty() {
            return Err(AddressError::NoVersion);
        }
        if version.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AddressError::Malformed("its version contains spaces or control characters"));
        }
        let (host, rest) = path.split_once('/').ok_or(AddressError::NoProject)?;
        let (project, name) = rest.rsplit_once('/').ok_or(AddressError::NoProject)?;
        if host.is_empty() || project.is_empty() || name.is_empty() || project.starts_with('/') || project.ends_with('/') {
            return Err(AddressError::NoProject);
        }
        let parts_ok = |s: &str| s.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
        if !parts_ok(project) || !parts_ok(name) || name.contains(['\\', '\0']) || project.contains(['\\', '\0']) {
            return Err(AddressError::Malformed("its project or name contains an empty, `.` or `..` part"));
        }
        Ok(Address { host, project, name, version })
    }

    /// The files tried, in GitLab's order.
    pub fn candidates(&self) -> [String; 2] {
        [format!("templates/{}.yml", self.name), format!("templates/{}/template.yml", self.name)]
    }
}

/// A semantic version as the CI/CD Catalog accepts it (semver.org's grammar, no `v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemVer {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Option<String>,
}

impl SemVer {
    pub fn parse(s: &str) -> Option<SemVer> {
        let s = s.split_once('+').map_or(s, |(v, build)| if ident_list_ok(build, false) { v } else { "" });
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) if ident_list_ok(p, true) => (c, Some(p.to_string())),
            Some(_) => return None,
            None => (s, None),
        };
        let mut it = core.split('.');
        let (major, minor, patch) = (number(it.next()?)?, number(it.next()?)?, number(it.next()?)?);
        if it.next().is_some() {
            return None;
        }
        Some(SemVer { major, minor, patch, pre })
    }

    /// Precedence as semver.org defines it (build metadata is ignored).
    fn cmp_precedence(&self, other: &SemVer) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch)).then_with(|| match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => cmp_pre(a, b),
        })
    }
}

/// A numeric identifier: digits, no leading zero.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn ident_list_ok(s: &str, pre: bool) -> bool {
    !s.is_empty()
        && s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !(pre && id.len() > 1 && id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()))
        })
}

fn cmp_pre(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// What a version asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionQuery<'a> {
    /// `~latest`.
    Latest,
    /// `1` or `1.2` (GitLab's `SHORTHAND_SEMVER_PATTERN`).
    Partial { major: u64, minor: Option<u64> },
    /// Anything else: a SHA, a tag, a branch.
    Ref(&'a str),
}

impl<'a> VersionQuery<'a> {
    pub fn parse(version: &'a str) -> VersionQuery<'a> {
        if version == "~latest" {
            return VersionQuery::Latest;
        }
        let mut it = version.split('.');
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match (it.next(), it.next(), it.next()) {
            (Some(m), None, None) if all_digits(m) => match m.parse() {
                Ok(major) => VersionQuery::Partial { major, minor: None },
                Err(_) => VersionQuery::Ref(version),
            },
            (Some(m), Some(n), None) if all_digits(m) && all_digits(n) => match (m.parse(), n.parse()) {
                (Ok(major), Ok(minor)) => VersionQuery::Partial { major, minor: Some(minor) },
                _ => VersionQuery::Ref(version),
            },
            _ => VersionQuery::Ref(version),
        }
    }
}

/// The released version (tag name) a `~latest` or partial query selects among `tags`:
/// the highest semantic version without a pre-release part that matches.
pub fn select_release<'t>(query: &VersionQuery<'_>, tags: &'t [String]) -> Option<&'t str> {
    let mut best: Option<(&'t str, SemVer)> = None;
    for tag in tags {
        let Some(v) = SemVer::parse(tag) else { continue };
        if v.pre.is_some() {
            continue;
        }
        let matches = match query {
            VersionQuery::Latest => true,
            VersionQuery::Partial { major, minor } => v.major == *major && minor.is_none_or(|m| v.minor == m),
            VersionQuery::Ref(_) => false,
        };
        if matches && best.as_ref().is_none_or(|(_, b)| v.cmp_precedence(b) == Ordering::Greater) {
            best = Some((tag, v));
        }
    }
    best.map(|(t, _)| t)
}

/// Whether `s` is a full commit SHA (40 or 64 hex digits).
pub fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_at_the_last_slash() {
        let a = Address::parse("gitlab.example.com/my-org/sub/security/secret-detection@1.0.0").unwrap();
        assert_eq!((a.host, a.project, a.name, a.version), ("gitlab.example.com", "my-org/sub/security", "secret-detection", "1.0.0"));
        assert_eq!(a.candidates(), ["templates/secret-detection.yml", "templates/secret-detection/template.yml"]);
        assert_eq!(Address::parse("host/group/project/name"), Err(AddressError::NoVersion));
        assert_eq!(Address::parse("host/project@1"), Err(AddressError::NoProject));
        assert_eq!(Address::parse("host/group/project/name@"), Err(AddressError::NoVersion));
        assert!(matches!(Address::parse("host/group/../name@1"), Err(AddressError::Malformed(_))));
        assert!(matches!(Address::parse("host/group/p/name@1 2"), Err(AddressError::Malformed(_))));
    }

    #[test]
    fn catalog_versions_are_strict_semver() {
        assert_eq!(SemVer::parse("1.2.3"), Some(SemVer { major: 1, minor: 2, patch: 3, pre: None }));
        assert_eq!(SemVer::parse("1.0.1-rc.1+build.5").map(|v| v.pre), Some(Some("rc.1".into())));
        for bad in ["v1.2.3", "1.2", "01.2.3", "1.2.3-", "1.2.3-01", "1.2.3.4", "1.2.x", "1.2.3+"] {
            assert_eq!(SemVer::parse(bad), None, "{bad}");
        }
    }

    /// GitLab: `~latest` is the latest released version and leaves pre-releases out; `1` and
    /// `1.2` are the latest matching versions.
    #[test]
    fn latest_and_partial_versions() {
        let tags: Vec<String> =
            ["1.2.3", "1.10.0", "2.0.0-rc.1", "v9.9.9", "1.2.10", "main-build", "0.9.0", "1.2.4-beta"].map(String::from).to_vec();
        assert_eq!(select_release(&VersionQuery::Latest, &tags), Some("1.10.0"));
        assert_eq!(select_release(&VersionQuery::parse("1"), &tags), Some("1.10.0"));
        assert_eq!(select_release(&VersionQuery::parse("1.2"), &tags), Some("1.2.10"));
        assert_eq!(select_release(&VersionQuery::parse("2"), &tags), None, "pre-releases do not count");
        assert_eq!(select_release(&VersionQuery::parse("0"), &tags), Some("0.9.0"));
        assert_eq!(VersionQuery::parse("1.2.3"), VersionQuery::Ref("1.2.3"));
        assert_eq!(VersionQuery::parse("main"), VersionQuery::Ref("main"));
        assert_eq!(VersionQuery::parse("25.5"), VersionQuery::Partial { major: 25, minor: Some(5) });
    }

    #[test]
    fn precedence_follows_semver() {
        let v = |s| SemVer::parse(s).unwrap();
        assert_eq!(v("1.0.0-alpha").cmp_precedence(&v("1.0.0-alpha.1")), Ordering::Less);
        assert_eq!(v("1.0.0-alpha.beta").cmp_precedence(&v("1.0.0-beta")), Ordering::Less);
        assert_eq!(v("1.0.0-beta.2").cmp_precedence(&v("1.0.0-beta.11")), Ordering::Less);
        assert_eq!(v("1.0.0-rc.1").cmp_precedence(&v("1.0.0")), Ordering::Less);
        assert_eq!(v("1.0.0+a").cmp_precedence(&v("1.0.0+b")), Ordering::Equal);
    }
}
