//! The leak gate: before an artifacts archive leaves the runner, the job's masked values — as
//! written, in base64 (both alphabets, padded or not) and percent-encoded, the forms the log
//! masks ([`scheduler::job::mask_forms`]) — are looked for in every file of the archive. A
//! finding stops the upload; findings are written as SARIF 2.1.0 for tools that read it.
//!
//! The archive itself is scanned (decompressed as a stream, each entry through one
//! Aho-Corasick automaton), so what is checked is exactly what would be sent, with memory
//! bounded by the automaton, whatever the files' sizes.

use std::path::Path;

use aho_corasick::AhoCorasick;
use scheduler::job::{JobSpec, mask_forms};

/// Where the findings go, in the job's workspace: a hidden file next to the job's own files,
/// where GitLab-style SAST tooling (and people) look for reports, never itself archived
/// (the upload it describes was refused).
pub const SARIF_FILE: &str = ".piste-leaks.sarif";

/// At most this many findings are recorded (the first one already stops the upload).
const MAX_FINDINGS: usize = 100;

/// The values to look for, each with the variable it belongs to and its form.
#[derive(Clone)]
pub struct Needles {
    ac: Option<AhoCorasick>,
    labels: Vec<(String, &'static str)>,
}

/// One secret found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The path inside the archive (relative to the project directory).
    pub file: String,
    /// Byte offset of the value in the file (for a symlink: in its target).
    pub offset: u64,
    /// The masked variable's name (never its value).
    pub variable: String,
    /// `as written`, `base64` or `URL-encoded`.
    pub form: &'static str,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the masked variable `{}` ({}) is in `{}` at byte {}", self.variable, self.form, self.file, self.offset)
    }
}

impl Needles {
    /// The masked variables of `spec`, in every form a log masks.
    pub fn of(spec: &JobSpec) -> Needles {
        Needles::new(spec.variables.iter().filter(|v| v.masked).map(|v| (v.key.as_str(), v.value.as_str())))
    }

    /// `(name, value)` pairs; empty values are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Needles {
        let mut patterns: Vec<String> = Vec::new();
        let mut labels = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            for form in mask_forms(value) {
                if patterns.contains(&form) {
                    continue;
                }
                let kind = if form == value {
                    "as written"
                } else if form.contains('%') {
                    "URL-encoded"
                } else {
                    "base64"
                };
                labels.push((name.to_string(), kind));
                patterns.push(form);
            }
        }
        let ac = (!patterns.is_empty()).then(|| AhoCorasick::new(&patterns).ok()).flatten();
        Needles { ac, labels }
    }

    pub fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    /// Scans every entry of the artifacts `archive` (tar in zstd, or gzip). Blocking.
    pub fn scan_archive(&self, archive: &Path) -> std::io::Result<Vec<Finding>> {
        let Some(ac) = &self.ac else { return Ok(Vec::new()) };
        let file = std::fs::File::open(archive)?;
        let mut tar = tar::Archive::new(crate::artifacts::codec::decoder(file)?);
        let mut findings = Vec::new();
        for entry in tar.entries()? {
            let entry = entry?;
            let name = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name_bytes() {
                    for m in ac.find_iter(target.as_ref()) {
                        self.push(&mut findings, &name, m.start() as u64, m.pattern().as_usize());
                    }
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            for m in ac.stream_find_iter(entry) {
                let m = m?;
                self.push(&mut findings, &name, m.start() as u64, m.pattern().as_usize());
                if findings.len() >= MAX_FINDINGS {
                    return Ok(findings);
                }
            }
        }
        Ok(findings)
    }

    fn push(&self, findings: &mut Vec<Finding>, file: &str, offset: u64, pattern: usize) {
        if findings.len() >= MAX_FINDINGS {
            return;
        }
        let (variable, form) = self.labels[pattern].clone();
        findings.push(Finding { file: file.to_string(), offset, variable, form });
    }
}

/// The findings as a SARIF 2.1.0 log (one run, tool `piste leak gate`, rule `masked-value`).
pub fn sarif(findings: &[Finding]) -> serde_json::Value {
    let results: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "ruleId": "masked-value",
                "level": "error",
                "message": { "text": format!("the masked variable `{}` ({}) is in this file: the artifacts upload was refused", f.variable, f.form) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": f.file, "uriBaseId": "PROJECT_DIR" },
                        "region": { "byteOffset": f.offset }
                    }
                }]
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "piste leak gate",
                "informationUri": "https://example.invalid/piste#leak-gate",
                "rules": [{
                    "id": "masked-value",
                    "shortDescription": { "text": "A masked CI/CD variable's value (as written, base64 or URL-encoded) in a file about to be uploaded" }
                }]
            }},
            "results": results
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_of(files: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let out = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(out.reopen().unwrap(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        out
    }

    #[test]
    fn every_form_is_found_with_its_file_and_offset_and_never_its_value() {
        let secret = "s3cr3t/token+value";
        let b64 = "czNjcjN0L3Rva2VuK3ZhbHVl";
        let big = [vec![b'x'; 300_000], b64.as_bytes().to_vec()].concat();
        let a =
            archive_of(&[("ok.txt", b"nothing here"), ("out/big.bin", &big), ("cfg", b"url=s3cr3t%2Ftoken%2Bvalue&x=s3cr3t/token+value")]);
        let needles = Needles::new([("DEPLOY_TOKEN", secret)]);
        let found = needles.scan_archive(a.path()).unwrap();
        assert_eq!(
            found,
            vec![
                Finding { file: "out/big.bin".into(), offset: 300_000, variable: "DEPLOY_TOKEN".into(), form: "base64" },
                Finding { file: "cfg".into(), offset: 4, variable: "DEPLOY_TOKEN".into(), form: "URL-encoded" },
                Finding { file: "cfg".into(), offset: 29, variable: "DEPLOY_TOKEN".into(), form: "as written" },
            ]
        );
        let sarif = sarif(&found).to_string();
        assert!(
            sarif.contains("\"version\":\"2.1.0\"") && sarif.contains("out/big.bin") && !sarif.contains(secret) && !sarif.contains(b64)
        );
        assert!(Needles::new([("EMPTY", "")]).is_empty());
    }
}
