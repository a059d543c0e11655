//! Test reports and coverage, read on the server.
//!
//! JUnit XML (`artifacts:reports:junit`) travels inside the job's artifacts archive; when the
//! archive is uploaded, [`read_junit`] walks it (streaming: gzip, tar, then quick-xml events,
//! never a whole document in memory) and sums the matching files into a [`TestReport`]: totals
//! and the failures (name, class, message, output), every part bounded ([`Limits`]). A job's
//! `coverage:` value comes from its runner, which searched the log as it streamed
//! (`pipeline_spec::coverage`), in the finish request.

use std::io::{BufRead, BufReader, Read};

use quick_xml::events::{BytesStart, Event};
use serde::{Deserialize, Serialize};

/// Bounds on what a job's reports may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// XML read from all of a job's report files together.
    pub report_bytes: u64,
    /// Failures kept per job (the totals still count the others).
    pub failures: usize,
    /// A failure's message and name (characters).
    pub text: usize,
    /// A failure's output (characters).
    pub output: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { report_bytes: 16 << 20, failures: 200, text: 1000, output: 4000 }
    }
}

/// A job's tests, summed over its report files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestReport {
    pub total: u64,
    pub failed: u64,
    pub skipped: u64,
    pub errors: u64,
    pub failures: Vec<TestFailure>,
    /// Failures not kept (past `Limits::failures`).
    #[serde(default)]
    pub more_failures: u64,
}

/// A test that failed (or errored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestFailure {
    pub name: String,
    pub classname: String,
    pub message: String,
    /// The failure's text, then the test's `system-out` and `system-err`, bounded.
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading the artifacts archive")]
    Archive(#[source] std::io::Error),
    #[error("`{file}` is not well-formed XML")]
    Xml { file: String, source: quick_xml::Error },
    #[error("the test reports are larger than {0} bytes")]
    TooLarge(u64),
}

/// Reads the files of an artifacts `archive` (tar in zstd, or gzip from earlier runners) that `patterns` (the job's `reports:junit` globs)
/// match. `Ok(None)` when no file matched.
pub fn read_junit(archive: impl Read, patterns: &[String], limits: Limits) -> Result<Option<TestReport>, ReportError> {
    let globs: Vec<pipeline_spec::glob::Glob> = patterns.iter().filter_map(|p| pipeline_spec::glob::Glob::new(p)).collect();
    let mut tar = tar::Archive::new(crate::runners::archive_decoder(archive).map_err(ReportError::Archive)?);
    let mut report = TestReport::default();
    let mut found = false;
    let mut budget = limits.report_bytes;
    for entry in tar.entries().map_err(ReportError::Archive)?.take(100_000) {
        let entry = entry.map_err(ReportError::Archive)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(ReportError::Archive)?.to_string_lossy().trim_start_matches("./").to_string();
        if !globs.iter().any(|g| g.matches(&path)) {
            continue;
        }
        found = true;
        let size = entry.header().size().map_err(ReportError::Archive)?;
        if size > budget {
            return Err(ReportError::TooLarge(limits.report_bytes));
        }
        budget -= size;
        read_one(BufReader::new(entry), &path, &mut report, &limits)?;
    }
    Ok(found.then_some(report))
}

/// What is being read inside a `<testcase>`.
#[derive(Clone, Copy, PartialEq)]
enum Inside {
    Nothing,
    Failure,
    Output,
}

/// Adds one JUnit document's test cases to `report`.
pub fn read_one(input: impl BufRead, file: &str, report: &mut TestReport, limits: &Limits) -> Result<(), ReportError> {
    let mut xml = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::new();
    let xml_error = |source| ReportError::Xml { file: file.to_string(), source };
    // The test case being read: its failure (if any) and where text goes.
    let mut case: Option<(TestFailure, Option<Outcome>)> = None;
    let mut inside = Inside::Nothing;
    loop {
        let event = xml.read_event_into(&mut buf).map_err(xml_error)?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"testcase" => {
                let t = TestFailure {
                    name: attr(&e, b"name", limits.text),
                    classname: attr(&e, b"classname", limits.text),
                    ..TestFailure::default()
                };
                case = Some((t, None));
                // An empty `<testcase/>` passed: it ends here.
                if empty {
                    finish_case(case.take(), report, limits);
                }
            }
            Event::Start(e) | Event::Empty(e) if case.is_some() => {
                let name = e.local_name();
                let outcome = match name.as_ref() {
                    b"failure" => Some(Outcome::Failed),
                    b"error" => Some(Outcome::Error),
                    b"skipped" => Some(Outcome::Skipped),
                    _ => None,
                };
                if let (Some(o), Some((t, seen))) = (outcome, case.as_mut()) {
                    if seen.is_none() {
                        *seen = Some(o);
                        if o != Outcome::Skipped {
                            t.message = attr(&e, b"message", limits.text);
                            if !empty {
                                inside = Inside::Failure;
                            }
                        }
                    }
                } else if !empty && matches!(name.as_ref(), b"system-out" | b"system-err") {
                    inside = Inside::Output;
                }
            }
            Event::Text(t) if inside != Inside::Nothing => {
                if let Some((f, _)) = case.as_mut() {
                    let text = t.xml_content().map(|c| c.into_owned()).unwrap_or_else(|_| String::from_utf8_lossy(&t).into_owned());
                    push_bounded(&mut f.output, &text, limits.output);
                }
            }
            // quick-xml hands entity references (`&amp;`, `&#10;`) apart from the text around them.
            Event::GeneralRef(r) if inside != Inside::Nothing => {
                let text = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match &*r {
                        b"amp" => "&".into(),
                        b"lt" => "<".into(),
                        b"gt" => ">".into(),
                        b"quot" => "\"".into(),
                        b"apos" => "'".into(),
                        other => format!("&{};", String::from_utf8_lossy(other)),
                    },
                };
                if let Some((f, _)) = case.as_mut() {
                    push_bounded(&mut f.output, &text, limits.output);
                }
            }
            Event::CData(t) if inside != Inside::Nothing => {
                if let Some((f, _)) = case.as_mut() {
                    push_bounded(&mut f.output, &String::from_utf8_lossy(&t), limits.output);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"testcase" => finish_case(case.take(), report, limits),
                b"failure" | b"error" | b"system-out" | b"system-err" => {
                    if inside != Inside::Nothing {
                        if let Some((f, _)) = case.as_mut().filter(|(f, _)| !f.output.is_empty() && !f.output.ends_with('\n')) {
                            push_bounded(&mut f.output, "\n", limits.output);
                        }
                    }
                    inside = Inside::Nothing;
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Error,
    Skipped,
}

fn finish_case(case: Option<(TestFailure, Option<Outcome>)>, report: &mut TestReport, limits: &Limits) {
    let Some((mut t, outcome)) = case else { return };
    report.total += 1;
    match outcome {
        None => {}
        Some(Outcome::Skipped) => report.skipped += 1,
        Some(o) => {
            if o == Outcome::Failed {
                report.failed += 1;
            } else {
                report.errors += 1;
            }
            if t.message.is_empty() {
                t.message = t.output.lines().next().unwrap_or_default().chars().take(limits.text).collect();
            }
            t.output = t.output.trim_end().to_string();
            if report.failures.len() < limits.failures {
                report.failures.push(t);
            } else {
                report.more_failures += 1;
            }
        }
    }
}

fn attr(e: &BytesStart<'_>, name: &[u8], limit: usize) -> String {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .map(|a| a.unescape_value().map(|v| v.into_owned()).unwrap_or_else(|_| String::from_utf8_lossy(&a.value).into_owned()))
        .map(|v| v.chars().take(limit).collect())
        .unwrap_or_default()
}

fn push_bounded(out: &mut String, text: &str, limit: usize) {
    let room = limit.saturating_sub(out.chars().count());
    out.extend(text.chars().take(room));
}

/// A job's test totals (in the API's job views).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub total: u64,
    pub failed: u64,
    pub skipped: u64,
    pub errors: u64,
}

/// The pipeline's tests: its jobs' reports summed, with each failure and its job.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PipelineTests {
    #[serde(flatten)]
    pub totals: Totals,
    pub failures: Vec<PipelineFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineFailure {
    pub job_id: i64,
    pub job: String,
    pub name: String,
    pub classname: String,
    pub message: String,
    pub output: String,
    /// Not failing in the previous pipeline of the same ref (`false` when there is none).
    pub new: bool,
}

/// What a pipeline's jobs reported: per job (totals, coverage), and for the pipeline.
#[derive(Debug, Clone, Default)]
pub struct PipelineReports {
    pub jobs: std::collections::HashMap<i64, (Option<Totals>, Option<f64>)>,
    pub tests: Option<PipelineTests>,
    /// The mean of the jobs' coverage values (GitLab's pipeline coverage).
    pub coverage: Option<f64>,
}

/// Gathers the reports of `pipeline`'s jobs and compares its failures with the previous
/// pipeline of the same ref.
pub async fn of_pipeline(
    store: &impl crate::store::Store,
    pipeline: &crate::store::PipelineRow,
    jobs: &[crate::store::JobRow],
) -> Result<PipelineReports, crate::store::StoreError> {
    let rows = store.job_reports(pipeline.id).await?;
    let mut out = PipelineReports::default();
    let mut tests: Option<PipelineTests> = None;
    let mut coverages = Vec::new();
    for row in rows {
        let name = jobs.iter().find(|j| j.id == row.job_id).map(|j| j.name.clone()).unwrap_or_default();
        let report: Option<TestReport> = row.tests.as_deref().and_then(|t| serde_json::from_str(t).ok());
        let totals = report.as_ref().map(|r| Totals { total: r.total, failed: r.failed, skipped: r.skipped, errors: r.errors });
        if let Some(r) = report {
            let t = tests.get_or_insert_with(PipelineTests::default);
            t.totals.total += r.total;
            t.totals.failed += r.failed;
            t.totals.skipped += r.skipped;
            t.totals.errors += r.errors;
            t.failures.extend(r.failures.into_iter().map(|f| PipelineFailure {
                job_id: row.job_id,
                job: name.clone(),
                name: f.name,
                classname: f.classname,
                message: f.message,
                output: f.output,
                new: false,
            }));
        }
        coverages.extend(row.coverage);
        out.jobs.insert(row.job_id, (totals, row.coverage));
    }
    if !coverages.is_empty() {
        out.coverage = Some(coverages.iter().sum::<f64>() / coverages.len() as f64);
    }
    if let Some(t) = tests.as_mut().filter(|t| !t.failures.is_empty()) {
        let previous = store
            .pipelines(Some(&pipeline.project), 100)
            .await?
            .into_iter()
            .find(|p| p.id < pipeline.id && p.git_ref == pipeline.git_ref && p.status.is_complete());
        if let Some(previous) = previous {
            let mut before = std::collections::HashSet::new();
            for row in store.job_reports(previous.id).await? {
                if let Some(r) = row.tests.as_deref().and_then(|t| serde_json::from_str::<TestReport>(t).ok()) {
                    before.extend(r.failures.into_iter().map(|f| (f.classname, f.name)));
                }
            }
            for f in &mut t.failures {
                f.new = !before.contains(&(f.classname.clone(), f.name.clone()));
            }
        }
    }
    out.tests = tests;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="math" tests="5">
    <testcase classname="math.Add" name="adds" time="0.1"/>
    <testcase classname="math.Add" name="overflows &lt;u8&gt;">
      <failure message="expected 0, got 256" type="AssertionError">at add.rs:12
assertion failed</failure>
      <system-out>printed &amp; more</system-out>
    </testcase>
    <testcase classname="math.Div" name="by zero"><error message="panicked"/></testcase>
    <testcase classname="math.Div" name="later"><skipped/></testcase>
    <testcase classname="math.Mul" name="cdata"><failure><![CDATA[first line
second]]></failure></testcase>
  </testsuite>
</testsuites>"#;

    #[test]
    fn a_report_gives_totals_and_failures() {
        let mut r = TestReport::default();
        read_one(REPORT.as_bytes(), "r.xml", &mut r, &Limits::default()).unwrap();
        assert_eq!((r.total, r.failed, r.errors, r.skipped), (5, 2, 1, 1));
        assert_eq!(r.failures.len(), 3);
        let f = &r.failures[0];
        assert_eq!((f.name.as_str(), f.classname.as_str(), f.message.as_str()), ("overflows <u8>", "math.Add", "expected 0, got 256"));
        assert_eq!(f.output, "at add.rs:12\nassertion failed\nprinted & more");
        assert_eq!(r.failures[1].message, "panicked");
        assert_eq!(r.failures[2].message, "first line", "no message: the output's first line");
    }

    #[test]
    fn limits_bound_what_is_kept() {
        let limits = Limits { failures: 1, output: 5, text: 4, ..Limits::default() };
        let mut r = TestReport::default();
        read_one(REPORT.as_bytes(), "r.xml", &mut r, &limits).unwrap();
        assert_eq!((r.failures.len(), r.more_failures), (1, 2));
        assert_eq!(r.failures[0].output, "at ad");
        assert_eq!(r.failures[0].name, "over");
    }

    #[test]
    fn broken_xml_is_an_error_naming_the_file() {
        let err = read_one("<testsuite><testcase></testsuite>".as_bytes(), "out/r.xml", &mut TestReport::default(), &Limits::default())
            .unwrap_err();
        assert!(err.to_string().contains("`out/r.xml`"), "{err}");
    }

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn matching_files_of_the_archive_are_summed_and_bounded() {
        let a = archive(&[("reports/a.xml", REPORT.as_bytes()), ("reports/b.xml", REPORT.as_bytes()), ("other.xml", b"<x")]);
        let r = read_junit(&a[..], &["reports/*.xml".into()], Limits::default()).unwrap().unwrap();
        assert_eq!(r.total, 10);
        assert!(read_junit(&a[..], &["none.xml".into()], Limits::default()).unwrap().is_none());
        let small = Limits { report_bytes: 100, ..Limits::default() };
        assert!(matches!(read_junit(&a[..], &["reports/*.xml".into()], small), Err(ReportError::TooLarge(100))));
    }
}
