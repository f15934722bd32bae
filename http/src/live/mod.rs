//! The live feed: the event log pushed to clients, over WebSocket (`GET /ws`) and server-sent
//! events (`GET /api/v1/stream`).
//!
//! One subscription to `$all` inside the server ([`hub::Hub`]) fans out to every client; each
//! client receives only its organization's events on the channels it subscribed to
//! ([`channels`]), as `{type:"<resource>:<verb>", event_type, event_id, stream, revision,
//! position, occurred_at, data}`. A client that gives a position (`from_position`, or SSE's
//! `Last-Event-ID`) first gets every event after it from the log, then live ones, with no gap and
//! no duplicate ([`session`]).
//!
//! WebSocket protocol (JSON text messages):
//!
//! | client → server | server → client |
//! |---|---|
//! | `{type:"auth", token}` (when the token was not in the `Authorization` header or the `access_token` parameter) | `{type:"connected", user_id, organization_id, position, heartbeat_secs}` |
//! | `{type:"subscribe", channels:[…] \| channel \| <resource>_id, from_position?}` | `{type:"subscribed", channels, from_position}` |
//! | `{type:"unsubscribe", channels:[…] \| channel \| <resource>_id}` | `{type:"unsubscribed", channels}` |
//! | `{type:"ping", timestamp?}` | `{type:"pong", timestamp, server_time}` |
//! | | events; `{type:"heartbeat", position, server_time}` every 30 s |
//! | anything else | `{type:"error", code, message}`; the connection stays |
//!
//! Closes: 4401 missing, bad or expired credentials; 4008 the client fell behind its queue
//! (after `{type:"lagged", position}`: reconnect with `from_position` = that position); 1009 a
//! message over the size limit; 1011 the log could not be read; 1001 the server is stopping or
//! the client stopped answering pings.

pub mod channels;
pub mod feed;
pub mod frames;
pub mod hub;
pub mod log_socket;
pub mod session;
pub mod sse;
pub mod ws;

use std::time::Duration;

use actix_web::{HttpRequest, web};
use atelier_store::Position;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::identity::auth::{AuthState, Presented, Principal};
use crate::problem::{ApiError, FieldError};
use channels::Channel;

/// Settings of the live feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSettings {
    /// Messages a client's queue holds before it is cut off as lagged.
    pub queue: usize,
    /// How often the server sends a heartbeat (and a WebSocket ping).
    pub heartbeat: Duration,
    /// A WebSocket client silent this long (no message, no pong) is closed as gone.
    pub client_timeout: Duration,
    /// How long a WebSocket client has to authenticate after connecting.
    pub auth_timeout: Duration,
    /// How long one message may take to leave before the client is dropped.
    pub send_timeout: Duration,
    /// Live connections (WebSocket and SSE) the server holds at most.
    pub max_connections: usize,
    /// The largest message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Channels per connection at most.
    pub max_channels: usize,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            queue: 1000,
            heartbeat: Duration::from_secs(30),
            client_timeout: Duration::from_secs(90),
            auth_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_message_bytes: 64 * 1024,
            max_channels: 100,
        }
    }
}

/// The query parameters of `/ws` and `/api/v1/stream`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// Channels to subscribe to at once, comma-separated (`project:<id>,category:build`). For
    /// SSE, none means `*` (every event of the organization).
    pub channels: Option<String>,
    /// Send every event after this position first (`<commit>-<prepare>`, as in `Atelier-Position`
    /// and each message's `position`), then live ones.
    pub from_position: Option<String>,
    /// The access token, for clients that cannot set headers (browsers' WebSocket and
    /// EventSource). Prefer the `Authorization` header.
    pub access_token: Option<String>,
    /// The organization to follow, for clients that cannot set `X-Organization-Id`.
    pub organization_id: Option<String>,
}

impl LiveQuery {
    /// The channels and position it names, or a 400 naming what is wrong.
    pub fn parse(&self) -> Result<(Vec<Channel>, Option<Position>), ApiError> {
        let mut errors = Vec::new();
        let mut channels = Vec::new();
        for name in self
            .channels
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.trim().is_empty())
        {
            match Channel::parse(name) {
                Ok(c) => channels.push(c),
                Err(e) => errors.push(FieldError {
                    field: "channels".into(),
                    message: e.to_string(),
                }),
            }
        }
        let from = match self.from_position.as_deref() {
            None | Some("") => None,
            Some(p) => match p.parse::<Position>() {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(FieldError {
                        field: "from_position".into(),
                        message: e.to_string(),
                    });
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok((channels, from))
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

/// The token a request carries: `Authorization: Bearer …`, else the `access_token` parameter.
/// A malformed `Authorization` header is an error, not an absent token.
fn token_of<'a>(req: &'a HttpRequest, query: &'a LiveQuery) -> Result<Option<&'a str>, ApiError> {
    match crate::identity::auth::bearer_token(req)? {
        Some(token) => Ok(Some(token)),
        None => Ok(query.access_token.as_deref().filter(|t| !t.is_empty())),
    }
}

/// The organization the request names: `X-Organization-Id`, else `organization_id=`.
fn organization_of(req: &HttpRequest, query: &LiveQuery) -> Result<Option<uuid::Uuid>, ApiError> {
    if let Some(org) = crate::identity::auth::organization_header(req)? {
        return Ok(Some(org));
    }
    query
        .organization_id
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            uuid::Uuid::try_parse(o).map_err(|_| {
                ApiError::invalid_field("organization_id", "must be an organization's id")
            })
        })
        .transpose()
}

/// The credentials a live connection was opened with, kept to check them again when a
/// revocation concerns it. Never shown.
#[derive(Clone)]
pub(crate) enum Credential {
    /// An access token.
    Bearer(String),
    /// An API key.
    ApiKey(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Bearer(_) => "Bearer(<redacted>)",
            Credential::ApiKey(_) => "ApiKey(<redacted>)",
        })
    }
}

impl Credential {
    fn presented(&self) -> Presented<'_> {
        match self {
            Credential::Bearer(t) => Presented::Bearer(t),
            Credential::ApiKey(k) => Presented::ApiKey(k),
        }
    }
}

/// Who the request's credentials (a token, else an API key) belong to, if it carries any.
async fn principal_of(
    req: &HttpRequest,
    query: &LiveQuery,
    auth: &AuthState,
) -> Result<Option<(Principal, Credential)>, ApiError> {
    let org = organization_of(req, query)?;
    let credential = match token_of(req, query)? {
        Some(token) => Credential::Bearer(token.to_owned()),
        None => match crate::identity::auth::api_key(req)? {
            Some(key) => Credential::ApiKey(key.to_owned()),
            None => return Ok(None),
        },
    };
    let principal = auth.principal(credential.presented(), org).await?;
    Ok(Some((principal, credential)))
}

/// Keeps a live connection's credentials honest: when the log shows a revocation that concerns
/// it (its session ended, its key was revoked, its user or organization changed), or when it
/// may have missed one, it checks them again, as the next request would.
pub(crate) struct Watch {
    auth: std::sync::Arc<AuthState>,
    credential: Credential,
    revocations: tokio::sync::watch::Receiver<hub::Revocations>,
    seen: u64,
    /// A check was interrupted (its future dropped): do it before waiting again.
    unfinished: bool,
}

impl Watch {
    pub(crate) fn new(
        auth: std::sync::Arc<AuthState>,
        credential: Credential,
        hub: &hub::Hub,
    ) -> Self {
        let mut revocations = hub.revocations();
        let seen = revocations.borrow_and_update().seq;
        Self {
            auth,
            credential,
            revocations,
            seen,
            unfinished: false,
        }
    }

    /// Replaces the credentials (a client sent a new token).
    pub(crate) fn renew(&mut self, credential: Credential) {
        self.credential = credential;
    }

    /// Waits for a revocation that concerns `principal`, then checks the credentials again:
    /// who they are now (their role may have changed), or why they no longer hold. Cancel-safe.
    pub(crate) async fn revoked(&mut self, principal: &Principal) -> Result<Principal, ApiError> {
        loop {
            if !self.unfinished {
                if self.revocations.changed().await.is_err() {
                    // The hub is gone: so is the server.
                    std::future::pending::<()>().await;
                }
                let r = *self.revocations.borrow_and_update();
                let missed = r.seq > self.seen + 1;
                self.seen = r.seq;
                let concerned = r.last.is_some_and(|revoked| match revoked {
                    hub::Revoked::Session(id) => principal.session_id == Some(id),
                    hub::Revoked::Key(id) => principal.key_id == Some(id),
                    hub::Revoked::User(id) => principal.user_id == id,
                    hub::Revoked::Organization(id) => principal.org_id == id,
                });
                if !missed && !concerned {
                    continue;
                }
            }
            self.unfinished = true;
            let checked = self
                .auth
                .principal(self.credential.presented(), Some(principal.org_id))
                .await;
            self.unfinished = false;
            return checked;
        }
    }
}

/// The channels as the session keys them: a resource a context knows by another name than its
/// id (GestVenv's environment names) is named by its id.
pub(crate) async fn resolve_aliases(
    state: &web::Data<crate::state::AppState>,
    org: uuid::Uuid,
    channels: Vec<Channel>,
) -> Vec<Channel> {
    let mut out = Vec::with_capacity(channels.len());
    for channel in channels {
        match channel {
            Channel::Resource { category, id } => {
                let lookup = crate::contexts::ALL
                    .iter()
                    .find_map(|c| (c.live_alias)(state.clone(), org, &category, &id));
                let resolved = match lookup {
                    Some(lookup) => lookup.await,
                    None => None,
                };
                out.push(Channel::Resource {
                    category,
                    id: resolved.unwrap_or(id),
                });
            }
            other => out.push(other),
        }
    }
    out
}

/// The 503 answered when the server holds as many live connections as it may.
fn too_many_connections(max: usize) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "TOO_MANY_CONNECTIONS",
        format!("the server holds its maximum of {max} live connections; retry later"),
    )
}

/// Registers `GET /ws` (at the application's root).
pub fn configure_ws(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/ws").route(web::get().to(ws::connect)));
}

/// Registers `GET /stream` (inside `/api/v1`).
pub fn configure_sse(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/stream").route(web::get().to(sse::stream)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_channels_and_position_are_read_and_every_bad_one_is_named() {
        let q = LiveQuery {
            channels: Some("project:1, category:build,,".into()),
            from_position: Some("12-3".into()),
            access_token: None,
            organization_id: None,
        };
        let (channels, from) = q.parse().unwrap();
        assert_eq!(channels.len(), 2);
        assert_eq!(from, Some(Position::new(12, 3)));
        let q = LiveQuery {
            channels: Some("Bad Channel".into()),
            from_position: Some("x".into()),
            access_token: None,
            organization_id: None,
        };
        let e = q.parse().unwrap_err();
        let fields: Vec<_> = e.problem().errors.iter().map(|f| f.field.clone()).collect();
        assert_eq!(fields, ["channels", "from_position"]);
    }
}
