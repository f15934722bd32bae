//! Logins and sessions (WindFlow's and Sentinel's `auth`): `POST /api/v1/auth/login` (username
//! or email), `/login-key` (an API key in the `api-key` header), `/refresh` (the refresh token
//! in the `refresh-token` header or the body; rotation) and `/logout`.
//!
//! A login starts a session (an event-sourced aggregate) and answers an access token and a
//! refresh token, both JWTs naming the session. Each refresh spends its token and answers the
//! next pair; a spent refresh token presented again ends the whole session (it was stolen or
//! replayed). Logout ends the session at once: its access tokens stop working on the next
//! request. Passwords and tokens are never logged.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::CommandContext;
use atelier_commands::identity::api_keys::usable;
use atelier_commands::identity::sessions::Refreshed;
use atelier_domain::identity::caller::password_unchanged_since;
use atelier_domain::identity::session::{EndReason, SessionData, SessionError};
use atelier_domain::identity::user::UserData;
use atelier_projections::identity::{DIRECTORY, memberships_of};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::conventions::wait_for_position;
use crate::identity::account::MembershipView;
use crate::identity::auth::{ACCESS_TYPE, AuthState, Principal, REFRESH_TYPE, api_key, internal};
use crate::identity::throttle::Account;
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// Password logins, by `outcome` (`succeeded`, `refused`; throttled ones are counted apart).
pub const LOGINS: &str = "atelier_logins_total";
/// Spent refresh tokens presented again (each ended a session).
pub const REFRESH_REUSED: &str = "atelier_refresh_token_reuse_total";

/// WindFlow's login rules: a username of 3 to 50 characters (an email address, which logs in
/// too, up to 254), a password of at least 8 characters (and at most 1 KiB). They are checked
/// before any lookup, alike for every input, so an answer tells nothing about accounts.
const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=50;
/// The longest email address accepted at login (RFC 5321's path limit), in characters.
const MAX_EMAIL_CHARS: usize = 254;
/// The shortest password accepted, in characters.
const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted, in bytes.
const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a login's username breaks the rules, if it does.
fn username_rule(name: &str) -> Option<String> {
    let chars = name.trim().chars().count();
    let max = if name.contains('@') {
        MAX_EMAIL_CHARS
    } else {
        *USERNAME_CHARS.end()
    };
    (chars < *USERNAME_CHARS.start() || chars > max).then(|| {
        format!(
            "must be {} to {} characters (an email address up to {MAX_EMAIL_CHARS})",
            USERNAME_CHARS.start(),
            USERNAME_CHARS.end()
        )
    })
}

/// Why a login's password breaks the rules, if it does.
fn password_rule(password: &str) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        Some(format!("must be at least {MIN_PASSWORD_CHARS} characters"))
    } else if password.len() > MAX_PASSWORD_BYTES {
        Some(format!("must be at most {MAX_PASSWORD_BYTES} bytes"))
    } else {
        None
    }
}

/// A login.
#[derive(Clone, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// The username or email address (compared case-insensitively).
    #[schema(example = "admin")]
    pub username: String,
    /// The password.
    #[schema(format = Password)]
    pub password: String,
    /// Keep the session for 30 days instead of one.
    #[serde(default)]
    pub remember_me: bool,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("remember_me", &self.remember_me)
            .finish()
    }
}

impl LoginRequest {
    /// Reads a login from a JSON body: a malformed body is a 400 `BAD_REQUEST`, a missing,
    /// mistyped, empty or oversized field a 400 `VALIDATION_ERROR` naming it. The answer never
    /// echoes the password.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let serde_json::Value::Object(fields) = value else {
            return Err(ApiError::invalid_field(
                "body",
                "must be a JSON object with `username` and `password`",
            ));
        };
        let mut errors = Vec::new();
        let mut field = |name: &str, rule: fn(&str) -> Option<String>| -> String {
            let message = match fields.get(name) {
                None | Some(serde_json::Value::Null) => "is required".to_owned(),
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => {
                    "must not be empty".to_owned()
                }
                Some(serde_json::Value::String(s)) => match rule(s) {
                    Some(broken) => broken,
                    None => return s.clone(),
                },
                Some(_) => "must be a string".to_owned(),
            };
            errors.push(FieldError {
                field: name.to_owned(),
                message,
            });
            String::new()
        };
        let username = field("username", username_rule);
        let password = field("password", password_rule);
        let remember_me = match fields.get("remember_me") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => {
                errors.push(FieldError {
                    field: "remember_me".to_owned(),
                    message: "must be true or false".to_owned(),
                });
                false
            }
        };
        if errors.is_empty() {
            Ok(Self {
                username,
                password,
                remember_me,
            })
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

/// Who logged in (WindFlow's `UserInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    /// Their id.
    pub user_id: Uuid,
    /// Their username.
    pub username: String,
    /// Their email address.
    pub email: String,
    /// Whether they administer the platform.
    pub is_superadmin: bool,
    /// The organization the tokens act in unless `X-Organization-Id` says otherwise: their
    /// default one while they belong to it, else their only one (`null`: they belong to none,
    /// or to several with no default, and name one on each request).
    pub organization_id: Option<Uuid>,
    /// The organizations they belong to.
    pub organizations: Vec<MembershipView>,
}

/// Tokens (WindFlow's `AuthResponse`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// The JWT that `POST /api/v1/auth/refresh` exchanges, once, for new tokens.
    pub refresh_token: String,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    pub token_type: String,
    /// Seconds until the access token expires.
    #[schema(example = 1800)]
    pub expires_in: u64,
    /// Who the tokens are for.
    pub user_info: UserInfo,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("user_info", &self.user_info)
            .finish()
    }
}

/// A refresh token in the body (it may come in the `refresh-token` header instead).
#[derive(Clone, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The refresh token of the last login or refresh.
    pub refresh_token: String,
}

/// The address a request came from (the TCP peer: behind a proxy, the proxy's).
pub(crate) fn client_ip(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())
}

fn no_store(body: &TokenResponse) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

/// The tokens of a session at its current generation.
async fn session_tokens(
    auth: &AuthState,
    app: &AppState,
    user: &UserData,
    session: &SessionData,
) -> Result<TokenResponse, ApiError> {
    let mut claims = AuthState::claims(user, session.org_id);
    claims.sid = Some(session.id);
    let left = (session.expires_at - Utc::now())
        .to_std()
        .unwrap_or_default();
    // No token outlives its session.
    let access_ttl = auth.settings.access_ttl.min(left);
    let access_token = auth.sign(claims.clone(), ACCESS_TYPE, access_ttl)?;
    claims.generation = Some(session.generation);
    let refresh_token = auth.sign(claims, REFRESH_TYPE, left)?;
    Ok(TokenResponse {
        access_token,
        refresh_token,
        token_type: "bearer".to_owned(),
        expires_in: access_ttl.as_secs(),
        user_info: user_info(app, user, session.org_id).await?,
    })
}

async fn user_info(app: &AppState, user: &UserData, org_id: Uuid) -> Result<UserInfo, ApiError> {
    let organizations = memberships_of(&app.pool, user.id)
        .await
        .map_err(internal)?
        .into_iter()
        .map(MembershipView::from)
        .collect();
    Ok(UserInfo {
        user_id: user.id,
        username: user.username.as_str().to_owned(),
        email: user.profile.email.as_str().to_owned(),
        is_superadmin: user.is_superadmin,
        organization_id: (!org_id.is_nil()).then_some(org_id),
        organizations,
    })
}

/// Exchanges a username (or email address) and password for an access and a refresh token.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Tokens of a new session", body = TokenResponse),
        (status = 400, description = "A malformed body, or a missing or invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong username or password (the same answer for both), or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this address or for this account; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "http.auth.login", skip_all, fields(user_id = tracing::field::Empty))]
pub async fn login(
    auth: web::Data<AuthState>,
    app: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request = LoginRequest::parse(&body)?;
    // The budget is the account's, whatever name (username, email, any case) reached it.
    let login = auth
        .credentials
        .find_login(&request.username)
        .await
        .map_err(internal)?;
    auth.throttle.attempt(
        &client_ip(&req),
        login
            .as_ref()
            .map_or(Account::Unknown(&request.username), |l| {
                Account::User(l.record.user_id)
            }),
    )?;
    let record = auth
        .credentials
        .verify(login, &request.password)
        .await
        .map_err(internal)?;
    let Some(record) = record else {
        metrics::counter!(LOGINS, "outcome" => "refused").increment(1);
        tracing::info!("login refused");
        return Err(ApiError::unauthorized(
            "the username or password is incorrect",
        ));
    };
    tracing::Span::current().record("user_id", tracing::field::display(record.user_id));
    let user = &auth.active_user(record.user_id).await?;
    let ttl = if request.remember_me {
        auth.settings.remember_me_ttl
    } else {
        auth.settings.session_ttl
    };
    let org_id = session_org(&auth, &app, user.id, record.default_org).await?;
    let ctx = CommandContext::new(org_id, user.id.to_string());
    let expires_at = ctx.occurred_at + chrono::Duration::from_std(ttl).unwrap_or_default();
    let session = auth
        .sessions
        .start(&ctx, user.id, expires_at)
        .await
        .map_err(internal)?;
    metrics::counter!(LOGINS, "outcome" => "succeeded").increment(1);
    tracing::info!(session_id = %session.id, "login succeeded");
    Ok(no_store(
        &session_tokens(&auth, &app, user, &session).await?,
    ))
}

/// Where a new session acts: the user's default organization while they belong to it, else
/// their only organization, else none (the nil id: each request names one with
/// `X-Organization-Id`, or is refused with a 403 that says so).
async fn session_org(
    auth: &AuthState,
    app: &AppState,
    user_id: Uuid,
    default: Option<Uuid>,
) -> Result<Uuid, ApiError> {
    if let Some(org) = default {
        let organization = auth.access.organization(org).await.map_err(internal)?;
        if organization.role_of(user_id).is_some() {
            return Ok(org);
        }
    }
    // Their memberships now: the read model, once it has applied every write so far.
    if let Some(head) = app.store.head().await.map_err(internal)? {
        wait_for_position(app, DIRECTORY, head).await?;
    }
    let memberships = memberships_of(&app.pool, user_id).await.map_err(internal)?;
    Ok(match memberships.as_slice() {
        [only] => only.org_id,
        _ => Uuid::nil(),
    })
}

/// Exchanges an API key (`api-key` header) for tokens acting with the key's scopes.
#[utoipa::path(
    post, path = "/api/v1/auth/login-key", tag = "auth",
    params(("api-key" = String, Header, description = "An API key")),
    responses(
        (status = 200, description = "Tokens acting as the key; refreshing them checks the key again", body = TokenResponse),
        (status = 401, description = "A missing, unknown, revoked or expired key", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "http.auth.login_key", skip_all)]
pub async fn login_key(
    auth: web::Data<AuthState>,
    app: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let key = api_key(&req)?
        .ok_or_else(|| ApiError::unauthorized("an API key is required in the `api-key` header"))?;
    // Keys are not guessable, but an address trying many is throttled all the same.
    auth.throttle.attempt(&client_ip(&req), Account::ApiKeys)?;
    let key_id = auth.authenticate_key(key).await?;
    Ok(no_store(&key_tokens(&auth, &app, key_id).await?))
}

/// Tokens acting as a key, if it is usable and its creator active.
async fn key_tokens(
    auth: &AuthState,
    app: &AppState,
    key_id: Uuid,
) -> Result<TokenResponse, ApiError> {
    let key = auth.access.key(key_id).await.map_err(internal)?;
    let Some(k) = usable(&key, Utc::now()) else {
        return Err(ApiError::unauthorized(
            "the API key has been revoked or has expired",
        ));
    };
    let user = &auth.active_user(k.created_by).await?;
    let mut claims = AuthState::claims(user, k.org_id);
    claims.kid = Some(key_id);
    let left = |ttl: std::time::Duration| {
        k.expires_at
            .and_then(|e| (e - Utc::now()).to_std().ok())
            .map_or(ttl, |l| l.min(ttl))
    };
    let access_ttl = left(auth.settings.access_ttl);
    let access_token = auth.sign(claims.clone(), ACCESS_TYPE, access_ttl)?;
    let refresh_token = auth.sign(claims, REFRESH_TYPE, left(auth.settings.session_ttl))?;
    let mut info = user_info(app, user, k.org_id).await?;
    info.is_superadmin = false;
    Ok(TokenResponse {
        access_token,
        refresh_token,
        token_type: "bearer".to_owned(),
        expires_in: access_ttl.as_secs(),
        user_info: info,
    })
}

/// Exchanges a refresh token for a new access token and a new refresh token (the old one is
/// spent: presenting it again ends the session).
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth",
    params(("refresh-token" = Option<String>, Header, description = "The refresh token (or in the body)")),
    request_body(content = Option<RefreshRequest>, description = "The refresh token (or in the header)"),
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 400, description = "No refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "An invalid, expired or spent refresh token (a spent one ends its session), or an ended session", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "http.auth.refresh", skip_all, fields(session_id = tracing::field::Empty))]
pub async fn refresh(
    auth: web::Data<AuthState>,
    app: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let from_header = req
        .headers()
        .get("refresh-token")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let token = match from_header {
        Some(t) => t,
        None if body.iter().all(u8::is_ascii_whitespace) => {
            return Err(ApiError::invalid_field(
                "refresh_token",
                "is required (in the body, or in the `refresh-token` header)",
            ));
        }
        None => crate::conventions::json_body::<RefreshRequest>(&req, &body)?.refresh_token,
    };
    let claims = auth.decode(&token, REFRESH_TYPE)?;
    if let Some(key_id) = claims.kid {
        return Ok(no_store(&key_tokens(&auth, &app, key_id).await?));
    }
    let (Some(sid), Some(generation)) = (claims.sid, claims.generation) else {
        return Err(ApiError::unauthorized("the refresh token is malformed"));
    };
    tracing::Span::current().record("session_id", tracing::field::display(sid));
    let user = &auth.active_user(claims.sub).await?;
    password_unchanged_since(user, claims.pwd)?;
    let ctx = CommandContext::new(claims.org, user.id.to_string())
        .with_credential(format!("session:{sid}"));
    let refreshed = auth
        .sessions
        .refresh(&ctx, sid, generation)
        .await
        .map_err(|e| match e {
            atelier_commands::handler::CommandError::Rejected(e) => {
                ApiError::unauthorized(match e {
                    SessionError::Expired => "the session has expired; log in again",
                    SessionError::Ended => "the session has ended; log in again",
                    _ => "the refresh token is not valid",
                })
            }
            e => internal(e),
        })?;
    match refreshed {
        Refreshed::Rotated(session) if session.user_id == user.id => Ok(no_store(
            &session_tokens(&auth, &app, user, &session).await?,
        )),
        Refreshed::Rotated(_) => Err(ApiError::unauthorized("the refresh token is malformed")),
        Refreshed::Reused => Err({
            metrics::counter!(REFRESH_REUSED).increment(1);
            ApiError::new(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "REFRESH_TOKEN_REUSED",
                "this refresh token was already used: the session has been ended, log in again",
            )
        }),
    }
}

/// Ends the caller's session: its access and refresh tokens stop working now.
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Missing or invalid token (an ended session included)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "An API key (revoke it instead)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.auth.logout", skip_all, fields(user = %principal.user_id))]
pub async fn logout(
    auth: web::Data<AuthState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    let Some(sid) = principal.session_id else {
        return Err(ApiError::unauthorized("the access token names no session"));
    };
    let ctx = crate::kit::command_context(&principal);
    auth.sessions
        .end(&ctx, sid, EndReason::Logout)
        .await
        .map_err(internal)?;
    tracing::info!(session_id = %sid, "logged out");
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the login routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/login").route(web::post().to(login)))
        .service(web::resource("/auth/login-key").route(web::post().to(login_key)))
        .service(web::resource("/auth/refresh").route(web::post().to(refresh)))
        .service(web::resource("/auth/logout").route(web::post().to(logout)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_body_names_every_missing_or_mistyped_field() {
        let e = LoginRequest::parse(br#"{"username": 5, "remember_me": "yes"}"#).unwrap_err();
        let p = e.problem();
        assert_eq!(p.code, "VALIDATION_ERROR");
        let fields: Vec<_> = p.errors.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["username", "password", "remember_me"]);
    }

    #[test]
    fn a_malformed_login_body_is_a_bad_request_that_does_not_echo_it() {
        let e = LoginRequest::parse(br#"{"username": "a", "password": "hunter2""#).unwrap_err();
        assert_eq!(e.problem().code, "BAD_REQUEST");
        assert!(!format!("{e}").contains("hunter2"));
    }

    #[test]
    fn a_login_request_never_shows_its_password_in_debug_output() {
        let r = LoginRequest::parse(br#"{"username": "alice", "password": "hunter22"}"#).unwrap();
        assert!(!format!("{r:?}").contains("hunter22"));
        assert!(!r.remember_me);
    }

    #[test]
    fn windflow_login_rules_are_validation_errors_naming_the_field() {
        for (body, field) in [
            (
                r#"{"username": "al", "password": "long enough"}"#,
                "username",
            ),
            (
                &format!(
                    r#"{{"username": "{}", "password": "long enough"}}"#,
                    "a".repeat(51)
                ),
                "username",
            ),
            (r#"{"username": "alice", "password": "short"}"#, "password"),
        ] {
            let e = LoginRequest::parse(body.as_bytes()).unwrap_err();
            let p = e.problem();
            assert_eq!(p.code, "VALIDATION_ERROR", "{body}");
            assert_eq!(p.errors.len(), 1, "{body}");
            assert_eq!(p.errors[0].field, field, "{body}");
        }
        let email = format!("{}@example.com", "a".repeat(60));
        let body = format!(r#"{{"username": "{email}", "password": "long enough"}}"#);
        assert_eq!(
            LoginRequest::parse(body.as_bytes()).unwrap().username,
            email
        );
    }
}
