//! `piste run JOB...`: a selection of jobs run as a pipeline of its own.

use scheduler::{EngineOptions, PipelineStatus, PlayManual, SpecError};

use crate::check;
use crate::harness::{Run, spec};

const PIPELINE: &str = "lint build
                        compile build
                        unit test needs=compile
                        e2e test
                        review review when=manual
                        deploy deploy needs=unit when=manual";

#[test]
fn running_a_named_manual_job_plays_it_after_its_needs() {
    let names = ["deploy"];
    let subset = spec(PIPELINE).subset(&names).unwrap();
    let options = EngineOptions { play_manual: PlayManual::Jobs(names.iter().map(|n| n.to_string()).collect()) };
    let mut run = Run::from_spec(subset, options);
    run.start();
    assert_eq!(run.ran(), ["compile#1"]);
    run.succeed("compile").succeed("unit");
    assert_eq!(run.ran(), ["deploy#1"]);
    run.succeed("deploy");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    check!(run);
}

#[test]
fn a_stage_ordered_job_brings_its_earlier_stages() {
    let subset = spec(PIPELINE).subset(&["e2e"]).unwrap();
    let names: Vec<&str> = subset.jobs.iter().map(|job| job.name.as_str()).collect();
    assert_eq!(names, ["lint", "compile", "e2e"]);
}

#[test]
fn an_unknown_name_suggests_the_closest_job() {
    let err = spec(PIPELINE).subset(&["deplyo"]).unwrap_err();
    assert_eq!(err, SpecError::UnknownJob { name: "deplyo".into(), suggestion: Some("deploy".into()) });
}
