//! Random valid pipelines driven to completion by a random executor and a random person.
//!
//! Invariants checked after every event:
//! * a job never has two attempts handed out at once, and attempts only grow;
//! * a job is admitted (leaves `Created` for pending, manual or scheduled) only once every job
//!   it waits for is complete (an optional manual job that was not played counts: it does not
//!   run by itself); without a person's actions, every `RunJob` finds them complete too;
//! * `JobStatusChanged` is a faithful log: replaying it gives the snapshot's statuses;
//! * the engine survives a serde round trip at every step, unchanged;
//! * the pipeline always finishes, with exactly one `PipelineFinished`, as its last command,
//!   and no `RunJob` after it; at the end no job is waiting or running;
//! * replaying the recorded events on a fresh engine gives the same commands.

use std::collections::BTreeMap;

use proptest::prelude::*;
use scheduler::JobStatus::*;
use scheduler::{
    AllowFailure, AutoCancelMode, Command, Engine, EngineOptions, Event, FailureReason, JobNode, JobStatus, Need, Outcome, PipelineSpec,
    PlayManual, Retry, RetryWhen, When,
};

#[derive(Debug, Clone)]
struct JobGen {
    stage: usize,
    dag: bool,
    needs_mask: u8,
    when: u8,
    allow: u8,
    retry_max: u8,
    retry_when: u8,
    interruptible: bool,
}

fn job_gen() -> impl Strategy<Value = JobGen> {
    (0..3usize, any::<bool>(), any::<u8>(), 0..8u8, 0..3u8, 0..3u8, 0..4u8, any::<bool>()).prop_map(
        |(stage, dag, needs_mask, when, allow, retry_max, retry_when, interruptible)| JobGen {
            stage,
            dag,
            needs_mask,
            when,
            allow,
            retry_max,
            retry_when,
            interruptible,
        },
    )
}

/// Needs point only to earlier jobs of the same or an earlier stage, so the spec is valid.
fn build_spec(gens: &[JobGen]) -> PipelineSpec {
    let jobs = gens
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut job = JobNode::new(format!("j{i}"), format!("s{}", g.stage), g.stage);
            if g.dag {
                let needs = (0..i)
                    .filter(|&p| g.needs_mask & (1 << (p % 8)) != 0 && gens[p].stage <= g.stage)
                    .map(|p| Need::on(format!("j{p}")))
                    .collect();
                job.needs = Some(needs);
            }
            job.when = match g.when {
                0..=2 => When::OnSuccess,
                3 => When::OnFailure,
                4 => When::Always,
                5 | 6 => When::Manual,
                _ => When::Delayed { start_in_ms: [0, 500, 5_000][g.needs_mask as usize % 3] },
            };
            job.allow_failure = match (g.allow, job.when) {
                (0, When::Manual) => AllowFailure::Yes,
                (0, _) => AllowFailure::No,
                (1, _) => AllowFailure::Yes,
                _ => AllowFailure::ExitCodes(vec![2]),
            };
            job.retry = match g.retry_when {
                0 => Retry::max(g.retry_max),
                1 => Retry::from_yaml(g.retry_max, Some(vec![RetryWhen::ScriptFailure]), None),
                2 => Retry::from_yaml(g.retry_max, Some(vec![RetryWhen::RunnerSystemFailure]), None),
                _ => Retry::from_yaml(g.retry_max, None, Some(vec![137])),
            };
            job.interruptible = g.interruptible;
            job
        })
        .collect();
    PipelineSpec::new(jobs)
}

struct Attempt {
    attempt: u32,
    started: bool,
}

struct Driver {
    engine: Engine,
    spec: PipelineSpec,
    now: u64,
    inflight: BTreeMap<String, Attempt>,
    last_attempt: BTreeMap<String, u32>,
    logged: BTreeMap<String, (JobStatus, u32)>,
    events: Vec<Event>,
    batches: Vec<Vec<Command>>,
    finished: usize,
    person_actions: u32,
}

impl Driver {
    fn send(&mut self, event: Event) {
        self.events.push(event.clone());
        let commands = self.engine.on(event.clone()).unwrap_or_else(|err| panic!("{event:?} refused: {err}"));
        match &event {
            Event::JobFinished { job, .. } | Event::LeaseExpired { job, .. } => {
                self.inflight.remove(job);
            }
            Event::JobStarted { job, .. } => self.inflight.get_mut(job).unwrap().started = true,
            _ => {}
        }
        self.check(&commands);
        self.batches.push(commands);
        // Every step also goes through storage.
        let json = serde_json::to_value(&self.engine).unwrap();
        let restored: Engine = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&restored).unwrap(), json);
        self.engine = restored;
    }

    fn check(&mut self, commands: &[Command]) {
        let snapshot = self.engine.snapshot();
        let mut finished_at = None;
        for (position, command) in commands.iter().enumerate() {
            match command {
                Command::RunJob { job, attempt } => {
                    assert!(finished_at.is_none(), "RunJob after PipelineFinished");
                    assert!(!self.inflight.contains_key(job), "{job} runs twice at once");
                    let last = self.last_attempt.insert(job.clone(), *attempt).unwrap_or(0);
                    assert!(*attempt > last, "{job}: attempt {attempt} after {last}");
                    if self.person_actions == 0 {
                        self.assert_predecessors_complete(job, &snapshot);
                    }
                    self.inflight.insert(job.clone(), Attempt { attempt: *attempt, started: false });
                }
                Command::JobStatusChanged { job, attempt, status } => {
                    let previous = self.logged.insert(job.clone(), (*status, *attempt));
                    // Admission: leaving `Created` for a queue or a gate. Playing a manual job
                    // or a delayed job's timer comes later and, as in GitLab, does not look
                    // back (a person may have retried a predecessor meanwhile).
                    let gated = matches!(previous, Some((Manual | Scheduled, a)) if a == *attempt);
                    if matches!(status, Pending | Manual | Scheduled) && !gated {
                        self.assert_predecessors_complete(job, &snapshot);
                    }
                }
                Command::PipelineFinished { status, .. } => {
                    assert!(status.is_complete());
                    finished_at = Some(position);
                    self.finished += 1;
                }
                Command::CancelJob { job, attempt } => {
                    assert_eq!(self.inflight.get(job).map(|a| a.attempt), Some(*attempt));
                }
                // The generated pipelines have no resource groups (`resource_group.rs` covers them).
                Command::WaitForResource { .. } | Command::ReleaseResource { .. } => {
                    panic!("no resource group was generated: {command:?}")
                }
                Command::PipelineStatusChanged { .. } => {}
            }
        }
        if let Some(position) = finished_at {
            assert_eq!(position, commands.len() - 1, "PipelineFinished is the last command");
        }
        for job in &snapshot.jobs {
            let logged = self.logged.get(&job.name).copied().unwrap_or((Created, 1));
            assert_eq!(logged, (job.status, job.attempt), "{} log and state disagree", job.name);
            assert_eq!(job.status.is_active(), self.inflight.contains_key(&job.name), "{}", job.name);
        }
    }

    fn assert_predecessors_complete(&self, job: &str, snapshot: &scheduler::Snapshot) {
        let node = self.spec.job(job).unwrap();
        let status = |name: &str| snapshot.jobs.iter().find(|j| j.name == name).unwrap().status;
        let preds: Vec<&JobNode> = match &node.needs {
            Some(needs) => needs.iter().map(|n| self.spec.job(&n.job).unwrap()).collect(),
            None => self.spec.jobs.iter().filter(|j| j.stage_index < node.stage_index).collect(),
        };
        for pred in preds {
            let pred_status = status(&pred.name);
            let optional_manual = pred_status == Manual && !pred.is_blocking_manual();
            assert!(pred_status.is_complete() || optional_manual, "{job} handed out while {} is {pred_status}", pred.name);
        }
    }

    /// What can happen next: (required, optional) events. Required ones are the executor's
    /// and the clock's, and playing blocking manual jobs; a person's other actions are optional.
    fn candidates(&self, tape: u16) -> (Vec<Event>, Vec<Event>) {
        let now = self.now;
        let mut required = Vec::new();
        for (job, a) in &self.inflight {
            if !a.started && tape % 3 == 0 {
                required.push(Event::JobStarted { job: job.clone(), attempt: a.attempt, now });
            }
            let outcome = match tape % 7 {
                0..=2 => Outcome::Success,
                3 => Outcome::Failed { reason: FailureReason::ScriptFailure, exit_code: Some([1, 2, 137][(tape / 7) as usize % 3]) },
                4 => Outcome::Failed { reason: FailureReason::RunnerSystemFailure, exit_code: None },
                5 => Outcome::Canceled,
                _ => {
                    required.push(Event::LeaseExpired { job: job.clone(), attempt: a.attempt, now });
                    continue;
                }
            };
            required.push(Event::JobFinished { job: job.clone(), attempt: a.attempt, outcome, now });
        }
        if let Some(at) = self.engine.next_wakeup() {
            required.push(Event::Tick { now: now.max(at) });
        }
        for job in self.engine.blocking_manual_jobs() {
            required.push(Event::PlayManual { job: job.into(), now });
        }
        let mut optional = Vec::new();
        if self.person_actions < 3 {
            for job in self.engine.snapshot().jobs {
                let name = job.name.clone();
                match job.status {
                    Manual | Scheduled => optional.push(Event::PlayManual { job: name, now }),
                    Success | Failed | Canceled => optional.push(Event::RetryJob { job: name, now }),
                    Created | Pending | Running => optional.push(Event::CancelJob { job: name, now }),
                    _ => {}
                }
            }
            optional.push(Event::Cancel { now });
            optional.push(Event::AutoCancel { mode: AutoCancelMode::Interruptible, now });
            optional.push(Event::AutoCancel { mode: AutoCancelMode::Conservative, now });
        }
        (required, optional)
    }
}

fn drive(gens: Vec<JobGen>, play_all: bool, tape: Vec<u16>) {
    let spec = build_spec(&gens);
    let options = EngineOptions { play_manual: if play_all { PlayManual::All } else { PlayManual::None } };
    let engine = Engine::new(spec.clone(), options.clone()).expect("generated specs are valid");
    let mut driver = Driver {
        engine,
        spec: spec.clone(),
        now: 0,
        inflight: BTreeMap::new(),
        last_attempt: BTreeMap::new(),
        logged: BTreeMap::new(),
        events: Vec::new(),
        batches: Vec::new(),
        finished: 0,
        person_actions: 0,
    };
    driver.send(Event::Start { now: 0 });
    let mut step = 0;
    while driver.finished == 0 {
        assert!(step < 2_000, "the pipeline did not finish: {:?}", driver.engine.snapshot());
        let choice = tape[step % tape.len()];
        step += 1;
        driver.now += 100;
        let (required, optional) = driver.candidates(choice);
        assert!(!required.is_empty() || driver.engine.is_finished(), "stuck with nothing to do: {:?}", driver.engine.snapshot());
        let person = choice % 10 == 0 && !optional.is_empty();
        let event = if person {
            driver.person_actions += 1;
            optional[(choice / 10) as usize % optional.len()].clone()
        } else {
            required[(choice / 3) as usize % required.len()].clone()
        };
        if let Event::Tick { now } = event {
            driver.now = now;
        }
        driver.send(event);
    }
    assert_eq!(driver.finished, 1);
    assert!(driver.engine.status().is_complete());
    assert!(driver.inflight.is_empty());
    for job in driver.engine.snapshot().jobs {
        let node = spec.job(&job.name).unwrap();
        let left_optional = job.status == Manual && !node.is_blocking_manual();
        assert!(job.status.is_complete() || left_optional, "{} ended {}", job.name, job.status);
    }
    // Determinism: the same events give the same commands.
    let mut replay = Engine::new(spec, options).unwrap();
    for (event, batch) in driver.events.iter().zip(&driver.batches) {
        assert_eq!(&replay.on(event.clone()).unwrap(), batch);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_pipelines_always_finish_cleanly(
        gens in prop::collection::vec(job_gen(), 1..8),
        play_all in any::<bool>(),
        tape in prop::collection::vec(any::<u16>(), 1..64),
    ) {
        drive(gens, play_all, tape);
    }
}
