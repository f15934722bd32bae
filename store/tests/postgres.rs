//! What only the PostgreSQL adapter has: query plans, and processes that share one database.

use std::time::Duration;

use atelier_store::postgres::{PgConfig, PgEventStore};
use atelier_store::testing::TestDatabase;
use atelier_store::{
    EventData, EventStore, ExpectedRevision, Filter, StreamName, SubscribeFrom, SubscriptionMessage,
};
use futures::StreamExt;
use serde_json::json;

async fn plan(pool: &sqlx::PgPool, sql: &str) -> String {
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
        .fetch_all(pool)
        .await
        .unwrap();
    rows.join("\n")
}

#[tokio::test]
async fn the_poll_and_catch_up_queries_use_the_position_index() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.pool(2).await.unwrap();
    let store = PgEventStore::with_pool(pool.clone(), PgConfig::new(&db.url));
    for i in 0..40 {
        let batch = (0..500)
            .map(|n| EventData::new("Filler", json!({ "n": n })))
            .collect();
        store
            .append(
                &StreamName::new(format!("filler-{i}")).unwrap(),
                ExpectedRevision::Any,
                batch,
            )
            .await
            .unwrap();
    }
    sqlx::query("ANALYZE events").execute(&pool).await.unwrap();
    let xmin = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)";
    let queries = [
        // Catch-up and tailer reads, filtered or not.
        format!(
            "SELECT * FROM events e WHERE (e.commit, e.prepare) > (0, 0) AND e.commit < {xmin} \
             ORDER BY e.commit, e.prepare LIMIT 1000"
        ),
        format!(
            "SELECT * FROM events e WHERE (e.commit, e.prepare) > (0, 0) AND e.commit < {xmin} \
             AND split_part(e.stream_name, '-', 1) = ANY ('{{x}}') \
             ORDER BY e.commit, e.prepare LIMIT 1000"
        ),
        // The head, and the held-back probe of the tailer's poll.
        format!(
            "SELECT commit, prepare FROM events WHERE commit < {xmin} \
             ORDER BY commit DESC, prepare DESC LIMIT 1"
        ),
        "SELECT commit FROM events WHERE (commit, prepare) > (0, 0) \
         ORDER BY commit, prepare LIMIT 1"
            .to_owned(),
    ];
    for q in queries {
        let p = plan(&pool, &q).await;
        assert!(
            p.contains("events_pkey"),
            "no index in the plan of {q}:\n{p}"
        );
        assert!(
            !p.contains("Seq Scan"),
            "a sequential scan in the plan of {q}:\n{p}"
        );
    }
}

async fn next(
    sub: &mut atelier_store::Subscription,
) -> std::sync::Arc<atelier_store::RecordedEvent> {
    match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
        Ok(Some(SubscriptionMessage::Event(e))) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn another_process_is_woken_by_notify_without_waiting_for_its_poll() {
    let db = TestDatabase::create().await.unwrap();
    let writer = PgEventStore::connect(PgConfig::new(&db.url)).await.unwrap();
    // A second process whose safety-net poll would take far longer than the test's patience.
    let mut config = PgConfig::new(&db.url);
    config.poll_interval = Duration::from_secs(3600);
    let reader = PgEventStore::connect(config).await.unwrap();
    let mut sub = reader.subscribe_all(SubscribeFrom::Start, Filter::All);
    // Wait until the reader's subscription is live: it delivers a first event.
    let first = EventData::new("First", json!({}));
    let name = StreamName::new("wake-1").unwrap();
    writer
        .append(&name, ExpectedRevision::NoStream, vec![first])
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.event_type, "First");
    for i in 0..5 {
        let e = EventData::new("Woken", json!({ "i": i }));
        let id = e.event_id;
        writer
            .append(&name, ExpectedRevision::Any, vec![e])
            .await
            .unwrap();
        assert_eq!(next(&mut sub).await.event_id, id);
    }
}

/// A store with one append writer, kept busy by an append that waits for a transaction held
/// open on its stream: appends made meanwhile queue behind it. `release` lets it finish.
struct BusyWriter {
    store: PgEventStore,
    held: atelier_store::postgres::PgHeldAppend,
    blocked:
        tokio::task::JoinHandle<Result<atelier_store::AppendResult, atelier_store::StoreError>>,
    db: TestDatabase,
}

impl BusyWriter {
    /// `setup`: SQL run on the fresh database first.
    async fn new(setup: &str) -> Self {
        let db = TestDatabase::create().await.unwrap();
        let mut config = PgConfig::new(&db.url);
        config.append_writers = 1;
        let store = PgEventStore::with_pool(db.pool(8).await.unwrap(), config);
        sqlx::raw_sql(sqlx::AssertSqlSafe(setup.to_owned()))
            .execute(store.pool())
            .await
            .unwrap();
        let stream = StreamName::new("busy-1").unwrap();
        let event = EventData::new("Held", json!({}));
        let held = store
            .begin_append(&stream, ExpectedRevision::NoStream, vec![event.clone()])
            .await
            .unwrap();
        // The same event at the same place: once the held transaction commits it is a retry.
        let blocked = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .append(&stream, ExpectedRevision::NoStream, vec![event])
                    .await
            }
        });
        // Taken by the only writer, which now waits in PostgreSQL for the held transaction.
        // PostgreSQL tells no one when a backend starts waiting for a lock: this is a bounded
        // poll (1 ms steps, 20 s at most) of another process's state, pg_stat_activity.
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(store.pool())
                .await
                .unwrap();
                if waiting > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the append never waited for the held transaction");
        assert!(!blocked.is_finished());
        Self {
            store,
            held,
            blocked,
            db,
        }
    }

    /// Starts `appends` (stream, expectation, events) while the writer is busy and waits until
    /// every one of them waits for a transaction.
    fn queue(
        &self,
        appends: Vec<(String, ExpectedRevision, Vec<EventData>)>,
    ) -> Vec<tokio::task::JoinHandle<Result<atelier_store::AppendResult, atelier_store::StoreError>>>
    {
        appends
            .into_iter()
            .map(|(stream, expected, events)| {
                let store = self.store.clone();
                tokio::spawn(async move {
                    let stream = StreamName::new(stream).unwrap();
                    store.append(&stream, expected, events).await
                })
            })
            .collect()
    }

    /// Commits the held transaction; the store (and its database, dropped with it) go on.
    async fn release(self) -> (PgEventStore, TestDatabase) {
        self.held.commit().await.unwrap();
        self.blocked
            .await
            .unwrap()
            .expect("the blocked append is a retry of the held one");
        (self.store, self.db)
    }
}

#[tokio::test]
async fn appends_that_queue_behind_a_busy_writer_share_one_transaction_each_with_its_own_answer() {
    let busy = BusyWriter::new("").await;
    let mut appends: Vec<_> = (0..10)
        .map(|i| {
            (
                format!("shared-{i}"),
                ExpectedRevision::NoStream,
                vec![
                    EventData::new("First", json!({ "i": i })),
                    EventData::new("Second", json!({ "i": i })),
                ],
            )
        })
        .collect();
    // One whose expectation fails: it fails alone.
    appends.push((
        "shared-3".into(),
        ExpectedRevision::Exact(7),
        vec![EventData::new("Late", json!({}))],
    ));
    let handles = busy.queue(appends);
    tokio::time::timeout(
        Duration::from_secs(20),
        busy.store.appends_waiting_reach(11),
    )
    .await
    .expect("the appends never queued");
    let (store, _db) = busy.release().await;
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    let refused = results.pop().unwrap();
    assert!(
        matches!(
            refused,
            Err(atelier_store::StoreError::WrongExpectedRevision {
                actual: Some(1),
                ..
            })
        ),
        "{refused:?}"
    );
    let written: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    let commit = written[0].position.commit;
    assert!(
        written.iter().all(|r| r.position.commit == commit),
        "the ten appends were not one transaction: {written:?}"
    );
    // The blocked append alone, then the eleven queued behind it together.
    assert_eq!(
        store.append_groups(),
        atelier_store::postgres::AppendGroups {
            groups: 2,
            appends: 12
        }
    );
    for (i, r) in written.iter().enumerate() {
        assert_eq!(r.next_expected_revision, 1);
        let events = store
            .read_stream(
                &StreamName::new(format!("shared-{i}")).unwrap(),
                atelier_store::ReadStream::forward(),
            )
            .await
            .unwrap();
        let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["First", "Second"]);
        assert_eq!(events[1].position, r.position);
    }
}

#[tokio::test]
async fn an_append_the_database_refuses_fails_alone_and_the_rest_of_its_group_is_written() {
    // A rule of the database (as an operator's trigger or constraint would be) refuses one
    // stream's events: the statement writing the group fails as a whole.
    let busy = BusyWriter::new(
        "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER refuse_bad BEFORE INSERT ON events FOR EACH ROW \
         WHEN (NEW.stream_name = 'bad-1') EXECUTE FUNCTION refuse_bad();",
    )
    .await;
    let mut appends: Vec<_> = (0..4)
        .map(|i| {
            (
                format!("ok-{i}"),
                ExpectedRevision::NoStream,
                vec![EventData::new("Fine", json!({ "i": i }))],
            )
        })
        .collect();
    appends.insert(
        2,
        (
            "bad-1".into(),
            ExpectedRevision::NoStream,
            vec![EventData::new("Refused", json!({}))],
        ),
    );
    let handles = busy.queue(appends);
    tokio::time::timeout(Duration::from_secs(20), busy.store.appends_waiting_reach(5))
        .await
        .expect("the appends never queued");
    let (store, _db) = busy.release().await;
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    let bad = results.remove(2);
    assert!(
        matches!(bad, Err(atelier_store::StoreError::Backend(_))),
        "{bad:?}"
    );
    let bad_stream = StreamName::new("bad-1").unwrap();
    assert!(
        store
            .read_stream(&bad_stream, atelier_store::ReadStream::forward())
            .await
            .unwrap()
            .is_empty()
    );
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap();
        let events = store
            .read_stream(
                &StreamName::new(format!("ok-{i}")).unwrap(),
                atelier_store::ReadStream::forward(),
            )
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].position, r.position);
    }
}

#[tokio::test]
async fn an_append_that_loses_its_connection_says_so() {
    // Nothing listens on port 1: the append cannot reach the database. The caller must be able
    // to tell that from a refusal (it may retry: the append may or may not have happened).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy("postgres://postgres@127.0.0.1:1/nothing")
        .unwrap();
    let store = PgEventStore::with_pool(pool, PgConfig::new("postgres://postgres@127.0.0.1:1"));
    let error = store
        .append(
            &StreamName::new("lost-1").unwrap(),
            ExpectedRevision::NoStream,
            vec![EventData::new("Lost", json!({}))],
        )
        .await
        .unwrap_err();
    assert!(error.is_connection_lost(), "{error:?}");
}
