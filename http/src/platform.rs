//! Platform endpoints: liveness (`/health`), readiness (`/ready`), monitoring (`/status`) and
//! Prometheus metrics (`/metrics`).

use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError, get, web};
use atelier_projections::health::database_ok;
use atelier_projections::{ProjectionStatus, Registry, RunState};
use chrono::{DateTime, SecondsFormat, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::problem::{ApiError, Problem};

/// The service name `/health` and `/status` answer.
pub const SERVICE: &str = "atelier";
/// The version the endpoints answer (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The content type of `/metrics` (Prometheus text exposition format).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";
/// How long `/ready` and `/status` wait for the database before calling it unavailable.
pub const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The `Retry-After` (seconds) of a 503 from `/ready`.
pub const READY_RETRY_AFTER_SECONDS: u32 = 5;

/// What the platform endpoints read.
pub struct PlatformState {
    /// The database, checked by `/ready` and `/status`.
    pub pool: PgPool,
    /// The running projections, checked by `/ready`.
    pub projections: Registry,
    /// When the process started serving (for the uptime).
    pub started_at: Instant,
    /// The same moment, as a date.
    pub started_utc: DateTime<Utc>,
    /// Renders the process's metrics.
    pub metrics: PrometheusHandle,
    /// The bearer token `/metrics` asks for (`None`: open, for a scraper on the same host or a
    /// private network).
    pub metrics_token: Option<String>,
}

impl PlatformState {
    /// State starting now, with the process's metrics recorder.
    pub fn new(pool: PgPool, projections: Registry) -> Self {
        Self {
            pool,
            projections,
            started_at: Instant::now(),
            started_utc: Utc::now(),
            metrics: crate::metrics::recorder(),
            metrics_token: None,
        }
    }

    /// `/metrics` asks for `Authorization: Bearer <token>` (`None` or empty: it does not).
    pub fn with_metrics_token(mut self, token: Option<String>) -> Self {
        self.metrics_token = token.filter(|t| !t.is_empty());
        self
    }

    /// Seconds since the process started serving.
    pub fn uptime_seconds(&self) -> u64 {
        self.started_at.elapsed().as_secs()
    }

    /// Whether the database answers, within [`DATABASE_CHECK_TIMEOUT`].
    pub async fn database_ok(&self) -> bool {
        tokio::time::timeout(DATABASE_CHECK_TIMEOUT, database_ok(&self.pool))
            .await
            .unwrap_or(false)
    }
}

/// `GET /health`: the process is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
    /// `atelier`.
    #[schema(example = "atelier")]
    pub service: String,
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: String,
}

/// `GET /ready`: the service can serve requests.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready` (otherwise the answer is a 503 problem).
    #[schema(example = "ready")]
    pub status: String,
    /// Always `ok`.
    #[schema(example = "ok")]
    pub database: String,
    /// The projections: name, version, state (`starting`, `catching_up`, `live`, `failed`,
    /// `stopped`), position, error.
    #[schema(value_type = Vec<Object>)]
    pub projections: Vec<ProjectionStatus>,
}

/// Whether the database answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseState {
    /// It answers.
    Ok,
    /// It does not answer (in time).
    Unavailable,
}

/// `GET /status`: monitoring, answered even when the database is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceStatus {
    /// `ok`, or `degraded` when the database does not answer.
    #[schema(example = "ok")]
    pub status: String,
    /// `atelier`.
    #[schema(example = "atelier")]
    pub service: String,
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// Whole seconds since the process started serving.
    #[schema(example = 3600)]
    pub uptime_seconds: u64,
    /// Whether the database answers.
    pub database: DatabaseState,
    /// The server's current time, UTC, RFC 3339.
    #[schema(format = DateTime, example = "2025-01-31T12:00:00.000Z")]
    pub time: String,
    /// When the process started serving, UTC, RFC 3339.
    #[schema(format = DateTime, example = "2025-01-31T11:00:00.000Z")]
    pub started_at: String,
}

fn utc(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Liveness: answers without touching the database.
#[utoipa::path(
    get,
    path = "/health",
    tag = "platform",
    operation_id = "get_health",
    responses((status = 200, description = "The process is up", body = Health))
)]
#[get("/health")]
pub async fn health() -> web::Json<Health> {
    web::Json(Health {
        status: "ok".to_owned(),
        service: SERVICE.to_owned(),
        version: VERSION.to_owned(),
    })
}

/// Readiness: the database answers and every projection has caught up with the log.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "platform",
    operation_id = "get_readiness",
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "The database or a projection is not ready; `detail` says which",
            body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/ready")]
pub async fn ready(state: web::Data<PlatformState>) -> HttpResponse {
    let database = state.database_ok().await;
    let projections_ready = state.projections.is_ready();
    let projections = state.projections.statuses();
    if database && projections_ready {
        return HttpResponse::Ok().json(Readiness {
            status: "ready".to_owned(),
            database: "ok".to_owned(),
            projections,
        });
    }
    let mut parts = Vec::new();
    if !database {
        parts.push("the database does not answer".to_owned());
    }
    if !projections_ready {
        let behind: Vec<String> = projections
            .iter()
            .filter(|p| p.state != RunState::Live)
            .map(|p| format!("{} ({})", p.name, run_state(p.state)))
            .collect();
        parts.push(if behind.is_empty() {
            "the projections have not caught up".to_owned()
        } else {
            format!("projections not live: {}", behind.join(", "))
        });
    }
    let mut res =
        ApiError::unavailable(format!("not ready: {}", parts.join("; "))).error_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, READY_RETRY_AFTER_SECONDS.into());
    res
}

fn run_state(state: RunState) -> String {
    match serde_json::to_value(state) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{state:?}"),
    }
}

/// Monitoring: version, uptime, whether the database answers and the server's UTC time. Answers
/// 200 even when the database is down (with `database: "unavailable"`).
#[utoipa::path(
    get,
    path = "/status",
    tag = "platform",
    operation_id = "get_status",
    responses((status = 200, description = "The service's status", body = ServiceStatus))
)]
#[get("/status")]
pub async fn status(state: web::Data<PlatformState>) -> web::Json<ServiceStatus> {
    let database = if state.database_ok().await {
        DatabaseState::Ok
    } else {
        DatabaseState::Unavailable
    };
    web::Json(ServiceStatus {
        status: match database {
            DatabaseState::Ok => "ok",
            DatabaseState::Unavailable => "degraded",
        }
        .to_owned(),
        service: SERVICE.to_owned(),
        version: VERSION.to_owned(),
        uptime_seconds: state.uptime_seconds(),
        database,
        time: utc(Utc::now()),
        started_at: utc(state.started_utc),
    })
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "platform",
    operation_id = "get_metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String,
            content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "A metrics token is configured (`ATELIER_METRICS_TOKEN`) and the request does not bear it", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/metrics")]
pub async fn metrics(
    state: web::Data<PlatformState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(expected) = &state.metrics_token {
        let presented = crate::identity::auth::bearer_token(&req)
            .ok()
            .flatten()
            .unwrap_or("");
        // Compared in constant time: the token is a secret.
        let same = presented.len() == expected.len()
            && presented
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(ApiError::unauthorized(
                "/metrics needs `Authorization: Bearer <ATELIER_METRICS_TOKEN>`",
            ));
        }
    }
    ::metrics::gauge!(crate::metrics::UPTIME_SECONDS).set(state.started_at.elapsed().as_secs_f64());
    state.metrics.run_upkeep();
    Ok(HttpResponse::Ok()
        .content_type(PROMETHEUS_CONTENT_TYPE)
        .body(state.metrics.render()))
}

/// Registers the platform routes (they read `web::Data<PlatformState>`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health)
        .service(ready)
        .service(status)
        .service(metrics);
}
