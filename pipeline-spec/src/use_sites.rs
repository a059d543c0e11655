//! Errors in copied text name the job that copies it.
//!
//! An anchor's alias and a `!reference` copy nodes that keep the position where they are
//! written, so an error found in a job may point at a template far from the job. GitLab names
//! the job; piste keeps the primary position where the wrong text is and adds, as a note, the
//! key of the job that uses it.

use std::collections::HashMap;

use crate::diag::{Diagnostic, Related};
use crate::source::{FileId, Span};
use crate::yaml::Map;

/// Where each top-level entry is written, and where its own keys are, before `extends` and
/// `!reference` copy anything in.
pub(crate) struct UseSites {
    jobs: HashMap<String, Site>,
}

struct Site {
    key_span: Span,
    /// The next top-level key of the same file, where this entry's text ends.
    end_line: Option<u32>,
    keys: HashMap<String, Span>,
}

impl Site {
    fn contains(&self, s: Span) -> bool {
        s.file == self.key_span.file && s.line >= self.key_span.line && self.end_line.is_none_or(|end| s.line < end)
    }
}

impl UseSites {
    pub(crate) fn record(top: &Map) -> UseSites {
        let mut lines: HashMap<FileId, Vec<u32>> = HashMap::new();
        for e in top.values() {
            lines.entry(e.key_span.file).or_default().push(e.key_span.line);
        }
        lines.values_mut().for_each(|l| l.sort_unstable());
        let jobs = top
            .iter()
            .filter_map(|(name, e)| {
                let m = e.value.as_map()?;
                let end_line = lines.get(&e.key_span.file).and_then(|l| l.iter().copied().find(|&line| line > e.key_span.line));
                let keys = m.iter().map(|(k, v)| (k.clone(), v.key_span)).collect();
                Some((name.clone(), Site { key_span: e.key_span, end_line, keys }))
            })
            .collect();
        UseSites { jobs }
    }

    /// Adds the using job's key to every diagnostic about a job whose position lies outside
    /// that job's own text, under a key the job itself wrote (so not one `extends` brought).
    pub(crate) fn annotate(&self, diags: &mut [Diagnostic]) {
        for d in diags {
            let (Some(job), Some(key)) = (&d.job, &d.key) else { continue };
            let Some(site) = self.jobs.get(job) else { continue };
            if site.contains(d.span) {
                continue;
            }
            let top = key.split(':').next().unwrap_or(key);
            let Some(&key_span) = site.keys.get(top) else { continue };
            // A key merged with `<<: *anchor` is written in the anchor: point at the job.
            let at = if site.contains(key_span) { key_span } else { site.key_span };
            d.related.push(Related { span: at, message: format!("job `{job}` uses it here, through an anchor or a `!reference`") });
        }
    }
}
