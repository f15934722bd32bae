//! Python environments through real HTTP, with real installs from PyPI: environments made by pip
//! and by uv, packages installed, listed, exported and uninstalled through operations whose
//! logs stream; every invalid field at once; names and ids; another organization's environment;
//! a cancelled install that leaves no backend process; a failed install that says why.
//!
//! uv must be installed (`.ci/run` installs it): its test fails, it is not skipped.

mod common;

use std::path::Path;
use std::time::Duration;

use atelier_http::server::{ServerConfig, VenvRunnerSettings, VenvSettings};
use common::{Client, TestApp};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A server running operations, its environments under `data_dir`.
fn config(data_dir: &Path) -> ServerConfig {
    let mut venvs = VenvSettings {
        data_dir: data_dir.to_owned(),
        runner: Some(VenvRunnerSettings {
            runner_id: "test-runner".to_owned(),
            concurrency: 4,
        }),
        ..Default::default()
    };
    venvs.backends.cache_dir = std::env::temp_dir().join("atelier-test-venvs-cache");
    ServerConfig {
        venvs,
        ..TestApp::config()
    }
}

impl Client<'_> {
    /// Follows an operation's stream until its end: its log lines, its progress events and the
    /// end's data.
    async fn follow(&self, operation: &str) -> (Vec<Value>, Vec<Value>, Value) {
        let res = self
            .send(
                Method::GET,
                &format!(
                    "/api/v1/operations/{operation}/stream?{}",
                    self.seen().await
                ),
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let mut stream = res.bytes_stream();
        let mut buf = String::new();
        let (mut lines, mut progress) = (Vec::new(), Vec::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            let chunk = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("the operation did not end in time")
                .expect("the stream ended without an end event");
            buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let kind = event
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("");
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or("null");
                match kind {
                    "log" => lines.push(serde_json::from_str(data).unwrap()),
                    "progress" => progress.push(serde_json::from_str(data).unwrap()),
                    "end" => return (lines, progress, serde_json::from_str(data).unwrap()),
                    _ => {}
                }
            }
        }
    }

    /// Creates an environment and waits until its operation ends; the environment.
    async fn made(&self, body: Value) -> Value {
        let created = self
            .json(
                Method::POST,
                "/api/v1/environments",
                Some(body),
                StatusCode::ACCEPTED,
            )
            .await;
        assert_eq!(created["status"], "creating", "{created}");
        let (_, _, end) = self.follow(created["operation_id"].as_str().unwrap()).await;
        assert_eq!(end["status"], "completed", "{end}");
        self.environment(created["id"].as_str().unwrap()).await
    }

    async fn environment(&self, id_or_name: &str) -> Value {
        self.json(
            Method::GET,
            &format!("/api/v1/environments/{id_or_name}?{}", self.seen().await),
            None,
            StatusCode::OK,
        )
        .await
    }
}

fn names(env: &Value) -> Vec<String> {
    env["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_ascii_lowercase())
        .collect()
}

/// The processes whose command line mentions `needle` (the backend of an environment).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

async fn a_package_goes_in_and_out_of_an_environment_made_with(backend: &str) {
    let data = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(config(data.path())).await;
    let c = Client::new(&app).await;
    let backends = c
        .json(Method::GET, "/api/v1/system/backends", None, StatusCode::OK)
        .await;
    let this = backends["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == backend)
        .unwrap();
    assert_eq!(
        this["available"], true,
        "{backend} must be installed for this test (.ci/run installs it): {this}"
    );
    let info = c
        .json(Method::GET, "/api/v1/system/info", None, StatusCode::OK)
        .await;
    assert!(
        info["pythons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["version"] == "3.11"),
        "{info}"
    );
    assert_eq!(info["data_dir"], data.path().display().to_string());
    let diagnostics = c
        .json(
            Method::GET,
            "/api/v1/system/diagnostics",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(diagnostics["healthy"], true, "{diagnostics}");
    for name in ["data_directory", "python", "backend_pip", "database"] {
        assert!(
            diagnostics["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == name && c["status"] == "pass"),
            "{name}: {diagnostics}"
        );
    }

    let env = c
        .made(json!({"name": format!("proj-{backend}"), "python_version": "3.11", "backend": backend, "packages": ["six"]}))
        .await;
    assert_eq!(env["status"], "ready", "{env}");
    assert!(
        env["python"].as_str().unwrap().starts_with("3.11."),
        "{env}"
    );
    assert!(names(&env).contains(&"six".to_owned()), "{env}");
    let id = env["id"].as_str().unwrap();
    // The environment is real: its own Python imports what was installed.
    let python = std::fs::read_dir(data.path())
        .unwrap()
        .flatten()
        .map(|org| org.path().join(id).join("bin").join("python"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no interpreter for {id} under {}", data.path().display()));
    let ran = std::process::Command::new(&python)
        .args(["-c", "import six; print(six.__version__)"])
        .output()
        .unwrap();
    assert!(ran.status.success(), "{ran:?}");

    // Installed by name, as the seed's clients address environments.
    let op = c
        .json(
            Method::POST,
            &format!("/api/v1/environments/proj-{backend}/packages"),
            Some(json!({"packages": ["idna==3.7"]})),
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(op["type"], "install");
    let (lines, progress, end) = c.follow(op["id"].as_str().unwrap()).await;
    assert_eq!(end["status"], "completed", "{end} {lines:?}");
    assert!(
        !lines.is_empty(),
        "the backend's output is the operation's log"
    );
    assert!(
        progress
            .iter()
            .any(|p| p["progress"].as_u64().is_some_and(|n| n > 0 && n < 100)),
        "{progress:?}"
    );
    assert_eq!(
        end["result"]["installed"],
        json!([{"name": "idna", "version": "3.7", "previous_version": null}]),
        "{end}"
    );
    let list = c
        .json(
            Method::GET,
            &format!("/api/v1/environments/{id}/packages?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        list["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "idna" && p["version"] == "3.7" && p["installed_at"].is_string()),
        "{list}"
    );
    let export = c
        .send(
            Method::GET,
            &format!("/api/v1/environments/{id}/export?{}", c.seen().await),
            None,
        )
        .await;
    assert_eq!(export.status(), StatusCode::OK);
    let text = export.text().await.unwrap();
    assert!(text.lines().any(|l| l == "idna==3.7"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("six==")), "{text}");

    // Uninstalled: the operation says what went away, the list no longer has it.
    let op = c
        .json(
            Method::DELETE,
            &format!("/api/v1/environments/{id}/packages/idna"),
            None,
            StatusCode::ACCEPTED,
        )
        .await;
    let (_, _, end) = c.follow(op["id"].as_str().unwrap()).await;
    assert_eq!(end["status"], "completed", "{end}");
    assert_eq!(
        end["result"]["uninstalled"],
        json!([{"name": "idna", "version": "3.7"}])
    );
    let env = c.environment(id).await;
    assert!(!names(&env).contains(&"idna".to_owned()), "{env}");

    // Activated: the organization's active environment, with how to use it.
    let activation = c
        .json(
            Method::POST,
            &format!("/api/v1/environments/{id}/activate"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(activation["environment"]["active"], true);
    assert!(
        activation["activation_command"]
            .as_str()
            .unwrap()
            .ends_with("/bin/activate"),
        "{activation}"
    );

    // Deleted: gone from the list, its directory removed (the runner waits on nothing else).
    c.json(
        Method::DELETE,
        &format!("/api/v1/environments/{id}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    c.json(
        Method::GET,
        &format!("/api/v1/environments/{id}"),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let list = c
        .json(
            Method::GET,
            &format!("/api/v1/environments?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["pagination"]["total"], 0, "{list}");
    app.stop().await;
}

#[actix_web::test]
async fn a_package_goes_in_and_out_of_an_environment_made_with_pip() {
    a_package_goes_in_and_out_of_an_environment_made_with("pip").await;
}

#[actix_web::test]
async fn a_package_goes_in_and_out_of_an_environment_made_with_uv() {
    a_package_goes_in_and_out_of_an_environment_made_with("uv").await;
}

#[actix_web::test]
async fn every_invalid_field_of_an_environment_is_reported_at_once_and_nothing_is_written() {
    let data = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(config(data.path())).await;
    let c = Client::new(&app).await;
    let problem = c
        .json(
            Method::POST,
            "/api/v1/environments",
            Some(json!({
                "name": "../etc",
                "python_version": "3.8",
                "backend": "conda",
                "packages": ["six", "-e .", "six; rm -rf /", "pkg @ https://example.com/p.whl", "./local"]
            })),
            StatusCode::BAD_REQUEST,
        )
        .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in ["name", "python_version", "backend"] {
        assert!(fields.contains(&field), "{field} not reported: {problem}");
    }
    assert_eq!(
        fields.iter().filter(|f| f.starts_with("packages")).count(),
        4,
        "each bad requirement named: {problem}"
    );
    let written: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_name LIKE 'environment-%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(written, 0);
    assert!(
        std::fs::read_dir(data.path()).unwrap().next().is_none(),
        "nothing on disk"
    );
    // An install's requirements are checked the same way, before anything is queued.
    let env = c.made(json!({"name": "plain", "backend": "pip"})).await;
    let problem = c
        .json(
            Method::POST,
            "/api/v1/environments/plain/packages",
            Some(json!({"packages": ["--index-url=http://evil.example", "$(id)"]})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2, "{problem}");
    let operations: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE stream_name LIKE 'operation-%' AND event_type = 'OperationQueued'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(operations, 1, "only the creation: {env}");
    app.stop().await;
}

#[actix_web::test]
async fn a_name_is_unique_in_its_organization_and_another_organizations_environment_is_not_found() {
    let data = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(config(data.path())).await;
    let c = Client::new(&app).await;
    let env = c.made(json!({"name": "shared", "backend": "pip"})).await;
    let id = env["id"].as_str().unwrap();
    c.json(
        Method::POST,
        "/api/v1/environments",
        Some(json!({"name": "SHARED", "backend": "pip"})),
        StatusCode::CONFLICT,
    )
    .await;
    let other = c
        .json(
            Method::POST,
            "/api/v1/organizations",
            Some(json!({"name": "Elsewhere"})),
            StatusCode::CREATED,
        )
        .await;
    let other = other["id"].as_str().unwrap();
    for path in [
        format!("/api/v1/environments/{id}"),
        "/api/v1/environments/shared".to_owned(),
        format!("/api/v1/environments/{id}/packages"),
        format!(
            "/api/v1/operations/{}",
            env["operation_id"].as_str().unwrap()
        ),
    ] {
        let res = app
            .client
            .get(app.url(&path))
            .bearer_auth(&c.token)
            .header("x-organization-id", other)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let res = app
        .client
        .post(app.url(&format!("/api/v1/environments/{id}/packages")))
        .bearer_auth(&c.token)
        .header("x-organization-id", other)
        .json(&json!({"packages": ["six"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[actix_web::test]
async fn a_failed_install_says_why_and_leaves_the_environment_as_it_was() {
    let data = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(config(data.path())).await;
    let c = Client::new(&app).await;
    let env = c.made(json!({"name": "steady", "backend": "pip"})).await;
    let before = names(&env);
    let op = c
        .json(
            Method::POST,
            "/api/v1/environments/steady/packages",
            Some(json!({"packages": ["atelier-no-such-package-xyz==1.0"]})),
            StatusCode::ACCEPTED,
        )
        .await;
    let (_, _, end) = c.follow(op["id"].as_str().unwrap()).await;
    assert_eq!(end["status"], "failed", "{end}");
    assert!(
        end["error"]
            .as_str()
            .unwrap()
            .contains("atelier-no-such-package-xyz"),
        "{end}"
    );
    let op = c
        .json(
            Method::GET,
            &format!(
                "/api/v1/operations/{}?{}",
                op["id"].as_str().unwrap(),
                c.seen().await
            ),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(op["failure"], "backend", "{op}");
    let env = c.environment("steady").await;
    assert_eq!(names(&env), before);
    assert_eq!(env["status"], "ready");
    app.stop().await;
}

#[actix_web::test]
async fn a_cancelled_install_is_recorded_and_leaves_no_backend_process() {
    // A package index on 127.0.0.1 that accepts connections and never answers: pip waits on it
    // for minutes, so the cancel finds it at work, whatever the machine's speed.
    let index = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = index.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in index.incoming().flatten() {
            held.push(conn);
        }
    });
    let data = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    config.venvs.backends.index_url = Some(format!("http://127.0.0.1:{port}/simple"));
    let app = TestApp::spawn_with(config).await;
    let c = Client::new(&app).await;
    let env = c.made(json!({"name": "halted", "backend": "pip"})).await;
    let id = env["id"].as_str().unwrap().to_owned();
    let op = c
        .json(
            Method::POST,
            "/api/v1/environments/halted/packages",
            Some(json!({"packages": ["six"]})),
            StatusCode::ACCEPTED,
        )
        .await;
    let op_id = op["id"].as_str().unwrap().to_owned();
    // pip's first line says which index it looks in: it is running.
    let res = c
        .send(
            Method::GET,
            &format!("/api/v1/operations/{op_id}/stream?{}", c.seen().await),
            None,
        )
        .await;
    let mut stream = res.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("Looking in indexes") {
        let chunk = tokio::time::timeout(Duration::from_secs(120), stream.next())
            .await
            .expect("pip said nothing in time")
            .expect("the stream ended")
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
        assert!(!seen.contains("event: end"), "it ended: {seen}");
    }
    drop(stream);
    assert!(
        !processes_mentioning(&id).is_empty(),
        "pip runs in the environment"
    );
    let cancelled = c
        .json(
            Method::DELETE,
            &format!("/api/v1/operations/{op_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let (_, _, end) = c.follow(&op_id).await;
    assert_eq!(end["status"], "cancelled", "{end}");
    let again = c
        .json(
            Method::DELETE,
            &format!("/api/v1/operations/{op_id}"),
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(again["code"], "OPERATION_FINISHED");
    // The environment's next operation (one that needs no index) runs once the cancelled one
    // is done with: by then its backend's process group is gone.
    let op = c
        .json(
            Method::DELETE,
            "/api/v1/environments/halted/packages/six",
            None,
            StatusCode::ACCEPTED,
        )
        .await;
    let (_, _, end) = c.follow(op["id"].as_str().unwrap()).await;
    assert_eq!(end["status"], "completed", "{end}");
    assert_eq!(processes_mentioning(&id), Vec::<String>::new());
    let env = c.environment("halted").await;
    assert_eq!(env["status"], "ready");
    assert!(!names(&env).contains(&"six".to_owned()), "{env}");
    app.stop().await;
}

/// The next text message of a WebSocket, as JSON, skipping heartbeats.
async fn next_message(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(120), socket.next())
            .await
            .expect("no message in time")
            .expect("the connection ended")
            .expect("the connection failed");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "heartbeat" {
                return value;
            }
        }
    }
}

#[actix_web::test]
async fn the_live_feed_speaks_gestvenv_to_a_client_subscribed_by_name_that_installs_a_package() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let data = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(config(data.path())).await;
    let c = Client::new(&app).await;
    let env = c
        .made(json!({"name": "my-project", "backend": "pip"}))
        .await;
    let id = env["id"].as_str().unwrap();
    // The seed's client: a token in the URL (browsers set no headers), then its subscribe.
    let url = format!(
        "{}/ws?access_token={}",
        app.base.replacen("http://", "ws://", 1),
        c.token
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_message(&mut socket).await["type"], "connected");
    socket
        .send(Message::text(
            json!({"type": "subscribe", "environment_id": "my-project"}).to_string(),
        ))
        .await
        .unwrap();
    let subscribed = next_message(&mut socket).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["channels"], json!([format!("environment:{id}")]));

    // A bad command is refused with a code; the connection stays.
    socket
        .send(Message::text(
            json!({"type": "package:install", "environment_id": "my-project", "package_name": "-e ."})
                .to_string(),
        ))
        .await
        .unwrap();
    let refused = next_message(&mut socket).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "VALIDATION_ERROR", "{refused}");

    socket
        .send(Message::text(
            json!({"type": "package:install", "environment_id": "my-project", "package_name": "six", "version": "1.16.0"})
                .to_string(),
        ))
        .await
        .unwrap();
    let answer = next_message(&mut socket).await;
    assert_eq!(answer["type"], "package:install", "{answer}");
    let operation_id = answer["operation_id"].as_str().unwrap().to_owned();

    let mut seen = Vec::new();
    let mut installed = None;
    while installed.is_none() || !seen.contains(&"operation:completed".to_owned()) {
        let m = next_message(&mut socket).await;
        let kind = m["type"].as_str().unwrap().to_owned();
        let data = &m["data"];
        match kind.as_str() {
            "operation:started" => {
                assert_eq!(data["operation_id"], json!(operation_id));
                assert_eq!(data["type"], "install");
                assert_eq!(data["environment_id"], json!(id));
            }
            "operation:progress" => {
                assert_eq!(data["operation_id"], json!(operation_id));
                assert!(
                    data["progress"].is_u64() && data["message"].is_string(),
                    "{m}"
                );
            }
            "operation:completed" => {
                assert_eq!(data["operation_id"], json!(operation_id));
                assert!(data["duration"].is_number(), "{m}");
                assert!(data["result"]["installed"].is_array(), "{m}");
            }
            "package:installed" => {
                assert_eq!(data["environment_id"], json!(id));
                installed = Some(data["package"].clone());
            }
            _ => {}
        }
        seen.push(kind);
    }
    let package = installed.unwrap();
    assert_eq!(package["name"], "six");
    assert_eq!(package["version"], "1.16.0");
    assert!(package["installed_at"].is_string());
    let started = seen.iter().position(|k| k == "operation:started").unwrap();
    let completed = seen
        .iter()
        .position(|k| k == "operation:completed")
        .unwrap();
    assert!(started < completed, "{seen:?}");
    assert!(seen.contains(&"operation:progress".to_owned()), "{seen:?}");

    // environment:refresh reads the packages again: an operation, answered with its id.
    socket
        .send(Message::text(
            json!({"type": "environment:refresh", "environment_id": "my-project"}).to_string(),
        ))
        .await
        .unwrap();
    let answer = next_message(&mut socket).await;
    assert_eq!(answer["type"], "environment:refresh", "{answer}");
    assert!(answer["operation_id"].is_string());

    // A deletion reaches the subscriber as GestVenv's environment:deleted.
    c.json(
        Method::DELETE,
        &format!("/api/v1/environments/{id}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    loop {
        let m = next_message(&mut socket).await;
        if m["type"] == "environment:deleted" {
            assert_eq!(m["data"]["environment_id"], json!(id));
            break;
        }
    }
    app.stop().await;
}

/// Waits (on the log itself, not on time) for an event of this type on an environment's stream.
async fn environment_event(app: &TestApp, id: &str, event_type: &str) {
    use atelier_store::{EventStore, Filter, SubscribeFrom, SubscriptionMessage};
    let stream = format!("environment-{id}");
    let mut sub = app.store.subscribe_all(
        SubscribeFrom::Start,
        Filter::Category(vec!["environment".to_owned()]),
    );
    let wait = async {
        while let Some(m) = sub.next().await {
            if let SubscriptionMessage::Event(e) = m
                && e.stream.as_str() == stream
                && e.event_type == event_type
            {
                return;
            }
        }
        panic!("the subscription ended");
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("no {event_type} for {id}"));
    app.settle().await;
}

#[actix_web::test]
async fn an_ephemeral_environment_expires_on_time_with_its_event_and_cleanup_all_deletes_the_rest()
{
    let data = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(config(data.path())).await;
    let c = Client::new(&app).await;
    let bad = c
        .json(
            Method::POST,
            "/api/v1/ephemeral/environments",
            Some(json!({"name": "x", "ttl": 0, "isolation_level": "vm", "backend": "pip"})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["ttl", "isolation_level"], "{bad}");

    let short = c
        .json(
            Method::POST,
            "/api/v1/ephemeral/environments",
            Some(json!({"name": "short-lived", "ttl": 3, "backend": "pip", "isolation_level": "process"})),
            StatusCode::ACCEPTED,
        )
        .await;
    let id = short["id"].as_str().unwrap().to_owned();
    assert_eq!(short["ephemeral"]["ttl"], 3, "{short}");
    let expires_at: chrono::DateTime<chrono::Utc> = short["ephemeral"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    environment_event(&app, &id, "EnvironmentExpired").await;
    assert!(chrono::Utc::now() >= expires_at, "not before its time");
    c.json(
        Method::GET,
        "/api/v1/environments/short-lived",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let stats = c
        .json(
            Method::GET,
            &format!("/api/v1/ephemeral/stats?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(stats["expired"], 1, "{stats}");
    assert_eq!(stats["active"], 0, "{stats}");

    // Two that would live an hour: the cleanup deletes both; lasting environments stay.
    let lasting = c.made(json!({"name": "lasting", "backend": "pip"})).await;
    for name in ["e1", "e2"] {
        c.json(
            Method::POST,
            "/api/v1/ephemeral/environments",
            Some(json!({"name": name, "ttl": 3600, "backend": "pip"})),
            StatusCode::ACCEPTED,
        )
        .await;
    }
    let listed = c
        .json(
            Method::GET,
            &format!("/api/v1/ephemeral/environments?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(listed["pagination"]["total"], 2, "{listed}");
    let cleaned = c
        .json(
            Method::DELETE,
            &format!("/api/v1/ephemeral/cleanup-all?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(cleaned["deleted"], 2, "{cleaned}");
    c.json(
        Method::DELETE,
        &format!(
            "/api/v1/ephemeral/environments/{}",
            lasting["id"].as_str().unwrap()
        ),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(c.environment("lasting").await["status"], "ready");

    // The expired environment's directory goes once its runner is done with it: a bounded poll
    // of the disk (the removal records no event to wait on).
    let dir = std::fs::read_dir(data.path())
        .unwrap()
        .flatten()
        .map(|org| org.path().join(&id))
        .next()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} stayed",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[actix_web::test]
async fn the_cache_downloads_wheels_travels_as_an_archive_to_another_server_and_feeds_its_installs()
{
    let data = tempfile::tempdir().unwrap();
    let caches = tempfile::tempdir().unwrap();
    let mut first = config(data.path());
    first.venvs.backends.cache_dir = caches.path().join("first");
    let app = TestApp::spawn_with(first).await;
    let c = Client::new(&app).await;
    let bad = c
        .json(
            Method::POST,
            "/api/v1/cache/packages",
            Some(json!({"packages": ["--pre"], "python_version": "3.8"})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(bad["errors"].as_array().unwrap().len(), 2, "{bad}");
    let op = c
        .json(
            Method::POST,
            "/api/v1/cache/packages",
            Some(json!({"packages": ["six==1.16.0"], "python_version": "3.11"})),
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(op["type"], "cache_packages");
    let (_, _, end) = c.follow(op["id"].as_str().unwrap()).await;
    assert_eq!(end["status"], "completed", "{end}");
    let info = c
        .json(Method::GET, "/api/v1/cache", None, StatusCode::OK)
        .await;
    assert!(
        info["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("six-1.16.0-")),
        "{info}"
    );
    let res = c
        .send(Method::GET, "/api/v1/cache/export?format=tar.gz", None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/gzip");
    let archive = res.bytes().await.unwrap();
    assert_eq!(&archive[..2], &[0x1f, 0x8b], "a gzip stream");
    c.json(
        Method::GET,
        "/api/v1/cache/export?format=zip",
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let cleared = c
        .json(Method::DELETE, "/api/v1/cache", None, StatusCode::OK)
        .await;
    assert!(cleared["freed_bytes"].as_u64().unwrap() > 0, "{cleared}");
    let empty = c
        .json(Method::GET, "/api/v1/cache", None, StatusCode::OK)
        .await;
    assert_eq!(empty["file_count"], 0, "{empty}");
    app.stop().await;

    // Another server, whose package index does not answer (a closed port on 127.0.0.1): what
    // it installs comes from the imported cache.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut second = config(data.path());
    second.venvs.backends.cache_dir = caches.path().join("second");
    second.venvs.backends.index_url = Some(format!("http://127.0.0.1:{port}/simple"));
    let app = TestApp::spawn_with(second).await;
    let c = Client::new(&app).await;
    let import = |body: Vec<u8>, content_type: &'static str| {
        let req = app
            .client
            .post(app.url("/api/v1/cache/import"))
            .bearer_auth(&c.token)
            .header("content-type", content_type)
            .body(body);
        async move { req.send().await.unwrap() }
    };
    let refused = import(b"not an archive".to_vec(), "application/gzip").await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "INVALID_ARCHIVE", "{problem}");
    let refused = import(archive.to_vec(), "application/json").await;
    assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let empty = c
        .json(Method::GET, "/api/v1/cache", None, StatusCode::OK)
        .await;
    assert_eq!(empty["file_count"], 0, "nothing written: {empty}");
    let imported = import(archive.to_vec(), "application/gzip").await;
    assert_eq!(imported.status(), StatusCode::OK);
    let imported: Value = imported.json().await.unwrap();
    assert_eq!(
        imported["cache"]["package_count"], info["package_count"],
        "{imported}"
    );

    let env = c.made(json!({"name": "offline", "backend": "pip"})).await;
    let op = c
        .json(
            Method::POST,
            "/api/v1/environments/offline/packages",
            Some(json!({"packages": ["six==1.16.0"]})),
            StatusCode::ACCEPTED,
        )
        .await;
    let (lines, _, end) = c.follow(op["id"].as_str().unwrap()).await;
    assert_eq!(end["status"], "completed", "{end} {lines:?}");
    let env = c.environment(env["id"].as_str().unwrap()).await;
    assert!(names(&env).contains(&"six".to_owned()), "{env}");
    app.stop().await;
}

/// GestVenv's Python client, as its documentation gives it (only the base URL and a token are
/// set by the caller).
const SEED_PYTHON_CLIENT: &str = r#"
import requests
import json

# Client API simple
class GestVenvAPI:
    def __init__(self, base_url="http://localhost:8000/api/v1"):
        self.base_url = base_url
        self.session = requests.Session()
    
    def create_environment(self, name, python_version="3.11", backend="uv"):
        response = self.session.post(
            f"{self.base_url}/environments",
            json={
                "name": name,
                "python_version": python_version,
                "backend": backend
            }
        )
        return response.json()
    
    def install_packages(self, env_id, packages):
        response = self.session.post(
            f"{self.base_url}/environments/{env_id}/packages",
            json={"packages": packages}
        )
        return response.json()
"#;

/// GestVenv's JavaScript WebSocket client, as its documentation gives it.
const SEED_JS_CLIENT: &str = r#"
class GestVenvWebSocket {
    constructor(url = 'ws://localhost:8000/ws') {
        this.url = url;
        this.ws = null;
        this.handlers = new Map();
        this.reconnectDelay = 1000;
        this.maxReconnectDelay = 30000;
    }
    
    connect() {
        this.ws = new WebSocket(this.url);
        
        this.ws.onopen = () => {
            console.log('WebSocket connected');
            this.reconnectDelay = 1000;
            this.emit('connected');
        };
        
        this.ws.onmessage = (event) => {
            const message = JSON.parse(event.data);
            this.emit(message.type, message.data);
        };
        
        this.ws.onerror = (error) => {
            console.error('WebSocket error:', error);
            this.emit('error', error);
        };
        
        this.ws.onclose = () => {
            console.log('WebSocket disconnected');
            this.emit('disconnected');
            this.reconnect();
        };
    }
    
    reconnect() {
        setTimeout(() => {
            console.log('Reconnecting...');
            this.connect();
            this.reconnectDelay = Math.min(
                this.reconnectDelay * 2, 
                this.maxReconnectDelay
            );
        }, this.reconnectDelay);
    }
    
    send(message) {
        if (this.ws?.readyState === WebSocket.OPEN) {
            this.ws.send(JSON.stringify(message));
        }
    }
    
    on(event, handler) {
        if (!this.handlers.has(event)) {
            this.handlers.set(event, []);
        }
        this.handlers.get(event).push(handler);
    }
    
    emit(event, data) {
        const handlers = this.handlers.get(event) || [];
        handlers.forEach(handler => handler(data));
    }
    
    subscribe(environmentId) {
        this.send({
            type: 'subscribe',
            environment_id: environmentId
        });
    }
}
"#;

#[actix_web::test]
async fn the_seeds_python_and_javascript_clients_work_with_only_the_base_url_and_a_token_changed() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let data = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(config(data.path())).await;
    let c = Client::new(&app).await;
    let scripts = tempfile::tempdir().unwrap();
    // Run as a child the server's threads do not wait on (the test's own runtime serves it).
    let python = async |usage: &str| {
        let script = scripts.path().join("client.py");
        std::fs::write(
            &script,
            format!(
                "{SEED_PYTHON_CLIENT}\napi = GestVenvAPI(base_url={:?})\napi.session.headers['Authorization'] = 'Bearer {}'\n{usage}\n",
                app.url("/api/v1"),
                c.token
            ),
        )
        .unwrap();
        let out = tokio::process::Command::new("python3")
            .arg(&script)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "the seed's Python client (python3 with requests) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        serde_json::from_str::<Value>(text.trim()).unwrap_or_else(|_| panic!("{text}"))
    };
    // The seed's usage: create, then install at once (the install waits for the creation).
    let env = python(r#"print(json.dumps(api.create_environment("test-project")))"#).await;
    assert_eq!(env["name"], "test-project", "{env}");
    assert_eq!(env["backend"], "uv");
    let id = env["id"].as_str().unwrap().to_owned();

    // The JavaScript client, subscribed by name, hears the install.
    let js = scripts.path().join("client.mjs");
    let ws_url = format!(
        "{}/ws?access_token={}",
        app.base.replacen("http://", "ws://", 1),
        c.token
    );
    std::fs::write(
        &js,
        format!(
            "{SEED_JS_CLIENT}\nconst ws = new GestVenvWebSocket({ws_url:?});\nws.connect();\n\
             ws.on('connected', () => {{ ws.subscribe('test-project'); }});\n\
             ws.on('subscribed', () => {{ console.log('READY'); }});\n\
             ws.on('package:installed', (data) => {{\n    console.log(`Package ${{data.package.name}} installed!`);\n}});\n"
        ),
    )
    .unwrap();
    let mut node = Command::new("node")
        .arg("--experimental-websocket")
        .arg(&js)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node must be installed for this test");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("the JavaScript client said nothing in time")
            .expect("the JavaScript client ended")
    };
    while next_line().await != "READY" {}
    let result = python(&format!(
        r#"print(json.dumps(api.install_packages({id:?}, ["six", "idna"])))"#
    ))
    .await;
    assert_eq!(result["type"], "install", "{result}");
    let mut heard = Vec::new();
    while heard.len() < 2 {
        let line = next_line().await;
        if let Some(name) = line
            .strip_prefix("Package ")
            .and_then(|l| l.strip_suffix(" installed!"))
        {
            heard.push(name.to_owned());
        }
    }
    heard.sort();
    assert_eq!(heard, ["idna", "six"]);
    let _ = node.kill();
    let _ = node.wait();
    // The seed's usage in one go: the install is queued while the environment is being made,
    // and runs once it is.
    let op = python(
        r#"env = api.create_environment("quick")
print(json.dumps(api.install_packages(env["id"], ["six"])))"#,
    )
    .await;
    assert_eq!(op["type"], "install", "{op}");
    assert_eq!(op["status"], "queued", "{op}");
    let (_, _, end) = c.follow(op["id"].as_str().unwrap()).await;
    assert_eq!(end["status"], "completed", "{end}");
    assert!(names(&c.environment("quick").await).contains(&"six".to_owned()));
    let env = c.environment(&id).await;
    assert!(names(&env).contains(&"six".to_owned()), "{env}");
    app.stop().await;
}

#[actix_web::test]
async fn an_ephemeral_environment_due_while_no_worker_ran_is_expired_when_one_starts() {
    let data = tempfile::tempdir().unwrap();
    let config = config(data.path());
    let settings = config.venvs.runner.clone().unwrap();
    let app = TestApp::spawn_with(config).await;
    let c = Client::new(&app).await;
    // No worker runs (as after a crash): the environment's time comes and goes unnoticed.
    app.services.stop_workers().await;
    let e = c
        .json(
            Method::POST,
            "/api/v1/ephemeral/environments",
            Some(json!({"name": "overdue", "ttl": 1, "backend": "pip"})),
            StatusCode::ACCEPTED,
        )
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    app.settle().await;
    // A worker starting now finds it in the read model and expires it.
    let expiry = atelier_http::venvs::runner::start_expiry(&app.services, &settings);
    app.services.add_worker(Box::new(expiry)).await;
    environment_event(&app, &id, "EnvironmentExpired").await;
    c.json(
        Method::GET,
        &format!("/api/v1/environments/{id}"),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.stop().await;
}
