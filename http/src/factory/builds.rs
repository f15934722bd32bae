//! Builds: trigger (the seed's `POST /projects/{id}/build`, and `/builds`), list, read, cancel,
//! restart, logs (paged, or followed live as server-sent events), and the factory's stats.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::Written;
use atelier_domain::factory::build::{Build, BuildError, BuildStatus};
use atelier_domain::identity::Permission;
use atelier_projections::deploy::{DEPLOYMENTS, DeployStats, deploy_stats};
use atelier_projections::factory::{
    BUILD_SORTS, BUILDS, BuildQuery, BuildRow, FactoryStats, PROJECTS, factory_stats, get_build,
    get_project, list_builds,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::conventions::{Reply, await_projection, command_error, etag, idempotent, if_match};
use crate::kit::{Principal, command_context, path_id};
use crate::logs::{LogEvent, LogPage, LogParams, OwnerState, Probe};
use crate::pagination::{CursorParams, KeysetPage, PageParams};
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// A build, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BuildView {
    /// Its id.
    pub id: Uuid,
    /// The project it builds.
    pub project_id: Uuid,
    /// The project's revision it runs against.
    pub project_revision: u64,
    /// The repository.
    pub repo: String,
    /// The command it runs.
    pub build_command: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Who triggered it.
    pub triggered_by: String,
    /// The build it restarts.
    pub restart_of: Option<Uuid>,
    /// The runner that runs (or ran) it.
    pub runner: Option<String>,
    /// Its command's exit status.
    pub exit_code: Option<i32>,
    /// Why it failed: `exit_status`, `timed_out`, `error` or `interrupted`.
    pub failure: Option<String>,
    /// A short explanation of a failure.
    pub message: Option<String>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long it ran, in seconds.
    pub duration_s: Option<f64>,
    /// Its revision: the `ETag`.
    pub revision: u64,
}

impl From<BuildRow> for BuildView {
    fn from(r: BuildRow) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            project_revision: r.project_revision as u64,
            repo: r.repo_url,
            build_command: r.build_command,
            status: r.status,
            triggered_by: r.triggered_by,
            restart_of: r.restart_of,
            runner: r.runner,
            exit_code: r.exit_code,
            failure: r.failure,
            message: r.message,
            queued_at: r.queued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_s: r.duration_ms.map(|ms| ms as f64 / 1000.0),
            revision: r.revision as u64,
        }
    }
}

fn view(written: &Written<Build>) -> Option<BuildView> {
    let b = written.state.data()?;
    Some(BuildView {
        id: b.id,
        project_id: b.project_id,
        project_revision: b.project_revision,
        repo: b.repo_url.as_str().to_owned(),
        build_command: b.build_command.as_ref().map(|c| c.as_str().to_owned()),
        status: b.status.as_str().to_owned(),
        triggered_by: b.triggered_by.clone(),
        restart_of: b.restart_of,
        runner: b.runner.clone(),
        exit_code: b.exit_code,
        failure: b.failure.map(|f| f.as_str().to_owned()),
        message: None,
        queued_at: b.queued_at,
        started_at: b.started_at,
        finished_at: b.finished_at,
        duration_s: match (b.started_at, b.finished_at) {
            (Some(s), Some(f)) => Some((f - s).num_milliseconds().max(0) as f64 / 1000.0),
            _ => None,
        },
        revision: written.revision.unwrap_or(0),
    })
}

fn rejected(e: BuildError) -> ApiError {
    match e {
        BuildError::NotFound => ApiError::not_found("no such build"),
        BuildError::ProjectNotFound => ApiError::not_found("no such project"),
        BuildError::AlreadyExists => ApiError::conflict("the build already exists"),
        BuildError::AlreadyFinished(s) => {
            ApiError::conflict(format!("the build already finished ({})", s.as_str()))
        }
        BuildError::NotFinished => {
            ApiError::conflict("only a finished build can be restarted; cancel it first")
        }
        BuildError::NotQueued(s) | BuildError::NotRunning(s) => {
            ApiError::conflict(format!("the build is {}", s.as_str()))
        }
    }
}

fn queued_reply(written: &Written<Build>) -> Result<Reply, ApiError> {
    let view = view(written).ok_or_else(|| ApiError::bug("queued build missing"))?;
    Ok(Reply::json(StatusCode::ACCEPTED, &view)
        .header("location", format!("/api/v1/builds/{}", view.id))
        .etag(written.revision)
        .position(written.position))
}

/// Triggers a build of the project as it is now. The build is queued: follow it with
/// `GET /builds/{id}` or its logs. `Idempotency-Key` makes a retried trigger make one build.
#[utoipa::path(
    post, path = "/api/v1/projects/{id}/build", tag = "factory", operation_id = "trigger_build",
    params(
        ("id" = Uuid, Path, description = "The project's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request"),
    ),
    responses(
        (status = 202, description = "Queued; Location is the build", body = BuildView),
        (status = 404, description = "No such project in this organization (or it was deleted)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.builds.trigger", skip_all, fields(org = %principal.org_id))]
pub async fn trigger(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "project")?;
    // No body: a retry is recognised by its key (and path) alone.
    idempotent(&state, &req, principal.org_id, &[], async || {
        let written = state
            .factory
            .builds
            .trigger(&command_context(&principal), id)
            .await
            .map_err(|e| command_error(e, rejected))?;
        queued_reply(&written)
    })
    .await
}

/// Build list parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildListParams {
    /// Only builds in this status: `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Lists a project's builds, newest first, by page number or by keyset cursor.
///
/// Every page carries `pagination.next_cursor`: `cursor=<next_cursor>` answers the builds after
/// that page's last one, with a cost that does not grow with the depth, and builds queued
/// meanwhile do not shift it. Without `status`, `total` is exact (a count the read model
/// keeps); with it, it counts at most 10,000 matches (`total_capped` says when it stopped: the
/// total is then a lower bound). `has_next` is exact either way.
#[utoipa::path(
    get, path = "/api/v1/projects/{id}/builds", tag = "factory", operation_id = "list_builds",
    params(("id" = Uuid, Path, description = "The project's id"), PageParams, CursorParams, BuildListParams),
    responses(
        (status = 200, description = "A page of builds", body = KeysetPage<BuildView>),
        (status = 404, description = "No such project in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.builds.list", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    page: web::Query<PageParams>,
    cursor: web::Query<CursorParams>,
    params: web::Query<BuildListParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "project")?;
    let mut errors = Vec::new();
    let paging = crate::pagination::paging(&BUILD_SORTS, &page, &cursor, None, &mut errors);
    let status = match params.status.as_deref() {
        None => None,
        Some(s) => match BuildStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                errors.push(FieldError {
                    field: "status".into(),
                    message: "must be one of queued, running, succeeded, failed, cancelled".into(),
                });
                None
            }
        },
    };
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, BUILDS).await?;
    await_projection(&state, &req, PROJECTS).await?;
    get_project(&state.pool, principal.org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such project"))?;
    let query = BuildQuery { paging, status };
    let listed = list_builds(&state.pool, principal.org_id, id, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(KeysetPage::of(&query.paging, listed, BuildView::from)))
}

/// Query parameters of a single build.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildGetParams {
    /// Wait until the build reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

async fn find(state: &AppState, org_id: Uuid, id: Uuid) -> Result<BuildRow, ApiError> {
    get_build(&state.pool, org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such build"))
}

/// Reads a build.
#[utoipa::path(
    get, path = "/api/v1/builds/{id}", tag = "factory", operation_id = "get_build",
    params(("id" = Uuid, Path, description = "The build's id"), BuildGetParams),
    responses(
        (status = 200, description = "The build; ETag is its revision", body = BuildView),
        (status = 404, description = "No such build in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.builds.get", skip_all, fields(org = %principal.org_id))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "build")?;
    await_projection(&state, &req, BUILDS).await?;
    let view = BuildView::from(find(&state, principal.org_id, id).await?);
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(view.revision)))
        .json(view))
}

/// Cancels a queued or running build; a running build's processes are killed.
#[utoipa::path(
    post, path = "/api/v1/builds/{id}/cancel", tag = "factory", operation_id = "cancel_build",
    params(
        ("id" = Uuid, Path, description = "The build's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the cancel is based on"),
    ),
    responses(
        (status = 200, description = "Cancelled (or already cancelled)", body = BuildView),
        (status = 404, description = "No such build in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The build already finished", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.builds.cancel", skip_all, fields(org = %principal.org_id))]
pub async fn cancel(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "build")?;
    let expected = if_match(req.headers())?;
    let written = state
        .factory
        .builds
        .cancel(&command_context(&principal), id, expected)
        .await
        .map_err(|e| command_error(e, rejected))?;
    let view = view(&written).ok_or_else(|| ApiError::not_found("no such build"))?;
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Restarts a finished build: a new build of the same project revision, linked to it.
#[utoipa::path(
    post, path = "/api/v1/builds/{id}/restart", tag = "factory", operation_id = "restart_build",
    params(
        ("id" = Uuid, Path, description = "The build's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request"),
    ),
    responses(
        (status = 202, description = "The new build, queued", body = BuildView),
        (status = 404, description = "No such build (or its project was deleted)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The build has not finished", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.builds.restart", skip_all, fields(org = %principal.org_id))]
pub async fn restart(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "build")?;
    idempotent(&state, &req, principal.org_id, &[], async || {
        let written = state
            .factory
            .builds
            .restart(&command_context(&principal), id)
            .await
            .map_err(|e| command_error(e, rejected))?;
        queued_reply(&written)
    })
    .await
}

/// Reads a build's log from an offset, or follows it live (`follow=true`: `text/event-stream`,
/// one `log` event per line with `id:` its number, then one `end` event with the build's status).
#[utoipa::path(
    get, path = "/api/v1/builds/{id}/logs", tag = "factory", operation_id = "get_build_logs",
    params(("id" = Uuid, Path, description = "The build's id"), LogParams),
    responses(
        (status = 200, description = "Lines (`application/json`), or with `follow=true` a stream of server-sent events (`text/event-stream`: `event: log` with `id:` the line's number, then `event: end` with the build's status)", content(
            (LogPage = "application/json"),
            (LogEvent = "text/event-stream"),
        )),
        (status = 404, description = "No such build in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.builds.logs", skip_all, fields(org = %principal.org_id))]
pub async fn logs(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    params: web::Query<LogParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "build")?;
    let window = params.window(&req)?;
    await_projection(&state, &req, BUILDS).await?;
    let build = find(&state, principal.org_id, id).await?;
    if window.follow {
        let (pool, org_id) = (state.pool.clone(), principal.org_id);
        let settled: Probe = Box::new(move || {
            let pool = pool.clone();
            Box::pin(async move {
                let b = get_build(&pool, org_id, id).await.ok()??;
                Some(OwnerState {
                    settled: BuildStatus::parse(&b.status).is_some_and(BuildStatus::is_finished),
                    value: serde_json::json!({"status": b.status, "exit_code": b.exit_code}),
                })
            })
        });
        return Ok(crate::logs::follow(
            state.factory.logs.clone(),
            principal.org_id,
            id,
            window.offset,
            settled,
            None,
        ));
    }
    let finished = BuildStatus::parse(&build.status).is_some_and(BuildStatus::is_finished);
    Ok(HttpResponse::Ok().json(
        crate::logs::page(&state.factory.logs, principal.org_id, id, window, finished).await?,
    ))
}

/// The platform's figures for the caller's organization.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatsView {
    /// The software factory's.
    #[schema(value_type = Object)]
    pub factory: FactoryStats,
    /// The deployments' (the PaaS seed's `total_deployments`, `running_deployments`,
    /// `failed_deployments`, `success_rate`).
    #[schema(value_type = Object)]
    pub deployments: DeployStats,
}

/// Query parameters of the stats.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Wait until the stats reflect the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// The organization's figures: projects, builds by status, success rate, median duration.
#[utoipa::path(
    get, path = "/api/v1/stats", tag = "factory", operation_id = "get_stats",
    params(StatsParams),
    responses(
        (status = 200, description = "The figures", body = StatsView),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stats", skip_all, fields(org = %principal.org_id))]
pub async fn stats(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    await_projection(&state, &req, BUILDS).await?;
    await_projection(&state, &req, PROJECTS).await?;
    await_projection(&state, &req, DEPLOYMENTS).await?;
    let factory = factory_stats(&state.pool, principal.org_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let deployments = deploy_stats(&state.pool, principal.org_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(StatsView {
        factory,
        deployments,
    }))
}

/// Registers the build routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/projects/{id}/build").route(web::post().to(trigger)))
        .service(
            web::resource("/projects/{id}/builds")
                .route(web::get().to(list))
                .route(web::post().to(trigger)),
        )
        .service(web::resource("/builds/{id}").route(web::get().to(get)))
        .service(web::resource("/builds/{id}/cancel").route(web::post().to(cancel)))
        .service(web::resource("/builds/{id}/restart").route(web::post().to(restart)))
        .service(web::resource("/builds/{id}/logs").route(web::get().to(logs)))
        .service(web::resource("/stats").route(web::get().to(stats)));
}
