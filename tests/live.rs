//! The live feed through real connections: WebSocket clients (tokio-tungstenite) and SSE
//! clients (reqwest) against a server on port 0.
//!
//! No test sleeps to wait for delivery: they wait for messages (each read bounded by a timeout so
//! a failure cannot hang) or for the hub to have dispatched a position.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use atelier_http::server::{BuildSettings, DriverSettings, ServerConfig};
use atelier_store::{EventData, EventStore, ExpectedRevision, Position, StreamName};
use common::TestApp;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// The longest any single message may take to arrive before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

struct Ws<S> {
    socket: WebSocketStream<S>,
}

type Plain = MaybeTlsStream<TcpStream>;

fn ws_url(app: &TestApp, query: &str) -> String {
    format!("{}/ws{query}", app.base.replacen("http://", "ws://", 1))
}

fn with_token(
    url: &str,
    token: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

impl Ws<Plain> {
    /// Connects with the token in the `Authorization` header and reads `connected`.
    async fn connect(app: &TestApp, token: &str, query: &str) -> (Self, Value) {
        let (socket, _) =
            tokio_tungstenite::connect_async(with_token(&ws_url(app, query), Some(token)))
                .await
                .unwrap();
        let mut ws = Ws { socket };
        let connected = ws.recv().await;
        assert_eq!(connected["type"], "connected", "{connected}");
        (ws, connected)
    }

    /// Connects without credentials.
    async fn anonymous(app: &TestApp, query: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(ws_url(app, query))
            .await
            .unwrap();
        Ws { socket }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Ws<S> {
    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
    }

    /// The next text message, as JSON (answering nothing itself: tungstenite answers pings).
    async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("no message in time")
                .expect("the connection ended")
                .expect("the connection failed");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// The next event (skipping heartbeats).
    async fn event(&mut self) -> Value {
        loop {
            let m = self.recv().await;
            if m["type"] != "heartbeat" {
                assert!(m["position"].is_string(), "not an event: {m}");
                return m;
            }
        }
    }

    /// Subscribes and reads the answer.
    async fn subscribe(&mut self, message: Value) -> Value {
        self.send(message).await;
        let answer = self.recv().await;
        assert_eq!(answer["type"], "subscribed", "{answer}");
        answer
    }

    /// Reads until the server closes; the close code and the text messages before it.
    async fn closed(&mut self) -> (u16, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("no close in time");
            match message {
                Some(Ok(Message::Text(text))) => before.push(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    return (frame.map_or(1005, |f| u16::from(f.code)), before);
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return (1006, before),
            }
        }
    }
}

fn position(message: &Value) -> Position {
    message["position"].as_str().unwrap().parse().unwrap()
}

async fn create_project(app: &TestApp, token: &str, name: &str) -> (Uuid, Position) {
    let res = app
        .client
        .post(app.url("/api/v1/projects"))
        .bearer_auth(token)
        .json(&json!({"name": name, "repo": "https://example.com/r.git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let at: Position = res.headers()["atelier-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = res.json().await.unwrap();
    (body["id"].as_str().unwrap().parse().unwrap(), at)
}

/// Appends events for `org` straight to the store (organizations cannot be created through the
/// API yet), one stream and one append per event; returns their positions.
async fn append_for(app: &TestApp, org: Uuid, category: &str, data: Value) -> Position {
    append_many(app, org, category, vec![data]).await[0]
}

/// Appends these events for `org` in one append to a new stream; returns their positions.
async fn append_many(app: &TestApp, org: Uuid, category: &str, data: Vec<Value>) -> Vec<Position> {
    let stream = StreamName::new(format!("{category}-{}", Uuid::now_v7())).unwrap();
    let events: Vec<_> = data
        .into_iter()
        .map(|d| EventData::new("ProjectCreated", d).with_metadata(json!({ "org_id": org })))
        .collect();
    let n = events.len();
    app.store
        .append(&stream, ExpectedRevision::NoStream, events)
        .await
        .unwrap();
    let recorded = app
        .store
        .read_stream(&stream, atelier_store::ReadStream::forward())
        .await
        .unwrap();
    assert_eq!(recorded.len(), n);
    recorded.iter().map(|e| e.position).collect()
}

#[actix_web::test]
async fn a_subscriber_to_a_project_sees_its_build_go_from_queued_to_finished_live() {
    let app = TestApp::spawn_with(ServerConfig {
        builds: Some(BuildSettings {
            runner_id: "live-test".to_owned(),
            concurrency: 2,
            driver: DriverSettings::Simulated {
                time_scale: 0.001,
                failure_rate: 0.0,
            },
        }),
        ..TestApp::config()
    })
    .await;
    let token = app.token().await;
    let (project, _) = create_project(&app, &token, "watched").await;
    let (other, _) = create_project(&app, &token, "not-watched").await;
    let (mut ws, _) = Ws::connect(&app, &token, "").await;
    // GestVenv's form: `{type:"subscribe", <resource>_id}`.
    let answer = ws
        .subscribe(json!({"type": "subscribe", "project_id": project}))
        .await;
    assert_eq!(answer["channels"], json!([format!("project:{project}")]));
    for id in [other, project] {
        let res = app
            .client
            .post(app.url(&format!("/api/v1/projects/{id}/build")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
    let mut kinds = Vec::new();
    let mut last = Position::START;
    while kinds.last().map(String::as_str) != Some("build:succeeded") {
        let event = ws.event().await;
        assert!(position(&event) > last, "positions must increase: {event}");
        last = position(&event);
        if event["stream"] == format!("project-{project}") {
            // "From now" is from the hub's position, which may be just before the project's
            // creation: the project's own events are on the channel too.
            continue;
        }
        assert_eq!(
            event["stream"].as_str().unwrap().split_once('-').unwrap().0,
            "build"
        );
        kinds.push(event["type"].as_str().unwrap().to_owned());
        if event["type"] == "build:queued" {
            assert_eq!(
                event["data"]["project_id"],
                json!(project),
                "another project's build"
            );
            assert_eq!(event["event_type"], "BuildQueued");
            assert!(event["event_id"].is_string() && event["occurred_at"].is_string());
            assert!(event["revision"].is_u64());
        }
    }
    assert_eq!(kinds, ["build:queued", "build:started", "build:succeeded"]);
    app.stop().await;
}

#[actix_web::test]
async fn events_arrive_in_log_order_with_strictly_increasing_positions() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let (mut ws, connected) = Ws::connect(&app, &token, "?channels=category:project").await;
    assert_eq!(connected["channels"], json!(["category:project"]));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = app.client.clone();
            let url = app.url("/api/v1/projects");
            let token = token.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let res = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"name": format!("p-{w}-{i}"), "repo": "https://example.com/r.git"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 201);
                }
            })
        })
        .collect();
    let mut names = HashSet::new();
    let mut last = Position::START;
    while names.len() < 80 {
        let event = ws.event().await;
        assert_eq!(event["type"], "project:created");
        assert!(
            position(&event) > last,
            "{} after {last}",
            event["position"]
        );
        last = position(&event);
        assert!(names.insert(event["data"]["name"].as_str().unwrap().to_owned()));
    }
    for w in writers {
        w.await.unwrap();
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_client_that_reconnects_with_its_last_position_gets_exactly_the_events_it_missed() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let (mut ws, _) = Ws::connect(&app, &token, "").await;
    ws.subscribe(json!({"type": "subscribe", "channels": ["category:project"]}))
        .await;
    for i in 0..5 {
        create_project(&app, &token, &format!("before-{i}")).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(ws.event().await);
    }
    let resume = position(seen.last().unwrap());
    drop(ws);
    // Writes go on while the client is away and while it reconnects.
    for i in 0..7 {
        create_project(&app, &token, &format!("away-{i}")).await;
    }
    let writer = {
        let client = app.client.clone();
        let url = app.url("/api/v1/projects");
        let token = token.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                let res = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"name": format!("during-{i}"), "repo": "https://example.com/r.git"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
            }
        })
    };
    let (mut ws, _) = Ws::connect(
        &app,
        &token,
        &format!("?channels=category:project&from_position={resume}"),
    )
    .await;
    let mut names = Vec::new();
    let mut last = resume;
    while names.len() < 27 {
        let event = ws.event().await;
        assert!(
            position(&event) > last,
            "a duplicate or a reorder at {}",
            event["position"]
        );
        last = position(&event);
        names.push(event["data"]["name"].as_str().unwrap().to_owned());
    }
    writer.await.unwrap();
    let mut expected: Vec<String> = (0..7).map(|i| format!("away-{i}")).collect();
    expected.extend((0..20).map(|i| format!("during-{i}")));
    assert_eq!(names, expected, "exactly the missed events, in order");
    // Nothing more: the next thing on the connection is the project created now.
    create_project(&app, &token, "after").await;
    assert_eq!(ws.event().await["data"]["name"], "after");
    app.stop().await;
}

#[actix_web::test]
async fn another_organization_sees_none_of_the_first_ones_events() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let (mut ws, connected) = Ws::connect(&app, &token, "?channels=*").await;
    let own: Uuid = connected["organization_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let stranger = Uuid::now_v7();
    let start = app.last_written().await.unwrap_or(Position::START);
    let mut foreign = Vec::new();
    for i in 0..5 {
        foreign.push(
            append_for(
                &app,
                stranger,
                "project",
                json!({"name": format!("theirs-{i}")}),
            )
            .await,
        );
    }
    let mine = append_for(&app, own, "project", json!({"name": "mine"})).await;
    // Its event comes after theirs in the log: receiving it first proves theirs were skipped.
    let event = ws.event().await;
    assert_eq!(event["data"]["name"], "mine");
    assert_eq!(position(&event), mine);
    // Catching up from the log is filtered the same way.
    let (mut again, _) =
        Ws::connect(&app, &token, &format!("?channels=*&from_position={start}")).await;
    assert_eq!(again.event().await["data"]["name"], "mine");
    assert!(foreign.iter().all(|p| *p < mine));
    app.stop().await;
}

#[actix_web::test]
async fn a_stream_category_no_context_declared_public_never_reaches_a_subscriber() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let (mut ws, connected) = Ws::connect(&app, &token, "?channels=*").await;
    let own: Uuid = connected["organization_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let start = app.last_written().await.unwrap_or(Position::START);
    // A category no context declares (as a new context's would be before it says otherwise),
    // and private ones of identity and the command layer, all in the subscriber's organization.
    let mut private = Vec::new();
    for category in ["invoice", "session", "apikey", "reservation"] {
        private.push(append_for(&app, own, category, json!({"name": category})).await);
    }
    let public = append_for(&app, own, "project", json!({"name": "public"})).await;
    // The public event comes after the others in the log: receiving it first proves they were
    // not sent, live or when catching up. (Events from before the test's first append, like the
    // first start's organization, may still reach a subscriber that joined while the log's head
    // lagged behind another database's open transaction: they are not the test's.)
    let event = loop {
        let event = ws.event().await;
        if position(&event) > start {
            break event;
        }
    };
    assert_eq!(event["data"]["name"], "public", "{event}");
    assert_eq!(position(&event), public);
    let (mut again, _) =
        Ws::connect(&app, &token, &format!("?channels=*&from_position={start}")).await;
    assert_eq!(again.event().await["data"]["name"], "public");
    assert!(private.iter().all(|p| *p < public));
    app.stop().await;
}

#[actix_web::test]
async fn two_organizations_created_through_the_api_each_hear_only_their_own_events() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let post = |path: &'static str, body: Value| {
        let req = app
            .client
            .post(app.url(path))
            .bearer_auth(&root)
            .json(&body);
        async move {
            let res = req.send().await.unwrap();
            assert!(res.status().is_success(), "{path}: {}", res.status());
            res.json::<Value>().await.unwrap()
        }
    };
    let beta = post("/api/v1/organizations", json!({"name": "Beta"})).await;
    let beta_id = beta["id"].as_str().unwrap().to_owned();
    post(
        "/api/v1/users",
        json!({"username": "bea", "email": "bea@example.com", "password": "long enough",
               "organization_id": beta_id, "role": "member"}),
    )
    .await;
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "bea", "password": "long enough"}))
        .send()
        .await
        .unwrap();
    let bea: Value = res.json().await.unwrap();
    let bea = bea["access_token"].as_str().unwrap().to_owned();

    let (mut theirs, connected) = Ws::connect(&app, &bea, "?channels=*").await;
    assert_eq!(connected["organization_id"], beta_id.as_str());
    let (mut ours, _) = Ws::connect(&app, &root, "?channels=*").await;
    // The superadmin may follow Beta by naming it; a member of Beta may not follow another.
    let (mut crossing, connected) = Ws::connect(
        &app,
        &root,
        &format!("?channels=*&organization_id={beta_id}"),
    )
    .await;
    assert_eq!(connected["organization_id"], beta_id.as_str());
    let default_org = {
        let (_, c) = Ws::connect(&app, &root, "").await;
        c["organization_id"].as_str().unwrap().to_owned()
    };
    match tokio_tungstenite::connect_async(with_token(
        &ws_url(&app, &format!("?organization_id={default_org}")),
        Some(&bea),
    ))
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404);
        }
        other => panic!("expected a 404, got {other:?}"),
    }

    create_project(&app, &root, "ours").await;
    create_project(&app, &bea, "theirs").await;
    create_project(&app, &root, "ours-again").await;
    // Beta's connections hear Beta's project only; the default organization's, its own only.
    assert_eq!(theirs.event().await["data"]["name"], "theirs");
    assert_eq!(crossing.event().await["data"]["name"], "theirs");
    assert_eq!(ours.event().await["data"]["name"], "ours");
    assert_eq!(ours.event().await["data"]["name"], "ours-again");
    create_project(&app, &bea, "theirs-again").await;
    assert_eq!(theirs.event().await["data"]["name"], "theirs-again");
    app.stop().await;
}

#[actix_web::test]
async fn a_logout_or_a_revoked_key_closes_the_live_connections_that_used_them() {
    let app = TestApp::spawn().await;
    let login: Value = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": common::ADMIN, "password": common::PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let other = app.token().await;
    let (mut ws, _) = Ws::connect(&app, &token, "?channels=*").await;
    let (mut untouched, _) = Ws::connect(&app, &other, "?channels=*").await;
    // A key's connection, on the WebSocket (header) and over SSE.
    let key: Value = app
        .client
        .post(app.url("/api/v1/api-keys"))
        .bearer_auth(&other)
        .json(&json!({"name": "watcher", "scopes": ["read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut request = ws_url(&app, "?channels=*").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("api-key", key["key"].as_str().unwrap().parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut keyed = Ws { socket };
    assert_eq!(keyed.recv().await["type"], "connected");
    let mut sse = app
        .client
        .get(app.url("/api/v1/stream"))
        .header("api-key", key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);

    let res = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (code, _) = ws.closed().await;
    assert_eq!(code, 4401, "the logged-out session's connection closes");
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/api-keys/{}", key["id"].as_str().unwrap())))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        keyed.closed().await.0,
        4401,
        "the revoked key's connection closes"
    );
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(PATIENCE, sse.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("event: error") && text.contains("UNAUTHORIZED"),
        "{text}"
    );
    // The other session still hears events. (Earlier ones may come first: the connection
    // starts at the log's readable end, which a transaction open elsewhere on the PostgreSQL
    // server holds back, so the bootstrap's events can still be ahead of it.)
    create_project(&app, &other, "still-here").await;
    loop {
        let event = untouched.event().await;
        if event["type"] == "project:created" {
            assert_eq!(event["data"]["name"], "still-here");
            break;
        }
    }
    app.stop().await;
}

#[actix_web::test]
async fn bad_or_missing_credentials_are_refused_before_the_upgrade_or_with_close_code_4401() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    // A bad token in the header or the query: 401 before the upgrade.
    for request in [
        with_token(&ws_url(&app, ""), Some("not-a-token")),
        with_token(&ws_url(&app, "?access_token=not-a-token"), None),
    ] {
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401);
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
                assert_eq!(body["code"], "UNAUTHORIZED");
            }
            other => panic!("expected a 401, got {other:?}"),
        }
    }
    // A good token in the query is accepted.
    let (socket, _) =
        tokio_tungstenite::connect_async(ws_url(&app, &format!("?access_token={token}")))
            .await
            .unwrap();
    let mut ws = Ws { socket };
    assert_eq!(ws.recv().await["type"], "connected");
    // No token: the first message must authenticate.
    let mut ws = Ws::anonymous(&app, "").await;
    ws.send(json!({"type": "subscribe", "channels": ["*"]}))
        .await;
    assert_eq!(ws.closed().await.0, 4401);
    let mut ws = Ws::anonymous(&app, "").await;
    ws.send(json!({"type": "auth", "token": "forged"})).await;
    assert_eq!(ws.closed().await.0, 4401);
    let mut ws = Ws::anonymous(&app, "").await;
    ws.send(json!({"type": "auth", "token": token})).await;
    assert_eq!(ws.recv().await["type"], "connected");
    // The SSE twin refuses the same way.
    let res = app
        .client
        .get(app.url("/api/v1/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    app.stop().await;
}

#[actix_web::test]
async fn a_client_that_never_authenticates_is_closed_with_4401() {
    let mut config = TestApp::config();
    config.http.live.auth_timeout = Duration::from_millis(200);
    let app = TestApp::spawn_with(config).await;
    let mut ws = Ws::anonymous(&app, "").await;
    assert_eq!(ws.closed().await.0, 4401);
    app.stop().await;
}

#[actix_web::test]
async fn malformed_and_unknown_messages_get_an_error_and_the_connection_stays() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let (mut ws, _) = Ws::connect(&app, &token, "").await;
    for (message, code) in [
        ("not json".to_owned(), "MALFORMED_MESSAGE"),
        (json!({"no": "type"}).to_string(), "MALFORMED_MESSAGE"),
        (
            json!({"type": "camera:start", "camera_id": "c1"}).to_string(),
            "UNKNOWN_MESSAGE_TYPE",
        ),
        // A context's command, about something that is not there: its problem's code.
        (
            json!({"type": "environment:refresh", "environment_id": "e"}).to_string(),
            "NOT_FOUND",
        ),
        (
            json!({"type": "subscribe", "channels": ["Not A Channel"]}).to_string(),
            "INVALID_CHANNEL",
        ),
        (
            json!({"type": "subscribe", "channels": ["*"], "from_position": "yesterday"})
                .to_string(),
            "INVALID_POSITION",
        ),
    ] {
        ws.socket.send(Message::text(message)).await.unwrap();
        let answer = ws.recv().await;
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["code"], code, "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.socket
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(ws.recv().await["code"], "UNSUPPORTED_MESSAGE");
    ws.send(json!({"type": "ping", "timestamp": 1234567890}))
        .await;
    let pong = ws.recv().await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["timestamp"], 1234567890);
    // Still subscribed to nothing: a subscription now works.
    ws.subscribe(json!({"type": "subscribe", "channels": ["category:project"]}))
        .await;
    create_project(&app, &token, "still-here").await;
    assert_eq!(ws.event().await["data"]["name"], "still-here");
    // Too large: closed with 1009.
    let huge = "x".repeat(app.config.http.live.max_message_bytes + 1);
    ws.send(json!({"type": "ping", "timestamp": huge})).await;
    assert_eq!(ws.closed().await.0, 1009);
    app.stop().await;
}

#[actix_web::test]
async fn a_client_too_slow_for_its_queue_is_told_where_to_resume_and_closed_with_4008() {
    let mut config = TestApp::config();
    config.http.live.queue = 20;
    // The client does not read while the events are written: the server must not give up on it
    // for that (it would drop it without a word, which is not what this test is about).
    config.http.live.send_timeout = Duration::from_secs(600);
    let app = TestApp::spawn_with(config).await;
    let token = app.token().await;
    // A client that reads slowly: a small receive buffer, and it does not read at all at first.
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (socket, _) = tokio_tungstenite::client_async(
        with_token(&ws_url(&app, "?channels=category:project"), Some(&token)),
        tcp,
    )
    .await
    .unwrap();
    let mut ws = Ws { socket };
    let connected = ws.recv().await;
    let org: Uuid = connected["organization_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // 16 MB of events (in a category the live feed sends: others are private) far more than
    // the socket buffers and the queue hold.
    let padding = "p".repeat(16 * 1024);
    let mut written = Vec::new();
    for batch in 0..20 {
        let data = (0..50)
            .map(|i| json!({"i": batch * 50 + i, "padding": padding}))
            .collect();
        written.extend(append_many(&app, org, "project", data).await);
    }
    let last = *written.last().unwrap();
    assert!(app.services.live.wait_for(last, PATIENCE).await);
    let (code, before) = ws.closed().await;
    assert_eq!(code, 4008, "closed as lagged");
    let (lagged, events) = before.split_last().unwrap();
    assert_eq!(lagged["type"], "lagged", "{lagged}");
    assert!(
        !events.is_empty() && events.len() < written.len(),
        "{} events",
        events.len()
    );
    let resume = position(lagged);
    assert_eq!(
        resume,
        position(events.last().unwrap()),
        "resume after the last event sent"
    );
    // Resuming there gets the rest, exactly.
    let (mut ws, _) = Ws::connect(
        &app,
        &token,
        &format!("?channels=category:project&from_position={resume}"),
    )
    .await;
    let mut received: Vec<Position> = events.iter().map(position).collect();
    while received.len() < written.len() {
        received.push(position(&ws.event().await));
    }
    assert_eq!(received, written);
    app.stop().await;
}

#[actix_web::test]
async fn a_quiet_connection_gets_heartbeats_that_carry_its_position() {
    let mut config = TestApp::config();
    config.http.live.heartbeat = Duration::from_millis(200);
    let app = TestApp::spawn_with(config).await;
    let token = app.token().await;
    let (mut ws, _) = Ws::connect(&app, &token, "?channels=category:nothing").await;
    let (_, written) = create_project(&app, &token, "elsewhere").await;
    assert!(app.services.live.wait_for(written, PATIENCE).await);
    loop {
        let heartbeat = ws.recv().await;
        assert_eq!(heartbeat["type"], "heartbeat", "{heartbeat}");
        // Nothing on its channel: the position still moves past the write it did not get.
        if heartbeat["position"]
            .as_str()
            .is_some_and(|p| p.parse::<Position>().unwrap() >= written)
        {
            break;
        }
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_connection_closes_with_4401_when_its_token_expires() {
    let mut config = TestApp::config();
    config.auth.access_ttl = Duration::from_secs(1);
    let app = TestApp::spawn_with(config).await;
    let token = app.token().await;
    let (mut ws, _) = Ws::connect(&app, &token, "?channels=*").await;
    let (code, before) = ws.closed().await;
    assert_eq!(code, 4401);
    assert_eq!(before.last().unwrap()["code"], "TOKEN_EXPIRED");
    app.stop().await;
}

#[actix_web::test]
async fn connections_over_the_limit_are_refused_with_503() {
    let mut config = TestApp::config();
    config.http.live.max_connections = 2;
    let app = TestApp::spawn_with(config).await;
    let token = app.token().await;
    let (first, _) = Ws::connect(&app, &token, "").await;
    let (_second, _) = Ws::connect(&app, &token, "").await;
    match tokio_tungstenite::connect_async(with_token(&ws_url(&app, ""), Some(&token))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    let res = app
        .client
        .get(app.url("/api/v1/stream"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    // A closed connection frees its place.
    drop(first);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match tokio_tungstenite::connect_async(with_token(&ws_url(&app, ""), Some(&token))).await {
            Ok(_) => break,
            Err(_) if attempts < 100 => tokio::task::yield_now().await,
            Err(e) => panic!("the closed connection's place was not freed: {e}"),
        }
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_thousand_idle_connections_are_held() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let mut clients = Vec::new();
    for chunk in 0..20 {
        let batch = futures::future::join_all((0..50).map(|i| {
            let app = &app;
            let token = &token;
            async move {
                let (ws, _) =
                    Ws::connect(app, token, &format!("?channels=project:{chunk}-{i}")).await;
                ws
            }
        }))
        .await;
        clients.extend(batch);
    }
    assert_eq!(app.services.live.connections(), 1000);
    // Every one is alive: it answers a ping.
    let pongs = futures::future::join_all(clients.iter_mut().map(|ws| async move {
        ws.send(json!({"type": "ping"})).await;
        ws.recv().await["type"] == "pong"
    }))
    .await;
    assert!(pongs.iter().all(|p| *p));
    app.stop().await;
}

#[actix_web::test]
async fn an_sse_client_resumes_with_last_event_id_exactly_after_the_last_event_it_saw() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let open = |last_event_id: Option<String>| {
        let mut request = app.client.get(app.url(&format!(
            "/api/v1/stream?channels=category:project&access_token={token}"
        )));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        request.send()
    };
    let res = open(None).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut sse = Sse::new(res);
    for i in 0..3 {
        create_project(&app, &token, &format!("sse-{i}")).await;
    }
    let mut last_id = String::new();
    for i in 0..3 {
        let (id, data) = sse.event().await;
        assert_eq!(data["data"]["name"], format!("sse-{i}"));
        assert_eq!(
            data["position"].as_str().unwrap(),
            id,
            "id: is the position"
        );
        last_id = id;
    }
    drop(sse);
    for i in 3..6 {
        create_project(&app, &token, &format!("sse-{i}")).await;
    }
    let mut sse = Sse::new(open(Some(last_id)).await.unwrap());
    for i in 3..6 {
        assert_eq!(sse.event().await.1["data"]["name"], format!("sse-{i}"));
    }
    app.stop().await;
}

/// A minimal server-sent events reader.
struct Sse {
    body: std::pin::Pin<
        Box<dyn futures::Stream<Item = reqwest::Result<actix_web::web::Bytes>> + Send>,
    >,
    buffer: String,
}

impl Sse {
    fn new(res: reqwest::Response) -> Self {
        Sse {
            body: Box::pin(res.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event with data: its `id:` and its JSON.
    async fn event(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    return (id, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .expect("no event in time")
                .expect("the stream ended")
                .unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}
