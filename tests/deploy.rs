//! Deployments through real HTTP: the frameworks catalog, the seed's validation, the simulated
//! driver through every state (stop, start, variables, rollback, delete), the process driver
//! running a real app from a local repository, the rate limit, targets, stats, and a runner
//! restart in the middle of a rollout.

mod common;

use std::path::Path;
use std::time::Duration;

use atelier_commands::deploy::driver::AddressPool;
use atelier_domain::Aggregate;
use atelier_domain::deploy::deployment::Deployment;
use atelier_http::deploy::deployments::CreationLimit;
use atelier_http::server::{DeploySettings, ProvisionerSettings, ServerConfig};
use common::{Client, TestApp, site_repo};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn simulated(time_scale: f64) -> ServerConfig {
    ServerConfig {
        deployments: Some(DeploySettings {
            runner_id: "test-runner".to_owned(),
            concurrency: 8,
            driver: ProvisionerSettings::Simulated {
                time_scale,
                failure_rate: 0.0,
                pool: AddressPool::default(),
            },
        }),
        ..TestApp::config()
    }
}

fn process(work_dir: &Path, mirror: &Path, ready_timeout: Duration) -> ServerConfig {
    ServerConfig {
        deployments: Some(DeploySettings {
            runner_id: "test-runner".to_owned(),
            concurrency: 4,
            driver: ProvisionerSettings::Process {
                work_dir: work_dir.to_owned(),
                mirrors: vec![(
                    "https://github.com/".to_owned(),
                    format!("file://{}/", mirror.display()),
                )],
                build_timeout: Duration::from_secs(60),
                ready_timeout,
            },
        }),
        ..TestApp::config()
    }
}

impl Client<'_> {
    async fn deployment(&self, id: &str) -> Value {
        self.json(
            Method::GET,
            &format!("/api/v1/deployments/{id}?{}", self.seen().await),
            None,
            StatusCode::OK,
        )
        .await
    }

    async fn create(&self, body: Value) -> Value {
        self.json(
            Method::POST,
            "/api/v1/deploy",
            Some(body),
            StatusCode::ACCEPTED,
        )
        .await
    }

    /// Follows a deployment's log until it settles: its lines and the end's data.
    async fn follow(&self, id: &str) -> (Vec<Value>, Value) {
        let res = self
            .send(
                Method::GET,
                &format!(
                    "/api/v1/deployments/{id}/logs?follow=true&{}",
                    self.seen().await
                ),
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let mut stream = res.bytes_stream();
        let mut buf = String::new();
        let mut lines = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let chunk = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("the deployment did not settle in time")
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
                    "end" => return (lines, serde_json::from_str(data).unwrap()),
                    _ => {}
                }
            }
        }
    }

    /// Acts on a deployment, waits until it settles again, and returns it.
    async fn act_and_settle(&self, id: &str, action: &str, body: Option<Value>) -> Value {
        self.json(
            Method::POST,
            &format!("/api/v1/deployments/{id}/{action}"),
            body,
            StatusCode::ACCEPTED,
        )
        .await;
        self.follow(id).await;
        self.deployment(id).await
    }
}

fn spec(name: &str, framework: &str) -> Value {
    json!({
        "name": name,
        "deployment_type": "vm",
        "framework": framework,
        "github_url": "https://github.com/acme/site",
        "resources": {"cores": 2, "memory": 2048, "disk": 20}
    })
}

/// Waits (on the log itself, not on time) for an event of this type on the deployment's stream.
async fn event_appended(app: &TestApp, id: &str, event_type: &str) {
    app.event_appended(&format!("{}-{id}", Deployment::CATEGORY), event_type)
        .await;
}

#[actix_web::test]
async fn the_frameworks_catalog_has_the_seeds_frameworks_and_the_ones_users_expect() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let body = c
        .json(Method::GET, "/api/v1/frameworks", None, StatusCode::OK)
        .await;
    assert_eq!(body["success"], true);
    let django = &body["frameworks"]["django"];
    assert_eq!(django["name"], "Django");
    assert_eq!(django["language"], "python");
    assert_eq!(django["version"], "4.2");
    assert_eq!(django["port"], 8000);
    assert_eq!(django["install_cmd"], "pip install django gunicorn");
    assert_eq!(body["frameworks"]["laravel"]["version"], "10.x");
    for key in [
        "flask",
        "fastapi",
        "express",
        "next",
        "rails",
        "spring-boot",
        "static",
    ] {
        let f = &body["frameworks"][key];
        assert!(f["start_cmd"].as_str().is_some(), "{key}: {f}");
        assert!(f["build_cmd"].as_str().is_some(), "{key}: {f}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn every_invalid_field_of_a_deployment_is_reported_at_once_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let bad = json!({
        "name": "a!",
        "deployment_type": "docker",
        "framework": "cobol",
        "github_url": "https://gitlab.com/owner/repo",
        "resources": {"cores": 0, "memory": "lots", "disk": 9999}
    });
    let problem = c
        .json(
            Method::POST,
            "/api/v1/deploy",
            Some(bad),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(problem["code"], "VALIDATION_ERROR");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in [
        "name",
        "deployment_type",
        "framework",
        "github_url",
        "resources.memory",
    ] {
        assert!(fields.contains(&field), "{field} missing from {problem}");
    }
    // The type is unknown, so the ranges cannot be judged; with a type they are, per type.
    let lxc = json!({
        "name": "my-app",
        "deployment_type": "lxc",
        "framework": "django",
        "github_url": "https://github.com/user/repo",
        "resources": {"cores": 9, "memory": 128, "disk": 201}
    });
    let problem = c
        .json(
            Method::POST,
            "/api/v1/deployments",
            Some(lxc),
            StatusCode::BAD_REQUEST,
        )
        .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["resources.cores", "resources.memory", "resources.disk"],
        "{problem}"
    );
    // An unknown target is a 400 on its field.
    let mut with_target = spec("my-app", "django");
    with_target["target_id"] = json!(uuid::Uuid::now_v7());
    let problem = c
        .json(
            Method::POST,
            "/api/v1/deployments",
            Some(with_target),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(problem["errors"][0]["field"], "target_id");
    app.settle().await;
    let list = c
        .json(Method::GET, "/api/v1/deployments", None, StatusCode::OK)
        .await;
    assert_eq!(list["pagination"]["total"], 0);
    app.stop().await;
}

#[actix_web::test]
async fn a_simulated_deployment_runs_stops_starts_changes_variables_rolls_back_and_is_deleted() {
    let app = TestApp::spawn_with(simulated(0.001)).await;
    let c = Client::new(&app).await;
    let created = c.create(spec("my-app", "django")).await;
    assert_eq!(created["status"], "pending");
    assert_eq!(created["ip_address"], Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();

    let (lines, end) = c.follow(&id).await;
    assert_eq!(end["status"], "running", "{lines:?}");
    let d = c.deployment(&id).await;
    assert_eq!(d["ip_address"], "192.168.100.10");
    assert_eq!(d["vm_id"], 100);
    assert_eq!(d["access_url"], "http://192.168.100.10:8000");
    assert_eq!(d["version"], 1);
    assert!(lines.iter().any(|l| {
        l["line"]
            .as_str()
            .unwrap()
            .contains("terraform: creating vm 100")
    }));

    // The name is taken in this organization.
    let taken = c
        .json(
            Method::POST,
            "/api/v1/deployments",
            Some(spec("MY-APP", "flask")),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(taken["detail"].as_str().unwrap().contains("MY-APP"));

    // Stop, then start again (through deploying, back to running).
    let stopped = c
        .json(
            Method::POST,
            &format!("/api/v1/deployments/{id}/stop"),
            None,
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(stopped["status"], "stopped");
    let started = c.act_and_settle(&id, "start", None).await;
    assert_eq!(started["status"], "running");
    assert_eq!(started["ip_address"], "192.168.100.10");

    // No earlier version yet.
    let none = c
        .json(
            Method::POST,
            &format!("/api/v1/deployments/{id}/rollback"),
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(none["code"], "NO_SUCH_VERSION");

    // New variables: version 2, redeployed; the secret is masked and never in the log.
    let env = c
        .json(
            Method::PUT,
            &format!("/api/v1/deployments/{id}/env"),
            Some(json!({"variables": [
                {"name": "MODE", "value": "production"},
                {"name": "API_TOKEN", "value": "hunter2-secret", "secret": true}
            ]})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(env["version"], 2);
    c.follow(&id).await;
    let d = c.deployment(&id).await;
    assert_eq!(d["status"], "running");
    assert_eq!(d["version"], 2);
    let env = c
        .json(
            Method::GET,
            &format!("/api/v1/deployments/{id}/env"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        env["variables"],
        json!([
            {"name": "API_TOKEN", "value": "********", "secret": true},
            {"name": "MODE", "value": "production", "secret": false}
        ])
    );
    let leaked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM events WHERE data::text LIKE '%hunter2%') \
         + (SELECT count(*) FROM deployment_logs WHERE line LIKE '%hunter2%') \
         + (SELECT count(*) FROM deployments WHERE env::text LIKE '%hunter2%')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);

    // WindFlow's rollback to revision 1: version 3 re-applies version 1's spec.
    let rolled = c
        .act_and_settle(&id, "rollback", Some(json!({"to_revision": 1})))
        .await;
    assert_eq!(rolled["status"], "running");
    assert_eq!(rolled["version"], 3);
    assert_eq!(rolled["env"], json!([]));
    let versions = c
        .json(
            Method::GET,
            &format!("/api/v1/deployments/{id}/versions"),
            None,
            StatusCode::OK,
        )
        .await;
    let causes: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["rollback", "env", "created"]);
    assert_eq!(versions[0]["rolled_back_from"], 2);
    assert_eq!(versions[1]["spec"]["env"][0]["value"], "********");
    let missing = c
        .json(
            Method::POST,
            &format!("/api/v1/deployments/{id}/rollback"),
            Some(json!({"to_version": 9})),
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(missing["code"], "NO_SUCH_VERSION");

    let status = c
        .json(
            Method::GET,
            &format!("/api/v1/deployments/{id}/status"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(status["status"], "running");
    assert_eq!(status["in_progress"], false);

    let stats = c
        .json(
            Method::GET,
            &format!("/api/v1/stats?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        stats["deployments"],
        json!({"total_deployments": 1, "running_deployments": 1, "failed_deployments": 0, "success_rate": 100.0})
    );

    // Delete: the runner destroys it; the history stays readable; the name is free again.
    let deleted = c
        .json(
            Method::DELETE,
            &format!("/api/v1/deployments/{id}"),
            None,
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(deleted["status"], "deleted");
    event_appended(&app, &id, "DeploymentDestroyed").await;
    let d = c.deployment(&id).await;
    assert_eq!(d["status"], "deleted");
    assert_eq!(d["destroyed"], true);
    assert_eq!(d["ip_address"], Value::Null);
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM deploy_allocations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(held, 0);
    let illegal = c
        .json(
            Method::POST,
            &format!("/api/v1/deployments/{id}/start"),
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(illegal["code"], "ILLEGAL_TRANSITION");
    let list = c
        .json(
            Method::GET,
            &format!("/api/v1/deployments?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["pagination"]["total"], 0);
    c.create(spec("my-app", "django")).await;
    app.stop().await;
}

#[actix_web::test]
async fn another_organizations_deployment_is_not_found_and_viewers_cannot_deploy() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let created = c.create(spec("my-app", "static")).await;
    let id = created["id"].as_str().unwrap();
    let org = c
        .json(
            Method::POST,
            "/api/v1/organizations",
            Some(json!({"name": "Other org"})),
            StatusCode::CREATED,
        )
        .await;
    let other = org["id"].as_str().unwrap();
    let res = c
        .app
        .client
        .get(c.app.url(&format!("/api/v1/deployments/{id}")))
        .bearer_auth(&c.token)
        .header("x-organization-id", other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    for action in ["stop", "cancel", "rollback"] {
        let res = c
            .app
            .client
            .post(c.app.url(&format!("/api/v1/deployments/{id}/{action}")))
            .bearer_auth(&c.token)
            .header("x-organization-id", other)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{action}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn the_creation_after_the_limit_answers_429_with_retry_after_and_refused_ones_do_not_count() {
    let mut config = TestApp::config();
    config.http.deploy_creations = CreationLimit(atelier_commands::rate_limit::Limit {
        max: 3,
        window: Duration::from_secs(60),
    });
    let app = TestApp::spawn_with(config).await;
    let c = Client::new(&app).await;
    c.create(spec("app-1", "static")).await;
    // A conflict is refused after the count, and given back.
    c.json(
        Method::POST,
        "/api/v1/deployments",
        Some(spec("app-1", "static")),
        StatusCode::CONFLICT,
    )
    .await;
    c.create(spec("app-2", "static")).await;
    c.create(spec("app-3", "static")).await;
    let res = c
        .send(
            Method::POST,
            "/api/v1/deploy",
            Some(spec("app-4", "static")),
        )
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "RATE_LIMITED");
    app.stop().await;
}

#[actix_web::test]
async fn targets_are_unique_per_organization_and_a_deployment_names_one() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let prod = c
        .json(
            Method::POST,
            "/api/v1/targets",
            Some(json!({"name": "Production", "kind": "prod", "description": "live"})),
            StatusCode::CREATED,
        )
        .await;
    c.json(
        Method::POST,
        "/api/v1/targets",
        Some(json!({"name": "production", "kind": "staging"})),
        StatusCode::CONFLICT,
    )
    .await;
    let bad = c
        .json(
            Method::POST,
            "/api/v1/targets",
            Some(json!({"name": "", "kind": "moon"})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(bad["errors"].as_array().unwrap().len(), 2);
    // WindFlow's environment_count on organizations.
    let orgs = c
        .json(
            Method::GET,
            &format!("/api/v1/organizations?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    let counts: Vec<u64> = orgs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            o["environment_count"]
                .as_u64()
                .expect("every organization has one")
        })
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 1, "{orgs}");
    let mut body = spec("my-app", "static");
    body["target_id"] = prod["id"].clone();
    let d = c.create(body).await;
    assert_eq!(d["target_id"], prod["id"]);
    let list = c
        .json(
            Method::GET,
            &format!(
                "/api/v1/deployments?target_id={}&{}",
                prod["id"].as_str().unwrap(),
                c.seen().await
            ),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["pagination"]["total"], 1);
    let targets = c
        .json(
            Method::GET,
            &format!("/api/v1/targets?kind=prod&{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(targets["data"][0]["name"], "Production");
    let id = prod["id"].as_str().unwrap();
    let renamed = c
        .json(
            Method::PUT,
            &format!("/api/v1/targets/{id}"),
            Some(json!({"name": "prod-eu", "kind": "prod"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(renamed["name"], "prod-eu");
    c.json(
        Method::DELETE,
        &format!("/api/v1/targets/{id}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    c.json(
        Method::GET,
        &format!("/api/v1/targets/{id}?{}", c.seen().await),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn a_rollout_cut_by_a_runner_stop_is_failed_as_interrupted_and_a_running_one_is_adopted() {
    // Provisioning takes 30 to 80 s: the stop comes in the middle.
    let config = simulated(10.0);
    let settings = config.deployments.clone().unwrap();
    let app = TestApp::spawn_with(config).await;
    let c = Client::new(&app).await;
    let id = c.create(spec("slow-app", "django")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    event_appended(&app, &id, "DeploymentProvisioning").await;
    app.services.stop_workers().await;
    assert_eq!(c.deployment(&id).await["status"], "provisioning");

    let quick = DeploySettings {
        driver: ProvisionerSettings::Simulated {
            time_scale: 0.001,
            failure_rate: 0.0,
            pool: AddressPool::default(),
        },
        ..settings
    };
    let runner = atelier_http::deploy::runner::start_runner(&app.services, &quick);
    app.services.add_worker(Box::new(runner)).await;
    let (lines, end) = c.follow(&id).await;
    assert_eq!(end["status"], "failed");
    assert!(
        lines
            .iter()
            .any(|l| l["line"] == "the server stopped while the deployment was rolled out"),
        "{lines:?}"
    );
    let d = c.deployment(&id).await;
    assert_eq!(d["failure"], "interrupted");
    assert_eq!(d["ip_address"], Value::Null);

    // Redeployed, it runs; a runner restart adopts it (the simulated VM is still there).
    let running = c.act_and_settle(&id, "redeploy", None).await;
    assert_eq!(running["status"], "running");
    app.services.stop_workers().await;
    let runner = atelier_http::deploy::runner::start_runner(&app.services, &quick);
    app.services.add_worker(Box::new(runner)).await;
    // A cancel after the restart is honoured only if a rollout is under way: none is.
    let conflict = c
        .json(
            Method::POST,
            &format!("/api/v1/deployments/{id}/cancel"),
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(conflict["code"], "ILLEGAL_TRANSITION");
    let stopped = c
        .json(
            Method::POST,
            &format!("/api/v1/deployments/{id}/stop"),
            None,
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["runner"], "test-runner");
    app.stop().await;
}

#[actix_web::test]
async fn a_cancel_during_provisioning_fails_the_deployment_as_cancelled_and_frees_its_address() {
    let app = TestApp::spawn_with(simulated(10.0)).await;
    let c = Client::new(&app).await;
    let id = c.create(spec("slow-app", "django")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    event_appended(&app, &id, "DeploymentProvisioning").await;
    let cancelled = c
        .json(
            Method::POST,
            &format!("/api/v1/deployments/{id}/cancel"),
            None,
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(cancelled["status"], "failed");
    assert_eq!(cancelled["failure"], "cancelled");
    // The runner destroys what it had: the allocation goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM deploy_allocations")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if held == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the allocation was not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

fn answers(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)).is_ok()
}

#[actix_web::test]
async fn the_process_driver_clones_runs_stops_starts_and_destroys_a_real_app() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    site_repo(&mirror, "<h1>hello from atelier</h1>\n");
    let work = dir.path().join("deployments");
    let app = TestApp::spawn_with(process(&work, &mirror, Duration::from_secs(30))).await;
    let c = Client::new(&app).await;
    let mut body = spec("site", "static");
    body["env"] = json!({"GREETING": "bonjour"});
    let id = c.create(body).await["id"].as_str().unwrap().to_owned();
    let (lines, end) = c.follow(&id).await;
    assert_eq!(end["status"], "running", "{lines:?}");
    let d = c.deployment(&id).await;
    let url = d["access_url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(d["ip_address"], "127.0.0.1");
    assert_eq!(d["vm_id"], 100);
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert_eq!(page, "<h1>hello from atelier</h1>\n");
    assert!(work.join(&id).join("app").join("index.html").exists());

    // Stop: the app no longer answers; start: it answers again.
    c.json(
        Method::POST,
        &format!("/api/v1/deployments/{id}/stop"),
        None,
        StatusCode::ACCEPTED,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while answers(&url) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app still answers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = c.act_and_settle(&id, "start", None).await;
    assert_eq!(started["status"], "running");
    let url = started["access_url"].as_str().unwrap().to_owned();
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(page.contains("hello from atelier"));

    // Delete: the process and the directory go.
    c.json(
        Method::DELETE,
        &format!("/api/v1/deployments/{id}"),
        None,
        StatusCode::ACCEPTED,
    )
    .await;
    event_appended(&app, &id, "DeploymentDestroyed").await;
    assert!(!work.join(&id).exists());
    assert!(!answers(&url));
    app.stop().await;
}

#[actix_web::test]
async fn a_repository_that_cannot_be_cloned_fails_the_deployment_with_the_reason_and_leaves_nothing()
 {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir_all(&mirror).unwrap();
    let work = dir.path().join("deployments");
    let app = TestApp::spawn_with(process(&work, &mirror, Duration::from_secs(30))).await;
    let c = Client::new(&app).await;
    let id = c.create(spec("site", "static")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (lines, end) = c.follow(&id).await;
    assert_eq!(end["status"], "failed", "{lines:?}");
    let d = c.deployment(&id).await;
    assert_eq!(d["failure"], "error");
    assert!(
        d["error_message"].as_str().unwrap().contains("clone"),
        "{d}"
    );
    assert!(!work.join(&id).exists());
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM deploy_allocations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(held, 0);
    app.stop().await;
}

/// Opens WindFlow's log socket for a deployment; the text messages until the close, and its code.
async fn log_socket(app: &TestApp, token: &str, id: &str, query: &str) -> (Vec<Value>, u16) {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/api/v1/deployments/{id}/logs?{query}",
        app.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut messages = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("the socket neither sent nor closed in time");
        match message {
            Some(Ok(Message::Text(text))) => messages.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return (messages, frame.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (messages, 1006),
        }
    }
}

#[actix_web::test]
async fn the_log_socket_sends_lines_and_status_changes_until_running_and_closes_4003_on_a_foreign_deployment()
 {
    let app = TestApp::spawn_with(simulated(0.2)).await;
    let c = Client::new(&app).await;
    let created = c.create(spec("socket-app", "static")).await;
    let id = created["id"].as_str().unwrap();
    let seen = c.seen().await;
    let (messages, code) = log_socket(&app, &c.token, id, &seen).await;
    assert_eq!(code, 1000, "{messages:?}");
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"end"), "{kinds:?}");
    let end = &messages[messages.len() - 1]["data"];
    assert_eq!(end["status"], "running", "{end}");
    assert!(end["access_url"].is_string(), "{end}");
    let lines: Vec<&Value> = messages.iter().filter(|m| m["type"] == "log").collect();
    assert!(!lines.is_empty(), "no log line: {kinds:?}");
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(
            line["data"]["seq"],
            json!(n),
            "lines in order from 0: {line}"
        );
        assert!(line["data"]["line"].is_string() && line["data"]["at"].is_string());
    }
    assert_eq!(end["next_offset"], json!(lines.len()));
    // The socket opened while the deployment was on its way: it said where it stood.
    assert!(
        messages
            .iter()
            .any(|m| m["type"] == "status" && m["data"]["status"] != "running"),
        "{kinds:?}"
    );

    // From an offset: only what comes after it, and the end at once (it is running).
    let (again, code) =
        log_socket(&app, &c.token, id, &format!("offset={}", lines.len() - 1)).await;
    assert_eq!(code, 1000);
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(again[0]["data"]["seq"], json!(lines.len() - 1));
    assert_eq!(again[1]["type"], "end");

    // Another organization's view of it, and an id that is no deployment: closed with 4003.
    let other = c
        .json(
            Method::POST,
            "/api/v1/organizations",
            Some(json!({"name": "Elsewhere"})),
            StatusCode::CREATED,
        )
        .await;
    let query = format!("organization_id={}", other["id"].as_str().unwrap());
    let (nothing, code) = log_socket(&app, &c.token, id, &query).await;
    assert_eq!((nothing.len(), code), (0, 4003));
    let (nothing, code) = log_socket(&app, &c.token, "not-an-id", "").await;
    assert_eq!((nothing.len(), code), (0, 4003));

    // No credentials: refused before the upgrade.
    let url = format!(
        "{}/api/v1/deployments/{id}/logs",
        app.base.replacen("http://", "ws://", 1)
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    app.stop().await;
}
