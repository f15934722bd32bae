//! The PostgreSQL adapter: the default event store.
//!
//! Ordering: an event's position is `(commit, prepare)`, `commit` being its transaction's id
//! (`pg_current_xact_id()`), and `$all` is read only below `pg_snapshot_xmin(pg_current_snapshot())`
//! taken in the same statement. A transaction that started earlier but commits later therefore
//! never lets a reader skip its events: the reader waits below it instead. Appends run in one
//! round trip through the `atelier_append_many` function (see `migrations/`), which, for each
//! append, locks the stream row, checks the expected revision and idempotency, and refuses (for
//! a retry in a new transaction) when a transaction with a higher id already appended to the
//! stream. Concurrent appends share that round trip and its transaction ([`combine`]).
//!
//! Live delivery: one tailer task per store reads the head of the log and publishes contiguous
//! batches on a bounded broadcast. It is woken right after each local commit, by `NOTIFY` from
//! other processes (sent after commit by a coalescing notifier task, never inside the write
//! transaction), by a fast poll while committed events are held back by an older open
//! transaction, and by a slow poll as a safety net.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

mod combine;

use self::combine::{Appends, Outcome};
use crate::subscription::{self, Backoff, LiveBatch, Source};
use crate::{
    AllSlice, AppendResult, Direction, EventData, EventStore, ExpectedRevision, Filter, PAGE_SIZE,
    Position, ReadStream, RecordedEvent, StoreError, StreamFrom, StreamMetadata, StreamName,
    SubscribeFrom, Subscription, expectation_holds, validate_batch,
};

/// The channel other processes are woken on.
pub const NOTIFY_CHANNEL: &str = "atelier_events";

/// Every migration of Atelier's database: the event store schema, then the read models.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How many times an append is retried when the per-stream ordering guard refuses it.
const ORDERING_RETRIES: usize = 32;

/// Settings of the PostgreSQL adapter.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// Connection URL.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// The safety-net poll of the tailer.
    pub poll_interval: Duration,
    /// The poll while committed events wait behind an older open transaction.
    pub held_back_poll_interval: Duration,
    /// Most append transactions in flight at once; appends arriving meanwhile are gathered
    /// into the next one ([`combine`]). Two by default: one group commits while the next is
    /// written, and the appends that arrive meanwhile wait for the next instead of starting
    /// transactions of their own (store-bench, 2 cores, 3 runs, median: 8 writers 0.34 → 0.38 ×
    /// pgbench, 32 writers 0.55 → 0.64 against 4 in flight; in a 1-run sweep 1 in flight did
    /// the same as 2).
    pub append_writers: usize,
}

impl PgConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            poll_interval: Duration::from_secs(1),
            held_back_poll_interval: Duration::from_millis(5),
            append_writers: 2,
        }
    }
}

/// Creates the database named in `url` if it does not exist yet.
pub async fn create_database_if_missing(url: &str) -> Result<(), StoreError> {
    if !Postgres::database_exists(url)
        .await
        .map_err(StoreError::backend)?
    {
        info!("creating the database");
        match Postgres::create_database(url).await {
            Ok(()) => {}
            // Another process created it meanwhile.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(StoreError::backend(e)),
        }
    }
    Ok(())
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await.map_err(StoreError::backend)
}

/// What [`PgEventStore::append_groups`] counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendGroups {
    /// Groups sent (one transaction each, before any written again append by append).
    pub groups: u64,
    /// Appends in them.
    pub appends: u64,
}

/// The PostgreSQL event store. Cloning it shares the pool and the tailer.
#[derive(Clone)]
pub struct PgEventStore {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

struct Shared {
    pool: PgPool,
    live: broadcast::Sender<Arc<LiveBatch>>,
    wake_tailer: Notify,
    wake_notifier: Notify,
    config: PgConfig,
    folds: crate::FoldCache,
    combiner: mpsc::UnboundedSender<combine::Request>,
    /// Appends handed to the combiner and not yet in a transaction (a `watch`, so that a caller
    /// can wait for a count instead of polling it).
    waiting: watch::Sender<usize>,
    /// Groups the combiner has sent, and the appends in them.
    groups: AtomicU64,
    grouped: AtomicU64,
}

impl Shared {
    /// Wakes the tailer and the notifier after a commit.
    fn woke(&self) {
        self.wake_tailer.notify_one();
        self.wake_notifier.notify_one();
    }
}

/// Stops the background tasks when the last clone of the store is dropped.
struct Tasks {
    _stop: watch::Sender<()>,
}

impl PgEventStore {
    /// Connects (creating nothing) and starts the tailer.
    pub async fn connect(config: PgConfig) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&config.url).map_err(StoreError::backend)?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(options)
            .await
            .map_err(StoreError::backend)?;
        Ok(Self::with_pool(pool, config))
    }

    /// Uses an existing pool (already migrated) and starts the tailer. Needs a tokio runtime.
    pub fn with_pool(pool: PgPool, config: PgConfig) -> Self {
        let (live, _) = broadcast::channel(1024);
        let (combiner, requests) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pool,
            live,
            wake_tailer: Notify::new(),
            wake_notifier: Notify::new(),
            config,
            folds: crate::FoldCache::default(),
            combiner,
            waiting: watch::Sender::new(0),
            groups: AtomicU64::new(0),
            grouped: AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(());
        tokio::spawn(combine::combine(shared.clone(), requests, stopped.clone()));
        tokio::spawn(tail(shared.clone(), stopped.clone()));
        tokio::spawn(listen(shared.clone(), stopped.clone()));
        tokio::spawn(notify(shared.clone(), stopped));
        Self {
            shared,
            _tasks: Arc::new(Tasks { _stop: stop }),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// How many appends wait for a transaction: the combiner gathers them into the next one as
    /// soon as one of [`PgConfig::append_writers`] is free.
    pub fn appends_waiting(&self) -> usize {
        *self.shared.waiting.borrow()
    }

    /// The groups the combiner has sent since the store started: how many, and how many appends
    /// they held (their ratio is how many appends share a commit).
    pub fn append_groups(&self) -> AppendGroups {
        AppendGroups {
            groups: self.shared.groups.load(Ordering::Relaxed),
            appends: self.shared.grouped.load(Ordering::Relaxed),
        }
    }

    /// Returns once exactly `n` appends wait for a transaction (for tests that queue appends
    /// behind a busy writer).
    pub async fn appends_waiting_reach(&self, n: usize) {
        let mut count = self.shared.waiting.subscribe();
        // The sender lives in `shared`, which `self` holds: the channel cannot close here.
        let _ = count.wait_for(|waiting| *waiting == n).await;
    }

    /// Starts an append in a transaction and holds it open until [`PgHeldAppend::commit`]. Its
    /// events hold back every later event in `$all` until then. For tests and tools.
    pub async fn begin_append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<PgHeldAppend, StoreError> {
        validate_batch(&events)?;
        let append = Appends::one(stream, expected, events);
        let mut attempt = 0;
        let (tx, result) = loop {
            let mut tx = self
                .shared
                .pool
                .begin()
                .await
                .map_err(StoreError::backend)?;
            let row = append
                .query()
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
            match combine::outcome(stream, expected, &row)? {
                Outcome::Written(result) => break (tx, result),
                Outcome::Refused(e) => return Err(e),
                // Nothing was written: a new transaction gets a later id.
                Outcome::Guard if attempt < ORDERING_RETRIES => attempt += 1,
                Outcome::Guard => return Err(combine::kept_guarded(stream)),
            }
        };
        Ok(PgHeldAppend {
            tx,
            result,
            stream: stream.clone(),
            shared: self.shared.clone(),
        })
    }
}

/// An append whose transaction is held open (see [`PgEventStore::begin_append`]).
pub struct PgHeldAppend {
    tx: Transaction<'static, Postgres>,
    result: AppendResult,
    stream: StreamName,
    shared: Arc<Shared>,
}

impl PgHeldAppend {
    /// Where the events will be once committed.
    pub fn result(&self) -> AppendResult {
        self.result
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<AppendResult, StoreError> {
        self.tx.commit().await.map_err(StoreError::backend)?;
        self.shared.folds.written(&self.stream);
        self.shared.woke();
        Ok(self.result)
    }

    /// Rolls the transaction back.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await.map_err(StoreError::backend)?;
        self.shared.wake_tailer.notify_one();
        Ok(())
    }
}

/// `$all` below the watermark, with a filter evaluated in the database: non-matching rows come
/// back without their payload, so the reader still learns how far it scanned.
macro_rules! read_all_sql {
    ($matched:literal) => {
        concat!(
            "SELECT e.commit, e.prepare, e.stream_name, e.revision, e.event_id, e.event_type, ",
            "e.created_at, m.matched, ",
            "CASE WHEN m.matched THEN e.data END, CASE WHEN m.matched THEN e.metadata END ",
            "FROM events e CROSS JOIN LATERAL (SELECT ",
            $matched,
            " AS matched) m ",
            "WHERE (e.commit, e.prepare) > ($1, $2) ",
            "AND e.commit < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint) ",
            "ORDER BY e.commit, e.prepare LIMIT $3"
        )
    };
}

const READ_ALL: &str = read_all_sql!("($4::text[] IS NULL)");
const READ_ALL_STREAM_PREFIX: &str = read_all_sql!("(e.stream_name ^@ ANY ($4::text[]))");
const READ_ALL_TYPE_PREFIX: &str = read_all_sql!("(e.event_type ^@ ANY ($4::text[]))");
const READ_ALL_CATEGORY: &str =
    read_all_sql!("(split_part(e.stream_name, '-', 1) = ANY ($4::text[]))");

const HEAD_SQL: &str = "SELECT commit, prepare FROM events \
    WHERE commit < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint) \
    ORDER BY commit DESC, prepare DESC LIMIT 1";

/// Whether committed events after `$1,$2` are still unread: held back by an older transaction
/// still open, or released since the last read took its watermark. Not bounded by this
/// statement's watermark on purpose: an event held back at the read and released just before
/// this probe would otherwise look read, and wait for the slow poll.
const HELD_BACK_SQL: &str = "SELECT commit FROM events \
    WHERE (commit, prepare) > ($1, $2) \
    ORDER BY commit, prepare LIMIT 1";

const READ_STREAM_FORWARD: &str = "SELECT s.tombstoned, e.commit, e.prepare, e.revision, \
    e.event_id, e.event_type, e.created_at, e.data, e.metadata \
    FROM event_streams s LEFT JOIN LATERAL ( \
      SELECT * FROM events e WHERE e.stream_id = s.stream_id \
        AND e.revision >= GREATEST(CASE WHEN $2 < 0 THEN s.revision ELSE $2 END, \
            COALESCE(s.truncate_before, 0), \
            CASE WHEN s.max_count IS NULL THEN 0 ELSE s.revision + 1 - s.max_count END) \
        AND (s.max_age IS NULL OR e.created_at > now() - make_interval(secs => s.max_age)) \
      ORDER BY e.revision LIMIT $3) e ON true \
    WHERE s.stream_name = $1";

const READ_STREAM_BACKWARD: &str = "SELECT s.tombstoned, e.commit, e.prepare, e.revision, \
    e.event_id, e.event_type, e.created_at, e.data, e.metadata \
    FROM event_streams s LEFT JOIN LATERAL ( \
      SELECT * FROM events e WHERE e.stream_id = s.stream_id \
        AND e.revision <= CASE WHEN $2 < 0 THEN s.revision ELSE $2 END \
        AND e.revision >= GREATEST(COALESCE(s.truncate_before, 0), \
            CASE WHEN s.max_count IS NULL THEN 0 ELSE s.revision + 1 - s.max_count END) \
        AND (s.max_age IS NULL OR e.created_at > now() - make_interval(secs => s.max_age)) \
      ORDER BY e.revision DESC LIMIT $3) e ON true \
    WHERE s.stream_name = $1";

fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn position_arg(p: Position) -> (i64, i64) {
    (
        i64::try_from(p.commit).unwrap_or(i64::MAX),
        i64::try_from(p.prepare).unwrap_or(i64::MAX),
    )
}

async fn read_all(
    pool: &PgPool,
    after: Position,
    max: usize,
    filter: &Filter,
) -> Result<AllSlice, StoreError> {
    let (sql, args): (&'static str, Option<&[String]>) = match filter {
        Filter::All => (READ_ALL, None),
        Filter::StreamPrefix(p) => (READ_ALL_STREAM_PREFIX, Some(p)),
        Filter::EventTypePrefix(p) => (READ_ALL_TYPE_PREFIX, Some(p)),
        Filter::Category(c) => (READ_ALL_CATEGORY, Some(c)),
    };
    let (commit, prepare) = position_arg(after);
    let rows = sqlx::query(sql)
        .bind(commit)
        .bind(prepare)
        .bind(clamp(max))
        .bind(args)
        .fetch_all(pool)
        .await
        .map_err(StoreError::backend)?;
    let mut slice = AllSlice {
        events: Vec::with_capacity(rows.len()),
        scanned: rows.len(),
        next: after,
    };
    for row in rows {
        let position = Position::new(get::<i64>(&row, 0)? as u64, get::<i64>(&row, 1)? as u64);
        slice.next = position;
        if !get::<bool>(&row, 7)? {
            continue;
        }
        slice.events.push(RecordedEvent {
            position,
            stream: StreamName::from_store(get(&row, 2)?),
            revision: get::<i64>(&row, 3)? as u64,
            event_id: get(&row, 4)?,
            event_type: get(&row, 5)?,
            created: get(&row, 6)?,
            data: get(&row, 8)?,
            metadata: get(&row, 9)?,
        });
    }
    Ok(slice)
}

fn get<'r, T>(row: &'r PgRow, i: usize) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(i).map_err(StoreError::backend)
}

async fn head(pool: &PgPool) -> Result<Option<Position>, StoreError> {
    let row: Option<(i64, i64)> = sqlx::query_as(HEAD_SQL)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::backend)?;
    Ok(row.map(|(c, p)| Position::new(c as u64, p as u64)))
}

/// The events of the log after a position (a reader's backlog): how many, counted up to `cap`,
/// and when the oldest of them was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// How many events follow the position (at most `cap`).
    pub events: u64,
    /// Whether there are more than `cap` (the count stopped there).
    pub capped: bool,
    /// When the oldest of them was recorded (`None`: none).
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
}

/// The backlog of a reader at `after` (a projection's checkpoint): the events committed after
/// it, counted up to `cap`, and the oldest one's time.
pub async fn backlog(pool: &PgPool, after: Position, cap: u64) -> Result<Backlog, StoreError> {
    let (commit, prepare) = position_arg(after);
    let cap = i64::try_from(cap.min(i64::MAX as u64 - 1)).unwrap_or(i64::MAX - 1);
    let (count, oldest): (i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM events WHERE (commit, prepare) > ($1, $2) \
         LIMIT $3 + 1) n), \
         (SELECT created_at FROM events WHERE (commit, prepare) > ($1, $2) \
         ORDER BY commit, prepare LIMIT 1)",
    )
    .bind(commit)
    .bind(prepare)
    .bind(cap)
    .fetch_one(pool)
    .await
    .map_err(StoreError::backend)?;
    Ok(Backlog {
        events: count.min(cap) as u64,
        capped: count > cap,
        oldest,
    })
}

/// Reads the head of the log and publishes it, as long as the store lives.
async fn tail(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let mut backoff = Backoff::default();
    let mut pos = loop {
        match head(&shared.pool).await {
            Ok(h) => break h.unwrap_or(Position::START),
            Err(e) => {
                warn!(error = %e, "tailer: reading the head failed; retrying");
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    backoff.reset();
    // With no live subscriber there is nobody to publish to: the tailer sleeps instead of
    // reading after every append, and jumps to the head when someone subscribes again (a
    // subscriber that caught up behind that head sees the gap and catches up from the log).
    let mut stale = false;
    loop {
        if shared.live.receiver_count() == 0 {
            stale = true;
            tokio::select! {
                _ = shared.wake_tailer.notified() => {}
                _ = tokio::time::sleep(shared.config.poll_interval) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        if stale {
            match head(&shared.pool).await {
                Ok(h) => {
                    pos = pos.max(h.unwrap_or(Position::START));
                    stale = false;
                    // Tells every subscriber where the feed resumes: one that caught up to
                    // less sees a gap and reads the rest from the log at once.
                    let _ = shared.live.send(Arc::new(LiveBatch {
                        after: pos,
                        events: Vec::new(),
                    }));
                }
                Err(e) => {
                    warn!(error = %e, "tailer: reading the head failed; retrying");
                    tokio::select! {
                        _ = backoff.wait() => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            }
        }
        let mut soon = false;
        loop {
            match read_all(&shared.pool, pos, PAGE_SIZE, &Filter::All).await {
                Ok(slice) => {
                    backoff.reset();
                    if !slice.events.is_empty() {
                        let after = pos;
                        pos = slice.next;
                        let events = slice.events.into_iter().map(Arc::new).collect();
                        // No receiver is not an error: nobody is subscribed.
                        let _ = shared.live.send(Arc::new(LiveBatch { after, events }));
                    }
                    if slice.scanned < PAGE_SIZE {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "tailer: reading the log failed; retrying");
                    tokio::select! {
                        _ = backoff.wait() => {}
                        _ = stop.changed() => return,
                    }
                    soon = true;
                    break;
                }
            }
        }
        if !soon {
            let (c, p) = position_arg(pos);
            soon = sqlx::query_scalar::<_, i64>(HELD_BACK_SQL)
                .bind(c)
                .bind(p)
                .fetch_optional(&shared.pool)
                .await
                .map_or(true, |held| held.is_some());
        }
        let wait = if soon {
            shared.config.held_back_poll_interval
        } else {
            shared.config.poll_interval
        };
        tokio::select! {
            _ = shared.wake_tailer.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Wakes the tailer when another process appends.
async fn listen(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let mut backoff = Backoff::default();
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(&shared.pool).await?;
            l.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "listener: connecting failed; retrying");
                    tokio::select! {
                        _ = backoff.wait() => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        backoff.reset();
        // Anything may have been appended while no one listened.
        shared.wake_tailer.notify_one();
        loop {
            tokio::select! {
                n = listener.try_recv() => match n {
                    Ok(Some(_)) => shared.wake_tailer.notify_one(),
                    Ok(None) => {
                        debug!("listener: connection lost; reconnecting");
                        shared.wake_tailer.notify_one();
                    }
                    Err(e) => {
                        warn!(error = %e, "listener: failed; reconnecting");
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }
}

/// Tells other processes, after commit, that the log grew. Wake-ups that arrive while a
/// notification is on its way are coalesced into the next one.
async fn notify(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = shared.wake_notifier.notified() => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&shared.pool)
            .await
        {
            debug!(error = %e, "notifier: NOTIFY failed; other processes will poll");
        }
    }
}

impl Source for PgEventStore {
    fn live(&self) -> broadcast::Receiver<Arc<LiveBatch>> {
        self.shared.live.subscribe()
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    #[tracing::instrument(name = "store.append", skip_all, fields(stream = %stream, events = events.len()))]
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        validate_batch(&events)?;
        let (reply, answer) = oneshot::channel();
        let request = combine::Request {
            stream: stream.clone(),
            expected,
            events,
            reply,
            guarded: 0,
        };
        if !combine::submit(&self.shared, request) {
            return Err(StoreError::Backend("the store stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Backend("the store stopped".into())))
    }

    #[tracing::instrument(name = "store.read_stream", skip_all, fields(stream = %stream))]
    async fn read_stream(
        &self,
        stream: &StreamName,
        read: ReadStream,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let (sql, from) = match (read.direction, read.from) {
            (Direction::Forward, StreamFrom::Start) => (READ_STREAM_FORWARD, 0),
            (Direction::Forward, StreamFrom::End) => (READ_STREAM_FORWARD, -1),
            (Direction::Forward, StreamFrom::Revision(r)) => {
                (READ_STREAM_FORWARD, i64::try_from(r).unwrap_or(i64::MAX))
            }
            (Direction::Backward, StreamFrom::Start) => (READ_STREAM_BACKWARD, 0),
            (Direction::Backward, StreamFrom::End) => (READ_STREAM_BACKWARD, -1),
            (Direction::Backward, StreamFrom::Revision(r)) => {
                (READ_STREAM_BACKWARD, i64::try_from(r).unwrap_or(i64::MAX))
            }
        };
        let rows = sqlx::query(sql)
            .bind(stream.as_str())
            .bind(from)
            .bind(clamp(read.max))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(StoreError::backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if get::<bool>(&row, 0)? {
                return Err(StoreError::StreamDeleted {
                    stream: stream.clone(),
                });
            }
            let Some(commit) = get::<Option<i64>>(&row, 1)? else {
                continue;
            };
            out.push(RecordedEvent {
                position: Position::new(commit as u64, get::<i64>(&row, 2)? as u64),
                stream: stream.clone(),
                revision: get::<i64>(&row, 3)? as u64,
                event_id: get(&row, 4)?,
                event_type: get(&row, 5)?,
                created: get::<DateTime<Utc>>(&row, 6)?,
                data: get(&row, 7)?,
                metadata: get(&row, 8)?,
            });
        }
        Ok(out)
    }

    #[tracing::instrument(name = "store.last_revisions", skip_all, fields(streams = streams.len()))]
    async fn last_revisions(&self, streams: &[StreamName]) -> Result<Vec<Option<u64>>, StoreError> {
        let names: Vec<&str> = streams.iter().map(StreamName::as_str).collect();
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stream_name, revision FROM event_streams WHERE stream_name = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&self.shared.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(names
            .iter()
            .map(|name| {
                rows.iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, r)| u64::try_from(*r).ok())
            })
            .collect())
    }

    #[tracing::instrument(name = "store.read_all", skip_all, fields(after = %after, max))]
    async fn read_all(
        &self,
        after: Position,
        max: usize,
        filter: &Filter,
    ) -> Result<AllSlice, StoreError> {
        read_all(&self.shared.pool, after, max, filter).await
    }

    async fn head(&self) -> Result<Option<Position>, StoreError> {
        head(&self.shared.pool).await
    }

    fn subscribe_all(&self, from: SubscribeFrom, filter: Filter) -> Subscription {
        subscription::subscribe(self.clone(), from, filter)
    }

    async fn stream_metadata(&self, stream: &StreamName) -> Result<StreamMetadata, StoreError> {
        let row: Option<(bool, Option<i64>, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT tombstoned, max_age, max_count, truncate_before FROM event_streams \
             WHERE stream_name = $1",
        )
        .bind(stream.as_str())
        .fetch_optional(&self.shared.pool)
        .await
        .map_err(StoreError::backend)?;
        match row {
            None => Ok(StreamMetadata::default()),
            Some((true, ..)) => Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            }),
            Some((false, max_age, max_count, truncate_before)) => Ok(StreamMetadata {
                max_age: max_age.map(|v| v as u64),
                max_count: max_count.map(|v| v as u64),
                truncate_before: truncate_before.map(|v| v as u64),
            }),
        }
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), StoreError> {
        let to_i64 = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let updated: Option<i64> = sqlx::query_scalar(
            "INSERT INTO event_streams (stream_name, max_age, max_count, truncate_before) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stream_name) DO UPDATE SET max_age = $2, max_count = $3, \
               truncate_before = $4 WHERE NOT event_streams.tombstoned \
             RETURNING stream_id",
        )
        .bind(stream.as_str())
        .bind(to_i64(metadata.max_age))
        .bind(to_i64(metadata.max_count))
        .bind(to_i64(metadata.truncate_before))
        .fetch_optional(&self.shared.pool)
        .await
        .map_err(StoreError::backend)?;
        match updated {
            Some(_) => {
                self.shared.folds.written(stream);
                Ok(())
            }
            None => Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            }),
        }
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), StoreError> {
        self.remove(stream, expected, false).await?;
        self.shared.folds.written(stream);
        Ok(())
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), StoreError> {
        self.remove(stream, expected, true).await?;
        self.shared.folds.written(stream);
        Ok(())
    }

    fn folds(&self) -> Option<&crate::FoldCache> {
        Some(&self.shared.folds)
    }
}

impl PgEventStore {
    async fn remove(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .shared
            .pool
            .begin()
            .await
            .map_err(StoreError::backend)?;
        sqlx::query("INSERT INTO event_streams (stream_name) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(stream.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        let (revision, deleted, tombstoned): (i64, bool, bool) = sqlx::query_as(
            "SELECT revision, deleted, tombstoned FROM event_streams WHERE stream_name = $1 \
             FOR UPDATE",
        )
        .bind(stream.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        if tombstoned {
            return Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            });
        }
        let actual = if deleted {
            None
        } else {
            u64::try_from(revision).ok()
        };
        if !expectation_holds(expected, actual) {
            return Err(StoreError::WrongExpectedRevision {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        sqlx::query(
            "UPDATE event_streams SET deleted = true, tombstoned = tombstoned OR $2, \
             truncate_before = revision + 1 WHERE stream_name = $1",
        )
        .bind(stream.as_str())
        .bind(tombstone)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)
    }
}

/// Which events of the log an operator asks for ([`PgEventStore::query_log`]): every condition
/// given must hold. The metadata conditions compare the text of a metadata field exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// This stream only.
    pub stream: Option<String>,
    /// Streams of this category (the part of the name before the first `-`).
    pub category: Option<String>,
    /// This event type.
    pub event_type: Option<String>,
    /// `metadata.actor`: a user id, or `apikey:<uuid>`.
    pub actor: Option<String>,
    /// `metadata.credential`: `session:<uuid>` or `apikey:<uuid>`.
    pub credential: Option<String>,
    /// `metadata.org_id`.
    pub org_id: Option<String>,
    /// `metadata.correlation_id`.
    pub correlation_id: Option<String>,
    /// Recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before this time.
    pub until: Option<DateTime<Utc>>,
}

impl LogQuery {
    /// Whether the event meets every condition (for events a subscription delivers).
    pub fn matches(&self, e: &RecordedEvent) -> bool {
        let meta = |field: &str| e.metadata.get(field).and_then(serde_json::Value::as_str);
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        eq(&self.stream, Some(e.stream.as_str()))
            && eq(&self.category, Some(e.stream.category()))
            && eq(&self.event_type, Some(&e.event_type))
            && eq(&self.actor, meta("actor"))
            && eq(&self.credential, meta("credential"))
            && eq(&self.org_id, meta("org_id"))
            && eq(&self.correlation_id, meta("correlation_id"))
            && self.since.is_none_or(|t| e.created >= t)
            && self.until.is_none_or(|t| e.created < t)
    }

    /// The narrowest [`Filter`] a subscription can apply in the database; [`LogQuery::matches`]
    /// does the rest.
    pub fn filter(&self) -> Filter {
        if let Some(c) = &self.category {
            Filter::Category(vec![c.clone()])
        } else if let Some(s) = &self.stream {
            Filter::StreamPrefix(vec![s.clone()])
        } else if let Some(t) = &self.event_type {
            Filter::EventTypePrefix(vec![t.clone()])
        } else {
            Filter::All
        }
    }
}

/// The conditions of a [`LogQuery`], from parameter `$5` on.
macro_rules! log_query_sql {
    ($range:literal, $order:literal) => {
        concat!(
            "SELECT e.commit, e.prepare, e.stream_name, e.revision, e.event_id, e.event_type, ",
            "e.created_at, e.data, e.metadata FROM events e WHERE ",
            $range,
            " AND ($5::text IS NULL OR e.stream_name = $5)",
            " AND ($6::text IS NULL OR split_part(e.stream_name, '-', 1) = $6)",
            " AND ($7::text IS NULL OR e.event_type = $7)",
            " AND ($8::text IS NULL OR e.metadata->>'actor' = $8)",
            " AND ($9::text IS NULL OR e.metadata->>'credential' = $9)",
            " AND ($10::text IS NULL OR e.metadata->>'org_id' = $10)",
            " AND ($11::text IS NULL OR e.metadata->>'correlation_id' = $11)",
            " AND ($12::timestamptz IS NULL OR e.created_at >= $12)",
            " AND ($13::timestamptz IS NULL OR e.created_at < $13)",
            " ORDER BY ",
            $order,
            " LIMIT $14"
        )
    };
}

const LOG_QUERY_FORWARD: &str = log_query_sql!(
    "(e.commit, e.prepare) > ($1, $2) AND (e.commit, e.prepare) <= ($3, $4)",
    "e.commit, e.prepare"
);
const LOG_QUERY_LAST: &str = log_query_sql!(
    "(e.commit, e.prepare) > ($1, $2) AND (e.commit, e.prepare) <= ($3, $4)",
    "e.commit DESC, e.prepare DESC"
);

impl PgEventStore {
    /// A page of the events of `$all` that meet `query`, in log order: strictly after `after`,
    /// up to `upto` included (`None`: every event committed now, even those a transaction still
    /// open holds back from subscriptions), at most `max`. The next page starts after the last
    /// event returned; a page shorter than `max` is the last one.
    pub async fn query_log(
        &self,
        query: &LogQuery,
        after: Position,
        upto: Option<Position>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.log_query(LOG_QUERY_FORWARD, query, after, upto, max)
            .await
    }

    /// The last `max` events of `$all` up to `upto` included (`None`: every event committed
    /// now) that meet `query`, oldest first.
    pub async fn query_log_last(
        &self,
        query: &LogQuery,
        upto: Option<Position>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self
            .log_query(LOG_QUERY_LAST, query, Position::START, upto, max)
            .await?;
        events.reverse();
        Ok(events)
    }

    async fn log_query(
        &self,
        sql: &'static str,
        query: &LogQuery,
        after: Position,
        upto: Option<Position>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let (after_c, after_p) = position_arg(after);
        let (upto_c, upto_p) = upto.map_or((i64::MAX, i64::MAX), position_arg);
        let rows = sqlx::query(sql)
            .bind(after_c)
            .bind(after_p)
            .bind(upto_c)
            .bind(upto_p)
            .bind(query.stream.as_deref())
            .bind(query.category.as_deref())
            .bind(query.event_type.as_deref())
            .bind(query.actor.as_deref())
            .bind(query.credential.as_deref())
            .bind(query.org_id.as_deref())
            .bind(query.correlation_id.as_deref())
            .bind(query.since)
            .bind(query.until)
            .bind(clamp(max))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(StoreError::backend)?;
        rows.iter()
            .map(|row| {
                Ok(RecordedEvent {
                    position: Position::new(get::<i64>(row, 0)? as u64, get::<i64>(row, 1)? as u64),
                    stream: StreamName::from_store(get(row, 2)?),
                    revision: get::<i64>(row, 3)? as u64,
                    event_id: get(row, 4)?,
                    event_type: get(row, 5)?,
                    created: get(row, 6)?,
                    data: get(row, 7)?,
                    metadata: get(row, 8)?,
                })
            })
            .collect()
    }
}
