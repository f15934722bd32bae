//! Organizations: `GET /api/v1/organizations` (WindFlow's list: page, per_page, search,
//! is_active), `POST` (superadmins; the creator becomes owner), `GET`/`PUT`/`DELETE
//! /api/v1/organizations/{id}` (admins update, owners delete) and its members. A superadmin sees
//! every organization; anyone else those they are a member of, and another one is a 404.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::Written;
use atelier_domain::identity::Permission;
use atelier_domain::identity::organization::{
    JsonObject, OrgError, OrgName, OrgProfile, Organization,
};
use atelier_projections::identity::{
    MemberRow, ORGANIZATION_SORTS, OrganizationQuery, OrganizationRow, get_organization,
    list_members, list_organizations,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::users::user_error;
use crate::conventions::{
    Reply, await_every_projection, command_error, idempotent, if_match, json_body,
};
use crate::identity::auth::Principal;
use crate::kit::path_id;
use crate::pagination::{CursorParams, KeysetPage, PageParams};
use crate::problem::{ApiError, Problem, collect};
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
    /// What the other contexts count for it: `environment_count` (its deployment targets,
    /// WindFlow's environments).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub figures: BTreeMap<String, u64>,
}

impl OrganizationView {
    /// Adds every context's figures to these views.
    async fn with_figures(state: &AppState, views: &mut [Self]) -> Result<(), ApiError> {
        let ids: Vec<Uuid> = views.iter().map(|v| v.id).collect();
        let mut figures = crate::contexts::organization_figures(&state.pool, &ids)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        for v in views {
            if let Some(f) = figures.remove(&v.id) {
                v.figures = f.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
            }
        }
        Ok(())
    }
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
            figures: BTreeMap::new(),
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

/// Lists the organizations the caller may see, by name, by page number or by keyset cursor.
///
/// Every page carries `pagination.next_cursor`: `cursor=<next_cursor>` answers the
/// organizations after that page's last one (with the same filters), with a cost that does not
/// grow with the depth, and organizations created meanwhile do not shift it. `total` counts at
/// most 10,000 matches (`total_capped` says when it stopped: the total is then a lower bound);
/// `has_next` is exact.
#[utoipa::path(
    get, path = "/api/v1/organizations", tag = "identity", operation_id = "list_organizations",
    params(PageParams, CursorParams, OrganizationParams),
    responses(
        (status = 200, description = "A page of organizations, by name", body = KeysetPage<OrganizationView>),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.organizations.list", skip_all, fields(user = %principal.user_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
    cursor: web::Query<CursorParams>,
    params: web::Query<OrganizationParams>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = Vec::new();
    let paging = crate::pagination::paging(&ORGANIZATION_SORTS, &page, &cursor, None, &mut errors);
    let is_active = crate::pagination::flag("is_active", params.is_active.as_deref(), &mut errors);
    let search = crate::pagination::search(params.search.as_deref(), &mut errors);
    crate::pagination::validate(errors)?;
    await_every_projection(&state, &req).await?;
    let query = OrganizationQuery {
        paging,
        search,
        is_active,
        only: principal.organizations_listed(),
    };
    let listed = list_organizations(
        &state.pool,
        principal.user_id,
        principal.is_superadmin,
        &query,
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let mut page = KeysetPage::of(&query.paging, listed, OrganizationView::from);
    OrganizationView::with_figures(&state, &mut page.data).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Reads one organization.
#[utoipa::path(
    get, path = "/api/v1/organizations/{id}", tag = "identity", operation_id = "get_organization",
    params(("id" = Uuid, Path, description = "The organization")),
    responses(
        (status = 200, description = "The organization; ETag is its revision", body = OrganizationView),
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
    let id = path_id(&id, "organization")?;
    principal.acting_on(id, Permission::Read)?;
    await_every_projection(&state, &req).await?;
    let row = get_organization(&state.pool, principal.user_id, principal.is_superadmin, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such organization"))?;
    let etag = format!("\"{}\"", row.revision);
    let mut view = [OrganizationView::from(row)];
    OrganizationView::with_figures(&state, &mut view).await?;
    let [view] = view;
    Ok(HttpResponse::Ok().insert_header(("etag", etag)).json(view))
}

/// Lists an organization's members.
#[utoipa::path(
    get, path = "/api/v1/organizations/{id}/members", tag = "identity", operation_id = "list_members",
    params(("id" = Uuid, Path, description = "The organization")),
    responses(
        (status = 200, description = "Its members, by username", body = Vec<MemberView>),
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
    let id = path_id(&id, "organization")?;
    principal.acting_on(id, Permission::Read)?;
    await_every_projection(&state, &req).await?;
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
pub(super) fn org_context(
    principal: &Principal,
    org_id: Uuid,
) -> atelier_commands::handler::CommandContext {
    let mut ctx = crate::kit::command_context(principal);
    ctx.org_id = org_id;
    ctx
}

pub(super) fn rejected(e: OrgError) -> ApiError {
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
        figures: BTreeMap::new(),
    })
}

/// Creates an organization; only a superadmin may, and becomes its owner.
#[utoipa::path(
    post, path = "/api/v1/organizations", tag = "identity", operation_id = "create_organization",
    request_body = OrganizationBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request")),
    responses(
        (status = 201, description = "Created; ETag is its revision, Atelier-Position the write's place in the log", body = OrganizationView),
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
            .identity
            .organizations
            .create(&ctx, &principal.acting_on(id, Permission::Own)?, profile)
            .await
            .map_err(|e| command_error(e, rejected))?;
        let view =
            written_view(&written).ok_or_else(|| ApiError::bug("created organization missing"))?;
        let mut view = [view];
        OrganizationView::with_figures(&state, &mut view).await?;
        let [view] = view;
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
    let id = path_id(&id, "organization")?;
    let profile = json_body::<OrganizationBody>(&req, &body)?.parse()?;
    let expected = if_match(req.headers())?;
    let ctx = org_context(&principal, id);
    let written = state
        .identity
        .organizations
        .update(
            &ctx,
            &principal.acting_on(id, Permission::Manage)?,
            id,
            expected,
            profile,
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    let mut view =
        [written_view(&written).ok_or_else(|| ApiError::not_found("no such organization"))?];
    OrganizationView::with_figures(&state, &mut view).await?;
    let [view] = view;
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
    let id = path_id(&id, "organization")?;
    let expected = if_match(req.headers())?;
    let ctx = org_context(&principal, id);
    let written = state
        .identity
        .organizations
        .delete(
            &ctx,
            &principal.acting_on(id, Permission::Own)?,
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
    let id = path_id(id, "organization")?;
    let ctx = org_context(principal, id);
    let written = state
        .identity
        .organizations
        .set_active(&ctx, &principal.acting_on(id, Permission::Own)?, id, active)
        .await
        .map_err(|e| command_error(e, rejected))?;
    let mut view =
        [written_view(&written).ok_or_else(|| ApiError::not_found("no such organization"))?];
    OrganizationView::with_figures(state, &mut view).await?;
    let [view] = view;
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
    let id = path_id(&id, "organization")?;
    let body = json_body::<MemberBody>(&req, &body)?;
    let role = atelier_domain::identity::Role::parse(&body.role)
        .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    let ctx = org_context(&principal, id);
    let written = state
        .identity
        .organizations
        .set_member(
            &ctx,
            &principal.acting_on(id, Permission::Manage)?,
            id,
            body.user_id,
            role,
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    state
        .identity
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
    let id = path_id(&id, "organization")?;
    let user_id = Uuid::parse_str(&user).map_err(|_| ApiError::not_found("no such member"))?;
    let ctx = org_context(&principal, id);
    let written = state
        .identity
        .organizations
        .remove_member(
            &ctx,
            &principal.acting_on(id, Permission::Manage)?,
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
