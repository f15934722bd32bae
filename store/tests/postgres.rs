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
