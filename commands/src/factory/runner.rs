//! The build runner: a process manager that follows the log, takes each queued build, runs it
//! through a [`BuildDriver`] with at most `concurrency` builds at once, and records how it ended.
//! A cancelled build's processes are killed as soon as its `BuildCancelled` event arrives.
//!
//! After a crash (or a stop) the builds this runner had running are failed as
//! [`FailureReason::Interrupted`] when it starts again, and the queued ones are run: a build's
//! command may have side effects, so it is never silently run twice. Each runner has an id
//! (`ATELIER_RUNNER_ID`, the host name by default); builds running on another runner are left
//! to it. Several servers on one database each run a runner: a build starts on exactly one
//! (the `BuildStarted` append decides), so give them distinct ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atelier_domain::factory::build::{Build, BuildError, BuildEvent, FailureReason, Outcome};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::{EventStore, Filter, Position, SubscribeFrom, SubscriptionMessage};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use super::builds::BuildService;
use super::driver::{BuildDriver, Job, RunResult};
use super::logs::{BuildLogs, LogStream};
use crate::handler::{CommandContext, CommandError};

/// A build that was queued or running when the runner started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The build.
    pub build_id: Uuid,
    /// The runner running it (`None`: it is queued).
    pub running_on: Option<String>,
}

/// Where the runner finds the builds left unfinished: the builds read model, once it has
/// passed `position` (the wiring provides it, so commands do not depend on projections).
#[async_trait]
pub trait Backlog: Send + Sync + 'static {
    /// Every queued or running build, oldest first, as of at least `position`.
    async fn unfinished(&self, position: Position) -> Result<Vec<Unfinished>, String>;
}

/// How the runner runs.
#[derive(Clone)]
pub struct RunnerConfig {
    /// This runner's id, recorded in `BuildStarted`.
    pub id: String,
    /// The most builds run at once.
    pub concurrency: usize,
    /// How builds run.
    pub driver: Arc<dyn BuildDriver>,
}

/// A running build runner; dropping it does not stop it, [`BuildRunner::stop`] does.
pub struct BuildRunner {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    store: Arc<dyn EventStore>,
    builds: BuildService,
    logs: BuildLogs,
    config: RunnerConfig,
    slots: Semaphore,
    /// Builds this runner has taken (queued here or running), with their cancel switch.
    taken: Mutex<HashMap<Uuid, CancellationToken>>,
    stop: CancellationToken,
}

impl BuildRunner {
    /// Starts the runner on the current tokio runtime.
    pub fn start(
        store: Arc<dyn EventStore>,
        logs: BuildLogs,
        backlog: Arc<dyn Backlog>,
        config: RunnerConfig,
    ) -> Self {
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            builds: BuildService::new(store.clone()),
            store,
            logs,
            slots: Semaphore::new(config.concurrency.max(1)),
            config,
            taken: Mutex::new(HashMap::new()),
            stop: stop.clone(),
        });
        let task = tokio::spawn(run(shared, backlog));
        Self { stop, task }
    }

    /// Stops at once, like a crash: builds in flight are abandoned (their processes killed) and
    /// stay `running` in the log until a runner with the same id starts again.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for BuildRunner {
    fn name(&self) -> &'static str {
        "factory.build-runner"
    }

    async fn stop(self: Box<Self>) {
        BuildRunner::stop(*self).await;
    }
}

fn system_context() -> CommandContext {
    CommandContext::new(Uuid::nil(), "system:build-runner")
}

/// The context of a runner command: the build's organization, the runner as actor.
fn context(shared: &Shared, org_id: Uuid) -> CommandContext {
    let mut ctx = system_context();
    ctx.org_id = org_id;
    ctx.actor = format!("runner:{}", shared.config.id);
    ctx
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
            warn!(error = %e, "build runner interrupted; starting over");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.stop.cancelled() => break,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    // Abandon every build in flight: their tasks see the stop and drop their processes.
    for (_, token) in shared
        .taken
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
    {
        token.cancel();
    }
}

async fn follow(shared: &Arc<Shared>, backlog: &dyn Backlog) -> Result<(), String> {
    let head = shared
        .store
        .head()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(Position::START);
    let unfinished = backlog.unfinished(head).await?;
    for b in unfinished {
        match b.running_on {
            Some(runner) if runner == shared.config.id => interrupt(shared, b.build_id).await,
            Some(_) => {}
            None => take(shared, b.build_id),
        }
    }
    info!(runner = %shared.config.id, %head, "build runner following the log");
    let mut sub = shared.store.subscribe_all(
        SubscribeFrom::After(head),
        Filter::Category(vec![Build::CATEGORY.to_owned()]),
    );
    while let Some(message) = sub.next().await {
        let SubscriptionMessage::Event(event) = message else {
            continue;
        };
        match BuildEvent::decode_stored(&event.event_type, &event.metadata, &event.data) {
            Ok(BuildEvent::BuildQueued { build_id, .. }) => take(shared, build_id),
            Ok(BuildEvent::BuildCancelled { build_id, .. }) => {
                if let Some(token) = shared
                    .taken
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&build_id)
                {
                    token.cancel();
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "build runner: unreadable build event skipped"),
        }
    }
    Err("the subscription ended".to_owned())
}

/// Fails a build that this runner was running when it stopped.
async fn interrupt(shared: &Arc<Shared>, build_id: Uuid) {
    let Ok((Build::Present(b), _)) = shared.builds.load(build_id).await else {
        return;
    };
    let message = "the runner stopped while the build ran";
    if let Ok(sink) = shared.logs.writer(b.org_id, build_id).await {
        sink.line(LogStream::System, message);
        sink.close().await;
    }
    let outcome = Outcome::Failed {
        exit_code: None,
        reason: FailureReason::Interrupted,
        message: message.to_owned(),
    };
    match shared
        .builds
        .finish(&context(shared, b.org_id), build_id, outcome)
        .await
    {
        Ok(_) => {
            info!(%build_id, "build interrupted by a runner restart marked failed");
            metrics::counter!("atelier_builds_finished_total", "status" => "failed").increment(1);
        }
        Err(CommandError::Rejected(BuildError::NotRunning(_))) => {}
        Err(e) => warn!(%build_id, error = %e, "could not mark an interrupted build failed"),
    }
}

/// Takes a queued build: it runs when a slot is free, unless it was taken already.
fn take(shared: &Arc<Shared>, build_id: Uuid) {
    let token = shared.stop.child_token();
    {
        let mut taken = shared.taken.lock().unwrap_or_else(|e| e.into_inner());
        if taken.contains_key(&build_id) {
            return;
        }
        taken.insert(build_id, token.clone());
    }
    metrics::gauge!("atelier_builds_waiting").increment(1.0);
    let shared = shared.clone();
    tokio::spawn(
        async move {
            let permit = tokio::select! {
                p = shared.slots.acquire() => p,
                _ = token.cancelled() => {
                    metrics::gauge!("atelier_builds_waiting").decrement(1.0);
                    shared.taken.lock().unwrap_or_else(|e| e.into_inner()).remove(&build_id);
                    return;
                }
            };
            metrics::gauge!("atelier_builds_waiting").decrement(1.0);
            let Ok(_permit) = permit else { return };
            execute(&shared, build_id, token).await;
            shared
                .taken
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&build_id);
        }
        .instrument(info_span!("build", %build_id)),
    );
}

async fn execute(shared: &Arc<Shared>, build_id: Uuid, cancel: CancellationToken) {
    let b = match shared.builds.load(build_id).await {
        Ok((Build::Present(b), _)) => b,
        Ok((Build::Absent, _)) => return,
        Err(e) => {
            warn!(error = %e, "cannot load a queued build");
            return;
        }
    };
    let ctx = context(shared, b.org_id);
    match shared.builds.start(&ctx, build_id, &shared.config.id).await {
        Ok(_) => {}
        // Cancelled before it started, or taken by another runner.
        Err(CommandError::Rejected(BuildError::NotQueued(_))) => return,
        Err(e) => {
            warn!(error = %e, "cannot start a build");
            return;
        }
    }
    metrics::gauge!("atelier_builds_running").increment(1.0);
    let job = Job {
        build_id,
        org_id: b.org_id,
        project_id: b.project_id,
        repo_url: b.repo_url.as_str().to_owned(),
        build_command: b.build_command.as_ref().map(|c| c.as_str().to_owned()),
    };
    let result = match shared.logs.writer(b.org_id, build_id).await {
        Ok(sink) => {
            let r = shared.config.driver.run(&job, &sink, cancel.clone()).await;
            if matches!(r, RunResult::Cancelled) && !shared.stop.is_cancelled() {
                sink.line(LogStream::System, "cancelled");
            }
            sink.close().await;
            r
        }
        Err(e) => RunResult::Finished(Outcome::Failed {
            exit_code: None,
            reason: FailureReason::Error,
            message: format!("cannot write the build log: {e}"),
        }),
    };
    metrics::gauge!("atelier_builds_running").decrement(1.0);
    let RunResult::Finished(outcome) = result else {
        // Cancelled: the `BuildCancelled` event is already in the log (or the runner stops).
        return;
    };
    if shared.stop.is_cancelled() {
        return;
    }
    let status = match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed { .. } => "failed",
    };
    // A fresh context: the finish happens now, not when the build started.
    match shared
        .builds
        .finish(&context(shared, b.org_id), build_id, outcome)
        .await
    {
        Ok(_) => {
            metrics::counter!("atelier_builds_finished_total", "status" => status).increment(1)
        }
        // Cancelled while it ended.
        Err(CommandError::Rejected(BuildError::NotRunning(_))) => {}
        Err(e) => warn!(error = %e, "cannot record how a build ended"),
    }
}
