//! An environment's packages (GestVenv): `GET`/`POST`/`PUT /environments/{env_id}/packages`,
//! `DELETE /environments/{env_id}/packages/{package_name}`. Every change is an operation.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::Written;
use atelier_commands::venvs::QueueError;
use atelier_domain::identity::Permission;
use atelier_domain::venvs::environment::MAX_PACKAGES;
use atelier_domain::venvs::operation::{Operation, OperationRequest};
use atelier_domain::venvs::requirement::{parse_list, parse_name};
use atelier_projections::venvs::{ENVIRONMENTS, environment_packages};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::environments::{PackageView, resolve};
use super::operations::{OperationView, queued_reply};
use crate::conventions::{await_projection, json_body};
use crate::kit::{Principal, command_context};
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// Query parameters of a package list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PackageListParams {
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// An environment's packages.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PackageList {
    /// The environment.
    pub environment_id: Uuid,
    /// Its packages, by name, as last read from the environment itself.
    pub packages: Vec<PackageView>,
    /// How many.
    pub total: u64,
}

/// Lists an environment's packages, as last read from the environment (after each operation;
/// `environment:refresh` on the live feed reads them again).
#[utoipa::path(
    get, path = "/api/v1/environments/{env_id}/packages", tag = "venvs", operation_id = "list_packages",
    params(("env_id" = String, Path, description = "The environment's id or name"), PackageListParams),
    responses(
        (status = 200, description = "Its packages", body = PackageList),
        (status = 404, description = "No such environment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.packages.list", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    env_id: web::Path<String>,
    _params: web::Query<PackageListParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = resolve(&state, principal.org_id, &env_id).await?;
    await_projection(&state, &req, ENVIRONMENTS).await?;
    let packages: Vec<PackageView> = environment_packages(&state.pool, principal.org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .map(PackageView::from)
        .collect();
    Ok(HttpResponse::Ok().json(PackageList {
        environment_id: id,
        total: packages.len() as u64,
        packages,
    }))
}

/// Packages to install.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"packages": ["pandas", "numpy>=1.26"], "upgrade": false}))]
pub struct InstallBody {
    /// PEP 508 requirements (a name, extras, version specifiers, a marker); options, paths and
    /// URLs are refused. 1 to 1000.
    pub packages: Vec<String>,
    /// Upgrade those already installed.
    #[serde(default)]
    pub upgrade: bool,
}

/// Packages to update.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"packages": ["django"], "to_version": "4.2.0"}))]
pub struct UpdateBody {
    /// Names (or requirements) of installed packages. 1 to 1000.
    pub packages: Vec<String>,
    /// The version to take them to (else the newest their requirements allow).
    pub to_version: Option<String>,
}

/// Queues an operation on an environment of the caller's organization, or says why not.
pub async fn queue_operation(
    state: &AppState,
    principal: &Principal,
    environment_id: Uuid,
    request: OperationRequest,
) -> Result<Written<Operation>, ApiError> {
    state
        .venvs
        .operations
        .queue(&command_context(principal), environment_id, request)
        .await
        .map_err(|e| crate::conventions::command_error(e, super::operations::rejected))?
        .map_err(queue_refused)
}

/// Queues an operation on an environment; answers 202 with it.
pub async fn queue(
    state: &AppState,
    principal: &Principal,
    environment_id: Uuid,
    request: OperationRequest,
) -> Result<HttpResponse, ApiError> {
    queued_reply(&queue_operation(state, principal, environment_id, request).await?)
}

/// Why an operation was not queued, as a problem.
pub fn queue_refused(e: QueueError) -> ApiError {
    match e {
        QueueError::NoEnvironment => ApiError::not_found("no such environment"),
        QueueError::NotReady(status) => ApiError::new(
            StatusCode::CONFLICT,
            "ENVIRONMENT_NOT_READY",
            format!(
                "the environment is {}: its creation did not succeed (see its operation)",
                status.as_str()
            ),
        ),
    }
}

fn requirements(
    raw: &[String],
) -> Result<Vec<atelier_domain::venvs::requirement::Requirement>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::invalid_field(
            "packages",
            "must name at least one package",
        ));
    }
    parse_list("packages", raw, MAX_PACKAGES)
        .map_err(|bad| ApiError::validation(bad.into_iter().map(FieldError::from).collect()))
}

/// Installs packages into an environment: 202 with the operation doing it.
#[utoipa::path(
    post, path = "/api/v1/environments/{env_id}/packages", tag = "venvs", operation_id = "install_packages",
    request_body = InstallBody,
    params(("env_id" = String, Path, description = "The environment's id or name")),
    responses(
        (status = 202, description = "The operation installing them", body = OperationView),
        (status = 400, description = "Invalid requirements, every one named", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such environment in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "ENVIRONMENT_NOT_READY", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.packages.install", skip_all, fields(org = %principal.org_id))]
pub async fn install(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    env_id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let b = json_body::<InstallBody>(&req, &body)?;
    let packages = requirements(&b.packages)?;
    let id = resolve(&state, principal.org_id, &env_id).await?;
    let request = OperationRequest::Install {
        packages,
        upgrade: b.upgrade,
    };
    queue(&state, &principal, id, request).await
}

/// Updates packages of an environment, to the newest or to `to_version`: 202 with the
/// operation doing it.
#[utoipa::path(
    put, path = "/api/v1/environments/{env_id}/packages", tag = "venvs", operation_id = "update_packages",
    request_body = UpdateBody,
    params(("env_id" = String, Path, description = "The environment's id or name")),
    responses(
        (status = 202, description = "The operation updating them", body = OperationView),
        (status = 400, description = "Invalid requirements or version, every one named", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such environment in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "ENVIRONMENT_NOT_READY", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.packages.update", skip_all, fields(org = %principal.org_id))]
pub async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    env_id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let b = json_body::<UpdateBody>(&req, &body)?;
    let mut packages = requirements(&b.packages)?;
    if let Some(version) = b.to_version.as_deref() {
        let mut errors = Vec::new();
        packages = packages
            .iter()
            .filter_map(|r| match r.with_version(version) {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.push(FieldError::from(e));
                    None
                }
            })
            .collect();
        crate::pagination::validate(errors)?;
    }
    let id = resolve(&state, principal.org_id, &env_id).await?;
    queue(
        &state,
        &principal,
        id,
        OperationRequest::Update { packages },
    )
    .await
}

/// Uninstalls a package from an environment: 202 with the operation doing it.
#[utoipa::path(
    delete, path = "/api/v1/environments/{env_id}/packages/{package_name}", tag = "venvs", operation_id = "uninstall_package",
    params(
        ("env_id" = String, Path, description = "The environment's id or name"),
        ("package_name" = String, Path, description = "The package's name"),
    ),
    responses(
        (status = 202, description = "The operation uninstalling it", body = OperationView),
        (status = 400, description = "Not a package name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such environment in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "ENVIRONMENT_NOT_READY", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.packages.uninstall", skip_all, fields(org = %principal.org_id))]
pub async fn uninstall(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let (env_id, package_name) = path.into_inner();
    let name = parse_name(&package_name).map_err(|e| ApiError::validation(vec![e.into()]))?;
    let id = resolve(&state, principal.org_id, &env_id).await?;
    let request = OperationRequest::Uninstall {
        packages: vec![name],
    };
    queue(&state, &principal, id, request).await
}
