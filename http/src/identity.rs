//! Organizations: `GET /api/v1/organizations` (WindFlow's list: page, per_page, search,
//! is_active), `POST` (superadmins; the creator becomes owner), `GET`/`PUT`/`DELETE
//! /api/v1/organizations/{id}` (admins update, owners delete) and its members. A superadmin sees
//! every organization; anyone else those they are a member of, and another one is a 404.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::Written;
use atelier_domain::identity::Actor;
use atelier_domain::identity::organization::{
    JsonObject, OrgError, OrgName, OrgProfile, Organization,
};
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
    let search = crate::pagination::search(params.search.as_deref(), &mut errors);
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, IDENTITY).await?;
    let query = OrganizationQuery {
        page,
        per_page,
        search,
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
        let mut keep = |e: atelier_domain::value::InvalidValue| {
            errors.push(FieldError {
                field: e.field.to_owned(),
                message: e.message,
            });
        };
        let name = OrgName::parse(&self.name).map_err(&mut keep).ok();
        let description = OrgProfile::description(self.description.as_deref())
            .map_err(&mut keep)
            .ok();
        let settings = JsonObject::parse("settings", &self.settings)
            .map_err(&mut keep)
            .ok();
        let quotas = JsonObject::parse("quotas", &self.quotas)
            .map_err(&mut keep)
            .ok();
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

fn actor(principal: &Principal) -> Actor {
    Actor {
        user_id: principal.user_id,
        is_superadmin: principal.is_superadmin,
    }
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
    post, path = "/api/v1/organizations", tag = "identity",
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
            .create(&ctx, &actor(&principal), profile)
            .await
            .map_err(|e| command_error(e, rejected))?;
        let view = written_view(&written)
            .ok_or_else(|| ApiError::internal(&"created organization missing"))?;
        Ok(Reply::json(StatusCode::CREATED, &view)
            .header("location", format!("/api/v1/organizations/{}", view.id))
            .etag(written.revision)
            .position(written.position))
    })
    .await
}

/// Replaces an organization's name, description, settings and quotas; admins and owners may.
#[utoipa::path(
    put, path = "/api/v1/organizations/{id}", tag = "identity",
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
        .update(&ctx, &actor(&principal), id, expected, profile)
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
    delete, path = "/api/v1/organizations/{id}", tag = "identity",
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
        .delete(&ctx, &actor(&principal), id, expected)
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::empty(StatusCode::NO_CONTENT)
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
    post, path = "/api/v1/organizations/{id}/members", tag = "identity",
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
        .set_member(&ctx, &actor(&principal), id, body.user_id, role)
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({"user_id": body.user_id, "role": role.as_str()}),
    )
    .position(written.position)
    .into_response())
}

/// Removes a member from an organization; admins may, only owners remove owners, never the last.
#[utoipa::path(
    delete, path = "/api/v1/organizations/{id}/members/{user_id}", tag = "identity",
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
        .remove_member(&ctx, &actor(&principal), id, user_id)
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
    /// At least 8 characters.
    #[schema(format = Password)]
    pub password: String,
    /// Their name.
    #[serde(default)]
    pub full_name: Option<String>,
    /// Platform administrator (only a superadmin may grant it).
    #[serde(default)]
    pub is_superadmin: bool,
    /// The organization they join (default: the caller's).
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
    fn parse(&self, default_org: Uuid) -> Result<atelier_commands::users::NewUser, ApiError> {
        use atelier_domain::identity::Role;
        use atelier_domain::identity::user::{Email, UserProfile, Username, check_password};
        let mut errors = Vec::new();
        let mut keep = |e: atelier_domain::value::InvalidValue| {
            errors.push(FieldError {
                field: e.field.to_owned(),
                message: e.message,
            });
        };
        let username = Username::parse(&self.username).map_err(&mut keep).ok();
        let email = Email::parse(&self.email).map_err(&mut keep).ok();
        let full_name = UserProfile::full_name(self.full_name.as_deref())
            .map_err(&mut keep)
            .ok();
        let password = check_password("password", &self.password)
            .map_err(&mut keep)
            .ok();
        let role = match self.role.as_deref() {
            None => Some(Role::Member),
            Some(r) => Role::parse(r).map_err(&mut keep).ok(),
        };
        match (username, email, full_name, password, role) {
            (Some(username), Some(email), Some(full_name), Some(()), Some(role)) => {
                Ok(atelier_commands::users::NewUser {
                    username,
                    profile: UserProfile { email, full_name },
                    password: self.password.clone(),
                    is_superadmin: self.is_superadmin,
                    org_id: self.organization_id.unwrap_or(default_org),
                    role,
                })
            }
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// Creates a user in an organization; a superadmin may, and so may the organization's admins
/// and owners (who cannot create superadmins).
#[utoipa::path(
    post, path = "/api/v1/users", tag = "identity",
    request_body = UserBody,
    responses(
        (status = 201, description = "Created; they can log in", body = UserView),
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
    use atelier_commands::users::UserCreateError;
    let new = json_body::<UserBody>(&req, &body)?.parse(principal.org_id)?;
    let ctx = org_context(&principal, new.org_id);
    let written = state
        .users
        .create(&ctx, &actor(&principal), new)
        .await
        .map_err(|e| match e {
            UserCreateError::Organization(e) => command_error(e, rejected),
            UserCreateError::User(e) => command_error(e, |e| ApiError::conflict(e.to_string())),
            UserCreateError::SuperadminOnly => ApiError::forbidden(e.to_string()),
            UserCreateError::Credentials(e) => ApiError::internal(&e),
        })?;
    let user = written
        .state
        .data()
        .ok_or_else(|| ApiError::internal(&"created user missing"))?;
    let view = UserView {
        id: user.id,
        username: user.username.as_str().to_owned(),
        email: user.profile.email.as_str().to_owned(),
        full_name: user.profile.full_name.clone(),
        is_superadmin: user.is_superadmin,
        is_active: user.is_active,
        created_at: user.created_at,
    };
    Ok(Reply::json(StatusCode::CREATED, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Registers `POST /users` (inside `/api/v1`).
pub fn configure_users(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/users").route(web::post().to(create_user)));
}
