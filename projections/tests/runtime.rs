//! The projection runtime against a real PostgreSQL: exactly once, visible failures, rebuilds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use atelier_projections::runtime::{
    CHECKPOINT_EVERY, Projection, ProjectionError, Registry, RunState, Stop, stored_checkpoints,
};
use atelier_store::postgres::{PgConfig, PgEventStore};
use atelier_store::testing::TestDatabase;
use atelier_store::{EventData, EventStore, ExpectedRevision, Position, RecordedEvent, StreamName};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

/// Records every event it applies in `applied` (a unique event id per row: applying one twice
/// fails), fails on events of type `Poison` while `poisoned` is set, and stops forever inside
/// its batch on events of type `Gate` while the gate is armed.
struct Recorder {
    version: i32,
    /// What it declares it applies (`None`: everything).
    categories: Option<&'static [&'static str]>,
    poisoned: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    gate: Arc<Gate>,
}

/// Holds a batch open in the middle: `reached` is notified when a `Gate` event is applied.
#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    reached: tokio::sync::Notify,
}

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &'static str {
        "test.recorder"
    }
    fn version(&self) -> i32 {
        self.version
    }
    fn tables(&self) -> &'static [&'static str] {
        &["applied"]
    }
    fn categories(&self) -> Option<&'static [&'static str]> {
        self.categories
    }
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM applied").execute(tx).await?;
        Ok(())
    }
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if event.event_type == "Poison" && self.poisoned.load(Ordering::SeqCst) {
            return Err(ProjectionError::Invalid("poisoned event".into()));
        }
        if event.event_type == "Gate" && self.gate.armed.load(Ordering::SeqCst) {
            self.gate.reached.notify_one();
            std::future::pending::<()>().await;
        }
        sqlx::query("INSERT INTO applied (event_id, commit, prepare) VALUES ($1, $2, $3)")
            .bind(event.event_id)
            .bind(event.position.commit as i64)
            .bind(event.position.prepare as i64)
            .execute(tx)
            .await?;
        Ok(())
    }
}

struct Fixture {
    store: Arc<dyn EventStore>,
    pool: PgPool,
    _db: TestDatabase,
}

async fn fixture() -> Fixture {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.pool(8).await.unwrap();
    sqlx::query("CREATE TABLE applied (event_id uuid PRIMARY KEY, commit bigint, prepare bigint)")
        .execute(&pool)
        .await
        .unwrap();
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::with_pool(
        pool.clone(),
        PgConfig::new(&db.url),
    ));
    Fixture {
        store,
        pool,
        _db: db,
    }
}

fn recorder(version: i32) -> (Arc<Recorder>, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let poisoned = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    (
        Arc::new(Recorder {
            version,
            categories: None,
            poisoned: poisoned.clone(),
            calls: calls.clone(),
            gate: Arc::default(),
        }),
        poisoned,
        calls,
    )
}

/// A recorder that applies only the `thing` category, and its count of `apply` calls.
fn recorder_of_things() -> (Arc<Recorder>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let projection = Arc::new(Recorder {
        version: 1,
        categories: Some(&["thing"]),
        poisoned: Arc::default(),
        calls: calls.clone(),
        gate: Arc::default(),
    });
    (projection, calls)
}

async fn append(store: &dyn EventStore, types: &[&str]) -> Position {
    append_to(store, "thing", types).await
}

async fn append_to(store: &dyn EventStore, category: &str, types: &[&str]) -> Position {
    let events = types
        .iter()
        .map(|t| EventData::new(*t, json!({})))
        .collect();
    store
        .append(
            &StreamName::new(format!("{category}-{}", uuid::Uuid::now_v7())).unwrap(),
            ExpectedRevision::NoStream,
            events,
        )
        .await
        .unwrap()
        .position
}

async fn applied(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM applied")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_for_state(registry: &Registry, state: RunState) {
    for _ in 0..2000 {
        if registry.statuses().iter().all(|s| s.state == state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never reached {state:?}: {:?}", registry.statuses());
}

const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until the recorder has passed `position` (what a reader with `min_position` waits for).
async fn reached(registry: &Registry, position: Position) {
    registry
        .wait_for("test.recorder", position, PATIENCE)
        .await
        .unwrap();
}

#[actix_web::test]
async fn a_failing_event_stops_the_projection_visibly_and_nothing_of_its_batch_is_applied() {
    let f = fixture().await;
    let (projection, poisoned, _) = recorder(1);
    poisoned.store(true, Ordering::SeqCst);
    append(f.store.as_ref(), &["A", "B", "C", "D", "E"]).await;
    append(f.store.as_ref(), &["F", "Poison", "G"]).await;
    let registry = Registry::new();
    let runner = registry.start(projection.clone(), f.store.clone(), f.pool.clone());
    wait_for_state(&registry, RunState::Failed).await;

    let status = &registry.statuses()[0];
    assert!(status.error.as_deref().unwrap().contains("poisoned event"));
    assert!(status.failed_at.is_some());
    assert!(!registry.is_ready());
    // The whole batch was rolled back: the events before the poison are not half-applied.
    assert_eq!(applied(&f.pool).await, 0);
    let stored = stored_checkpoints(&f.pool).await.unwrap();
    assert_eq!(stored[0].status, "failed");
    assert_eq!(stored[0].failed_at, status.failed_at);
    assert_eq!(stored[0].position, Position::START);

    // Fixed and restarted, it resumes from its checkpoint and applies everything once.
    poisoned.store(false, Ordering::SeqCst);
    runner
        .send(atelier_projections::runtime::Restart)
        .await
        .unwrap();
    let last = append(f.store.as_ref(), &["H"]).await;
    reached(&registry, last).await;
    assert_eq!(applied(&f.pool).await, 9);
    assert_eq!(
        stored_checkpoints(&f.pool).await.unwrap()[0].status,
        "running"
    );
}

#[actix_web::test]
async fn events_of_categories_a_projection_does_not_apply_move_its_position_but_not_its_checkpoint()
{
    let f = fixture().await;
    let (projection, calls) = recorder_of_things();
    let checkpoint = async || stored_checkpoints(&f.pool).await.unwrap()[0].position;
    let registry = Registry::new();
    let mine = append(f.store.as_ref(), &["A"]).await;
    let runner = registry.start(projection.clone(), f.store.clone(), f.pool.clone());
    reached(&registry, mine).await;
    assert_eq!(checkpoint().await, mine);

    // Others' events: readers waiting for them are answered, and nothing is written.
    let others = append_to(f.store.as_ref(), "other", &["X", "Y"]).await;
    reached(&registry, others).await;
    assert_eq!(registry.statuses()[0].position, others);
    assert_eq!(checkpoint().await, mine, "a transaction for nothing");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "applied another category");

    // Its own next event writes the checkpoint past everything.
    let next = append(f.store.as_ref(), &["B"]).await;
    reached(&registry, next).await;
    assert_eq!(checkpoint().await, next);

    // Stopped after passing over more, it reads them again from its checkpoint, passes over
    // them again, and applies nothing twice.
    let more = append_to(f.store.as_ref(), "other", &["Z"]).await;
    reached(&registry, more).await;
    runner.send(Stop).await.unwrap();
    let last = append(f.store.as_ref(), &["C"]).await;
    let registry = Registry::new();
    registry.start(projection, f.store.clone(), f.pool.clone());
    reached(&registry, last).await;
    assert_eq!(applied(&f.pool).await, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(checkpoint().await, last);
}

#[actix_web::test]
async fn a_projection_passed_over_by_many_events_of_others_still_writes_its_checkpoint_now_and_then()
 {
    let f = fixture().await;
    let (projection, calls) = recorder_of_things();
    let registry = Registry::new();
    let mine = append(f.store.as_ref(), &["A"]).await;
    registry.start(projection, f.store.clone(), f.pool.clone());
    reached(&registry, mine).await;
    // More of others' events than `CHECKPOINT_EVERY`: what a restart would read again is
    // bounded, so the checkpoint moves without any event of its own.
    let others = vec!["X"; CHECKPOINT_EVERY as usize + 1];
    let last = append_to(f.store.as_ref(), "other", &others).await;
    reached(&registry, last).await;
    let checkpoint = stored_checkpoints(&f.pool).await.unwrap()[0].position;
    assert!(
        checkpoint > mine,
        "still at {checkpoint} after {} events",
        others.len()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "applied another category");
}

#[actix_web::test]
async fn a_runner_stopped_and_started_again_resumes_without_applying_anything_twice() {
    let f = fixture().await;
    let (projection, _, _) = recorder(1);
    let registry = Registry::new();
    let first = append(f.store.as_ref(), &["A", "B", "C"]).await;
    let runner = registry.start(projection.clone(), f.store.clone(), f.pool.clone());
    reached(&registry, first).await;
    runner.send(Stop).await.unwrap();
    // Written while it is stopped.
    for _ in 0..20 {
        append(f.store.as_ref(), &["D", "E"]).await;
    }
    let last = append(f.store.as_ref(), &["F"]).await;
    let registry = Registry::new();
    registry.start(projection, f.store.clone(), f.pool.clone());
    reached(&registry, last).await;
    // The unique event id in `applied` would have refused a second application.
    assert_eq!(applied(&f.pool).await, 3 + 40 + 1);
}

#[actix_web::test]
async fn a_runner_stopped_in_the_middle_of_a_batch_resumes_without_applying_anything_twice() {
    let f = fixture().await;
    let gate = Arc::new(Gate::default());
    gate.armed.store(true, Ordering::SeqCst);
    let projection = Arc::new(Recorder {
        version: 1,
        categories: None,
        poisoned: Arc::default(),
        calls: Arc::default(),
        gate: gate.clone(),
    });
    // One append: the runner reads it as one batch, and stops inside it at `Gate`.
    let last = append(f.store.as_ref(), &["A", "B", "Gate", "C"]).await;
    let registry = Registry::new();
    let runner = registry.start(projection.clone(), f.store.clone(), f.pool.clone());
    tokio::time::timeout(PATIENCE, gate.reached.notified())
        .await
        .expect("the runner never reached the gate");
    // A and B are applied inside the open transaction, invisible outside it.
    assert_eq!(applied(&f.pool).await, 0);
    runner.send(Stop).await.unwrap();
    gate.armed.store(false, Ordering::SeqCst);
    let registry = Registry::new();
    registry.start(projection.clone(), f.store.clone(), f.pool.clone());
    reached(&registry, last).await;
    // A second application of A or B would have broken the unique event id, and failed.
    assert_eq!(applied(&f.pool).await, 4);
    assert_eq!(registry.statuses()[0].state, RunState::Live);
    let checkpoints = stored_checkpoints(&f.pool).await.unwrap();
    assert_eq!(checkpoints[0].position, last);
}

#[actix_web::test]
async fn two_runners_of_one_projection_never_apply_an_event_twice() {
    let f = fixture().await;
    let (projection, _, _) = recorder(1);
    let a = Registry::new();
    let b = Registry::new();
    a.start(projection.clone(), f.store.clone(), f.pool.clone());
    b.start(projection.clone(), f.store.clone(), f.pool.clone());
    let mut last = Position::START;
    for _ in 0..50 {
        last = append(f.store.as_ref(), &["A", "B"]).await;
    }
    a.wait_for("test.recorder", last, PATIENCE).await.unwrap();
    b.wait_for("test.recorder", last, PATIENCE).await.unwrap();
    assert_eq!(applied(&f.pool).await, 100);
    assert!(a.statuses()[0].state != RunState::Failed);
    assert!(b.statuses()[0].state != RunState::Failed);
}

#[actix_web::test]
async fn a_new_version_rebuilds_the_read_model_from_the_start() {
    let f = fixture().await;
    let (v1, _, _) = recorder(1);
    let registry = Registry::new();
    let last = append(f.store.as_ref(), &["A", "B", "C"]).await;
    let runner = registry.start(v1, f.store.clone(), f.pool.clone());
    reached(&registry, last).await;
    runner.send(Stop).await.unwrap();
    // Rows left over from v1 that v2 would not write.
    let (v2, _, calls) = recorder(2);
    let registry = Registry::new();
    registry.start(v2, f.store.clone(), f.pool.clone());
    reached(&registry, last).await;
    assert_eq!(applied(&f.pool).await, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "v2 replayed the whole log");
    assert_eq!(stored_checkpoints(&f.pool).await.unwrap()[0].version, 2);
}

#[actix_web::test]
async fn a_rebuild_on_demand_yields_the_same_rows() {
    let f = fixture().await;
    let (projection, _, calls) = recorder(1);
    let registry = Registry::new();
    registry.start(projection, f.store.clone(), f.pool.clone());
    let mut last = Position::START;
    for _ in 0..30 {
        last = append(f.store.as_ref(), &["A", "B", "C"]).await;
    }
    reached(&registry, last).await;
    let rows = |pool: PgPool| async move {
        sqlx::query_as::<_, (uuid::Uuid, i64, i64)>(
            "SELECT event_id, commit, prepare FROM applied ORDER BY event_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let before = rows(f.pool.clone()).await;
    let swapped = registry
        .rebuild("test.recorder")
        .await
        .unwrap()
        .finished()
        .await
        .unwrap();
    assert!(swapped.position >= last);
    reached(&registry, last).await;
    assert_eq!(rows(f.pool.clone()).await, before);
    assert_eq!(calls.load(Ordering::SeqCst), 180);
    wait_for_state(&registry, RunState::Live).await;
}
