//! The caller's own account (Sentinel's and WindFlow's): `GET /api/v1/auth/me`,
//! `POST /api/v1/auth/verify` and `POST /api/v1/auth/change-password`.

use actix_web::{HttpRequest, HttpResponse, web};
use atelier_domain::identity::user::check_password;
use atelier_projections::identity::{DIRECTORY, get_user, memberships_of};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::conventions::{await_projection, json_body};
use crate::identity::auth::{AuthState, Principal};
use crate::identity::login::client_ip;
use crate::identity::throttle::Account;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// One of the caller's organizations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MembershipView {
    /// The organization.
    pub organization_id: Uuid,
    /// Its name.
    pub name: String,
    /// The caller's role there.
    pub role: String,
}

impl From<atelier_projections::identity::MembershipRow> for MembershipView {
    fn from(m: atelier_projections::identity::MembershipRow) -> Self {
        Self {
            organization_id: m.org_id,
            name: m.name,
            role: m.role,
        }
    }
}

/// Who the caller is (WindFlow's `UserInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MeView {
    /// Their id.
    pub user_id: Uuid,
    /// Their username.
    pub username: String,
    /// Their email address.
    pub email: String,
    /// Their name.
    pub full_name: Option<String>,
    /// Whether they administer the platform.
    pub is_superadmin: bool,
    /// The organization this token acts in (`null`: none; name one with `X-Organization-Id`).
    pub organization_id: Option<Uuid>,
    /// The caller's role there, if a member.
    pub role: Option<String>,
    /// Every organization they belong to.
    pub organizations: Vec<MembershipView>,
}

/// The answer of `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyView {
    /// Always true (an invalid token gets a 401).
    pub valid: bool,
    /// Whose it is.
    pub user_id: Uuid,
    /// Their username.
    pub username: String,
    /// The organization it acts in (`null`: none).
    pub organization_id: Option<Uuid>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// A password change.
#[derive(Clone, Deserialize, ToSchema)]
pub struct ChangePasswordBody {
    /// The password now.
    #[schema(format = Password)]
    pub current_password: String,
    /// The new one, at least 8 characters.
    #[schema(format = Password)]
    pub new_password: String,
}

/// The caller's account and organizations.
#[utoipa::path(
    get, path = "/api/v1/auth/me", tag = "auth",
    responses(
        (status = 200, description = "The caller", body = MeView),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.auth.me", skip_all, fields(user = %principal.user_id))]
pub async fn me(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    await_projection(&state, &req, DIRECTORY).await?;
    let user = get_user(&state.pool, principal.user_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let organizations = memberships_of(&state.pool, principal.user_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    // A user the read model does not show yet still gets what the token says.
    let (email, full_name) = user.map(|u| (u.email, u.full_name)).unwrap_or_default();
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(MeView {
            user_id: principal.user_id,
            username: principal.username.clone(),
            email,
            full_name,
            is_superadmin: principal.is_superadmin,
            organization_id: principal.organization(),
            role: principal.role.map(|r| r.as_str().to_owned()),
            organizations: organizations
                .into_iter()
                .map(MembershipView::from)
                .collect(),
        }))
}

/// Checks the caller's token (Sentinel's `verify`).
#[utoipa::path(
    post, path = "/api/v1/auth/verify", tag = "auth",
    responses(
        (status = 200, description = "The token is valid", body = VerifyView),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.auth.verify", skip_all)]
pub async fn verify(principal: Principal) -> HttpResponse {
    let expires_at =
        DateTime::from_timestamp(i64::try_from(principal.expires_at).unwrap_or(i64::MAX), 0)
            .unwrap_or_default();
    HttpResponse::Ok().json(VerifyView {
        valid: true,
        user_id: principal.user_id,
        username: principal.username.clone(),
        organization_id: principal.organization(),
        expires_at,
    })
}

/// Changes the caller's password.
#[utoipa::path(
    post, path = "/api/v1/auth/change-password", tag = "auth",
    request_body = ChangePasswordBody,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "The new password breaks the rules, or the current one is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "An API key (only a person may change their password)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many password checks for this account or from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.auth.change_password", skip_all, fields(user = %principal.user_id))]
pub async fn change_password(
    state: web::Data<AppState>,
    auth: web::Data<AuthState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::<ChangePasswordBody>(&req, &body)?;
    check_password("new_password", &body.new_password)
        .map_err(|e| ApiError::validation(vec![e.into()]))?;
    // A check of the current password is a guess like a login's: same budget.
    auth.throttle
        .attempt(&client_ip(&req), Account::User(principal.user_id))?;
    let ctx = crate::kit::command_context(&principal);
    let changed = state
        .identity
        .users
        .change_password(
            &ctx,
            principal.user_id,
            &body.current_password,
            &body.new_password,
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if !changed {
        return Err(ApiError::invalid_field(
            "current_password",
            "is not your current password",
        ));
    }
    tracing::info!("password changed");
    Ok(HttpResponse::NoContent().finish())
}

/// An invitation to accept.
#[derive(Clone, Deserialize, ToSchema)]
pub struct AcceptInvitationBody {
    /// The token the user was given.
    pub token: String,
    /// Their password, at least 8 characters.
    #[schema(format = Password)]
    pub password: String,
}

/// Accepts an invitation: sets the invited user's password; they can log in then.
#[utoipa::path(
    post, path = "/api/v1/auth/accept-invitation", tag = "auth",
    request_body = AcceptInvitationBody,
    responses(
        (status = 200, description = "Accepted: the user can log in", body = crate::identity::users::UserView),
        (status = 400, description = "The password breaks the rules, or the token is unknown, used or expired", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "http.auth.accept_invitation", skip_all)]
pub async fn accept_invitation(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::<AcceptInvitationBody>(&req, &body)?;
    check_password("password", &body.password).map_err(|e| ApiError::validation(vec![e.into()]))?;
    let written = state
        .identity
        .users
        .accept_invitation(body.token.trim(), &body.password)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| {
            ApiError::invalid_field(
                "token",
                "is not a current invitation (unknown, used or expired)",
            )
        })?;
    let user = written
        .state
        .data()
        .ok_or_else(|| ApiError::bug("invited user missing"))?;
    tracing::info!(user_id = %user.id, "invitation accepted");
    Ok(HttpResponse::Ok().json(crate::identity::users::user_view(user)))
}

/// Registers the account routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/me").route(web::get().to(me)))
        .service(web::resource("/auth/verify").route(web::post().to(verify)))
        .service(web::resource("/auth/change-password").route(web::post().to(change_password)))
        .service(web::resource("/auth/accept-invitation").route(web::post().to(accept_invitation)));
}
