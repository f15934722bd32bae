//! Targets (WindFlow's deployment environments): `GET`/`POST /targets`,
//! `GET`/`PUT`/`DELETE /targets/{id}`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::Written;
use atelier_domain::deploy::target::{
    Target, TargetError, TargetFields, TargetKind, TargetName, parse_description,
};
use atelier_domain::identity::Permission;
use atelier_projections::deploy::{TARGETS, TargetRow, get_target, list_targets};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::conventions::{
    Reply, await_projection, command_error, etag, idempotent, if_match, json_body,
};
use crate::kit::{Principal, command_context, path_id};
use crate::pagination::{Page, PageParams, Pagination};
use crate::problem::{ApiError, Problem, collect};
use crate::state::AppState;

/// A target, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TargetView {
    /// Its id.
    pub id: Uuid,
    /// Its name, unique within the organization.
    pub name: String,
    /// `dev`, `staging`, `prod` or `custom`.
    pub kind: String,
    /// What it is for.
    pub description: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its revision: the `ETag`.
    pub revision: u64,
}

impl From<TargetRow> for TargetView {
    fn from(r: TargetRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            kind: r.kind,
            description: r.description,
            created_at: r.created_at,
            updated_at: r.updated_at,
            revision: r.revision as u64,
        }
    }
}

fn view(written: &Written<Target>) -> Result<TargetView, ApiError> {
    let t = written
        .state
        .active()
        .ok_or_else(|| ApiError::not_found("no such target"))?;
    Ok(TargetView {
        id: t.id,
        name: t.fields.name.as_str().to_owned(),
        kind: t.fields.kind.as_str().to_owned(),
        description: t.fields.description.clone(),
        created_at: t.created_at,
        updated_at: t.updated_at,
        revision: written.revision.unwrap_or(0),
    })
}

fn rejected(e: TargetError) -> ApiError {
    match e {
        TargetError::NotFound => ApiError::not_found("no such target"),
        TargetError::AlreadyExists => ApiError::conflict("the target already exists"),
    }
}

/// A target's fields.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"name": "production", "kind": "prod", "description": "Customer-facing"}))]
pub struct TargetBody {
    /// 1 to 100 characters, unique within the organization.
    pub name: String,
    /// `dev`, `staging`, `prod` or `custom` (`type` is accepted too).
    #[serde(alias = "type")]
    pub kind: String,
    /// Up to 500 characters.
    #[serde(default)]
    pub description: String,
}

impl TargetBody {
    fn parse(&self) -> Result<TargetFields, ApiError> {
        let mut errors = Vec::new();
        let name = collect(&mut errors, TargetName::parse(&self.name));
        let kind = collect(&mut errors, TargetKind::parse(&self.kind));
        let description = collect(&mut errors, parse_description(&self.description));
        match (name, kind, description) {
            (Some(name), Some(kind), Some(description)) => Ok(TargetFields {
                name,
                kind,
                description,
            }),
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// List parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this kind.
    pub kind: Option<String>,
    /// Part of the name, case-insensitive.
    pub search: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Lists the organization's targets by name.
#[utoipa::path(
    get, path = "/api/v1/targets", tag = "deploy", operation_id = "list_targets",
    params(PageParams, ListParams),
    responses((status = 200, description = "A page of targets", body = Page<TargetView>)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.targets.list", skip_all, fields(org = %principal.org_id))]
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
    let kind = params
        .kind
        .as_deref()
        .and_then(|k| collect(&mut errors, TargetKind::parse(k)));
    let search = crate::pagination::search(params.search.as_deref(), &mut errors);
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, TARGETS).await?;
    let (rows, total) = list_targets(
        &state.pool,
        principal.org_id,
        kind,
        search.as_deref(),
        page,
        per_page,
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(Page {
        data: rows.into_iter().map(TargetView::from).collect(),
        pagination: Pagination::new(page, per_page, total),
    }))
}

/// Creates a target.
#[utoipa::path(
    post, path = "/api/v1/targets", tag = "deploy", operation_id = "create_target",
    request_body = TargetBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request")),
    responses(
        (status = 201, description = "Created", body = TargetView),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.targets.create", skip_all, fields(org = %principal.org_id))]
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let fields = json_body::<TargetBody>(&req, &body)?.parse()?;
    idempotent(&state, &req, principal.org_id, &body, async || {
        let written = state
            .deploy
            .targets
            .create(&command_context(&principal), fields)
            .await
            .map_err(|e| command_error(e, rejected))?;
        let view = view(&written)?;
        Ok(Reply::json(StatusCode::CREATED, &view)
            .header("location", format!("/api/v1/targets/{}", view.id))
            .etag(written.revision)
            .position(written.position))
    })
    .await
}

/// Query parameters of a single target.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Wait until the target reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Reads a target.
#[utoipa::path(
    get, path = "/api/v1/targets/{id}", tag = "deploy", operation_id = "get_target",
    params(("id" = Uuid, Path, description = "The target's id"), GetParams),
    responses(
        (status = 200, description = "The target", body = TargetView),
        (status = 404, description = "No such target in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.targets.get", skip_all, fields(org = %principal.org_id))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "target")?;
    await_projection(&state, &req, TARGETS).await?;
    let view = TargetView::from(
        get_target(&state.pool, principal.org_id, id)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .ok_or_else(|| ApiError::not_found("no such target"))?,
    );
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(view.revision)))
        .json(view))
}

/// Replaces a target's fields.
#[utoipa::path(
    put, path = "/api/v1/targets/{id}", tag = "deploy", operation_id = "update_target",
    request_body = TargetBody,
    params(
        ("id" = Uuid, Path, description = "The target's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on"),
    ),
    responses(
        (status = 200, description = "Updated", body = TargetView),
        (status = 404, description = "No such target in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.targets.update", skip_all, fields(org = %principal.org_id))]
pub async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "target")?;
    let expected = if_match(req.headers())?;
    let fields = json_body::<TargetBody>(&req, &body)?.parse()?;
    let written = state
        .deploy
        .targets
        .update(&command_context(&principal), id, expected, fields)
        .await
        .map_err(|e| command_error(e, rejected))?;
    let view = view(&written)?;
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Deletes a target; deployments that named it keep their history.
#[utoipa::path(
    delete, path = "/api/v1/targets/{id}", tag = "deploy", operation_id = "delete_target",
    params(
        ("id" = Uuid, Path, description = "The target's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the deletion is based on"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such target in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.targets.delete", skip_all, fields(org = %principal.org_id))]
pub async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "target")?;
    let expected = if_match(req.headers())?;
    let written = state
        .deploy
        .targets
        .delete(&command_context(&principal), id, expected)
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::empty(StatusCode::NO_CONTENT)
        .position(written.position)
        .into_response())
}

/// Registers the target routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/targets")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/targets/{id}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(delete)),
    );
}
