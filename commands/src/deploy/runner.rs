//! The deploy runner: a process manager that follows the log and makes what its
//! [`Provisioner`] holds match what the log says, one deployment at a time.
//!
//! Every deployment it deals with has a supervisor task that, each time the deployment's stream
//! changes, loads it and acts on it:
//!
//! - **pending** (no runner, or this one): claim it (`DeploymentProvisioning`; the append
//!   decides between runners), provision, start the app, record `DeploymentRunning`, or destroy
//!   what was made and record `DeploymentFailed` with the driver's reason;
//! - **deploying** after a start: start the app again on what it holds;
//! - **running**: watch the app; if it dies by itself, destroy and fail it as `exited`;
//! - **stopped**: stop the app (the infrastructure stays);
//! - **failed** (cancelled included): destroy what it holds;
//! - **deleted**: destroy, record `DeploymentDestroyed`, forget its secrets.
//!
//! A cancel or a delete interrupts a rollout in flight. After a crash (or a stop) the runner
//! starts from the deployments the read model says are pending or its own, and from what its
//! driver still holds: a rollout it had in flight is destroyed and failed as `interrupted`
//! (its commands may have had side effects, so it is not silently run again); an app it ran is
//! adopted if the driver says it still runs, else redeployed (recorded as a redeploy by the
//! runner); anything the driver holds for a deployment that no longer needs it is destroyed.
//! Several servers on one database each run a runner with its own id: each deployment belongs
//! to the one whose claim was appended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atelier_domain::Aggregate;
use atelier_domain::deploy::deployment::{
    Action, Deployment, DeploymentCommand, DeploymentData, DeploymentError, DeploymentStatus,
    FailureReason,
};
use atelier_store::{EventStore, Filter, Position, SubscribeFrom, SubscriptionMessage};
use chrono::{SubsecRound, Utc};
use futures::StreamExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use super::deployments::DeploymentService;
use super::driver::{Failure, Provisioned, Provisioner, Rollout};
use crate::handler::{CommandContext, CommandError};
use crate::output::{LogHandle, LogSink, LogStream, OutputLog};

/// Where the runner finds the deployments to look at after a start: the read model, once it
/// has passed `position` (the wiring provides it, so commands do not depend on projections).
#[async_trait]
pub trait Backlog: Send + Sync + 'static {
    /// Every deployment that is pending, or that `runner` owns and that is not settled for
    /// good (failed, or deleted and destroyed), as of at least `position`.
    async fn work(&self, runner: &str, position: Position) -> Result<Vec<Uuid>, String>;
}

/// How the runner runs.
#[derive(Clone)]
pub struct RunnerConfig {
    /// This runner's id, recorded in `DeploymentProvisioning`.
    pub id: String,
    /// The most rollouts (provision and start) at once.
    pub concurrency: usize,
    /// How deployments are provisioned.
    pub driver: Arc<dyn Provisioner>,
}

/// A running deploy runner; dropping it does not stop it, [`DeployRunner::stop`] does.
pub struct DeployRunner {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// One supervised deployment.
struct Tracked {
    notify: Notify,
    /// Set by every poke; a supervisor that found nothing to do ends only if it is clear.
    poked: AtomicBool,
    /// Set when the app exited (the watcher saw it).
    exited: AtomicBool,
    /// Interrupts the rollout in flight.
    interrupt: Mutex<CancellationToken>,
    /// Ends the exit watcher.
    watch: Mutex<Option<CancellationToken>>,
}

struct Shared {
    store: Arc<dyn EventStore>,
    deployments: DeploymentService,
    logs: OutputLog,
    config: RunnerConfig,
    slots: Semaphore,
    tasks: Mutex<HashMap<Uuid, Arc<Tracked>>>,
    stop: CancellationToken,
}

impl DeployRunner {
    /// Starts the runner on the current tokio runtime.
    pub fn start(
        store: Arc<dyn EventStore>,
        deployments: DeploymentService,
        logs: OutputLog,
        backlog: Arc<dyn Backlog>,
        config: RunnerConfig,
    ) -> Self {
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            store,
            deployments,
            logs,
            slots: Semaphore::new(config.concurrency.max(1)),
            config,
            tasks: Mutex::new(HashMap::new()),
            stop: stop.clone(),
        });
        let task = tokio::spawn(run(shared, backlog));
        Self { stop, task }
    }

    /// Stops at once, like a crash: rollouts in flight are abandoned (the driver removes what
    /// they had made) and stay in their state in the log until a runner with the same id starts
    /// again; apps that run keep running.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[async_trait]
impl crate::worker::Worker for DeployRunner {
    fn name(&self) -> &'static str {
        "deploy.runner"
    }

    async fn stop(self: Box<Self>) {
        DeployRunner::stop(*self).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run(shared: Arc<Shared>, backlog: Arc<dyn Backlog>) {
    crate::worker::follow_until_stopped("deploy.runner", &shared.stop, || {
        follow(&shared, backlog.as_ref())
    })
    .await;
}

async fn follow(shared: &Arc<Shared>, backlog: &dyn Backlog) -> Result<(), String> {
    let head = shared
        .store
        .head()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(Position::START);
    let mut ids = backlog.work(&shared.config.id, head).await?;
    ids.extend(shared.config.driver.inventory().await?);
    ids.sort();
    ids.dedup();
    for id in ids {
        poke(shared, id, true);
    }
    info!(runner = %shared.config.id, driver = shared.config.driver.name(), %head,
        "deploy runner following the log");
    let mut sub = shared.store.subscribe_all(
        SubscribeFrom::After(head),
        Filter::Category(vec![Deployment::CATEGORY.to_owned()]),
    );
    while let Some(message) = sub.next().await {
        let SubscriptionMessage::Event(event) = message else {
            continue;
        };
        let Some(id) = event
            .stream
            .as_str()
            .strip_prefix("deployment-")
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            continue;
        };
        let tracked = lock(&shared.tasks).get(&id).cloned();
        if let Some(t) = tracked {
            match event.event_type.as_str() {
                "DeploymentCancelled" | "DeploymentDeleted" => {
                    lock(&t.interrupt).cancel();
                    end_watch(&t);
                }
                "DeploymentStopped"
                | "DeploymentRedeployed"
                | "DeploymentRolledBack"
                | "DeploymentEnvChanged" => end_watch(&t),
                _ => {}
            }
        }
        poke(shared, id, false);
    }
    Err("the subscription ended".to_owned())
}

fn end_watch(t: &Tracked) {
    if let Some(w) = lock(&t.watch).take() {
        w.cancel();
    }
}

/// Wakes the deployment's supervisor, starting one if it has none.
fn poke(shared: &Arc<Shared>, id: Uuid, after_restart: bool) {
    let mut tasks = lock(&shared.tasks);
    if let Some(t) = tasks.get(&id) {
        t.poked.store(true, Ordering::SeqCst);
        t.notify.notify_one();
        return;
    }
    let tracked = Arc::new(Tracked {
        notify: Notify::new(),
        poked: AtomicBool::new(false),
        exited: AtomicBool::new(false),
        interrupt: Mutex::new(shared.stop.child_token()),
        watch: Mutex::new(None),
    });
    tasks.insert(id, tracked.clone());
    let shared = shared.clone();
    tokio::spawn(
        async move { supervise(shared, id, tracked, after_restart).await }
            .instrument(info_span!("deployment", deployment_id = %id)),
    );
}

/// What a supervisor does next.
enum Next {
    /// Wait for the next change.
    Wait,
    /// Nothing more to do here.
    Done,
}

/// What a supervisor knows between passes.
struct Supervision {
    id: Uuid,
    after_restart: bool,
    /// The revision it last acted on.
    handled: Option<u64>,
    /// Whether this runner may hold something for it (it claimed it, or found it after a start).
    touched: bool,
    log: Option<LogSink>,
}

async fn supervise(shared: Arc<Shared>, id: Uuid, tracked: Arc<Tracked>, after_restart: bool) {
    let mut s = Supervision {
        id,
        after_restart,
        handled: None,
        touched: after_restart,
        log: None,
    };
    loop {
        tracked.poked.store(false, Ordering::SeqCst);
        let next = if shared.stop.is_cancelled() {
            Next::Done
        } else {
            reconcile(&shared, &tracked, &mut s).await
        };
        s.after_restart = false;
        if shared.stop.is_cancelled() {
            break;
        }
        match next {
            Next::Wait => {
                tokio::select! {
                    _ = tracked.notify.notified() => {}
                    _ = shared.stop.cancelled() => break,
                }
            }
            Next::Done => {
                let mut tasks = lock(&shared.tasks);
                if tracked.poked.swap(false, Ordering::SeqCst) {
                    continue;
                }
                tasks.remove(&id);
                break;
            }
        }
    }
    end_watch(&tracked);
    if let Some(log) = s.log.take() {
        let _ = tokio::time::timeout(Duration::from_secs(5), log.close()).await;
    }
    let mut tasks = lock(&shared.tasks);
    if tasks.get(&id).is_some_and(|t| Arc::ptr_eq(t, &tracked)) {
        tasks.remove(&id);
    }
}

/// The context of a runner command: the deployment's organization, the runner as actor.
fn context(shared: &Shared, org_id: Uuid) -> CommandContext {
    CommandContext::new(org_id, format!("runner:{}", shared.config.id))
}

impl Supervision {
    async fn log(&mut self, shared: &Shared, org_id: Uuid) -> LogHandle {
        if self.log.is_none() {
            match shared.logs.writer(org_id, self.id).await {
                Ok(sink) => self.log = Some(sink),
                Err(e) => warn!(error = %e, "cannot open the deployment log"),
            }
        }
        match &self.log {
            Some(sink) => sink.handle(),
            None => LogHandle::discard(),
        }
    }
}

async fn record(shared: &Shared, d: &DeploymentData, command: DeploymentCommand) -> bool {
    let kind = match &command {
        DeploymentCommand::Claim { .. } => "claim",
        DeploymentCommand::Provisioned { .. } => "provisioned",
        DeploymentCommand::Running { .. } => "running",
        DeploymentCommand::Fail { .. } => "failed",
        DeploymentCommand::Destroyed { .. } => "destroyed",
        _ => "act",
    };
    match shared
        .deployments
        .record(&context(shared, d.org_id), d.id, command)
        .await
    {
        Ok(_) => {
            metrics::counter!("atelier_deployments_transitions_total", "to" => kind).increment(1);
            true
        }
        // The deployment moved meanwhile (a cancel, a delete, another runner's claim): the
        // next pass looks at where it is now.
        Err(CommandError::Rejected(
            DeploymentError::IllegalTransition { .. } | DeploymentError::OwnedElsewhere(_),
        )) => false,
        Err(e) => {
            warn!(error = %e, kind, "cannot record what the driver did");
            false
        }
    }
}

/// Now, to the microsecond (what PostgreSQL keeps).
fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

async fn reconcile(shared: &Arc<Shared>, tracked: &Arc<Tracked>, s: &mut Supervision) -> Next {
    let (state, revision) = match shared.deployments.load(s.id).await {
        Ok(loaded) => loaded,
        Err(e) => {
            warn!(error = %e, "cannot load a deployment");
            // Try again at the next change (or the next start).
            return Next::Wait;
        }
    };
    let Some(d) = state.data() else {
        return Next::Done;
    };
    let exited = tracked.exited.swap(false, Ordering::SeqCst);
    if s.handled == revision && !exited && !s.after_restart {
        return Next::Wait;
    }
    s.handled = revision;
    let me = shared.config.id.as_str();
    let mine = d.runner.as_deref() == Some(me);
    let driver = shared.config.driver.clone();
    use DeploymentStatus as S;
    match d.status {
        S::Pending if d.runner.is_none() || mine => {
            rollout(shared, tracked, s, d).await;
            Next::Wait
        }
        S::Provisioning | S::Deploying
            if mine && (s.after_restart || d.status == S::Provisioning) =>
        {
            // A rollout this runner had in flight when it stopped.
            let log = s.log(shared, d.org_id).await;
            let message = "the server stopped while the deployment was rolled out";
            log.line(LogStream::System, message);
            if let Err(e) = driver.destroy(d.id, &log).await {
                warn!(error = %e, "cannot destroy an interrupted deployment");
            }
            let failed = record(
                shared,
                d,
                DeploymentCommand::Fail {
                    reason: FailureReason::Interrupted,
                    message: message.to_owned(),
                    at: now(),
                },
            )
            .await;
            if failed {
                info!(deployment_id = %d.id, "deployment interrupted by a restart marked failed");
            }
            Next::Wait
        }
        S::Deploying if mine => {
            // Started again after a stop: the infrastructure is there.
            s.touched = true;
            let at = match (&d.ip_address, d.vm_id) {
                (Some(ip), Some(vm_id)) => Provisioned {
                    ip_address: ip.clone(),
                    vm_id,
                },
                _ => {
                    warn!("a deploying deployment without an address");
                    return Next::Wait;
                }
            };
            start(shared, tracked, s, d, &at).await;
            Next::Wait
        }
        S::Running if mine => {
            s.touched = true;
            if !driver.alive(d.id).await {
                let log = s.log(shared, d.org_id).await;
                if s.after_restart {
                    log.line(
                        LogStream::System,
                        "the app was not running when the server started again: redeploying",
                    );
                    let ctx = context(shared, d.org_id);
                    if let Err(e) = shared
                        .deployments
                        .act(&ctx, d.id, None, Action::Redeploy)
                        .await
                    {
                        warn!(error = %e, "cannot redeploy an app that did not survive a restart");
                    }
                } else {
                    let message = tokio::time::timeout(Duration::from_secs(1), driver.exited(d.id))
                        .await
                        .unwrap_or_else(|_| "the app is no longer running".to_owned());
                    log.line(LogStream::System, message.clone());
                    if let Err(e) = driver.destroy(d.id, &log).await {
                        warn!(error = %e, "cannot destroy a deployment whose app exited");
                    }
                    record(
                        shared,
                        d,
                        DeploymentCommand::Fail {
                            reason: FailureReason::Exited,
                            message,
                            at: now(),
                        },
                    )
                    .await;
                }
                return Next::Wait;
            }
            watch(shared, tracked, d.id);
            Next::Wait
        }
        S::Stopped if mine => {
            s.touched = true;
            let log = s.log(shared, d.org_id).await;
            if let Err(e) = driver.stop(d.id, &log).await {
                warn!(error = %e, "cannot stop an app");
                log.line(
                    LogStream::System,
                    format!("the app could not be stopped: {e}"),
                );
            }
            Next::Wait
        }
        S::Failed => {
            if s.touched {
                let log = s.log(shared, d.org_id).await;
                if let Err(e) = driver.destroy(d.id, &log).await {
                    warn!(error = %e, "cannot destroy a failed deployment");
                }
            }
            Next::Done
        }
        S::Deleted if mine && !d.destroyed => {
            let log = s.log(shared, d.org_id).await;
            match driver.destroy(d.id, &log).await {
                Ok(()) => {
                    log.line(LogStream::System, "destroyed");
                    record(shared, d, DeploymentCommand::Destroyed { at: now() }).await;
                }
                Err(e) => {
                    warn!(error = %e, "cannot destroy a deleted deployment");
                    log.line(LogStream::System, format!("could not destroy it: {e}"));
                }
            }
            Next::Wait
        }
        S::Deleted => {
            if d.destroyed {
                if s.touched {
                    let log = s.log(shared, d.org_id).await;
                    let _ = driver.destroy(d.id, &log).await;
                }
                if let Err(e) = shared.deployments.vault().forget(d.id).await {
                    warn!(error = %e, "cannot forget a deleted deployment's secrets");
                }
            }
            Next::Done
        }
        // Another runner's.
        _ => {
            if s.touched && !d.holds_resources() {
                let log = s.log(shared, d.org_id).await;
                let _ = driver.destroy(d.id, &log).await;
            }
            Next::Done
        }
    }
}

/// Watches a running app: when it exits by itself the supervisor is woken.
fn watch(shared: &Arc<Shared>, tracked: &Arc<Tracked>, id: Uuid) {
    let token = {
        let mut w = lock(&tracked.watch);
        if w.is_some() {
            return;
        }
        let token = shared.stop.child_token();
        *w = Some(token.clone());
        token
    };
    let driver = shared.config.driver.clone();
    let tracked = tracked.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = driver.exited(id) => {
                if lock(&tracked.watch).take().is_some() {
                    tracked.exited.store(true, Ordering::SeqCst);
                    tracked.poked.store(true, Ordering::SeqCst);
                    tracked.notify.notify_one();
                }
            }
            _ = token.cancelled() => {}
        }
    });
}

/// A fresh interrupt switch for a rollout, unless the deployment was cancelled already.
fn arm(shared: &Shared, tracked: &Tracked) -> CancellationToken {
    let mut i = lock(&tracked.interrupt);
    if i.is_cancelled() {
        *i = shared.stop.child_token();
    }
    i.clone()
}

async fn job(shared: &Shared, d: &DeploymentData) -> Result<Rollout, Failure> {
    let env = shared
        .deployments
        .resolved_env(d)
        .await
        .map_err(|e| Failure::error(format!("cannot read the deployment's secrets: {e}")))?;
    Ok(Rollout {
        deployment_id: d.id,
        org_id: d.org_id,
        version: d.version,
        spec: d.spec().clone(),
        env,
    })
}

/// The values of the rollout's secret variables: masked in whatever its processes print.
fn secret_values(d: &DeploymentData, job: &Rollout) -> Vec<String> {
    let secret: std::collections::HashSet<&str> = d
        .spec()
        .env
        .iter()
        .filter(|v| v.is_secret())
        .map(|v| v.name.as_str())
        .collect();
    job.env
        .iter()
        .filter(|(name, _)| secret.contains(name.as_str()))
        .map(|(_, value)| value.clone())
        .collect()
}

async fn fail(shared: &Shared, d: &DeploymentData, log: &LogHandle, failure: Failure) {
    let Failure::Failed { reason, message } = failure else {
        // Cancelled (a cancel or a delete event, or the runner stops): the next pass, or the
        // next start, deals with where it is.
        return;
    };
    log.line(LogStream::System, format!("failed: {message}"));
    record(
        shared,
        d,
        DeploymentCommand::Fail {
            reason,
            message,
            at: now(),
        },
    )
    .await;
}

async fn rollout(
    shared: &Arc<Shared>,
    tracked: &Arc<Tracked>,
    s: &mut Supervision,
    d: &DeploymentData,
) {
    let driver = shared.config.driver.clone();
    // Armed before the claim: a cancel or a delete right after it interrupts the rollout.
    let cancel = arm(shared, tracked);
    let claimed = record(
        shared,
        d,
        DeploymentCommand::Claim {
            runner: shared.config.id.clone(),
            driver: driver.name().to_owned(),
            at: now(),
        },
    )
    .await;
    if !claimed {
        return;
    }
    s.touched = true;
    let log = s.log(shared, d.org_id).await;
    log.line(
        LogStream::System,
        format!(
            "rolling out version {} on runner {} ({} driver)",
            d.version,
            shared.config.id,
            driver.name()
        ),
    );
    let permit = tokio::select! {
        p = shared.slots.acquire() => p,
        _ = cancel.cancelled() => return,
    };
    let Ok(_permit) = permit else { return };
    metrics::gauge!("atelier_deployments_rolling_out").increment(1.0);
    let outcome = async {
        let job = job(shared, d).await?;
        let log = log.redacting(secret_values(d, &job));
        let at = driver.provision(&job, &log, &cancel).await?;
        log.line(
            LogStream::System,
            format!("provisioned: {} (VM {})", at.ip_address, at.vm_id),
        );
        let recorded = record(
            shared,
            d,
            DeploymentCommand::Provisioned {
                ip_address: at.ip_address.clone(),
                vm_id: at.vm_id,
                at: now(),
            },
        )
        .await;
        if !recorded {
            return Err(Failure::Cancelled);
        }
        let url = match driver.start(&job, &at, &log, &cancel).await {
            Ok(url) => url,
            Err(f) => {
                if !shared.stop.is_cancelled() {
                    let _ = driver.destroy(d.id, &log).await;
                }
                return Err(f);
            }
        };
        Ok(url)
    }
    .await;
    metrics::gauge!("atelier_deployments_rolling_out").decrement(1.0);
    match outcome {
        Ok(url) => {
            log.line(LogStream::System, format!("running at {url}"));
            record(
                shared,
                d,
                DeploymentCommand::Running {
                    access_url: url,
                    at: now(),
                },
            )
            .await;
        }
        Err(f) => fail(shared, d, &log, f).await,
    }
}

async fn start(
    shared: &Arc<Shared>,
    tracked: &Arc<Tracked>,
    s: &mut Supervision,
    d: &DeploymentData,
    at: &Provisioned,
) {
    let driver = shared.config.driver.clone();
    let cancel = arm(shared, tracked);
    let log = s.log(shared, d.org_id).await;
    log.line(LogStream::System, format!("starting version {}", d.version));
    let permit = tokio::select! {
        p = shared.slots.acquire() => p,
        _ = cancel.cancelled() => return,
    };
    let Ok(_permit) = permit else { return };
    let outcome = async {
        let job = job(shared, d).await?;
        let log = log.redacting(secret_values(d, &job));
        match driver.start(&job, at, &log, &cancel).await {
            Ok(url) => Ok(url),
            Err(f) => {
                if !shared.stop.is_cancelled() {
                    let _ = driver.destroy(d.id, &log).await;
                }
                Err(f)
            }
        }
    }
    .await;
    match outcome {
        Ok(url) => {
            log.line(LogStream::System, format!("running at {url}"));
            record(
                shared,
                d,
                DeploymentCommand::Running {
                    access_url: url,
                    at: now(),
                },
            )
            .await;
        }
        Err(f) => fail(shared, d, &log, f).await,
    }
}
