//! Diagnostics: what went wrong, where, in which job and key, and what to do about it.

use std::fmt;

use crate::source::{SourceMap, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// What an error says about the pipeline: wrong, or not checkable here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The pipeline is wrong: GitLab would refuse it too.
    #[default]
    Invalid,
    /// An include that cannot be read here (a remote URL, a template, a component, another
    /// project with no directory given, a path made of a variable that is not set): the
    /// pipeline could not be checked, which says nothing about its validity.
    Unavailable,
    /// An error that may only come from an [`Kind::Unavailable`] include (a name the missing
    /// file may define): not counted against the pipeline.
    FollowsFromUnavailable,
}

/// One finding about the pipeline, anchored to a source position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Whether an error means "invalid" or "could not check"; warnings are `Invalid`.
    pub kind: Kind,
    pub span: Span,
    /// The job the finding is about, when there is one.
    pub job: Option<String>,
    /// The key path inside the job (or at top level), e.g. `rules:0:if`.
    pub key: Option<String>,
    pub message: String,
    /// The likely intended word, shown as "did you mean `x`?".
    pub suggestion: Option<String>,
    /// What to do next, when the message alone does not say it.
    pub help: Option<String>,
    /// Other places that explain this one, e.g. the job key that uses an anchor or
    /// `!reference` when the error is in the text it copies.
    pub related: Vec<Related>,
}

/// A secondary location of a [`Diagnostic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    pub span: Span,
    pub message: String,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            kind: Kind::Invalid,
            span,
            job: None,
            key: None,
            message: message.into(),
            suggestion: None,
            help: None,
            related: Vec::new(),
        }
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(span, message) }
    }

    pub fn job(mut self, job: impl Into<String>) -> Diagnostic {
        self.job = Some(job.into());
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Diagnostic {
        self.key = Some(key.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn suggest(mut self, suggestion: Option<String>) -> Diagnostic {
        self.suggestion = suggestion;
        self
    }

    /// Marks an error as "could not check" rather than "invalid".
    pub fn unavailable(mut self) -> Diagnostic {
        self.kind = Kind::Unavailable;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// An error that makes the pipeline invalid (not one that only says it could not be checked).
    pub fn is_invalid(&self) -> bool {
        self.is_error() && self.kind == Kind::Invalid
    }

    pub fn is_unavailable(&self) -> bool {
        self.is_error() && self.kind == Kind::Unavailable
    }

    /// Renders the diagnostic as `FILE:LINE:COL: error: [job `j`, key `k`: ]message`.
    pub fn display<'a>(&'a self, sources: &'a SourceMap) -> DisplayDiagnostic<'a> {
        DisplayDiagnostic { diag: self, sources }
    }

    /// The text after the location: context (job, key), the message and the suggestion.
    pub fn text(&self) -> String {
        let mut s = String::new();
        match (&self.job, &self.key) {
            (Some(job), Some(key)) => s.push_str(&format!("job `{job}`, key `{key}`: ")),
            (Some(job), None) => s.push_str(&format!("job `{job}`: ")),
            (None, Some(key)) => s.push_str(&format!("key `{key}`: ")),
            (None, None) => {}
        }
        s.push_str(&self.message);
        if let Some(sugg) = &self.suggestion {
            s.push_str(&format!("; did you mean `{sugg}`?"));
        }
        s
    }
}

pub struct DisplayDiagnostic<'a> {
    diag: &'a Diagnostic,
    sources: &'a SourceMap,
}

impl fmt::Display for DisplayDiagnostic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diag;
        write!(f, "{}: {}: {}", self.sources.locate(d.span), d.severity, d.text())?;
        if let Some(help) = &d.help {
            write!(f, "\n  help: {help}")?;
        }
        for r in &d.related {
            write!(f, "\n  note: {}: {}", self.sources.locate(r.span), r.message)?;
        }
        Ok(())
    }
}

/// The closest candidate to `word`, if one is close enough to be a plausible typo.
pub fn suggest<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    // A third of the word, at most 4 edits: beyond that a "suggestion" is mostly noise.
    let max = (word.chars().count() / 3).clamp(1, 4);
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for cand in candidates {
        if cand == word {
            continue;
        }
        let d = if cand.to_lowercase() == lower { 0 } else { distance(&lower, &cand.to_lowercase()) };
        if d <= max && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), bounded input.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(256).collect();
    let b: Vec<char> = b.chars().take(256).collect();
    let (n, m) = (a.len(), b.len());
    let mut prev2 = vec![0usize; m + 1];
    let mut prev: Vec<usize> = (0..=m).collect();
    let mut cur = vec![0usize; m + 1];
    for i in 1..=n {
        cur[0] = i;
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(prev2[j - 2] + 1);
            }
            cur[j] = v;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        let keys = ["script", "stage", "stages", "before_script", "artifacts"];
        assert_eq!(suggest("scirpt", keys).as_deref(), Some("script"));
        assert_eq!(suggest("artefacts", keys).as_deref(), Some("artifacts"));
        assert_eq!(suggest("Stage", keys).as_deref(), Some("stage"));
        assert_eq!(suggest("xyz", keys), None);
        assert_eq!(suggest("befor_script", keys).as_deref(), Some("before_script"));
    }

    #[test]
    fn distance_counts_transpositions_once() {
        assert_eq!(distance("ab", "ba"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
