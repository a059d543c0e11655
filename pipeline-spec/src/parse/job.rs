//! One job: `default` inheritance, every keyword, and the checks that span several jobs.

use std::collections::HashMap;

use crate::diag::{Diagnostic, suggest};
use crate::model::{
    Artifacts, ArtifactsWhen, Cache, CacheKey, CachePolicy, Environment, Forward, Image, Inherit, Job, Parallel, Pipeline, Reports,
    Service, Strategy, Trigger, TriggerInclude, When,
};
use crate::source::Span;
use crate::yaml::{Map, Node, Value};

use super::{Cx, DEFAULT_KEYS, JOB_KEYS};

/// GitLab: `parallel` and `parallel:matrix` produce at most 200 jobs.
pub const MAX_PARALLEL: u32 = 200;

/// `partial`: the job's definition may be incomplete (an `extends` or `include` failed), so
/// missing-key errors would only repeat the real one.
/// Job keywords GitLab runs and piste only recognises: using one is a warning saying what the
/// job will lack (README, "What is supported").
fn not_run(key: &str) -> Option<&'static str> {
    Some(match key {
        "release" => "no release is created",
        "pages" | "publish" => "nothing is published as GitLab Pages",
        "secrets" => {
            "no secret is fetched from an external provider; give secrets to the project (`piste.toml`) or to `piste run --secret`"
        }
        "hooks" => "`pre_get_sources_script` does not run",
        "identity" => "no cloud identity is federated",
        "dast_configuration" => "no DAST profile is applied",
        "manual_confirmation" => "manual jobs are played without a confirmation message",
        _ => return None,
    })
}

pub(super) fn parse_job(cx: &mut Cx, name: &str, span: Span, own: &Map, defaults: &Map, stages: &[String], partial: bool) -> Option<Job> {
    cx.job = Some(name.to_string());
    let job = parse_job_inner(cx, name, span, own, defaults, stages, partial);
    cx.job = None;
    job
}

fn parse_job_inner(cx: &mut Cx, name: &str, span: Span, own: &Map, defaults: &Map, stages: &[String], partial: bool) -> Option<Job> {
    if name.len() > 255 {
        cx.push(Diagnostic::error(span, "job names are limited to 255 characters"));
    }
    // A misspelt `script` already has its error: do not add "a job needs a `script:`".
    let mut script_typo = false;
    for (k, e) in own {
        if !JOB_KEYS.contains(&k.as_str()) && k != "type" {
            let suggestion = suggest(k, JOB_KEYS.iter().copied());
            script_typo |= suggestion.as_deref() == Some("script");
            cx.push(Diagnostic::error(e.key_span, format!("unknown key `{k}`")).key(k.as_str()).suggest(suggestion));
        }
    }

    for (k, e) in own {
        if let Some(why) = not_run(k) {
            cx.push(Diagnostic::warning(e.key_span, format!("piste does not run `{k}`: {why}")).key(k.as_str()));
        }
    }

    // `inherit:` decides which `default:` keys and global variables reach this job.
    let (inherit_default, inherit_default_list, inherit_variables) = parse_inherit(cx, own);
    let inherits = |k: &str| match inherit_default {
        Inherit::All => inherit_default_list.as_ref().is_none_or(|l| l.iter().any(|x| x == k)),
        Inherit::None => false,
    };
    // A key set to null counts as unset: the default (or nothing) applies.
    let get = |k: &str| -> Option<&Node> {
        match own.get(k) {
            Some(e) if !e.value.is_null() => Some(&e.value),
            _ if inherits(k) => defaults.get(k).map(|e| &e.value).filter(|n| !n.is_null()),
            _ => None,
        }
    };

    // Where a warning about unissued ID tokens goes: the job's own key, or `default:`'s once.
    let id_tokens_at = match own.get("id_tokens") {
        Some(e) => Some(e.key_span),
        None if inherits("id_tokens") && !cx.default_id_tokens_warned => {
            let at = defaults.get("id_tokens").filter(|e| !e.value.is_null()).map(|e| e.key_span);
            cx.default_id_tokens_warned |= at.is_some();
            at
        }
        None => None,
    };

    let has_script = get("script").is_some() || get("run").is_some();
    let trigger = get("trigger").and_then(|n| parse_trigger(cx, n));
    if !has_script && trigger.is_none() && !partial && !script_typo {
        cx.push(
            Diagnostic::error(span, "a job needs a `script:` (or `trigger:` / `run:`)")
                .help("add `script:` with the commands to run; name the key `.name` to make it a hidden template"),
        );
    }
    // GitLab: `run` replaces `script` (and `before_script`); a job has one or the other.
    if let (Some(_), Some(run)) = (own.get("script").filter(|e| !e.value.is_null()), own.get("run").filter(|e| !e.value.is_null())) {
        cx.push(
            Diagnostic::error(run.key_span, "a job has `script` or `run`, not both")
                .key("run")
                .help("move the commands into a `script:` step of `run:`, or drop `run:`"),
        );
    }
    if let (Some(b), Some(_)) = (own.get("before_script").filter(|e| !e.value.is_null()), own.get("run").filter(|e| !e.value.is_null())) {
        cx.push(
            Diagnostic::error(b.key_span, "`before_script` cannot be used with `run`")
                .key("before_script")
                .help("make it the first `script:` step of `run:`"),
        );
    }
    let steps = own.get("run").filter(|e| !e.value.is_null()).map(|e| super::steps::parse_run(cx, &e.value)).unwrap_or_default();
    if has_script && get("trigger").is_some() {
        cx.push(Diagnostic::error(span, "`script` and `trigger` cannot be used together").key("trigger"));
    }

    let (stage, stage_span) = match get("stage").or_else(|| get("type")) {
        Some(n) => (cx.string(n, "stage").unwrap_or_else(|| "test".into()), n.span),
        None => ("test".to_string(), span),
    };
    // A partial job (its template is missing) gets `test` only by default: do not pile on.
    let defaulted = get("stage").or_else(|| get("type")).is_none();
    if !(stages.contains(&stage) || partial && defaulted) {
        let candidates = stages.iter().map(String::as_str);
        cx.push(
            Diagnostic::error(stage_span, format!("stage `{stage}` is not declared in `stages`"))
                .key("stage")
                .suggest(suggest(&stage, candidates))
                .help(format!("declared stages: {}", stages.join(", "))),
        );
    }

    let has_rules = get("rules").is_some();
    if has_rules {
        for k in ["only", "except", "start_in"] {
            if let Some(e) = own.get(k).filter(|e| !e.value.is_null()) {
                cx.push(
                    Diagnostic::error(e.key_span, format!("`{k}` cannot be used with `rules`"))
                        .key(k)
                        .help("express the condition as a rule instead"),
                );
            }
        }
    }

    let (when, when_span) = match get("when") {
        Some(n) => (cx.when(n, "when").unwrap_or(When::OnSuccess), n.span),
        None => (When::OnSuccess, span),
    };
    // GitLab's job entry allows on_success, on_failure, always, manual and delayed: `never` is
    // for rules only.
    if when == When::Never {
        cx.push(
            Diagnostic::error(when_span, "`when: never` is only valid inside `rules`")
                .key("when")
                .help("to keep the job out of pipelines, use `rules: [{when: never}]`, or delete the job"),
        );
    }
    let start_in = get("start_in").and_then(|n| cx.duration(n, "start_in"));
    if when == When::Delayed && start_in.is_none() && !has_rules {
        cx.push(
            Diagnostic::error(when_span, "`when: delayed` needs `start_in:`").key("when").help("add for example `start_in: 30 minutes`"),
        );
    }
    if start_in.is_some() && when != When::Delayed && !has_rules {
        cx.push(Diagnostic::error(span, "`start_in` is only valid with `when: delayed`").key("start_in"));
    }

    let parallel = get("parallel").and_then(|n| parse_parallel(cx, n));
    let artifacts = get("artifacts").and_then(|n| parse_artifacts(cx, n));
    let cache = get("cache").map(|n| parse_caches(cx, n)).unwrap_or_default();

    // GitLab: "script can't be blank" for `script: []`, `script: ''` and lists of nothing.
    let script = get("script").map(|n| cx.script(n, "script")).unwrap_or_default();
    if let Some(n) = get("script") {
        let blank = match &n.value {
            Value::Str(s) => s.is_empty(),
            // Only lists of nothing: a list with a bad line has its own error.
            Value::Seq(_) => script.is_empty() && !has_item(n),
            _ => false,
        };
        if blank {
            cx.push(Diagnostic::error(n.span, "`script` is empty").key("script").help("give the job at least one command to run"));
        }
    }

    let job = Job {
        name: name.to_string(),
        span,
        stage,
        stage_span,
        script,
        before_script: get("before_script").map(|n| cx.script(n, "before_script")).unwrap_or_default(),
        after_script: get("after_script").map(|n| cx.script(n, "after_script")).unwrap_or_default(),
        image: get("image").and_then(|n| parse_image(cx, n)),
        services: get("services").map(|n| parse_services(cx, n)).unwrap_or_default(),
        variables: get("variables").map(|n| cx.variables(n, "variables")).unwrap_or_default(),
        inherit_variables,
        needs: get("needs").map(|n| cx.needs(n, "needs")),
        dependencies: get("dependencies").map(|n| match &n.value {
            Value::Seq(items) => items.iter().filter_map(|it| cx.string(it, "dependencies").map(|s| (s, it.span))).collect(),
            _ => {
                cx.push(Diagnostic::error(n.span, format!("expected a list of job names, found {}", n.kind())).key("dependencies"));
                Vec::new()
            }
        }),
        rules: get("rules").map(|n| cx.rules(n, "rules", false)),
        only: get("only").and_then(|n| cx.policy(n, "only")),
        except: get("except").and_then(|n| cx.policy(n, "except")),
        when,
        when_span,
        start_in,
        allow_failure: get("allow_failure").and_then(|n| cx.allow_failure(n, "allow_failure")),
        retry: get("retry").map(|n| cx.retry(n, "retry")).unwrap_or_default(),
        timeout: get("timeout").and_then(|n| cx.duration(n, "timeout")),
        parallel,
        artifacts,
        cache,
        interruptible: get("interruptible").and_then(|n| cx.bool(n, "interruptible")).unwrap_or(false),
        resource_group: get("resource_group").and_then(|n| cx.string(n, "resource_group")),
        environment: get("environment").and_then(|n| parse_environment(cx, n)),
        tags: get("tags").map(|n| cx.string_list(n, "tags")).unwrap_or_default(),
        coverage: get("coverage").and_then(|n| {
            let written = cx.string(n, "coverage")?;
            // GitLab's `Entry::Coverage`: a regular expression between slashes.
            match crate::coverage::compile(&written) {
                Ok(_) => Some(written),
                Err(e) => {
                    let help = match e {
                        crate::coverage::CoverageError::NotSlashed => "write it `/…/`; flags go inline: `/(?i)total: (\\d+)%/`",
                        crate::coverage::CoverageError::Invalid(_) => "the syntax is the `regex` crate's (close to GitLab's RE2)",
                    };
                    cx.push(Diagnostic::error(n.span, e.to_string()).key("coverage").help(help));
                    None
                }
            }
        }),
        trigger,
        steps,
        id_tokens: get("id_tokens").map(|n| super::id_tokens::parse_id_tokens(cx, n, id_tokens_at)).unwrap_or_default(),
    };
    if let Some(img) = get("image") {
        if job.image.as_ref().is_some_and(|i| i.name.is_empty()) {
            cx.push(Diagnostic::error(img.span, "`image` has an empty name").key("image"));
        }
    }
    Some(job)
}

fn parse_inherit(cx: &mut Cx, own: &Map) -> (Inherit, Option<Vec<String>>, Option<Vec<String>>) {
    let Some(e) = own.get("inherit") else { return (Inherit::All, None, None) };
    let Some(m) = cx.map(&e.value, "inherit") else { return (Inherit::All, None, None) };
    cx.check_keys(m, &["default", "variables"], "inherit");
    let mut default = (Inherit::All, None);
    if let Some(d) = m.get("default") {
        default = match &d.value.value {
            Value::Bool(true) => (Inherit::All, None),
            Value::Bool(false) => (Inherit::None, None),
            Value::Seq(_) => {
                let list = cx.string_list(&d.value, "inherit:default");
                for k in &list {
                    if !DEFAULT_KEYS.contains(&k.as_str()) {
                        cx.push(
                            Diagnostic::error(d.value.span, format!("`inherit:default` lists `{k}`, which `default` cannot set"))
                                .key("inherit:default"),
                        );
                    }
                }
                (Inherit::All, Some(list))
            }
            _ => {
                cx.push(Diagnostic::error(d.value.span, "expected `true`, `false` or a list of keys").key("inherit:default"));
                (Inherit::All, None)
            }
        };
    }
    let variables = m.get("variables").and_then(|v| match &v.value.value {
        Value::Bool(true) => None,
        Value::Bool(false) => Some(Vec::new()),
        Value::Seq(_) => Some(cx.string_list(&v.value, "inherit:variables")),
        _ => {
            cx.push(Diagnostic::error(v.value.span, "expected `true`, `false` or a list of variable names").key("inherit:variables"));
            None
        }
    });
    (default.0, default.1, variables)
}

fn parse_image(cx: &mut Cx, n: &Node) -> Option<Image> {
    match &n.value {
        Value::Str(s) => Some(Image { name: s.clone(), entrypoint: None, pull_policy: Vec::new() }),
        Value::Map(m) => {
            cx.check_keys(m, &["name", "entrypoint", "pull_policy", "docker", "kubernetes"], "image");
            let name = m.get("name").and_then(|e| cx.string(&e.value, "image:name"));
            let Some(name) = name else {
                cx.push(Diagnostic::error(n.span, "`image` needs `name:`").key("image"));
                return None;
            };
            let entrypoint = m.get("entrypoint").map(|e| cx.string_list(&e.value, "image:entrypoint"));
            let pull_policy = pull_policy(cx, m, "image:pull_policy");
            Some(Image { name, entrypoint, pull_policy })
        }
        _ => {
            cx.push(Diagnostic::error(n.span, format!("expected an image name or a map with `name:`, found {}", n.kind())).key("image"));
            None
        }
    }
}

/// `pull_policy` of an image or a service: GitLab Runner's `always`, `if-not-present`, `never`.
fn pull_policy(cx: &mut Cx, m: &Map, key: &str) -> Vec<String> {
    let Some(e) = m.get("pull_policy") else { return Vec::new() };
    let policies = cx.string_list(&e.value, key);
    for p in &policies {
        if !["always", "if-not-present", "never"].contains(&p.as_str()) {
            cx.push(
                Diagnostic::error(e.value.span, format!("unknown `pull_policy` `{p}`"))
                    .key(key)
                    .suggest(suggest(p, ["always", "if-not-present", "never"])),
            );
        }
    }
    policies
}

fn parse_services(cx: &mut Cx, n: &Node) -> Vec<Service> {
    let Some(items) = n.as_seq().map(super::values::flatten_once) else {
        cx.push(Diagnostic::error(n.span, format!("expected a list of services, found {}", n.kind())).key("services"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for it in items {
        match &it.value {
            Value::Str(s) => out.push(Service {
                name: s.clone(),
                alias: None,
                entrypoint: None,
                command: None,
                variables: Vec::new(),
                pull_policy: Vec::new(),
            }),
            Value::Map(m) => {
                cx.check_keys(
                    m,
                    &["name", "alias", "entrypoint", "command", "variables", "pull_policy", "docker", "kubernetes"],
                    "services",
                );
                let Some(name) = m.get("name").and_then(|e| cx.string(&e.value, "services:name")) else {
                    cx.push(Diagnostic::error(it.span, "a service needs `name:`").key("services"));
                    continue;
                };
                let variables = m.get("variables").map(|e| cx.variables(&e.value, "services:variables")).unwrap_or_default();
                out.push(Service {
                    name,
                    alias: m.get("alias").and_then(|e| cx.string(&e.value, "services:alias")),
                    entrypoint: m.get("entrypoint").map(|e| cx.string_list(&e.value, "services:entrypoint")),
                    command: m.get("command").map(|e| cx.string_list(&e.value, "services:command")),
                    variables: variables.into_iter().map(|v| (v.name, v.value)).collect(),
                    pull_policy: pull_policy(cx, m, "services:pull_policy"),
                });
            }
            _ => cx.push(Diagnostic::error(it.span, format!("expected a service name or map, found {}", it.kind())).key("services")),
        }
    }
    out
}

fn parse_parallel(cx: &mut Cx, n: &Node) -> Option<Parallel> {
    match &n.value {
        Value::Int(i, _) => {
            if !(1..=i64::from(MAX_PARALLEL)).contains(i) {
                cx.push(Diagnostic::error(n.span, format!("`parallel` is {i}; it must be between 1 and {MAX_PARALLEL}")).key("parallel"));
                return None;
            }
            Some(Parallel::Count(*i as u32))
        }
        Value::Map(m) => {
            cx.check_keys(m, &["matrix"], "parallel");
            let mx = m.get("matrix")?;
            let matrix = cx.matrix(&mx.value, "parallel:matrix");
            let total: usize = matrix.iter().map(|e| e.values().map(Vec::len).product::<usize>()).sum();
            if total > MAX_PARALLEL as usize {
                cx.push(
                    Diagnostic::error(mx.value.span, format!("`parallel:matrix` makes {total} jobs; GitLab allows at most {MAX_PARALLEL}"))
                        .key("parallel:matrix"),
                );
                return None;
            }
            if total == 0 {
                cx.push(Diagnostic::error(mx.value.span, "`parallel:matrix` makes no jobs").key("parallel:matrix"));
                return None;
            }
            Some(Parallel::Matrix(matrix))
        }
        _ => {
            cx.push(Diagnostic::error(n.span, format!("expected a number or `matrix:`, found {}", n.kind())).key("parallel"));
            None
        }
    }
}

fn artifacts_when(cx: &mut Cx, n: &Node, key: &str) -> ArtifactsWhen {
    match cx.string(n, key).as_deref() {
        Some("on_success") | None => ArtifactsWhen::OnSuccess,
        Some("on_failure") => ArtifactsWhen::OnFailure,
        Some("always") => ArtifactsWhen::Always,
        Some(other) => {
            cx.push(
                Diagnostic::error(n.span, format!("unknown value `{other}`; expected on_success, on_failure or always"))
                    .key(key)
                    .suggest(suggest(other, ["on_success", "on_failure", "always"])),
            );
            ArtifactsWhen::OnSuccess
        }
    }
}

fn parse_artifacts(cx: &mut Cx, n: &Node) -> Option<Artifacts> {
    let m = cx.map(n, "artifacts")?;
    cx.check_keys(
        m,
        &["paths", "exclude", "name", "when", "expire_in", "untracked", "expose_as", "reports", "public", "access"],
        "artifacts",
    );
    let mut reports = Reports::default();
    if let Some(r) = m.get("reports") {
        if let Some(rm) = cx.map(&r.value, "artifacts:reports") {
            for (kind, e) in rm {
                // Reports are paths, except `coverage_report`: a map with a `path` (GitLab's
                // `reports:junit` is `array_of_strings_or_string`; a map there is an error).
                let key = format!("artifacts:reports:{kind}");
                let paths = match e.value.as_map() {
                    Some(m) if kind == "coverage_report" => m.get("path").map(|p| cx.only_strings(&p.value, &key)).unwrap_or_default(),
                    _ => cx.only_strings(&e.value, &key),
                };
                match kind.as_str() {
                    "dotenv" => reports.dotenv = paths,
                    "junit" => reports.junit = paths,
                    _ => reports.other.push((kind.clone(), paths)),
                }
            }
        }
    }
    let expire_in = m.get("expire_in").and_then(|e| {
        let x = cx.string(&e.value, "artifacts:expire_in")?;
        if x != "never" && crate::duration::parse_seconds(&x).is_none() {
            cx.push(
                Diagnostic::error(e.value.span, format!("`{x}` is not a duration"))
                    .key("artifacts:expire_in")
                    .help("use for example `1 week` or `never`"),
            );
        }
        Some(x)
    });
    // Who may download the artifacts: checked as GitLab's `Entry::Artifacts` checks them, and
    // ignored (piste's artifacts follow the project's access).
    if let Some(e) = m.get("public") {
        cx.bool(&e.value, "artifacts:public");
    }
    if let Some(e) = m.get("access") {
        const ACCESS: [&str; 4] = ["all", "developer", "maintainer", "none"];
        if let Some(a) = cx.string(&e.value, "artifacts:access") {
            if !ACCESS.contains(&a.as_str()) {
                cx.push(
                    Diagnostic::error(e.value.span, format!("unknown `artifacts:access` `{a}`; expected one of {}", ACCESS.join(", ")))
                        .key("artifacts:access")
                        .suggest(suggest(&a, ACCESS)),
                );
            }
        }
        if m.contains_key("public") {
            cx.push(
                Diagnostic::error(e.key_span, "`artifacts:public` and `artifacts:access` cannot be used together").key("artifacts:access"),
            );
        }
    }
    Some(Artifacts {
        paths: m.get("paths").map(|e| cx.string_list(&e.value, "artifacts:paths")).unwrap_or_default(),
        exclude: m.get("exclude").map(|e| cx.string_list(&e.value, "artifacts:exclude")).unwrap_or_default(),
        name: m.get("name").and_then(|e| cx.string(&e.value, "artifacts:name")),
        when: m.get("when").map_or(ArtifactsWhen::OnSuccess, |e| artifacts_when(cx, &e.value, "artifacts:when")),
        expire_in,
        untracked: m.get("untracked").and_then(|e| cx.bool(&e.value, "artifacts:untracked")).unwrap_or(false),
        expose_as: m.get("expose_as").and_then(|e| cx.string(&e.value, "artifacts:expose_as")),
        reports,
    })
}

fn parse_caches(cx: &mut Cx, n: &Node) -> Vec<Cache> {
    match &n.value {
        Value::Seq(items) => {
            let items = super::values::flatten_once(items);
            if items.len() > 4 {
                cx.push(Diagnostic::error(n.span, format!("{} caches; GitLab allows at most 4 per job", items.len())).key("cache"));
            }
            items.iter().filter_map(|it| parse_cache(cx, it)).collect()
        }
        _ => parse_cache(cx, n).into_iter().collect(),
    }
}

fn parse_cache(cx: &mut Cx, n: &Node) -> Option<Cache> {
    let m = cx.map(n, "cache")?;
    cx.check_keys(m, &["key", "paths", "policy", "when", "untracked", "unprotect", "fallback_keys"], "cache");
    let key = match m.get("key").map(|e| &e.value) {
        None => CacheKey::Literal("default".into()),
        Some(k) => match &k.value {
            Value::Map(km) => {
                cx.check_keys(km, &["files", "prefix"], "cache:key");
                let files = km.get("files").map(|e| cx.string_list(&e.value, "cache:key:files")).unwrap_or_default();
                if files.is_empty() || files.len() > 2 {
                    cx.push(Diagnostic::error(k.span, "`cache:key:files` takes one or two files").key("cache:key:files"));
                }
                CacheKey::Files { files, prefix: km.get("prefix").and_then(|e| cx.string(&e.value, "cache:key:prefix")) }
            }
            _ => {
                let s = cx.string(k, "cache:key").unwrap_or_default();
                if s.contains('/') || s == "." || s == ".." || s.contains("%2F") || s.contains("%2E") {
                    cx.push(Diagnostic::error(k.span, format!("cache key `{s}` cannot contain `/` or be `.` or `..`")).key("cache:key"));
                }
                CacheKey::Literal(s)
            }
        },
    };
    let policy = match m.get("policy") {
        None => CachePolicy::PullPush,
        Some(e) => match cx.string(&e.value, "cache:policy").as_deref() {
            Some("pull") => CachePolicy::Pull,
            Some("push") => CachePolicy::Push,
            Some("pull-push") | None => CachePolicy::PullPush,
            // A variable can choose the policy at run time.
            Some(s) if s.starts_with('$') => CachePolicy::PullPush,
            Some(other) => {
                cx.push(
                    Diagnostic::error(e.value.span, format!("unknown cache policy `{other}`; expected pull, push or pull-push"))
                        .key("cache:policy")
                        .suggest(suggest(other, ["pull", "push", "pull-push"])),
                );
                CachePolicy::PullPush
            }
        },
    };
    Some(Cache {
        key,
        paths: m.get("paths").map(|e| cx.strict_string_list(&e.value, "cache:paths")).unwrap_or_default(),
        policy,
        when: m.get("when").map_or(ArtifactsWhen::OnSuccess, |e| artifacts_when(cx, &e.value, "cache:when")),
        untracked: m.get("untracked").and_then(|e| cx.bool(&e.value, "cache:untracked")).unwrap_or(false),
        fallback_keys: m.get("fallback_keys").map(|e| cx.string_list(&e.value, "cache:fallback_keys")).unwrap_or_default(),
        unprotect: m.get("unprotect").and_then(|e| cx.bool(&e.value, "cache:unprotect")).unwrap_or(false),
    })
}

fn parse_environment(cx: &mut Cx, n: &Node) -> Option<Environment> {
    match &n.value {
        Value::Str(s) => Some(Environment {
            name: s.clone(),
            url: None,
            action: None,
            on_stop: None,
            on_stop_span: None,
            deployment_tier: None,
            auto_stop_in: None,
        }),
        Value::Map(m) => {
            cx.check_keys(m, &["name", "url", "action", "on_stop", "deployment_tier", "auto_stop_in", "kubernetes"], "environment");
            let s = |cx: &mut Cx, k: &str| m.get(k).and_then(|e| cx.string(&e.value, &format!("environment:{k}")));
            let Some(name) = s(cx, "name") else {
                cx.push(Diagnostic::error(n.span, "`environment` needs `name:`").key("environment"));
                return None;
            };
            let action = s(cx, "action");
            if let Some(a) = &action {
                let actions = ["start", "prepare", "stop", "verify", "access"];
                if !actions.contains(&a.as_str()) {
                    cx.push(
                        Diagnostic::error(n.span, format!("unknown environment action `{a}`"))
                            .key("environment:action")
                            .suggest(suggest(a, actions)),
                    );
                }
            }
            Some(Environment {
                name,
                url: s(cx, "url"),
                action,
                on_stop: s(cx, "on_stop"),
                on_stop_span: m.get("on_stop").map(|e| e.value.span),
                deployment_tier: s(cx, "deployment_tier"),
                // A string only: GitLab expands variables in it when the job deploys, so a
                // duration cannot be checked here.
                auto_stop_in: s(cx, "auto_stop_in"),
            })
        }
        _ => {
            cx.push(Diagnostic::error(n.span, format!("expected an environment name or map, found {}", n.kind())).key("environment"));
            None
        }
    }
}

/// `trigger:` as GitLab's `Entry::Trigger` reads it: a project path, or a map that is either a
/// multi-project trigger (`project`, `branch`) or a child pipeline (`include`), with
/// `strategy` and `forward`.
fn parse_trigger(cx: &mut Cx, n: &Node) -> Option<Trigger> {
    let m = match &n.value {
        Value::Str(s) => {
            return Some(Trigger {
                project: Some(s.clone()),
                branch: None,
                include: Vec::new(),
                strategy: None,
                forward: Forward::default(),
            });
        }
        Value::Map(m) => m,
        _ => {
            cx.push(Diagnostic::error(n.span, format!("expected a project path or a map, found {}", n.kind())).key("trigger"));
            return None;
        }
    };
    cx.check_keys(m, &["project", "branch", "strategy", "include", "forward"], "trigger");
    let project = m.get("project").and_then(|e| cx.string(&e.value, "trigger:project"));
    let include = m.get("include").map(|e| parse_trigger_include(cx, &e.value)).unwrap_or_default();
    match (m.get("project"), m.get("include")) {
        (Some(_), Some(inc)) => cx.push(
            Diagnostic::error(inc.key_span, "`trigger` has `project` or `include`, not both")
                .key("trigger")
                .help("`project` starts a pipeline of another project; `include` starts a child pipeline of this one"),
        ),
        (None, None) => cx.push(
            Diagnostic::error(n.span, "`trigger` needs `project` (a multi-project pipeline) or `include` (a child pipeline)")
                .key("trigger"),
        ),
        (None, Some(_)) => {
            if let Some(b) = m.get("branch") {
                cx.push(
                    Diagnostic::error(
                        b.key_span,
                        "`trigger:branch` applies to `trigger:project`; a child pipeline runs on the parent's commit",
                    )
                    .key("trigger:branch"),
                );
            }
        }
        (Some(_), None) => {}
    }
    let strategy = match m.get("strategy") {
        None => None,
        Some(e) => match e.value.as_str() {
            Some("depend") => Some(Strategy::Depend),
            Some("mirror") => Some(Strategy::Mirror),
            _ => {
                let found = e.value.scalar_string().unwrap_or_else(|| e.value.kind().to_string());
                cx.push(
                    Diagnostic::error(e.value.span, format!("`trigger:strategy` is `depend` or `mirror`, found `{found}`"))
                        .key("trigger:strategy")
                        .help("`strategy: depend` makes the trigger job wait for the downstream pipeline and take its status"),
                );
                None
            }
        },
    };
    let mut forward = Forward::default();
    if let Some(e) = m.get("forward") {
        match e.value.as_map() {
            Some(f) => {
                cx.check_keys(f, &["yaml_variables", "pipeline_variables"], "trigger:forward");
                if let Some(b) = f.get("yaml_variables").and_then(|x| cx.bool(&x.value, "trigger:forward:yaml_variables")) {
                    forward.yaml_variables = b;
                }
                if let Some(b) = f.get("pipeline_variables").and_then(|x| cx.bool(&x.value, "trigger:forward:pipeline_variables")) {
                    forward.pipeline_variables = b;
                }
            }
            None => cx.push(
                Diagnostic::error(e.value.span, format!("`trigger:forward` is a map, found {}", e.value.kind()))
                    .key("trigger:forward")
                    .help("write `forward: {yaml_variables: true, pipeline_variables: false}`"),
            ),
        }
    }
    Some(Trigger { project, branch: m.get("branch").and_then(|e| cx.string(&e.value, "trigger:branch")), include, strategy, forward })
}

const TRIGGER_INCLUDE_KEYS: &[&str] = &["local", "artifact", "job", "project", "file", "ref", "template", "remote", "component"];

/// `trigger:include`: a path, or a list of paths and maps (GitLab's `Entry::Includes` plus
/// `artifact` + `job`).
fn parse_trigger_include(cx: &mut Cx, n: &Node) -> Vec<TriggerInclude> {
    let items: Vec<&Node> = match &n.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![n],
    };
    let mut out = Vec::new();
    for it in items {
        match &it.value {
            Value::Str(s) if s.starts_with("https://") || s.starts_with("http://") => out.push(TriggerInclude::Remote { url: s.clone() }),
            Value::Str(s) => out.push(TriggerInclude::Local { path: s.clone() }),
            Value::Map(m) => {
                cx.check_keys(m, TRIGGER_INCLUDE_KEYS, "trigger:include");
                let text = |cx: &mut Cx, k: &str| m.get(k).and_then(|e| cx.string(&e.value, &format!("trigger:include:{k}")));
                if let Some(path) = text(cx, "local") {
                    out.push(TriggerInclude::Local { path });
                } else if let Some(path) = text(cx, "artifact") {
                    match text(cx, "job") {
                        Some(job) => out.push(TriggerInclude::Artifact { path, job }),
                        None => cx.push(
                            Diagnostic::error(it.span, "`trigger:include:artifact` needs `job:`, the job whose artifacts hold the file")
                                .key("trigger:include"),
                        ),
                    }
                } else if let Some(project) = text(cx, "project") {
                    let files = m.get("file").map(|e| cx.string_list(&e.value, "trigger:include:file")).unwrap_or_default();
                    if files.is_empty() {
                        cx.push(Diagnostic::error(it.span, "`trigger:include:project` needs `file:`").key("trigger:include"));
                    } else {
                        out.push(TriggerInclude::Project { project, files, git_ref: text(cx, "ref") });
                    }
                } else if let Some(name) = text(cx, "template") {
                    out.push(TriggerInclude::Template { name });
                } else if let Some(url) = text(cx, "remote") {
                    out.push(TriggerInclude::Remote { url });
                } else if let Some(address) = text(cx, "component") {
                    out.push(TriggerInclude::Component { address });
                } else {
                    cx.push(
                        Diagnostic::error(
                            it.span,
                            "a `trigger:include` entry needs one of `local`, `artifact` (+ `job`), `project` (+ `file`), `template`, `remote` or `component`",
                        )
                        .key("trigger:include"),
                    );
                }
                if m.contains_key("job") && !m.contains_key("artifact") {
                    cx.push(Diagnostic::error(it.span, "`trigger:include:job` goes with `artifact:`").key("trigger:include"));
                }
            }
            _ => cx.push(
                Diagnostic::error(it.span, format!("a `trigger:include` entry is a path or a map, found {}", it.kind()))
                    .key("trigger:include"),
            ),
        }
    }
    out
}

/// Whether a (nested) list holds anything but lists.
fn has_item(n: &Node) -> bool {
    match &n.value {
        Value::Seq(items) => items.iter().any(has_item),
        _ => true,
    }
}

/// Checks between jobs that do not depend on the trigger: names in `needs` and `dependencies`
/// exist, no job needs a job of a later stage, `dependencies` is a subset of `needs`.
pub(super) fn check_cross_job(cx: &mut Cx, p: &Pipeline) {
    let stage_index: HashMap<&str, usize> = p.stages.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let idx = |j: &Job| stage_index.get(j.stage.as_str()).copied().unwrap_or(usize::MAX);
    let names = || p.jobs.keys().map(String::as_str);
    for job in p.jobs.values() {
        cx.job = Some(job.name.clone());
        let my_stage = idx(job);
        let check_needs = |cx: &mut Cx, needs: &[crate::model::Need], key: &str| {
            for need in needs {
                if need.cross.is_some() {
                    continue;
                }
                match p.jobs.get(&need.job).or_else(|| crate::plan::instance_of(&p.jobs, &need.job)) {
                    None if need.optional => {}
                    None => cx.push(
                        Diagnostic::error(need.span, format!("`needs` refers to `{}`, which is not defined", need.job))
                            .key(key)
                            .suggest(suggest(&need.job, names())),
                    ),
                    Some(other) => {
                        if other.name == job.name && need.job == job.name {
                            cx.push(Diagnostic::error(need.span, "a job cannot need itself").key(key));
                        } else if idx(other) > my_stage && idx(other) != usize::MAX && my_stage != usize::MAX {
                            cx.push(
                                Diagnostic::error(
                                    need.span,
                                    format!("`needs` refers to `{}` in the later stage `{}`", need.job, other.stage),
                                )
                                .key(key)
                                .help(format!("a job can only need jobs of its own stage (`{}`) or earlier ones", job.stage)),
                            );
                        }
                    }
                }
            }
        };
        if let Some(needs) = &job.needs {
            check_needs(cx, needs, "needs");
        }
        for rule in job.rules.iter().flatten() {
            if let Some(needs) = &rule.needs {
                check_needs(cx, needs, "rules:needs");
            }
        }
        // GitLab (`External::File::Artifact`): the file comes from a job of the parent pipeline
        // that runs before the trigger job (an earlier stage, or one it needs).
        for dep in job.trigger.iter().flat_map(|t| t.artifact_jobs()) {
            let before = |other: &Job| match &job.needs {
                Some(needs) => needs.iter().any(|n| n.job == other.name),
                None => idx(other) < my_stage,
            };
            match p.jobs.get(dep) {
                None => cx.push(
                    Diagnostic::error(job.span, format!("`trigger:include:job` refers to `{dep}`, which is not defined"))
                        .key("trigger:include")
                        .suggest(suggest(dep, names())),
                ),
                Some(other) if !before(other) => cx.push(
                    Diagnostic::error(job.span, format!("`trigger:include:job` refers to `{dep}`, which does not run before this job"))
                        .key("trigger:include")
                        .help(format!(
                            "the artifact must exist when the child pipeline is created: put `{dep}` in an earlier stage or in `needs`"
                        )),
                ),
                Some(_) => {}
            }
        }
        if let Some(deps) = &job.dependencies {
            for (dep, span) in deps {
                match p.jobs.get(dep).or_else(|| crate::plan::instance_of(&p.jobs, dep)) {
                    None => cx.push(
                        Diagnostic::error(*span, format!("`dependencies` refers to `{dep}`, which is not defined"))
                            .key("dependencies")
                            .suggest(suggest(dep, names())),
                    ),
                    // GitLab: "dependency X is not defined in current or prior stages" — the same
                    // stage is allowed.
                    Some(other) if idx(other) > my_stage => cx.push(
                        Diagnostic::error(
                            *span,
                            format!("`dependencies` refers to `{dep}`, which is in the later stage `{}`", other.stage),
                        )
                        .key("dependencies")
                        .help("artifacts come only from jobs of the current or earlier stages (or from jobs listed in `needs`)"),
                    ),
                    Some(_) => {
                        // GitLab's `Entry::Job` checks this only when `needs` is present:
                        // `needs: []` with `dependencies` is valid (and receives nothing, see
                        // `Plan::artifact_sources`).
                        if let Some(needs) = job.needs.as_ref().filter(|n| !n.is_empty()) {
                            // With `needs`, a dependency must be listed there, as the job or as
                            // the very instance named.
                            if !needs
                                .iter()
                                .any(|n| &n.job == dep || crate::plan::instance_of(&p.jobs, dep).is_some_and(|j| j.name == n.job))
                            {
                                cx.push(
                                    Diagnostic::error(*span, format!("`dependencies` lists `{dep}`, which is not in `needs`"))
                                        .key("dependencies")
                                        .help(format!("with `needs`, `dependencies` must be a subset of it: add `{dep}` to `needs`")),
                                );
                            }
                        }
                    }
                }
            }
        }
        if let Some(env) = &job.environment {
            if let Some(stop) = &env.on_stop {
                if !p.jobs.contains_key(stop) {
                    cx.push(
                        Diagnostic::error(
                            env.on_stop_span.unwrap_or(job.span),
                            format!("`environment:on_stop` refers to `{stop}`, which is not defined"),
                        )
                        .key("environment:on_stop")
                        .suggest(suggest(stop, names())),
                    );
                }
            }
        }
    }
    cx.job = None;
}
