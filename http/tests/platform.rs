//! The platform endpoints, request ids, metrics, CORS and the API docs, over real HTTP.

use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use atelier_http::cors::cors;
use atelier_http::middleware::{RequestId, request_context};
use atelier_http::platform::PlatformState;
use atelier_http::{ApiError, docs, platform};
use atelier_projections::Registry;
use atelier_store::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const ALLOWED_ORIGIN: &str = "http://localhost:5173";

/// A test-only route answering a problem.
async fn missing_widget(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no widget {}",
        path.into_inner()
    )))
}

/// A test-only route answering the id it was given.
async fn echo_request_id(id: RequestId) -> HttpResponse {
    HttpResponse::Ok().body(id.0)
}

struct Server {
    base: String,
    handle: ServerHandle,
    client: reqwest::Client,
}

impl Server {
    /// Serves the platform and docs routes (plus two test routes) on a free port.
    async fn start(pool: PgPool) -> Self {
        let platform = web::Data::new(PlatformState::new(pool, Registry::default()));
        let origins = vec![
            "http://localhost:5173".to_owned(),
            "http://localhost:3000".to_owned(),
        ];
        let server = HttpServer::new(move || {
            App::new()
                .wrap(cors(&origins))
                .wrap(from_fn(request_context))
                .app_data(platform.clone())
                .configure(platform::configure)
                .configure(docs::configure)
                .route("/test/widgets/{id}", web::get().to(missing_widget))
                .route("/test/request-id", web::get().to(echo_request_id))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("binds a free port");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            base: format!("http://{addr}"),
            handle,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("answers")
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// A pool on a port nobody listens to.
fn pool_pointing_nowhere() -> PgPool {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/x")
        .expect("a lazy pool")
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

#[actix_web::test]
async fn health_answers_without_the_database() {
    let server = Server::start(pool_pointing_nowhere()).await;

    let res = server.get("/health").await;

    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["service"], "atelier");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    server.stop().await;
}

#[actix_web::test]
async fn status_reports_version_uptime_database_ok_and_a_utc_time() {
    let db = TestDatabase::create().await.unwrap();
    let server = Server::start(db.pool(2).await.unwrap()).await;

    let before = chrono::Utc::now();
    let res = server.get("/status").await;

    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["database"], "ok");
    assert!(body["uptime_seconds"].as_u64().is_some(), "{body}");
    let time = body["time"].as_str().unwrap();
    assert!(time.ends_with('Z'), "{time}");
    let time = chrono::DateTime::parse_from_rfc3339(time).unwrap();
    assert_eq!(time.offset().local_minus_utc(), 0);
    assert!((time.timestamp() - before.timestamp()).abs() < 60, "{time}");
    let started = body["started_at"].as_str().unwrap();
    assert!(started.ends_with('Z'), "{started}");
    assert!(chrono::DateTime::parse_from_rfc3339(started).unwrap() <= time);
    server.stop().await;
}

#[actix_web::test]
async fn ready_answers_200_with_a_database_and_no_projections() {
    let db = TestDatabase::create().await.unwrap();
    let server = Server::start(db.pool(2).await.unwrap()).await;

    let res = server.get("/ready").await;

    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["projections"], serde_json::json!([]));
    server.stop().await;
}

#[actix_web::test]
async fn status_says_the_database_is_unavailable_and_ready_answers_503_when_the_pool_points_nowhere()
 {
    let server = Server::start(pool_pointing_nowhere()).await;

    let res = server.get("/status").await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["database"], "unavailable");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    let res = server.get("/ready").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header(&res, "content-type"),
        Some("application/problem+json")
    );
    assert!(header(&res, "retry-after").is_some());
    let request_id = header(&res, "x-request-id").unwrap().to_owned();
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 503);
    assert_eq!(problem["code"], "SERVICE_UNAVAILABLE");
    assert!(
        problem["detail"].as_str().unwrap().contains("database"),
        "{problem}"
    );
    assert_eq!(problem["request_id"], request_id.as_str());
    server.stop().await;
}

#[actix_web::test]
async fn metrics_exposes_the_request_counter_after_a_request() {
    let server = Server::start(pool_pointing_nowhere()).await;

    assert_eq!(server.get("/health").await.status(), StatusCode::OK);
    let missing = server.get("/test/widgets/w-8f3a1c").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let res = server.get("/metrics").await;

    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        header(&res, "content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        res.headers()
    );
    let text = res.text().await.unwrap();
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/health",status="200"}"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/test/widgets/{id}",status="404"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_request_duration_seconds_bucket{method="GET",route="/health",le="0.005"}"#
        ),
        "{text}"
    );
    assert!(!text.contains("w-8f3a1c"), "raw paths must not be labels");
    server.stop().await;
}

#[actix_web::test]
async fn every_response_carries_a_request_id_and_a_valid_one_is_echoed_while_an_invalid_one_is_replaced()
 {
    let server = Server::start(pool_pointing_nowhere()).await;

    let res = server.get("/health").await;
    let generated = header(&res, "x-request-id").unwrap();
    let uuid = uuid::Uuid::parse_str(generated).unwrap();
    assert_eq!(uuid.get_version_num(), 7);

    let res = server.get("/no/such/route").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(header(&res, "x-request-id").is_some());

    let res = server
        .client
        .get(server.url("/test/request-id"))
        .header("x-request-id", "client-req.42_A")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&res, "x-request-id"), Some("client-req.42_A"));
    assert_eq!(res.text().await.unwrap(), "client-req.42_A");

    for invalid in ["has space", "slash/es", &"x".repeat(65)] {
        let res = server
            .client
            .get(server.url("/test/request-id"))
            .header("x-request-id", invalid)
            .send()
            .await
            .unwrap();
        let replaced = header(&res, "x-request-id").unwrap().to_owned();
        assert_ne!(replaced, invalid);
        assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");
        assert_eq!(res.text().await.unwrap(), replaced);
    }
    server.stop().await;
}

#[actix_web::test]
async fn a_not_found_problem_carries_the_request_id_of_its_response() {
    let server = Server::start(pool_pointing_nowhere()).await;

    let res = server
        .client
        .get(server.url("/test/widgets/42"))
        .header("x-request-id", "trace-me-404")
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header(&res, "content-type"),
        Some("application/problem+json")
    );
    assert_eq!(header(&res, "x-request-id"), Some("trace-me-404"));
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "NOT_FOUND");
    assert_eq!(problem["detail"], "no widget 42");
    assert_eq!(problem["request_id"], "trace-me-404");

    let res = server.get("/test/widgets/43").await;
    let id = header(&res, "x-request-id").unwrap().to_owned();
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["request_id"], id.as_str());
    server.stop().await;
}

#[actix_web::test]
async fn the_openapi_document_is_version_3_1_and_lists_health_status_and_ready() {
    let server = Server::start(pool_pointing_nowhere()).await;

    let res = server.get("/api/openapi.json").await;

    assert_eq!(res.status(), StatusCode::OK);
    let doc: Value = res.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Atelier");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    for path in ["/health", "/status", "/ready", "/metrics"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} is missing");
        assert_eq!(doc["paths"][path]["get"]["tags"][0], "platform");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["bearerFormat"],
        "JWT"
    );
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["schemas"]["FieldError"].is_object());
    server.stop().await;
}

/// The `src` and `href` attribute values of an HTML page.
fn linked_urls(html: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(start) = rest.find(attr) {
            rest = &rest[start + attr.len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            urls.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    urls
}

#[actix_web::test]
async fn the_docs_page_answers_html_and_references_no_external_url_for_scripts_or_styles() {
    let server = Server::start(pool_pointing_nowhere()).await;

    let res = server
        .client
        .get(server.url("/api/docs"))
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        header(&res, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = res.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let urls = linked_urls(&html);
    assert!(urls.iter().any(|u| u.ends_with(".js")), "{urls:?}");
    assert!(urls.iter().any(|u| u.ends_with(".css")), "{urls:?}");
    for url in &urls {
        assert!(
            !url.starts_with("http:") && !url.starts_with("https:") && !url.starts_with("//"),
            "the docs page loads {url} from another host"
        );
        if url.ends_with(".js") || url.ends_with(".css") || url.ends_with(".png") {
            let asset = url.trim_start_matches("./");
            let res = server.get(&format!("/api/docs/{asset}")).await;
            assert_eq!(res.status(), StatusCode::OK, "{url}");
        }
    }

    let init = server
        .get("/api/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(init.contains("/api/openapi.json"), "{init}");
    assert!(!init.contains("petstore"), "{init}");

    let with_slash = server.get("/api/docs/").await;
    assert_eq!(with_slash.status(), StatusCode::OK);
    assert!(with_slash.text().await.unwrap().contains("swagger-ui"));
    server.stop().await;
}

#[actix_web::test]
async fn a_cors_preflight_from_an_allowed_origin_gets_the_allow_origin_header_and_one_from_another_origin_does_not()
 {
    let server = Server::start(pool_pointing_nowhere()).await;
    let preflight = |origin: &'static str| {
        server
            .client
            .request(Method::OPTIONS, server.url("/status"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };

    let allowed = preflight(ALLOWED_ORIGIN).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let methods = header(&allowed, "access-control-allow-methods").unwrap();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = header(&allowed, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(headers.contains("idempotency-key"), "{headers}");
    assert_eq!(header(&allowed, "access-control-max-age"), Some("3600"));

    let refused = preflight("http://evil.example").await.unwrap();
    assert!(header(&refused, "access-control-allow-origin").is_none());

    let simple = server
        .client
        .get(server.url("/health"))
        .header("origin", ALLOWED_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&simple, "access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let exposed = header(&simple, "access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "etag",
        "location",
        "x-request-id",
        "atelier-position",
        "retry-after",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    server.stop().await;
}
