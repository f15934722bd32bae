//! The software factory's projects through real HTTP: the seed's curl flow, bad input, and the
//! read side's guarantees.

mod common;

use std::time::Duration;

use common::TestApp;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

async fn problem(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["request_id"].is_string(), "{body}");
    body
}

fn position(res: &Response) -> String {
    res.headers()["atelier-position"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn etag(res: &Response) -> String {
    res.headers()["etag"].to_str().unwrap().to_owned()
}

#[actix_web::test]
async fn the_seeds_project_flow_works_end_to_end() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let c = &app.client;
    let projects = app.url("/api/v1/projects");

    // Create.
    let res = c
        .post(&projects)
        .bearer_auth(&token)
        .json(&json!({"name": "DemoProj", "repo": "https://github.com/demo/repo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(etag(&res), "\"0\"");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let created_at = position(&res);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["name"], "DemoProj");
    assert_eq!(created["repo"], "https://github.com/demo/repo");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/projects/{id}"));

    // The same name again, in another case: 409.
    let res = c
        .post(&projects)
        .bearer_auth(&token)
        .json(&json!({"name": "demoproj", "repo": "https://github.com/demo/other"}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::CONFLICT, "CONFLICT").await;

    // More projects, then a paginated list that waits for the last write.
    let mut last = created_at.clone();
    for n in 1..=4 {
        let res = c
            .post(&projects)
            .bearer_auth(&token)
            .json(&json!({"name": format!("Proj {n}"), "repo": "https://example.com/r.git", "build_command": "make"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        last = position(&res);
    }
    let res = c
        .get(format!(
            "{projects}?per_page=2&page=2&sort=name&min_position={last}"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut page: Value = res.json().await.unwrap();
    // The page's keyset cursor (tests/lists.rs follows it) is opaque.
    let next_cursor = page["pagination"]
        .as_object_mut()
        .unwrap()
        .remove("next_cursor");
    assert!(next_cursor.unwrap().is_string());
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "per_page": 2, "total": 5, "pages": 3, "has_next": true, "has_prev": true, "total_capped": false})
    );
    let names: Vec<_> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Proj 2", "Proj 3"]);
    // A page past the end is empty but still counts the list.
    let past: Value = c
        .get(format!("{projects}?per_page=2&page=9&search=proj"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(past["data"], json!([]));
    assert_eq!(past["pagination"]["total"], 5);
    assert_eq!(past["pagination"]["has_prev"], true);
    let res = c
        .get(format!("{projects}?search=demo"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let found: Value = res.json().await.unwrap();
    assert_eq!(found["pagination"]["total"], 1);

    // Get.
    let res = c
        .get(app.url(&location))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(etag(&res), "\"0\"");
    let got: Value = res.json().await.unwrap();
    assert_eq!(got, created);

    // Update with the right revision, then with the stale one: 412.
    let body = json!({"name": "DemoProj2", "repo": "https://github.com/demo/repo", "build_command": "cargo test"});
    let res = c
        .put(app.url(&location))
        .bearer_auth(&token)
        .header("if-match", "\"0\"")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(etag(&res), "\"1\"");
    let updated: Value = res.json().await.unwrap();
    assert_eq!(updated["name"], "DemoProj2");
    assert_eq!(updated["build_command"], "cargo test");
    assert_eq!(updated["created_at"], created["created_at"]);
    let res = c
        .put(app.url(&location))
        .bearer_auth(&token)
        .header("if-match", "\"0\"")
        .json(&json!({"name": "Lost", "repo": "https://github.com/demo/repo"}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED").await;

    // Delete; the project is gone and its name is free again.
    let res = c
        .delete(app.url(&location))
        .bearer_auth(&token)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let deleted_at = position(&res);
    let res = c
        .get(format!("{}?min_position={deleted_at}", app.url(&location)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let res = c
        .post(&projects)
        .bearer_auth(&token)
        .json(&json!({"name": "DemoProj2", "repo": "https://github.com/demo/repo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    app.stop().await;
}

#[actix_web::test]
async fn bad_input_is_a_clear_problem_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let c = &app.client;
    let projects = app.url("/api/v1/projects");
    let head = app.last_written().await;

    let res = c
        .post(&projects)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"name\": \"x\", ")
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::BAD_REQUEST, "BAD_REQUEST").await;

    let res = c
        .post(&projects)
        .bearer_auth(&token)
        .json(&json!({"repo": "https://example.com/r.git"}))
        .send()
        .await
        .unwrap();
    let body = problem(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    assert_eq!(body["errors"][0]["field"], "name");

    let res = c
        .post(&projects)
        .bearer_auth(&token)
        .json(&json!({"name": "x".repeat(101), "repo": "not a url"}))
        .send()
        .await
        .unwrap();
    let body = problem(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let fields: Vec<_> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "repo"]);

    let res = c
        .post(&projects)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;

    let res = c
        .post(&projects)
        .bearer_auth(&token)
        .json(&json!({"name": "big", "repo": "https://example.com/r.git", "build_command": "x".repeat(70_000)}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;

    let res = c
        .get(format!("{projects}?per_page=500&sort=password"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body = problem(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);

    for id in [uuid::Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let res = c
            .get(app.url(&format!("/api/v1/projects/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        problem(res, StatusCode::NOT_FOUND, "NOT_FOUND").await;
        let res = c
            .put(app.url(&format!("/api/v1/projects/{id}")))
            .bearer_auth(&token)
            .json(&json!({"name": "x", "repo": "https://example.com/r.git"}))
            .send()
            .await
            .unwrap();
        problem(res, StatusCode::NOT_FOUND, "NOT_FOUND").await;
        let res = c
            .delete(app.url(&format!("/api/v1/projects/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        problem(res, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    }

    let res = c.get(&projects).send().await.unwrap();
    let body = problem(res, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert!(body["detail"].is_string());
    let res = c
        .post(&projects)
        .bearer_auth("not.a.token")
        .json(&json!({"name": "x", "repo": "https://example.com/r.git"}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    let res = c.get(app.url("/api/v1/nowhere")).send().await.unwrap();
    problem(res, StatusCode::NOT_FOUND, "NOT_FOUND").await;

    assert_eq!(
        app.last_written().await,
        head,
        "a refused request wrote events"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_retried_create_with_the_same_idempotency_key_makes_one_project() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let c = &app.client;
    let body = json!({"name": "Once", "repo": "https://example.com/r.git"});
    let send = |key: &'static str, body: Value| {
        c.post(app.url("/api/v1/projects"))
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send("key-1", body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_location = first.headers()["location"].clone();
    let first_body: Value = first.json().await.unwrap();
    let again = send("key-1", body.clone()).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], first_location);
    let again_body: Value = again.json().await.unwrap();
    assert_eq!(again_body, first_body);
    // The same key for another request is refused.
    let other = send(
        "key-1",
        json!({"name": "Other", "repo": "https://example.com/r.git"}),
    )
    .await
    .unwrap();
    problem(
        other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;
    // A client error is replayed too.
    let dup = send("key-2", body.clone()).await.unwrap();
    problem(dup, StatusCode::CONFLICT, "CONFLICT").await;
    let dup = send("key-2", body).await.unwrap();
    assert_eq!(dup.headers()["idempotent-replayed"], "true");
    problem(dup, StatusCode::CONFLICT, "CONFLICT").await;
    // Counted in the table itself: a reader of $all may be held back by other tests' open
    // transactions on the same server.
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_name LIKE 'project-%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(created, 1);
    app.stop().await;
}

#[actix_web::test]
async fn a_query_given_a_commands_position_sees_its_effect() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let c = &app.client;
    for n in 0..20 {
        let res = c
            .post(app.url("/api/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("P{n}"), "repo": "https://example.com/r.git"}))
            .send()
            .await
            .unwrap();
        let id = res
            .json::<Value>()
            .await
            .map(|v| v["id"].as_str().unwrap().to_owned());
        let res = c
            .put(app.url(&format!("/api/v1/projects/{}", id.unwrap())))
            .bearer_auth(&token)
            .json(&json!({"name": format!("Renamed {n}"), "repo": "https://example.com/r.git"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let at = position(&res);
        let res = c
            .get(app.url(&format!(
                "/api/v1/projects?search=Renamed%20{n}&min_position={at}"
            )))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let list: Value = res.json().await.unwrap();
        assert_eq!(
            list["pagination"]["total"], 1,
            "the read did not see write {n}"
        );
    }
    let res = c
        .get(app.url("/api/v1/projects?min_position=12"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body = problem(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    assert_eq!(body["errors"][0]["field"], "min_position");
    app.stop().await;
}

#[actix_web::test]
async fn a_rebuilt_projects_read_model_has_identical_rows() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let c = &app.client;
    let mut ids = Vec::new();
    for n in 0..12 {
        let res = c
            .post(app.url("/api/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("R{n}"), "repo": "https://example.com/r.git"}))
            .send()
            .await
            .unwrap();
        ids.push(
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for id in &ids[..4] {
        c.put(app.url(&format!("/api/v1/projects/{id}")))
            .bearer_auth(&token)
            .json(&json!({"name": format!("{id} renamed"), "repo": "https://example.com/x.git", "build_command": "make"}))
            .send()
            .await
            .unwrap();
    }
    c.delete(app.url(&format!("/api/v1/projects/{}", ids[5])))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let head = app.last_written().await.unwrap();
    let wait = Duration::from_secs(20);
    app.projections
        .wait_for("factory.projects", head, wait)
        .await
        .unwrap();
    let snapshot = || async {
        sqlx::query_as::<_, (uuid::Uuid, String, String, Option<String>, i64, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>, String)>(
            "SELECT id, name, repo_url, build_command, revision, created_at, updated_at, created_by \
             FROM projects ORDER BY id",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap()
    };
    let before = snapshot().await;
    assert_eq!(before.len(), 11);
    app.projections
        .rebuild("factory.projects")
        .await
        .unwrap()
        .finished()
        .await
        .unwrap();
    app.projections
        .wait_for("factory.projects", head, wait)
        .await
        .unwrap();
    assert_eq!(snapshot().await, before);
    app.stop().await;
}

/// Creates a project; the answer's status and body.
async fn create(app: &TestApp, token: &str, name: &str, repo: &str) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.url("/api/v1/projects"))
        .bearer_auth(token)
        .json(&json!({"name": name, "repo": repo}))
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

#[actix_web::test]
async fn a_look_alike_of_a_project_name_is_taken_and_invisible_characters_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let repo = "https://example.com/r.git";
    assert_eq!(
        create(&app, &token, "AlphaProj", repo).await.0,
        StatusCode::CREATED
    );
    // Cyrillic capital A (U+0410); full-width letters (normalized to `AlphaProj` itself).
    for look_alike in ["\u{410}lphaProj", "ＡｌｐｈａＰｒｏｊ"] {
        let (status, body) = create(&app, &token, look_alike, repo).await;
        assert_eq!(status, StatusCode::CONFLICT, "{look_alike:?}: {body}");
    }
    for hidden in ["Alpha\u{200b}Proj", "AlphaProj\u{202e}"] {
        let (status, body) = create(&app, &token, hidden, repo).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{hidden:?}: {body}");
        assert_eq!(body["errors"][0]["field"], "name", "{body}");
    }
    // What is stored and shown is the normalized form.
    let (status, body) = create(&app, &token, "ＢｅｔａＰｒｏｊ", repo).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["name"], "BetaProj");
    app.stop().await;
}

#[actix_web::test]
async fn a_repository_on_the_servers_disk_is_refused_unless_the_operator_allows_it() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let head = app.last_written().await;
    for local in [
        "file:///etc",
        "/etc/passwd",
        "ext::sh -c id",
        "../other-tenant",
    ] {
        let (status, body) = create(&app, &token, "Local", local).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{local:?}: {body}");
        assert_eq!(body["code"], "VALIDATION_ERROR");
        assert_eq!(body["errors"][0]["field"], "repo", "{body}");
    }
    assert_eq!(
        app.last_written().await,
        head,
        "a refused request wrote events"
    );
    // An update cannot move a project onto the disk either.
    let (_, created) = create(&app, &token, "Remote", "git@github.com:demo/repo.git").await;
    let res = app
        .client
        .put(app.url(&format!(
            "/api/v1/projects/{}",
            created["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .json(&json!({"name": "Remote", "repo": "file:///etc"}))
        .send()
        .await
        .unwrap();
    let body = problem(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    assert_eq!(body["errors"][0]["field"], "repo");
    app.stop().await;

    let app = TestApp::spawn_with(TestApp::config_with_local_repos()).await;
    let token = app.token().await;
    let (status, body) = create(&app, &token, "Local", "file:///srv/git/demo.git").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["repo"], "file:///srv/git/demo.git");
    // Remote helpers run commands: refused whatever the configuration.
    let (status, body) = create(&app, &token, "Helper", "ext::sh -c id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    app.stop().await;
}
