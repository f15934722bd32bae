//! Stacks and the assistant, through real HTTP: the offline engine, and the LLM engine against
//! a small OpenAI-compatible server the test starts on 127.0.0.1.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use atelier_commands::output::LogStream;
use atelier_commands::stacks::assistant::LlmSettings;
use atelier_store::{EventStore, Filter, Position};
use common::{Client, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DJANGO: &str = "a Django app with PostgreSQL and Redis behind nginx";

#[actix_web::test]
async fn a_generated_stack_validates_optimizes_into_a_new_version_and_says_who_answered() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let generated = c
        .json(
            Method::POST,
            "/api/v1/stacks/generate",
            Some(json!({"description": DJANGO, "environment_type": "production"})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(generated["assistant"]["engine"], "offline", "{generated}");
    assert_eq!(generated["validation"]["valid"], true, "{generated}");
    let stack = &generated["stack"];
    let id = stack["id"].as_str().unwrap().to_owned();
    let services = stack["configuration"]["services"].as_object().unwrap();
    for wanted in ["postgres", "redis", "nginx"] {
        assert!(
            services.keys().any(|k| k.contains(wanted))
                || services
                    .values()
                    .any(|s| s["image"].as_str().is_some_and(|i| i.starts_with(wanted))),
            "{wanted} is missing: {stack}"
        );
    }
    assert_eq!(stack["version"], 1);
    assert_eq!(stack["status"], "valid");
    assert_eq!(stack["origin"]["by"], "assistant");
    assert_eq!(stack["origin"]["kind"], "generate");
    let hash = stack["origin"]["request_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 64);

    // Validation of the saved stack agrees.
    let report = c
        .json(
            Method::POST,
            &format!("/api/v1/stacks/{id}/validate"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(report["valid"], true, "{report}");

    // Optimized: a new version, its changes listed and diffed, recorded as the assistant's.
    let optimized = c
        .json(
            Method::POST,
            &format!("/api/v1/stacks/{id}/optimize"),
            Some(json!({"goals": ["security", "reliability"]})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(optimized["stack"]["version"], 2, "{optimized}");
    assert_eq!(optimized["stack"]["llm_optimized"], true);
    assert!(
        !optimized["changes"].as_array().unwrap().is_empty(),
        "{optimized}"
    );
    assert!(
        optimized["diff"].as_str().unwrap().contains("+"),
        "{optimized}"
    );
    let history = c
        .json(
            Method::GET,
            &format!("/api/v1/stacks/{id}/history"),
            None,
            StatusCode::OK,
        )
        .await;
    let last = &history["data"][1];
    assert_eq!(last["type"], "StackConfigured", "{history}");
    assert_eq!(last["data"]["origin"]["engine"], "offline");
    assert_eq!(last["data"]["origin"]["kind"], "optimize");

    // Lists and gets show it at its new version.
    let page = c
        .json(
            Method::GET,
            &format!("/api/v1/stacks?search=&{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(page["pagination"]["total"], 1);
    assert_eq!(page["data"][0]["version"], 2);
    assert_eq!(page["data"][0]["llm_optimized"], true);
    app.stop().await;
}

#[actix_web::test]
async fn validation_names_every_error_with_its_path_and_bad_input_is_refused_before_any_work() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let broken = "services:\n  web:\n    image: nginx:1.27\n    depends_on: [api]\n  api:\n    depends_on: [web]\n";
    let report = c
        .json(
            Method::POST,
            "/api/v1/stacks/validate",
            Some(json!({ "configuration": broken })),
            StatusCode::OK,
        )
        .await;
    assert_eq!(report["valid"], false);
    let rules: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"dependency_cycle"), "{report}");
    assert!(rules.contains(&"no_image"), "{report}");
    assert!(
        report["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["path"].as_str().unwrap().starts_with("services")),
        "{report}"
    );
    // Saved, it is kept as invalid.
    let saved = c
        .json(
            Method::POST,
            "/api/v1/stacks",
            Some(json!({"name": "broken", "configuration": broken})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(saved["status"], "invalid");

    // A YAML bomb, a non-mapping and a description out of bounds: 400, nothing written.
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n\
                i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    let before = app.last_written().await;
    for body in [
        json!({"name": "bomb", "configuration": bomb}),
        json!({"name": "list", "configuration": "[1, 2, 3]"}),
        json!({"name": "scalar", "configuration": 42}),
    ] {
        let problem = c
            .json(
                Method::POST,
                "/api/v1/stacks",
                Some(body),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(
            problem["errors"][0]["field"]
                .as_str()
                .unwrap()
                .starts_with("configuration"),
            "{problem}"
        );
    }
    for description in ["too short", &"x".repeat(1001)] {
        c.json(
            Method::POST,
            "/api/v1/stacks/generate",
            Some(json!({ "description": description })),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    for bad in [
        json!({"description": DJANGO, "security_level": "extreme"}),
        json!({"description": DJANGO, "resource_constraints": {"max_cpus": -1}}),
    ] {
        c.json(
            Method::POST,
            "/api/v1/stacks/generate",
            Some(bad),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    c.json(
        Method::POST,
        "/api/v1/llm/optimize",
        Some(json!({"cpu_limit": 0})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(app.last_written().await, before, "nothing was written");
    app.stop().await;
}

#[actix_web::test]
async fn troubleshooting_a_deployment_whose_log_says_the_port_is_in_use_names_that_cause() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let deployment = c
        .json(
            Method::POST,
            "/api/v1/deployments",
            Some(json!({
                "name": "shop", "deployment_type": "vm", "framework": "express",
                "github_url": "https://github.com/acme/shop",
                "resources": {"cores": 1, "memory": 1024, "disk": 10}
            })),
            StatusCode::ACCEPTED,
        )
        .await;
    let id: uuid::Uuid = deployment["id"].as_str().unwrap().parse().unwrap();
    let me = c
        .json(Method::GET, "/api/v1/auth/me", None, StatusCode::OK)
        .await;
    let org: uuid::Uuid = me["organization_id"].as_str().unwrap().parse().unwrap();
    // What a driver writes when the app cannot bind its port.
    let sink = app.services.app.deploy.logs.writer(org, id).await.unwrap();
    sink.line(LogStream::Stdout, "> shop@1.0.0 start");
    sink.line(
        LogStream::Stderr,
        "Error: listen EADDRINUSE: address already in use :::3000",
    );
    sink.close().await;
    let answer = c
        .json(
            Method::POST,
            "/api/v1/llm/troubleshoot",
            Some(json!({ "deployment_id": id })),
            StatusCode::OK,
        )
        .await;
    let first = &answer["causes"][0];
    assert_eq!(first["rule"], "port_in_use", "{answer}");
    assert!(
        first["fixes"].to_string().contains("3000"),
        "the fix names the port: {answer}"
    );
    assert_eq!(answer["assistant"]["engine"], "offline");
    // The consultation is recorded.
    let consultation = answer["consultation_id"].as_str().unwrap();
    let audit = c
        .json(
            Method::GET,
            &format!(
                "/api/v1/audit/streams/consultation-{consultation}?{}",
                c.seen().await
            ),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(audit["data"][0]["type"], "AssistantConsulted", "{audit}");
    assert_eq!(audit["data"][0]["data"]["deployment_id"], id.to_string());
    // Another organization's deployment, or none: 404; neither: 400.
    c.json(
        Method::POST,
        "/api/v1/llm/troubleshoot",
        Some(json!({ "deployment_id": uuid::Uuid::now_v7() })),
        StatusCode::NOT_FOUND,
    )
    .await;
    c.json(
        Method::POST,
        "/api/v1/llm/troubleshoot",
        Some(json!({})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    // Log text works too, and analysis and recommendations answer.
    let oom = c
        .json(
            Method::POST,
            "/api/v1/llm/troubleshoot",
            Some(json!({"logs": "worker exited: OOMKilled (exit code 137)"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(oom["causes"][0]["rule"], "out_of_memory", "{oom}");
    let analysis = c
        .json(
            Method::POST,
            "/api/v1/llm/analyze",
            Some(json!({"configuration": {"services": {"db": {"image": "postgres:16", "ports": ["5432:5432"]}}}})),
            StatusCode::OK,
        )
        .await;
    assert!(
        !analysis["findings"].as_array().unwrap().is_empty(),
        "{analysis}"
    );
    let advice = c
        .json(
            Method::POST,
            "/api/v1/llm/optimize",
            Some(json!({"cpu_limit": 4.0, "memory_limit_mb": 8192, "cpu_usage_p95": 0.2, "memory_usage_p95_mb": 500})),
            StatusCode::OK,
        )
        .await;
    assert!(
        !advice["recommendations"].as_array().unwrap().is_empty(),
        "{advice}"
    );
    app.stop().await;
}

/// What the fake model answers next, and what it was asked.
#[derive(Default)]
struct Fake {
    content: Mutex<String>,
    requests: Mutex<Vec<(Option<String>, Value)>>,
}

async fn completions(
    req: HttpRequest,
    body: web::Json<Value>,
    fake: web::Data<Fake>,
) -> HttpResponse {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    fake.requests
        .lock()
        .unwrap()
        .push((auth, body.into_inner()));
    let content = fake.content.lock().unwrap().clone();
    HttpResponse::Ok().json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}]
    }))
}

#[actix_web::test]
async fn the_llm_engine_answers_with_a_validated_stack_and_a_broken_answer_falls_back_offline() {
    let fake = web::Data::new(Fake::default());
    let server = {
        let fake = fake.clone();
        HttpServer::new(move || {
            App::new()
                .app_data(fake.clone())
                .route("/v1/chat/completions", web::post().to(completions))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap()
    };
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    const KEY: &str = "sk-test-0123456789abcdef";
    let app = TestApp::spawn_with(atelier_http::server::ServerConfig {
        llm: Some(LlmSettings {
            url: format!("http://{addr}/v1"),
            model: "test-model".into(),
            api_key: Some(KEY.into()),
            timeout: Duration::from_secs(10),
            retries: 0,
        }),
        ..TestApp::config()
    })
    .await;
    let c = Client::new(&app).await;
    *fake.content.lock().unwrap() = json!({
        "name": "django-shop",
        "configuration": {
            "services": {
                "web": {"image": "python:3.12-slim", "depends_on": ["db", "cache"]},
                "db": {"image": "postgres:16", "volumes": ["pgdata:/var/lib/postgresql/data"]},
                "cache": {"image": "redis:7"},
                "proxy": {"image": "nginx:1.27", "ports": ["80:80"], "depends_on": ["web"]}
            },
            "volumes": {"pgdata": {}}
        },
        "notes": ["gunicorn serves the app"]
    })
    .to_string();
    let generated = c
        .json(
            Method::POST,
            "/api/v1/stacks/generate",
            Some(json!({ "description": DJANGO })),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(generated["assistant"]["engine"], "llm", "{generated}");
    assert_eq!(generated["assistant"]["model"], "test-model");
    assert_eq!(generated["validation"]["valid"], true);
    assert_eq!(generated["stack"]["name"], "django-shop");
    assert_eq!(generated["stack"]["origin"]["model"], "test-model");
    {
        let requests = fake.requests.lock().unwrap();
        let (auth, body) = &requests[0];
        assert_eq!(auth.as_deref(), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["response_format"]["type"], "json_object");
        assert!(
            body["messages"][1]["content"]
                .as_str()
                .unwrap()
                .contains("Django")
        );
    }

    // Not JSON, then JSON that is not a valid stack: the offline engine answers, saying why.
    for broken in [
        "Sure! Here is your stack: services: web".to_owned(),
        json!({"name": "bad", "configuration": {"services": {"web": {"depends_on": ["web"]}}}})
            .to_string(),
    ] {
        *fake.content.lock().unwrap() = broken;
        let fallback = c
            .json(
                Method::POST,
                "/api/v1/stacks/generate",
                Some(json!({ "description": DJANGO })),
                StatusCode::CREATED,
            )
            .await;
        assert_eq!(fallback["assistant"]["engine"], "offline", "{fallback}");
        assert!(fallback["assistant"]["fallback"].is_string(), "{fallback}");
        assert_eq!(fallback["validation"]["valid"], true);
        // The next generation needs a name of its own: the offline one is taken now.
        c.json(
            Method::DELETE,
            &format!(
                "/api/v1/stacks/{}",
                fallback["stack"]["id"].as_str().unwrap()
            ),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    }

    // The key is in no event.
    let mut after = Position::START;
    loop {
        let slice = app.store.read_all(after, 1000, &Filter::All).await.unwrap();
        for e in &slice.events {
            let text = format!("{}{}", e.data, e.metadata);
            assert!(!text.contains(KEY), "the key leaked into {}", e.event_type);
        }
        if slice.scanned == 0 {
            break;
        }
        after = slice.next;
    }
    app.stop().await;
    handle.stop(true).await;
}

#[actix_web::test]
async fn a_generated_stack_deploys_to_a_target_with_the_simulated_driver() {
    use atelier_commands::deploy::driver::AddressPool;
    use atelier_http::server::{DeploySettings, ProvisionerSettings};
    let app = TestApp::spawn_with(atelier_http::server::ServerConfig {
        deployments: Some(DeploySettings {
            runner_id: "test-runner".to_owned(),
            concurrency: 4,
            driver: ProvisionerSettings::Simulated {
                time_scale: 0.001,
                failure_rate: 0.0,
                pool: AddressPool::default(),
            },
        }),
        ..TestApp::config()
    })
    .await;
    let c = Client::new(&app).await;
    let target = c
        .json(
            Method::POST,
            "/api/v1/targets",
            Some(json!({"name": "production", "kind": "prod"})),
            StatusCode::CREATED,
        )
        .await;
    let target_id = target["id"].as_str().unwrap().to_owned();
    let generated = c
        .json(
            Method::POST,
            "/api/v1/stacks/generate",
            Some(json!({ "description": DJANGO, "name": "Shop Stack" })),
            StatusCode::CREATED,
        )
        .await;
    let stack = generated["stack"]["id"].as_str().unwrap().to_owned();
    let deployed = c
        .json(
            Method::POST,
            &format!("/api/v1/stacks/{stack}/deploy"),
            Some(json!({ "target_id": target_id })),
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(deployed["stack_version"], 1, "{deployed}");
    let id = deployed["deployment_id"].as_str().unwrap().to_owned();
    app.event_appended(&format!("deployment-{id}"), "DeploymentRunning")
        .await;
    let deployment = c
        .json(
            Method::GET,
            &format!("/api/v1/deployments/{id}?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(deployment["status"], "running", "{deployment}");
    assert_eq!(deployment["name"], "shop-stack-v1");
    assert_eq!(deployment["framework"], "compose");
    assert_eq!(deployment["github_url"], Value::Null);
    assert_eq!(deployment["stack_id"], stack.as_str());
    assert_eq!(deployment["stack_version"], 1);
    assert_eq!(deployment["target_id"], target_id.as_str());
    let stack_now = c
        .json(
            Method::GET,
            &format!("/api/v1/stacks/{stack}?{}", c.seen().await),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(stack_now["status"], "deployed", "{stack_now}");
    assert!(stack_now["last_deployed_at"].is_string());
    // The log says what the driver did with the stack.
    let log = c
        .json(
            Method::GET,
            &format!("/api/v1/deployments/{id}/logs?offset=0&limit=100"),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(log.to_string().contains("compose"), "{log}");

    // An invalid stack is not deployed.
    let broken = c
        .json(
            Method::POST,
            "/api/v1/stacks",
            Some(json!({"name": "broken", "configuration": {"services": {"web": {}}}})),
            StatusCode::CREATED,
        )
        .await;
    c.json(
        Method::POST,
        &format!("/api/v1/stacks/{}/deploy", broken["id"].as_str().unwrap()),
        None,
        StatusCode::CONFLICT,
    )
    .await;
    app.stop().await;
}
