//! Users: `GET /api/v1/users` (a superadmin sees everyone, an organization's admins its
//! members), `POST` (Sentinel's and WindFlow's user creation, or an invitation), `GET`/`PUT`
//! `/api/v1/users/{id}`, and `DELETE` (deactivation: the history stays).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_domain::identity::Permission;
use atelier_domain::identity::caller::UserSight;
use atelier_projections::identity::DIRECTORY;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::organizations::{org_context, rejected};
use crate::conventions::{Reply, await_projection, command_error, json_body};
use crate::identity::auth::Principal;
use crate::kit::path_id;
use crate::pagination::{Page, PageParams, Pagination};
use crate::problem::{ApiError, FieldError, Problem, collect};
use crate::state::AppState;

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
    fn parse(
        &self,
        caller: &Principal,
    ) -> Result<atelier_commands::identity::users::NewUser, ApiError> {
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
                Ok(atelier_commands::identity::users::NewUser {
                    username,
                    profile: UserProfile { email, full_name },
                    password: self.password.clone().filter(|_| !self.invite),
                    is_superadmin: self.is_superadmin,
                    org_id: caller.new_user_organization(self.organization_id),
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
        .identity
        .users
        .create(&ctx, &principal.acting_on(org_id, Permission::Manage)?, new)
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

pub(super) fn user_error(e: atelier_commands::identity::users::UserServiceError) -> ApiError {
    use atelier_commands::identity::users::UserServiceError;
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
    let (page, per_page) = page.collect(&mut errors);
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
    await_projection(&state, &req, DIRECTORY).await?;
    let query = atelier_projections::identity::UserQuery {
        page,
        per_page,
        search,
        is_active,
        org_id: principal.users_listed(only),
    };
    let (rows, total) = atelier_projections::identity::list_users(&state.pool, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(Page {
        data: rows.into_iter().map(UserView::from).collect(),
        pagination: Pagination::new(page, per_page, total),
    }))
}

/// Reads a user: oneself, any user for a superadmin, a member for the organization's admins.
#[utoipa::path(
    get, path = "/api/v1/users/{id}", tag = "identity", operation_id = "get_user",
    params(("id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "The user", body = UserView),
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
    let id = path_id(&id, "user")?;
    await_projection(&state, &req, DIRECTORY).await?;
    let visible = match principal.sees_user(id) {
        UserSight::Yes => true,
        UserSight::IfMemberOf(org_id) => {
            atelier_projections::identity::is_member(&state.pool, org_id, id)
                .await
                .map_err(|e| ApiError::internal(&e))?
        }
        UserSight::No => false,
    };
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
    fn parse(&self) -> Result<atelier_commands::identity::users::UserChanges, ApiError> {
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
        Ok(atelier_commands::identity::users::UserChanges {
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
    let id = path_id(&id, "user")?;
    let changes = json_body::<UserUpdateBody>(&req, &body)?.parse()?;
    change_user(&state, &principal, id, changes).await
}

async fn change_user(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    changes: atelier_commands::identity::users::UserChanges,
) -> Result<HttpResponse, ApiError> {
    let ctx = crate::kit::command_context(principal);
    let written = state
        .identity
        .users
        .update(
            &ctx,
            &principal.acting_on(principal.org_id, Permission::Read)?,
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
    let id = path_id(&id, "user")?;
    let changes = atelier_commands::identity::users::UserChanges {
        is_active: Some(false),
        ..Default::default()
    };
    change_user(&state, &principal, id, changes).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the user routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
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
