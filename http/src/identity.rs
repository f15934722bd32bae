//! Organizations, read side: `GET /api/v1/organizations` (WindFlow's list: page, per_page,
//! search, is_active), `GET /api/v1/organizations/{id}` and its members. A superadmin sees every
//! organization; anyone else those they are a member of, and another one is a 404.

use actix_web::{HttpRequest, HttpResponse, web};
use atelier_projections::identity::{
    IDENTITY, MemberRow, OrganizationQuery, OrganizationRow, get_organization, list_members,
    list_organizations,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Principal;
use crate::conventions::await_projection;
use crate::pagination::{Page, PageParams, Pagination};
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// An organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrganizationView {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// What it is.
    pub description: Option<String>,
    /// Free-form settings.
    pub settings: serde_json::Value,
    /// Free-form quotas.
    pub quotas: serde_json::Value,
    /// Whether it may be used.
    pub is_active: bool,
    /// How many members it has (WindFlow's `user_count`).
    pub user_count: i32,
    /// Its revision (the ETag).
    pub revision: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<OrganizationRow> for OrganizationView {
    fn from(r: OrganizationRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            description: r.description,
            settings: r.settings,
            quotas: r.quotas,
            is_active: r.is_active,
            user_count: r.member_count,
            revision: r.revision,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A member of an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    /// The user.
    pub user_id: Uuid,
    /// Their username.
    pub username: String,
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
    /// Since when.
    pub since: DateTime<Utc>,
}

impl From<MemberRow> for MemberView {
    fn from(r: MemberRow) -> Self {
        Self {
            user_id: r.user_id,
            username: r.username,
            role: r.role,
            since: r.since,
        }
    }
}

/// Filters of the organization list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct OrganizationParams {
    /// Part of the name, case-insensitive.
    pub search: Option<String>,
    /// `true` or `false`: only active or only inactive organizations.
    pub is_active: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

fn org_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found("no such organization"))
}

/// Lists the organizations the caller may see.
#[utoipa::path(
    get, path = "/api/v1/organizations", tag = "identity",
    params(PageParams, OrganizationParams),
    responses(
        (status = 200, description = "A page of organizations, by name", body = Page<OrganizationView>),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.list", skip_all, fields(user = %principal.user_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
    params: web::Query<OrganizationParams>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = Vec::new();
    let (page, per_page) = page.parse().unwrap_or_else(|e| {
        errors.extend(e);
        (1, 1)
    });
    let is_active = match params.is_active.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            errors.push(FieldError {
                field: "is_active".into(),
                message: "must be true or false".into(),
            });
            None
        }
    };
    let search = params
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.chars().count() > 100) {
        errors.push(FieldError {
            field: "search".into(),
            message: "must be at most 100 characters".into(),
        });
    }
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, IDENTITY).await?;
    let query = OrganizationQuery {
        page,
        per_page,
        search: search.map(str::to_owned),
        is_active,
    };
    let (rows, total) = list_organizations(
        &state.pool,
        principal.user_id,
        principal.is_superadmin,
        &query,
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(Page {
        data: rows.into_iter().map(OrganizationView::from).collect(),
        pagination: Pagination::new(page, per_page, total),
    }))
}

/// Reads one organization.
#[utoipa::path(
    get, path = "/api/v1/organizations/{id}", tag = "identity",
    params(("id" = Uuid, Path, description = "The organization")),
    responses(
        (status = 200, description = "The organization; ETag is its revision", body = OrganizationView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not one of the caller's", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.get", skip_all, fields(user = %principal.user_id))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = org_id(&id)?;
    await_projection(&state, &req, IDENTITY).await?;
    let row = get_organization(&state.pool, principal.user_id, principal.is_superadmin, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such organization"))?;
    Ok(HttpResponse::Ok()
        .insert_header(("etag", format!("\"{}\"", row.revision)))
        .json(OrganizationView::from(row)))
}

/// Lists an organization's members.
#[utoipa::path(
    get, path = "/api/v1/organizations/{id}/members", tag = "identity",
    params(("id" = Uuid, Path, description = "The organization")),
    responses(
        (status = 200, description = "Its members, by username", body = Vec<MemberView>),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not one of the caller's", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.members", skip_all, fields(user = %principal.user_id))]
pub async fn members(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = org_id(&id)?;
    await_projection(&state, &req, IDENTITY).await?;
    get_organization(&state.pool, principal.user_id, principal.is_superadmin, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such organization"))?;
    let members = list_members(&state.pool, id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(
        members
            .into_iter()
            .map(MemberView::from)
            .collect::<Vec<_>>(),
    ))
}

/// Registers the organization routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/organizations").route(web::get().to(list)))
        .service(web::resource("/organizations/{id}").route(web::get().to(get)))
        .service(web::resource("/organizations/{id}/members").route(web::get().to(members)));
}
