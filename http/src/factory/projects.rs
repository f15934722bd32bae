//! Projects: `GET`/`POST /api/v1/projects`, `GET`/`PUT`/`DELETE /api/v1/projects/{id}`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::factory::ProjectInput;
use atelier_commands::handler::Written;
use atelier_domain::factory::project::{BuildCommand, Project, ProjectError, ProjectName, RepoUrl};
use atelier_domain::identity::Permission;
use atelier_projections::factory::{
    PROJECT_SORTS, PROJECTS, ProjectQuery, ProjectRow, get_project, list_projects,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::conventions::{
    Reply, await_projection, command_error, etag, idempotent, if_match, if_none_match, json_body,
};
use crate::kit::{Principal, command_context, path_id};
use crate::pagination::{CursorParams, KeysetPage, PageParams};
use crate::problem::{ApiError, Problem, collect};
use crate::state::AppState;

/// A project, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProjectView {
    /// Its id.
    pub id: Uuid,
    /// Its name, unique within the organization.
    pub name: String,
    /// Its repository URL.
    pub repo: String,
    /// The shell command its builds run.
    pub build_command: Option<String>,
    /// Its revision: the `ETag`, and what `If-Match` names.
    pub revision: u64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its last build's status: `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub last_build_status: Option<String>,
    /// Its last build.
    pub last_build_id: Option<Uuid>,
    /// When its last build was queued.
    pub last_build_at: Option<DateTime<Utc>>,
}

impl From<ProjectRow> for ProjectView {
    fn from(r: ProjectRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            repo: r.repo_url,
            build_command: r.build_command,
            revision: r.revision as u64,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_build_status: r.last_build_status,
            last_build_id: r.last_build_id,
            last_build_at: r.last_build_at,
        }
    }
}

fn view(written: &Written<Project>) -> Option<ProjectView> {
    let p = written.state.active()?;
    Some(ProjectView {
        id: p.id,
        name: p.name.as_str().to_owned(),
        repo: p.repo_url.as_str().to_owned(),
        build_command: p.build_command.as_ref().map(|c| c.as_str().to_owned()),
        revision: written.revision.unwrap_or(0),
        created_at: p.created_at,
        updated_at: p.updated_at,
        // Builds are not part of the project's stream: a read shows them.
        last_build_status: None,
        last_build_id: None,
        last_build_at: None,
    })
}

/// A project's fields, to create it or to replace them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ProjectBody {
    /// 1 to 100 characters (NFKC-normalized; no invisible or bidirectional control characters),
    /// unique within the organization (case, spacing and look-alike characters aside).
    pub name: String,
    /// An http(s), ssh or git URL, or `user@host:path`; a `file://` URL only where the server
    /// allows local repositories. `repo_url` is accepted too.
    #[serde(alias = "repo_url")]
    pub repo: String,
    /// The shell command builds run (optional).
    #[serde(default)]
    pub build_command: Option<String>,
}

impl ProjectBody {
    fn parse(&self) -> Result<ProjectInput, ApiError> {
        let mut errors = Vec::new();
        let name = collect(&mut errors, ProjectName::parse(&self.name));
        let repo_url = collect(&mut errors, RepoUrl::parse(&self.repo));
        let build_command = match &self.build_command {
            Some(c) => collect(&mut errors, BuildCommand::parse(c)).map(Some),
            None => Some(None),
        };
        match (name, repo_url, build_command) {
            (Some(name), Some(repo_url), Some(build_command)) => Ok(ProjectInput {
                name,
                repo_url,
                build_command,
            }),
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// List parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Part of the name, case-insensitive.
    pub search: Option<String>,
    /// `name`, `-name`, `created_at` (default), `-created_at`, `updated_at`, `-updated_at`.
    pub sort: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Query parameters of a single project.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Wait until the project reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

fn rejected(e: ProjectError) -> ApiError {
    match e {
        ProjectError::NotFound => ApiError::not_found("no such project"),
        ProjectError::AlreadyExists => ApiError::conflict("the project already exists"),
    }
}

/// Lists the organization's projects, by page number or by keyset cursor.
///
/// Every page carries `pagination.next_cursor`: `cursor=<next_cursor>` answers the rows after
/// that page's last row in the same sort (the sort may be left out), with a cost that does not
/// grow with the depth, and rows added or removed before it do not shift it. Without `search`,
/// `total` is exact (a count the read model keeps); with it, it counts at most 10,000 matches
/// (`total_capped` says when it stopped: the total is then a lower bound). `has_next` is exact
/// either way.
#[utoipa::path(
    get, path = "/api/v1/projects", tag = "factory", operation_id = "list_projects",
    params(PageParams, CursorParams, ListParams),
    responses(
        (status = 200, description = "A page of projects", body = KeysetPage<ProjectView>),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.projects.list", skip_all, fields(org = %principal.org_id))]
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
    let paging = crate::pagination::paging(
        &PROJECT_SORTS,
        &page,
        &cursor,
        params.sort.as_deref(),
        &mut errors,
    );
    let search = crate::pagination::search(params.search.as_deref(), &mut errors);
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, PROJECTS).await?;
    let query = ProjectQuery { paging, search };
    let listed = list_projects(&state.pool, principal.org_id, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(KeysetPage::of(&query.paging, listed, ProjectView::from)))
}

/// Creates a project. `Idempotency-Key` makes retries safe.
#[utoipa::path(
    post, path = "/api/v1/projects", tag = "factory", operation_id = "create_project",
    request_body = ProjectBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request")),
    responses(
        (status = 201, description = "Created; ETag is its revision, Atelier-Position the write's place in the log", body = ProjectView),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.projects.create", skip_all, fields(org = %principal.org_id))]
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let input = json_body::<ProjectBody>(&req, &body)?.parse()?;
    idempotent(&state, &req, principal.org_id, &body, async || {
        let written = state
            .factory
            .projects
            .create(&command_context(&principal), input)
            .await
            .map_err(|e| command_error(e, rejected))?;
        let view = view(&written).ok_or_else(|| ApiError::bug("created project missing"))?;
        Ok(Reply::json(StatusCode::CREATED, &view)
            .header("location", format!("/api/v1/projects/{}", view.id))
            .etag(written.revision)
            .position(written.position))
    })
    .await
}

/// Reads a project.
#[utoipa::path(
    get, path = "/api/v1/projects/{id}", tag = "factory", operation_id = "get_project",
    params(("id" = Uuid, Path, description = "The project's id"), GetParams),
    responses(
        (status = 200, description = "The project; ETag is its revision", body = ProjectView),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 404, description = "No such project in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.projects.get", skip_all, fields(org = %principal.org_id))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "project")?;
    await_projection(&state, &req, PROJECTS).await?;
    let row = get_project(&state.pool, principal.org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such project"))?;
    let view = ProjectView::from(row);
    if if_none_match(req.headers(), view.revision) {
        return Ok(HttpResponse::NotModified()
            .insert_header(("etag", etag(view.revision)))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(view.revision)))
        .json(view))
}

/// Replaces a project's name, repository and build command. `If-Match` guards against lost
/// updates.
#[utoipa::path(
    put, path = "/api/v1/projects/{id}", tag = "factory", operation_id = "update_project",
    request_body = ProjectBody,
    params(
        ("id" = Uuid, Path, description = "The project's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on"),
    ),
    responses(
        (status = 200, description = "Updated", body = ProjectView),
        (status = 404, description = "No such project in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names an old revision", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.projects.update", skip_all, fields(org = %principal.org_id))]
pub async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "project")?;
    let expected = if_match(req.headers())?;
    let input = json_body::<ProjectBody>(&req, &body)?.parse()?;
    let written = state
        .factory
        .projects
        .update(&command_context(&principal), id, expected, input)
        .await
        .map_err(|e| command_error(e, rejected))?;
    let view = view(&written).ok_or_else(|| ApiError::not_found("no such project"))?;
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Deletes a project; its name becomes free.
#[utoipa::path(
    delete, path = "/api/v1/projects/{id}", tag = "factory", operation_id = "delete_project",
    params(
        ("id" = Uuid, Path, description = "The project's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the deletion is based on"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such project in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names an old revision", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.projects.delete", skip_all, fields(org = %principal.org_id))]
pub async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "project")?;
    let expected = if_match(req.headers())?;
    let written = state
        .factory
        .projects
        .delete(&command_context(&principal), id, expected)
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::empty(StatusCode::NO_CONTENT)
        .position(written.position)
        .into_response())
}

/// Registers the factory's routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/projects")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/projects/{id}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(delete)),
    );
}
