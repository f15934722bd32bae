//! Stacks (WindFlow): `GET`/`POST /stacks`, `GET`/`PUT`/`DELETE /stacks/{id}`,
//! `POST /stacks/validate`, `POST /stacks/{id}/validate`, `POST /stacks/generate` and
//! `POST /stacks/{id}/optimize`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::Written;
use atelier_commands::stacks::assistant::Answer;
use atelier_commands::stacks::service::{NewStack, NewVersion};
use atelier_domain::deploy::spec::{
    DeploymentName, DeploymentSpec, DeploymentType, Resources, StackSource,
};
use atelier_domain::identity::Permission;
use atelier_domain::stacks::assistant::{
    EnvironmentType, GenerationRequest, OptimizationGoals, ResourceConstraints, SecurityLevel,
    TargetPlatform, parse_description as parse_generation_description,
};
use atelier_domain::stacks::compose::{self, Report};
use atelier_domain::stacks::stack::{
    Origin, Stack, StackError, StackName, StackStatus, Suggestion, parse_description,
};
use atelier_projections::stacks::{STACKS, StackRow, get_stack, list_stacks};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::conventions::{
    Reply, await_projection, command_error, etag, idempotent, if_match, json_body,
};
use crate::kit::{Principal, command_context, path_id};
use crate::pagination::{Page, PageParams, Pagination};
use crate::problem::{ApiError, FieldError, Problem, collect};
use crate::state::AppState;

/// A stack, as the API shows it (WindFlow's `StackResponse`, and its version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StackView {
    /// Its id.
    pub id: Uuid,
    /// Its name, unique within the organization.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Its configuration: a docker compose document.
    #[schema(value_type = Object)]
    pub configuration: serde_json::Value,
    /// The configuration's version, from 1.
    pub version: u32,
    /// Whether the current version is the assistant's optimization.
    pub llm_optimized: bool,
    /// `valid`, `invalid` (saved, not deployable) or `deployed` (its current version is).
    pub status: String,
    /// Who proposed the current version: `{"by": "manual"}`, or `{"by": "assistant", engine,
    /// model, request_hash, kind, notes}`.
    #[schema(value_type = Object)]
    pub origin: serde_json::Value,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When a version of it was last deployed.
    pub last_deployed_at: Option<DateTime<Utc>>,
    /// Its revision: the `ETag`.
    pub revision: u64,
}

impl From<StackRow> for StackView {
    fn from(r: StackRow) -> Self {
        let version = r.version as u32;
        Self {
            id: r.id,
            status: StackStatus::of(r.valid, version, r.deployed_version.map(|v| v as u32))
                .as_str()
                .to_owned(),
            name: r.name,
            description: r.description,
            configuration: r.configuration,
            version,
            llm_optimized: r.llm_optimized,
            origin: r.origin,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_deployed_at: r.last_deployed_at,
            revision: r.revision as u64,
        }
    }
}

fn view(written: &Written<Stack>) -> Result<StackView, ApiError> {
    let s = written
        .state
        .present()
        .ok_or_else(|| ApiError::not_found("no such stack"))?;
    Ok(StackView {
        id: s.id,
        name: s.name.as_str().to_owned(),
        description: s.description.clone(),
        configuration: s.configuration.clone(),
        version: s.version,
        llm_optimized: s.llm_optimized,
        status: s.status().as_str().to_owned(),
        origin: serde_json::to_value(&s.origin).unwrap_or_default(),
        created_at: s.created_at,
        updated_at: s.updated_at,
        last_deployed_at: s.last_deployed_at,
        revision: written.revision.unwrap_or(0),
    })
}

fn rejected(e: StackError) -> ApiError {
    match e {
        StackError::NotFound => ApiError::not_found("no such stack"),
        StackError::AlreadyExists => ApiError::conflict("the stack already exists"),
        StackError::NotDeployable(why) => ApiError::conflict(why),
    }
}

/// One finding of a validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FindingView {
    /// Where in the document (`services.web.ports[1]`).
    pub path: String,
    /// The rule (`spec`, `no_image`, `dependency_cycle`, …).
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

/// A validation's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"valid": false,
    "errors": [{"path": "services.api", "rule": "no_image", "message": "service api has neither image nor build"},
               {"path": "services.web.depends_on", "rule": "dependency_cycle", "message": "depends_on forms a cycle: web → api → web"}],
    "warnings": [{"path": "services.db.image", "rule": "latest_tag", "message": "postgres:latest is not pinned"}]}))]
pub struct ValidationView {
    /// Whether there is no error.
    pub valid: bool,
    /// What the specification or a reviewer refuses.
    pub errors: Vec<FindingView>,
    /// What a reviewer would flag.
    pub warnings: Vec<FindingView>,
}

impl From<Report> for ValidationView {
    fn from(r: Report) -> Self {
        let findings = |f: Vec<compose::Finding>| {
            f.into_iter()
                .map(|f| FindingView {
                    path: f.path,
                    rule: f.rule,
                    message: f.message,
                })
                .collect()
        };
        Self {
            valid: r.valid,
            errors: findings(r.errors),
            warnings: findings(r.warnings),
        }
    }
}

/// A configuration as a body gives it: a mapping, or YAML or JSON text. Parsed with the
/// compose module's limits (size, aliases, a mapping at the root) before any work.
pub fn configuration(
    field: &str,
    raw: &serde_json::Value,
) -> Result<serde_json::Value, FieldError> {
    let text = match raw {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    compose::parse(&text).map_err(|e| FieldError {
        field: if e.path.is_empty() {
            field.to_owned()
        } else {
            format!("{field}.{}", e.path)
        },
        message: e.message,
    })
}

/// A stack's fields.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"name": "shop", "description": "The shop and its database",
    "configuration": {"services": {"web": {"image": "nginx:1.27", "ports": ["8080:80"]}}}}))]
pub struct StackBody {
    /// 1 to 100 characters, unique within the organization.
    pub name: String,
    /// Up to 1000 characters.
    #[serde(default)]
    pub description: String,
    /// A docker compose document: a mapping, or its YAML or JSON text (at most 256 KiB).
    #[schema(value_type = Object)]
    pub configuration: serde_json::Value,
}

struct ParsedStack {
    name: StackName,
    description: String,
    configuration: serde_json::Value,
}

impl StackBody {
    fn parse(&self) -> Result<ParsedStack, ApiError> {
        let mut errors = Vec::new();
        let name = collect(&mut errors, StackName::parse(&self.name));
        let description = collect(&mut errors, parse_description(&self.description));
        let configuration = configuration("configuration", &self.configuration)
            .map_err(|e| errors.push(e))
            .ok();
        match (name, description, configuration) {
            (Some(name), Some(description), Some(configuration)) => Ok(ParsedStack {
                name,
                description,
                configuration,
            }),
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// List parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Part of the name or description, case-insensitive.
    pub search: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Lists the organization's stacks by name.
#[utoipa::path(
    get, path = "/api/v1/stacks", tag = "stacks", operation_id = "list_stacks",
    params(PageParams, ListParams),
    responses((status = 200, description = "A page of stacks", body = Page<StackView>)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stacks.list", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let (page, per_page) = page.collect(&mut errors);
    let search = crate::pagination::search(params.search.as_deref(), &mut errors);
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, STACKS).await?;
    let (rows, total) = list_stacks(
        &state.pool,
        principal.org_id,
        search.as_deref(),
        page,
        per_page,
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(Page {
        data: rows.into_iter().map(StackView::from).collect(),
        pagination: Pagination::new(page, per_page, total),
    }))
}

/// Creates a stack (version 1), validated as it is saved: an invalid one is kept, as
/// `invalid`, and cannot be deployed.
#[utoipa::path(
    post, path = "/api/v1/stacks", tag = "stacks", operation_id = "create_stack",
    request_body = StackBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request")),
    responses(
        (status = 201, description = "Created", body = StackView),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stacks.create", skip_all, fields(org = %principal.org_id))]
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let parsed = json_body::<StackBody>(&req, &body)?.parse()?;
    idempotent(&state, &req, principal.org_id, &body, async || {
        let valid = compose::validate(&parsed.configuration).valid;
        let written = state
            .stacks
            .stacks
            .create(
                &command_context(&principal),
                NewStack {
                    name: parsed.name.clone(),
                    description: parsed.description.clone(),
                    configuration: parsed.configuration.clone(),
                    valid,
                    origin: Origin::Manual,
                },
            )
            .await
            .map_err(|e| command_error(e, rejected))?;
        let view = view(&written)?;
        Ok(Reply::json(StatusCode::CREATED, &view)
            .header("location", format!("/api/v1/stacks/{}", view.id))
            .etag(written.revision)
            .position(written.position))
    })
    .await
}

/// Query parameters of a single stack.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Wait until the stack reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Reads a stack.
#[utoipa::path(
    get, path = "/api/v1/stacks/{id}", tag = "stacks", operation_id = "get_stack",
    params(("id" = Uuid, Path, description = "The stack's id"), GetParams),
    responses(
        (status = 200, description = "The stack", body = StackView),
        (status = 404, description = "No such stack in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stacks.get", skip_all, fields(org = %principal.org_id))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "stack")?;
    await_projection(&state, &req, STACKS).await?;
    let view = StackView::from(
        get_stack(&state.pool, principal.org_id, id)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .ok_or_else(|| ApiError::not_found("no such stack"))?,
    );
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(view.revision)))
        .json(view))
}

/// Replaces a stack's name, description and configuration: a changed configuration is a new
/// version (validated as it is saved).
#[utoipa::path(
    put, path = "/api/v1/stacks/{id}", tag = "stacks", operation_id = "update_stack",
    request_body = StackBody,
    params(
        ("id" = Uuid, Path, description = "The stack's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on"),
    ),
    responses(
        (status = 200, description = "Updated", body = StackView),
        (status = 404, description = "No such stack in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stacks.update", skip_all, fields(org = %principal.org_id))]
pub async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "stack")?;
    let mut expected = if_match(req.headers())?;
    let parsed = json_body::<StackBody>(&req, &body)?.parse()?;
    let ctx = command_context(&principal);
    let service = &state.stacks.stacks;
    let described = service
        .describe(
            &ctx,
            id,
            expected,
            Some(parsed.name),
            Some(parsed.description),
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    if described.position.is_some() {
        expected = described.revision;
    }
    let valid = compose::validate(&parsed.configuration).valid;
    let written = service
        .configure(
            &ctx,
            id,
            expected,
            NewVersion {
                configuration: parsed.configuration,
                valid,
                llm_optimized: false,
                origin: Origin::Manual,
            },
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    let view = view(&written)?;
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position.or(described.position))
        .into_response())
}

/// Deletes a stack.
#[utoipa::path(
    delete, path = "/api/v1/stacks/{id}", tag = "stacks", operation_id = "delete_stack",
    params(
        ("id" = Uuid, Path, description = "The stack's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the deletion is based on"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such stack in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stacks.delete", skip_all, fields(org = %principal.org_id))]
pub async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "stack")?;
    let expected = if_match(req.headers())?;
    let written = state
        .stacks
        .stacks
        .delete(&command_context(&principal), id, expected)
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::empty(StatusCode::NO_CONTENT)
        .position(written.position)
        .into_response())
}

/// A configuration to validate.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"configuration": "services:\n  web:\n    image: nginx:1.27\n"}))]
pub struct ValidateBody {
    /// A docker compose document: a mapping, or its YAML or JSON text.
    #[schema(value_type = Object)]
    pub configuration: serde_json::Value,
}

/// Validates a configuration not yet saved: the Compose Specification's model, then a
/// reviewer's checks. A document too large, an alias bomb or a non-mapping is a 400.
#[utoipa::path(
    post, path = "/api/v1/stacks/validate", tag = "stacks", operation_id = "validate_configuration",
    request_body = ValidateBody,
    responses((status = 200, description = "The findings", body = ValidationView)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stacks.validate", skip_all, fields(org = %principal.org_id))]
pub async fn validate(
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let body = json_body::<ValidateBody>(&req, &body)?;
    let config = configuration("configuration", &body.configuration)
        .map_err(|e| ApiError::validation(vec![e]))?;
    Ok(HttpResponse::Ok().json(ValidationView::from(compose::validate(&config))))
}

/// Validates a stack's current version.
#[utoipa::path(
    post, path = "/api/v1/stacks/{id}/validate", tag = "stacks", operation_id = "validate_stack",
    params(("id" = Uuid, Path, description = "The stack's id")),
    responses(
        (status = 200, description = "The findings", body = ValidationView),
        (status = 404, description = "No such stack in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stacks.validate_stack", skip_all, fields(org = %principal.org_id))]
pub async fn validate_stack(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "stack")?;
    let (stack, _) = current(&state, &principal, id).await?;
    let s = stack
        .present()
        .ok_or_else(|| ApiError::not_found("no such stack"))?;
    Ok(HttpResponse::Ok().json(ValidationView::from(compose::validate(&s.configuration))))
}

async fn current(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<(Stack, Option<u64>), ApiError> {
    state
        .stacks
        .stacks
        .get(principal.org_id, id)
        .await
        .map_err(|e| command_error(e, rejected))?
        .ok_or_else(|| ApiError::not_found("no such stack"))
}

/// WindFlow's `StackGenerationRequest`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"description": "a Django app with PostgreSQL and Redis behind nginx",
    "target_platform": "docker", "environment_type": "production", "security_level": "high"}))]
pub struct GenerateBody {
    /// What the stack is for: 10 to 1000 characters.
    pub description: String,
    /// `docker` (default), `docker_swarm` or `kubernetes`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub target_platform: Option<serde_json::Value>,
    /// `development` (default), `staging` or `production`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub environment_type: Option<serde_json::Value>,
    /// Limits the stack must fit in.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub resource_constraints: Option<serde_json::Value>,
    /// `basic`, `standard` (default) or `high`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub security_level: Option<serde_json::Value>,
    /// The stack's name (default: the assistant's).
    pub name: Option<String>,
}

fn choice<T: serde::de::DeserializeOwned + Default>(
    field: &str,
    raw: &Option<serde_json::Value>,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match raw {
        None | Some(serde_json::Value::Null) => Some(T::default()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| {
                errors.push(FieldError {
                    field: field.to_owned(),
                    message: e.to_string(),
                })
            })
            .ok(),
    }
}

impl GenerateBody {
    fn parse(&self) -> Result<(GenerationRequest, Option<StackName>), ApiError> {
        let mut errors = Vec::new();
        let description = collect(&mut errors, parse_generation_description(&self.description));
        let target_platform =
            choice::<TargetPlatform>("target_platform", &self.target_platform, &mut errors);
        let environment_type =
            choice::<EnvironmentType>("environment_type", &self.environment_type, &mut errors);
        let security_level =
            choice::<SecurityLevel>("security_level", &self.security_level, &mut errors);
        let resource_constraints = match &self.resource_constraints {
            None | Some(serde_json::Value::Null) => Some(None),
            Some(v) => serde_json::from_value::<ResourceConstraints>(v.clone())
                .map(Some)
                .map_err(|e| {
                    errors.push(FieldError {
                        field: "resource_constraints".into(),
                        message: e.to_string(),
                    })
                })
                .ok(),
        };
        let name = match &self.name {
            None => Some(None),
            Some(n) => collect(&mut errors, StackName::parse(n)).map(Some),
        };
        match (
            description,
            target_platform,
            environment_type,
            security_level,
            resource_constraints,
            name,
        ) {
            (Some(description), Some(tp), Some(et), Some(sl), Some(rc), Some(name)) => {
                let request = GenerationRequest {
                    description,
                    target_platform: tp,
                    environment_type: et,
                    resource_constraints: rc,
                    security_level: sl,
                }
                .checked()
                .map_err(|e| ApiError::validation(e.into_iter().map(FieldError::from).collect()))?;
                Ok((request, name))
            }
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// Who answered an assistant's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EngineView {
    /// `offline` or `llm`.
    pub engine: String,
    /// The model (`None`: the offline engine).
    pub model: Option<String>,
    /// SHA-256 of the request the engine was given.
    pub request_hash: String,
    /// Why the LLM engine's answer was not used, when the offline engine answered instead.
    pub fallback: Option<String>,
}

impl<T> From<&Answer<T>> for EngineView {
    fn from(a: &Answer<T>) -> Self {
        Self {
            engine: a.engine.to_owned(),
            model: a.model.clone(),
            request_hash: a.request_hash.clone(),
            fallback: a.fallback.clone(),
        }
    }
}

fn suggestion<T>(answer: &Answer<T>, kind: &str, notes: Vec<String>) -> Origin {
    Origin::Assistant(Suggestion {
        engine: answer.engine.to_owned(),
        model: answer.model.clone(),
        request_hash: answer.request_hash.clone(),
        kind: kind.to_owned(),
        notes,
    })
}

/// A generated stack.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GeneratedView {
    /// The saved stack.
    pub stack: StackView,
    /// Who answered.
    pub assistant: EngineView,
    /// The service templates it used.
    pub services: Vec<String>,
    /// What it assumed or did not recognize.
    pub notes: Vec<String>,
    /// Its validation.
    pub validation: ValidationView,
}

/// Generates a stack from a description (the assistant: an LLM when one is configured, else,
/// or when it fails, the offline engine) and saves it.
#[utoipa::path(
    post, path = "/api/v1/stacks/generate", tag = "stacks", operation_id = "generate_stack",
    request_body = GenerateBody,
    responses(
        (status = 201, description = "Generated and saved", body = GeneratedView),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stacks.generate", skip_all, fields(org = %principal.org_id))]
pub async fn generate(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let (request, name) = json_body::<GenerateBody>(&req, &body)?.parse()?;
    idempotent(&state, &req, principal.org_id, &body, async || {
        let answer = state.stacks.assistant.generate(&request).await;
        let generated = &answer.value;
        let report = compose::validate(&generated.configuration);
        let name = match &name {
            Some(n) => n.clone(),
            None => StackName::parse(&generated.name)
                .map_err(|e| ApiError::bug(format!("the assistant's name: {e}")))?,
        };
        let written = state
            .stacks
            .stacks
            .create(
                &command_context(&principal),
                NewStack {
                    name,
                    description: request.description.clone(),
                    configuration: generated.configuration.clone(),
                    valid: report.valid,
                    origin: suggestion(&answer, "generate", generated.notes.clone()),
                },
            )
            .await
            .map_err(|e| command_error(e, rejected))?;
        let stack = view(&written)?;
        let body = GeneratedView {
            assistant: EngineView::from(&answer),
            services: generated.services.clone(),
            notes: generated.notes.clone(),
            validation: ValidationView::from(report),
            stack,
        };
        Ok(Reply::json(StatusCode::CREATED, &body)
            .header("location", format!("/api/v1/stacks/{}", body.stack.id))
            .etag(written.revision)
            .position(written.position))
    })
    .await
}

/// What to optimize for.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(example = json!({"goals": ["security", "reliability"]}))]
pub struct OptimizeBody {
    /// `performance`, `security`, `reliability`, `cost`; none: all of them.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub goals: serde_json::Value,
}

/// One change the assistant made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeView {
    /// Where.
    pub path: String,
    /// Which rule.
    pub rule: String,
    /// What it did.
    pub description: String,
}

/// An optimized stack.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OptimizedView {
    /// The stack at its new version (unchanged when there was nothing to do).
    pub stack: StackView,
    /// Who answered.
    pub assistant: EngineView,
    /// What changed.
    pub changes: Vec<ChangeView>,
    /// A unified diff of the YAML before and after.
    pub diff: String,
}

/// Optimizes a stack's current version into a new one (`llm_optimized`), listing the changes
/// and their diff.
#[utoipa::path(
    post, path = "/api/v1/stacks/{id}/optimize", tag = "stacks", operation_id = "optimize_stack",
    request_body = OptimizeBody,
    params(("id" = Uuid, Path, description = "The stack's id")),
    responses(
        (status = 200, description = "The new version, its changes and diff", body = OptimizedView),
        (status = 404, description = "No such stack in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stacks.optimize", skip_all, fields(org = %principal.org_id))]
pub async fn optimize(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "stack")?;
    let body = if body.is_empty() {
        OptimizeBody::default()
    } else {
        json_body::<OptimizeBody>(&req, &body)?
    };
    let goals: OptimizationGoals = match &body.goals {
        serde_json::Value::Null => OptimizationGoals::default(),
        goals => serde_json::from_value(serde_json::json!({ "goals": goals }))
            .map_err(|e| ApiError::invalid_field("goals", e.to_string()))?,
    };
    let (stack, revision) = current(&state, &principal, id).await?;
    let s = stack
        .present()
        .ok_or_else(|| ApiError::not_found("no such stack"))?;
    let answer = state
        .stacks
        .assistant
        .optimize(&s.configuration, &goals)
        .await;
    let optimized = &answer.value;
    let valid = compose::validate(&optimized.configuration).valid;
    let notes = optimized
        .changes
        .iter()
        .map(|c| format!("{}: {}", c.path, c.description))
        .collect();
    let written = state
        .stacks
        .stacks
        .configure(
            &command_context(&principal),
            id,
            revision,
            NewVersion {
                configuration: optimized.configuration.clone(),
                valid,
                llm_optimized: true,
                origin: suggestion(&answer, "optimize", notes),
            },
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    let view = OptimizedView {
        stack: view(&written)?,
        assistant: EngineView::from(&answer),
        changes: optimized
            .changes
            .iter()
            .map(|c| ChangeView {
                path: c.path.clone(),
                rule: c.rule.clone(),
                description: c.description.clone(),
            })
            .collect(),
        diff: optimized.diff.clone(),
    };
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Where to deploy a stack.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(example = json!({"target_id": "0193a5c2-7a4e-7cc1-9b1e-3f0a9a3c1d2e", "name": "shop-prod"}))]
pub struct DeployBody {
    /// The target (WindFlow's environment) to deploy to.
    pub target_id: Option<Uuid>,
    /// The deployment's name: 3 to 50 of `A-Z a-z 0-9 _ -` (default: the stack's name and
    /// version, `shop-v2`).
    pub name: Option<String>,
    /// The VM's resources (default 2 cores, 2048 MB, 20 GB; a VM's limits apply).
    #[schema(value_type = Option<Object>)]
    pub resources: Option<serde_json::Value>,
}

/// The default deployment name of a stack version: its name's letters and digits, `-v<n>`.
fn deployment_name(stack: &str, version: u32) -> String {
    let mut slug: String = stack
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug = slug
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let suffix = format!("-v{version}");
    slug.truncate(50 - suffix.len());
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "stack" } else { slug };
    format!("{slug}{suffix}")
}

fn resources(raw: &Option<serde_json::Value>, errors: &mut Vec<FieldError>) -> Resources {
    let mut r = Resources {
        cores: 2,
        memory: 2048,
        disk: 20,
    };
    let Some(raw) = raw else {
        return r;
    };
    let limits = DeploymentType::Vm.limits();
    for (field, slot, (lo, hi)) in [
        ("cores", &mut r.cores, limits.cores),
        ("memory", &mut r.memory, limits.memory),
        ("disk", &mut r.disk, limits.disk),
    ] {
        match raw.get(field) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if (lo..=hi).contains(&n) => *slot = n,
                _ => errors.push(FieldError {
                    field: format!("resources.{field}"),
                    message: format!("must be a whole number from {lo} to {hi}"),
                }),
            },
        }
    }
    r
}

/// Deploys the stack's current version to a target: a WindFlow deployment that runs it (the
/// simulated driver walks its states; the process driver refuses it, saying why). The stack
/// records the deployed version.
#[utoipa::path(
    post, path = "/api/v1/stacks/{id}/deploy", tag = "stacks", operation_id = "deploy_stack",
    request_body = DeployBody,
    params(("id" = Uuid, Path, description = "The stack's id")),
    responses(
        (status = 202, description = "The deployment, pending", body = Object),
        (status = 404, description = "No such stack in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The stack's current version does not pass validation, or the deployment's name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.stacks.deploy", skip_all, fields(org = %principal.org_id))]
pub async fn deploy(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "stack")?;
    let body = if body.is_empty() {
        DeployBody::default()
    } else {
        json_body::<DeployBody>(&req, &body)?
    };
    let (stack, _) = current(&state, &principal, id).await?;
    let s = stack
        .present()
        .ok_or_else(|| ApiError::not_found("no such stack"))?;
    let mut errors = Vec::new();
    let name = collect(
        &mut errors,
        DeploymentName::parse(
            &body
                .name
                .clone()
                .unwrap_or_else(|| deployment_name(s.name.as_str(), s.version)),
        ),
    );
    let resources = resources(&body.resources, &mut errors);
    crate::pagination::validate(errors)?;
    let name = name.ok_or_else(|| ApiError::bug("a parsed name is missing"))?;
    if !s.valid {
        return Err(ApiError::conflict(format!(
            "version {} of the stack does not pass validation: fix it before deploying",
            s.version
        )));
    }
    let services = s.configuration["services"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let spec = DeploymentSpec::for_stack(
        name,
        resources,
        body.target_id,
        StackSource {
            stack_id: id,
            version: s.version,
            services,
        },
    );
    let ctx = command_context(&principal);
    let written = state
        .deploy
        .deployments
        .create_for_stack(&ctx, spec)
        .await
        .map_err(|e| crate::conventions::command_error(e, |e| ApiError::conflict(e.to_string())))?;
    let deployment = written
        .state
        .data()
        .ok_or_else(|| ApiError::bug("created deployment missing"))?;
    let deployment_id = deployment.id;
    let marked = state
        .stacks
        .stacks
        .mark_deployed(&ctx, id, s.version, deployment_id)
        .await;
    if let Err(e) = &marked {
        // The deployment names the stack version it runs; only the stack's summary lags.
        tracing::warn!(error = %e, stack = %id, "the deployed stack could not record it");
    }
    let position = marked.ok().and_then(|m| m.position).or(written.position);
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "deployment_id": deployment_id,
            "stack_id": id,
            "stack_version": s.version,
            "status": deployment.status.as_str(),
            "target_id": body.target_id,
        }),
    )
    .header("location", format!("/api/v1/deployments/{deployment_id}"))
    .position(position)
    .into_response())
}

/// Registers the stack routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/stacks/validate", web::post().to(validate))
        .route("/stacks/generate", web::post().to(generate))
        .service(
            web::resource("/stacks")
                .route(web::get().to(list))
                .route(web::post().to(create)),
        )
        .service(
            web::resource("/stacks/{id}")
                .route(web::get().to(get))
                .route(web::put().to(update))
                .route(web::delete().to(delete)),
        )
        .route("/stacks/{id}/validate", web::post().to(validate_stack))
        .route("/stacks/{id}/optimize", web::post().to(optimize))
        .route("/stacks/{id}/deploy", web::post().to(deploy));
}
