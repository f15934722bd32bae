//! Surveillance (Sentinel) through real HTTP: cameras, detections and who acknowledged them,
//! statistics, discovery on 127.0.0.1 only, and the capture pipeline on ffmpeg's synthetic
//! sources, with its detections and thumbnails on the live feed.

mod common;

use base64::Engine;
use common::{Client, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A tiny valid JPEG (1×1), for detections sent by an external detector.
const JPEG_1X1: &str = "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8MCgsOCwkJDRENDg8QEBEQCgwSExIQEw8QEBD/yQALCAABAAEBAREA/8wABgAQEAX/2gAIAQEAAD8A0s8g/9k=";

/// The fields a problem names, in its order or sorted.
fn error_fields(problem: &Value, sorted: bool) -> Vec<String> {
    let mut fields: Vec<String> = problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {problem}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    if sorted {
        fields.sort();
    }
    fields
}

async fn camera(c: &Client<'_>, name: &str, url: &str) -> Value {
    c.json(
        Method::POST,
        "/api/v1/cameras",
        Some(json!({"name": name, "url": url, "location": "Hall"})),
        StatusCode::CREATED,
    )
    .await
}

async fn login(app: &TestApp, username: &str) -> String {
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": username, "password": "long enough"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "login of {username}");
    res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A user of the admin's organization with this role; their client.
async fn member<'a>(app: &'a TestApp, admin: &Client<'_>, name: &str, role: &str) -> Client<'a> {
    let me = admin
        .json(Method::GET, "/api/v1/auth/me", None, StatusCode::OK)
        .await;
    let org = me["organization_id"]
        .as_str()
        .or_else(|| me["organization"]["id"].as_str())
        .unwrap_or_else(|| panic!("no organization in {me}"))
        .to_owned();
    admin
        .json(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"username": name, "email": format!("{name}@example.com"),
                "password": "long enough", "organization_id": org, "role": role}),
            ),
            StatusCode::CREATED,
        )
        .await;
    app.settle().await;
    Client {
        token: login(app, name).await,
        app,
    }
}

#[actix_web::test]
async fn a_camera_is_registered_listed_changed_and_deleted_and_its_credentials_never_show() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let created = camera(
        &c,
        "Entrance",
        "rtsp://admin:s3cret-pw@127.0.0.1:8554/stream1",
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "inactive");
    assert_eq!(created["url"], "rtsp://***@127.0.0.1:8554/stream1");
    assert_eq!(created["capture"]["fps"], 5);
    assert_eq!(created["motion"]["threshold"], 25);
    camera(&c, "Parking", "synthetic://testsrc?size=320x240&rate=5").await;

    let seen = c.seen().await;
    let list = c
        .json(
            Method::GET,
            &format!("/api/v1/cameras?{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["pagination"]["total"], 2);
    assert_eq!(list["data"][0]["name"], "Entrance", "sorted by name");
    assert_eq!(list["data"][0]["url"], "rtsp://***@127.0.0.1:8554/stream1");
    let filtered = c
        .json(
            Method::GET,
            "/api/v1/cameras?search=park",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(filtered["pagination"]["total"], 1);
    let none = c
        .json(
            Method::GET,
            "/api/v1/cameras?status=active",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(none["pagination"]["total"], 0);
    let bad = c
        .json(
            Method::GET,
            "/api/v1/cameras?status=broken&per_page=0",
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    let fields = error_fields(&bad, false);
    assert!(
        fields.iter().any(|f| f == "status") && fields.iter().any(|f| f == "per_page"),
        "{bad}"
    );

    // A partial change; a new source's new credentials are masked too.
    let changed = c
        .json(
            Method::PUT,
            &format!("/api/v1/cameras/{id}"),
            Some(
                json!({"location": "Back door", "url": "rtsp://cam:other-pw@127.0.0.1:8554/s2",
                        "motion": {"threshold": 40}}),
            ),
            StatusCode::OK,
        )
        .await;
    assert_eq!(changed["location"], "Back door");
    assert_eq!(changed["name"], "Entrance");
    assert_eq!(changed["motion"]["threshold"], 40);
    assert_eq!(changed["motion"]["min_area"], 0.01, "other fields kept");
    assert_eq!(changed["url"], "rtsp://***@127.0.0.1:8554/s2");

    // No credential anywhere in the log.
    let logged: Vec<(String, String)> =
        sqlx::query_as("SELECT data::text, metadata::text FROM events")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    for (data, metadata) in &logged {
        for secret in ["s3cret-pw", "other-pw"] {
            assert!(
                !data.contains(secret) && !metadata.contains(secret),
                "{data}"
            );
        }
    }
    // History shows the change, without the credentials either.
    let history = c
        .json(
            Method::GET,
            &format!("/api/v1/cameras/{id}/history"),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(!history.to_string().contains("pw"), "{history}");

    c.json(
        Method::DELETE,
        &format!("/api/v1/cameras/{id}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    c.json(
        Method::GET,
        &format!("/api/v1/cameras/{id}?{}", c.seen().await),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM surveillance_credentials")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept, 0, "a deleted camera's credentials are forgotten");
    // Its name is free again.
    camera(&c, "Entrance", "synthetic://motion").await;
    app.stop().await;
}

#[actix_web::test]
async fn bad_camera_input_is_refused_with_every_field_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let before = app.last_written().await;
    let problem = c
        .json(
            Method::POST,
            "/api/v1/cameras",
            Some(
                json!({"name": "", "url": "ftp://cam/stream", "location": "x".repeat(201),
                        "capture": {"fps": 0, "thumbnail_fps": 9},
                        "motion": {"threshold": 0, "min_area": 3.0}}),
            ),
            StatusCode::BAD_REQUEST,
        )
        .await;
    let fields = error_fields(&problem, true);
    assert_eq!(
        fields,
        [
            "capture.fps",
            "capture.thumbnail_fps",
            "location",
            "motion.min_area",
            "motion.threshold",
            "name",
            "url"
        ],
        "{problem}"
    );
    assert_eq!(app.last_written().await, before, "nothing written");
    camera(&c, "Entrance", "synthetic://motion").await;
    c.json(
        Method::POST,
        "/api/v1/cameras",
        Some(json!({"name": "ENTRANCE", "url": "synthetic://testsrc"})),
        StatusCode::CONFLICT,
    )
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn detections_are_filtered_acknowledged_per_person_and_counted() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let cam = camera(&c, "Entrance", "synthetic://motion").await;
    let cam_id = cam["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for (kind, severity, confidence) in [
        ("person", Some("medium"), 0.91),
        ("vehicle", None, 0.55),
        ("fire", None, 0.99),
    ] {
        let mut body = json!({"camera_id": cam_id, "type": kind, "confidence": confidence,
            "bbox": {"x": 0.1, "y": 0.2, "width": 0.3, "height": 0.4}, "snapshot": JPEG_1X1});
        if let Some(s) = severity {
            body["severity"] = json!(s);
        }
        let d = c
            .json(
                Method::POST,
                "/api/v1/detections",
                Some(body),
                StatusCode::CREATED,
            )
            .await;
        ids.push(d["id"].as_str().unwrap().to_owned());
    }
    let seen = c.seen().await;
    let all = c
        .json(
            Method::GET,
            &format!("/api/v1/detections?{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(all["pagination"]["total"], 3);
    assert_eq!(all["data"][0]["type"], "fire", "newest first");
    assert_eq!(all["data"][0]["severity"], "critical", "a fire's default");
    assert_eq!(all["data"][0]["camera_name"], "Entrance");
    let snapshot_url = all["data"][0]["snapshot_url"].as_str().unwrap().to_owned();
    let res = c.send(Method::GET, &snapshot_url, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    let jpeg = res.bytes().await.unwrap();
    assert_eq!(
        jpeg.as_ref(),
        base64::engine::general_purpose::STANDARD
            .decode(JPEG_1X1)
            .unwrap()
            .as_slice()
    );
    let confident = c
        .json(
            Method::GET,
            &format!("/api/v1/detections?min_confidence=0.9&type=person,fire&camera_id={cam_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(confident["pagination"]["total"], 2, "{confident}");

    // Two people acknowledge; each is kept with who and when.
    let alice = member(&app, &c, "alice", "member").await;
    let acked = alice
        .json(
            Method::POST,
            &format!("/api/v1/detections/{}/acknowledge", ids[0]),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(acked["acknowledged"], true);
    assert_eq!(acked["acknowledged_by_me"], true);
    assert_eq!(acked["acknowledgements"].as_array().unwrap().len(), 1);
    assert!(acked["time_to_acknowledge_seconds"].as_f64().unwrap() >= 0.0);
    let patched = c
        .json(
            Method::PATCH,
            &format!("/api/v1/detections/{}", ids[0]),
            Some(json!({"acknowledged": true, "notes": "the postman"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(patched["notes"], "the postman");
    assert_eq!(
        patched["acknowledgements"].as_array().unwrap().len(),
        2,
        "{patched}"
    );
    // A stale ETag is refused before anything changes, acknowledgement included.
    let stale = app
        .client
        .patch(app.url(&format!("/api/v1/detections/{}", ids[1])))
        .bearer_auth(&alice.token)
        .header("if-match", "\"7\"")
        .json(&json!({"acknowledged": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    // Alice withdraws hers: the admin's stands.
    let withdrawn = alice
        .json(
            Method::PATCH,
            &format!("/api/v1/detections/{}", ids[0]),
            Some(json!({"acknowledged": false})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(withdrawn["acknowledged"], true);
    assert_eq!(withdrawn["acknowledged_by_me"], false);
    assert_eq!(withdrawn["acknowledgements"].as_array().unwrap().len(), 1);

    // Bulk: one new, one already, one unknown.
    let unknown = uuid::Uuid::now_v7().to_string();
    let bulk = c
        .json(
            Method::POST,
            "/api/v1/detections/acknowledge",
            Some(json!({"ids": [ids[0], ids[1], unknown]})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(bulk["acknowledged"], json!([ids[1]]));
    assert_eq!(bulk["unchanged"], json!([ids[0]]));
    assert_eq!(bulk["not_found"], json!([unknown]));

    let seen = c.seen().await;
    let stats = c
        .json(
            Method::GET,
            &format!("/api/v1/detections/stats?{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(stats["total"], 3, "{stats}");
    assert_eq!(stats["unacknowledged"], 1);
    assert_eq!(stats["by_type"]["fire"], 1);
    assert_eq!(stats["by_severity"]["critical"], 1);
    assert_eq!(stats["by_camera"][&cam_id], 3);
    assert_eq!(stats["per_hour"].as_array().unwrap().len(), 24);
    let this_hour: u64 = stats["per_hour"][23]["count"].as_u64().unwrap();
    assert_eq!(this_hour, 3);
    assert_eq!(stats["time_to_acknowledge"]["acknowledged"], 2);
    let unacked = c
        .json(
            Method::GET,
            "/api/v1/detections?acknowledged=false",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(unacked["data"][0]["id"], json!(ids[2]));

    let dashboard = c
        .json(
            Method::GET,
            &format!("/api/v1/stats/dashboard?{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(dashboard["cameras"]["total"], 1, "{dashboard}");
    assert_eq!(dashboard["cameras"]["active"], 0);
    assert_eq!(dashboard["detections_today"]["total"], 3);
    assert_eq!(dashboard["detections_today"]["by_severity"]["critical"], 1);
    assert_eq!(dashboard["unacknowledged"], 1);

    // Deleted: gone, with its snapshot.
    c.json(
        Method::DELETE,
        &format!("/api/v1/detections/{}", ids[2]),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    let res = c
        .send(
            Method::GET,
            &format!("/api/v1/detections/{}/snapshot", ids[2]),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[actix_web::test]
async fn bad_detections_and_filters_name_every_field_and_roles_and_tenancy_hold() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let cam = camera(&c, "Entrance", "synthetic://motion").await;
    let cam_id = cam["id"].as_str().unwrap().to_owned();
    let problem = c
        .json(
            Method::POST,
            "/api/v1/detections",
            Some(
                json!({"camera_id": cam_id, "type": "ufo", "severity": "urgent",
                "confidence": 1.5, "bbox": {"x": -1, "y": 0, "width": 0, "height": 0.5},
                "snapshot": "bm90IGEganBlZw=="}),
            ),
            StatusCode::BAD_REQUEST,
        )
        .await;
    let fields = error_fields(&problem, true);
    assert_eq!(
        fields,
        [
            "bbox.width",
            "bbox.x",
            "confidence",
            "severity",
            "snapshot",
            "type"
        ],
        "{problem}"
    );
    let unknown_camera = c
        .json(
            Method::POST,
            "/api/v1/detections",
            Some(json!({"camera_id": uuid::Uuid::now_v7(), "type": "person", "confidence": 0.5})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(unknown_camera["errors"][0]["field"], "camera_id");
    let filters = c
        .json(
            Method::GET,
            "/api/v1/detections?start_time=2026-12-06T10:00:00Z&end_time=2026-12-06T09:00:00Z&severity=urgent&min_confidence=2&acknowledged=maybe",
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    let fields = error_fields(&filters, true);
    assert_eq!(
        fields,
        ["acknowledged", "end_time", "min_confidence", "severity"],
        "{filters}"
    );

    // A viewer watches but neither changes cameras nor acknowledges.
    let d = c
        .json(
            Method::POST,
            "/api/v1/detections",
            Some(json!({"camera_id": cam_id, "type": "person", "confidence": 0.5})),
            StatusCode::CREATED,
        )
        .await;
    let d_id = d["id"].as_str().unwrap().to_owned();
    let viewer = member(&app, &c, "victor", "viewer").await;
    viewer
        .json(Method::GET, "/api/v1/cameras", None, StatusCode::OK)
        .await;
    for (method, path) in [
        (Method::POST, format!("/api/v1/cameras/{cam_id}/start")),
        (
            Method::POST,
            format!("/api/v1/detections/{d_id}/acknowledge"),
        ),
    ] {
        let res = viewer.send(method, &path, None).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let res = viewer
        .send(
            Method::POST,
            "/api/v1/cameras",
            Some(json!({"name": "Mine", "url": "synthetic://motion"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Another organization's camera and detection are not found.
    let org = c
        .json(
            Method::POST,
            "/api/v1/organizations",
            Some(json!({"name": "Other org"})),
            StatusCode::CREATED,
        )
        .await;
    let other = org["id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/api/v1/cameras/{cam_id}")),
        (Method::POST, format!("/api/v1/cameras/{cam_id}/start")),
        (Method::GET, format!("/api/v1/cameras/{cam_id}/stats")),
        (Method::GET, format!("/api/v1/detections/{d_id}")),
        (
            Method::POST,
            format!("/api/v1/detections/{d_id}/acknowledge"),
        ),
        (Method::GET, format!("/api/v1/detections/{d_id}/snapshot")),
    ] {
        let res = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(&c.token)
            .header("x-organization-id", other)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn discovery_probes_only_the_hosts_it_is_given_and_finds_a_camera_there() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = TestApp::config();
    // Only 127.0.0.1 is allowed; what the test names outside it is loopback too, so even a
    // failure of the check would send nothing off the machine.
    config.http.discovery_networks = Some(vec!["127.0.0.1/32".parse().unwrap()]);
    let app = TestApp::spawn_with(config).await;
    let c = Client::new(&app).await;
    // A fake RTSP camera on 127.0.0.1.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: Hikvision-Webs\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n")
                .await;
        }
    });
    let found = c
        .json(
            Method::POST,
            "/api/v1/cameras/discover",
            Some(json!({"hosts": ["127.0.0.1"], "ports": [port], "timeout_ms": 500})),
            StatusCode::OK,
        )
        .await;
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["protocol"], "rtsp");
    assert_eq!(found[0]["ip"], "127.0.0.1");
    assert_eq!(found[0]["port"], port);
    assert_eq!(found[0]["url"], format!("rtsp://127.0.0.1:{port}/"));
    let problem = c
        .json(
            Method::POST,
            "/api/v1/cameras/discover",
            Some(json!({"cidr": "127.0.0.0/16", "ports": [0], "timeout_ms": 1})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    let fields = error_fields(&problem, true);
    assert_eq!(fields, ["cidr", "ports[0]", "timeout_ms"], "{problem}");
    // Outside the networks this server may probe, or a name to resolve: refused, nothing sent.
    let problem = c
        .json(
            Method::POST,
            "/api/v1/cameras/discover",
            Some(json!({"hosts": ["127.0.0.1", "127.0.0.2", "localhost"]})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    let fields = error_fields(&problem, false);
    assert_eq!(fields, ["hosts[1]", "hosts[2]"], "{problem}");
    let problem = c
        .json(
            Method::POST,
            "/api/v1/cameras/discover",
            Some(json!({"cidr": "127.0.1.0/24"})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(problem["errors"][0]["field"], "cidr", "{problem}");
    let system = c
        .json(Method::GET, "/api/v1/stats/system", None, StatusCode::OK)
        .await;
    assert!(
        system["memory"]["total_bytes"].as_u64().unwrap() > 0,
        "{system}"
    );
    assert!(system["process"]["rss_bytes"].as_u64().unwrap() > 0);
    app.stop().await;
}

/// Waits (on the log, not on time) for an event of this type on this stream after `after`.
async fn appended_after(
    app: &TestApp,
    stream: &str,
    event_type: &str,
    after: atelier_store::Position,
) {
    use atelier_store::{EventStore, Filter, SubscribeFrom, SubscriptionMessage};
    use futures::StreamExt;
    let mut sub = app.store.subscribe_all(
        SubscribeFrom::After(after),
        Filter::Category(vec!["camera".to_owned()]),
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
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("no {event_type} on {stream}"));
}

/// How long a test waits for the pipeline (ffmpeg starting, frames, a detection): a bound,
/// never a pace.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn live(app: &TestApp, token: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/ws", app.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let connected = next_text(&mut socket).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    socket
}

async fn next_text(socket: &mut Socket) -> Value {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::Message;
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
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

/// Reads messages until one of this type arrives (others are skipped).
async fn message_of_type(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let m = next_text(socket).await;
        if m["type"] == kind {
            return m;
        }
    }
}

async fn send(socket: &mut Socket, message: Value) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::Message;
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

#[actix_web::test]
async fn a_started_synthetic_camera_goes_active_detects_motion_live_and_sends_thumbnails_to_its_watchers()
 {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let cam = camera(&c, "Entrance", "synthetic://motion?size=320x240&rate=5").await;
    let id = cam["id"].as_str().unwrap().to_owned();
    let stream = format!("camera-{id}");

    // One client watches the camera (thumbnails and its detections), another only `events`.
    let mut watcher = live(&app, &c.token).await;
    send(
        &mut watcher,
        json!({"type": "subscribe", "channels": [format!("camera_{id}")]}),
    )
    .await;
    assert_eq!(
        message_of_type(&mut watcher, "subscribed").await["type"],
        "subscribed"
    );
    let mut events_only = live(&app, &c.token).await;
    send(
        &mut events_only,
        json!({"type": "subscribe", "channels": ["events"]}),
    )
    .await;
    message_of_type(&mut events_only, "subscribed").await;

    let started = c
        .json(
            Method::POST,
            &format!("/api/v1/cameras/{id}/start"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(started["status"], "connecting");
    app.event_appended(&stream, "CameraActive").await;
    let active = c
        .json(
            Method::GET,
            &format!("/api/v1/cameras/{id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(active["status"], "active", "{active}");
    assert_eq!(active["resolution"], json!({"width": 320, "height": 240}));
    assert!(active["runner"].is_string());

    // A thumbnail reaches the camera's watcher: a JPEG.
    let frame = message_of_type(&mut watcher, "frame_update").await;
    assert_eq!(frame["camera_id"], id);
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(frame["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG");

    // The moving square is detected: a new_event on `events`, and on the camera's channel.
    let new_event = message_of_type(&mut events_only, "new_event").await;
    assert_eq!(new_event["data"]["camera_id"], id, "{new_event}");
    assert_eq!(new_event["data"]["type"], "motion");
    let confidence = new_event["data"]["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&confidence));
    let bbox = &new_event["data"]["bbox"];
    assert!(bbox["width"].as_f64().unwrap() > 0.0, "{bbox}");
    let detection_id = new_event["data"]["id"].as_str().unwrap().to_owned();
    let on_camera = message_of_type(&mut watcher, "new_event").await;
    assert_eq!(on_camera["data"]["camera_id"], id);
    // The client of `events` gets no thumbnail: nothing but events and heartbeats came.

    // In the list, with its snapshot.
    let seen = c.seen().await;
    let listed = c
        .json(
            Method::GET,
            &format!("/api/v1/detections?camera_id={id}&type=motion&{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        listed["pagination"]["total"].as_u64().unwrap() >= 1,
        "{listed}"
    );
    let res = c
        .send(
            Method::GET,
            &format!("/api/v1/detections/{detection_id}/snapshot"),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(&res.bytes().await.unwrap()[..2], &[0xFF, 0xD8]);

    // Acknowledged: who and when.
    let acked = c
        .json(
            Method::POST,
            &format!("/api/v1/detections/{detection_id}/acknowledge"),
            None,
            StatusCode::OK,
        )
        .await;
    let me = c
        .json(Method::GET, "/api/v1/auth/me", None, StatusCode::OK)
        .await;
    assert_eq!(
        acked["acknowledgements"][0]["user_id"], me["user_id"],
        "{acked} {me}"
    );
    assert!(acked["acknowledgements"][0]["at"].is_string());

    // The figures are real, read from the running pipeline: a detection means at least two
    // frames went through it (the first never triggers), so they are counted, timed and rated.
    let stats = c
        .json(
            Method::GET,
            &format!("/api/v1/cameras/{id}/stats?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(stats["frames_processed"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["fps"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(
        stats["detections_by_type"]["motion"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        stats["figures"]["decode_latency_ms"]["p99"].is_number(),
        "{stats}"
    );
    let performance = c
        .json(
            Method::GET,
            "/api/v1/stats/performance",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(performance[0]["camera_id"], id);
    assert!(
        performance[0]["figures"]["fps"].is_number(),
        "{performance}"
    );
    let dashboard = c
        .json(Method::GET, "/api/v1/stats/dashboard", None, StatusCode::OK)
        .await;
    assert_eq!(dashboard["cameras"]["active"], 1, "{dashboard}");

    // Stopped: inactive, and the pipeline (ffmpeg) is gone.
    let stopped = c
        .json(
            Method::POST,
            &format!("/api/v1/cameras/{id}/stop"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(stopped["status"], "inactive");
    app.settle().await;
    app.stop().await;
}

#[actix_web::test]
async fn an_unreachable_source_is_an_error_with_its_reason_and_credentials_stay_hidden() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    // Port 1 on loopback: nothing listens there.
    let cam = camera(
        &c,
        "Dead",
        "rtsp://viewer:hunter2-secret@127.0.0.1:1/stream",
    )
    .await;
    let id = cam["id"].as_str().unwrap().to_owned();
    c.json(
        Method::POST,
        &format!("/api/v1/cameras/{id}/start"),
        None,
        StatusCode::OK,
    )
    .await;
    app.event_appended(&format!("camera-{id}"), "CameraFailed")
        .await;
    let failed = c
        .json(
            Method::GET,
            &format!("/api/v1/cameras/{id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(failed["status"], "error", "{failed}");
    let reason = failed["last_error"].as_str().unwrap();
    assert!(!reason.is_empty());
    assert!(!reason.contains("hunter2"), "{reason}");
    let logged: Vec<(String,)> = sqlx::query_as("SELECT data::text FROM events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(logged.iter().all(|(d,)| !d.contains("hunter2")));
    app.stop().await;
}

#[actix_web::test]
async fn a_camera_running_when_its_server_stops_is_taken_up_again_by_the_same_runner() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let cam = camera(&c, "Entrance", "synthetic://testsrc?size=160x120&rate=5").await;
    let id = cam["id"].as_str().unwrap().to_owned();
    let stream = format!("camera-{id}");
    c.json(
        Method::POST,
        &format!("/api/v1/cameras/{id}/start"),
        None,
        StatusCode::OK,
    )
    .await;
    app.event_appended(&stream, "CameraActive").await;
    // The server's workers stop: the camera says why it is not capturing.
    app.services.stop_workers().await;
    app.event_appended(&stream, "CameraFailed").await;
    let down = c
        .json(
            Method::GET,
            &format!("/api/v1/cameras/{id}?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(down["status"], "error");
    assert!(
        down["last_error"].as_str().unwrap().contains("stopped"),
        "{down}"
    );
    assert!(down["running"].as_bool().unwrap(), "still wanted");
    // The same runner starts again: connecting, then active.
    let restart = app.last_written().await.unwrap();
    let settings = app.config.capture.clone().unwrap();
    let runner = atelier_http::surveillance::runner::start_runner(&app.services, &settings);
    appended_after(&app, &stream, "CameraConnecting", restart).await;
    appended_after(&app, &stream, "CameraActive", restart).await;
    let events: Vec<(String,)> =
        sqlx::query_as("SELECT event_type FROM events WHERE stream_name = $1 ORDER BY revision")
            .bind(&stream)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let types: Vec<&str> = events.iter().map(|(t,)| t.as_str()).collect();
    assert_eq!(
        types.iter().filter(|t| **t == "CameraClaimed").count(),
        1,
        "claimed once, kept across the restart: {types:?}"
    );
    runner.stop().await;
    app.stop().await;
}
