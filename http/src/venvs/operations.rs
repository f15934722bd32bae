//! Operations (GestVenv): `GET /operations`, `GET`/`DELETE /operations/{id}`, and `GET
//! /operations/{id}/stream` (its log and progress as server-sent events, resumable).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::Written;
use atelier_domain::identity::Permission;
use atelier_domain::venvs::operation::{
    Operation, OperationError, OperationRequest, OperationStatus,
};
use atelier_projections::venvs::{
    OPERATION_SORTS, OPERATIONS, OperationQuery, OperationRow, get_operation, list_operations,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::conventions::{Reply, await_projection, command_error, etag};
use crate::kit::{Principal, command_context, path_id};
use crate::logs::{LogEvent, LogParams, OwnerState, Probe};
use crate::pagination::{CursorParams, KeysetPage, PageParams};
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// An operation, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OperationView {
    /// Its id.
    pub id: Uuid,
    /// Its kind (GestVenv's `type`): `create_environment`, `install`, `uninstall`, `update`
    /// or `refresh`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its environment.
    pub environment_id: Option<Uuid>,
    /// What it was asked (`packages`, `upgrade`…).
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// How far, 0 to 100.
    pub progress: u8,
    /// What it is doing now.
    pub message: String,
    /// What it found, once completed (`installed`, `uninstalled`, `package_count`).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// What went wrong, if it failed.
    pub error: Option<String>,
    /// Why it failed: `backend`, `timed_out`, `interrupted` or `error`.
    pub failure: Option<String>,
    /// How long it ran, in seconds.
    pub duration: Option<f64>,
    /// The runner that ran it.
    pub runner: Option<String>,
    /// Who asked.
    pub created_by: String,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where its log streams.
    pub stream_url: String,
    /// Its revision: the `ETag`.
    pub revision: u64,
}

impl From<OperationRow> for OperationView {
    fn from(r: OperationRow) -> Self {
        Self {
            stream_url: format!("/api/v1/operations/{}/stream", r.id),
            id: r.id,
            kind: r.kind,
            environment_id: r.environment_id,
            request: r.request,
            status: r.status,
            progress: r.progress.clamp(0, 100) as u8,
            message: r.message,
            result: r.result,
            error: r.error,
            failure: r.failure,
            duration: r.duration,
            runner: r.runner,
            created_by: r.created_by,
            created_at: r.queued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            revision: r.revision as u64,
        }
    }
}

/// The view of an operation a write left.
pub fn written_view(w: &Written<Operation>) -> Result<OperationView, ApiError> {
    let o = w
        .state
        .data()
        .ok_or_else(|| ApiError::not_found("no such operation"))?;
    Ok(OperationView {
        stream_url: format!("/api/v1/operations/{}/stream", o.id),
        id: o.id,
        kind: o.request.kind().to_owned(),
        environment_id: o.environment_id,
        request: serde_json::to_value(&o.request).unwrap_or_default(),
        status: o.status.as_str().to_owned(),
        progress: o.progress,
        message: o.message.clone(),
        result: None,
        error: o.error.clone(),
        failure: o.failure.map(|f| f.as_str().to_owned()),
        duration: None,
        runner: o.runner.clone(),
        created_by: o.by.clone(),
        created_at: o.queued_at,
        started_at: o.started_at,
        finished_at: o.finished_at,
        revision: w.revision.unwrap_or(0),
    })
}

/// A queued operation's answer: 202, where to follow it.
pub fn queued_reply(w: &Written<Operation>) -> Result<HttpResponse, ApiError> {
    let view = written_view(w)?;
    Ok(Reply::json(StatusCode::ACCEPTED, &view)
        .header("location", format!("/api/v1/operations/{}", view.id))
        .etag(w.revision)
        .position(w.position)
        .into_response())
}

/// An operation command's refusal, as a problem.
pub fn rejected(e: OperationError) -> ApiError {
    match e {
        OperationError::NotFound => ApiError::not_found("no such operation"),
        OperationError::AlreadyExists => ApiError::conflict("the operation already exists"),
        OperationError::Finished(status) => ApiError::new(
            StatusCode::CONFLICT,
            "OPERATION_FINISHED",
            format!("the operation is already {}", status.as_str()),
        ),
        OperationError::NotQueued(status) | OperationError::NotRunning(status) => ApiError::new(
            StatusCode::CONFLICT,
            "ILLEGAL_TRANSITION",
            format!("the operation is {}", status.as_str()),
        ),
    }
}

async fn find(state: &AppState, org_id: Uuid, id: Uuid) -> Result<OperationRow, ApiError> {
    get_operation(&state.pool, org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such operation"))
}

/// List parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this status.
    pub status: Option<String>,
    /// `true`: only the operations in progress (queued or running); `false`: only finished ones.
    pub active: Option<String>,
    /// Only this environment's (its id or name).
    pub environment_id: Option<String>,
    /// Only this kind.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Lists the organization's operations, newest first, by page number or by keyset cursor.
///
/// Every page carries `pagination.next_cursor`: `cursor=<next_cursor>` answers the operations
/// after that page's last one (with the same filters), with a cost that does not grow with the
/// depth, and operations queued meanwhile do not shift it. Without filters `total` is exact (a
/// count the read model keeps); with one, it counts at most 10,000 matches (`total_capped`
/// says when it stopped: the total is then a lower bound). `has_next` is exact either way.
#[utoipa::path(
    get, path = "/api/v1/operations", tag = "venvs", operation_id = "list_operations",
    params(PageParams, CursorParams, ListParams),
    responses((status = 200, description = "A page of operations", body = KeysetPage<OperationView>)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.operations.list", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
    cursor: web::Query<CursorParams>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let paging = crate::pagination::paging(&OPERATION_SORTS, &page, &cursor, None, &mut errors);
    let status = params
        .status
        .as_deref()
        .and_then(|s| match OperationStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                errors.push(FieldError {
                    field: "status".into(),
                    message: "must be one of queued, running, completed, failed, cancelled".into(),
                });
                None
            }
        });
    let active = crate::pagination::flag("active", params.active.as_deref(), &mut errors);
    if let Some(k) = params.kind.as_deref()
        && !OperationRequest::KINDS.contains(&k)
    {
        errors.push(FieldError {
            field: "type".into(),
            message: format!("must be one of {}", OperationRequest::KINDS.join(", ")),
        });
    }
    crate::pagination::validate(errors)?;
    let environment_id = match params.environment_id.as_deref() {
        Some(raw) => Some(super::environments::resolve(&state, principal.org_id, raw).await?),
        None => None,
    };
    await_projection(&state, &req, OPERATIONS).await?;
    let query = OperationQuery {
        paging,
        status,
        active,
        environment_id,
        kind: params.kind.clone(),
    };
    let listed = list_operations(&state.pool, principal.org_id, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(KeysetPage::of(&query.paging, listed, OperationView::from)))
}

/// Query parameters of one operation.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Wait until the operation reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Reads an operation.
#[utoipa::path(
    get, path = "/api/v1/operations/{id}", tag = "venvs", operation_id = "get_operation",
    params(("id" = Uuid, Path, description = "The operation's id"), GetParams),
    responses(
        (status = 200, description = "The operation", body = OperationView),
        (status = 404, description = "No such operation in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.operations.get", skip_all, fields(org = %principal.org_id))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    _params: web::Query<GetParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "operation")?;
    await_projection(&state, &req, OPERATIONS).await?;
    let row = find(&state, principal.org_id, id).await?;
    let view = OperationView::from(row);
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(view.revision)))
        .json(view))
}

/// Cancels a queued or running operation: its backend's whole process group is killed; what
/// the environment holds afterwards is read again and recorded.
#[utoipa::path(
    delete, path = "/api/v1/operations/{id}", tag = "venvs", operation_id = "cancel_operation",
    params(("id" = Uuid, Path, description = "The operation's id")),
    responses(
        (status = 200, description = "Cancelled", body = OperationView),
        (status = 404, description = "No such operation in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "OPERATION_FINISHED: it is over", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.operations.cancel", skip_all, fields(org = %principal.org_id))]
pub async fn cancel(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "operation")?;
    let written = state
        .venvs
        .operations
        .cancel(&command_context(&principal), id)
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::json(StatusCode::OK, &written_view(&written)?)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// What a followed operation reports of itself: its status, progress and message, and at the
/// end its result or error.
fn probe(state: &AppState, org_id: Uuid, id: Uuid) -> Probe {
    let pool = state.pool.clone();
    Box::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            let o = get_operation(&pool, org_id, id).await.ok()??;
            Some(OwnerState {
                settled: OperationStatus::parse(&o.status)
                    .is_some_and(OperationStatus::is_finished),
                value: serde_json::json!({
                    "operation_id": o.id,
                    "status": o.status,
                    "progress": o.progress,
                    "message": o.message,
                    "result": o.result,
                    "error": o.error,
                    "duration": o.duration,
                }),
            })
        })
    })
}

/// Streams an operation's log as server-sent events (the seed's `curl -N …/stream`): `log`
/// events (`id:` the line's number: a reconnect sends it back as `Last-Event-ID`), `progress`
/// events as it moves (`{operation_id, status, progress, message}`), then one `end` event with
/// its status, result or error once it is over.
#[utoipa::path(
    get, path = "/api/v1/operations/{id}/stream", tag = "venvs", operation_id = "stream_operation",
    params(("id" = Uuid, Path, description = "The operation's id"), LogParams),
    responses(
        (status = 200, description = "Its log and end, as server-sent events", body = LogEvent, content_type = "text/event-stream"),
        (status = 404, description = "No such operation in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.operations.stream", skip_all, fields(org = %principal.org_id))]
pub async fn stream(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    params: web::Query<LogParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "operation")?;
    let window = params.window(&req)?;
    await_projection(&state, &req, OPERATIONS).await?;
    find(&state, principal.org_id, id).await?;
    Ok(crate::logs::follow(
        state.venvs.logs.clone(),
        principal.org_id,
        id,
        window.offset,
        probe(&state, principal.org_id, id),
        Some("progress"),
    ))
}
