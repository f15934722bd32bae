//! Rebuilds beside the old read model, against a real PostgreSQL: readers keep the old rows
//! while the new generation is built, one rebuild at a time, a failed build changes nothing,
//! and writes made meanwhile are in the generation swapped in.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use atelier_projections::rebuild::{Purpose, RebuildError, SchemaLock, schema_name, verify};
use atelier_projections::runtime::{Projection, ProjectionError, Registry, RunState};
use atelier_store::postgres::{PgConfig, PgEventStore};
use atelier_store::testing::TestDatabase;
use atelier_store::{EventData, EventStore, ExpectedRevision, Position, RecordedEvent, StreamName};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, watch};

const NAME: &str = "test.held";
const PATIENCE: Duration = Duration::from_secs(20);

/// Records every event in `applied` (applying one twice fails: the id is the key). While
/// `holding`, an event of type `Hold` stops its batch until `release` turns true (announcing
/// it on `reached`); while `poisoned`, an event of type `Poison` fails.
struct Held {
    holding: AtomicBool,
    poisoned: AtomicBool,
    reached: Notify,
    release: watch::Sender<bool>,
}

#[async_trait]
impl Projection for Held {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> i32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["applied"]
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
        if event.event_type == "Hold" && self.holding.load(Ordering::SeqCst) {
            self.reached.notify_one();
            let mut rx = self.release.subscribe();
            let _ = rx.wait_for(|released| *released).await;
        }
        if event.event_type == "Poison" && self.poisoned.load(Ordering::SeqCst) {
            return Err(ProjectionError::Invalid("poisoned event".into()));
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
    projection: Arc<Held>,
    registry: Registry,
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
    let projection = Arc::new(Held {
        holding: AtomicBool::new(false),
        poisoned: AtomicBool::new(false),
        reached: Notify::new(),
        release: watch::channel(false).0,
    });
    let registry = Registry::new();
    registry.start(projection.clone(), store.clone(), pool.clone());
    Fixture {
        store,
        pool,
        projection,
        registry,
        _db: db,
    }
}

async fn append(store: &dyn EventStore, types: &[&str]) -> Position {
    let events = types
        .iter()
        .map(|t| EventData::new(*t, json!({})))
        .collect();
    store
        .append(
            &StreamName::new(format!("thing-{}", uuid::Uuid::now_v7())).unwrap(),
            ExpectedRevision::NoStream,
            events,
        )
        .await
        .unwrap()
        .position
}

async fn rows(pool: &PgPool) -> Vec<uuid::Uuid> {
    sqlx::query_scalar("SELECT event_id FROM applied ORDER BY event_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn schema_exists(pool: &PgPool, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[actix_web::test]
async fn while_a_rebuild_runs_readers_keep_every_old_row_and_a_second_rebuild_is_refused() {
    let f = fixture().await;
    append(f.store.as_ref(), &["A", "Hold", "B"]).await;
    let mut last = Position::START;
    for _ in 0..20 {
        last = append(f.store.as_ref(), &["A", "B"]).await;
    }
    f.registry.wait_for(NAME, last, PATIENCE).await.unwrap();
    let before = rows(&f.pool).await;
    assert_eq!(before.len(), 43);

    f.projection.holding.store(true, Ordering::SeqCst);
    let running = f.registry.rebuild(NAME).await.unwrap();
    f.projection.reached.notified().await;
    // The new generation is half built: readers still see the whole old one.
    assert_eq!(rows(&f.pool).await, before);
    let status = f.registry.status(NAME).unwrap();
    assert_eq!(status.state, RunState::Rebuilding);
    assert!(status.rebuild.as_ref().unwrap().running);
    assert!(f.registry.is_ready(), "the old read model still serves");
    assert!(matches!(
        f.registry.rebuild(NAME).await,
        Err(RebuildError::Busy(_))
    ));
    // Another process cannot take the rebuild either.
    assert!(
        SchemaLock::try_acquire(&f.pool, Purpose::Rebuild, NAME)
            .await
            .unwrap()
            .is_none()
    );
    // A write made meanwhile (the held build's open transaction keeps it from readers of the
    // log until released) reaches the generation swapped in.
    let during = append(f.store.as_ref(), &["C"]).await;
    assert_eq!(rows(&f.pool).await, before);

    f.projection.release.send_replace(true);
    let swapped = running.finished().await.unwrap();
    f.registry.wait_for(NAME, during, PATIENCE).await.unwrap();
    assert_eq!(rows(&f.pool).await.len(), 44);
    assert!(swapped.generation >= 1);
    let after = append(f.store.as_ref(), &["D"]).await;
    f.registry.wait_for(NAME, after, PATIENCE).await.unwrap();
    // Nothing applied twice (the key would have failed the runner), nothing lost.
    assert_eq!(rows(&f.pool).await.len(), 45);
    let status = f.registry.status(NAME).unwrap();
    assert_eq!(status.state, RunState::Live, "{status:?}");
    assert_eq!(status.generation, swapped.generation);
    assert!(!schema_exists(&f.pool, &schema_name(Purpose::Rebuild, NAME)).await);
}

#[actix_web::test]
async fn a_rebuild_that_fails_leaves_the_old_read_model_serving_and_says_why() {
    let f = fixture().await;
    let mut last = append(f.store.as_ref(), &["A", "Poison", "B"]).await;
    for _ in 0..5 {
        last = append(f.store.as_ref(), &["A"]).await;
    }
    f.registry.wait_for(NAME, last, PATIENCE).await.unwrap();
    let before = rows(&f.pool).await;
    let generation = f.registry.status(NAME).unwrap().generation;

    f.projection.poisoned.store(true, Ordering::SeqCst);
    let failed = f
        .registry
        .rebuild(NAME)
        .await
        .unwrap()
        .finished()
        .await
        .unwrap_err();
    assert!(
        matches!(&failed, RebuildError::Apply { event_type, .. } if event_type == "Poison"),
        "{failed}"
    );
    assert_eq!(rows(&f.pool).await, before);
    let status = f.registry.status(NAME).unwrap();
    assert_eq!(status.state, RunState::Live);
    assert_eq!(status.generation, generation);
    let report = status.rebuild.unwrap();
    assert!(!report.running);
    assert!(report.error.unwrap().contains("poisoned event"));
    assert!(!schema_exists(&f.pool, &schema_name(Purpose::Rebuild, NAME)).await);
    // The next rebuild may run.
    f.projection.poisoned.store(false, Ordering::SeqCst);
    f.registry
        .rebuild(NAME)
        .await
        .unwrap()
        .finished()
        .await
        .unwrap();
    assert_eq!(rows(&f.pool).await, before);
}

#[actix_web::test]
async fn verify_finds_the_rows_a_read_model_has_that_the_log_does_not_say() {
    let f = fixture().await;
    let mut last = Position::START;
    for _ in 0..5 {
        last = append(f.store.as_ref(), &["A", "B"]).await;
    }
    f.registry.wait_for(NAME, last, PATIENCE).await.unwrap();
    let quiet = |_| {};
    let clean = verify(&f.pool, f.store.as_ref(), f.projection.as_ref(), &quiet)
        .await
        .unwrap();
    assert!(clean.is_ok(), "{clean:?}");
    assert!(clean.position >= last);

    let stray = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO applied (event_id, commit, prepare) VALUES ($1, 1, 1)")
        .bind(stray)
        .execute(&f.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM applied WHERE event_id = (SELECT event_id FROM applied ORDER BY event_id LIMIT 1)")
        .execute(&f.pool)
        .await
        .unwrap();
    let found = verify(&f.pool, f.store.as_ref(), f.projection.as_ref(), &quiet)
        .await
        .unwrap();
    assert!(!found.is_ok());
    let diff = &found.differences[0];
    assert_eq!(diff.table, "applied");
    assert_eq!((diff.only_live_count, diff.only_rebuilt_count), (1, 1));
    assert!(diff.only_live[0].contains(&stray.to_string()), "{diff:?}");
    assert!(!schema_exists(&f.pool, &schema_name(Purpose::Verify, NAME)).await);
}

#[test]
fn no_two_projections_own_the_same_table_and_no_foreign_key_ties_an_owned_table() {
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for projection in atelier_projections::all() {
        assert!(
            !projection.tables().is_empty(),
            "{} owns no table",
            projection.name()
        );
        for table in projection.tables() {
            if let Some(other) = owners.insert(table, projection.name()) {
                panic!("{table} is owned by both {other} and {}", projection.name());
            }
        }
    }
    // A swap deletes and copies an owned table's rows: a foreign key from or to one would make
    // it fail, or delete another read model's rows.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let sql = std::fs::read_to_string(&path).unwrap().to_lowercase();
        for statement in sql.split(';') {
            if !statement.contains("references") {
                continue;
            }
            for table in owners.keys() {
                let named = statement
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|word| word == *table);
                assert!(
                    !named,
                    "{}: a foreign key involves {table}, owned by {}",
                    path.display(),
                    owners[table]
                );
            }
        }
    }
}
