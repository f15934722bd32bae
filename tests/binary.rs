//! The `atelier` binary as a user runs it: against a database that does not exist yet.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atelier_store::testing::{test_server_url, with_database};

/// A database name nobody has created; dropped at the end.
struct FreshDatabase {
    url: String,
    name: String,
}

impl FreshDatabase {
    fn new() -> Self {
        let name = format!("atelier_test_{}", uuid::Uuid::new_v4().simple());
        Self {
            url: with_database(&test_server_url(), &name),
            name,
        }
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(with_database(&test_server_url(), "postgres"))
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn atelier(db: &FreshDatabase) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_atelier"));
    c.env("DATABASE_URL", &db.url).env("RUST_LOG", "warn");
    c
}

async fn table_exists(url: &str, table: &str) -> bool {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(table)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    found.is_some()
}

#[tokio::test]
async fn migrate_creates_the_database_and_the_event_store_schema() {
    let db = FreshDatabase::new();
    let out = atelier(&db).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table_exists(&db.url, "events").await);
    assert!(table_exists(&db.url, "event_streams").await);
    // Running it again is a no-op.
    let again = atelier(&db).arg("migrate").output().unwrap();
    assert!(again.status.success());
}

#[tokio::test]
async fn serve_on_port_zero_creates_the_database_and_answers_health() {
    let db = FreshDatabase::new();
    let mut child = atelier(&db)
        .env("ATELIER_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let (first, rx) = tokio::sync::oneshot::channel();
    // Reads the first line, then keeps draining so the server never writes to a closed pipe.
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let _ = first.send(line);
        let mut rest = String::new();
        while reader.read_line(&mut rest).unwrap_or(0) > 0 {
            rest.clear();
        }
    });
    let line = rx;
    let line = tokio::time::timeout(Duration::from_secs(60), line)
        .await
        .expect("the server did not say where it listens")
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let health: serde_json::Value = reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "atelier");
    assert!(table_exists(&db.url, "events").await);
    drop(server);
}
