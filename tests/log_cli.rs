//! The operator's log tools as run from a shell, against a database a real server wrote:
//! `atelier events tail|export|import` and `atelier audit`.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::process::{FreshDatabase, Process, atelier, first_line_then_drain, start_server};

/// Runs the binary with these arguments to its end.
fn run(db: &FreshDatabase, args: &[&str]) -> Output {
    atelier(db).args(args).output().unwrap()
}

/// Runs the binary, which must succeed; its standard output.
fn stdout_of(db: &FreshDatabase, args: &[&str]) -> String {
    let out = run(db, args);
    assert!(
        out.status.success(),
        "atelier {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The JSON lines of `--format json`.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Starts a server on the database; the process and its base URL.
async fn serve(db: &FreshDatabase) -> (Process, String) {
    let mut command = atelier(db);
    command
        .env("ATELIER_LISTEN", "127.0.0.1:0")
        .env("ATELIER_ADMIN_PASSWORD", common::PASSWORD)
        .env("ATELIER_RUNNER_ID", "log-cli-runner")
        .env("ATELIER_BUILD_DRIVER", "none")
        .env("ATELIER_DEPLOY_DRIVER", "none")
        .env("ATELIER_VENV_CONCURRENCY", "0");
    start_server(command).await
}

/// Logs in as the admin; the token and the admin's user id.
async fn login(base: &str) -> (String, String) {
    let client = reqwest::Client::new();
    let body: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": common::ADMIN, "password": common::PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let me: Value = client
        .get(format!("{base}/api/v1/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user = me["user_id"].as_str().unwrap_or_else(|| panic!("{me}"));
    (token, user.to_owned())
}

/// Creates a project; its id. The server answers once the event is committed.
async fn create_project(base: &str, token: &str, name: &str) -> String {
    let res = reqwest::Client::new()
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(token)
        .json(&json!({"name": name, "repo": "https://github.com/demo/repo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// The position of the last event written to this database.
async fn last_position(db: &FreshDatabase) -> String {
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (c, p): (i64, i64) = sqlx::query_as(
        "SELECT commit, prepare FROM events ORDER BY commit DESC, prepare DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    format!("{c}-{p}")
}

fn created_event_of(lines: &[Value], project: &str) -> Option<Value> {
    lines
        .iter()
        .find(|l| l["type"] == "ProjectCreated" && l["stream"] == format!("project-{project}"))
        .cloned()
}

#[tokio::test]
async fn tail_and_audit_show_the_project_a_server_created_and_who_created_it() {
    let db = FreshDatabase::new();
    let (_server, base) = serve(&db).await;
    let (token, user) = login(&base).await;

    // Following before the project exists: the event arrives live.
    let mut follower = atelier(&db)
        .args(["events", "tail", "--follow", "--format", "json"])
        .args(["--category", "project"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let follower_out = follower.stdout.take().unwrap();
    let _follower = Process(follower);
    let project = create_project(&base, &token, "AuditMe").await;
    let followed =
        tokio::time::timeout(Duration::from_secs(60), first_line_then_drain(follower_out))
            .await
            .expect("tail --follow printed nothing")
            .unwrap();
    let followed: Value = serde_json::from_str(&followed).unwrap();
    assert_eq!(followed["type"], "ProjectCreated", "{followed}");
    assert_eq!(followed["stream"], format!("project-{project}"));

    // The last events of the category.
    let tail = json_lines(&stdout_of(
        &db,
        &[
            "events",
            "tail",
            "--format",
            "json",
            "--category",
            "project",
        ],
    ));
    assert!(
        tail.iter()
            .all(|l| l["stream"].as_str().unwrap().starts_with("project-")),
        "{tail:?}"
    );
    let created = created_event_of(&tail, &project).expect("no ProjectCreated in the tail");
    assert_eq!(created["data"]["name"], "AuditMe", "{created}");
    assert_eq!(created["metadata"]["actor"], user.as_str());
    assert_eq!(created["revision"], 0);
    assert!(created["position"].as_str().unwrap().contains('-'));
    assert!(created["event_id"].is_string() && created["created"].is_string());

    // Who did it: found under their id, not under someone else's.
    let audit = json_lines(&stdout_of(
        &db,
        &["audit", "--actor", &user, "--format", "json"],
    ));
    assert!(created_event_of(&audit, &project).is_some(), "{audit:?}");
    assert!(
        audit
            .iter()
            .all(|l| l["metadata"]["actor"] == user.as_str())
    );
    let other = uuid::Uuid::new_v4().to_string();
    let audit = stdout_of(&db, &["audit", "--actor", &other, "--format", "json"]);
    assert_eq!(audit, "", "someone else did nothing");
    // The pretty form names the event and its actor.
    let pretty = stdout_of(
        &db,
        &["audit", "--actor", &user, "--type", "ProjectCreated"],
    );
    assert!(
        pretty.contains(&format!("project-{project}@0  ProjectCreated  {user}")),
        "{pretty}"
    );

    // A position that is not one: a clear error and exit status 2.
    let bad = run(&db, &["events", "tail", "--from", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid position"));
}

#[tokio::test]
async fn an_exported_log_imported_into_a_fresh_database_has_the_same_events_and_read_models_and_verifies()
 {
    let source = FreshDatabase::new();
    let (server, base) = serve(&source).await;
    let (token, _) = login(&base).await;
    for name in ["First", "Second"] {
        create_project(&base, &token, name).await;
    }
    // The source's read models have caught up with both (the list waits for the last write's
    // position) before the server stops, so that they can be compared with the import's.
    let listed: Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/projects?search=Second"))
        .header("Atelier-Min-Position", last_position(&source).await)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["pagination"]["total"], 1, "{listed}");
    drop(server);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.atelier.gz");
    let file = file.to_str().unwrap();
    let out = stdout_of(&source, &["events", "export", file]);
    assert!(out.starts_with("exported "), "{out}");

    // Into a database that does not exist yet.
    let target = FreshDatabase::new();
    let out = stdout_of(&target, &["events", "import", file]);
    assert!(out.contains("building the read models"), "{out}");
    assert!(out.contains("factory.projects rebuilt"), "{out}");

    // The imported database's read models are right (verify rebuilds each into a scratch
    // schema and compares them row by row), and they are the source's.
    let verified = stdout_of(&target, &["verify"]);
    assert!(!verified.contains("MISMATCH"), "{verified}");
    stdout_of(&source, &["verify"]);
    let rows = |url: String, query: &'static str| async move {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let rows: Vec<(String,)> = sqlx::query_as(query).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    };
    for query in [
        "SELECT concat_ws('|', id, org_id, name, repo_url, build_command, revision, created_at, \
         updated_at) FROM projects ORDER BY id",
        "SELECT concat_ws('|', id, username, email, is_superadmin) FROM users ORDER BY id",
        "SELECT concat_ws('|', event_id, stream, revision, event_type, actor, credential, \
         data::text) FROM audit_log ORDER BY event_id",
    ] {
        let (before, after) = (
            rows(source.url.clone(), query).await,
            rows(target.url.clone(), query).await,
        );
        assert!(!before.is_empty(), "{query}");
        assert_eq!(after, before, "{query}");
    }

    let all = ["events", "tail", "--format", "json", "--from", "0-0"];
    let without_positions = |text: String| -> Vec<Value> {
        json_lines(&text)
            .into_iter()
            .map(|mut l| {
                l.as_object_mut().unwrap().remove("position");
                l
            })
            .collect()
    };
    let before = without_positions(stdout_of(&source, &all));
    let after = without_positions(stdout_of(&target, &all));
    assert!(before.len() > 2, "{before:?}");
    assert!(
        before
            .iter()
            .filter(|l| l["type"] == "ProjectCreated")
            .count()
            == 2
    );
    assert_eq!(after, before);

    // Not twice: the target is no longer empty.
    let again = run(&target, &["events", "import", file]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(without_positions(stdout_of(&target, &all)), before);

    // A file that is not an archive writes nothing.
    let junk = dir.path().join("junk.gz");
    std::fs::write(&junk, b"this is not an archive\n").unwrap();
    let empty = FreshDatabase::new();
    let refused = run(&empty, &["events", "import", junk.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not an Atelier event archive"), "{stderr}");
    assert_eq!(stdout_of(&empty, &all), "");
}
