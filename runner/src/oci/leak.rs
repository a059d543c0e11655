//! The leak gate: a job's masked values (as written, in base64 and percent-encoded:
//! `scheduler::job::mask_forms`) searched in an image's configuration (environment, labels,
//! command, history…) and in the files of its new layers, before anything is pushed. A
//! finding names where, never the value; findings are also given as SARIF 2.1.0.

use std::fmt;
use std::io::Read;

use aho_corasick::AhoCorasick;

/// Searches for masked values.
#[derive(Clone)]
pub struct Scanner {
    ac: AhoCorasick,
    /// Which form each pattern is (`as written`, `base64`, `percent-encoded`).
    forms: Vec<&'static str>,
    longest: usize,
}

/// One masked value found somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where: `config field Env`, `layer 2 (COPY app /app) file app/x.txt`.
    pub location: String,
    /// Which form of the value: `as written`, `base64`, `percent-encoded`.
    pub form: &'static str,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a masked value ({}) in {}", self.form, self.location)
    }
}

impl Scanner {
    /// A scanner for `masked` (values shorter than 4 characters are ignored: they would
    /// match everywhere). `None` when there is nothing to search.
    pub fn new(masked: &[String]) -> Option<Scanner> {
        let mut patterns = Vec::new();
        let mut forms = Vec::new();
        for value in masked.iter().filter(|v| v.len() >= 4) {
            for form in scheduler::job::mask_forms(value) {
                let kind = if form == *value {
                    "as written"
                } else if form.contains('%') {
                    "percent-encoded"
                } else {
                    "base64"
                };
                if !patterns.contains(&form) {
                    patterns.push(form);
                    forms.push(kind);
                }
            }
        }
        if patterns.is_empty() {
            return None;
        }
        let longest = patterns.iter().map(String::len).max().unwrap_or(1);
        let ac = AhoCorasick::new(&patterns).ok()?;
        Some(Scanner { ac, forms, longest })
    }

    /// The form of the first masked value in `text`, if any.
    pub fn find(&self, text: &[u8]) -> Option<&'static str> {
        self.ac.find(text).map(|m| self.forms[m.pattern().as_usize()])
    }

    /// A reader that searches what passes through it (across read boundaries).
    pub fn reader<R: Read>(&self, inner: R) -> ScanReader<'_, R> {
        ScanReader { scanner: self, inner, tail: Vec::new(), hit: None }
    }
}

/// Reads through, remembering the first masked value seen.
pub struct ScanReader<'s, R> {
    scanner: &'s Scanner,
    inner: R,
    /// The last `longest - 1` bytes, so that a value cut by a read boundary is found.
    tail: Vec<u8>,
    pub hit: Option<&'static str>,
}

impl<R: Read> Read for ScanReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 && self.hit.is_none() {
            let keep = self.scanner.longest.saturating_sub(1);
            if self.tail.is_empty() {
                self.hit = self.scanner.find(&buf[..n]);
            } else {
                let mut window = std::mem::take(&mut self.tail);
                window.extend_from_slice(&buf[..n]);
                self.hit = self.scanner.find(&window);
                self.tail = window;
            }
            let data = if self.tail.is_empty() { &buf[..n] } else { &self.tail[..] };
            let start = data.len().saturating_sub(keep);
            self.tail = data[start..].to_vec();
        }
        Ok(n)
    }
}

/// Findings in the configuration: each field of `config` (JSON) that holds a masked value.
pub fn scan_config(scanner: &Scanner, config: &serde_json::Value) -> Vec<Finding> {
    let mut out = Vec::new();
    walk(scanner, config, "config", &mut out);
    out
}

fn walk(scanner: &Scanner, value: &serde_json::Value, path: &str, out: &mut Vec<Finding>) {
    match value {
        serde_json::Value::String(s) => {
            if let Some(form) = scanner.find(s.as_bytes()) {
                out.push(Finding { location: format!("image configuration field `{path}`"), form });
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(scanner, item, &format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if let Some(form) = scanner.find(k.as_bytes()) {
                    out.push(Finding { location: format!("image configuration key in `{path}`"), form });
                }
                walk(scanner, v, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// SARIF 2.1.0 for `findings` (one rule, `piste/masked-value-in-image`).
pub fn sarif(findings: &[Finding], image: &str) -> serde_json::Value {
    let results: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "ruleId": "piste/masked-value-in-image",
                "level": "error",
                "message": {"text": format!("{f} of image `{image}`")},
                "locations": [{"logicalLocations": [{"fullyQualifiedName": f.location, "kind": "resource"}]}],
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "piste",
                "informationUri": "https://github.com/piste-ci/piste",
                "rules": [{
                    "id": "piste/masked-value-in-image",
                    "shortDescription": {"text": "A masked CI/CD variable is in the image"},
                    "help": {"text": "Pass secrets at run time (environment, mounted files), not through build arguments, ENV, labels or copied files."}
                }]
            }},
            "results": results,
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_form_across_read_boundaries() {
        let scanner = Scanner::new(&["hunter2-secret".to_owned(), "abc".to_owned()]).unwrap();
        assert_eq!(scanner.find(b"x hunter2-secret y"), Some("as written"));
        assert_eq!(scanner.find(b"aHVudGVyMi1zZWNyZXQ="), Some("base64"));
        assert_eq!(scanner.find(b"abc abc"), None, "short values are not searched");
        let mut data = vec![b'.'; 10_000];
        data.extend_from_slice(b"hunter2-secret");
        data.extend(vec![b'.'; 100]);
        let mut reader = scanner.reader(&data[..]);
        let mut buf = [0u8; 7];
        while reader.read(&mut buf).unwrap() > 0 {}
        assert_eq!(reader.hit, Some("as written"));
        let config = serde_json::json!({"config": {"Env": ["A=1", "TOKEN=hunter2-secret"]}});
        let found = scan_config(&scanner, &config);
        assert_eq!(found, vec![Finding { location: "image configuration field `config.config.Env[1]`".into(), form: "as written" }]);
        let sarif = sarif(&found, "r/x");
        assert_eq!(sarif["version"], "2.1.0");
        assert!(!sarif.to_string().contains("hunter2"));
    }
}
