//! Sentinel's statistics: `GET /stats/dashboard`, `/stats/system`, `/stats/performance`, a
//! camera's own `GET /cameras/{id}/stats`, and `POST /cameras/discover`.

use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::surveillance::discovery::{
    DiscoveryRequest, Host, Targets, discover as probe,
};
use atelier_domain::identity::Permission;
use atelier_projections::surveillance::{
    CAMERAS, DETECTIONS, DetectionFilter, cameras_by_status, dashboard_counts, detection_stats,
    get_camera,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::conventions::{await_projection, json_body};
use crate::kit::{Principal, path_id};
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// The longest a discovery may take in all.
pub const DISCOVERY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// The dashboard's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"cameras": {"total": 3, "active": 2, "by_status": {"active": 2, "connecting": 0, "error": 0, "inactive": 1}},
    "detections_today": {"total": 14, "by_severity": {"low": 12, "medium": 2, "high": 0, "critical": 0}},
    "unacknowledged": 9, "since": "2026-12-06T00:00:00Z"}))]
pub struct DashboardView {
    /// Cameras: in all, active, by status.
    #[schema(value_type = Object)]
    pub cameras: serde_json::Value,
    /// Detections since midnight (UTC), by severity.
    #[schema(value_type = Object)]
    pub detections_today: serde_json::Value,
    /// Detections nobody acknowledged.
    pub unacknowledged: u64,
    /// Where "today" starts.
    pub since: DateTime<Utc>,
}

/// The dashboard: cameras active and in all, today's detections by severity, how many nobody
/// acknowledged.
#[utoipa::path(
    get, path = "/api/v1/stats/dashboard", tag = "surveillance", operation_id = "dashboard_stats",
    responses((status = 200, description = "The figures", body = DashboardView)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stats.dashboard", skip_all, fields(org = %principal.org_id))]
pub async fn dashboard(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    await_projection(&state, &req, CAMERAS).await?;
    await_projection(&state, &req, DETECTIONS).await?;
    let statuses = cameras_by_status(&state.pool, principal.org_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let since = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or_else(Utc::now, |t| t.and_utc());
    let (by_severity, unacknowledged) = dashboard_counts(&state.pool, principal.org_id, since)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let total: u64 = statuses.iter().map(|(_, n)| n).sum();
    let active = statuses
        .iter()
        .find(|(s, _)| s == "active")
        .map_or(0, |(_, n)| *n);
    Ok(HttpResponse::Ok().json(DashboardView {
        cameras: serde_json::json!({
            "total": total,
            "active": active,
            "by_status": statuses.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        }),
        detections_today: serde_json::json!({
            "total": by_severity.iter().map(|(_, n)| n).sum::<u64>(),
            "by_severity": by_severity.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        }),
        unacknowledged,
        since,
    }))
}

/// The machine's figures (Sentinel's system stats): CPU, memory, disk, this server's process,
/// GPUs when `nvidia-smi` finds any. Refreshed every 2 s in the background.
#[utoipa::path(
    get, path = "/api/v1/stats/system", tag = "surveillance", operation_id = "system_stats",
    responses((status = 200, description = "The figures", body = Object, example = json!({
        "cpu": {"usage_percent": 12.5, "per_core_percent": [10.0, 15.0], "core_count": 2, "physical_core_count": 2,
                "load_average": {"one": 0.4, "five": 0.3, "fifteen": 0.2}},
        "memory": {"total_bytes": 25769803776u64, "used_bytes": 4294967296u64, "available_bytes": 21474836480u64, "percent": 16.7},
        "disk": {"path": "/", "total_bytes": 270582939648u64, "used_bytes": 12884901888u64, "available_bytes": 85899345920u64, "percent": 4.8},
        "process": {"pid": 4242, "rss_bytes": 104857600, "cpu_percent": 3.1, "uptime_seconds": 3600},
        "gpu": []}))),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stats.system", skip_all, fields(org = %principal.org_id))]
pub async fn system(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let path = std::env::current_dir().unwrap_or_else(|_| "/".into());
    Ok(HttpResponse::Ok().json(state.surveillance.system().stats(&path)))
}

/// One camera's pipeline figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PipelineView {
    /// The camera.
    pub camera_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: String,
    /// What its pipeline measured (frames processed and dropped, fps, decode and detection
    /// latency p50/p99 in milliseconds, last frame time, uptime); `null` before it ran. Read
    /// from the pipeline itself on the server that runs it, else as that server last wrote
    /// them (every 2 s).
    #[schema(value_type = Option<Object>)]
    pub figures: Option<serde_json::Value>,
    /// When the figures were read (now, from this server's pipeline) or written (by the server
    /// that runs it).
    pub updated_at: Option<DateTime<Utc>>,
}

/// Per camera: measured fps, decode and detection latency p50/p99, dropped frames.
#[utoipa::path(
    get, path = "/api/v1/stats/performance", tag = "surveillance", operation_id = "performance_stats",
    responses((status = 200, description = "Every camera's pipeline figures", body = Vec<PipelineView>)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stats.performance", skip_all, fields(org = %principal.org_id))]
pub async fn performance(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    await_projection(&state, &req, CAMERAS).await?;
    let figures = state
        .surveillance
        .telemetry
        .all(principal.org_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut by_camera: std::collections::HashMap<Uuid, (serde_json::Value, DateTime<Utc>)> =
        figures
            .into_iter()
            .map(|(id, f, at)| (id, (f, at)))
            .collect();
    let cameras = atelier_projections::surveillance::camera_statuses(&state.pool, principal.org_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let out: Vec<PipelineView> = cameras
        .into_iter()
        .map(|(id, name, status)| {
            // Fresh from the pipeline when it runs here; else what its server wrote last.
            let f = match state.surveillance.pipelines.figures(id) {
                Some(live) => Some((live, Utc::now())),
                None => by_camera.remove(&id),
            };
            PipelineView {
                camera_id: id,
                name,
                status,
                updated_at: f.as_ref().map(|(_, at)| *at),
                figures: f.map(|(f, _)| f),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

/// One camera's statistics (Sentinel's `CameraStatsResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"camera_id": "0193a0c4-5b7e-7c1a-9c51-0a6c7e1d2f3a", "status": "active",
    "frames_processed": 1520, "frames_dropped": 0, "fps": 5.0, "uptime_seconds": 304,
    "detections_by_type": {"motion": 7}, "detections_total": 7, "last_error": null,
    "last_frame_at": "2026-12-06T10:05:04Z", "figures": {}}))]
pub struct CameraStatsView {
    /// The camera.
    pub camera_id: Uuid,
    /// Its status.
    pub status: String,
    /// Frames its pipeline decoded since it last started.
    pub frames_processed: u64,
    /// Frames dropped because detection lagged.
    pub frames_dropped: u64,
    /// Frames per second, measured.
    pub fps: Option<f64>,
    /// Seconds since it last started, while running.
    pub uptime_seconds: Option<u64>,
    /// Its detections by type.
    pub detections_by_type: std::collections::BTreeMap<String, u64>,
    /// Its detections in all.
    pub detections_total: u64,
    /// Why its source last failed.
    pub last_error: Option<String>,
    /// When its last frame was decoded.
    pub last_frame_at: Option<DateTime<Utc>>,
    /// Everything its pipeline measured (latencies included).
    #[schema(value_type = Option<Object>)]
    pub figures: Option<serde_json::Value>,
}

/// A camera's statistics: frames processed, measured fps, detections by type, uptime, last
/// error.
#[utoipa::path(
    get, path = "/api/v1/cameras/{id}/stats", tag = "surveillance", operation_id = "camera_stats",
    params(("id" = Uuid, Path, description = "The camera's id")),
    responses(
        (status = 200, description = "The figures", body = CameraStatsView),
        (status = 404, description = "No such camera in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cameras.stats", skip_all, fields(org = %principal.org_id))]
pub async fn camera(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "camera")?;
    await_projection(&state, &req, CAMERAS).await?;
    let row = get_camera(&state.pool, principal.org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such camera"))?;
    // Fresh from the pipeline when it runs here; else what its server wrote last.
    let figures = match state.surveillance.pipelines.figures(id) {
        Some(live) => Some(live),
        None => state
            .surveillance
            .telemetry
            .get(principal.org_id, id)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map(|(f, _)| f),
    };
    let detections = detection_stats(
        &state.pool,
        principal.org_id,
        &DetectionFilter {
            camera_id: Some(id),
            ..Default::default()
        },
        Utc::now(),
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let number = |key: &str| {
        figures
            .as_ref()
            .and_then(|f| f.get(key))
            .and_then(|v| v.as_u64())
    };
    Ok(HttpResponse::Ok().json(CameraStatsView {
        camera_id: id,
        status: row.status,
        frames_processed: number("frames_processed").unwrap_or(0),
        frames_dropped: number("frames_dropped").unwrap_or(0),
        fps: figures
            .as_ref()
            .and_then(|f| f.get("fps"))
            .and_then(|v| v.as_f64()),
        uptime_seconds: row
            .running
            .then(|| {
                row.started_at
                    .map(|s| (Utc::now() - s).num_seconds().max(0) as u64)
            })
            .flatten(),
        detections_by_type: detections.by_type,
        detections_total: detections.total,
        last_error: row.last_error,
        last_frame_at: row.last_frame_at,
        figures,
    }))
}

/// A discovery request: hosts or one CIDR (at most a /24), probed on the RTSP and HTTP ports
/// only; nothing else is ever contacted.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"hosts": ["127.0.0.1"], "ports": [8554, 8080], "timeout_ms": 500}))]
pub struct DiscoverBody {
    /// Addresses or names (at most 256).
    pub hosts: Option<Vec<String>>,
    /// One network, at most a /24 (IPv4) or /120 (IPv6).
    pub cidr: Option<String>,
    /// Ports (default RTSP 554 and 8554, HTTP 80 and 8080; at most 16).
    pub ports: Option<Vec<u16>>,
    /// Per-step timeout, 50 to 5000 ms (default 500).
    pub timeout_ms: Option<u64>,
}

/// What a request names outside the networks this server may probe (`ATELIER_DISCOVERY_NETWORKS`),
/// each with its field; host names too, since resolving them would ask a resolver elsewhere.
fn outside(targets: &Targets, allowed: &[ipnet::IpNet]) -> Result<(), Vec<(String, String)>> {
    let message = || {
        format!(
            "is outside the networks this server may probe ({})",
            allowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut errors = Vec::new();
    match targets {
        Targets::Cidr(net) => {
            if !allowed.iter().any(|a| a.contains(net)) {
                errors.push(("cidr".to_owned(), message()));
            }
        }
        Targets::Hosts(hosts) => {
            for (i, host) in hosts.iter().enumerate() {
                match host {
                    Host::Ip(ip) if allowed.iter().any(|a| a.contains(ip)) => {}
                    Host::Ip(_) => errors.push((format!("hosts[{i}]"), message())),
                    Host::Name(_) => errors.push((
                        format!("hosts[{i}]"),
                        "must be an address: this server probes only the networks it is allowed, and resolves no names".to_owned(),
                    )),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A camera found (Sentinel's `CameraDiscoveryResult`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiscoveredView {
    /// Its address.
    pub ip: String,
    /// The port that answered.
    pub port: u16,
    /// `rtsp` or `http`.
    pub protocol: String,
    /// A source URL to register it with.
    pub url: String,
    /// The maker, when its `Server` header names a known one.
    pub manufacturer: Option<String>,
    /// The model, when the header names it.
    pub model: Option<String>,
    /// Its `Server` header.
    pub server: Option<String>,
    /// Whether it serves MJPEG or JPEG snapshots.
    pub mjpeg: bool,
    /// How long it took to answer, in milliseconds.
    pub response_time_ms: u64,
    /// Always true: only cameras that answered are listed.
    pub reachable: bool,
}

/// Looks for cameras on the hosts (or the network) the request names, and nowhere else.
#[utoipa::path(
    post, path = "/api/v1/cameras/discover", tag = "surveillance", operation_id = "discover_cameras",
    request_body = DiscoverBody,
    responses(
        (status = 200, description = "The cameras that answered", body = Vec<DiscoveredView>),
        (status = 400, description = "Invalid fields, every one named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cameras.discover", skip_all, fields(org = %principal.org_id))]
pub async fn discover(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let b = json_body::<DiscoverBody>(&req, &body)?;
    let to_problem = |errors: Vec<(String, String)>| {
        ApiError::validation(
            errors
                .into_iter()
                .map(|(field, message)| FieldError { field, message })
                .collect(),
        )
    };
    let request =
        DiscoveryRequest::parse(b.hosts, b.cidr, b.ports, b.timeout_ms).map_err(to_problem)?;
    if let Some(allowed) = &state.settings.discovery_networks {
        outside(&request.targets, allowed).map_err(to_problem)?;
    }
    request.resolve().await.map_err(to_problem)?;
    // Each probe is bounded by the timeout; the whole, by this (a /24 of hosts that drop
    // packets, with long timeouts, would otherwise hold the request for minutes).
    let found = tokio::time::timeout(DISCOVERY_DEADLINE, probe(&request))
        .await
        .map_err(|_| {
            ApiError::new(
                actix_web::http::StatusCode::GATEWAY_TIMEOUT,
                "DISCOVERY_TIMEOUT",
                "discovery took longer than 60 s: name fewer hosts or ports, or a shorter timeout",
            )
        })?;
    Ok(HttpResponse::Ok().json(
        found
            .into_iter()
            .map(|c| DiscoveredView {
                ip: c.ip,
                port: c.port,
                protocol: c.protocol.to_owned(),
                url: c.url,
                manufacturer: c.manufacturer,
                model: c.model,
                server: c.server,
                mjpeg: c.mjpeg,
                response_time_ms: c.response_time_ms,
                reachable: c.reachable,
            })
            .collect::<Vec<_>>(),
    ))
}
