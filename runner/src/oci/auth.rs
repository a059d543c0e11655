//! Registry credentials (a docker `config.json`, as in `DOCKER_AUTH_CONFIG`, or a user and
//! password) and the `WWW-Authenticate` challenges registries answer with.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::OciError;

/// A user and password (or robot account and secret) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Login {{ username: {:?}, password: <hidden> }}", self.username)
    }
}

/// Logins by registry host (`127.0.0.1:5000`, `harbor.example`, `docker.io`).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_host: BTreeMap<String, Login>,
}

impl Credentials {
    /// Reads a docker `config.json` (`{"auths": {"HOST": {"auth": base64("user:pass")}}}` or
    /// with `username`/`password`). Keys may be URLs (`https://index.docker.io/v1/`).
    pub fn from_docker_config(json: &str) -> Result<Credentials, OciError> {
        let bad = |reason: String| OciError::Credentials(reason);
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(format!("the docker config is not JSON ({e}); expected {{\"auths\": {{…}}}}")))?;
        let auths = value.get("auths").and_then(|a| a.as_object()).ok_or_else(|| bad("the docker config has no `auths` object".into()))?;
        let mut creds = Credentials::default();
        for (key, entry) in auths {
            let host = host_of(key);
            let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
            let login = if let Some(auth) = field("auth") {
                let decoded =
                    STANDARD.decode(auth.trim()).map_err(|_| bad(format!("`auths.{key}.auth` is not base64 of `user:password`")))?;
                let text =
                    String::from_utf8(decoded).map_err(|_| bad(format!("`auths.{key}.auth` does not decode to UTF-8 `user:password`")))?;
                let (user, pass) =
                    text.split_once(':').ok_or_else(|| bad(format!("`auths.{key}.auth` has no `:` between user and password")))?;
                Login { username: user.to_owned(), password: pass.to_owned() }
            } else if let (Some(u), Some(p)) = (field("username"), field("password")) {
                Login { username: u.to_owned(), password: p.to_owned() }
            } else {
                return Err(bad(format!("`auths.{key}` has neither `auth` nor `username` and `password`")));
            };
            creds.by_host.insert(host, login);
        }
        Ok(creds)
    }

    /// Adds (or replaces) the login for `host`.
    pub fn insert(&mut self, host: &str, login: Login) {
        self.by_host.insert(host_of(host), login);
    }

    /// The login for `host`, if any (Docker Hub's aliases are one host).
    pub fn get(&self, host: &str) -> Option<&Login> {
        self.by_host.get(&host_of(host))
    }

    /// Every `(host, login)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Login)> {
        self.by_host.iter().map(|(h, l)| (h.as_str(), l))
    }

    /// Every password, for masking.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.by_host.values().map(|l| l.password.as_str())
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://h:5000/` → `h:5000`.
fn host_of(key: &str) -> String {
    let key = key.trim();
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_owned(),
        h => h.to_owned(),
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

impl Challenge {
    /// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params);
        let get = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
        Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
    }
}

/// `a="x,y",b=z` → `[(a, x,y), (b, z)]` (quoted values may hold commas and `\"`).
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

/// The `Authorization: Basic` value for `login`.
pub fn basic(login: &Login) -> String {
    format!("Basic {}", STANDARD.encode(format!("{}:{}", login.username, login.password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_in_both_forms() {
        let json = r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "harbor.example": {"username": "robot$ci", "password": "s3cret"}}}"#;
        let c = Credentials::from_docker_config(json).unwrap();
        assert_eq!(c.get("docker.io").unwrap().password, "pa:ss");
        assert_eq!(c.get("registry-1.docker.io").unwrap().username, "user");
        assert_eq!(c.get("harbor.example").unwrap().username, "robot$ci");
        assert!(Credentials::from_docker_config(r#"{"auths": {"x": {"auth": "!!"}}}"#).is_err());
        assert!(Credentials::from_docker_config("[]").is_err());
        assert!(!format!("{:?}", c).contains("s3cret"));
    }

    #[test]
    fn parses_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:a/b:pull,push".into())
            })
        );
        assert_eq!(Challenge::parse(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }
}
