//! Path globs as GitLab evaluates them for `rules:changes`, `rules:exists` and wildcard includes
//! (Ruby's `File.fnmatch` with `FNM_PATHNAME | FNM_DOTMATCH | FNM_EXTGLOB`): `*` and `?` stop at
//! `/`, `**/` spans directories, `[...]` classes and `{a,b}` alternatives are understood.

use regex::Regex;

/// A compiled glob pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    re: Regex,
    pattern: String,
}

impl Glob {
    /// Compiles a pattern; `None` when it cannot be a valid glob (an unbalanced `[` or `{`).
    pub fn new(pattern: &str) -> Option<Glob> {
        let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
        let mut re = String::with_capacity(pattern.len() * 2 + 8);
        re.push_str("^(?s:");
        let chars: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        let mut braces = 0usize;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    let at_segment_start = i == 0 || chars[i - 1] == '/';
                    if at_segment_start && chars.get(i + 2) == Some(&'/') {
                        re.push_str("(?:[^/]*/)*");
                        i += 3;
                        continue;
                    }
                    re.push_str(".*");
                    i += 2;
                    continue;
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '[' => {
                    let end = chars[i + 1..].iter().position(|&c| c == ']')? + i + 1;
                    let mut class: String = chars[i + 1..end].iter().collect();
                    if let Some(rest) = class.strip_prefix('!') {
                        class = format!("^{rest}");
                    }
                    re.push('[');
                    re.push_str(&class.replace('\\', "\\\\").replace('[', "\\["));
                    re.push(']');
                    i = end + 1;
                    continue;
                }
                '{' => {
                    braces += 1;
                    re.push_str("(?:");
                }
                '}' if braces > 0 => {
                    braces -= 1;
                    re.push(')');
                }
                ',' if braces > 0 => re.push('|'),
                '\\' if i + 1 < chars.len() => {
                    re.push_str(&regex::escape(&chars[i + 1].to_string()));
                    i += 2;
                    continue;
                }
                _ => re.push_str(&regex::escape(&c.to_string())),
            }
            i += 1;
        }
        if braces != 0 {
            return None;
        }
        re.push_str(")$");
        let re = regex::RegexBuilder::new(&re).size_limit(1 << 20).build().ok()?;
        Some(Glob { re, pattern: pattern.to_string() })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.re.is_match(path.trim_start_matches("./"))
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern has any wildcard at all.
    pub fn is_literal(pattern: &str) -> bool {
        !pattern.contains(['*', '?', '[', '{'])
    }
}

/// An `include:local` wildcard as GitLab expands it (`Repository#search_files_by_wildcard_path`):
/// `**` matches anything, slashes included, `*` anything but a slash, every other character
/// stands for itself (no `?`, classes or alternatives). So `configs/*.yml` is the files directly
/// in `configs/`, `configs/**.yml` the files in `configs/` and all its subfolders, and
/// `configs/**/*.yml` the files in subfolders of `configs/` only.
#[derive(Debug, Clone)]
pub struct Wildcard {
    re: Regex,
}

impl Wildcard {
    /// `None` only when the pattern is too large to compile.
    pub fn new(pattern: &str) -> Option<Wildcard> {
        let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
        let mut re = String::with_capacity(pattern.len() * 2 + 8);
        re.push_str("^(?s:");
        let mut rest = pattern;
        while let Some(i) = rest.find('*') {
            re.push_str(&regex::escape(&rest[..i]));
            if rest[i + 1..].starts_with('*') {
                re.push_str(".*?");
                rest = &rest[i + 2..];
            } else {
                re.push_str("[^/]*?");
                rest = &rest[i + 1..];
            }
        }
        re.push_str(&regex::escape(rest));
        re.push_str(")$");
        let re = regex::RegexBuilder::new(&re).size_limit(1 << 20).build().ok()?;
        Some(Wildcard { re })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.re.is_match(path.trim_start_matches("./"))
    }

    /// An fnmatch [`Glob`] pattern matching at least every path this wildcard matches (its
    /// `**/` also matches no folder at all), to ask a resolver that only knows globs; the
    /// answer is then filtered with [`Wildcard::matches`].
    pub fn as_glob_superset(pattern: &str) -> String {
        let mut out = String::with_capacity(pattern.len() + 4);
        for c in pattern.chars() {
            if matches!(c, '?' | '[' | ']' | '{' | '}' | ',' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{Glob, Wildcard};

    /// GitLab's `include:local` wildcard rules, as its CI YAML reference documents them.
    #[test]
    fn include_wildcards_follow_gitlab_documentation() {
        let w = |p: &str, path: &str| Wildcard::new(p).unwrap().matches(path);
        // `configs/*.yml`: the files directly in `configs/`.
        assert!(w("configs/*.yml", "configs/a.yml"));
        assert!(!w("configs/*.yml", "configs/sub/a.yml"));
        // `configs/**.yml`: `configs/` and all its subfolders.
        assert!(w("configs/**.yml", "configs/a.yml"));
        assert!(w("configs/**.yml", "configs/sub/deeper/a.yml"));
        // `configs/**/*.yml`: subfolders of `configs/` only.
        assert!(!w("configs/**/*.yml", "configs/a.yml"));
        assert!(w("configs/**/*.yml", "configs/sub/a.yml"));
        assert!(w("configs/**/*.yml", "configs/sub/deeper/a.yml"));
        // Other characters are literal, as in GitLab's escaped regular expression.
        assert!(w("ci/[a].yml", "ci/[a].yml"));
        assert!(!w("ci/[a].yml", "ci/a.yml"));
        assert!(!w("configs/*.yml", "configs/a.yaml"));
        assert!(w("/configs/*.yml", "configs/a.yml"));
    }

    #[test]
    fn the_glob_superset_finds_every_wildcard_match() {
        let paths = ["configs/a.yml", "configs/sub/a.yml", "configs/sub/deeper/b.yml", "ci/[a].yml", "ci/{x,y}.yml", "other/a.yml"];
        for pattern in ["configs/*.yml", "configs/**.yml", "configs/**/*.yml", "ci/[a].yml", "ci/{x,y}.yml", "**"] {
            let w = Wildcard::new(pattern).unwrap();
            let g = Glob::new(&Wildcard::as_glob_superset(pattern)).unwrap();
            for path in paths.iter().filter(|p| w.matches(p)) {
                assert!(g.matches(path), "`{pattern}` matches `{path}` but its glob superset does not");
            }
        }
    }

    fn m(p: &str, path: &str) -> bool {
        Glob::new(p).unwrap().matches(path)
    }

    #[test]
    fn fnmatch_semantics() {
        assert!(m("*.md", "README.md"));
        assert!(!m("*.md", "docs/README.md"));
        assert!(m("**/*.md", "README.md"));
        assert!(m("**/*.md", "docs/a/b.md"));
        assert!(m("docs/**/*", "docs/a/b.md"));
        assert!(m("src/**", "src/a/b.rs"));
        assert!(m("{src,lib}/*.rs", "lib/x.rs"));
        assert!(!m("{src,lib}/*.rs", "bin/x.rs"));
        assert!(m("file?.txt", "file1.txt"));
        assert!(m("[ab].txt", "a.txt"));
        assert!(m("[!ab].txt", "c.txt"));
        assert!(m("Dockerfile", "Dockerfile"));
        assert!(m("./Dockerfile", "Dockerfile"));
        assert!(m("*", ".hidden"));
        assert!(Glob::new("{a,b").is_none());
        assert!(Glob::new("[ab").is_none());
    }
}
