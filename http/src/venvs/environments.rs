//! Environments (GestVenv): `GET`/`POST /environments`, `GET`/`PUT`/`DELETE
//! /environments/{env_id}`, `POST …/activate`, `GET …/export`. `{env_id}` is the id or the name.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::Written;
use atelier_domain::identity::Permission;
use atelier_domain::venvs::environment::{
    EnvStatus, Environment, EnvironmentData, EnvironmentError, MAX_PACKAGES, NewEnvironment,
    parse_description,
};
use atelier_domain::venvs::requirement::parse_list;
use atelier_domain::venvs::values::{BackendKind, EnvName, PythonVersion};
use atelier_projections::venvs::{
    ENVIRONMENT_SORTS, ENVIRONMENTS, EnvironmentQuery, EnvironmentRow, PackageRow,
    active_environment, get_environment, list_environments, packages_of,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::conventions::{
    Reply, await_projection, command_error, etag, idempotent, if_match, if_none_match, json_body,
};
use crate::kit::{Principal, command_context};
use crate::pagination::{CursorParams, KeysetPage, PageParams};
use crate::problem::{ApiError, FieldError, Problem, collect};
use crate::state::AppState;

/// A package found in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PackageView {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// When it was first seen at this version.
    pub installed_at: DateTime<Utc>,
}

impl From<PackageRow> for PackageView {
    fn from(p: PackageRow) -> Self {
        Self {
            name: p.name,
            version: p.version,
            installed_at: p.installed_at,
        }
    }
}

/// What makes an environment ephemeral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EphemeralView {
    /// Its time to live, in seconds.
    pub ttl: u64,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// GestVenv's isolation level.
    pub isolation_level: String,
}

/// An environment, as the API shows it (GestVenv's `Environment`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EnvironmentView {
    /// Its id.
    pub id: Uuid,
    /// Its name, unique within the organization.
    pub name: String,
    /// Its Python version (`3.11`).
    pub python_version: String,
    /// The Python it runs (`3.11.7`), once made.
    pub python: Option<String>,
    /// `pip`, `uv`, `poetry` or `pdm`.
    pub backend: String,
    /// What it is for.
    pub description: String,
    /// `creating`, `ready`, `failed`, `deleted` or `expired`.
    pub status: String,
    /// Why it could not be made.
    pub error: Option<String>,
    /// The packages installed in it, by name.
    pub packages: Vec<PackageView>,
    /// How many.
    pub package_count: u64,
    /// The packages asked for at creation.
    pub requested_packages: Vec<String>,
    /// Whether it is the organization's active environment.
    pub active: bool,
    /// Set for an ephemeral environment.
    pub ephemeral: Option<EphemeralView>,
    /// The operation that made it.
    pub operation_id: Uuid,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its revision: the `ETag`.
    pub revision: u64,
}

impl EnvironmentView {
    /// From the read model.
    pub fn from_row(r: EnvironmentRow, packages: Vec<PackageRow>, active: bool) -> Self {
        let ephemeral = match (r.ttl_secs, r.expires_at) {
            (Some(ttl), Some(expires_at)) if r.ephemeral => Some(EphemeralView {
                ttl: ttl as u64,
                expires_at,
                isolation_level: r.isolation_level.unwrap_or_default(),
            }),
            _ => None,
        };
        Self {
            id: r.id,
            name: r.name,
            python_version: r.python_version,
            python: r.python,
            backend: r.backend,
            description: r.description,
            status: r.status,
            error: r.error,
            packages: packages.into_iter().map(PackageView::from).collect(),
            package_count: r.package_count as u64,
            requested_packages: serde_json::from_value(r.requested).unwrap_or_default(),
            active,
            ephemeral,
            operation_id: r.operation_id,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            revision: r.revision as u64,
        }
    }

    /// From the state a write left.
    pub fn from_state(e: &EnvironmentData, revision: Option<u64>) -> Self {
        Self {
            id: e.id,
            name: e.name.as_str().to_owned(),
            python_version: e.python_version.to_string(),
            python: e.python.clone(),
            backend: e.backend.as_str().to_owned(),
            description: e.description.clone(),
            status: e.status.as_str().to_owned(),
            error: e.error.clone(),
            packages: e
                .packages
                .values()
                .map(|p| PackageView {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    installed_at: p.installed_at,
                })
                .collect(),
            package_count: e.packages.len() as u64,
            requested_packages: e.requested.iter().map(ToString::to_string).collect(),
            active: false,
            ephemeral: e.ephemeral.as_ref().map(|x| EphemeralView {
                ttl: x.ttl_secs,
                expires_at: x.expires_at,
                isolation_level: x.isolation_level.clone(),
            }),
            operation_id: e.creation,
            created_by: e.created_by.clone(),
            created_at: e.created_at,
            updated_at: e.updated_at,
            revision: revision.unwrap_or(0),
        }
    }
}

fn written_view(w: &Written<Environment>) -> Result<EnvironmentView, ApiError> {
    let e = w
        .state
        .data()
        .ok_or_else(|| ApiError::not_found("no such environment"))?;
    Ok(EnvironmentView::from_state(e, w.revision))
}

/// An environment command's refusal, as a problem.
pub fn rejected(e: EnvironmentError) -> ApiError {
    match e {
        EnvironmentError::NotFound => ApiError::not_found("no such environment"),
        EnvironmentError::AlreadyExists => ApiError::conflict("the environment already exists"),
        EnvironmentError::NotReady(status) => ApiError::new(
            StatusCode::CONFLICT,
            "ENVIRONMENT_NOT_READY",
            format!("the environment is {} and not ready", status.as_str()),
        ),
        EnvironmentError::NotCreating(status) => ApiError::new(
            StatusCode::CONFLICT,
            "ILLEGAL_TRANSITION",
            format!("the environment is {}, not being created", status.as_str()),
        ),
        EnvironmentError::NotEphemeral => ApiError::new(
            StatusCode::CONFLICT,
            "NOT_EPHEMERAL",
            "the environment is not ephemeral",
        ),
        EnvironmentError::NotDue(at) => ApiError::new(
            StatusCode::CONFLICT,
            "NOT_DUE",
            format!("the environment does not expire before {at}"),
        ),
    }
}

/// The environment `{env_id}` names in the caller's organization (its id or its name): a 404
/// when there is none.
pub async fn resolve(state: &AppState, org_id: Uuid, raw: &str) -> Result<Uuid, ApiError> {
    state
        .venvs
        .environments
        .resolve(org_id, raw)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such environment"))
}

/// Reads one environment from the read model, with its packages.
pub async fn read(state: &AppState, org_id: Uuid, id: Uuid) -> Result<EnvironmentView, ApiError> {
    let row = get_environment(&state.pool, org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such environment"))?;
    let packages = atelier_projections::venvs::environment_packages(&state.pool, org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let active = active_environment(&state.pool, org_id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .is_some_and(|a| a.id == id);
    Ok(EnvironmentView::from_row(row, packages, active))
}

/// A new environment (GestVenv's `EnvironmentCreate`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"name": "my-project", "python_version": "3.11", "backend": "uv", "packages": ["django", "requests"]}))]
pub struct EnvironmentBody {
    /// 1 to 255 of `[A-Za-z0-9_-]`, unique within the organization.
    pub name: String,
    /// `3.9` to `3.13`, as this server has them (`GET /system/info`); default 3.11.
    pub python_version: Option<String>,
    /// `pip`, `uv`, `poetry` or `pdm`, as this server has them (`GET /system/backends`);
    /// default `uv` when installed, else `pip`.
    pub backend: Option<String>,
    /// What it is for, up to 1000 characters.
    #[serde(default)]
    pub description: String,
    /// Packages to install once it is made (PEP 508 requirements, at most 1000).
    #[serde(default)]
    pub packages: Vec<String>,
}

/// Every invalid field of an environment to create, at once.
pub fn parse_new(
    state: &AppState,
    name: &str,
    python_version: Option<&str>,
    backend: Option<&str>,
    description: &str,
    packages: &[String],
) -> Result<NewEnvironment, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let name = collect(&mut errors, EnvName::parse(name));
    let python_version = collect(
        &mut errors,
        PythonVersion::parse(python_version.unwrap_or("3.11")),
    );
    let backends = &state.venvs.backends;
    let backend = match backend {
        Some(b) => collect(&mut errors, BackendKind::parse(b)),
        None => Some(
            if backends
                .backends()
                .iter()
                .any(|b| b.name == BackendKind::Uv && b.available)
            {
                BackendKind::Uv
            } else {
                BackendKind::Pip
            },
        ),
    };
    let description = collect(&mut errors, parse_description(description));
    let packages = match parse_list("packages", packages, MAX_PACKAGES) {
        Ok(p) => Some(p),
        Err(bad) => {
            errors.extend(bad.into_iter().map(FieldError::from));
            None
        }
    };
    if let (Some(backend), Some(python)) = (backend, python_version)
        && let Err(refused) = backends.check(backend, python)
    {
        let field = match refused {
            atelier_commands::venvs::backend::Unavailable::Python(_)
            | atelier_commands::venvs::backend::Unavailable::NoVenv(_) => "python_version",
            _ => "backend",
        };
        errors.push(FieldError {
            field: field.into(),
            message: refused.to_string(),
        });
    }
    match (name, python_version, backend, description, packages) {
        (Some(name), Some(python_version), Some(backend), Some(description), Some(packages))
            if errors.is_empty() =>
        {
            Ok(NewEnvironment {
                name,
                python_version,
                backend,
                description,
                packages,
                ephemeral: None,
            })
        }
        _ => Err(ApiError::validation(errors)),
    }
}

/// A new environment's answer: the environment (being made) and the operation making it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedView {
    /// The environment.
    #[serde(flatten)]
    pub environment: EnvironmentView,
    /// Where its operation's log streams: `GET /operations/{operation_id}/stream`.
    pub stream_url: String,
}

/// Writes a new environment and answers 202 (its operation makes it).
pub async fn create_environment(
    state: &AppState,
    principal: &Principal,
    new: NewEnvironment,
    location: &str,
) -> Result<Reply, ApiError> {
    let created = state
        .venvs
        .environments
        .create(&command_context(principal), new)
        .await
        .map_err(|e| command_error(e, rejected))?;
    if let Err(e) = &created.operation {
        // The runner queues it when it finds the environment still being created.
        tracing::warn!(error = %e, "the operation making an environment was not queued yet");
    }
    let position = created
        .operation
        .as_ref()
        .ok()
        .and_then(|w| w.position)
        .or(created.environment.position);
    let environment = written_view(&created.environment)?;
    let view = CreatedView {
        stream_url: format!("/api/v1/operations/{}/stream", environment.operation_id),
        environment,
    };
    Ok(Reply::json(StatusCode::ACCEPTED, &view)
        .header("location", format!("{location}/{}", view.environment.id))
        .etag(created.environment.revision)
        .position(position))
}

/// Creates an environment: 202, `creating`; an operation makes it (with the chosen backend and
/// Python) and installs its packages, then it is `ready` (or `failed`, with why).
#[utoipa::path(
    post, path = "/api/v1/environments", tag = "venvs", operation_id = "create_environment",
    request_body = EnvironmentBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request")),
    responses(
        (status = 202, description = "Created; its operation makes it", body = CreatedView),
        (status = 400, description = "Invalid fields, every one named (a backend or Python this server does not have included)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.environments.create", skip_all, fields(org = %principal.org_id))]
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let b = json_body::<EnvironmentBody>(&req, &body)?;
    let new = parse_new(
        &state,
        &b.name,
        b.python_version.as_deref(),
        b.backend.as_deref(),
        &b.description,
        &b.packages,
    )?;
    idempotent(&state, &req, principal.org_id, &body, async || {
        create_environment(&state, &principal, new, "/api/v1/environments").await
    })
    .await
}

/// List parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Part of the name, case-insensitive.
    pub search: Option<String>,
    /// Only this backend.
    pub backend: Option<String>,
    /// Only this status (default: every environment that is not deleted or expired).
    pub status: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Answers a page of environments (lasting or ephemeral ones).
pub async fn list_page(
    state: &AppState,
    principal: &Principal,
    req: &HttpRequest,
    page: &PageParams,
    cursor: &CursorParams,
    params: &ListParams,
    ephemeral: bool,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let paging = crate::pagination::paging(&ENVIRONMENT_SORTS, page, cursor, None, &mut errors);
    let search = crate::pagination::search(params.search.as_deref(), &mut errors);
    let backend = params
        .backend
        .as_deref()
        .and_then(|b| collect(&mut errors, BackendKind::parse(b)));
    let status = params
        .status
        .as_deref()
        .and_then(|s| match EnvStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                errors.push(FieldError {
                    field: "status".into(),
                    message: "must be one of creating, ready, failed, deleted, expired".into(),
                });
                None
            }
        });
    crate::pagination::validate(errors)?;
    await_projection(state, req, ENVIRONMENTS).await?;
    let query = EnvironmentQuery {
        paging,
        search,
        backend: backend.map(|b| b.as_str().to_owned()),
        status,
        ephemeral: Some(ephemeral),
    };
    let listed = list_environments(&state.pool, principal.org_id, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let ids: Vec<Uuid> = listed.rows.iter().map(|r| r.id).collect();
    let mut packages: HashMap<Uuid, Vec<PackageRow>> =
        packages_of(&state.pool, principal.org_id, &ids)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    let active = active_environment(&state.pool, principal.org_id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map(|a| a.id);
    Ok(
        HttpResponse::Ok().json(KeysetPage::of(&query.paging, listed, |r| {
            let p = packages.remove(&r.id).unwrap_or_default();
            let is_active = active == Some(r.id);
            EnvironmentView::from_row(r, p, is_active)
        })),
    )
}

/// Lists the organization's lasting environments, newest first, by page number or by keyset
/// cursor.
///
/// Every page carries `pagination.next_cursor`: `cursor=<next_cursor>` answers the
/// environments after that page's last one (with the same filters), with a cost that does not
/// grow with the depth, and environments created meanwhile do not shift it. `total` counts at
/// most 10,000 matches (`total_capped` says when it stopped: the total is then a lower bound);
/// `has_next` is exact.
#[utoipa::path(
    get, path = "/api/v1/environments", tag = "venvs", operation_id = "list_environments",
    params(PageParams, CursorParams, ListParams),
    responses((status = 200, description = "A page of environments", body = KeysetPage<EnvironmentView>)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.environments.list", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
    cursor: web::Query<CursorParams>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    list_page(&state, &principal, &req, &page, &cursor, &params, false).await
}

/// Query parameters of one environment.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Wait until the environment reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Reads an environment, by id or name, with its packages.
#[utoipa::path(
    get, path = "/api/v1/environments/{env_id}", tag = "venvs", operation_id = "get_environment",
    params(("env_id" = String, Path, description = "The environment's id or name"), GetParams),
    responses(
        (status = 200, description = "The environment", body = EnvironmentView),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, description = "No such environment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.environments.get", skip_all, fields(org = %principal.org_id))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    env_id: web::Path<String>,
    _params: web::Query<GetParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = resolve(&state, principal.org_id, &env_id).await?;
    await_projection(&state, &req, ENVIRONMENTS).await?;
    let view = read(&state, principal.org_id, id).await?;
    if if_none_match(req.headers(), view.revision) {
        return Ok(HttpResponse::NotModified()
            .insert_header(("etag", etag(view.revision)))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(view.revision)))
        .json(view))
}

/// What may change in an environment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"description": "The API's environment"}))]
pub struct UpdateBody {
    /// What it is for, up to 1000 characters.
    pub description: String,
}

/// Changes an environment's description (its name, Python and backend are what it was made
/// with: make another to change them).
#[utoipa::path(
    put, path = "/api/v1/environments/{env_id}", tag = "venvs", operation_id = "update_environment",
    request_body = UpdateBody,
    params(("env_id" = String, Path, description = "The environment's id or name"), ("If-Match" = Option<String>, Header, description = "The revision the change applies to")),
    responses(
        (status = 200, description = "Updated", body = EnvironmentView),
        (status = 404, description = "No such environment in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names another revision", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.environments.update", skip_all, fields(org = %principal.org_id))]
pub async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    env_id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let b = json_body::<UpdateBody>(&req, &body)?;
    let description =
        parse_description(&b.description).map_err(|e| ApiError::validation(vec![e.into()]))?;
    let id = resolve(&state, principal.org_id, &env_id).await?;
    let written = state
        .venvs
        .environments
        .update(
            &command_context(&principal),
            id,
            if_match(req.headers())?,
            description,
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::json(StatusCode::OK, &written_view(&written)?)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Deletes an environment: its running operations are cancelled and its directory removed; its
/// name is free again.
#[utoipa::path(
    delete, path = "/api/v1/environments/{env_id}", tag = "venvs", operation_id = "delete_environment",
    params(("env_id" = String, Path, description = "The environment's id or name"), ("If-Match" = Option<String>, Header, description = "The revision the deletion applies to")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such environment in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names another revision", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.environments.delete", skip_all, fields(org = %principal.org_id))]
pub async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    env_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = resolve(&state, principal.org_id, &env_id).await?;
    let written = state
        .venvs
        .environments
        .delete(&command_context(&principal), id, if_match(req.headers())?)
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::empty(StatusCode::NO_CONTENT)
        .position(written.position)
        .into_response())
}

/// An activation: the environment and how to use it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivationView {
    /// The environment, now the organization's active one.
    pub environment: EnvironmentView,
    /// Where it lives on the server.
    pub path: String,
    /// The shell command that activates it there.
    pub activation_command: String,
    /// Its interpreter.
    pub python_executable: String,
}

/// Makes a ready environment the organization's active one, and says how to use it.
#[utoipa::path(
    post, path = "/api/v1/environments/{env_id}/activate", tag = "venvs", operation_id = "activate_environment",
    params(("env_id" = String, Path, description = "The environment's id or name")),
    responses(
        (status = 200, description = "Activated", body = ActivationView),
        (status = 404, description = "No such environment in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "ENVIRONMENT_NOT_READY: it is being made or failed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.environments.activate", skip_all, fields(org = %principal.org_id))]
pub async fn activate(
    state: web::Data<AppState>,
    principal: Principal,
    env_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = resolve(&state, principal.org_id, &env_id).await?;
    let written = state
        .venvs
        .environments
        .activate(&command_context(&principal), id)
        .await
        .map_err(|e| command_error(e, rejected))?;
    let mut environment = written_view(&written)?;
    environment.active = true;
    let dir = atelier_commands::venvs::runner::environment_dir(
        &state.venvs.data_dir,
        principal.org_id,
        id,
    );
    let view = ActivationView {
        environment,
        activation_command: format!(
            "source {}",
            shell_quote(&dir.join("bin").join("activate").display().to_string())
        ),
        python_executable: dir.join("bin").join("python").display().to_string(),
        path: dir.display().to_string(),
    };
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Quotes a path for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Export parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `requirements` (default): `name==version` lines.
    pub format: Option<String>,
    /// Wait until the environment reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Exports an environment's lock: its packages with their exact versions, in the requirements
/// format (`pip install -r` takes it back).
#[utoipa::path(
    get, path = "/api/v1/environments/{env_id}/export", tag = "venvs", operation_id = "export_environment",
    params(("env_id" = String, Path, description = "The environment's id or name"), ExportParams),
    responses(
        (status = 200, description = "The requirements, `text/plain`", content_type = "text/plain", body = String),
        (status = 400, description = "An unknown format", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such environment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.environments.export", skip_all, fields(org = %principal.org_id))]
pub async fn export(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    env_id: web::Path<String>,
    params: web::Query<ExportParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    if let Some(f) = params.format.as_deref()
        && f != "requirements"
    {
        return Err(ApiError::invalid_field(
            "format",
            "must be requirements (name==version lines)",
        ));
    }
    let id = resolve(&state, principal.org_id, &env_id).await?;
    await_projection(&state, &req, ENVIRONMENTS).await?;
    let view = read(&state, principal.org_id, id).await?;
    let mut text = format!(
        "# {} (Python {}, {}), exported by Atelier\n",
        view.name,
        view.python.as_deref().unwrap_or(&view.python_version),
        view.backend
    );
    for p in &view.packages {
        text.push_str(&format!("{}=={}\n", p.name, p.version));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"{}-requirements.txt\"", view.name),
        ))
        .insert_header(("etag", etag(view.revision)))
        .body(text))
}
