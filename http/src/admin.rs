//! Administration of the platform itself, for superadmins: the projections (read models), how
//! far behind the log each is, and rebuilds beside the old read model
//! (`atelier_projections::rebuild`).

use actix_web::{HttpResponse, get, post, web};
use atelier_projections::runtime::{ProjectionStatus, RebuildError};
use atelier_store::postgres::backlog;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::kit::Principal;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// The count of events behind a checkpoint stops here (`lag_events_capped`).
pub const LAG_CAP: u64 = 100_000;

/// A rebuild: running, or how the last one ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RebuildView {
    /// Whether it is still running.
    #[schema(example = true)]
    pub running: bool,
    /// Where the new generation is: every event up to here is applied to it.
    #[schema(example = "3456-120")]
    pub position: String,
    /// Events of the log read into it so far.
    #[schema(example = 1200)]
    pub events: u64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended (swapped in, or failed).
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed (the old read model still serves).
    pub error: Option<String>,
}

/// A projection, as an administrator watches it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "name": "factory.projects", "version": 2, "generation": 3, "checkpoint": "4711-812",
    "state": "rebuilding", "lag_events": 0, "lag_events_capped": false, "lag_seconds": 0.0,
    "error": null, "failed_at": null,
    "rebuild": {"running": true, "position": "2210-400", "events": 400,
        "started_at": "2026-12-08T10:00:00Z", "finished_at": null, "error": null}
}))]
pub struct ProjectionView {
    /// Its name.
    #[schema(example = "factory.projects")]
    pub name: String,
    /// The version of its code.
    #[schema(example = 2)]
    pub version: i32,
    /// How many times its read model was replaced (rebuilds, version changes).
    #[schema(example = 3)]
    pub generation: i64,
    /// Its checkpoint: every event up to here is applied.
    #[schema(example = "4711-812")]
    pub checkpoint: String,
    /// `starting`, `catching_up`, `live`, `failed`, `stopped` or `rebuilding` (the read model
    /// serves while a new generation is built beside it).
    #[schema(example = "live")]
    pub state: String,
    /// Events of the log after its checkpoint (counted up to 100000).
    #[schema(example = 0)]
    pub lag_events: u64,
    /// Whether there are more than `lag_events`.
    #[schema(example = false)]
    pub lag_events_capped: bool,
    /// Seconds since the oldest event it has not applied was recorded (0: none).
    #[schema(example = 0.0)]
    pub lag_seconds: f64,
    /// Why it stopped.
    pub error: Option<String>,
    /// The event it stopped on.
    pub failed_at: Option<String>,
    /// The running rebuild, or the last one this server ran.
    pub rebuild: Option<RebuildView>,
}

/// Every projection this server runs, by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectionList {
    /// The projections.
    pub data: Vec<ProjectionView>,
}

fn superadmin(principal: &Principal) -> Result<(), ApiError> {
    if principal.is_superadmin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only a superadmin may administer the projections",
        ))
    }
}

fn state_name(status: &ProjectionStatus) -> String {
    match serde_json::to_value(status.state) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{:?}", status.state),
    }
}

async fn view(state: &AppState, status: ProjectionStatus) -> Result<ProjectionView, ApiError> {
    let behind = backlog(&state.pool, status.position, LAG_CAP)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let lag_seconds = behind.oldest.map_or(0.0, |t| {
        ((Utc::now() - t).num_milliseconds().max(0) as f64) / 1000.0
    });
    Ok(ProjectionView {
        state: state_name(&status),
        name: status.name,
        version: status.version,
        generation: status.generation,
        checkpoint: status.position.to_string(),
        lag_events: behind.events,
        lag_events_capped: behind.capped,
        lag_seconds,
        error: status.error,
        failed_at: status.failed_at.map(|p| p.to_string()),
        rebuild: status.rebuild.map(|r| RebuildView {
            running: r.running,
            position: r.position.to_string(),
            events: r.events,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error,
        }),
    })
}

/// Lists the projections with their checkpoints, lag, failures and rebuilds.
#[utoipa::path(
    get, path = "/api/v1/admin/projections", tag = "admin", operation_id = "list_projections",
    responses(
        (status = 200, description = "Every projection this server runs, by name", body = ProjectionList),
        (status = 403, description = "The caller is not a superadmin", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/admin/projections")]
#[tracing::instrument(name = "http.admin.projections", skip_all, fields(user = %principal.user_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<web::Json<ProjectionList>, ApiError> {
    superadmin(&principal)?;
    let mut data = Vec::new();
    for status in state.projections.statuses() {
        data.push(view(&state, status).await?);
    }
    Ok(web::Json(ProjectionList { data }))
}

/// Starts rebuilding a projection beside its read model: readers keep the old one until the new
/// generation has caught up and is swapped in. Answers at once; `GET /admin/projections` shows
/// the progress.
#[utoipa::path(
    post, path = "/api/v1/admin/projections/{name}/rebuild", tag = "admin",
    operation_id = "rebuild_projection",
    params(("name" = String, Path, description = "The projection's name", example = "factory.projects")),
    responses(
        (status = 202, description = "The rebuild started: the projection's status, `rebuilding`", body = ProjectionView),
        (status = 403, description = "The caller is not a superadmin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No projection has this name", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A rebuild of this projection is already running (here or in another process)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/admin/projections/{name}/rebuild")]
#[tracing::instrument(name = "http.admin.rebuild", skip_all, fields(user = %principal.user_id))]
pub async fn rebuild(
    state: web::Data<AppState>,
    principal: Principal,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    superadmin(&principal)?;
    let name = name.into_inner();
    match state.projections.rebuild(&name).await {
        Ok(_running) => {}
        Err(RebuildError::Unknown(_)) => {
            return Err(ApiError::not_found(format!(
                "no projection is named {name:?}"
            )));
        }
        Err(RebuildError::Busy(_)) => {
            return Err(ApiError::conflict(format!(
                "projection {name} is already being rebuilt"
            )));
        }
        Err(e) => return Err(ApiError::internal(&e)),
    }
    let status = state
        .projections
        .status(&name)
        .ok_or_else(|| ApiError::not_found(format!("no projection is named {name:?}")))?;
    Ok(HttpResponse::Accepted().json(view(&state, status).await?))
}

/// The administration's operations.
#[derive(OpenApi)]
#[openapi(
    paths(list, rebuild),
    components(schemas(ProjectionList, ProjectionView, RebuildView)),
    tags((name = "admin", description = "Administration of the platform, for superadmins: projections, their lag and rebuilds"))
)]
pub struct Doc;

/// Registers the administration's routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(rebuild);
}
