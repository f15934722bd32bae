//! Organizations: `GET /api/v1/organizations` (WindFlow's list: page, per_page, search,
//! is_active), `POST` (superadmins; the creator becomes owner), `GET`/`PUT`/`DELETE
//! /api/v1/organizations/{id}` (admins update, owners delete) and its members. A superadmin sees
//! every organization; anyone else those they are a member of, and another one is a 404.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::Written;
use atelier_domain::identity::organization::{
    JsonObject, OrgError, OrgName, OrgProfile, Organization,
};
use atelier_domain::identity::{Actor, Permission};
use atelier_projections::identity::{
    IDENTITY, MemberRow, OrganizationQuery, OrganizationRow, get_organization, list_members,
    list_organizations,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Principal;
use crate::conventions::{Reply, await_projection, command_error, idempotent, if_match, json_body};
use crate::pagination::{Page, PageParams, Pagination};
use crate::problem::{ApiError, FieldError, Problem, collect};
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
#[into_params(parameter_in = Query)]
pub struct OrganizationParams {
    /// Part of the name, case-insensitive.
    pub search: Option<String>,
    /// `true` or `false`: only active or only inactive organizations.
    #[param(value_type = Option<bool>)]
    pub is_active: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

fn org_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found("no such organization"))
}

/// Lists the organizations the caller may see.
#[utoipa::path(
    get, path = "/api/v1/organizations", tag = "identity", operation_id = "list_organizations",
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
    let is_active = crate::pagination::flag("is_active", params.is_active.as_deref(), &mut errors);
    let search = crate::pagination::search(params.search.as_deref(), &mut errors);
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, IDENTITY).await?;
    let query = OrganizationQuery {
        page,
        per_page,
        search,
        is_active,
        only: principal.key_id.map(|_| principal.org_id),
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
    get, path = "/api/v1/organizations/{id}", tag = "identity", operation_id = "get_organization",
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
    acting(&principal, id, Permission::Read)?;
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
    get, path = "/api/v1/organizations/{id}/members", tag = "identity", operation_id = "list_members",
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
    acting(&principal, id, Permission::Read)?;
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

/// An organization's fields, to create it or to replace them (WindFlow's `OrganizationCreate`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct OrganizationBody {
    /// 2 to 100 characters, unique on the platform (case and spacing aside).
    pub name: String,
    /// At most 500 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON object of settings.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// A JSON object of quotas.
    #[serde(default)]
    pub quotas: serde_json::Value,
}

impl OrganizationBody {
    fn parse(&self) -> Result<OrgProfile, ApiError> {
        let mut errors = Vec::new();
        let name = collect(&mut errors, OrgName::parse(&self.name));
        let description = collect(
            &mut errors,
            OrgProfile::description(self.description.as_deref()),
        );
        let settings = collect(&mut errors, JsonObject::parse("settings", &self.settings));
        let quotas = collect(&mut errors, JsonObject::parse("quotas", &self.quotas));
        match (name, description, settings, quotas) {
            (Some(name), Some(description), Some(settings), Some(quotas)) => Ok(OrgProfile {
                name,
                description,
                settings,
                quotas,
            }),
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// A command context acting for `org_id`: an organization's (and a new member's) events belong
/// to that organization, whichever one the caller's token names.
fn org_context(principal: &Principal, org_id: Uuid) -> atelier_commands::handler::CommandContext {
    let mut ctx = crate::factory::context(principal);
    ctx.org_id = org_id;
    ctx
}

/// The actor the organization's own rules judge. An API key acts only in its organization
/// (another is not found) and only within its scopes; its creator's role applies on top.
fn acting(principal: &Principal, org_id: Uuid, permission: Permission) -> Result<Actor, ApiError> {
    if principal.key_id.is_some() {
        if principal.org_id != org_id {
            return Err(ApiError::not_found("no such organization"));
        }
        principal.require(permission)?;
    }
    Ok(Actor {
        user_id: principal.user_id,
        is_superadmin: principal.is_superadmin,
    })
}

fn rejected(e: OrgError) -> ApiError {
    match e {
        OrgError::NotFound => ApiError::not_found("no such organization"),
        OrgError::NoSuchUser => ApiError::not_found("no such user"),
        OrgError::Forbidden(_) => ApiError::forbidden(e.to_string()),
        OrgError::AlreadyExists | OrgError::NotAMember | OrgError::LastOwner => {
            ApiError::conflict(e.to_string())
        }
    }
}

/// The view of an organization a command just wrote (the read model may not have it yet).
fn written_view(written: &Written<Organization>) -> Option<OrganizationView> {
    let o = written.state.data()?;
    Some(OrganizationView {
        id: o.id,
        name: o.profile.name.as_str().to_owned(),
        description: o.profile.description.clone(),
        settings: serde_json::Value::Object(o.profile.settings.as_map().clone()),
        quotas: serde_json::Value::Object(o.profile.quotas.as_map().clone()),
        is_active: o.is_active,
        user_count: i32::try_from(o.members.len()).unwrap_or(i32::MAX),
        revision: written.revision.map_or(0, |r| r as i64),
        created_at: o.created_at,
        updated_at: o.updated_at,
    })
}

/// Creates an organization; only a superadmin may, and becomes its owner.
#[utoipa::path(
    post, path = "/api/v1/organizations", tag = "identity", operation_id = "create_organization",
    request_body = OrganizationBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request")),
    responses(
        (status = 201, description = "Created; ETag is its revision, Atelier-Position the write's place in the log", body = OrganizationView),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a superadmin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.create", skip_all, fields(user = %principal.user_id))]
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let profile = json_body::<OrganizationBody>(&req, &body)?.parse()?;
    idempotent(&state, &req, principal.org_id, &body, async || {
        let id = Uuid::now_v7();
        // The new organization's events belong to it.
        let ctx = org_context(&principal, id);
        let written = state
            .organizations
            .create(&ctx, &acting(&principal, id, Permission::Own)?, profile)
            .await
            .map_err(|e| command_error(e, rejected))?;
        let view =
            written_view(&written).ok_or_else(|| ApiError::bug("created organization missing"))?;
        Ok(Reply::json(StatusCode::CREATED, &view)
            .header("location", format!("/api/v1/organizations/{}", view.id))
            .etag(written.revision)
            .position(written.position))
    })
    .await
}

/// Replaces an organization's name, description, settings and quotas; admins and owners may.
#[utoipa::path(
    put, path = "/api/v1/organizations/{id}", tag = "identity", operation_id = "update_organization",
    request_body = OrganizationBody,
    params(
        ("id" = Uuid, Path, description = "The organization"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on"),
    ),
    responses(
        (status = 200, description = "Updated", body = OrganizationView),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A member whose role does not allow it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not one of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names an old revision", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.update", skip_all, fields(user = %principal.user_id))]
pub async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = org_id(&id)?;
    let profile = json_body::<OrganizationBody>(&req, &body)?.parse()?;
    let expected = if_match(req.headers())?;
    let ctx = org_context(&principal, id);
    let written = state
        .organizations
        .update(
            &ctx,
            &acting(&principal, id, Permission::Manage)?,
            id,
            expected,
            profile,
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    let view = written_view(&written).ok_or_else(|| ApiError::not_found("no such organization"))?;
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Deletes an organization; only its owners (or a superadmin) may.
#[utoipa::path(
    delete, path = "/api/v1/organizations/{id}", tag = "identity", operation_id = "delete_organization",
    params(
        ("id" = Uuid, Path, description = "The organization"),
        ("If-Match" = Option<String>, Header, description = "The ETag the deletion is based on"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "A member who is not an owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not one of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names an old revision", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.delete", skip_all, fields(user = %principal.user_id))]
pub async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = org_id(&id)?;
    let expected = if_match(req.headers())?;
    let ctx = org_context(&principal, id);
    let written = state
        .organizations
        .delete(
            &ctx,
            &acting(&principal, id, Permission::Own)?,
            id,
            expected,
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::empty(StatusCode::NO_CONTENT)
        .position(written.position)
        .into_response())
}

/// Deactivates an organization: its members can no longer act in it; only its owners (or a
/// superadmin) may.
#[utoipa::path(
    post, path = "/api/v1/organizations/{id}/deactivate", tag = "identity", operation_id = "deactivate_organization",
    params(("id" = Uuid, Path, description = "The organization")),
    responses(
        (status = 200, description = "Deactivated (or already)", body = OrganizationView),
        (status = 403, description = "A member who is not an owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not one of the caller's", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.deactivate", skip_all, fields(user = %principal.user_id))]
pub async fn deactivate(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_active(&state, &principal, &id, false).await
}

/// Reactivates an organization; only its owners (or a superadmin) may.
#[utoipa::path(
    post, path = "/api/v1/organizations/{id}/reactivate", tag = "identity", operation_id = "reactivate_organization",
    params(("id" = Uuid, Path, description = "The organization")),
    responses(
        (status = 200, description = "Active (again)", body = OrganizationView),
        (status = 403, description = "A member who is not an owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not one of the caller's", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.reactivate", skip_all, fields(user = %principal.user_id))]
pub async fn reactivate(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_active(&state, &principal, &id, true).await
}

async fn set_active(
    state: &AppState,
    principal: &Principal,
    id: &str,
    active: bool,
) -> Result<HttpResponse, ApiError> {
    let id = org_id(id)?;
    let ctx = org_context(principal, id);
    let written = state
        .organizations
        .set_active(&ctx, &acting(principal, id, Permission::Own)?, id, active)
        .await
        .map_err(|e| command_error(e, rejected))?;
    let view = written_view(&written).ok_or_else(|| ApiError::not_found("no such organization"))?;
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// A membership to set.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MemberBody {
    /// The user.
    pub user_id: Uuid,
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
}

/// Adds a member to an organization or changes their role; admins may, only owners make or
/// unmake owners.
#[utoipa::path(
    post, path = "/api/v1/organizations/{id}/members", tag = "identity", operation_id = "set_member",
    request_body = MemberBody,
    params(("id" = Uuid, Path, description = "The organization")),
    responses(
        (status = 200, description = "The member and their role", body = MemberBody),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role does not allow it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization (or not the caller's), or no such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It would leave the organization without an owner", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.set_member", skip_all, fields(user = %principal.user_id))]
pub async fn set_member(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = org_id(&id)?;
    let body = json_body::<MemberBody>(&req, &body)?;
    let role = atelier_domain::identity::Role::parse(&body.role)
        .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    let ctx = org_context(&principal, id);
    let written = state
        .organizations
        .set_member(
            &ctx,
            &acting(&principal, id, Permission::Manage)?,
            id,
            body.user_id,
            role,
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    state
        .users
        .joined(body.user_id, id)
        .await
        .map_err(user_error)?;
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({"user_id": body.user_id, "role": role.as_str()}),
    )
    .position(written.position)
    .into_response())
}

/// Removes a member from an organization; admins may, only owners remove owners, never the last.
#[utoipa::path(
    delete, path = "/api/v1/organizations/{id}/members/{user_id}", tag = "identity", operation_id = "remove_member",
    params(
        ("id" = Uuid, Path, description = "The organization"),
        ("user_id" = Uuid, Path, description = "The member"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "The caller's role does not allow it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization (or not the caller's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a member, or the last owner", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.remove_member", skip_all, fields(user = %principal.user_id))]
pub async fn remove_member(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = path.into_inner();
    let id = org_id(&id)?;
    let user_id = Uuid::parse_str(&user).map_err(|_| ApiError::not_found("no such member"))?;
    let ctx = org_context(&principal, id);
    let written = state
        .organizations
        .remove_member(
            &ctx,
            &acting(&principal, id, Permission::Manage)?,
            id,
            user_id,
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::empty(StatusCode::NO_CONTENT)
        .position(written.position)
        .into_response())
}

/// Registers the organization routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/organizations")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/organizations/{id}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(delete)),
    )
    .service(
        web::resource("/organizations/{id}/members")
            .route(web::get().to(members))
            .route(web::post().to(set_member)),
    )
    .service(web::resource("/organizations/{id}/deactivate").route(web::post().to(deactivate)))
    .service(web::resource("/organizations/{id}/reactivate").route(web::post().to(reactivate)))
    .service(
        web::resource("/organizations/{id}/members/{user_id}")
            .route(web::delete().to(remove_member)),
    );
}

/// A new user (Sentinel's and WindFlow's user creation).
#[derive(Clone, Deserialize, ToSchema)]
pub struct UserBody {
    /// 3 to 50 letters, digits, `_`, `.` or `-`; unique on the platform, whatever the case.
    pub username: String,
    /// Unique on the platform, whatever the case.
    pub email: String,
    /// At least 8 characters; required unless `invite` is true.
    #[schema(format = Password)]
    #[serde(default)]
    pub password: Option<String>,
    /// Invite them instead: no password; the answer carries a token, shown once, with which
    /// they set theirs (`POST /api/v1/auth/accept-invitation`).
    #[serde(default)]
    pub invite: bool,
    /// Their name.
    #[serde(default)]
    pub full_name: Option<String>,
    /// Platform administrator (only a superadmin may grant it).
    #[serde(default)]
    pub is_superadmin: bool,
    /// The organization they join (default: the caller's for an organization's admin; none for a
    /// superadmin: the user belongs to the organizations they are added to, and no other).
    #[serde(default)]
    pub organization_id: Option<Uuid>,
    /// Their role there: `owner`, `admin`, `member` (default) or `viewer`.
    #[serde(default)]
    pub role: Option<String>,
}

impl std::fmt::Debug for UserBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserBody")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    /// Their id.
    pub id: Uuid,
    /// Their username.
    pub username: String,
    /// Their email address.
    pub email: String,
    /// Their name.
    pub full_name: Option<String>,
    /// Whether they administer the platform.
    pub is_superadmin: bool,
    /// Whether they may log in.
    pub is_active: bool,
    /// When they were registered.
    pub created_at: DateTime<Utc>,
}

impl UserBody {
    /// The user to create, for this caller: without `organization_id`, an organization's
    /// admin creates them in theirs, a superadmin in none (they belong to the organizations
    /// they are added to, and no other).
    fn parse(&self, caller: &Principal) -> Result<atelier_commands::users::NewUser, ApiError> {
        use atelier_domain::identity::Role;
        use atelier_domain::identity::user::{Email, UserProfile, Username, check_password};
        use atelier_domain::value::invalid;
        let mut errors = Vec::new();
        let username = collect(&mut errors, Username::parse(&self.username));
        let email = collect(&mut errors, Email::parse(&self.email));
        let full_name = collect(
            &mut errors,
            UserProfile::full_name(self.full_name.as_deref()),
        );
        let password = collect(
            &mut errors,
            match (&self.password, self.invite) {
                (Some(p), false) => check_password("password", p),
                (None, true) => Ok(()),
                (Some(_), true) => Err(invalid(
                    "password",
                    "must be absent when inviting (the user sets it)",
                )),
                (None, false) => Err(invalid(
                    "password",
                    "is required (or invite the user with `invite: true`)",
                )),
            },
        );
        let role = collect(
            &mut errors,
            self.role.as_deref().map_or(Ok(Role::Member), Role::parse),
        );
        match (username, email, full_name, password, role) {
            (Some(username), Some(email), Some(full_name), Some(()), Some(role)) => {
                Ok(atelier_commands::users::NewUser {
                    username,
                    profile: UserProfile { email, full_name },
                    password: self.password.clone().filter(|_| !self.invite),
                    is_superadmin: self.is_superadmin,
                    org_id: match self.organization_id {
                        Some(org) => Some(org),
                        None if caller.is_superadmin => None,
                        None => Some(caller.org_id),
                    },
                    role,
                })
            }
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// A user just created, with their invitation when they were invited.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedUserView {
    /// The user.
    #[serde(flatten)]
    pub user: UserView,
    /// The invitation's token, shown this once: the user accepts it with their password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation_token: Option<String>,
    /// Until when it can be accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation_expires_at: Option<DateTime<Utc>>,
}

/// Creates (or invites) a user in an organization; a superadmin may, and so may the
/// organization's admins and owners (who cannot create superadmins).
#[utoipa::path(
    post, path = "/api/v1/users", tag = "identity", operation_id = "create_user",
    request_body = UserBody,
    responses(
        (status = 201, description = "Created: they can log in, or accept their invitation", body = CreatedUserView),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not add members to that organization, or create a superadmin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not one of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The username or email is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.users.create", skip_all, fields(user = %principal.user_id))]
pub async fn create_user(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let new = json_body::<UserBody>(&req, &body)?.parse(&principal)?;
    // A user in no organization is recorded in the caller's.
    let org_id = new.org_id.unwrap_or(principal.org_id);
    let ctx = org_context(&principal, org_id);
    let created = state
        .users
        .create(&ctx, &acting(&principal, org_id, Permission::Manage)?, new)
        .await
        .map_err(user_error)?;
    let written = created.written;
    let user = written
        .state
        .data()
        .ok_or_else(|| ApiError::bug("created user missing"))?;
    let view = CreatedUserView {
        user: user_view(user),
        invitation_token: created.invitation.as_ref().map(|i| i.token.clone()),
        invitation_expires_at: created.invitation.as_ref().map(|i| i.expires_at),
    };
    Ok(Reply::json(StatusCode::CREATED, &view)
        .header("cache-control", "no-store")
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// The view of a user as a command left them.
pub fn user_view(user: &atelier_domain::identity::user::UserData) -> UserView {
    UserView {
        id: user.id,
        username: user.username.as_str().to_owned(),
        email: user.profile.email.as_str().to_owned(),
        full_name: user.profile.full_name.clone(),
        is_superadmin: user.is_superadmin,
        is_active: user.is_active,
        created_at: user.created_at,
    }
}

impl From<atelier_projections::identity::UserRow> for UserView {
    fn from(u: atelier_projections::identity::UserRow) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            full_name: u.full_name,
            is_superadmin: u.is_superadmin,
            is_active: u.is_active,
            created_at: u.created_at,
        }
    }
}

fn user_error(e: atelier_commands::users::UserServiceError) -> ApiError {
    use atelier_commands::users::UserServiceError;
    match e {
        UserServiceError::Organization(e) => command_error(e, rejected),
        UserServiceError::User(e) => command_error(e, |e| match e {
            atelier_domain::identity::user::UserError::NotFound => {
                ApiError::not_found("no such user")
            }
            e => ApiError::conflict(e.to_string()),
        }),
        UserServiceError::SuperadminOnly | UserServiceError::NotAllowed(_) => {
            ApiError::forbidden(e.to_string())
        }
        UserServiceError::NotAMember => ApiError::invalid_field(
            "default_organization_id",
            "is not an organization the user belongs to",
        ),
        UserServiceError::Credentials(e) => ApiError::internal(&e),
    }
}

/// Which users to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserParams {
    /// Part of the username or email address, case-insensitive.
    pub search: Option<String>,
    /// `true` or `false`: only active (or only deactivated) users.
    #[param(value_type = Option<bool>)]
    pub is_active: Option<String>,
    /// Only the members of this organization (a superadmin's filter: an admin always sees
    /// their organization's members only).
    #[param(value_type = Option<Uuid>)]
    pub organization_id: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Lists users: a superadmin sees everyone, an organization's admins its members.
#[utoipa::path(
    get, path = "/api/v1/users", tag = "identity", operation_id = "list_users",
    params(PageParams, UserParams),
    responses(
        (status = 200, description = "A page of users, by username", body = Page<UserView>),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither a superadmin nor an admin of the organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.users.list", skip_all, fields(user = %principal.user_id))]
pub async fn list_users(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
    params: web::Query<UserParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Manage)?;
    let mut errors = Vec::new();
    let (page, per_page) = page.parse().unwrap_or_else(|e| {
        errors.extend(e);
        (1, 1)
    });
    let is_active = crate::pagination::flag("is_active", params.is_active.as_deref(), &mut errors);
    let search = crate::pagination::search(params.search.as_deref(), &mut errors);
    let only = match params.organization_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Uuid::try_parse(raw)
            .map_err(|_| {
                errors.push(FieldError {
                    field: "organization_id".into(),
                    message: "must be an organization's id".into(),
                })
            })
            .ok(),
    };
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, IDENTITY).await?;
    let query = atelier_projections::identity::UserQuery {
        page,
        per_page,
        search,
        is_active,
        org_id: if principal.is_superadmin {
            only
        } else {
            Some(principal.org_id)
        },
    };
    let (rows, total) = atelier_projections::identity::list_users(&state.pool, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(Page {
        data: rows.into_iter().map(UserView::from).collect(),
        pagination: Pagination::new(page, per_page, total),
    }))
}

fn user_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found("no such user"))
}

/// Reads a user: oneself, any user for a superadmin, a member for the organization's admins.
#[utoipa::path(
    get, path = "/api/v1/users/{id}", tag = "identity", operation_id = "get_user",
    params(("id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 401, description = "Missing or invalid credentials", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user the caller may see", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.users.get", skip_all, fields(user = %principal.user_id))]
pub async fn get_user(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = user_id(&id)?;
    await_projection(&state, &req, IDENTITY).await?;
    let visible = id == principal.user_id && principal.key_id.is_none()
        || principal.is_superadmin
        || principal.require(Permission::Manage).is_ok()
            && atelier_projections::identity::is_member(&state.pool, principal.org_id, id)
                .await
                .map_err(|e| ApiError::internal(&e))?;
    if !visible {
        return Err(ApiError::not_found("no such user"));
    }
    let user = atelier_projections::identity::get_user(&state.pool, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// Changes to a user (Sentinel's `UserUpdate`): every field optional.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UserUpdateBody {
    /// A new email address (unique on the platform).
    #[serde(default)]
    pub email: Option<String>,
    /// A new name; `null` leaves it, `""` clears it.
    #[serde(default)]
    pub full_name: Option<String>,
    /// Let them log in, or not (superadmins, not on themselves).
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Platform administration (superadmins, not on themselves).
    #[serde(default)]
    pub is_superadmin: Option<bool>,
    /// The organization their logins act in unless a request names one (one they belong to;
    /// from their next login).
    #[serde(default)]
    pub default_organization_id: Option<Uuid>,
}

impl UserUpdateBody {
    fn parse(&self) -> Result<atelier_commands::users::UserChanges, ApiError> {
        use atelier_domain::identity::user::{Email, UserProfile};
        let mut errors = Vec::new();
        let email = self
            .email
            .as_deref()
            .and_then(|raw| collect(&mut errors, Email::parse(raw)));
        let full_name = self
            .full_name
            .as_deref()
            .and_then(|raw| collect(&mut errors, UserProfile::full_name(Some(raw))));
        crate::pagination::validate(errors)?;
        Ok(atelier_commands::users::UserChanges {
            email,
            full_name,
            is_active: self.is_active,
            is_superadmin: self.is_superadmin,
            default_org: self.default_organization_id,
        })
    }
}

/// Changes a user: their own email and name for anyone, anyone's (and whether they may log in,
/// and whether they are a superadmin) for a superadmin.
#[utoipa::path(
    put, path = "/api/v1/users/{id}", tag = "identity", operation_id = "update_user",
    request_body = UserUpdateBody,
    params(("id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "The user now", body = UserView),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A change only a superadmin may make, or one a superadmin may not make on themselves", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user the caller may change", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The email address is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.users.update", skip_all, fields(user = %principal.user_id))]
pub async fn update_user(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = user_id(&id)?;
    let changes = json_body::<UserUpdateBody>(&req, &body)?.parse()?;
    change_user(&state, &principal, id, changes).await
}

async fn change_user(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    changes: atelier_commands::users::UserChanges,
) -> Result<HttpResponse, ApiError> {
    let ctx = crate::factory::context(principal);
    let written = state
        .users
        .update(
            &ctx,
            &acting(principal, principal.org_id, Permission::Read)?,
            id,
            changes,
        )
        .await
        .map_err(user_error)?;
    let user = written
        .state
        .data()
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(Reply::json(StatusCode::OK, &user_view(user))
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Deactivates a user (superadmins): they can no longer log in, and their sessions and keys
/// stop working on the next request. Their history stays.
#[utoipa::path(
    delete, path = "/api/v1/users/{id}", tag = "identity", operation_id = "deactivate_user",
    params(("id" = Uuid, Path, description = "The user")),
    responses(
        (status = 204, description = "Deactivated"),
        (status = 403, description = "Not a superadmin, or oneself", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.users.deactivate", skip_all, fields(user = %principal.user_id))]
pub async fn deactivate_user(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = user_id(&id)?;
    let changes = atelier_commands::users::UserChanges {
        is_active: Some(false),
        ..Default::default()
    };
    change_user(&state, &principal, id, changes).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the user routes (inside `/api/v1`).
pub fn configure_users(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/users")
            .route(web::get().to(list_users))
            .route(web::post().to(create_user)),
    )
    .service(
        web::resource("/users/{id}")
            .route(web::get().to(get_user))
            .route(web::put().to(update_user))
            .route(web::delete().to(deactivate_user)),
    );
}
