//! Authentication and tenancy: who is calling, for which organization, with which rights.
//!
//! A caller presents an access token (`Authorization: Bearer <jwt>`, from a login, a refresh or
//! a key login) or an API key (`api-key` or `X-API-Key` header). [`Principal`], the extractor
//! every protected handler takes, checks the token (HS256 only, `exp`/`nbf`, type `access`),
//! then reads the current state of the caller's session or key, user and organization (see
//! [`Access`]): a logout, a revoked key, a removed member, a deactivated user or a changed
//! password counts from the next request. The organization is the API key's, or for a user the
//! `X-Organization-Id` header's, or their default one; one they do not belong to is a 404
//! (a superadmin may act in any). Passwords, tokens and keys are never logged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};

use atelier_commands::identity::access::Access;
use atelier_commands::identity::api_keys::{ApiKeyService, usable};
use atelier_commands::identity::sessions::SessionService;
use atelier_commands::identity::{CredentialStore, IdentityServices};
use atelier_domain::identity::Role;
use atelier_domain::identity::api_key::ApiKey;
use atelier_domain::identity::caller::{
    Caller, Refusal, may_log_in, password_unchanged_since, role_in,
};
use atelier_domain::identity::session::Session;
use atelier_domain::identity::user::UserData;
use chrono::Utc;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::throttle::{LoginLimits, LoginThrottle};
use crate::problem::ApiError;

/// How far `exp` and `nbf` may be off (clock skew between servers), in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The `typ` claim of access tokens.
pub const ACCESS_TYPE: &str = "access";

/// The `typ` claim of refresh tokens.
pub const REFRESH_TYPE: &str = "refresh";

/// The header naming the organization a user token acts in.
pub const ORGANIZATION_HEADER: &str = "x-organization-id";

/// The headers an API key may come in (WindFlow's `api-key`, and the common `X-API-Key`).
pub const API_KEY_HEADERS: [&str; 2] = ["api-key", "x-api-key"];

/// The operations only a person may do, by method and route pattern: their own account (log
/// out, change the password) and the management of keys, users and organizations' activity.
/// An API key, or a token from a key login, is refused them with a 403 by [`Principal`]'s
/// extractor, here and nowhere else; the OpenAPI document reads the same list (they take the
/// `bearer` scheme only).
pub const PERSON_ONLY: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/logout"),
    ("post", "/api/v1/auth/change-password"),
    ("post", "/api/v1/api-keys"),
    ("delete", "/api/v1/api-keys/{id}"),
    ("put", "/api/v1/users/{id}"),
    ("delete", "/api/v1/users/{id}"),
    ("post", "/api/v1/organizations/{id}/deactivate"),
    ("post", "/api/v1/organizations/{id}/reactivate"),
];

/// Whether only a person may call this operation (see [`PERSON_ONLY`]).
pub fn person_only(method: &str, pattern: &str) -> bool {
    PERSON_ONLY
        .iter()
        .any(|(m, p)| m.eq_ignore_ascii_case(method) && *p == pattern)
}

/// The claims of Atelier's tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The user (for a key login: the key's creator).
    pub sub: Uuid,
    /// The login session (user logins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// The API key (key logins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<Uuid>,
    /// The organization the session or key acts in by default.
    pub org: Uuid,
    /// How many times the user's password had changed when the token was issued.
    #[serde(default)]
    pub pwd: u32,
    /// The refresh generation (refresh tokens of sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// `access` or `refresh`.
    pub typ: String,
    /// This token's id.
    pub jti: Uuid,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// Lifetimes and limits of authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    /// Access tokens live this long.
    pub access_ttl: Duration,
    /// A session can be refreshed this long after its login.
    pub session_ttl: Duration,
    /// … or this long when the login asked to be remembered.
    pub remember_me_ttl: Duration,
    /// Login throttling.
    pub login_limits: LoginLimits,
}

impl Default for AuthSettings {
    /// 30-minute access tokens, 1-day sessions (30 days remembered).
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(30 * 60),
            session_ttl: Duration::from_secs(24 * 3600),
            remember_me_ttl: Duration::from_secs(30 * 24 * 3600),
            login_limits: LoginLimits::default(),
        }
    }
}

/// Logins, tokens and access decisions, shared by the workers.
pub struct AuthState {
    /// Logins, key hashes and invitations.
    pub credentials: CredentialStore,
    /// Current state of sessions, keys, users and organizations.
    pub access: Arc<Access>,
    /// Login sessions.
    pub sessions: SessionService,
    /// API keys.
    pub keys: ApiKeyService,
    /// Login throttling.
    pub throttle: LoginThrottle,
    /// Lifetimes.
    pub settings: AuthSettings,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// An access token.
    Bearer(&'a str),
    /// An API key.
    ApiKey(&'a str),
}

fn unauthorized_token(kind: &str, e: &jsonwebtoken::errors::Error) -> ApiError {
    ApiError::unauthorized(match e.kind() {
        ErrorKind::ExpiredSignature => format!("the {kind} token has expired"),
        ErrorKind::ImmatureSignature => format!("the {kind} token is not valid yet"),
        ErrorKind::InvalidSignature => format!("the {kind} token's signature is invalid"),
        ErrorKind::InvalidAlgorithm => format!("the {kind} token's algorithm is not accepted"),
        _ => format!("the {kind} token is malformed"),
    })
}

/// A 500 (or a 503 for an unreachable database) for any failure below (logged, never shown).
pub(crate) fn internal(e: impl std::error::Error + 'static) -> ApiError {
    ApiError::internal(&e)
}

/// A rule's refusal, as an answer.
impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Forbidden(m) => ApiError::forbidden(m),
            Refusal::NotFound(m) => ApiError::not_found(m),
            Refusal::Unauthorized(m) => ApiError::unauthorized(m),
        }
    }
}

impl AuthState {
    /// Identity's services, signing and checking tokens with this HS256 secret (see
    /// [`CredentialStore::jwt_secret`]).
    pub fn new(identity: &IdentityServices, secret: &[u8], settings: AuthSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        Self {
            access: identity.access.clone(),
            sessions: identity.sessions.clone(),
            keys: identity.keys.clone(),
            credentials: identity.credentials.clone(),
            throttle: LoginThrottle::new(settings.login_limits),
            settings,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Signs a token of type `typ` for these subjects, valid for `ttl`.
    pub(crate) fn sign(
        &self,
        mut claims: Claims,
        typ: &str,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        claims.typ = typ.to_owned();
        claims.jti = Uuid::new_v4();
        claims.iat = now;
        claims.nbf = now;
        claims.exp = now.saturating_add(ttl.as_secs());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::bug(format!("cannot sign a token: {e}")))
    }

    /// The claims of a token of ours of type `typ` (`access` or `refresh`), if it is current.
    pub(crate) fn decode(&self, token: &str, typ: &str) -> Result<Claims, ApiError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| unauthorized_token(typ, &e))?
            .claims;
        if claims.typ != typ {
            let article = if typ == ACCESS_TYPE { "an" } else { "a" };
            return Err(ApiError::unauthorized(format!(
                "the token is not {article} {typ} token"
            )));
        }
        Ok(claims)
    }

    /// The user, if they exist and may log in now.
    pub(crate) async fn active_user(&self, user_id: Uuid) -> Result<UserData, ApiError> {
        let user = self.access.user(user_id).await.map_err(internal)?;
        Ok(may_log_in(&user)?.clone())
    }

    /// The id of the API key this is, if it is one of ours (revoked or not: see
    /// [`usable`]).
    pub(crate) async fn authenticate_key(&self, key: &str) -> Result<Uuid, ApiError> {
        self.keys
            .authenticate(key)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError::unauthorized("the API key is not valid"))
    }

    /// Who presented this, acting in `org` (the `X-Organization-Id` header) or by default in
    /// their session's or key's organization.
    #[tracing::instrument(name = "auth.principal", skip_all)]
    pub async fn principal(
        &self,
        presented: Presented<'_>,
        org: Option<Uuid>,
    ) -> Result<Principal, ApiError> {
        match presented {
            Presented::Bearer(token) => {
                let claims = self.decode(token, ACCESS_TYPE)?;
                match (claims.sid, claims.kid) {
                    (Some(sid), None) => self.session_principal(&claims, sid, org).await,
                    (None, Some(kid)) => self.key_principal(kid, org, Some(&claims)).await,
                    _ => Err(ApiError::unauthorized("the access token is malformed")),
                }
            }
            Presented::ApiKey(key) => {
                let kid = self.authenticate_key(key).await?;
                self.key_principal(kid, org, None).await
            }
        }
    }

    async fn session_principal(
        &self,
        claims: &Claims,
        sid: Uuid,
        org: Option<Uuid>,
    ) -> Result<Principal, ApiError> {
        let explicit = org.is_some();
        // The token names the session's organization: the default one.
        let org_id = org.unwrap_or(claims.org);
        let (session, user, organization) = self
            .access
            .session_access(sid, claims.sub, org_id)
            .await
            .map_err(internal)?;
        let Session::Active(session) = &*session else {
            return Err(ApiError::unauthorized(
                "the session has ended; log in again",
            ));
        };
        let u = may_log_in(&user)?;
        if session.user_id != u.id || session.org_id != claims.org {
            return Err(ApiError::unauthorized("the access token is malformed"));
        }
        password_unchanged_since(u, claims.pwd)?;
        // A session that acts in no organization (its user belongs to none, or to several
        // with no default) is who it is, with no role anywhere until a request names one.
        let role = if org_id.is_nil() {
            None
        } else {
            role_in(&organization, u.id, u.is_superadmin, explicit)?
        };
        Ok(Principal {
            caller: Caller {
                user_id: u.id,
                org_id,
                is_superadmin: u.is_superadmin,
                role,
                scopes: None,
                key_id: None,
            },
            username: u.username.as_str().to_owned(),
            session_id: Some(sid),
            expires_at: claims.exp,
        })
    }

    /// The principal of an API key: `claimed` is who and where a key login's token says it
    /// acts (checked against the key); a key presented as such is read first.
    async fn key_principal(
        &self,
        kid: Uuid,
        org: Option<Uuid>,
        claimed: Option<&Claims>,
    ) -> Result<Principal, ApiError> {
        let (creator, key_org) = match claimed {
            Some(c) => (c.sub, c.org),
            None => {
                let key = self.access.key(kid).await.map_err(internal)?;
                match &*key {
                    ApiKey::Present(k) => (k.created_by, k.org_id),
                    ApiKey::Absent => {
                        return Err(ApiError::unauthorized("the API key is not valid"));
                    }
                }
            }
        };
        if org.is_some_and(|o| o != key_org) {
            return Err(ApiError::not_found("no such organization"));
        }
        let (key, user, organization) = self
            .access
            .key_access(kid, creator, key_org)
            .await
            .map_err(internal)?;
        let Some(k) = usable(&key, Utc::now()) else {
            return Err(ApiError::unauthorized(
                "the API key has been revoked or has expired",
            ));
        };
        if k.created_by != creator || k.org_id != key_org {
            return Err(ApiError::unauthorized("the access token is malformed"));
        }
        let u = may_log_in(&user)?;
        // A key acts with its scopes, within what its creator may do there now.
        let role = role_in(&organization, u.id, u.is_superadmin, false)?;
        let role = if u.is_superadmin {
            Some(Role::Owner)
        } else {
            role
        };
        let key_exp = k
            .expires_at
            .map(|e| u64::try_from(e.timestamp()).unwrap_or(0));
        Ok(Principal {
            caller: Caller {
                user_id: u.id,
                org_id: k.org_id,
                is_superadmin: false,
                role,
                scopes: Some(k.scopes.clone()),
                key_id: Some(kid),
            },
            username: u.username.as_str().to_owned(),
            session_id: None,
            expires_at: match (claimed.map(|c| c.exp), key_exp) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(u64::MAX),
            },
        })
    }

    /// Claims for a new session's or key's tokens.
    pub(crate) fn claims(user: &UserData, org: Uuid) -> Claims {
        Claims {
            sub: user.id,
            sid: None,
            kid: None,
            org,
            pwd: user.password_changes,
            generation: None,
            typ: String::new(),
            jti: Uuid::nil(),
            iat: 0,
            nbf: 0,
            exp: 0,
        }
    }
}

/// Who is calling: the holder of a valid access token or API key, acting in one organization.
/// Take it as a handler argument to require one. The rules that judge them are the domain's
/// ([`Caller`], which it dereferences to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller, as the rules see them.
    pub caller: Caller,
    /// Their username.
    pub username: String,
    /// The login session, for a user's token.
    pub session_id: Option<Uuid>,
    /// When their token or key expires, in seconds since the epoch (live connections close
    /// then).
    pub expires_at: u64,
}

impl std::ops::Deref for Principal {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl Principal {
    /// The organization they act in, if any.
    pub fn organization(&self) -> Option<Uuid> {
        (!self.org_id.is_nil()).then_some(self.org_id)
    }

    /// The name events record for them (the user's id, or `apikey:<id>` for a key).
    pub fn actor(&self) -> String {
        match self.key_id {
            Some(k) => format!("apikey:{k}"),
            None => self.user_id.to_string(),
        }
    }

    /// The credential events record for them: `apikey:<id>` for a key (or a key login's
    /// token), `session:<id>` for a person's login session.
    pub fn credential(&self) -> Option<String> {
        match (self.key_id, self.session_id) {
            (Some(k), _) => Some(format!("apikey:{k}")),
            (None, Some(s)) => Some(format!("session:{s}")),
            (None, None) => None,
        }
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

/// The API key of the request's `api-key` (or `X-API-Key`) header, if it has one.
pub fn api_key(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    for name in API_KEY_HEADERS {
        if let Some(value) = req.headers().get(name) {
            return value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::unauthorized("the API key header is empty or unreadable")
                });
        }
    }
    Ok(None)
}

/// The organization the request's `X-Organization-Id` header names, if it has one.
pub fn organization_header(req: &HttpRequest) -> Result<Option<Uuid>, ApiError> {
    let Some(value) = req.headers().get(ORGANIZATION_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| Uuid::try_parse(v.trim()).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request("the X-Organization-Id header must be an organization's id")
        })
}

/// What the request presents: a bearer token, else an API key.
pub fn presented(req: &HttpRequest) -> Result<Option<Presented<'_>>, ApiError> {
    if let Some(token) = bearer_token(req)? {
        return Ok(Some(Presented::Bearer(token)));
    }
    Ok(api_key(req)?.map(Presented::ApiKey))
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let Some(auth) = req.app_data::<actix_web::web::Data<AuthState>>() else {
                return Err(ApiError::bug(
                    "the authentication state is not registered in the application",
                ));
            };
            let org = organization_header(&req)?;
            let Some(presented) = presented(&req)? else {
                return Err(ApiError::unauthorized(
                    "an access token (Authorization: Bearer <token>) or an API key (api-key \
                     header) is required",
                ));
            };
            let principal = auth.principal(presented, org).await?;
            if principal.key_id.is_some()
                && req
                    .match_pattern()
                    .is_some_and(|p| person_only(req.method().as_str(), &p))
            {
                return Err(ApiError::forbidden(
                    "an API key cannot do this; log in as a user",
                ));
            }
            Ok(principal)
        })
    }
}
