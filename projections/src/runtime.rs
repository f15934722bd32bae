//! The projection runtime: one actix actor per projection, following the log from its
//! checkpoint and applying each batch of events together with its new checkpoint in one
//! PostgreSQL transaction.
//!
//! - Exactly once: the checkpoint update is fenced by the projection's generation and previous
//!   position, so a batch applies only on top of the checkpoint it was read from. A runner that
//!   loses that race (another runner, a rebuild) rolls back and restarts from the checkpoint.
//! - A failing event stops its projection, visibly: status `failed` with the error and the
//!   event's position (in the table, the registry, the `atelier_projection_failed` gauge and
//!   the log). It is never skipped; a restart retries it.
//! - A changed version (seen when a runner starts) empties the projection's tables and replays
//!   the log from the start ([`reset`]).
//! - An explicit rebuild ([`Registry::rebuild`], `atelier projections rebuild`) builds the new
//!   generation beside the old one and swaps it in once caught up ([`crate::rebuild`]): readers
//!   never see an empty or half-built read model.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};
use async_trait::async_trait;
use atelier_domain::EventDecodeError;
use atelier_store::{
    EventStore, Filter, Position, RecordedEvent, SubscribeFrom, SubscriptionMessage,
};
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tracing::{Instrument, error, info, info_span, warn};

pub use crate::rebuild::RebuildError;
use crate::rebuild::{BuildProgress, Purpose, SchemaLock, Swapped};

/// Most events applied in one transaction.
pub const MAX_BATCH: usize = 500;

/// At most this many events of other categories pass a projection by before its checkpoint is
/// written without any event applied (see [`Projection::categories`]): what a restart reads
/// again for nothing.
pub const CHECKPOINT_EVERY: u64 = 10_000;

/// Whether `projection` applies events of `event`'s category.
fn handles(projection: &dyn Projection, event: &RecordedEvent) -> bool {
    projection
        .categories()
        .is_none_or(|categories| categories.contains(&event.stream.category()))
}

/// The filter of the log that reads what `projection` applies.
pub(crate) fn filter_of(projection: &dyn Projection) -> Filter {
    match projection.categories() {
        Some(categories) => Filter::Category(categories.iter().map(|c| (*c).to_owned()).collect()),
        None => Filter::All,
    }
}

/// A read model derived from the log.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Its stable name, such as `factory.projects`.
    fn name(&self) -> &'static str;
    /// Its version: changing it rebuilds the read model from the start of the log.
    fn version(&self) -> i32;
    /// The tables it owns (in the `public` schema): it alone writes them, and a rebuild builds
    /// and swaps exactly these. No two projections own the same table.
    fn tables(&self) -> &'static [&'static str];
    /// Empties its tables (for a rebuild).
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error>;
    /// The stream categories whose events it applies; `None` (the default): every event.
    ///
    /// The runtime gives it only the events of these categories. A batch with none of them
    /// costs no transaction: the projection's position moves in memory (what readers wait on),
    /// and its checkpoint is written with its next applied batch, or alone after
    /// [`CHECKPOINT_EVERY`] events passed over. After a restart the passed-over events are read
    /// again and passed over again.
    fn categories(&self) -> Option<&'static [&'static str]> {
        None
    }
    /// Applies one event of the log (every event of its [`Projection::categories`] comes here;
    /// ignore those that do not matter).
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The database refused or failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The event could not be read.
    #[error(transparent)]
    Decode(#[from] EventDecodeError),
    /// The event does not fit the read model.
    #[error("{0}")]
    Invalid(String),
}

impl ProjectionError {
    /// Whether retrying later may succeed (a lost connection) rather than fail again (a bad
    /// event, a constraint).
    fn is_transient(&self) -> bool {
        matches!(
            self,
            ProjectionError::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Protocol(_)
            )
        )
    }
}

/// Where a projection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Loading its checkpoint.
    Starting,
    /// Reading the log's backlog.
    CatchingUp,
    /// Following new events.
    Live,
    /// Stopped by an event it could not apply.
    Failed,
    /// Not running.
    Stopped,
    /// Serving its read model while a new generation is built beside it (statuses only: the
    /// runner itself keeps following the log meanwhile).
    Rebuilding,
}

/// A rebuild of a projection: running, or how the last one ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// Whether it is still running.
    pub running: bool,
    /// Where the new generation is: every event up to here is applied to it.
    pub position: Position,
    /// Events of the log read into it so far.
    pub events: u64,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When it ended (swapped in, or failed).
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why it failed (the old read model still serves).
    pub error: Option<String>,
}

/// What a projection reports.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: i32,
    /// Its state.
    pub state: RunState,
    /// Its checkpoint: every event up to here is applied.
    pub position: Position,
    /// Why it failed.
    pub error: Option<String>,
    /// The event it failed on.
    pub failed_at: Option<Position>,
    /// How many times its read model was reset (rebuilds, version changes). A runner only
    /// reports progress for the generation it read its checkpoint in, so a batch committed just
    /// before a rebuild can never make the emptied read model look caught up.
    pub generation: i64,
    /// The running rebuild, or the last one this process ran.
    pub rebuild: Option<RebuildReport>,
}

/// The live state of one running projection.
struct Cell {
    status: RwLock<ProjectionStatus>,
    progress: watch::Sender<Progress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    position: Position,
    failed: bool,
}

impl Cell {
    fn update(&self, f: impl FnOnce(&mut ProjectionStatus)) {
        let mut s = self.status.write().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        let name = s.name.clone();
        metrics::gauge!("atelier_projection_failed", "projection" => name.clone()).set(
            if s.state == RunState::Failed {
                1.0
            } else {
                0.0
            },
        );
        metrics::gauge!("atelier_projection_commit", "projection" => name)
            .set(s.position.commit as f64);
        let progress = Progress {
            position: s.position,
            failed: s.state == RunState::Failed,
        };
        self.progress.send_replace(progress);
    }

    /// Applies `f` only if no newer generation has been announced (by a rebuild or a newer
    /// runner); records `generation` as the current one.
    fn update_for(&self, generation: i64, f: impl FnOnce(&mut ProjectionStatus)) {
        self.update(|s| {
            if s.generation <= generation {
                s.generation = generation;
                f(s);
            }
        });
    }
}

/// Why a read could not wait for a projection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// No projection has this name.
    #[error("no projection is named {0}")]
    Unknown(String),
    /// The projection did not reach the position in time.
    #[error("projection {0} has not reached the position yet")]
    Timeout(String),
    /// The projection failed and will not reach it until fixed.
    #[error("projection {0} is stopped by a failure")]
    Failed(String),
}

#[derive(Clone)]
struct Runner {
    addr: actix::Addr<ProjectionRunner>,
    projection: Arc<dyn Projection>,
    store: Arc<dyn EventStore>,
    pool: PgPool,
}

impl ProjectionStatus {
    /// As reported: `rebuilding` while a rebuild runs.
    fn reported(mut self) -> Self {
        if self.rebuild.as_ref().is_some_and(|r| r.running) {
            self.state = RunState::Rebuilding;
        }
        self
    }
}

/// A rebuild started in the background.
pub struct RebuildHandle {
    task: tokio::task::JoinHandle<Result<Swapped, RebuildError>>,
}

impl RebuildHandle {
    /// Waits until the new generation is swapped in (or the rebuild failed).
    pub async fn finished(self) -> Result<Swapped, RebuildError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(RebuildError::Database(sqlx::Error::Protocol(format!(
                "the rebuild task ended abnormally: {e}"
            )))),
        }
    }
}

/// Every projection running in this process.
#[derive(Clone, Default)]
pub struct Registry {
    cells: Arc<RwLock<HashMap<&'static str, Arc<Cell>>>>,
    runners: Arc<RwLock<HashMap<&'static str, Runner>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Their statuses, by name (a projection being rebuilt reads `rebuilding`).
    pub fn statuses(&self) -> Vec<ProjectionStatus> {
        let mut out: Vec<_> = self
            .runner_statuses()
            .into_iter()
            .map(ProjectionStatus::reported)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The status of projection `name`, if it runs here.
    pub fn status(&self, name: &str) -> Option<ProjectionStatus> {
        let cells = self.cells.read().unwrap_or_else(|e| e.into_inner());
        cells.get(name).map(|c| {
            c.status
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .reported()
        })
    }

    /// The runners' own states (a rebuild beside the read model does not change them).
    fn runner_statuses(&self) -> Vec<ProjectionStatus> {
        let cells = self.cells.read().unwrap_or_else(|e| e.into_inner());
        cells
            .values()
            .map(|c| c.status.read().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Whether every projection has caught up with the log as it was when it started, and none
    /// has failed. A rebuild beside the read model does not make it unready: the old read model
    /// keeps serving, and keeps following the log.
    pub fn is_ready(&self) -> bool {
        self.runner_statuses()
            .iter()
            .all(|s| s.state == RunState::Live)
    }

    /// Waits until the status of projection `name` (as [`Registry::status`] reports it)
    /// satisfies `done`: a rebuild finished, a generation reached. Every status change wakes
    /// it; no polling.
    pub async fn wait_status(
        &self,
        name: &str,
        done: impl Fn(&ProjectionStatus) -> bool,
        timeout: Duration,
    ) -> Result<ProjectionStatus, WaitError> {
        let cell = self
            .cells
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| WaitError::Unknown(name.to_owned()))?;
        let mut rx = cell.progress.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                let status = self
                    .status(name)
                    .ok_or_else(|| WaitError::Unknown(name.to_owned()))?;
                if done(&status) {
                    return Ok(status);
                }
                if rx.changed().await.is_err() {
                    return Err(WaitError::Failed(name.to_owned()));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| WaitError::Timeout(name.to_owned()))?
    }

    /// Waits until projection `name` has applied everything up to `position` (read-your-writes).
    pub async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let cell = self
            .cells
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| WaitError::Unknown(name.to_owned()))?;
        let mut rx = cell.progress.subscribe();
        let reached =
            tokio::time::timeout(timeout, rx.wait_for(|p| p.position >= position || p.failed))
                .await;
        match reached {
            Ok(Ok(p)) if p.position >= position => Ok(()),
            Ok(_) => Err(WaitError::Failed(name.to_owned())),
            Err(_) => Err(WaitError::Timeout(name.to_owned())),
        }
    }

    /// Starts a runner for `projection` on the current actix system.
    pub fn start(
        &self,
        projection: Arc<dyn Projection>,
        store: Arc<dyn EventStore>,
        pool: PgPool,
    ) -> actix::Addr<ProjectionRunner> {
        let name = projection.name();
        let cell = Arc::new(Cell {
            status: RwLock::new(ProjectionStatus {
                name: name.to_owned(),
                version: projection.version(),
                state: RunState::Starting,
                position: Position::START,
                error: None,
                failed_at: None,
                generation: 0,
                rebuild: None,
            }),
            progress: watch::channel(Progress {
                position: Position::START,
                failed: false,
            })
            .0,
        });
        self.cells
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, cell.clone());
        let addr = ProjectionRunner {
            projection: projection.clone(),
            store: store.clone(),
            pool: pool.clone(),
            cell,
            running: None,
        }
        .start();
        self.runners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name,
                Runner {
                    addr: addr.clone(),
                    projection,
                    store,
                    pool,
                },
            );
        addr
    }

    /// Starts rebuilding projection `name` (running in this process) beside its read model, in
    /// the background, and returns at once (see [`crate::rebuild`]): its status reads
    /// `rebuilding` with the new generation's progress until it is swapped in; a failure leaves
    /// the old read model serving and is reported in the status. A second rebuild of the same
    /// projection while one runs (here or in another process) is [`RebuildError::Busy`].
    pub async fn rebuild(&self, name: &str) -> Result<RebuildHandle, RebuildError> {
        let runner = self
            .runners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| RebuildError::Unknown(name.to_owned()))?;
        let cell = self
            .cells
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| RebuildError::Unknown(name.to_owned()))?;
        let busy = || RebuildError::Busy(name.to_owned());
        let mut lock = SchemaLock::try_acquire(&runner.pool, Purpose::Rebuild, name)
            .await?
            .ok_or_else(busy)?;
        let mut started = false;
        cell.update(|s| {
            if !s.rebuild.as_ref().is_some_and(|r| r.running) {
                started = true;
                s.rebuild = Some(RebuildReport {
                    running: true,
                    position: Position::START,
                    events: 0,
                    started_at: chrono::Utc::now(),
                    finished_at: None,
                    error: None,
                });
            }
        });
        if !started {
            lock.release().await;
            return Err(busy());
        }
        let task = tokio::spawn(async move {
            let progress_cell = cell.clone();
            let progress = move |p: BuildProgress| {
                progress_cell.update(|s| {
                    if let Some(r) = s.rebuild.as_mut() {
                        r.position = p.position;
                        r.events = p.events;
                    }
                });
            };
            let result = crate::rebuild::rebuild(
                &mut lock,
                runner.projection.as_ref(),
                runner.store.as_ref(),
                &progress,
            )
            .await;
            lock.release().await;
            match &result {
                Ok(swapped) => {
                    cell.update(|s| {
                        // The runner may already have restarted on the new generation and
                        // moved on: never move the reported position back.
                        if s.generation < swapped.generation {
                            s.generation = swapped.generation;
                            s.position = swapped.position;
                        } else if s.generation == swapped.generation {
                            s.position = s.position.max(swapped.position);
                        }
                        if let Some(r) = s.rebuild.as_mut() {
                            r.running = false;
                            r.position = swapped.position;
                            r.finished_at = Some(chrono::Utc::now());
                        }
                    });
                    // Fenced anyway at its next batch; restarting now also revives a runner
                    // stopped by a failure the new generation got past.
                    runner.addr.do_send(Restart);
                }
                Err(e) => {
                    error!(projection = runner.projection.name(), error = %e, "rebuild failed; the old read model keeps serving");
                    cell.update(|s| {
                        if let Some(r) = s.rebuild.as_mut() {
                            r.running = false;
                            r.finished_at = Some(chrono::Utc::now());
                            r.error = Some(e.to_string());
                        }
                    });
                }
            }
            result
        });
        Ok(RebuildHandle { task })
    }
}

/// Empties a projection's tables and sends its checkpoint back to the start of the log, in one
/// transaction. A runner anywhere notices at its next batch (the fence) and starts over.
/// Returns the new generation.
pub async fn reset(pool: &PgPool, projection: &dyn Projection) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, version) VALUES ($1, $2) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(projection.name())
    .bind(projection.version())
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT 1 FROM projection_checkpoints WHERE name = $1 FOR UPDATE")
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    projection.reset(&mut tx).await?;
    let generation: i64 = sqlx::query_scalar(
        "UPDATE projection_checkpoints SET version = $2, generation = generation + 1, \
         commit = 0, prepare = 0, status = 'running', error = NULL, failed_commit = NULL, \
         failed_prepare = NULL, updated_at = now() WHERE name = $1 RETURNING generation",
    )
    .bind(projection.name())
    .bind(projection.version())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    info!(
        projection = projection.name(),
        "projection reset to the start of the log"
    );
    Ok(generation)
}

/// A projection's row in the checkpoint table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCheckpoint {
    /// Its name.
    pub name: String,
    /// The version its rows were built with.
    pub version: i32,
    /// Its position.
    pub position: Position,
    /// `running` or `failed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// The event it failed on.
    pub failed_at: Option<Position>,
}

/// Every checkpoint in the database (for `atelier projections status`).
pub async fn stored_checkpoints(pool: &PgPool) -> Result<Vec<StoredCheckpoint>, sqlx::Error> {
    type Row = (
        String,
        i32,
        i64,
        i64,
        String,
        Option<String>,
        Option<i64>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT name, version, commit, prepare, status, error, failed_commit, failed_prepare \
         FROM projection_checkpoints ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(name, version, c, p, status, error, fc, fp)| StoredCheckpoint {
                name,
                version,
                position: Position::new(c as u64, p as u64),
                status,
                error,
                failed_at: fc.zip(fp).map(|(c, p)| Position::new(c as u64, p as u64)),
            },
        )
        .collect())
}

/// Runs one projection.
pub struct ProjectionRunner {
    projection: Arc<dyn Projection>,
    store: Arc<dyn EventStore>,
    pool: PgPool,
    cell: Arc<Cell>,
    running: Option<actix::SpawnHandle>,
}

impl Actor for ProjectionRunner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.spawn_run(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.cell.update(|s| {
            if s.state != RunState::Failed {
                s.state = RunState::Stopped;
            }
        });
    }
}

impl ProjectionRunner {
    fn spawn_run(&mut self, ctx: &mut Context<Self>) {
        let run = run(
            self.projection.clone(),
            self.store.clone(),
            self.pool.clone(),
            self.cell.clone(),
        );
        self.running = Some(ctx.spawn(run.into_actor(self).map(|_, _, _| ())));
    }
}

/// Starts the projection over from its checkpoint (after a rebuild or a fix).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restart;

impl Handler<Restart> for ProjectionRunner {
    type Result = ();
    fn handle(&mut self, _: Restart, ctx: &mut Self::Context) {
        if let Some(running) = self.running.take() {
            ctx.cancel_future(running);
        }
        self.cell.update(|s| {
            s.state = RunState::Starting;
            s.error = None;
            s.failed_at = None;
        });
        self.spawn_run(ctx);
    }
}

/// Stops the runner; a batch in flight is rolled back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for ProjectionRunner {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        use actix::ActorContext;
        ctx.stop();
    }
}

enum Exit {
    /// The checkpoint moved under us (rebuild, another runner): start over from it.
    Restart,
    /// An event could not be applied: stop.
    Failed,
}

async fn run(
    projection: Arc<dyn Projection>,
    store: Arc<dyn EventStore>,
    pool: PgPool,
    cell: Arc<Cell>,
) {
    let mut delay = Duration::from_millis(50);
    loop {
        match run_once(projection.as_ref(), store.as_ref(), &pool, &cell).await {
            Ok(Exit::Restart) => continue,
            Ok(Exit::Failed) => return,
            Err(e) => {
                warn!(projection = projection.name(), error = %e, "projection interrupted; resuming from its checkpoint");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum Transient {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] atelier_store::StoreError),
    #[error("{0}")]
    Other(String),
}

async fn load_checkpoint(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<(i64, Position), Transient> {
    loop {
        let row: Option<(i32, i64, i64, i64)> = sqlx::query_as(
            "SELECT version, generation, commit, prepare FROM projection_checkpoints \
             WHERE name = $1",
        )
        .bind(projection.name())
        .fetch_optional(pool)
        .await?;
        match row {
            Some((version, generation, c, p)) if version == projection.version() => {
                return Ok((generation, Position::new(c as u64, p as u64)));
            }
            Some((version, ..)) => {
                info!(
                    projection = projection.name(),
                    from = version,
                    to = projection.version(),
                    "projection version changed: rebuilding"
                );
                reset(pool, projection).await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO projection_checkpoints (name, version) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(projection.name())
                .bind(projection.version())
                .execute(pool)
                .await?;
            }
        }
    }
}

async fn run_once(
    projection: &dyn Projection,
    store: &dyn EventStore,
    pool: &PgPool,
    cell: &Cell,
) -> Result<Exit, Transient> {
    let name = projection.name();
    let (generation, mut position) = load_checkpoint(pool, projection).await?;
    let head = store.head().await?.unwrap_or(Position::START);
    let caught_up = |p: Position| p >= head;
    cell.update_for(generation, |s| {
        s.position = position;
        s.state = if caught_up(position) {
            RunState::Live
        } else {
            RunState::CatchingUp
        };
        s.error = None;
        s.failed_at = None;
    });
    info!(projection = name, %position, "projection running");
    // The checkpoint as written; `position` runs ahead of it over events of other categories.
    let mut written = position;
    let mut passed_over = 0u64;
    let mut sub = store.subscribe_all(SubscribeFrom::After(position), Filter::All);
    loop {
        let Some(first) = sub.next().await else {
            return Err(Transient::Other("the subscription ended".into()));
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match sub.next().now_or_never() {
                Some(Some(m)) => batch.push(m),
                _ => break,
            }
        }
        let to = match batch.last() {
            Some(SubscriptionMessage::Event(e)) => e.position,
            Some(SubscriptionMessage::Checkpoint(p)) => *p,
            None => continue,
        };
        let seen = batch
            .iter()
            .filter(|m| matches!(m, SubscriptionMessage::Event(_)))
            .count() as u64;
        let events: Vec<_> = batch
            .iter()
            .filter_map(|m| match m {
                SubscriptionMessage::Event(e) if handles(projection, e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        metrics::counter!("atelier_projection_events_total", "projection" => name).increment(seen);
        passed_over += seen - events.len() as u64;
        if events.is_empty() && passed_over < CHECKPOINT_EVERY {
            // Nothing of its own: the read model is as it was at `to`. No transaction.
            position = to;
            cell.update_for(generation, |s| {
                s.position = to;
                if caught_up(to) {
                    s.state = RunState::Live;
                }
            });
            continue;
        }
        let span = info_span!("projection.batch", projection = name, events = events.len(), from = %position, to = %to);
        let applied = apply_batch(projection, pool, generation, written, to, &events)
            .instrument(span)
            .await?;
        match applied {
            Applied::Committed => {
                written = to;
                passed_over = 0;
                // From the append to the read model's commit: what a reader waits. Only once
                // live: a catch-up's lag is the backlog's age, not the projection's speed.
                if caught_up(position) {
                    let now = chrono::Utc::now();
                    let lag =
                        metrics::histogram!("atelier_projection_lag_seconds", "projection" => name);
                    for e in &events {
                        lag.record((now - e.created).as_seconds_f64().max(0.0));
                    }
                }
                position = to;
                cell.update_for(generation, |s| {
                    s.position = to;
                    if caught_up(to) {
                        s.state = RunState::Live;
                    }
                });
            }
            Applied::Fenced => {
                info!(
                    projection = name,
                    "checkpoint moved (rebuild or another runner): restarting"
                );
                return Ok(Exit::Restart);
            }
            Applied::Failed { at, error } => {
                error!(projection = name, position = %at, error = %error, "projection stopped: an event could not be applied");
                record_failure(pool, name, at, &error).await;
                cell.update_for(generation, |s| {
                    s.state = RunState::Failed;
                    s.error = Some(error.clone());
                    s.failed_at = Some(at);
                });
                return Ok(Exit::Failed);
            }
        }
    }
}

enum Applied {
    Committed,
    Fenced,
    Failed { at: Position, error: String },
}

async fn apply_batch(
    projection: &dyn Projection,
    pool: &PgPool,
    generation: i64,
    from: Position,
    to: Position,
    events: &[Arc<RecordedEvent>],
) -> Result<Applied, Transient> {
    let mut tx = pool.begin().await?;
    // No wait for the WAL flush: a read model is derived data, and its rows and checkpoint
    // commit together, so a crash that loses this commit loses both and the batch is simply
    // applied again. Readers see the commit at once either way.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    // The fence first: it also locks the checkpoint row against a concurrent reset.
    let moved = sqlx::query(
        "UPDATE projection_checkpoints SET commit = $5, prepare = $6, status = 'running', \
         error = NULL, failed_commit = NULL, failed_prepare = NULL, updated_at = now() \
         WHERE name = $1 AND generation = $2 AND commit = $3 AND prepare = $4",
    )
    .bind(projection.name())
    .bind(generation)
    .bind(from.commit as i64)
    .bind(from.prepare as i64)
    .bind(to.commit as i64)
    .bind(to.prepare as i64)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(Applied::Fenced);
    }
    for event in events {
        if let Err(e) = projection.apply(&mut tx, event).await {
            tx.rollback().await.ok();
            if e.is_transient() {
                return Err(Transient::Other(e.to_string()));
            }
            return Ok(Applied::Failed {
                at: event.position,
                error: format!(
                    "{} at {} ({}): {e}",
                    event.event_type, event.stream, event.position
                ),
            });
        }
    }
    tx.commit().await?;
    Ok(Applied::Committed)
}

async fn record_failure(pool: &PgPool, name: &str, at: Position, error: &str) {
    let recorded = sqlx::query(
        "UPDATE projection_checkpoints SET status = 'failed', error = $2, failed_commit = $3, \
         failed_prepare = $4, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(error)
    .bind(at.commit as i64)
    .bind(at.prepare as i64)
    .execute(pool)
    .await;
    if let Err(e) = recorded {
        warn!(projection = name, error = %e, "could not record the projection's failure");
    }
}
