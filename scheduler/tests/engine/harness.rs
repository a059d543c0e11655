//! A compact pipeline description and an engine driver that records a transcript.
//!
//! Pipeline lines: `NAME STAGE [key=value]...`; stages are numbered in order of first
//! appearance. Keys: `needs=a,b?` (`?`: optional; `needs=` alone: `needs: []`),
//! `when=on_failure|always|manual|delayed:MS`, `allow=yes|no|CODE,CODE`, `retry=N`,
//! `retry_when=CLASS,CLASS`, `retry_codes=CODE,CODE`, `interruptible`, `group=NAME`
//! (`resource_group`). As the planner does,
//! `when=manual` defaults to `allow=yes`.

use std::fmt::Write;

use scheduler::{
    AllowFailure, AutoCancelMode, Command, Engine, EngineOptions, Event, EventError, FailureReason, JobNode, JobStatus, Need, Outcome,
    PipelineSpec, PipelineStatus, Retry, RetryWhen, When,
};

pub fn spec(text: &str) -> PipelineSpec {
    let mut stages: Vec<String> = Vec::new();
    let jobs = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap();
            let stage = words.next().unwrap_or_else(|| panic!("`{line}`: no stage"));
            let index = match stages.iter().position(|s| s == stage) {
                Some(index) => index,
                None => {
                    stages.push(stage.to_owned());
                    stages.len() - 1
                }
            };
            let mut job = JobNode::new(name, stage, index);
            let (mut allow, mut retry_max, mut retry_when, mut retry_codes) = (None, None, None, None);
            for word in words {
                let (key, value) = word.split_once('=').unwrap_or((word, ""));
                match key {
                    "needs" => job.needs = Some(list(value).map(need).collect()),
                    "when" => job.when = when(value),
                    "allow" => allow = Some(allow_failure(value)),
                    "retry" => retry_max = Some(value.parse().unwrap()),
                    "retry_when" => retry_when = Some(list(value).map(retry_class).collect()),
                    "retry_codes" => retry_codes = Some(list(value).map(|c| c.parse().unwrap()).collect()),
                    "interruptible" => job.interruptible = true,
                    "group" => job.resource_group = Some(value.to_owned()),
                    _ => panic!("`{line}`: unknown key `{key}`"),
                }
            }
            let manual = job.when == When::Manual;
            job.allow_failure = allow.unwrap_or(if manual { AllowFailure::Yes } else { AllowFailure::No });
            if let Some(max) = retry_max {
                job.retry = Retry::from_yaml(max, retry_when, retry_codes);
            }
            job
        })
        .collect();
    PipelineSpec::new(jobs)
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').filter(|item| !item.is_empty())
}

fn need(name: &str) -> Need {
    match name.strip_suffix('?') {
        Some(name) => Need { job: name.to_owned(), optional: true, artifacts: true },
        None => Need::on(name),
    }
}

fn when(value: &str) -> When {
    match value {
        "on_success" => When::OnSuccess,
        "on_failure" => When::OnFailure,
        "always" => When::Always,
        "manual" => When::Manual,
        _ => match value.strip_prefix("delayed:") {
            Some(ms) => When::Delayed { start_in_ms: ms.parse().unwrap() },
            None => panic!("unknown when `{value}`"),
        },
    }
}

fn allow_failure(value: &str) -> AllowFailure {
    match value {
        "yes" => AllowFailure::Yes,
        "no" => AllowFailure::No,
        codes => AllowFailure::ExitCodes(list(codes).map(|c| c.parse().unwrap()).collect()),
    }
}

fn retry_class(value: &str) -> RetryWhen {
    serde_json::from_str(&format!("\"{value}\"")).unwrap_or_else(|_| panic!("unknown retry class `{value}`"))
}

/// Drives an engine one event at a time; the clock moves 1 s per event unless told otherwise.
pub struct Run {
    pub engine: Engine,
    now: u64,
    log: String,
    /// Commands of the last accepted event.
    pub last: Vec<Command>,
}

impl Run {
    pub fn new(text: &str) -> Run {
        Run::with(text, EngineOptions::default())
    }

    pub fn with(text: &str, options: EngineOptions) -> Run {
        Run::from_spec(spec(text), options)
    }

    pub fn from_spec(spec: PipelineSpec, options: EngineOptions) -> Run {
        let engine = Engine::new(spec, options).expect("valid pipeline");
        Run { engine, now: 0, log: String::new(), last: Vec::new() }
    }

    /// Sends an event, records it and its answer, and returns the answer.
    pub fn send(&mut self, event: Event) -> Result<Vec<Command>, EventError> {
        let result = self.engine.on(event.clone());
        let _ = writeln!(self.log, "> {}", describe(&event));
        match &result {
            Ok(commands) => {
                for command in commands {
                    let _ = writeln!(self.log, "  {}", render(command));
                }
                self.last = commands.clone();
            }
            Err(err) => {
                let _ = writeln!(self.log, "  ! {err}");
            }
        }
        let _ = writeln!(self.log, "  = {}", self.table());
        result
    }

    fn accept(&mut self, event: Event) -> &mut Self {
        let described = describe(&event);
        if let Err(err) = self.send(event) {
            panic!("`{described}` refused: {err}\n{}", self.log);
        }
        self
    }

    fn tick_clock(&mut self) -> u64 {
        self.now += 1000;
        self.now
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn start(&mut self) -> &mut Self {
        let now = self.tick_clock();
        self.accept(Event::Start { now })
    }

    pub fn begin(&mut self, job: &str) -> &mut Self {
        let (now, attempt) = (self.tick_clock(), self.attempt(job));
        self.accept(Event::JobStarted { job: job.into(), attempt, now })
    }

    /// Finishes the current attempt (starting it first if it is pending).
    pub fn finish(&mut self, job: &str, outcome: Outcome) -> &mut Self {
        if self.status(job) == JobStatus::Pending {
            self.begin(job);
        }
        let (now, attempt) = (self.tick_clock(), self.attempt(job));
        self.accept(Event::JobFinished { job: job.into(), attempt, outcome, now })
    }

    pub fn succeed(&mut self, job: &str) -> &mut Self {
        self.finish(job, Outcome::Success)
    }

    /// A script failure with exit code 1.
    pub fn fail(&mut self, job: &str) -> &mut Self {
        self.fail_code(job, 1)
    }

    pub fn fail_code(&mut self, job: &str, code: i32) -> &mut Self {
        self.finish(job, Outcome::Failed { reason: FailureReason::ScriptFailure, exit_code: Some(code) })
    }

    pub fn fail_reason(&mut self, job: &str, reason: FailureReason) -> &mut Self {
        self.finish(job, Outcome::Failed { reason, exit_code: None })
    }

    pub fn lease_expired(&mut self, job: &str) -> &mut Self {
        let (now, attempt) = (self.tick_clock(), self.attempt(job));
        self.accept(Event::LeaseExpired { job: job.into(), attempt, now })
    }

    pub fn play(&mut self, job: &str) -> &mut Self {
        let now = self.tick_clock();
        self.accept(Event::PlayManual { job: job.into(), now })
    }

    /// The host gives the job its resource group.
    pub fn grant(&mut self, job: &str) -> &mut Self {
        let (now, attempt) = (self.tick_clock(), self.attempt(job));
        self.accept(Event::ResourceGranted { job: job.into(), attempt, now })
    }

    pub fn cancel_job(&mut self, job: &str) -> &mut Self {
        let now = self.tick_clock();
        self.accept(Event::CancelJob { job: job.into(), now })
    }

    pub fn retry(&mut self, job: &str) -> &mut Self {
        let now = self.tick_clock();
        self.accept(Event::RetryJob { job: job.into(), now })
    }

    pub fn cancel(&mut self) -> &mut Self {
        let now = self.tick_clock();
        self.accept(Event::Cancel { now })
    }

    pub fn auto_cancel(&mut self, mode: AutoCancelMode) -> &mut Self {
        let now = self.tick_clock();
        self.accept(Event::AutoCancel { mode, now })
    }

    /// Lets `ms` pass, then ticks.
    pub fn wait(&mut self, ms: u64) -> &mut Self {
        self.now += ms;
        let now = self.now;
        self.accept(Event::Tick { now })
    }

    pub fn status(&self, job: &str) -> JobStatus {
        self.engine.job_status(job).unwrap_or_else(|| panic!("no job `{job}`"))
    }

    pub fn statuses(&self, jobs: &[&str]) -> Vec<JobStatus> {
        jobs.iter().map(|job| self.status(job)).collect()
    }

    pub fn attempt(&self, job: &str) -> u32 {
        let snapshot = self.engine.snapshot();
        snapshot.jobs.iter().find(|j| j.name == job).map(|j| j.attempt).unwrap()
    }

    pub fn pipeline(&self) -> PipelineStatus {
        self.engine.status()
    }

    /// `RunJob`s of the last event, as `job#attempt`.
    pub fn ran(&self) -> Vec<String> {
        self.last
            .iter()
            .filter_map(|c| match c {
                Command::RunJob { job, attempt } => Some(format!("{job}#{attempt}")),
                _ => None,
            })
            .collect()
    }

    /// How many `PipelineFinished` the whole run produced so far.
    pub fn finished_count(&self) -> usize {
        self.log.matches("pipeline finished").count()
    }

    pub fn transcript(&self) -> &str {
        &self.log
    }

    fn table(&self) -> String {
        let snapshot = self.engine.snapshot();
        let jobs: Vec<String> = snapshot
            .jobs
            .iter()
            .map(|job| match job.attempt {
                1 => format!("{}:{}", job.name, job.status),
                n => format!("{}:{}#{n}", job.name, job.status),
            })
            .collect();
        format!("{} | {}", snapshot.status, jobs.join(" "))
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Start { now } => format!("start @{now}"),
        Event::JobStarted { job, attempt, now } => format!("started {job}#{attempt} @{now}"),
        Event::JobFinished { job, attempt, outcome, now } => format!("finished {job}#{attempt} {} @{now}", outcome_text(outcome)),
        Event::LeaseExpired { job, attempt, now } => format!("lease expired {job}#{attempt} @{now}"),
        Event::Tick { now } => format!("tick @{now}"),
        Event::PlayManual { job, now } => format!("play {job} @{now}"),
        Event::CancelJob { job, now } => format!("cancel job {job} @{now}"),
        Event::RetryJob { job, now } => format!("retry {job} @{now}"),
        Event::Cancel { now } => format!("cancel pipeline @{now}"),
        Event::AutoCancel { mode, now } => format!("auto-cancel {mode:?} @{now}"),
        Event::ResourceGranted { job, attempt, now } => format!("granted {job}#{attempt} @{now}"),
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Success => "success".into(),
        Outcome::Canceled => "canceled".into(),
        Outcome::Failed { reason, exit_code } => {
            let reason = serde_json::to_string(reason).unwrap().replace('"', "");
            match exit_code {
                Some(code) => format!("failed {reason} exit {code}"),
                None => format!("failed {reason}"),
            }
        }
    }
}

fn render(command: &Command) -> String {
    match command {
        Command::RunJob { job, attempt } => format!("run {job}#{attempt}"),
        Command::CancelJob { job, attempt } => format!("cancel {job}#{attempt}"),
        Command::WaitForResource { job, attempt, group } => format!("wait {job}#{attempt} for {group}"),
        Command::ReleaseResource { job, attempt, group } => format!("release {group} from {job}#{attempt}"),
        Command::JobStatusChanged { job, attempt, status } => format!("{job}#{attempt} -> {status}"),
        Command::PipelineStatusChanged { status } => format!("pipeline -> {status}"),
        Command::PipelineFinished { status, has_warnings } => {
            let warnings = if *has_warnings { " with warnings" } else { "" };
            format!("pipeline finished: {status}{warnings}")
        }
    }
}

/// Asserts the run's transcript against its snapshot in `tests/snapshots/`.
#[macro_export]
macro_rules! check {
    ($run:expr) => {{
        let transcript = $run.transcript().to_owned();
        insta::with_settings!({ snapshot_path => "../snapshots", omit_expression => true }, {
            insta::assert_snapshot!(transcript);
        });
    }};
}
