//! A fake piste server built from `scheduler::protocol`: in-memory state, the runner endpoints
//! as the protocol describes them, git over smart HTTP through `git http-backend`, and faults
//! to inject. It checks what a real server would (tokens, offsets, digests) and records
//! everything the agent sent, so tests assert on what reached "the server".

mod git;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use futures_util::stream;
use scheduler::job::JobSpec;
use scheduler::protocol::{
    self, FinishRequest, GitSource, Heartbeat, JobPayload, LogAck, LogGap, RegisterRequest, RegisterResponse, paths,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use git::basic_auth;

/// A fault the log endpoint applies to one request, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFault {
    /// Answer 500 without storing.
    Fail500,
    /// Store the chunk, then answer 500 (the acknowledgement is lost).
    StoreThen500,
    /// Store the chunk, then break the connection in the middle of the answer.
    StoreThenReset,
    /// Answer 409 with the log's end as `expected_offset`, whatever the offset.
    Gap409,
}

/// One log request as received.
#[derive(Debug, Clone)]
pub struct LogRequest {
    pub offset: u64,
    pub body: Vec<u8>,
    pub at: SystemTime,
}

/// What the fake knows about one job.
#[derive(Debug, Clone, Default)]
pub struct JobRecord {
    pub token: Option<String>,
    pub log: Vec<u8>,
    pub log_requests: Vec<LogRequest>,
    /// Overlapping chunks whose repeated bytes differed from what was stored.
    pub mismatches: Vec<String>,
    pub heartbeats: u32,
    pub cancel: bool,
    /// Status the heartbeat answers with instead of 200 (e.g. 410).
    pub heartbeat_status: Option<u16>,
    /// `(x-sha256 header, body)`.
    pub artifacts: Option<(String, Vec<u8>)>,
    pub finish: Option<FinishRequest>,
    pub finishes: u32,
    pub dispatched_at: Option<Instant>,
    pub finished_at: Option<Instant>,
}

impl JobRecord {
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log).into_owned()
    }
}

#[derive(Default)]
struct Inner {
    next_job: i64,
    runners: Vec<(i64, String)>,
    registrations: u32,
    queue: VecDeque<JobPayload>,
    jobs: BTreeMap<i64, JobRecord>,
    projects: HashMap<i64, String>,
    log_faults: VecDeque<LogFault>,
    /// Until then, every log request gets 503.
    logs_refused_until: Option<Instant>,
    dependency_artifacts: HashMap<i64, Vec<u8>>,
    git_requests: u32,
    lease_ms: u64,
}

/// The fake's state; it survives a restart of the HTTP side.
pub struct FakeState {
    inner: Mutex<Inner>,
    queued: Notify,
    pub registration_token: String,
    /// Repositories served over git: `<git_root>/<project>`.
    pub git_root: PathBuf,
    poll_hold: Duration,
    /// While `true`, finish reports wait for their answer ([`FakeState::hold_finishes`]).
    finishes_held: tokio::sync::watch::Sender<bool>,
}

impl FakeState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finish reports get no answer until `held` is `false` again (a server slow to store
    /// results); each is recorded when answered.
    pub fn hold_finishes(&self, held: bool) {
        self.finishes_held.send_replace(held);
    }

    /// A runner token the fake accepts, as if registered.
    pub fn add_runner(&self, token: &str) {
        let mut inner = self.lock();
        let id = inner.runners.len() as i64 + 1;
        inner.runners.push((id, token.to_owned()));
    }

    pub fn runner_tokens(&self) -> Vec<String> {
        self.lock().runners.iter().map(|(_, t)| t.clone()).collect()
    }

    pub fn registrations(&self) -> u32 {
        self.lock().registrations
    }

    pub fn set_lease_ms(&self, ms: u64) {
        self.lock().lease_ms = ms;
    }

    /// A payload for `project` at `sha` (ref `refs/heads/main`) running `script`; the job id
    /// is assigned here, the token at dispatch.
    pub fn payload(&self, project: &str, sha: &str, script: &[&str]) -> JobPayload {
        let mut inner = self.lock();
        inner.next_job += 1;
        JobPayload {
            job_id: inner.next_job,
            pipeline_id: 1,
            project: project.to_owned(),
            attempt: 1,
            token: String::new(),
            lease_ms: 0,
            git: GitSource { path: paths::git(inner.next_job), sha: sha.to_owned(), git_ref: "refs/heads/main".into() },
            job: JobSpec {
                name: format!("job-{}", inner.next_job),
                stage: "test".into(),
                image: None,
                services: Vec::new(),
                script: script.iter().map(|s| s.to_string()).collect(),
                steps: Vec::new(),
                after_script: Vec::new(),
                variables: Vec::new(),
                timeout_s: 120,
                artifacts: None,
                cache: Vec::new(),
                dependencies: Vec::new(),
                node_index: None,
                manual: false,
                coverage: None,
                environment: None,
                cross_needs: Vec::new(),
                id_tokens: Vec::new(),
            },
            predefined: Vec::new(),
            dotenv: Vec::new(),
            dependencies: Vec::new(),
            signing_key: None,
            log_in_finish: false,
            reuse: None,
        }
    }

    pub fn enqueue(&self, payload: JobPayload) -> i64 {
        let id = payload.job_id;
        {
            let mut inner = self.lock();
            inner.projects.insert(id, payload.project.clone());
            inner.jobs.insert(id, JobRecord::default());
            inner.queue.push_back(payload);
        }
        self.queued.notify_waiters();
        id
    }

    pub fn job(&self, id: i64) -> JobRecord {
        self.lock().jobs.get(&id).cloned().unwrap_or_default()
    }

    pub fn cancel(&self, id: i64) {
        if let Some(j) = self.lock().jobs.get_mut(&id) {
            j.cancel = true;
        }
    }

    pub fn set_heartbeat_status(&self, id: i64, status: u16) {
        if let Some(j) = self.lock().jobs.get_mut(&id) {
            j.heartbeat_status = Some(status);
        }
    }

    pub fn push_log_faults(&self, faults: &[LogFault]) {
        self.lock().log_faults.extend(faults);
    }

    pub fn log_faults_left(&self) -> usize {
        self.lock().log_faults.len()
    }

    pub fn refuse_logs_for(&self, d: Duration) {
        self.lock().logs_refused_until = Some(Instant::now() + d);
    }

    pub fn set_dependency_artifacts(&self, job: i64, archive: Vec<u8>) {
        self.lock().dependency_artifacts.insert(job, archive);
    }

    pub fn git_requests(&self) -> u32 {
        self.lock().git_requests
    }

    /// Waits until `job` is finished (at most `limit`).
    pub async fn finished(&self, job: i64, limit: Duration) -> JobRecord {
        let deadline = Instant::now() + limit;
        loop {
            let record = self.job(job);
            if record.finish.is_some() {
                return record;
            }
            assert!(Instant::now() < deadline, "job {job} did not finish within {limit:?}; log so far:\n{}", record.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `job`'s log contains `text` (at most `limit`).
    pub async fn log_contains(&self, job: i64, text: &str, limit: Duration) -> JobRecord {
        let deadline = Instant::now() + limit;
        loop {
            let record = self.job(job);
            if record.log_text().contains(text) {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "job {job}'s log did not show `{text}` within {limit:?}; log so far:\n{}",
                record.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The HTTP side of the fake, bound to one address.
pub struct Fake {
    pub state: Arc<FakeState>,
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    /// A fake on a fresh port, serving repositories from `git_root`.
    pub async fn start(git_root: PathBuf) -> Fake {
        let state = Arc::new(FakeState {
            inner: Mutex::new(Inner { lease_ms: 3000, ..Inner::default() }),
            queued: Notify::new(),
            registration_token: "fake-registration-token".into(),
            git_root,
            poll_hold: Duration::from_secs(2),
            finishes_held: tokio::sync::watch::Sender::new(false),
        });
        Fake::start_with(state, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Serves `state` on `addr` (a restart keeps the port and the state).
    pub async fn start_with(state: Arc<FakeState>, addr: SocketAddr) -> Fake {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the fake server");
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let app = router(state.clone(), stop.clone());
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(signal.cancelled_owned()).await.expect("fake server");
        });
        Fake { state, addr, stop, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving (the port refuses connections) for `pause`, then serves the same state
    /// on the same port again, as a restarted server would.
    pub async fn restart_after(&mut self, pause: Duration) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
        tokio::time::sleep(pause).await;
        *self = Fake::start_with(self.state.clone(), self.addr).await;
    }
}

struct App {
    state: Arc<FakeState>,
    stop: CancellationToken,
}

fn router(state: Arc<FakeState>, stop: CancellationToken) -> Router {
    let app = Arc::new(App { state, stop });
    Router::new()
        .route(paths::REGISTER, post(register))
        .route(paths::REQUEST_JOB, post(request_job))
        .route("/api/v1/jobs/{id}/heartbeat", post(heartbeat))
        .route("/api/v1/jobs/{id}/log", put(append_log))
        .route("/api/v1/jobs/{id}/artifacts", put(upload_artifacts))
        .route("/api/v1/jobs/{id}/artifacts/{dep}", get(download_artifacts))
        .route("/api/v1/jobs/{id}/finish", post(finish))
        .route("/api/v1/jobs/{id}/git/{*rest}", any(git_http))
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(app)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, Json(protocol::ApiError { code: code.into(), message: format!("fake server: {code}") })).into_response()
}

async fn register(State(app): State<Arc<App>>, Json(req): Json<RegisterRequest>) -> Response {
    if req.registration_token != app.state.registration_token {
        return error(StatusCode::UNAUTHORIZED, "invalid_registration_token");
    }
    let token = random_token();
    let mut inner = app.state.lock();
    inner.registrations += 1;
    let id = inner.runners.len() as i64 + 1;
    inner.runners.push((id, token.clone()));
    (StatusCode::CREATED, Json(RegisterResponse { id, token })).into_response()
}

async fn request_job(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let token = bearer(&headers).unwrap_or_default().to_owned();
    if !app.state.lock().runners.iter().any(|(_, t)| *t == token) {
        return error(StatusCode::UNAUTHORIZED, "unknown_runner_token");
    }
    let deadline = tokio::time::Instant::now() + app.state.poll_hold;
    loop {
        let notified = app.state.queued.notified();
        {
            let mut inner = app.state.lock();
            if let Some(mut payload) = inner.queue.pop_front() {
                payload.token = random_token();
                payload.lease_ms = inner.lease_ms;
                let record = inner.jobs.entry(payload.job_id).or_default();
                record.token = Some(payload.token.clone());
                record.dispatched_at = Some(Instant::now());
                return Json(payload).into_response();
            }
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline) => return StatusCode::NO_CONTENT.into_response(),
            () = app.stop.cancelled() => return StatusCode::NO_CONTENT.into_response(),
        }
    }
}

/// Checks the job token; `Some` is the refusal to answer with.
fn refused(app: &App, id: i64, headers: &HeaderMap) -> Option<Response> {
    let inner = app.state.lock();
    match inner.jobs.get(&id).and_then(|j| j.token.as_deref()) {
        Some(t) if Some(t) == bearer(headers) => None,
        _ => Some(error(StatusCode::UNAUTHORIZED, "invalid_job_token")),
    }
}

async fn heartbeat(State(app): State<Arc<App>>, Path(id): Path<i64>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&app, id, &headers) {
        return r;
    }
    let mut inner = app.state.lock();
    let lease_ms = inner.lease_ms;
    let job = inner.jobs.get_mut(&id).expect("authorized job");
    job.heartbeats += 1;
    if let Some(status) = job.heartbeat_status {
        return error(StatusCode::from_u16(status).unwrap(), "job_taken_away");
    }
    Json(Heartbeat { cancel: job.cancel, lease_ms }).into_response()
}

#[derive(Deserialize)]
struct Offset {
    offset: u64,
}

async fn append_log(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
    Query(q): Query<Offset>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refused(&app, id, &headers) {
        return r;
    }
    let mut inner = app.state.lock();
    if inner.logs_refused_until.is_some_and(|t| Instant::now() < t) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "logs_refused");
    }
    let fault = inner.log_faults.pop_front();
    let job = inner.jobs.get_mut(&id).expect("authorized job");
    job.log_requests.push(LogRequest { offset: q.offset, body: body.to_vec(), at: SystemTime::now() });
    let len = job.log.len() as u64;
    let gap =
        || (StatusCode::CONFLICT, Json(LogGap { code: "log_gap".into(), message: "gap".into(), expected_offset: len })).into_response();
    match fault {
        Some(LogFault::Fail500) => return error(StatusCode::INTERNAL_SERVER_ERROR, "injected"),
        Some(LogFault::Gap409) => return gap(),
        _ => {}
    }
    if q.offset > len {
        return gap();
    }
    // The part already stored must be a repeat of what is there.
    let overlap = ((len - q.offset) as usize).min(body.len());
    if body[..overlap] != job.log[q.offset as usize..q.offset as usize + overlap] {
        job.mismatches.push(format!("chunk at {} differs from the stored log in its first {overlap} bytes", q.offset));
    }
    job.log.extend_from_slice(&body[overlap..]);
    let next_offset = job.log.len() as u64;
    match fault {
        Some(LogFault::StoreThen500) => error(StatusCode::INTERNAL_SERVER_ERROR, "injected_after_store"),
        Some(LogFault::StoreThenReset) => {
            let broken = stream::iter([Err::<Bytes, std::io::Error>(std::io::Error::other("injected reset"))]);
            Response::builder()
                .status(StatusCode::ACCEPTED)
                .header("content-type", "application/json")
                .body(Body::from_stream(broken))
                .unwrap()
        }
        _ => (StatusCode::ACCEPTED, Json(LogAck { next_offset })).into_response(),
    }
}

async fn upload_artifacts(State(app): State<Arc<App>>, Path(id): Path<i64>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refused(&app, id, &headers) {
        return r;
    }
    let announced = headers.get(protocol::SHA256_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    if announced != actual {
        return error(StatusCode::BAD_REQUEST, "digest_mismatch");
    }
    app.state.lock().jobs.get_mut(&id).expect("authorized job").artifacts = Some((announced, body.to_vec()));
    StatusCode::CREATED.into_response()
}

async fn download_artifacts(State(app): State<Arc<App>>, Path((id, dep)): Path<(i64, i64)>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&app, id, &headers) {
        return r;
    }
    match app.state.lock().dependency_artifacts.get(&dep) {
        Some(archive) => {
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(archive)));
            ([(protocol::SHA256_HEADER, digest)], archive.clone()).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no_artifacts"),
    }
}

async fn finish(State(app): State<Arc<App>>, Path(id): Path<i64>, headers: HeaderMap, Json(req): Json<FinishRequest>) -> Response {
    if let Some(r) = refused(&app, id, &headers) {
        return r;
    }
    let _ = app.state.finishes_held.subscribe().wait_for(|held| !held).await;
    let mut inner = app.state.lock();
    let job = inner.jobs.get_mut(&id).expect("authorized job");
    job.finishes += 1;
    if job.finish.is_none() {
        // A whole log in the report, as the server stores it: the log from offset 0.
        if let Some(whole) = &req.log {
            if job.log.is_empty() {
                job.log.extend_from_slice(&whole.0);
            }
        }
        job.finish = Some(req);
        job.finished_at = Some(Instant::now());
    }
    StatusCode::OK.into_response()
}

async fn git_http(
    State(app): State<Arc<App>>,
    Path((id, rest)): Path<(i64, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Only the job's own token, while the job runs, reaches its project's repository.
    let (allowed, project) = {
        let mut inner = app.state.lock();
        inner.git_requests += 1;
        let job = inner.jobs.get(&id).filter(|j| j.finish.is_none());
        let allowed = job.and_then(|j| j.token.as_deref()).map(|t| basic_auth(protocol::GIT_USER, t));
        (allowed, inner.projects.get(&id).cloned().unwrap_or_default())
    };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if allowed.as_deref() != Some(given) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"piste\"")
            .body(Body::from("job token required"))
            .unwrap();
    }
    git::serve(&app.state.git_root, &project, &rest, &method, query.as_deref().unwrap_or(""), &headers, body).await
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("random bytes");
    hex::encode(bytes)
}
