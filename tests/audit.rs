//! The audit trail, history, time travel and diffs, through real HTTP.

mod common;

use atelier_store::{EventData, EventStore, ExpectedRevision, StreamName};
use common::{Client, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn create_project(c: &Client<'_>, name: &str) -> Value {
    c.json(
        Method::POST,
        "/api/v1/projects",
        Some(json!({"name": name, "repo_url": "https://example.com/demo.git"})),
        StatusCode::CREATED,
    )
    .await
}

async fn rename(c: &Client<'_>, project: &str, name: &str) {
    c.json(
        Method::PUT,
        &format!("/api/v1/projects/{project}"),
        Some(json!({"name": name, "repo_url": "https://example.com/demo.git"})),
        StatusCode::OK,
    )
    .await;
}

#[actix_web::test]
async fn a_projects_history_as_of_and_diff_tell_who_changed_what_and_how_it_was() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let me = c
        .json(Method::GET, "/api/v1/auth/me", None, StatusCode::OK)
        .await;
    let user_id = me["id"]
        .as_str()
        .or(me["user_id"].as_str())
        .unwrap()
        .to_owned();
    let project = create_project(&c, "billing").await;
    let pid = id(&project);
    rename(&c, &pid, "invoicing").await;
    rename(&c, &pid, "payments").await;
    let build = c
        .json(
            Method::POST,
            &format!("/api/v1/projects/{pid}/build"),
            Some(json!({})),
            StatusCode::ACCEPTED,
        )
        .await;

    // Every change, with who and through which credential (this login's session).
    let history = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}/history"),
            None,
            StatusCode::OK,
        )
        .await;
    let changes = history["data"].as_array().unwrap();
    let types: Vec<_> = changes
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["ProjectCreated", "ProjectUpdated", "ProjectUpdated"],
        "{history}"
    );
    assert_eq!(history["pagination"]["total"], 3);
    for (n, change) in changes.iter().enumerate() {
        assert_eq!(change["revision"], n as u64);
        assert_eq!(change["actor"], user_id.as_str(), "{change}");
        let credential = change["credential"].as_str().unwrap();
        assert!(credential.starts_with("session:"), "{change}");
    }
    // The rename says what changed, and only that.
    assert_eq!(changes[1]["data"]["name"], "invoicing");
    assert!(
        changes[1]["data"].get("repo_url").is_none(),
        "{}",
        changes[1]
    );
    assert_eq!(changes[1]["schema"], 2);

    // As of its first position, it had its first name; as of the second, the second.
    let first = changes[0]["position"].as_str().unwrap();
    let past = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}?as_of={first}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(past["state"]["name"], "billing", "{past}");
    assert_eq!(past["state"]["state"], "active");
    assert_eq!(past["revision"], 0);
    let second = changes[1]["position"].as_str().unwrap();
    let past = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}?as_of={second}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(past["state"]["name"], "invoicing");
    // A time works too: now, it is what it is.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let past = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}?as_of={now}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(past["state"]["name"], "payments");
    // Before it existed, it is not found; a malformed moment is a 400 naming the field.
    let problem = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}?as_of=1-0"),
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("did not exist")
    );
    let problem = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}?as_of=yesterday"),
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(problem["errors"][0]["field"], "as_of", "{problem}");
    // Without as_of, the read model answers as always.
    let now = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(now["name"], "payments");

    // The diff of revisions 0 and 2 shows the rename, field by field.
    let diff = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}/diff?from=0&to=2"),
            None,
            StatusCode::OK,
        )
        .await;
    let changes = diff["changes"].as_array().unwrap();
    let name = changes.iter().find(|c| c["path"] == "/name").unwrap();
    assert_eq!(
        (&name["from"], &name["to"]),
        (&json!("billing"), &json!("payments"))
    );
    assert!(changes.iter().all(|c| c["path"] != "/repo_url"), "{diff}");
    for bad in ["from=2&to=0", "from=x", "to=-1"] {
        c.json(
            Method::GET,
            &format!("/api/v1/projects/{pid}/diff?{bad}"),
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    c.json(
        Method::GET,
        &format!("/api/v1/projects/{pid}/diff?from=0&to=9"),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;

    // The build has its own history, and the audit finds the whole story by correlation.
    let bid = id(&build);
    let builds = c
        .json(
            Method::GET,
            &format!("/api/v1/builds/{bid}/history"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(builds["data"][0]["type"], "BuildQueued");
    let correlation = builds["data"][0]["correlation_id"].as_str().unwrap();
    let audit = c
        .json(
            Method::GET,
            &format!(
                "/api/v1/audit/events?correlation_id={correlation}&{}",
                c.seen().await
            ),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "BuildQueued"),
        "{audit}"
    );

    // Unknown resources are not found.
    for path in [
        format!("/api/v1/projects/{}/history", uuid::Uuid::now_v7()),
        "/api/v1/projects/not-an-id/history".to_owned(),
        format!("/api/v1/projects/{}?as_of=1-0", uuid::Uuid::now_v7()),
    ] {
        c.json(Method::GET, &path, None, StatusCode::NOT_FOUND)
            .await;
    }
    app.stop().await;
}

#[actix_web::test]
async fn an_api_keys_writes_are_found_by_filtering_on_that_key_and_the_audit_is_for_admins() {
    let app = TestApp::spawn().await;
    let admin = Client::new(&app).await;
    let key = admin
        .json(
            Method::POST,
            "/api/v1/api-keys",
            Some(json!({"name": "ci", "scopes": ["read", "write"]})),
            StatusCode::CREATED,
        )
        .await;
    let key_id = id(&key);
    let secret = key["key"].as_str().unwrap().to_owned();
    let by_key = app
        .client
        .post(app.url("/api/v1/projects"))
        .header("x-api-key", &secret)
        .json(&json!({"name": "from-ci", "repo_url": "https://example.com/ci.git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_key.status(), 201);
    let from_ci = id(&by_key.json::<Value>().await.unwrap());
    create_project(&admin, "by-hand").await;

    let seen = admin.seen().await;
    let credential = format!("apikey:{key_id}");
    let page = admin
        .json(
            Method::GET,
            &format!("/api/v1/audit/events?credential={credential}&{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    let entries = page["data"].as_array().unwrap();
    assert!(!entries.is_empty(), "{page}");
    assert!(
        entries
            .iter()
            .all(|e| e["credential"] == credential.as_str())
    );
    assert!(
        entries
            .iter()
            .any(|e| e["type"] == "ProjectCreated" && e["data"]["name"] == "from-ci"),
        "{page}"
    );
    assert!(
        entries.iter().all(|e| e["data"]["name"] != "by-hand"),
        "{page}"
    );
    let actor = admin
        .json(
            Method::GET,
            &format!("/api/v1/audit/events?actor={credential}&{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(actor["data"], page["data"]);
    // The key's write shows in the project's history with that credential.
    let history = admin
        .json(
            Method::GET,
            &format!("/api/v1/projects/{from_ci}/history"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(history["data"][0]["credential"], credential.as_str());
    // One stream, oldest first.
    let stream = admin
        .json(
            Method::GET,
            &format!("/api/v1/audit/streams/project-{from_ci}?{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(stream["data"][0]["type"], "ProjectCreated");
    admin
        .json(
            Method::GET,
            &format!(
                "/api/v1/audit/streams/project-{}?{seen}",
                uuid::Uuid::now_v7()
            ),
            None,
            StatusCode::NOT_FOUND,
        )
        .await;

    // Paging by cursor covers the log without gaps or repeats, newest first.
    let mut cursor: Option<String> = None;
    let mut positions = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit/events?per_page=3&cursor={c}"),
            None => format!("/api/v1/audit/events?per_page=3&{seen}"),
        };
        let page = admin.json(Method::GET, &path, None, StatusCode::OK).await;
        for e in page["data"].as_array().unwrap() {
            positions.push(e["position"].as_str().unwrap().to_owned());
        }
        match page["pagination"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let parsed: Vec<atelier_store::Position> =
        positions.iter().map(|p| p.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] > w[1]), "{positions:?}");
    let all = admin
        .json(
            Method::GET,
            "/api/v1/audit/events?per_page=100&order=oldest",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(all["data"].as_array().unwrap().len(), positions.len());

    // Bad filters are 400s naming every field.
    let problem = admin
        .json(
            Method::GET,
            "/api/v1/audit/events?from_position=x&since=monday&order=up&per_page=0",
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    let fields: Vec<_> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["from_position", "since", "order", "per_page"] {
        assert!(fields.contains(&f), "{problem}");
    }

    // A read-and-write key is not an admin: the audit is refused.
    let refused = app
        .client
        .get(app.url("/api/v1/audit/events"))
        .header("x-api-key", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // Nor is a member; and another organization's audit is for superadmins only.
    let org = admin
        .json(
            Method::POST,
            "/api/v1/organizations",
            Some(json!({"name": "Beta"})),
            StatusCode::CREATED,
        )
        .await;
    let beta = id(&org);
    admin
        .json(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "mia", "email": "mia@example.com",
                        "password": "long enough", "organization_id": beta, "role": "member"})),
            StatusCode::CREATED,
        )
        .await;
    let login: Value = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "mia", "password": "long enough"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mia = Client {
        app: &app,
        token: login["access_token"].as_str().unwrap().to_owned(),
    };
    mia.json(
        Method::GET,
        "/api/v1/audit/events",
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    // Mia sees no project of the default organization, in history or in the past.
    mia.json(
        Method::GET,
        &format!("/api/v1/projects/{from_ci}/history"),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    mia.json(
        Method::GET,
        &format!("/api/v1/projects/{from_ci}?as_of=2999-01-01T00:00:00Z"),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    // The superadmin reads Beta's audit by naming it.
    let beta_audit = admin
        .json(
            Method::GET,
            &format!(
                "/api/v1/audit/events?organization={beta}&{}",
                admin.seen().await
            ),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        beta_audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["org_id"] == beta.as_str()),
        "{beta_audit}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_project_updated_in_the_old_schema_is_read_through_its_upcaster_everywhere() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let project = c
        .json(
            Method::POST,
            "/api/v1/projects",
            Some(
                json!({"name": "legacy", "repo_url": "https://example.com/legacy.git",
                        "build_command": "make"}),
            ),
            StatusCode::CREATED,
        )
        .await;
    let pid = id(&project);
    let org = {
        let stream = StreamName::new(format!("project-{pid}")).unwrap();
        let events = app
            .store
            .read_stream(&stream, atelier_store::ReadStream::forward())
            .await
            .unwrap();
        events[0].metadata["org_id"].clone()
    };
    // A server before schema 2 wrote updates with all three fields, an absent build command
    // meaning none.
    let v1 = EventData::new(
        "ProjectUpdated",
        json!({"project_id": pid, "name": "legacy-renamed",
               "repo_url": "https://example.com/legacy.git",
               "updated_at": "2026-12-01T00:00:00Z"}),
    )
    .with_metadata(json!({"org_id": org, "actor": "someone", "schema": 1}));
    app.store
        .append(
            &StreamName::new(format!("project-{pid}")).unwrap(),
            ExpectedRevision::Exact(0),
            vec![v1],
        )
        .await
        .unwrap();
    // The read model, the aggregate (a later update decides on it) and time travel all read
    // it as "renamed, build command removed".
    let now = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(now["name"], "legacy-renamed", "{now}");
    assert_eq!(now["build_command"], Value::Null, "{now}");
    let past = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}?as_of=2999-01-01T00:00:00Z"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(past["state"]["name"], "legacy-renamed");
    assert_eq!(past["state"]["build_command"], Value::Null);
    // The same values again change nothing: the aggregate folded the old event the same way.
    c.json(
        Method::PUT,
        &format!("/api/v1/projects/{pid}"),
        Some(json!({"name": "legacy-renamed", "repo_url": "https://example.com/legacy.git"})),
        StatusCode::OK,
    )
    .await;
    let history = c
        .json(
            Method::GET,
            &format!("/api/v1/projects/{pid}/history"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(history["pagination"]["total"], 2, "{history}");
    assert_eq!(history["data"][1]["schema"], 1);
    app.stop().await;
}

#[actix_web::test]
async fn every_registered_resource_has_a_history_and_the_document_says_so() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let me = c
        .json(Method::GET, "/api/v1/auth/me", None, StatusCode::OK)
        .await;
    let user = me["id"].as_str().or(me["user_id"].as_str()).unwrap();
    let org = me["organization_id"].as_str().unwrap();
    for path in [
        format!("/api/v1/users/{user}/history"),
        format!("/api/v1/organizations/{org}/history"),
    ] {
        let page = c.json(Method::GET, &path, None, StatusCode::OK).await;
        assert!(
            page["pagination"]["total"].as_u64().unwrap() >= 1,
            "{path}: {page}"
        );
    }
    let doc = c
        .json(Method::GET, "/api/openapi.json", None, StatusCode::OK)
        .await;
    for path in [
        "/api/v1/projects/{id}/history",
        "/api/v1/deployments/{id}/diff",
        "/api/v1/environments/{id}/history",
        "/api/v1/api-keys/{id}/history",
        "/api/v1/audit/events",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
    let params = doc["paths"]["/api/v1/projects/{id}"]["get"]["parameters"]
        .as_array()
        .unwrap();
    assert!(params.iter().any(|p| p["name"] == "as_of"));
    app.stop().await;
}
