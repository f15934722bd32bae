//! The operation runner: follows the log, takes each queued operation and runs it with its
//! environment's backend ([`Backends`]) — one operation at a time per environment, in the log's
//! order (an install queued while its environment is being made runs once it is made), at most
//! `concurrency` at once — recording its progress, its output (the operation's log) and how it
//! ended, and recording what the environment holds afterwards, read from the environment
//! itself. A cancelled operation's backend is killed (its whole process group) as soon as its
//! `OperationCancelled` event arrives; a deleted or expired environment's operations are
//! cancelled and its directory removed.
//!
//! Environments live in `<data_dir>/<organization id>/<environment id>`: names never reach a
//! path. After a crash (or a stop) the operations this runner had running are failed as
//! [`FailureReason::Interrupted`] when it starts again (an environment being made is failed and
//! its directory removed; any other records what it holds now), queued ones are run, and
//! directories of environments that are gone are removed. Operations running on another runner
//! are left to it; an operation starts on exactly one runner (the `OperationStarted` append
//! decides).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atelier_domain::venvs::environment::{
    EnvStatus, Environment, EnvironmentCommand, EnvironmentData, EnvironmentEvent,
};
use atelier_domain::venvs::operation::{
    FailureReason, Operation, OperationData, OperationError, OperationEvent, OperationRequest,
    OperationStatus, Outcome,
};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::{EventStore, Filter, Position, SubscribeFrom, SubscriptionMessage};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use super::backend::{Backends, Failure};
use super::cache::Cache;
use super::environments::EnvironmentService;
use super::operations::OperationService;
use crate::handler::{CommandContext, CommandError, Written};
use crate::output::{LogHandle, LogStream, OutputLog};

/// An operation that was queued or running when the runner started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The operation.
    pub operation_id: Uuid,
    /// Its environment (none for the cache).
    pub environment_id: Option<Uuid>,
    /// The runner running it (`None`: it is queued).
    pub running_on: Option<String>,
}

/// Where the runner finds what was left unfinished: the read models, once they have passed
/// `position` (the wiring provides it, so commands do not depend on projections).
#[async_trait]
pub trait Backlog: Send + Sync + 'static {
    /// Every queued or running operation, oldest first, as of at least `position`.
    async fn unfinished(&self, position: Position) -> Result<Vec<Unfinished>, String>;
    /// Every environment still being made, as of at least `position`.
    async fn creating(&self, position: Position) -> Result<Vec<Uuid>, String>;
}

/// How the runner runs.
#[derive(Clone)]
pub struct RunnerConfig {
    /// This runner's id, recorded in `OperationStarted`.
    pub id: String,
    /// The most operations run at once (GestVenv's `MAX_CONCURRENT_OPERATIONS`).
    pub concurrency: usize,
    /// Where environments live (one directory per organization).
    pub data_dir: PathBuf,
    /// The backends.
    pub backends: Arc<Backends>,
}

/// The tools with an organization's own cache (what it downloads or imports reaches its
/// installs only).
fn org_backends(shared: &Shared, org_id: Uuid) -> Backends {
    let cache = Cache::new(shared.config.backends.settings().cache_dir.clone());
    shared.config.backends.with_cache_dir(cache.dir(org_id))
}

/// Where an environment lives.
pub fn environment_dir(data_dir: &Path, org_id: Uuid, environment_id: Uuid) -> PathBuf {
    data_dir
        .join(org_id.to_string())
        .join(environment_id.to_string())
}

/// A running operation runner; [`OperationRunner::stop`] stops it.
pub struct OperationRunner {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

struct Taken {
    environment_id: Option<Uuid>,
    cancel: CancellationToken,
}

struct Shared {
    store: Arc<dyn EventStore>,
    environments: EnvironmentService,
    operations: OperationService,
    logs: OutputLog,
    config: RunnerConfig,
    slots: Semaphore,
    /// Operations this runner has taken (waiting or running), with their cancel switch.
    taken: Mutex<HashMap<Uuid, Taken>>,
    /// Each environment's line: its operations run one at a time, in the log's order.
    turns: Turns,
    stop: CancellationToken,
}

/// Each environment's operations in the order the log gave them; the head of a line runs.
#[derive(Default)]
struct Turns {
    lines: Mutex<HashMap<Uuid, std::collections::VecDeque<Uuid>>>,
    moved: tokio::sync::Notify,
}

impl Turns {
    fn lines(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, std::collections::VecDeque<Uuid>>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place at the end of an environment's line (called in the log's order).
    fn join(&self, environment_id: Uuid, who: Uuid) {
        let mut lines = self.lines();
        let line = lines.entry(environment_id).or_default();
        if !line.contains(&who) {
            line.push_back(who);
        }
    }

    /// Waits until `who` heads its environment's line.
    async fn wait(&self, environment_id: Uuid, who: Uuid) {
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.lines().get(&environment_id).and_then(|l| l.front()) == Some(&who) {
                return;
            }
            moved.await;
        }
    }

    /// Leaves the line, wherever `who` stands in it: the next one goes.
    fn leave(&self, environment_id: Uuid, who: Uuid) {
        let mut lines = self.lines();
        if let Some(line) = lines.get_mut(&environment_id) {
            line.retain(|w| *w != who);
            if line.is_empty() {
                lines.remove(&environment_id);
            }
        }
        drop(lines);
        self.moved.notify_waiters();
    }
}

/// A place in an environment's line, left when dropped (whatever ends the task holding it).
struct Place {
    shared: Arc<Shared>,
    environment_id: Uuid,
    who: Uuid,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.shared.turns.leave(self.environment_id, self.who);
    }
}

impl Shared {
    fn taken(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Taken>> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl OperationRunner {
    /// Starts the runner on the current tokio runtime.
    pub fn start(
        store: Arc<dyn EventStore>,
        logs: OutputLog,
        backlog: Arc<dyn Backlog>,
        config: RunnerConfig,
    ) -> Self {
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            environments: EnvironmentService::new(store.clone()),
            operations: OperationService::new(store.clone()),
            store,
            logs,
            slots: Semaphore::new(config.concurrency.max(1)),
            config,
            taken: Mutex::new(HashMap::new()),
            turns: Turns::default(),
            stop: stop.clone(),
        });
        let task = tokio::spawn(run(shared, backlog));
        Self { stop, task }
    }

    /// Stops at once, like a crash: operations in flight are abandoned (their processes
    /// killed) and stay `running` in the log until a runner with the same id starts again.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[async_trait]
impl crate::worker::Worker for OperationRunner {
    fn name(&self) -> &'static str {
        "venvs.operation-runner"
    }

    async fn stop(self: Box<Self>) {
        OperationRunner::stop(*self).await;
    }
}

/// The context of a runner command: the organization, the runner as actor.
fn context(shared: &Shared, org_id: Uuid) -> CommandContext {
    CommandContext::new(org_id, format!("runner:{}", shared.config.id))
}

async fn run(shared: Arc<Shared>, backlog: Arc<dyn Backlog>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            r = follow(&shared, backlog.as_ref()) => r,
            _ = shared.stop.cancelled() => Ok(()),
        };
        if shared.stop.is_cancelled() {
            break;
        }
        if let Err(e) = outcome {
            warn!(error = %e, "operation runner interrupted; starting over");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.stop.cancelled() => break,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    for (_, t) in shared.taken().drain() {
        t.cancel.cancel();
    }
}

async fn follow(shared: &Arc<Shared>, backlog: &dyn Backlog) -> Result<(), String> {
    let head = shared
        .store
        .head()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(Position::START);
    for environment_id in backlog.creating(head).await? {
        let ctx = context(shared, Uuid::nil());
        if let Err(e) = shared
            .environments
            .ensure_creation(&ctx, environment_id)
            .await
        {
            warn!(%environment_id, error = %e, "cannot queue an environment's creation");
        }
    }
    for o in backlog.unfinished(head).await? {
        match o.running_on {
            Some(runner) if runner == shared.config.id => interrupt(shared, o.operation_id).await,
            Some(_) => {}
            None => take(shared, o.operation_id, o.environment_id),
        }
    }
    remove_stray_directories(shared).await;
    info!(runner = %shared.config.id, %head, "operation runner following the log");
    let mut sub = shared.store.subscribe_all(
        SubscribeFrom::After(head),
        Filter::Category(vec![
            Operation::CATEGORY.to_owned(),
            Environment::CATEGORY.to_owned(),
        ]),
    );
    while let Some(message) = sub.next().await {
        let SubscriptionMessage::Event(event) = message else {
            continue;
        };
        if event.stream.category() == Operation::CATEGORY {
            match OperationEvent::decode_stored(&event.event_type, &event.metadata, &event.data) {
                Ok(OperationEvent::OperationQueued {
                    operation_id,
                    environment_id,
                    ..
                }) => take(shared, operation_id, environment_id),
                Ok(OperationEvent::OperationCancelled { operation_id, .. }) => {
                    if let Some(t) = shared.taken().get(&operation_id) {
                        t.cancel.cancel();
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "operation runner: unreadable event skipped"),
            }
        } else {
            match EnvironmentEvent::decode_stored(&event.event_type, &event.metadata, &event.data) {
                Ok(
                    EnvironmentEvent::EnvironmentDeleted { environment_id, .. }
                    | EnvironmentEvent::EnvironmentExpired { environment_id, .. },
                ) => {
                    let org_id = event
                        .metadata
                        .get("org_id")
                        .and_then(serde_json::Value::as_str)
                        .and_then(|s| Uuid::parse_str(s).ok());
                    gone(shared, org_id, environment_id);
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "operation runner: unreadable event skipped"),
            }
        }
    }
    Err("the subscription ended".to_owned())
}

/// An environment was deleted or expired: its operations are cancelled, then its directory is
/// removed (once none of its operations runs).
fn gone(shared: &Arc<Shared>, org_id: Option<Uuid>, environment_id: Uuid) {
    for t in shared.taken().values() {
        if t.environment_id == Some(environment_id) {
            t.cancel.cancel();
        }
    }
    let Some(org_id) = org_id else { return };
    // The removal takes its turn after the environment's operations (cancelled just now).
    let who = Uuid::now_v7();
    shared.turns.join(environment_id, who);
    let place = Place {
        shared: shared.clone(),
        environment_id,
        who,
    };
    tokio::spawn(async move {
        let shared = place.shared.clone();
        shared.turns.wait(environment_id, who).await;
        let dir = environment_dir(&shared.config.data_dir, org_id, environment_id);
        remove_dir(&dir).await;
        drop(place);
    });
}

async fn remove_dir(dir: &Path) {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => info!(dir = %dir.display(), "environment directory removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(dir = %dir.display(), error = %e, "cannot remove an environment directory"),
    }
}

/// Removes the directories of environments that the log says are gone (deleted or expired
/// while no runner ran, or failed while being made). A directory the log does not know is left
/// alone: another server (another database) may share the data directory.
async fn remove_stray_directories(shared: &Arc<Shared>) {
    let Ok(mut orgs) = tokio::fs::read_dir(&shared.config.data_dir).await else {
        return;
    };
    while let Ok(Some(org)) = orgs.next_entry().await {
        let Ok(org_id) = Uuid::parse_str(&org.file_name().to_string_lossy()) else {
            continue;
        };
        let Ok(mut envs) = tokio::fs::read_dir(org.path()).await else {
            continue;
        };
        while let Ok(Some(env)) = envs.next_entry().await {
            let Ok(environment_id) = Uuid::parse_str(&env.file_name().to_string_lossy()) else {
                continue;
            };
            let Ok((env, _)) = shared.environments.load(environment_id).await else {
                continue;
            };
            let gone_here = env.data().is_some_and(|e| {
                e.org_id == org_id && (e.status.is_gone() || e.status == EnvStatus::Failed)
            });
            if gone_here {
                gone(shared, Some(org_id), environment_id);
            }
        }
    }
}

/// Fails an operation this runner was running when it stopped, and leaves its environment
/// truthful: one being made is failed (its directory removed); another records what it holds.
async fn interrupt(shared: &Arc<Shared>, operation_id: Uuid) {
    let Ok((Operation::Present(o), _)) = shared.operations.load(operation_id).await else {
        return;
    };
    let message = "the runner stopped while the operation ran";
    if let Ok(sink) = shared.logs.writer(o.org_id, operation_id).await {
        sink.line(LogStream::System, message);
        sink.close().await;
    }
    let failure = Failed {
        reason: FailureReason::Interrupted,
        error: message.to_owned(),
    };
    if let Some(environment_id) = o.environment_id {
        // A backend the crash left running (its own process group outlives the server) is
        // ended before anything is read from its environment.
        let dir = environment_dir(&shared.config.data_dir, o.org_id, environment_id);
        let ended = tokio::task::spawn_blocking(move || end_leftovers(&dir))
            .await
            .unwrap_or(0);
        if ended > 0 {
            info!(%operation_id, ended, "ended the backend processes an interrupted operation left");
        }
        if let Ok((env, _)) = shared.environments.load(environment_id).await
            && let Some(env) = env.live()
        {
            settle_environment(shared, &o, env, &failure).await;
        }
    }
    finish(shared, &o, Err(failure)).await;
}

/// Ends (SIGKILL, whole process group) every process whose command line names `dir`: the
/// backends of an environment left running by a crash of the server that ran them. Their
/// groups are their own (never this server's). How many groups were ended.
fn end_leftovers(dir: &Path) -> usize {
    let needle = dir.display().to_string();
    let own = nix::unistd::getpgrp();
    let mut groups = std::collections::BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let names_dir = cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(needle.as_str()));
        if !names_dir {
            continue;
        }
        if let Ok(pgid) = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
            && pgid != own
        {
            groups.insert(pgid);
        }
    }
    for pgid in &groups {
        let _ = nix::sys::signal::killpg(*pgid, nix::sys::signal::Signal::SIGKILL);
    }
    groups.len()
}

/// Takes a queued operation: it runs when its environment and a slot are free, unless it was
/// taken already.
fn take(shared: &Arc<Shared>, operation_id: Uuid, environment_id: Option<Uuid>) {
    let cancel = shared.stop.child_token();
    {
        let mut taken = shared.taken();
        if taken.contains_key(&operation_id) {
            return;
        }
        taken.insert(
            operation_id,
            Taken {
                environment_id,
                cancel: cancel.clone(),
            },
        );
    }
    // The place in the environment's line is taken now, in the log's order.
    let place = environment_id.map(|environment_id| {
        shared.turns.join(environment_id, operation_id);
        Place {
            shared: shared.clone(),
            environment_id,
            who: operation_id,
        }
    });
    metrics::gauge!("atelier_venv_operations_waiting").increment(1.0);
    let shared = shared.clone();
    tokio::spawn(
        async move {
            wait_and_execute(&shared, operation_id, place, cancel).await;
            shared.taken().remove(&operation_id);
        }
        .instrument(info_span!("venvs.operation", %operation_id)),
    );
}

async fn wait_and_execute(
    shared: &Arc<Shared>,
    operation_id: Uuid,
    mut place: Option<Place>,
    cancel: CancellationToken,
) {
    let o = match shared.operations.load(operation_id).await {
        Ok((Operation::Present(o), _)) if o.status == OperationStatus::Queued => o,
        Ok(_) => {
            metrics::gauge!("atelier_venv_operations_waiting").decrement(1.0);
            return;
        }
        Err(e) => {
            metrics::gauge!("atelier_venv_operations_waiting").decrement(1.0);
            warn!(error = %e, "cannot load a queued operation");
            return;
        }
    };
    if let Some(t) = shared.taken().get_mut(&operation_id) {
        t.environment_id = o.environment_id;
    }
    if place.is_none()
        && let Some(environment_id) = o.environment_id
    {
        shared.turns.join(environment_id, operation_id);
        place = Some(Place {
            shared: shared.clone(),
            environment_id,
            who: operation_id,
        });
    }
    let waited = async {
        if let Some(p) = &place {
            shared.turns.wait(p.environment_id, operation_id).await;
        }
        shared.slots.acquire().await
    };
    let permit = tokio::select! {
        w = waited => w,
        _ = cancel.cancelled() => {
            metrics::gauge!("atelier_venv_operations_waiting").decrement(1.0);
            return;
        }
    };
    metrics::gauge!("atelier_venv_operations_waiting").decrement(1.0);
    let Ok(_permit) = permit else { return };
    execute(shared, *o, cancel).await;
    drop(place);
}

/// Why an operation failed, before it is recorded.
struct Failed {
    reason: FailureReason,
    error: String,
}

impl From<Failure> for Failed {
    fn from(f: Failure) -> Self {
        match f {
            Failure::TimedOut => Failed {
                reason: FailureReason::TimedOut,
                error: "the backend ran past its time limit and was stopped".to_owned(),
            },
            Failure::Cancelled => Failed {
                reason: FailureReason::Error,
                error: "cancelled".to_owned(),
            },
            Failure::Failed { message } | Failure::Unsupported(message) => Failed {
                reason: FailureReason::Backend,
                error: message,
            },
        }
    }
}

async fn execute(shared: &Arc<Shared>, o: OperationData, cancel: CancellationToken) {
    let ctx = context(shared, o.org_id);
    match shared.operations.start(&ctx, o.id, &shared.config.id).await {
        Ok(_) => {}
        // Cancelled before it started, or taken by another runner.
        Err(CommandError::Rejected(OperationError::NotQueued(_))) => return,
        Err(e) => {
            warn!(error = %e, "cannot start an operation");
            return;
        }
    }
    metrics::gauge!("atelier_venv_operations_running").increment(1.0);
    let sink = shared.logs.writer(o.org_id, o.id).await;
    let log = match &sink {
        Ok(sink) => sink.handle(),
        Err(_) => LogHandle::discard(),
    };
    let result = match sink {
        Ok(_) => work(shared, &o, &log, &cancel).await,
        Err(ref e) => Err(Failed {
            reason: FailureReason::Error,
            error: format!("cannot write the operation's log: {e}"),
        }),
    };
    if let Err(f) = &result {
        log.line(LogStream::System, format!("failed: {}", f.error));
    }
    drop(log);
    if let Ok(sink) = sink {
        sink.close().await;
    }
    metrics::gauge!("atelier_venv_operations_running").decrement(1.0);
    if shared.stop.is_cancelled() {
        // Abandoned: the next start of this runner fails it as interrupted.
        return;
    }
    let mut result = result;
    if cancel.is_cancelled() {
        // Its `OperationCancelled` is in the log, or its environment was deleted or expired.
        if let Ok((Operation::Present(now), _)) = shared.operations.load(o.id).await
            && now.status == OperationStatus::Cancelled
        {
            return;
        }
        result = Err(Failed {
            reason: FailureReason::Error,
            error: "the environment was deleted or expired while the operation ran".to_owned(),
        });
    }
    finish(shared, &o, result).await;
}

async fn finish(
    shared: &Arc<Shared>,
    o: &OperationData,
    result: Result<serde_json::Value, Failed>,
) {
    let (outcome, status) = match result {
        Ok(result) => (Outcome::Completed { result }, "completed"),
        Err(f) => (
            Outcome::Failed {
                reason: f.reason,
                error: f.error,
            },
            "failed",
        ),
    };
    match shared
        .operations
        .finish(&context(shared, o.org_id), o.id, outcome)
        .await
    {
        Ok(_) => metrics::counter!("atelier_venv_operations_finished_total", "status" => status)
            .increment(1),
        Err(CommandError::Rejected(OperationError::NotRunning(_))) => {}
        Err(e) => warn!(error = %e, "cannot record how an operation ended"),
    }
}

/// Records progress; a refusal (the operation was cancelled meanwhile) is not an error here.
async fn progress(shared: &Shared, o: &OperationData, percent: u8, message: String) {
    let ctx = context(shared, o.org_id);
    if let Err(e) = shared
        .operations
        .progress(&ctx, o.id, percent, message)
        .await
        && !matches!(e, CommandError::Rejected(_))
    {
        warn!(error = %e, "cannot record an operation's progress");
    }
}

/// Does what the operation asks; its result.
async fn work(
    shared: &Arc<Shared>,
    o: &OperationData,
    log: &LogHandle,
    cancel: &CancellationToken,
) -> Result<serde_json::Value, Failed> {
    let no_environment = || Failed {
        reason: FailureReason::Error,
        error: "the environment does not exist any more".to_owned(),
    };
    if let OperationRequest::CachePackages {
        packages,
        python_version,
    } = &o.request
    {
        let backends = org_backends(shared, o.org_id);
        let args: Vec<String> = packages.iter().map(|r| r.to_string()).collect();
        progress(
            shared,
            o,
            10,
            format!(
                "downloading {} for Python {python_version}",
                args.join(", ")
            ),
        )
        .await;
        backends
            .download(*python_version, &args, log, cancel)
            .await
            .map_err(Failed::from)?;
        let cache = Cache::new(shared.config.backends.settings().cache_dir.clone());
        let org_id = o.org_id;
        let info = tokio::task::spawn_blocking(move || cache.info(org_id))
            .await
            .map_err(|e| Failed {
                reason: FailureReason::Error,
                error: e.to_string(),
            })?
            .map_err(|e| Failed {
                reason: FailureReason::Error,
                error: format!("cannot read the cache: {e}"),
            })?;
        return Ok(json!({
            "downloaded": args,
            "package_count": info.package_count,
            "size_bytes": info.size_bytes,
        }));
    }
    let environment_id = o.environment_id.ok_or_else(no_environment)?;
    let (env, _) = shared
        .environments
        .load(environment_id)
        .await
        .map_err(|e| Failed {
            reason: FailureReason::Error,
            error: format!("cannot read the environment: {e}"),
        })?;
    let env = env.live().cloned().ok_or_else(no_environment)?;
    let dir = environment_dir(&shared.config.data_dir, env.org_id, env.id);
    let backends = &org_backends(shared, env.org_id);
    if let OperationRequest::CreateEnvironment = o.request {
        let outcome = create(shared, o, &env, &dir, log, cancel).await;
        if let Err(f) = &outcome {
            settle_environment(shared, o, &env, f).await;
        }
        return outcome;
    }
    if env.status != EnvStatus::Ready {
        return Err(Failed {
            reason: FailureReason::Error,
            error: format!("the environment is {}, not ready", env.status.as_str()),
        });
    }
    let done = match &o.request {
        OperationRequest::CreateEnvironment
        | OperationRequest::Refresh
        | OperationRequest::CachePackages { .. } => Ok(()),
        OperationRequest::Install { packages, upgrade } => {
            let args: Vec<String> = packages.iter().map(|r| r.to_string()).collect();
            progress(shared, o, 10, format!("installing {}", args.join(", "))).await;
            backends
                .install(env.backend, &dir, &args, *upgrade, log, cancel)
                .await
        }
        OperationRequest::Update { packages } => {
            let args: Vec<String> = packages.iter().map(|r| r.to_string()).collect();
            progress(shared, o, 10, format!("updating {}", args.join(", "))).await;
            backends
                .install(env.backend, &dir, &args, true, log, cancel)
                .await
        }
        OperationRequest::Uninstall { packages } => {
            progress(
                shared,
                o,
                10,
                format!("uninstalling {}", packages.join(", ")),
            )
            .await;
            backends
                .uninstall(env.backend, &dir, packages, log, cancel)
                .await
        }
    };
    progress(shared, o, 90, "reading the installed packages".to_owned()).await;
    // What the environment holds is recorded whatever happened: the log stays truthful.
    let recorded = record_packages(shared, o, &env).await;
    done.map_err(Failed::from)?;
    let written = recorded?;
    Ok(changes(written.as_ref()))
}

/// Makes the environment, installs what it was created with, and records it ready.
async fn create(
    shared: &Arc<Shared>,
    o: &OperationData,
    env: &EnvironmentData,
    dir: &Path,
    log: &LogHandle,
    cancel: &CancellationToken,
) -> Result<serde_json::Value, Failed> {
    let backends = &org_backends(shared, env.org_id);
    progress(
        shared,
        o,
        10,
        format!(
            "creating the environment with {} and Python {}",
            env.backend.as_str(),
            env.python_version
        ),
    )
    .await;
    if let Some(parent) = dir.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Failed {
                reason: FailureReason::Error,
                error: format!("cannot create the data directory: {e}"),
            })?;
    }
    backends
        .create(env.backend, env.python_version, dir, log, cancel)
        .await?;
    if !env.requested.is_empty() {
        let args: Vec<String> = env.requested.iter().map(|r| r.to_string()).collect();
        progress(shared, o, 40, format!("installing {}", args.join(", "))).await;
        backends
            .install(env.backend, dir, &args, false, log, cancel)
            .await?;
    }
    progress(shared, o, 90, "reading the installed packages".to_owned()).await;
    let python = backends
        .pythons()
        .into_iter()
        .find(|p| p.version == env.python_version)
        .map(|p| p.full_version)
        .unwrap_or_else(|| env.python_version.to_string());
    let ctx = context(shared, o.org_id);
    shared
        .environments
        .record(
            &ctx,
            env.id,
            EnvironmentCommand::MarkReady {
                python: python.clone(),
                at: ctx.occurred_at,
            },
        )
        .await
        .map_err(|e| Failed {
            reason: FailureReason::Error,
            error: format!("cannot record the environment ready: {e}"),
        })?;
    let written = record_packages(shared, o, env).await?;
    let mut result = changes(written.as_ref());
    if let Some(r) = result.as_object_mut() {
        r.insert("python".into(), json!(python));
        r.insert("path".into(), json!(dir.display().to_string()));
    }
    Ok(result)
}

/// Leaves an environment truthful after its operation failed or was interrupted: one being made
/// is failed and its directory removed; a ready one records what it holds now.
async fn settle_environment(
    shared: &Arc<Shared>,
    o: &OperationData,
    env: &EnvironmentData,
    failure: &Failed,
) {
    let ctx = context(shared, o.org_id);
    if env.status == EnvStatus::Creating && o.request == OperationRequest::CreateEnvironment {
        remove_dir(&environment_dir(
            &shared.config.data_dir,
            env.org_id,
            env.id,
        ))
        .await;
        if let Err(e) = shared
            .environments
            .record(
                &ctx,
                env.id,
                EnvironmentCommand::MarkFailed {
                    error: failure.error.clone(),
                    at: ctx.occurred_at,
                },
            )
            .await
        {
            warn!(error = %e, "cannot record an environment failed");
        }
    } else if env.status == EnvStatus::Ready {
        let _ = record_packages(shared, o, env).await;
    }
}

/// Reads what the environment holds and records the differences.
async fn record_packages(
    shared: &Arc<Shared>,
    o: &OperationData,
    env: &EnvironmentData,
) -> Result<Option<Written<Environment>>, Failed> {
    let dir = environment_dir(&shared.config.data_dir, env.org_id, env.id);
    let found = shared
        .config
        .backends
        .list(env.backend, &dir)
        .await
        .map_err(Failed::from)?;
    let ctx = context(shared, o.org_id);
    let command = EnvironmentCommand::RecordPackages {
        found: found.into_iter().map(|p| (p.name, p.version)).collect(),
        operation_id: Some(o.id),
        at: ctx.occurred_at,
    };
    match shared.environments.record(&ctx, env.id, command).await {
        Ok(written) => Ok(Some(written)),
        // Deleted meanwhile: nothing to record.
        Err(CommandError::Rejected(_)) => Ok(None),
        Err(e) => Err(Failed {
            reason: FailureReason::Error,
            error: format!("cannot record the environment's packages: {e}"),
        }),
    }
}

/// What changed in an environment, as an operation's result: `{installed: [{name, version,
/// previous_version}], uninstalled: [{name, version}], package_count}`.
fn changes(written: Option<&Written<Environment>>) -> serde_json::Value {
    let Some(w) = written else {
        return json!({"installed": [], "uninstalled": [], "package_count": null});
    };
    let (Some(before), Some(after)) = (w.previous.data(), w.state.data()) else {
        return json!({"installed": [], "uninstalled": [], "package_count": null});
    };
    let installed: Vec<_> = after
        .packages
        .iter()
        .filter(|(k, p)| {
            before
                .packages
                .get(*k)
                .is_none_or(|b| b.version != p.version)
        })
        .map(|(k, p)| {
            json!({
                "name": p.name,
                "version": p.version,
                "previous_version": before.packages.get(k).map(|b| b.version.clone()),
            })
        })
        .collect();
    let uninstalled: Vec<_> = before
        .packages
        .iter()
        .filter(|(k, _)| !after.packages.contains_key(*k))
        .map(|(_, p)| json!({"name": p.name, "version": p.version}))
        .collect();
    json!({
        "installed": installed,
        "uninstalled": uninstalled,
        "package_count": after.packages.len(),
    })
}
