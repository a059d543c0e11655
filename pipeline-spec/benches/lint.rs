//! `piste lint` work on a 1,000-job pipeline (fixtures/large): load (YAML, extends, defaults,
//! validation) and plan (rules, needs, DAG checks, critical path). Target: under 10 ms in all.

use pipeline_spec::load::{LoadOptions, MemoryResolver, load};
use pipeline_spec::plan::{PlanContext, plan};

// The `piste` binary uses mimalloc; measure with the same allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    divan::main();
}

fn fixture() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/large/1000-jobs.gitlab-ci.yml");
    std::fs::read_to_string(path).expect("run fixtures/large/generate.py")
}

fn context() -> PlanContext<'static> {
    PlanContext {
        predefined: vec![
            ("CI_COMMIT_BRANCH".into(), "main".into()),
            ("CI_DEFAULT_BRANCH".into(), "main".into()),
            ("CI_COMMIT_REF_NAME".into(), "main".into()),
            ("CI_PIPELINE_SOURCE".into(), "push".into()),
        ],
        ..PlanContext::default()
    }
}

#[divan::bench]
fn load_1000_jobs(b: divan::Bencher) {
    let text = fixture();
    let resolver = MemoryResolver::new();
    b.bench(|| {
        let loaded = load(".gitlab-ci.yml", ".gitlab-ci.yml", divan::black_box(&text), &resolver, &LoadOptions::default());
        assert!(!loaded.has_errors());
        loaded
    });
}

#[divan::bench]
fn lint_1000_jobs(b: divan::Bencher) {
    let text = fixture();
    let resolver = MemoryResolver::new();
    let ctx = context();
    b.bench(|| {
        let loaded = load(".gitlab-ci.yml", ".gitlab-ci.yml", divan::black_box(&text), &resolver, &LoadOptions::default());
        let pipeline = loaded.pipeline.expect("valid");
        let planned = plan(&pipeline, &ctx).expect("plans");
        assert_eq!(planned.jobs.len(), 1000);
        planned.critical_path(|_| 1)
    });
}
