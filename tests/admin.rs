//! The projections' administration: rebuilds beside the old read model through the API while
//! clients write and read, who may use it, and the binary's `verify` and `projections rebuild`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use atelier_projections::rebuild::{Purpose, SchemaLock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod common;

use common::{Client, TestApp};

/// Waits until no rebuild runs any more, on the server's registry (every status change wakes
/// the wait: no polling), then reads `/admin/projections`.
async fn rebuilds_finished(c: &Client<'_>) -> Vec<Value> {
    for projection in atelier_projections::all() {
        c.app
            .projections
            .wait_status(
                projection.name(),
                |s| s.rebuild.as_ref().is_none_or(|r| !r.running),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
    }
    let list = c
        .json(
            Method::GET,
            "/api/v1/admin/projections",
            None,
            StatusCode::OK,
        )
        .await;
    list["data"].as_array().unwrap().clone()
}

async fn create_project(client: &reqwest::Client, base: &str, token: &str, name: &str) {
    let res = client
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(token)
        .json(&json!({"name": name, "repo": "https://example.com/x.git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

/// The names of the organization's projects (at most 100), read after the last write.
async fn project_names(c: &Client<'_>) -> BTreeSet<String> {
    let page = c
        .json(
            Method::GET,
            &format!("/api/v1/projects?per_page=100&{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn rebuilding_every_projection_while_clients_write_and_list_never_shows_a_shorter_list() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let mut written = BTreeSet::new();
    for i in 0..10 {
        let name = format!("before-{i}");
        create_project(&app.client, &app.base, &c.token, &name).await;
        written.insert(name);
    }
    app.settle().await;
    let stop = Arc::new(AtomicBool::new(false));

    let writer = {
        let (client, base, token, stop) = (
            app.client.clone(),
            app.base.clone(),
            c.token.clone(),
            stop.clone(),
        );
        actix_web::rt::spawn(async move {
            let mut names = Vec::new();
            while !stop.load(Ordering::SeqCst) && names.len() < 60 {
                let name = format!("during-{}", names.len());
                create_project(&client, &base, &token, &name).await;
                names.push(name);
            }
            names
        })
    };
    let reader = {
        let (client, base, token, stop) = (
            app.client.clone(),
            app.base.clone(),
            c.token.clone(),
            stop.clone(),
        );
        actix_web::rt::spawn(async move {
            let mut seen = 10;
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                let res = client
                    .get(format!("{base}/api/v1/projects?per_page=1"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let page: Value = res.json().await.unwrap();
                let total = page["pagination"]["total"].as_u64().unwrap();
                // Projects are only created: a list never shows fewer than one before it.
                assert!(total >= seen, "a list showed {total} projects after {seen}");
                seen = total;
                reads += 1;
            }
            reads
        })
    };

    let names: Vec<String> = c
        .json(
            Method::GET,
            "/api/v1/admin/projections",
            None,
            StatusCode::OK,
        )
        .await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), atelier_projections::all().len());
    for name in &names {
        let started = c
            .json(
                Method::POST,
                &format!("/api/v1/admin/projections/{name}/rebuild"),
                None,
                StatusCode::ACCEPTED,
            )
            .await;
        assert_eq!(started["name"], name.as_str());
        assert_eq!(started["rebuild"]["running"], true, "{started}");
    }
    let after = rebuilds_finished(&c).await;
    stop.store(true, Ordering::SeqCst);
    let during = writer.await.unwrap();
    let reads = reader.await.unwrap();
    assert!(reads > 0);
    for p in &after {
        assert_eq!(p["rebuild"]["error"], Value::Null, "{p}");
        assert!(p["generation"].as_i64().unwrap() >= 1, "{p}");
    }
    written.extend(during);
    assert_eq!(project_names(&c).await, written);
    app.settle().await;
    let listed = c
        .json(
            Method::GET,
            "/api/v1/admin/projections",
            None,
            StatusCode::OK,
        )
        .await;
    for p in listed["data"].as_array().unwrap() {
        assert_eq!(p["state"], "live", "{p}");
        assert_eq!(p["lag_events"], 0, "{p}");
        assert_eq!(p["lag_events_capped"], false, "{p}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn only_a_superadmin_administers_projections_and_unknown_or_busy_ones_are_refused() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let anonymous = app
        .client
        .get(app.url("/api/v1/admin/projections"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    c.json(
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": "carol", "email": "carol@example.com", "password": "carols password"})),
        StatusCode::CREATED,
    )
    .await;
    let carol = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "carol", "password": "carols password"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (method, path) in [
        (Method::GET, "/api/v1/admin/projections"),
        (
            Method::POST,
            "/api/v1/admin/projections/factory.projects/rebuild",
        ),
    ] {
        let res = app
            .client
            .request(method, app.url(path))
            .bearer_auth(&carol)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "FORBIDDEN");
    }

    let unknown = c
        .json(
            Method::POST,
            "/api/v1/admin/projections/factory.nothing/rebuild",
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(unknown["code"], "NOT_FOUND");

    // Another process rebuilding it holds its lock.
    let elsewhere = SchemaLock::try_acquire(&app.pool, Purpose::Rebuild, "factory.projects")
        .await
        .unwrap()
        .unwrap();
    let busy = c
        .json(
            Method::POST,
            "/api/v1/admin/projections/factory.projects/rebuild",
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(busy["code"], "CONFLICT");
    elsewhere.release().await;
    let started = c
        .json(
            Method::POST,
            "/api/v1/admin/projections/factory.projects/rebuild",
            None,
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(started["state"], "rebuilding", "{started}");
    rebuilds_finished(&c).await;
    app.stop().await;
}

/// Runs the binary on the test server's database.
async fn atelier(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn projects_rows(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT to_jsonb(p)::text FROM projects p ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[actix_web::test]
async fn verify_passes_on_what_a_server_wrote_and_names_the_table_and_row_someone_tampered_with() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    for i in 0..5 {
        create_project(&app.client, &app.base, &c.token, &format!("p-{i}")).await;
    }
    app.settle().await;
    let (ok, stdout, stderr) = atelier(&app, &["verify"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("factory.projects: OK"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains(": OK at ")).count(),
        atelier_projections::all().len(),
        "{stdout}"
    );

    sqlx::query("UPDATE projects SET name = 'tampered' WHERE name = 'p-3'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (ok, stdout, stderr) = atelier(&app, &["verify"]).await;
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("factory.projects: MISMATCH"), "{stdout}");
    assert!(
        stdout.contains("table projects: 1 row(s) only live, 1 row(s) only rebuilt"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("only live:") && l.contains("\"tampered\"")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("only rebuilt:") && l.contains("\"p-3\"")),
        "{stdout}"
    );
    assert!(stderr.contains("factory.projects"), "{stderr}");
    app.stop().await;
}

#[actix_web::test]
async fn a_rebuild_by_the_binary_keeps_the_data_and_the_running_server_continues_from_it() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    for i in 0..5 {
        create_project(&app.client, &app.base, &c.token, &format!("p-{i}")).await;
    }
    app.settle().await;
    let before = projects_rows(&app).await;
    let generation = |app: &TestApp| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT generation FROM projection_checkpoints WHERE name = 'factory.projects'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let first = generation(&app).await;

    let (ok, stdout, stderr) = atelier(&app, &["projections", "rebuild", "--all"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("factory.projects rebuilt up to"),
        "{stdout}"
    );
    assert_eq!(projects_rows(&app).await, before);
    assert_eq!(generation(&app).await, first + 1);

    // The server's runner is fenced by the swap and continues from the new generation.
    create_project(&app.client, &app.base, &c.token, "after").await;
    let names = project_names(&c).await;
    assert_eq!(names.len(), 6);
    assert!(names.contains("after"));
    let (ok, stdout, _) = atelier(&app, &["projections", "rebuild", "factory.projects"]).await;
    assert!(ok, "{stdout}");
    let (ok, _, stderr) = atelier(&app, &["projections", "rebuild", "factory.nothing"]).await;
    assert!(!ok);
    assert!(stderr.contains("no projection is named"), "{stderr}");
    app.stop().await;
}
