//! Login and access tokens: `POST /api/v1/auth/login` answers a short-lived HS256 JWT, and
//! [`Principal`] is the extractor every protected handler takes (`Authorization: Bearer <jwt>`).
//!
//! This is the small, replaceable login of issue 3; refresh tokens, API keys and roles come with
//! the full identity model. Passwords and tokens are never logged.

use std::future::{Ready, ready};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use std::sync::Arc;

use atelier_commands::handler::{load, stream_of};
use atelier_commands::identity::{Identity, UserRecord};
use atelier_domain::identity::organization::Organization;
use atelier_domain::identity::{Permission, Role};
use atelier_store::EventStore;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::problem::{ApiError, FieldError, Problem};

/// How far `exp` and `nbf` may be off (clock skew between servers), in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The `typ` claim of access tokens.
pub const ACCESS_TYPE: &str = "access";

/// The longest username accepted, in characters.
const MAX_USERNAME_CHARS: usize = 256;

/// The longest password accepted, in bytes.
const MAX_PASSWORD_BYTES: usize = 1024;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    /// The user's id.
    sub: Uuid,
    /// Their organization.
    org: Uuid,
    /// Their username.
    name: String,
    /// Whether they are a superadmin.
    sa: bool,
    /// Their role in the organization, when they are a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    /// Always `access`.
    typ: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// Login and token checks, shared by the workers.
pub struct AuthState {
    /// Credentials.
    pub identity: Identity,
    /// The event store (a login reads the user's role from their organization).
    store: Arc<dyn EventStore>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Access tokens live this long.
    pub access_ttl: Duration,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

impl AuthState {
    /// Signs and checks tokens with this HS256 secret (see
    /// [`Identity::jwt_secret`](atelier_commands::identity::Identity::jwt_secret)).
    pub fn new(
        identity: Identity,
        store: Arc<dyn EventStore>,
        secret: &[u8],
        access_ttl: Duration,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        Self {
            identity,
            store,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
        }
    }

    /// The user's role in their organization, read from the organization's stream (so a
    /// membership written a moment ago counts).
    pub async fn role_of(&self, user: &UserRecord) -> Result<Option<Role>, ApiError> {
        let (org, _) =
            load::<Organization>(self.store.as_ref(), &stream_of::<Organization>(user.org_id))
                .await
                .map_err(|e| ApiError::internal(&e))?;
        Ok(org.role_of(user.user_id))
    }

    /// An access token for this user, with their role, valid for [`AuthState::access_ttl`].
    pub fn issue(&self, user: &UserRecord, role: Option<Role>) -> Result<String, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.user_id,
            org: user.org_id,
            name: user.username.clone(),
            sa: user.is_superadmin,
            role,
            typ: ACCESS_TYPE.to_owned(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(self.access_ttl.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::internal(&format!("cannot sign an access token: {e}")))
    }

    /// Who this access token was issued to, if it is one of ours, an access token, and current.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                ApiError::unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "the access token has expired",
                    ErrorKind::ImmatureSignature => "the access token is not valid yet",
                    ErrorKind::InvalidSignature => "the access token's signature is invalid",
                    ErrorKind::InvalidAlgorithm => "the access token's algorithm is not accepted",
                    _ => "the access token is malformed",
                })
            })?;
        let claims = data.claims;
        if claims.typ != ACCESS_TYPE {
            return Err(ApiError::unauthorized("the token is not an access token"));
        }
        Ok(Principal {
            user_id: claims.sub,
            username: claims.name,
            org_id: claims.org,
            is_superadmin: claims.sa,
            role: claims.role,
            expires_at: claims.exp,
        })
    }
}

/// Who is calling: the holder of a valid access token. Take it as a handler argument to
/// require one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's id.
    pub user_id: Uuid,
    /// Their username.
    pub username: String,
    /// Their organization: the tenant of every read and write.
    pub org_id: Uuid,
    /// Whether they administer the whole platform.
    pub is_superadmin: bool,
    /// Their role in the organization when the token was issued (`None`: not a member).
    pub role: Option<Role>,
    /// When their token expires, in seconds since the epoch (live connections close then).
    pub expires_at: u64,
}

impl Principal {
    /// Whether they may do this in their organization: a superadmin anything, a member what
    /// their role allows (viewers read, members create and change, admins manage, owners own).
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.is_superadmin || self.role.is_some_and(|r| r.allows(permission)) {
            return Ok(());
        }
        Err(ApiError::forbidden(match self.role {
            Some(role) => format!(
                "a {} of this organization may not do this ({} or more is needed)",
                role.as_str(),
                Role::needed_for(permission).as_str()
            ),
            None => "you are not a member of this organization".to_owned(),
        }))
    }
}

/// The token of the request's `Authorization: Bearer <token>` header, if it has the header;
/// a header in another form is a 401, not an absent token.
pub fn bearer_token(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .map(Some)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "the Authorization header must be `Bearer <token>` with an access token",
            )
        })
}

impl Principal {
    fn from_request_head(req: &HttpRequest) -> Result<Self, ApiError> {
        let Some(auth) = req.app_data::<web::Data<AuthState>>() else {
            return Err(ApiError::internal(
                &"the authentication state is not registered in the application",
            ));
        };
        let Some(token) = bearer_token(req)? else {
            return Err(ApiError::unauthorized(
                "an access token is required (Authorization: Bearer <token>)",
            ));
        };
        auth.verify(token)
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::from_request_head(req))
    }
}

/// A login.
#[derive(Clone, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// The username (compared case-insensitively).
    #[schema(example = "admin")]
    pub username: String,
    /// The password.
    #[schema(format = Password)]
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
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
        let mut field = |name: &str, max: usize, len: fn(&str) -> usize| -> String {
            let message = match fields.get(name) {
                None | Some(serde_json::Value::Null) => "is required".to_owned(),
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => {
                    "must not be empty".to_owned()
                }
                Some(serde_json::Value::String(s)) if len(s) > max => {
                    format!("must be at most {max} characters")
                }
                Some(serde_json::Value::String(s)) => return s.clone(),
                Some(_) => "must be a string".to_owned(),
            };
            errors.push(FieldError {
                field: name.to_owned(),
                message,
            });
            String::new()
        };
        let username = field("username", MAX_USERNAME_CHARS, |s| s.chars().count());
        let password = field("password", MAX_PASSWORD_BYTES, str::len);
        if errors.is_empty() {
            Ok(Self { username, password })
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

/// An access token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    pub token_type: String,
    /// Seconds until the token expires.
    #[schema(example = 1800)]
    pub expires_in: u64,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Exchanges a username and password for an access token.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "An access token", body = TokenResponse),
        (status = 400, description = "A malformed body, or a missing or invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong username or password (the same answer for both)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "http.auth.login", skip_all, fields(user_id = tracing::field::Empty))]
pub async fn login(auth: web::Data<AuthState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let request = LoginRequest::parse(&body)?;
    let user = auth
        .identity
        .authenticate(&request.username, &request.password)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let Some(user) = user else {
        tracing::info!("login refused");
        return Err(ApiError::unauthorized(
            "the username or password is incorrect",
        ));
    };
    tracing::Span::current().record("user_id", tracing::field::display(user.user_id));
    let role = auth.role_of(&user).await?;
    let access_token = auth.issue(&user, role)?;
    tracing::info!("login succeeded");
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(TokenResponse {
            access_token,
            token_type: "bearer".to_owned(),
            expires_in: auth.access_ttl.as_secs(),
        }))
}

/// Registers `POST /api/v1/auth/login` (at the application's root).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/auth/login").route(web::post().to(login)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_body_names_every_missing_or_mistyped_field() {
        let e = LoginRequest::parse(br#"{"username": 5}"#).unwrap_err();
        let p = e.problem();
        assert_eq!(p.code, "VALIDATION_ERROR");
        let fields: Vec<_> = p.errors.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["username", "password"]);
    }

    #[test]
    fn a_malformed_login_body_is_a_bad_request_that_does_not_echo_it() {
        let e = LoginRequest::parse(br#"{"username": "a", "password": "hunter2""#).unwrap_err();
        assert_eq!(e.problem().code, "BAD_REQUEST");
        assert!(!format!("{e}").contains("hunter2"));
    }

    #[test]
    fn a_login_request_never_shows_its_password_in_debug_output() {
        let r = LoginRequest::parse(br#"{"username": "a", "password": "hunter2"}"#).unwrap();
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
