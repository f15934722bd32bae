//! The `atelier` binary as a user runs it: against a database that does not exist yet.

use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::process::{FreshDatabase, Process, atelier, start_server};

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
    let mut command = atelier(&db);
    command.env("ATELIER_LISTEN", "127.0.0.1:0");
    let (server, base) = start_server(command).await;
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

/// Starts the binary with these variables; the server and its base URL.
async fn serve(db: &FreshDatabase, vars: &[(&str, &str)]) -> (Process, String) {
    let mut command = atelier(db);
    command
        .env("ATELIER_LISTEN", "127.0.0.1:0")
        .env("ATELIER_ADMIN_PASSWORD", common::PASSWORD)
        .env("ATELIER_RUNNER_ID", "binary-runner")
        .env("ATELIER_BUILD_DRIVER", "none");
    for (k, v) in vars {
        command.env(k, v);
    }
    start_server(command).await
}

async fn login(base: &str) -> String {
    let body: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": common::ADMIN, "password": common::PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Reads the deployment until `done` says so (see [`read_until`]).
async fn deployment_until(
    base: &str,
    token: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    read_until(base, token, &format!("/deployments/{id}"), done).await
}

async fn deploy(base: &str, token: &str, framework: &str) -> String {
    let d: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/deploy"))
        .bearer_auth(token)
        .json(&json!({
            "name": "kill-test",
            "deployment_type": "vm",
            "framework": framework,
            "github_url": "https://github.com/acme/site",
            "resources": {"cores": 2, "memory": 2048, "disk": 20}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    d["id"].as_str().unwrap_or_else(|| panic!("{d}")).to_owned()
}

#[tokio::test]
async fn a_kill_9_in_the_middle_of_a_rollout_leaves_the_deployment_failed_as_interrupted() {
    let db = FreshDatabase::new();
    // Provisioning takes 30 to 80 s: the kill comes in the middle of it.
    let slow = [
        ("ATELIER_DEPLOY_DRIVER", "simulated"),
        ("ATELIER_DEPLOY_TIME_SCALE", "10"),
        ("ATELIER_DEPLOY_FAILURE_RATE", "0"),
    ];
    let (server, base) = serve(&db, &slow).await;
    let token = login(&base).await;
    let id = deploy(&base, &token, "django").await;
    deployment_until(&base, &token, &id, |d| d["status"] == "provisioning").await;
    drop(server); // SIGKILL
    let (_server, base) = serve(&db, &slow).await;
    let token = login(&base).await;
    let d = deployment_until(&base, &token, &id, |d| d["status"] == "failed").await;
    assert_eq!(d["failure"], "interrupted", "{d}");
    assert_eq!(d["ip_address"], Value::Null);
}

#[tokio::test]
async fn an_app_survives_a_kill_9_of_the_server_and_is_adopted_after_the_restart() {
    let db = FreshDatabase::new();
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    common::site_repo(&mirror, "still here\n");
    let work = dir.path().join("deployments");
    let mirrors = format!("https://github.com/=file://{}/", mirror.display());
    let vars = [
        ("ATELIER_DEPLOY_DRIVER", "process"),
        ("ATELIER_DEPLOY_WORK_DIR", work.to_str().unwrap()),
        ("ATELIER_DEPLOY_MIRRORS", mirrors.as_str()),
    ];
    let (server, base) = serve(&db, &vars).await;
    let token = login(&base).await;
    let id = deploy(&base, &token, "static").await;
    let d = deployment_until(&base, &token, &id, |d| d["status"] == "running").await;
    let url = d["access_url"].as_str().unwrap().to_owned();
    drop(server); // SIGKILL: the app is in its own process group and keeps running.
    assert_eq!(
        reqwest::get(&url).await.unwrap().text().await.unwrap(),
        "still here\n"
    );
    let (server, base) = serve(&db, &vars).await;
    let token = login(&base).await;
    let client = reqwest::Client::new();
    // The restarted runner adopted it: it still runs where it ran, and a stop reaches it.
    let d = deployment_until(&base, &token, &id, |d| d["status"] == "running").await;
    assert_eq!(d["access_url"], url.as_str());
    assert_eq!(d["version"], 1);
    let res = client
        .delete(format!("{base}/api/v1/deployments/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    deployment_until(&base, &token, &id, |d| d["destroyed"] == true).await;
    assert!(reqwest::get(&url).await.is_err(), "the app still answers");
    assert!(!work.join(&id).exists());
    drop(server);
}

/// Reads `path` until `done` says so, for at most two minutes: a bounded poll, since another
/// process (the binary) moves it and there is no position of this process to wait on.
async fn read_until(base: &str, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = reqwest::Client::new()
            .get(format!("{base}/api/v1{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path} still {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[tokio::test]
async fn a_kill_9_during_an_install_fails_it_as_interrupted_ends_its_backend_and_keeps_the_environment()
 {
    // A package index on 127.0.0.1 that never answers: the install is under way at the kill.
    let index = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let index_url = format!(
        "http://127.0.0.1:{}/simple",
        index.local_addr().unwrap().port()
    );
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in index.incoming().flatten() {
            held.push(conn);
        }
    });
    let db = FreshDatabase::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("venvs");
    let cache = dir.path().join("cache");
    let vars = [
        ("ATELIER_VENV_DATA_DIR", data.to_str().unwrap()),
        ("ATELIER_VENV_CACHE_DIR", cache.to_str().unwrap()),
        ("ATELIER_VENV_INDEX_URL", index_url.as_str()),
    ];
    let (server, base) = serve(&db, &vars).await;
    let token = login(&base).await;
    let client = reqwest::Client::new();
    let env: Value = client
        .post(format!("{base}/api/v1/environments"))
        .bearer_auth(&token)
        .json(&json!({"name": "survivor", "backend": "pip"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = env["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{env}"))
        .to_owned();
    read_until(&base, &token, &format!("/environments/{id}"), |e| {
        e["status"] == "ready"
    })
    .await;
    let op: Value = client
        .post(format!("{base}/api/v1/environments/{id}/packages"))
        .bearer_auth(&token)
        .json(&json!({"packages": ["six"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let op = op["id"].as_str().unwrap().to_owned();
    read_until(&base, &token, &format!("/operations/{op}"), |o| {
        o["status"] == "running"
    })
    .await;
    // A bounded poll for a process (no event says pip started).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !processes_mentioning(&id).iter().any(|c| c.contains("pip")) {
        assert!(std::time::Instant::now() < deadline, "pip never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server); // SIGKILL: pip, in its own process group, lives on.
    assert!(!processes_mentioning(&id).is_empty());

    let (server, base) = serve(&db, &vars).await;
    let token = login(&base).await;
    let o = read_until(&base, &token, &format!("/operations/{op}"), |o| {
        o["status"] == "failed"
    })
    .await;
    assert_eq!(o["failure"], "interrupted", "{o}");
    // The restarted runner ended the backend the crash left (a bounded poll for the processes
    // to be reaped).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !processes_mentioning(&id).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            processes_mentioning(&id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = read_until(&base, &token, &format!("/environments/{id}"), |_| true).await;
    assert_eq!(e["status"], "ready", "{e}");
    drop(server);
}

#[tokio::test]
async fn a_camera_capturing_at_a_kill_9_loses_its_ffmpeg_and_is_captured_again_after_the_restart() {
    let db = FreshDatabase::new();
    let (server, base) = serve(&db, &[]).await;
    let token = login(&base).await;
    // A size no other test uses: it names this camera's ffmpeg among the processes.
    let camera: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/cameras"))
        .bearer_auth(&token)
        .json(&json!({"name": "kill-test", "url": "synthetic://testsrc?size=176x144&rate=5"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = camera["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{camera}"))
        .to_owned();
    let started = reqwest::Client::new()
        .post(format!("{base}/api/v1/cameras/{id}/start"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let path = format!("/cameras/{id}");
    let before = read_until(&base, &token, &path, |c| c["status"] == "active").await;
    let revision = before["revision"].as_u64().unwrap();
    assert!(
        !processes_mentioning("176x144").is_empty(),
        "its ffmpeg runs"
    );
    drop(server); // SIGKILL: nothing is cleaned up by the server.
    // ffmpeg's next frame meets a closed pipe and it exits: no orphan decodes forever (a
    // bounded poll of the process table, which has nothing to wait on).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !processes_mentioning("176x144").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ffmpeg outlived its server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_server, base) = serve(&db, &[]).await;
    let token = login(&base).await;
    let again = read_until(&base, &token, &path, |c| {
        c["status"] == "active" && c["revision"].as_u64() > Some(revision)
    })
    .await;
    assert_eq!(again["runner"], "binary-runner", "{again}");
    // Said truthfully: connecting again after the restart, then active.
    let history = read_until(&base, &token, &format!("{path}/history"), |h| {
        h["data"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    let types: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    let last_active = types.iter().rposition(|t| *t == "CameraActive").unwrap();
    let first_active = types.iter().position(|t| *t == "CameraActive").unwrap();
    assert!(first_active < last_active, "active twice: {types:?}");
    assert!(
        types[first_active..last_active].contains(&"CameraConnecting"),
        "connecting after the restart: {types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "CameraClaimed").count(),
        1,
        "claimed once: {types:?}"
    );
}
