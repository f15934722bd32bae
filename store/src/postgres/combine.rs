//! Write combining: the appends that arrive while earlier ones are being written share one
//! transaction.
//!
//! An append on its own is a transaction for one or two rows: a round trip, a PL/pgSQL call, a
//! commit and its WAL flush. Under load that per-transaction work, not the rows, is what limits
//! appends (bench/README.md has the figures). So [`PgEventStore::append`](super::PgEventStore)
//! hands its append to one combiner task per store, which sends every append waiting at that
//! moment as one call of `atelier_append_many`: one statement, one commit, with up to
//! [`PgConfig::append_writers`](super::PgConfig) such calls in flight. Each append keeps its own
//! expectation and gets its own answer:
//!
//! - an append whose expectation fails writes nothing and fails alone;
//! - one refused by the ordering guard (a later transaction appended to its stream first) is
//!   sent back to the combiner, for a later transaction, as a lone append used to retry;
//! - if the call fails as a whole (a payload PostgreSQL refuses, a lost connection), each of its
//!   appends is written again alone, so that one bad append cannot fail the others; the retry
//!   is safe because appends are idempotent by event id at their place.
//!
//! Nothing waits to fill a group: an append that finds a free writer goes at once, alone. Groups
//! only form from appends that queue behind busy writers, so a lone writer's latency is the
//! same as before and many writers share commits.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sqlx::postgres::PgRow;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::{Instrument, debug, debug_span};
use uuid::Uuid;

use super::{ORDERING_RETRIES, Shared};
use crate::{AppendResult, EventData, ExpectedRevision, Position, StoreError, StreamName};

/// Most appends one transaction takes.
const MAX_APPENDS: usize = 256;
/// Most events one transaction takes (an append bigger than this goes alone).
const MAX_EVENTS: usize = 4_096;

/// An append waiting for the combiner.
pub(super) struct Request {
    pub stream: StreamName,
    pub expected: ExpectedRevision,
    pub events: Vec<EventData>,
    pub reply: oneshot::Sender<Result<AppendResult, StoreError>>,
    /// How many times the ordering guard sent it back.
    pub guarded: usize,
}

/// Appends laid out as the columns `atelier_append_many` takes: one entry per append, and their
/// events flattened in order.
#[derive(Default)]
pub(super) struct Appends {
    streams: Vec<String>,
    kinds: Vec<i16>,
    expected: Vec<i64>,
    counts: Vec<i32>,
    /// Where each append's events start in the flattened columns.
    starts: Vec<usize>,
    ids: Vec<Uuid>,
    types: Vec<String>,
    /// Payloads as the JSON text the `json` columns keep.
    data: Vec<String>,
    metadata: Vec<String>,
}

impl Appends {
    /// One append.
    pub fn one(stream: &StreamName, expected: ExpectedRevision, events: Vec<EventData>) -> Self {
        let mut a = Self::default();
        a.push(stream, expected, events);
        a
    }

    pub fn push(
        &mut self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) {
        let (kind, revision): (i16, i64) = match expected {
            ExpectedRevision::Any => (0, 0),
            ExpectedRevision::NoStream => (1, 0),
            ExpectedRevision::StreamExists => (2, 0),
            // A revision beyond i64 cannot exist: it can only mismatch.
            ExpectedRevision::Exact(n) => (3, i64::try_from(n).unwrap_or(i64::MAX)),
        };
        self.streams.push(stream.as_str().to_owned());
        self.kinds.push(kind);
        self.expected.push(revision);
        // `validate_batch` bounds a batch far below i32::MAX events.
        self.counts
            .push(i32::try_from(events.len()).unwrap_or(i32::MAX));
        self.starts.push(self.ids.len());
        for e in events {
            self.ids.push(e.event_id);
            self.types.push(e.event_type);
            self.data.push(json_text(&e.data));
            self.metadata.push(json_text(&e.metadata));
        }
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// The events of append `i`, copied back (for the rare append written again).
    fn events(&self, i: usize) -> Vec<EventData> {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.ids.len());
        (self.starts[i]..end)
            .map(|j| EventData {
                event_id: self.ids[j],
                event_type: self.types[j].clone(),
                data: json_value(&self.data[j]),
                metadata: json_value(&self.metadata[j]),
            })
            .collect()
    }

    /// Append `i` alone.
    fn single(&self, i: usize, stream: &StreamName, expected: ExpectedRevision) -> Self {
        Self::one(stream, expected, self.events(i))
    }

    /// The statement writing them all in one transaction: one row per append, in order.
    pub fn query(&self) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(
            "SELECT status, revision, commit, prepare \
             FROM atelier_append_many($1, $2, $3, $4, $5, $6, $7::json[], $8::json[])",
        )
        .bind(&self.streams[..])
        .bind(&self.kinds[..])
        .bind(&self.expected[..])
        .bind(&self.counts[..])
        .bind(&self.ids[..])
        .bind(&self.types[..])
        .bind(&self.data[..])
        .bind(&self.metadata[..])
    }
}

/// A payload's JSON text. A `serde_json::Value` always serializes (its keys are strings).
fn json_text(value: &serde_json::Value) -> String {
    serde_json::to_string(value).expect("a JSON value serializes")
}

/// A payload back from the text [`json_text`] made.
fn json_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("the text of a JSON value parses")
}

/// What the database answered for one append.
pub(super) enum Outcome {
    /// Written, or found already written (a retry).
    Written(AppendResult),
    /// Refused: wrong expected revision, or a deleted stream.
    Refused(StoreError),
    /// Refused by the ordering guard: nothing written; to be tried in a later transaction.
    Guard,
}

/// Reads one row of `atelier_append_many`.
pub(super) fn outcome(
    stream: &StreamName,
    expected: ExpectedRevision,
    row: &PgRow,
) -> Result<Outcome, StoreError> {
    use sqlx::Row;
    let get = |i| row.try_get::<i64, _>(i).map_err(StoreError::backend);
    let status: &str = row.try_get(0).map_err(StoreError::backend)?;
    let revision = get(1)?;
    Ok(match status {
        "ok" | "retry" => Outcome::Written(AppendResult {
            next_expected_revision: revision as u64,
            position: Position::new(get(2)? as u64, get(3)? as u64),
        }),
        "wrong" => Outcome::Refused(StoreError::WrongExpectedRevision {
            stream: stream.clone(),
            expected,
            actual: u64::try_from(revision).ok(),
        }),
        "deleted" => Outcome::Refused(StoreError::StreamDeleted {
            stream: stream.clone(),
        }),
        "guard" => Outcome::Guard,
        other => {
            return Err(StoreError::Backend(
                format!("atelier_append_many returned {other:?}").into(),
            ));
        }
    })
}

/// The error of an append the ordering guard kept refusing.
pub(super) fn kept_guarded(stream: &StreamName) -> StoreError {
    StoreError::Backend(
        format!(
            "stream {stream} kept being appended by later transactions \
             ({ORDERING_RETRIES} attempts)"
        )
        .into(),
    )
}

/// Hands an append to the combiner; `false` when the store has stopped (the request is
/// dropped, and its waiter hears so).
pub(super) fn submit(shared: &Shared, request: Request) -> bool {
    shared.waiting.send_modify(|n| *n += 1);
    if shared.combiner.send(request).is_err() {
        shared.waiting.send_modify(|n| *n -= 1);
        return false;
    }
    true
}

/// The combiner: takes appends as they come and writes them in groups, with at most
/// `append_writers` groups in flight. Ends when the store is dropped.
pub(super) async fn combine(
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    mut stop: watch::Receiver<()>,
) {
    let writers = Arc::new(Semaphore::new(shared.config.append_writers.max(1)));
    let mut next: Option<Request> = None;
    loop {
        let first = match next.take() {
            Some(r) => r,
            None => tokio::select! {
                r = requests.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
                _ = stop.changed() => return,
            },
        };
        // Waiting for a writer is what lets the appends behind this one gather.
        let writer = tokio::select! {
            w = writers.clone().acquire_owned() => w.expect("the semaphore is never closed"),
            _ = stop.changed() => return,
        };
        let mut events = first.events.len();
        let mut group = vec![first];
        while group.len() < MAX_APPENDS {
            match requests.try_recv() {
                Ok(r) if events + r.events.len() <= MAX_EVENTS => {
                    events += r.events.len();
                    group.push(r);
                }
                Ok(r) => {
                    next = Some(r);
                    break;
                }
                Err(_) => break,
            }
        }
        shared.waiting.send_modify(|n| *n -= group.len());
        shared.groups.fetch_add(1, Ordering::Relaxed);
        shared
            .grouped
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let shared = shared.clone();
        let span = debug_span!("store.append_group", appends = group.len(), events);
        tokio::spawn(
            async move {
                write(&shared, group).await;
                drop(writer);
            }
            .instrument(span),
        );
    }
}

/// Who waits for an append of a group.
struct Waiter {
    stream: StreamName,
    expected: ExpectedRevision,
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
    guarded: usize,
}

/// Writes a group in one transaction and answers each append.
async fn write(shared: &Shared, mut group: Vec<Request>) {
    // The same lock order in every transaction: two groups sharing streams never deadlock.
    group.sort_by(|a, b| a.stream.as_str().cmp(b.stream.as_str()));
    let mut appends = Appends::default();
    let mut waiters = Vec::with_capacity(group.len());
    for r in group {
        appends.push(&r.stream, r.expected, r.events);
        waiters.push(Waiter {
            stream: r.stream,
            expected: r.expected,
            reply: r.reply,
            guarded: r.guarded,
        });
    }
    match appends.query().fetch_all(&shared.pool).await {
        Ok(rows) => answer(shared, &appends, waiters, rows),
        Err(e) if waiters.len() > 1 => {
            debug!(error = %e, appends = waiters.len(), "append group failed; writing each alone");
            for (i, w) in waiters.into_iter().enumerate() {
                let alone = appends.single(i, &w.stream, w.expected);
                match alone.query().fetch_all(&shared.pool).await {
                    Ok(rows) => answer(shared, &alone, vec![w], rows),
                    Err(e) => {
                        let _ = w.reply.send(Err(StoreError::backend(e)));
                    }
                }
            }
        }
        // A lone append: its caller gets the error itself (a lost connection stays recognizable
        // by `StoreError::is_connection_lost`).
        Err(e) => {
            if let Some(w) = waiters.into_iter().next() {
                let _ = w.reply.send(Err(StoreError::backend(e)));
            }
        }
    }
}

/// Answers each append of a written group from its row.
fn answer(shared: &Shared, appends: &Appends, waiters: Vec<Waiter>, rows: Vec<PgRow>) {
    if rows.len() != waiters.len() {
        for w in waiters {
            let _ = w.reply.send(Err(StoreError::Backend(
                format!(
                    "atelier_append_many answered {} rows for {} appends",
                    rows.len(),
                    appends.len()
                )
                .into(),
            )));
        }
        return;
    }
    let mut wrote = false;
    for (i, (w, row)) in waiters.into_iter().zip(&rows).enumerate() {
        let answer = match outcome(&w.stream, w.expected, row) {
            Ok(Outcome::Written(result)) => {
                // Before the writer hears of it: the cache's listeners must not lag behind it.
                shared.folds.written(&w.stream);
                wrote = true;
                Ok(result)
            }
            Ok(Outcome::Refused(e)) => Err(e),
            Ok(Outcome::Guard) if w.guarded < ORDERING_RETRIES => {
                debug!(
                    attempt = w.guarded + 1,
                    "append: a later transaction appended first; retrying"
                );
                let again = Request {
                    events: appends.events(i),
                    stream: w.stream,
                    expected: w.expected,
                    reply: w.reply,
                    guarded: w.guarded + 1,
                };
                // A refused submit drops the request: its waiter hears the store stopped.
                submit(shared, again);
                continue;
            }
            Ok(Outcome::Guard) => Err(kept_guarded(&w.stream)),
            Err(e) => Err(e),
        };
        let _ = w.reply.send(answer);
    }
    if wrote {
        shared.woke();
    }
}
