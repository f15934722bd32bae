//! The event store contract: one suite, run against every adapter.
//!
//! Each test is written once against a [`Harness`] and instantiated per adapter by
//! `contract_suite!`. The PostgreSQL adapter gets a fresh database per test.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atelier_store::memory::{HeldAppend, MemoryEventStore};
use atelier_store::postgres::{PgConfig, PgEventStore, PgHeldAppend};
use atelier_store::testing::TestDatabase;
use atelier_store::{
    AppendResult, EventData, EventStore, ExpectedRevision, Filter, InvalidInput, Position,
    ReadStream, RecordedEvent, StoreError, StreamFrom, StreamMetadata, StreamName, SubscribeFrom,
    Subscription, SubscriptionMessage,
};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

/// How long a test waits for something that must happen before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

#[async_trait]
trait Held: Send {
    async fn commit(self: Box<Self>) -> AppendResult;
    async fn rollback(self: Box<Self>);
}

#[async_trait]
trait Harness: Send + Sync + Sized + 'static {
    type Store: EventStore + Clone;
    async fn new() -> Self;
    fn store(&self) -> Self::Store;
    /// An append whose transaction stays open until committed or rolled back.
    async fn begin_append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Box<dyn Held>;
    /// Cuts the store off from its backend, as a lost connection would.
    async fn break_connections(&self);
}

struct Memory(MemoryEventStore);

#[async_trait]
impl Held for HeldAppend {
    async fn commit(self: Box<Self>) -> AppendResult {
        HeldAppend::commit(*self)
    }
    async fn rollback(self: Box<Self>) {
        drop(self);
    }
}

#[async_trait]
impl Harness for Memory {
    type Store = MemoryEventStore;
    async fn new() -> Self {
        Memory(MemoryEventStore::new())
    }
    fn store(&self) -> Self::Store {
        self.0.clone()
    }
    async fn begin_append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Box<dyn Held> {
        Box::new(self.0.begin_append(stream, expected, events).await.unwrap())
    }
    async fn break_connections(&self) {
        self.0.fail_next_reads(3);
    }
}

struct Postgres {
    store: PgEventStore,
    db: TestDatabase,
}

#[async_trait]
impl Held for PgHeldAppend {
    async fn commit(self: Box<Self>) -> AppendResult {
        PgHeldAppend::commit(*self).await.unwrap()
    }
    async fn rollback(self: Box<Self>) {
        PgHeldAppend::rollback(*self).await.unwrap()
    }
}

#[async_trait]
impl Harness for Postgres {
    type Store = PgEventStore;
    async fn new() -> Self {
        let db = TestDatabase::create().await.unwrap();
        let store = PgEventStore::connect(PgConfig::new(&db.url)).await.unwrap();
        Postgres { store, db }
    }
    fn store(&self) -> Self::Store {
        self.store.clone()
    }
    async fn begin_append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Box<dyn Held> {
        Box::new(
            self.store
                .begin_append(stream, expected, events)
                .await
                .unwrap(),
        )
    }
    async fn break_connections(&self) {
        let pool = self.db.pool(1).await.unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(!killed.is_empty(), "no connection to kill");
        pool.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

fn unique(category: &str) -> StreamName {
    stream(&format!("{category}-{}", Uuid::new_v4().simple()))
}

fn event(n: usize) -> EventData {
    EventData::new("Happened", json!({ "n": n }))
}

fn events(range: std::ops::Range<usize>) -> Vec<EventData> {
    range.map(event).collect()
}

/// Reads `$all` up to `until`. A transaction open anywhere on the server (another test's, say)
/// holds readers back for a while, so this waits, with a bound, until `until` is readable.
async fn read_all_events<S: EventStore>(
    store: &S,
    filter: &Filter,
    until: Position,
) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut after = Position::START;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while after < until {
        let slice = store.read_all(after, 500, filter).await.unwrap();
        out.extend(slice.events);
        if slice.scanned == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{until} was not readable within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        after = slice.next;
    }
    out
}

/// The next event of a subscription, passing over checkpoints.
async fn next_event(sub: &mut Subscription) -> Arc<RecordedEvent> {
    loop {
        match tokio::time::timeout(PATIENCE, sub.next()).await {
            Ok(Some(SubscriptionMessage::Event(e))) => return e,
            Ok(Some(SubscriptionMessage::Checkpoint(_))) => continue,
            Ok(None) => panic!("the subscription ended"),
            Err(_) => panic!("no event arrived within {PATIENCE:?}"),
        }
    }
}

/// Receives events until the one with `marker_id`, which proves everything before it arrived.
async fn events_until(sub: &mut Subscription, marker_id: Uuid) -> Vec<Arc<RecordedEvent>> {
    let mut out = Vec::new();
    loop {
        let e = next_event(sub).await;
        if e.event_id == marker_id {
            return out;
        }
        out.push(e);
    }
}

/// Appends a marker event to its own stream and returns its id.
async fn marker<S: EventStore>(store: &S) -> Uuid {
    let e = EventData::new("Marker", json!({}));
    let id = e.event_id;
    store
        .append(&unique("marker"), ExpectedRevision::NoStream, vec![e])
        .await
        .unwrap();
    id
}

fn assert_strictly_increasing(events: &[Arc<RecordedEvent>]) {
    for w in events.windows(2) {
        assert!(
            w[0].position < w[1].position,
            "positions go {} then {}",
            w[0].position,
            w[1].position
        );
    }
}

fn wrong(e: StoreError) -> (ExpectedRevision, Option<u64>) {
    match e {
        StoreError::WrongExpectedRevision {
            expected, actual, ..
        } => (expected, actual),
        other => panic!("expected a wrong expected revision, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The suite

async fn appending_with_any_succeeds_whatever_the_stream_holds<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("any");
    let r = s
        .append(&name, ExpectedRevision::Any, events(0..2))
        .await
        .unwrap();
    assert_eq!(r.next_expected_revision, 1);
    let r = s
        .append(&name, ExpectedRevision::Any, events(2..3))
        .await
        .unwrap();
    assert_eq!(r.next_expected_revision, 2);
    let read = s.read_stream(&name, ReadStream::forward()).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(read[2].position, r.position);
}

async fn no_stream_succeeds_only_on_a_stream_that_has_no_events<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("nostream");
    s.append(&name, ExpectedRevision::NoStream, events(0..3))
        .await
        .unwrap();
    let err = s
        .append(&name, ExpectedRevision::NoStream, events(3..4))
        .await
        .unwrap_err();
    assert_eq!(wrong(err), (ExpectedRevision::NoStream, Some(2)));
}

async fn stream_exists_fails_on_a_new_stream_and_succeeds_on_a_written_one<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("exists");
    let err = s
        .append(&name, ExpectedRevision::StreamExists, events(0..1))
        .await
        .unwrap_err();
    assert_eq!(wrong(err), (ExpectedRevision::StreamExists, None));
    assert!(
        s.read_stream(&name, ReadStream::forward())
            .await
            .unwrap()
            .is_empty()
    );
    s.append(&name, ExpectedRevision::NoStream, events(0..1))
        .await
        .unwrap();
    let r = s
        .append(&name, ExpectedRevision::StreamExists, events(1..2))
        .await
        .unwrap();
    assert_eq!(r.next_expected_revision, 1);
}

async fn exact_succeeds_at_the_current_revision_and_otherwise_reports_the_actual_one<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("exact");
    let err = s
        .append(&name, ExpectedRevision::Exact(0), events(0..1))
        .await
        .unwrap_err();
    assert_eq!(wrong(err), (ExpectedRevision::Exact(0), None));
    s.append(&name, ExpectedRevision::NoStream, events(0..2))
        .await
        .unwrap();
    let r = s
        .append(&name, ExpectedRevision::Exact(1), events(2..3))
        .await
        .unwrap();
    assert_eq!(r.next_expected_revision, 2);
    for stale in [0, 1, 3, 99] {
        let err = s
            .append(&name, ExpectedRevision::Exact(stale), events(9..10))
            .await
            .unwrap_err();
        assert_eq!(wrong(err), (ExpectedRevision::Exact(stale), Some(2)));
    }
    assert_eq!(
        s.read_stream(&name, ReadStream::forward())
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn of_concurrent_appenders_at_one_revision_exactly_one_wins<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("race");
    s.append(&name, ExpectedRevision::NoStream, events(0..1))
        .await
        .unwrap();
    let writers = 16;
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let s = s.clone();
            let name = name.clone();
            tokio::spawn(async move {
                s.append(&name, ExpectedRevision::Exact(0), events(i..i + 1))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                won += 1;
                assert_eq!(r.next_expected_revision, 1);
            }
            Err(e) => assert_eq!(wrong(e), (ExpectedRevision::Exact(0), Some(1))),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(
        s.read_stream(&name, ReadStream::forward())
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn fifty_concurrent_any_appends_get_contiguous_revisions<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("fifty");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            let name = name.clone();
            tokio::spawn(async move {
                s.append(&name, ExpectedRevision::Any, events(i..i + 1))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut revisions = Vec::new();
    let mut last = Position::START;
    for t in tasks {
        let r = t.await.unwrap();
        revisions.push(r.next_expected_revision);
        last = last.max(r.position);
    }
    revisions.sort();
    assert_eq!(revisions, (0..50).collect::<Vec<u64>>());
    let read = s.read_stream(&name, ReadStream::forward()).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (0..50).collect::<Vec<u64>>()
    );
    // In $all too, the stream's events come in revision order.
    let all = read_all_events(&s, &Filter::StreamPrefix(vec![name.to_string()]), last).await;
    assert_eq!(
        all.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (0..50).collect::<Vec<u64>>()
    );
}

async fn an_idempotent_retry_writes_nothing_and_returns_the_first_result<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    for expected in [
        ExpectedRevision::Any,
        ExpectedRevision::NoStream,
        ExpectedRevision::Exact(0),
    ] {
        let name = unique("idem");
        if let ExpectedRevision::Exact(_) = expected {
            s.append(&name, ExpectedRevision::NoStream, events(100..101))
                .await
                .unwrap();
        }
        let batch = events(0..3);
        let first = s.append(&name, expected, batch.clone()).await.unwrap();
        s.append(&name, ExpectedRevision::Any, events(3..4))
            .await
            .unwrap();
        let again = s.append(&name, expected, batch.clone()).await.unwrap();
        assert_eq!(again, first, "retry with {expected:?}");
        let read = s.read_stream(&name, ReadStream::forward()).await.unwrap();
        let n = if matches!(expected, ExpectedRevision::Exact(_)) {
            5
        } else {
            4
        };
        assert_eq!(read.len(), n, "the retry with {expected:?} wrote something");
    }
}

async fn a_batch_that_partly_overlaps_written_events_is_a_conflict<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("overlap");
    let batch = events(0..3);
    s.append(&name, ExpectedRevision::NoStream, batch.clone())
        .await
        .unwrap();
    let mut partial = vec![batch[1].clone(), batch[2].clone()];
    partial.push(event(9));
    let err = s
        .append(&name, ExpectedRevision::Any, partial)
        .await
        .unwrap_err();
    assert_eq!(wrong(err).1, Some(2));
    // The same batch at another place is not a retry either.
    let err = s
        .append(&name, ExpectedRevision::Exact(0), batch[2..].to_vec())
        .await
        .unwrap_err();
    assert_eq!(wrong(err), (ExpectedRevision::Exact(0), Some(2)));
    // At its own place, a tail of the batch is a retry (KurrentDB's rule).
    let retry = s
        .append(&name, ExpectedRevision::Exact(1), batch[2..].to_vec())
        .await
        .unwrap();
    assert_eq!(retry.next_expected_revision, 2);
    assert_eq!(
        s.read_stream(&name, ReadStream::forward())
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn events_are_read_back_as_written<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("roundtrip");
    let e = EventData::new(
        "ProjectCreated",
        json!({"name": "é\u{1F600}", "n": [1, 2.5, null]}),
    )
    .with_metadata(json!({"org_id": "o", "request_id": "r"}));
    s.append(&name, ExpectedRevision::NoStream, vec![e.clone()])
        .await
        .unwrap();
    let read = s.read_stream(&name, ReadStream::forward()).await.unwrap();
    assert_eq!(read.len(), 1);
    let r = &read[0];
    assert_eq!(
        (
            &r.event_id,
            &r.event_type,
            r.data.value(),
            r.metadata.value(),
            &r.stream
        ),
        (&e.event_id, &e.event_type, &e.data, &e.metadata, &name)
    );
    let all = read_all_events(&s, &Filter::All, read[0].position).await;
    assert_eq!(all, read);
}

async fn last_revisions_name_each_streams_last_event_in_the_order_asked<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let (one, three, never) = (
        unique("last-one"),
        unique("last-three"),
        unique("last-never"),
    );
    s.append(
        &one,
        ExpectedRevision::NoStream,
        vec![EventData::new("A", json!({}))],
    )
    .await
    .unwrap();
    let batch = (0..3).map(|_| EventData::new("B", json!({}))).collect();
    s.append(&three, ExpectedRevision::NoStream, batch)
        .await
        .unwrap();
    let names = [three.clone(), never.clone(), one.clone()];
    assert_eq!(
        s.last_revisions(&names).await.unwrap(),
        [Some(2), None, Some(0)]
    );
    s.append(
        &one,
        ExpectedRevision::Exact(0),
        vec![EventData::new("A", json!({}))],
    )
    .await
    .unwrap();
    assert_eq!(s.last_revisions(&[one]).await.unwrap(), [Some(1)]);
    assert_eq!(
        s.last_revisions(&[]).await.unwrap(),
        Vec::<Option<u64>>::new()
    );
}

async fn a_stream_reads_forwards_and_backwards_from_a_revision_with_a_limit<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("read");
    s.append(&name, ExpectedRevision::NoStream, events(0..10))
        .await
        .unwrap();
    let revs = |v: Vec<RecordedEvent>| v.into_iter().map(|e| e.revision).collect::<Vec<_>>();
    let fwd = s
        .read_stream(
            &name,
            ReadStream::forward().from(StreamFrom::Revision(3)).max(4),
        )
        .await
        .unwrap();
    assert_eq!(revs(fwd), [3, 4, 5, 6]);
    let back = s
        .read_stream(&name, ReadStream::backward().max(3))
        .await
        .unwrap();
    assert_eq!(revs(back), [9, 8, 7]);
    let back = s
        .read_stream(&name, ReadStream::backward().from(StreamFrom::Revision(2)))
        .await
        .unwrap();
    assert_eq!(revs(back), [2, 1, 0]);
    let none = s
        .read_stream(&unique("never"), ReadStream::forward())
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn filters_select_by_stream_prefix_event_type_and_category<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let tag = Uuid::new_v4().simple().to_string();
    let a = stream(&format!("alpha{tag}-1"));
    let b = stream(&format!("beta{tag}-1"));
    s.append(
        &a,
        ExpectedRevision::Any,
        vec![
            EventData::new("BuildStarted", json!({})),
            EventData::new("Other", json!({})),
        ],
    )
    .await
    .unwrap();
    let last = s
        .append(
            &b,
            ExpectedRevision::Any,
            vec![EventData::new("BuildDone", json!({}))],
        )
        .await
        .unwrap()
        .position;
    let count = |f: Filter| {
        let s = s.clone();
        async move { read_all_events(&s, &f, last).await.len() }
    };
    assert_eq!(
        count(Filter::StreamPrefix(vec![format!("alpha{tag}")])).await,
        2
    );
    assert_eq!(count(Filter::Category(vec![format!("beta{tag}")])).await, 1);
    assert_eq!(
        count(Filter::Category(vec![format!("beta{tag}-1")])).await,
        0
    );
    assert_eq!(
        count(Filter::EventTypePrefix(vec!["Build".into()])).await,
        2
    );
    assert_eq!(count(Filter::All).await, 3);
}

async fn a_held_open_transaction_holds_back_later_events_and_none_is_skipped_or_repeated<
    H: Harness,
>() {
    let h = H::new().await;
    let s = h.store();
    let before = s
        .append(&unique("early"), ExpectedRevision::NoStream, events(0..1))
        .await
        .unwrap();
    let mut sub = s.subscribe_all(SubscribeFrom::Start, Filter::All);
    assert_eq!(next_event(&mut sub).await.position, before.position);

    let held_stream = unique("held");
    let held = h
        .begin_append(&held_stream, ExpectedRevision::NoStream, events(1..3))
        .await;
    let mut later = Vec::new();
    for i in 0..5 {
        let r = s
            .append(
                &unique("later"),
                ExpectedRevision::NoStream,
                events(10 + i..11 + i),
            )
            .await
            .unwrap();
        later.push(r.position);
    }
    // Readers stop below the open transaction.
    let visible = read_all_events(&s, &Filter::All, before.position).await;
    assert_eq!(visible.len(), 1);
    let beyond = s
        .read_all(before.position, 100, &Filter::All)
        .await
        .unwrap();
    assert_eq!(beyond.scanned, 0, "read past an open transaction");
    assert_eq!(s.head().await.unwrap(), Some(before.position));
    // A subscriber gets nothing while it is open.
    let early = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(
        early.is_err(),
        "a subscriber saw {early:?} before the held transaction committed"
    );

    let committed = held.commit().await;
    let m = marker(&s).await;
    let got = events_until(&mut sub, m).await;
    assert_strictly_increasing(&got);
    assert_eq!(got.len(), 7, "skipped or repeated: {got:?}");
    assert_eq!(got[0].stream, held_stream);
    assert_eq!(got[1].position, committed.position);
    assert_eq!(
        got[2..].iter().map(|e| e.position).collect::<Vec<_>>(),
        later
    );
    // A fresh reader sees the same order.
    let all = read_all_events(&s, &Filter::All, *later.last().unwrap()).await;
    assert_eq!(all.len(), 9);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
}

async fn a_rolled_back_append_leaves_no_hole_that_stalls_readers<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let mut sub = s.subscribe_all(SubscribeFrom::Start, Filter::All);
    let held = h
        .begin_append(&unique("doomed"), ExpectedRevision::NoStream, events(0..2))
        .await;
    let after = s
        .append(&unique("after"), ExpectedRevision::NoStream, events(2..3))
        .await
        .unwrap();
    held.rollback().await;
    let got = next_event(&mut sub).await;
    assert_eq!(got.position, after.position);
    let all = read_all_events(&s, &Filter::All, after.position).await;
    assert_eq!(all.len(), 1);
    assert_eq!(s.head().await.unwrap(), Some(after.position));
}

async fn a_subscription_catches_up_then_follows_live_without_gap_or_duplicate<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("seam");
    for i in 0..25 {
        s.append(&name, ExpectedRevision::Any, events(i * 100..i * 100 + 100))
            .await
            .unwrap();
    }
    let mut sub = s.subscribe_all(SubscribeFrom::Start, Filter::All);
    // Writes continue while it catches up.
    let writer = {
        let s = s.clone();
        let name = name.clone();
        tokio::spawn(async move {
            for i in 25..40 {
                s.append(&name, ExpectedRevision::Any, events(i * 100..i * 100 + 100))
                    .await
                    .unwrap();
            }
        })
    };
    let mut got = Vec::new();
    while got.len() < 2500 {
        got.push(next_event(&mut sub).await);
    }
    writer.await.unwrap();
    let m = marker(&s).await;
    got.extend(events_until(&mut sub, m).await);
    assert_strictly_increasing(&got);
    assert_eq!(
        got.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (0..4000).collect::<Vec<u64>>()
    );

    // From a position, and from the end.
    let mid = got[1999].position;
    let mut from_mid = s.subscribe_all(SubscribeFrom::After(mid), Filter::All);
    assert_eq!(next_event(&mut from_mid).await.revision, 2000);
    let mut from_end = s.subscribe_all(SubscribeFrom::End, Filter::All);
    // It picks its start when it starts: append markers until one arrives; it must be a new one.
    let mut fresh = HashSet::new();
    let first = loop {
        fresh.insert(marker(&s).await);
        if let Ok(e) =
            tokio::time::timeout(Duration::from_millis(200), next_event(&mut from_end)).await
        {
            break e;
        }
    };
    assert!(
        fresh.contains(&first.event_id),
        "subscribing from the end delivered an old event"
    );
}

async fn a_subscription_resumes_after_its_connection_is_lost_with_nothing_lost<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("killed");
    for i in 0..3 {
        s.append(
            &name,
            ExpectedRevision::Any,
            events(i * 1000..i * 1000 + 1000),
        )
        .await
        .unwrap();
    }
    let mut sub = s.subscribe_all(SubscribeFrom::Start, Filter::All);
    let mut got = Vec::new();
    while got.len() < 500 {
        got.push(next_event(&mut sub).await);
    }
    // Mid catch-up, and with the live feed's connections gone too.
    h.break_connections().await;
    for i in 0..100 {
        let e = event(3000 + i);
        // A write that fails with the connection is retried with the same id: idempotent.
        let mut tries = 0;
        loop {
            match s
                .append(&name, ExpectedRevision::Any, vec![e.clone()])
                .await
            {
                Ok(_) => break,
                Err(StoreError::Backend(err)) if tries < 5 => {
                    tries += 1;
                    eprintln!("append failed ({err}); retrying");
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        if i == 50 {
            h.break_connections().await;
        }
    }
    let m = marker(&s).await;
    got.extend(events_until(&mut sub, m).await);
    assert_strictly_increasing(&got);
    assert_eq!(
        got.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (0..3100).collect::<Vec<u64>>()
    );
}

async fn a_sparse_filter_restarted_from_a_checkpoint_does_not_skip_the_match<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let tag = Uuid::new_v4().simple().to_string();
    let noise = |i: usize| stream(&format!("noise{tag}-{}", i % 7));
    let target = stream(&format!("target{tag}-1"));
    let filter = Filter::Category(vec![format!("target{tag}")]);

    // 5,000 events, then the match in a transaction held open, then 4,999 more.
    let mut last_before = Position::START;
    for i in 0..50 {
        last_before = s
            .append(
                &noise(i),
                ExpectedRevision::Any,
                events(i * 100..i * 100 + 100),
            )
            .await
            .unwrap()
            .position;
    }
    let held = h
        .begin_append(&target, ExpectedRevision::NoStream, events(0..1))
        .await;
    for i in 50..100 {
        let n = if i == 99 { 99 } else { 100 };
        s.append(
            &noise(i),
            ExpectedRevision::Any,
            events(i * 100..i * 100 + n),
        )
        .await
        .unwrap();
    }

    let mut sub = s.subscribe_all(SubscribeFrom::Start, filter.clone());
    let checkpoint = loop {
        match tokio::time::timeout(PATIENCE, sub.next()).await {
            Ok(Some(SubscriptionMessage::Checkpoint(p))) if p >= last_before => break p,
            Ok(Some(SubscriptionMessage::Checkpoint(_))) => continue,
            other => panic!("expected a checkpoint, got {other:?}"),
        }
    };
    assert_eq!(
        checkpoint, last_before,
        "a checkpoint moved past an open transaction"
    );

    let committed = held.commit().await;
    // The live subscription delivers the match…
    assert_eq!(next_event(&mut sub).await.position, committed.position);
    // …and so does one restarted from the checkpoint, exactly once.
    let mut restarted = s.subscribe_all(SubscribeFrom::After(checkpoint), filter.clone());
    let got = next_event(&mut restarted).await;
    assert_eq!(got.position, committed.position);
    let more = EventData::new("Happened", json!({}));
    let more_id = more.event_id;
    s.append(&target, ExpectedRevision::Exact(0), vec![more])
        .await
        .unwrap();
    assert_eq!(next_event(&mut restarted).await.event_id, more_id);
    // A subscription restarted after the match does not see it again.
    let mut after = s.subscribe_all(SubscribeFrom::After(committed.position), filter);
    assert_eq!(next_event(&mut after).await.event_id, more_id);
}

async fn a_soft_deleted_stream_reads_empty_and_can_be_written_again<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("soft");
    s.append(&name, ExpectedRevision::NoStream, events(0..3))
        .await
        .unwrap();
    let err = s
        .delete_stream(&name, ExpectedRevision::Exact(1))
        .await
        .unwrap_err();
    assert_eq!(wrong(err).1, Some(2));
    s.delete_stream(&name, ExpectedRevision::Exact(2))
        .await
        .unwrap();
    assert!(
        s.read_stream(&name, ReadStream::forward())
            .await
            .unwrap()
            .is_empty()
    );
    let err = s
        .append(&name, ExpectedRevision::StreamExists, events(3..4))
        .await
        .unwrap_err();
    assert_eq!(wrong(err).1, None);
    let r = s
        .append(&name, ExpectedRevision::NoStream, events(3..4))
        .await
        .unwrap();
    assert_eq!(r.next_expected_revision, 3, "revisions continue");
    let read = s.read_stream(&name, ReadStream::forward()).await.unwrap();
    assert_eq!(read.iter().map(|e| e.revision).collect::<Vec<_>>(), [3]);
    // $all keeps what was deleted.
    let all = read_all_events(
        &s,
        &Filter::StreamPrefix(vec![name.to_string()]),
        r.position,
    )
    .await;
    assert_eq!(all.len(), 4);
}

async fn a_tombstoned_stream_can_never_be_read_or_written_again<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("tomb");
    s.append(&name, ExpectedRevision::NoStream, events(0..2))
        .await
        .unwrap();
    s.tombstone_stream(&name, ExpectedRevision::Any)
        .await
        .unwrap();
    let deleted = |r: Result<_, StoreError>| matches!(r, Err(StoreError::StreamDeleted { .. }));
    assert!(deleted(
        s.append(&name, ExpectedRevision::Any, events(2..3))
            .await
            .map(|_| ())
    ));
    assert!(deleted(
        s.append(&name, ExpectedRevision::NoStream, events(2..3))
            .await
            .map(|_| ())
    ));
    assert!(deleted(
        s.read_stream(&name, ReadStream::forward())
            .await
            .map(|_| ())
    ));
    assert!(deleted(s.delete_stream(&name, ExpectedRevision::Any).await));
    assert!(deleted(
        s.set_stream_metadata(&name, StreamMetadata::default())
            .await
    ));
    // A name never written can be tombstoned too.
    let never = unique("tomb");
    s.tombstone_stream(&never, ExpectedRevision::NoStream)
        .await
        .unwrap();
    assert!(deleted(
        s.append(&never, ExpectedRevision::NoStream, events(0..1))
            .await
            .map(|_| ())
    ));
}

async fn max_count_truncate_before_and_max_age_limit_what_a_stream_reads<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    let name = unique("meta");
    s.append(&name, ExpectedRevision::NoStream, events(0..10))
        .await
        .unwrap();
    let revs = |v: Vec<RecordedEvent>| v.into_iter().map(|e| e.revision).collect::<Vec<_>>();

    let meta = StreamMetadata {
        max_count: Some(3),
        ..Default::default()
    };
    s.set_stream_metadata(&name, meta).await.unwrap();
    assert_eq!(s.stream_metadata(&name).await.unwrap(), meta);
    assert_eq!(
        revs(s.read_stream(&name, ReadStream::forward()).await.unwrap()),
        [7, 8, 9]
    );
    assert_eq!(
        revs(s.read_stream(&name, ReadStream::backward()).await.unwrap()),
        [9, 8, 7]
    );

    s.set_stream_metadata(
        &name,
        StreamMetadata {
            truncate_before: Some(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        revs(
            s.read_stream(&name, ReadStream::forward().max(2))
                .await
                .unwrap()
        ),
        [5, 6]
    );
    let last = s
        .append(&name, ExpectedRevision::Exact(9), events(10..11))
        .await
        .unwrap()
        .position;

    s.set_stream_metadata(
        &name,
        StreamMetadata {
            max_age: Some(3600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.read_stream(&name, ReadStream::forward())
            .await
            .unwrap()
            .len(),
        11
    );
    s.set_stream_metadata(
        &name,
        StreamMetadata {
            max_age: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        s.read_stream(&name, ReadStream::forward())
            .await
            .unwrap()
            .is_empty()
    );
    // Metadata never hides anything from $all.
    let all = read_all_events(&s, &Filter::StreamPrefix(vec![name.to_string()]), last).await;
    assert_eq!(all.len(), 11);
}

async fn bad_input_is_a_typed_error_and_writes_nothing<H: Harness>() {
    let h = H::new().await;
    let s = h.store();
    assert_eq!(StreamName::new(""), Err(InvalidInput::EmptyStreamName));
    assert!(matches!(
        StreamName::new("a".repeat(256)),
        Err(InvalidInput::StreamNameTooLong { len: 256 })
    ));
    assert!(matches!(
        StreamName::new("bad\u{7}name"),
        Err(InvalidInput::ControlCharacter { .. })
    ));
    assert!(matches!(
        StreamName::new("$all"),
        Err(InvalidInput::ReservedStreamName { .. })
    ));
    let name = unique("bad");
    let huge = json!({ "blob": "x".repeat(1024 * 1024) });
    type Case = (Vec<EventData>, fn(&InvalidInput) -> bool);
    let cases: Vec<Case> = vec![
        (vec![], |e| matches!(e, InvalidInput::EmptyBatch)),
        (vec![EventData::new("", json!({}))], |e| {
            matches!(e, InvalidInput::EmptyEventType { index: 0 })
        }),
        (vec![event(0), EventData::new("T", json!("text"))], |e| {
            matches!(e, InvalidInput::DataNotObject { index: 1 })
        }),
        (vec![EventData::new("T", json!(null))], |e| {
            matches!(e, InvalidInput::DataNotObject { index: 0 })
        }),
        (
            vec![EventData::new("T", json!({})).with_metadata(json!([1]))],
            |e| matches!(e, InvalidInput::MetadataNotObject { index: 0 }),
        ),
        (vec![EventData::new("T\n", json!({}))], |e| {
            matches!(e, InvalidInput::ControlCharacter { .. })
        }),
        (vec![event(0), EventData::new("T", huge)], |e| {
            matches!(e, InvalidInput::EventTooLarge { index: 1, .. })
        }),
    ];
    for (batch, expected) in cases {
        match s.append(&name, ExpectedRevision::Any, batch).await {
            Err(StoreError::InvalidInput(e)) => assert!(expected(&e), "unexpected {e:?}"),
            other => panic!("expected invalid input, got {other:?}"),
        }
    }
    assert!(
        s.read_stream(&name, ReadStream::forward())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.head().await.unwrap(), None, "something reached $all");
}

/// Interleaved writers, some holding their transaction open while others write: inside `$all`,
/// every stream's revisions come in order, once each.
fn per_stream_revisions_strictly_increase_inside_all<H: Harness>() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    // (writer, stream, batch size, hold the transaction open for a while)
    let op = (
        0..4usize,
        0..3usize,
        1..4usize,
        proptest::bool::weighted(0.2),
    );
    let strategy = proptest::collection::vec(op, 1..40);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let harness = rt.block_on(H::new());
    let harness = Arc::new(harness);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    runner
        .run(&strategy, |ops| {
            let h = harness.clone();
            rt.block_on(async move {
                let case = Uuid::new_v4().simple().to_string();
                let names: Vec<StreamName> =
                    (0..3).map(|i| stream(&format!("prop{case}-{i}"))).collect();
                let mut per_writer: BTreeMap<usize, Vec<(usize, usize, bool)>> = BTreeMap::new();
                for (w, st, n, hold) in &ops {
                    per_writer.entry(*w).or_default().push((*st, *n, *hold));
                }
                let mut tasks = Vec::new();
                for (_, wops) in per_writer {
                    let h = h.clone();
                    let names = names.clone();
                    tasks.push(tokio::spawn(async move {
                        let s = h.store();
                        let mut last = Position::START;
                        for (st, n, hold) in wops {
                            let r = if hold {
                                let held = h
                                    .begin_append(&names[st], ExpectedRevision::Any, events(0..n))
                                    .await;
                                tokio::time::sleep(Duration::from_millis(3)).await;
                                held.commit().await
                            } else {
                                // `Exact` at the revision last seen, as commands append (the
                                // PostgreSQL adapter's fast path), retried on conflicts.
                                let mut actual = s
                                    .read_stream(&names[st], ReadStream::backward().max(1))
                                    .await
                                    .unwrap()
                                    .first()
                                    .map(|e| e.revision);
                                loop {
                                    let expected = actual.map_or(
                                        ExpectedRevision::NoStream,
                                        ExpectedRevision::Exact,
                                    );
                                    match s.append(&names[st], expected, events(0..n)).await {
                                        Ok(r) => break r,
                                        Err(StoreError::WrongExpectedRevision {
                                            actual: a,
                                            ..
                                        }) => actual = a,
                                        Err(e) => panic!("append failed: {e}"),
                                    }
                                }
                            };
                            last = last.max(r.position);
                            tokio::task::yield_now().await;
                        }
                        last
                    }));
                }
                let mut last = Position::START;
                for t in tasks {
                    last = last.max(t.await.unwrap());
                }
                let total: usize = ops.iter().map(|o| o.2).sum();
                let s = h.store();
                let all = read_all_events(
                    &s,
                    &Filter::StreamPrefix(vec![format!("prop{case}-")]),
                    last,
                )
                .await;
                prop_assert_eq!(all.len(), total);
                let mut next: HashMap<&str, u64> = HashMap::new();
                let mut last = Position::START;
                for e in &all {
                    prop_assert!(e.position > last);
                    last = e.position;
                    let expected = next.entry(e.stream.as_str()).or_insert(0);
                    prop_assert_eq!(e.revision, *expected, "stream {}", e.stream);
                    *expected += 1;
                }
                let ids: HashSet<_> = all.iter().map(|e| e.event_id).collect();
                prop_assert_eq!(ids.len(), total);
                Ok(())
            })
        })
        .unwrap();
}

macro_rules! contract_suite {
    ($harness:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name::<$harness>().await;
            }
        )*

        #[test]
        fn per_stream_revisions_strictly_increase_inside_all() {
            super::per_stream_revisions_strictly_increase_inside_all::<$harness>();
        }
    };
}

macro_rules! for_each_adapter {
    ($($name:ident),* $(,)?) => {
        mod memory {
            contract_suite!(super::Memory; $($name),*);
        }
        mod postgres {
            contract_suite!(super::Postgres; $($name),*);
        }
    };
}

for_each_adapter!(
    appending_with_any_succeeds_whatever_the_stream_holds,
    no_stream_succeeds_only_on_a_stream_that_has_no_events,
    stream_exists_fails_on_a_new_stream_and_succeeds_on_a_written_one,
    exact_succeeds_at_the_current_revision_and_otherwise_reports_the_actual_one,
    of_concurrent_appenders_at_one_revision_exactly_one_wins,
    fifty_concurrent_any_appends_get_contiguous_revisions,
    an_idempotent_retry_writes_nothing_and_returns_the_first_result,
    a_batch_that_partly_overlaps_written_events_is_a_conflict,
    events_are_read_back_as_written,
    last_revisions_name_each_streams_last_event_in_the_order_asked,
    a_stream_reads_forwards_and_backwards_from_a_revision_with_a_limit,
    filters_select_by_stream_prefix_event_type_and_category,
    a_held_open_transaction_holds_back_later_events_and_none_is_skipped_or_repeated,
    a_rolled_back_append_leaves_no_hole_that_stalls_readers,
    a_subscription_catches_up_then_follows_live_without_gap_or_duplicate,
    a_subscription_resumes_after_its_connection_is_lost_with_nothing_lost,
    a_sparse_filter_restarted_from_a_checkpoint_does_not_skip_the_match,
    a_soft_deleted_stream_reads_empty_and_can_be_written_again,
    a_tombstoned_stream_can_never_be_read_or_written_again,
    max_count_truncate_before_and_max_age_limit_what_a_stream_reads,
    bad_input_is_a_typed_error_and_writes_nothing,
);
