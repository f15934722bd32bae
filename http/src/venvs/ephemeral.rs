//! Ephemeral environments (GestVenv): `GET`/`POST /ephemeral/environments`, `DELETE
//! /ephemeral/environments/{env_id}`, `GET /ephemeral/stats`, `DELETE /ephemeral/cleanup-all`.
//! An ephemeral environment is an environment with a time to live: when it is up, it is
//! expired (`EnvironmentExpired`) and its directory removed.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_domain::identity::Permission;
use atelier_domain::venvs::environment::Ephemeral;
use atelier_projections::venvs::{ENVIRONMENTS, EphemeralStats, ephemeral_stats, org_ephemerals};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::environments::{CreatedView, ListParams, create_environment, parse_new, rejected};
use crate::conventions::{Reply, await_projection, command_error, idempotent, json_body};
use crate::kit::{Principal, command_context};
use crate::pagination::{CursorParams, KeysetPage, PageParams};
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// The longest time to live: a week.
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3600;
/// The isolation levels: each operation runs in a process group of its own.
pub const ISOLATION_LEVELS: [&str; 1] = ["process"];

/// A new ephemeral environment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"name": "test-env", "ttl": 3600, "packages": ["pytest"], "isolation_level": "process"}))]
pub struct EphemeralBody {
    /// As an environment's (default: `ephemeral-` and a part of its id).
    pub name: Option<String>,
    /// Its time to live, in seconds: 1 to 604800 (a week); default 3600.
    pub ttl: Option<u64>,
    /// Packages to install once it is made.
    #[serde(default)]
    pub packages: Vec<String>,
    /// `process` (the default): its operations run in process groups of their own.
    pub isolation_level: Option<String>,
    /// As an environment's.
    pub python_version: Option<String>,
    /// As an environment's.
    pub backend: Option<String>,
}

/// Creates an ephemeral environment: 202, `creating`; it expires `ttl` seconds after its
/// creation, whatever it is doing then.
#[utoipa::path(
    post, path = "/api/v1/ephemeral/environments", tag = "venvs", operation_id = "create_ephemeral_environment",
    request_body = EphemeralBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request")),
    responses(
        (status = 202, description = "Created; its operation makes it", body = CreatedView),
        (status = 400, description = "Invalid fields, every one named", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.ephemeral.create", skip_all, fields(org = %principal.org_id))]
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let b = json_body::<EphemeralBody>(&req, &body)?;
    let mut errors = Vec::new();
    let ttl = b.ttl.unwrap_or(3600);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        errors.push(FieldError {
            field: "ttl".into(),
            message: format!("must be from 1 to {MAX_TTL_SECS} seconds"),
        });
    }
    let isolation_level = b.isolation_level.as_deref().unwrap_or("process");
    if !ISOLATION_LEVELS.contains(&isolation_level) {
        errors.push(FieldError {
            field: "isolation_level".into(),
            message: format!("must be one of {}", ISOLATION_LEVELS.join(", ")),
        });
    }
    let generated;
    let name = match &b.name {
        Some(n) => n.as_str(),
        None => {
            generated = format!("ephemeral-{}", &Uuid::now_v7().simple().to_string()[20..]);
            generated.as_str()
        }
    };
    let new = parse_new(
        &state,
        name,
        b.python_version.as_deref(),
        b.backend.as_deref(),
        "",
        &b.packages,
    );
    let mut new = match new {
        Ok(new) if errors.is_empty() => new,
        Ok(_) => return Err(ApiError::validation(errors)),
        Err(e) if e.problem().errors.is_empty() => return Err(e),
        Err(e) => {
            let mut all = e.problem().errors.clone();
            all.extend(errors);
            return Err(ApiError::validation(all));
        }
    };
    let created_at = chrono::Utc::now();
    new.ephemeral = Some(Ephemeral {
        ttl_secs: ttl,
        expires_at: created_at + chrono::Duration::seconds(ttl as i64),
        isolation_level: isolation_level.to_owned(),
    });
    idempotent(&state, &req, principal.org_id, &body, async || {
        create_environment(&state, &principal, new, "/api/v1/ephemeral/environments").await
    })
    .await
}

/// Lists the organization's ephemeral environments, newest first, by page number or by keyset
/// cursor.
///
/// As `GET /environments`: `cursor=<pagination.next_cursor>` answers the environments after
/// that page's last one (with the same filters), with a cost that does not grow with the depth;
/// `total` counts at most 10,000 matches (`total_capped` says when it stopped: the total is
/// then a lower bound); `has_next` is exact.
#[utoipa::path(
    get, path = "/api/v1/ephemeral/environments", tag = "venvs", operation_id = "list_ephemeral_environments",
    params(PageParams, CursorParams, ListParams),
    responses((status = 200, description = "A page of ephemeral environments", body = KeysetPage<super::environments::EnvironmentView>)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.ephemeral.list", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
    cursor: web::Query<CursorParams>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    super::environments::list_page(&state, &principal, &req, &page, &cursor, &params, true).await
}

/// Query parameters of the stats.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Wait until the figures reflect the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// The organization's figures about its ephemeral environments.
#[utoipa::path(
    get, path = "/api/v1/ephemeral/stats", tag = "venvs", operation_id = "ephemeral_stats",
    params(StatsParams),
    responses((status = 200, description = "The figures", body = Object)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.ephemeral.stats", skip_all, fields(org = %principal.org_id))]
pub async fn stats(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    _params: web::Query<StatsParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    await_projection(&state, &req, ENVIRONMENTS).await?;
    let stats: EphemeralStats = ephemeral_stats(&state.pool, principal.org_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(stats))
}

/// The ephemeral environment `{env_id}` names (id or name): a 404 for a lasting one.
async fn resolve_ephemeral(state: &AppState, org_id: Uuid, raw: &str) -> Result<Uuid, ApiError> {
    let id = super::environments::resolve(state, org_id, raw).await?;
    let (env, _) = state
        .venvs
        .environments
        .load(id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match env.visible_to(org_id) {
        Some(e) if e.ephemeral.is_some() => Ok(id),
        _ => Err(ApiError::not_found("no such ephemeral environment")),
    }
}

/// Deletes an ephemeral environment before its time.
#[utoipa::path(
    delete, path = "/api/v1/ephemeral/environments/{env_id}", tag = "venvs", operation_id = "delete_ephemeral_environment",
    params(("env_id" = String, Path, description = "The environment's id or name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such ephemeral environment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.ephemeral.delete", skip_all, fields(org = %principal.org_id))]
pub async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    env_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = resolve_ephemeral(&state, principal.org_id, &env_id).await?;
    let written = state
        .venvs
        .environments
        .delete(&command_context(&principal), id, None)
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::empty(StatusCode::NO_CONTENT)
        .position(written.position)
        .into_response())
}

/// What a cleanup did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CleanupView {
    /// How many were deleted.
    pub deleted: u64,
    /// Their ids.
    pub environment_ids: Vec<Uuid>,
}

/// Deletes every live ephemeral environment of the organization.
#[utoipa::path(
    delete, path = "/api/v1/ephemeral/cleanup-all", tag = "venvs", operation_id = "cleanup_ephemeral_environments",
    responses((status = 200, description = "What was deleted", body = CleanupView)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.ephemeral.cleanup", skip_all, fields(org = %principal.org_id))]
pub async fn cleanup_all(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    await_projection(&state, &req, ENVIRONMENTS).await?;
    let ids = org_ephemerals(&state.pool, principal.org_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let ctx = command_context(&principal);
    let mut deleted = Vec::new();
    let mut position = None;
    for id in ids {
        match state.venvs.environments.delete(&ctx, id, None).await {
            Ok(w) => {
                position = w.position.or(position);
                deleted.push(id);
            }
            // Expired or deleted meanwhile.
            Err(atelier_commands::handler::CommandError::Rejected(_)) => {}
            Err(e) => return Err(command_error(e, rejected)),
        }
    }
    let view = CleanupView {
        deleted: deleted.len() as u64,
        environment_ids: deleted,
    };
    Ok(Reply::json(StatusCode::OK, &view)
        .position(position)
        .into_response())
}
