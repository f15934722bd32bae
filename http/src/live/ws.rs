//! `GET /ws`: the live feed over WebSocket (see the protocol in [`super`]).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};
use atelier_store::Position;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};
use uuid::Uuid;

use super::channels::Channel;
use super::hub::{ConnectionGuard, Hub};
use super::session::{Next, Session};
use super::{Credential, LiveQuery, Watch, principal_of, too_many_connections};
use crate::identity::auth::{AuthState, Presented, Principal};
use crate::problem::ApiError;

/// Closed for missing, bad or expired credentials.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Closed because the client fell behind its queue.
pub const CLOSE_LAGGED: u16 = 4008;

/// Opens a live WebSocket. Credentials in the `Authorization` header or the `access_token`
/// parameter are checked before the upgrade (401 when bad); without either, the first message
/// must be `{type:"auth", token}`.
#[utoipa::path(
    get, path = "/ws", tag = "live", operation_id = "connect_live_websocket",
    params(LiveQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; messages as described in the live feed's documentation"),
        (status = 400, description = "Not a WebSocket upgrade, or a malformed channel or position", body = crate::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Bad or expired credentials", body = crate::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The organization is deactivated", body = crate::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`organization_id` (or `X-Organization-Id`) names no organization of the caller's", body = crate::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server holds its maximum of live connections", body = crate::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "http.live.ws", skip_all)]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    hub: web::Data<Hub>,
    auth: web::Data<AuthState>,
    state: web::Data<crate::state::AppState>,
    query: web::Query<LiveQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal_of(&req, &query, &auth).await?;
    let org = super::organization_of(&req, &query)?;
    let (channels, from) = query.parse()?;
    let settings = hub.settings().clone();
    let guard = hub
        .connect()
        .ok_or_else(|| too_many_connections(settings.max_connections))?;
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        ApiError::bad_request(format!(
            "GET /ws must be a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket): {e}"
        ))
    })?;
    let stream = stream
        .max_frame_size(settings.max_message_bytes)
        .aggregate_continuations()
        .max_continuation_size(settings.max_message_bytes);
    let connection = Connection {
        ws: session,
        stream,
        hub: hub.get_ref().clone(),
        auth: auth.into_inner(),
        state,
        org,
        _guard: guard,
    };
    let span = tracing::info_span!(
        "live.ws.connection",
        user = principal
            .as_ref()
            .map(|(p, _)| tracing::field::display(p.user_id)),
        org = principal
            .as_ref()
            .map(|(p, _)| tracing::field::display(p.org_id)),
    );
    actix_web::rt::spawn(tracing::Instrument::instrument(
        connection.run(principal, channels, from),
        span,
    ));
    Ok(response)
}

/// Why a connection ends.
enum End {
    /// The client closed or vanished: nothing more to send.
    Gone,
    /// Close with this code and reason.
    Close(u16, String),
}

struct Connection {
    ws: actix_ws::Session,
    stream: AggregatedMessageStream,
    hub: Hub,
    auth: std::sync::Arc<AuthState>,
    /// The contexts' state, for their live commands and aliases.
    state: web::Data<crate::state::AppState>,
    /// The organization the upgrade request named, for a first-message authentication.
    org: Option<uuid::Uuid>,
    _guard: ConnectionGuard,
}

/// What a client asked for.
#[derive(Debug, PartialEq)]
enum Request {
    Auth(String),
    Subscribe(Vec<Channel>, Option<Position>),
    Unsubscribe(Vec<Channel>),
    Ping(Option<Value>),
    /// A context's command (`contexts::live_command`).
    Command(String, serde_json::Map<String, Value>),
}

/// A message the server refuses, with the connection kept.
#[derive(Debug, PartialEq)]
struct Refused {
    code: &'static str,
    message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// Reads a client's message.
fn parse(text: &str) -> Result<Request, Refused> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| refused("MALFORMED_MESSAGE", format!("not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(refused(
            "MALFORMED_MESSAGE",
            "a message must be a JSON object with a `type`",
        ));
    };
    let Some(Value::String(kind)) = fields.get("type") else {
        return Err(refused(
            "MALFORMED_MESSAGE",
            "a message must have a string `type`",
        ));
    };
    let kind = kind.clone();
    match kind.as_str() {
        "auth" => match fields.get("token") {
            Some(Value::String(t)) if !t.is_empty() => Ok(Request::Auth(t.clone())),
            _ => Err(refused(
                "MALFORMED_MESSAGE",
                "`auth` needs a string `token`",
            )),
        },
        "subscribe" => {
            let from = match fields.get("from_position") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) => Some(
                    p.parse::<Position>()
                        .map_err(|e| refused("INVALID_POSITION", e.to_string()))?,
                ),
                Some(_) => {
                    return Err(refused(
                        "INVALID_POSITION",
                        "`from_position` must be a string \"<commit>-<prepare>\"",
                    ));
                }
            };
            Ok(Request::Subscribe(channels_of(&fields)?, from))
        }
        "unsubscribe" => Ok(Request::Unsubscribe(channels_of(&fields)?)),
        "ping" => Ok(Request::Ping(fields.get("timestamp").cloned())),
        other if crate::contexts::live_command(other).is_some() => {
            Ok(Request::Command(kind.clone(), fields))
        }
        other => Err(refused(
            "UNKNOWN_MESSAGE_TYPE",
            format!(
                "unknown message type {other:?}: expected auth, subscribe, unsubscribe, ping \
                 or a context's command (environment:refresh, package:install)"
            ),
        )),
    }
}

/// The channels a subscribe or unsubscribe names: `channels: [...]`, `channel: "..."`, and
/// `<resource>_id: "..."` fields (GestVenv's `environment_id`).
fn channels_of(fields: &serde_json::Map<String, Value>) -> Result<Vec<Channel>, Refused> {
    let invalid = |e: super::channels::InvalidChannel| refused("INVALID_CHANNEL", e.to_string());
    let mut channels = Vec::new();
    match fields.get("channels") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let Value::String(name) = item else {
                    return Err(refused(
                        "INVALID_CHANNEL",
                        "`channels` must be an array of strings",
                    ));
                };
                channels.push(Channel::parse(name).map_err(invalid)?);
            }
        }
        Some(_) => {
            return Err(refused(
                "INVALID_CHANNEL",
                "`channels` must be an array of strings",
            ));
        }
    }
    match fields.get("channel") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => channels.push(Channel::parse(name).map_err(invalid)?),
        Some(_) => return Err(refused("INVALID_CHANNEL", "`channel` must be a string")),
    }
    for (key, value) in fields {
        let Some(category) = key.strip_suffix("_id") else {
            continue;
        };
        let id = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(refused(
                    "INVALID_CHANNEL",
                    format!("`{key}` must be a string or a number"),
                ));
            }
        };
        channels.push(Channel::parse(&format!("{category}:{id}")).map_err(invalid)?);
    }
    if channels.is_empty() {
        return Err(refused(
            "INVALID_CHANNEL",
            "name the channels: `channels: [...]`, `channel` or a `<resource>_id`",
        ));
    }
    Ok(channels)
}

fn error_message(code: &str, message: &str) -> String {
    json!({"type": "error", "code": code, "message": message}).to_string()
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Seconds since the epoch → the instant it will be.
pub(crate) fn instant_at(unix_secs: u64) -> Instant {
    let now = jsonwebtoken::get_current_timestamp();
    // A key that never expires says `u64::MAX`: a year is as good as never here.
    let left = Duration::from_secs(unix_secs.saturating_sub(now).min(365 * 24 * 3600));
    Instant::now() + left
}

impl Connection {
    async fn run(
        mut self,
        principal: Option<(Principal, Credential)>,
        channels: Vec<Channel>,
        from: Option<Position>,
    ) {
        let end = match principal {
            Some(p) => self.serve(p, channels, from).await,
            None => match self.authenticate().await {
                Ok(p) => self.serve(p, channels, from).await,
                Err(end) => end,
            },
        };
        if let End::Close(code, reason) = end {
            let _ = self
                .ws
                .close(Some(CloseReason {
                    code: CloseCode::Other(code),
                    description: Some(reason),
                }))
                .await;
        }
    }

    async fn send(&mut self, text: impl Into<bytestring::ByteString>) -> Result<(), End> {
        let send_timeout = self.hub.settings().send_timeout;
        within(send_timeout, self.send_unbounded(text)).await
    }

    /// Sends with no time limit: for callers that bound a whole burst at once.
    async fn send_unbounded(&mut self, text: impl Into<bytestring::ByteString>) -> Result<(), End> {
        self.ws.text(text).await.map_err(|_| End::Gone)
    }

    /// Waits for `{type:"auth", token}` as the first message.
    async fn authenticate(&mut self) -> Result<(Principal, Credential), End> {
        let deadline = tokio::time::sleep(self.hub.settings().auth_timeout);
        tokio::pin!(deadline);
        loop {
            let message = tokio::select! {
                _ = &mut deadline => {
                    return Err(End::Close(CLOSE_UNAUTHORIZED, "authentication required: send {\"type\":\"auth\",\"token\":…} first".into()));
                }
                m = self.stream.recv() => m,
            };
            match message {
                None | Some(Ok(AggregatedMessage::Close(_))) => return Err(End::Gone),
                Some(Err(e)) => return Err(protocol_end(&e)),
                Some(Ok(AggregatedMessage::Ping(b))) => {
                    let _ = self.ws.pong(&b).await;
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Ok(AggregatedMessage::Binary(_))) => {
                    return Err(End::Close(
                        CLOSE_UNAUTHORIZED,
                        "authentication required first".into(),
                    ));
                }
                Some(Ok(AggregatedMessage::Text(text))) => {
                    return match parse(&text) {
                        Ok(Request::Auth(token)) => match self.auth.principal(Presented::Bearer(&token), self.org).await {
                            Ok(p) => Ok((p, Credential::Bearer(token))),
                            Err(e) => Err(End::Close(CLOSE_UNAUTHORIZED, e.problem().detail.clone().unwrap_or_default())),
                        },
                        _ => Err(End::Close(
                            CLOSE_UNAUTHORIZED,
                            "authentication required: the first message must be {\"type\":\"auth\",\"token\":…}".into(),
                        )),
                    };
                }
            }
        }
    }

    async fn serve(
        &mut self,
        principal: (Principal, Credential),
        channels: Vec<Channel>,
        from: Option<Position>,
    ) -> End {
        match self.serve_inner(principal, channels, from).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn serve_inner(
        &mut self,
        (mut principal, credential): (Principal, Credential),
        channels: Vec<Channel>,
        from: Option<Position>,
    ) -> Result<std::convert::Infallible, End> {
        let settings = self.hub.settings().clone();
        let mut watch = Watch::new(self.auth.clone(), credential, &self.hub);
        let mut session = Session::new(self.hub.clone(), principal.org_id);
        session.start_after(from);
        let mut frames = self.hub.frames().watcher(principal.org_id);
        let channels = super::resolve_aliases(&self.state, principal.org_id, channels).await;
        if !channels.is_empty()
            && let Err(e) = session.subscribe(channels, None)
        {
            return Err(End::Close(1008, e.to_string()));
        }
        frames.set(watched_cameras(session.channels()));
        self.send(
            json!({
                "type": "connected",
                "user_id": principal.user_id,
                "organization_id": principal.org_id,
                "position": self.hub.position(),
                "channels": session.channels().names(),
                "heartbeat_secs": settings.heartbeat.as_secs(),
            })
            .to_string(),
        )
        .await?;
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + settings.heartbeat, settings.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let expiry = tokio::time::sleep_until(instant_at(principal.expires_at));
        tokio::pin!(expiry);
        let mut last_heard = Instant::now();
        let closing = self.hub.closing();
        tokio::pin!(closing);
        loop {
            tokio::select! {
                _ = &mut closing => return Err(End::Close(1001, "the server is stopping".into())),
                checked = watch.revoked(&principal) => match checked {
                    // Still allowed (perhaps with another role).
                    Ok(p) => principal = p,
                    Err(e) => return Err(End::Close(CLOSE_UNAUTHORIZED, e.problem().detail.clone().unwrap_or_default())),
                },
                message = self.stream.recv() => {
                    last_heard = Instant::now();
                    match message {
                        None => return Err(End::Gone),
                        Some(Err(e)) => return Err(protocol_end(&e)),
                        Some(Ok(AggregatedMessage::Close(_))) => return Err(End::Close(1000, String::new())),
                        Some(Ok(AggregatedMessage::Ping(b))) => {
                            if self.ws.pong(&b).await.is_err() {
                                return Err(End::Gone);
                            }
                        }
                        Some(Ok(AggregatedMessage::Pong(_))) => {}
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            self.send(error_message("UNSUPPORTED_MESSAGE", "messages are JSON text, not binary")).await?;
                        }
                        Some(Ok(AggregatedMessage::Text(text))) => {
                            let reply = match parse(&text) {
                                Err(r) => error_message(r.code, &r.message),
                                Ok(Request::Ping(timestamp)) => json!({"type": "pong", "timestamp": timestamp, "server_time": now()}).to_string(),
                                Ok(Request::Subscribe(channels, from)) => {
                                    let channels = super::resolve_aliases(&self.state, principal.org_id, channels).await;
                                    let subscribed = session.subscribe(channels, from);
                                    frames.set(watched_cameras(session.channels()));
                                    match subscribed {
                                        Ok(()) => json!({"type": "subscribed", "channels": session.channels().names(), "from_position": from}).to_string(),
                                        Err(e) => error_message("TOO_MANY_CHANNELS", &e.to_string()),
                                    }
                                }
                                Ok(Request::Command(kind, fields)) => match crate::contexts::live_command(&kind) {
                                    Some(command) => match (command.run)(self.state.clone(), principal.clone(), fields).await {
                                        Ok(answer) => answer.to_string(),
                                        Err(e) => error_message(&e.problem().code, &e.problem().detail.clone().unwrap_or_default()),
                                    },
                                    None => error_message("UNKNOWN_MESSAGE_TYPE", "unknown command"),
                                },
                                Ok(Request::Unsubscribe(channels)) => {
                                    let channels = super::resolve_aliases(&self.state, principal.org_id, channels).await;
                                    session.unsubscribe(&channels);
                                    frames.set(watched_cameras(session.channels()));
                                    json!({"type": "unsubscribed", "channels": session.channels().names()}).to_string()
                                }
                                Ok(Request::Auth(token)) => match self.auth.principal(Presented::Bearer(&token), Some(principal.org_id)).await {
                                    Ok(p) if p.user_id == principal.user_id && p.org_id == principal.org_id => {
                                        expiry.as_mut().reset(instant_at(p.expires_at));
                                        principal = p;
                                        watch.renew(Credential::Bearer(token));
                                        json!({"type": "authenticated", "expires_at": principal.expires_at}).to_string()
                                    }
                                    Ok(_) => error_message("FORBIDDEN", "a connection cannot change its user or organization; open a new one"),
                                    Err(e) => error_message("UNAUTHORIZED", &e.problem().detail.clone().unwrap_or_default()),
                                },
                            };
                            self.send(reply).await?;
                        }
                    }
                }
                frame = frames.recv() => self.send(frame).await?,
                next = session.next() => self.deliver_burst(next, &mut session).await?,
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > settings.client_timeout {
                        return Err(End::Close(1001, "no answer to pings".into()));
                    }
                    if self.ws.ping(b"").await.is_err() {
                        return Err(End::Gone);
                    }
                    let position = session.position();
                    self.send(json!({"type": "heartbeat", "position": position, "server_time": now()}).to_string()).await?;
                }
                _ = &mut expiry => {
                    self.send(error_message("TOKEN_EXPIRED", "the access token has expired; reconnect with a new one")).await?;
                    return Err(End::Close(CLOSE_UNAUTHORIZED, "the access token has expired".into()));
                }
            }
        }
    }
}

/// The cameras whose thumbnails a client's channels ask for: those it names one by one.
fn watched_cameras(channels: &super::channels::Channels) -> std::collections::BTreeSet<Uuid> {
    channels
        .resources("camera")
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect()
}

/// Events sent in a row from a client's queue before it listens to the client again.
const BURST: usize = 64;

/// `send` within `limit`: a client that does not read for that long is dropped.
async fn within(
    limit: Duration,
    send: impl std::future::Future<Output = Result<(), End>>,
) -> Result<(), End> {
    match tokio::time::timeout(limit, send).await {
        Ok(sent) => sent,
        Err(_) => {
            tracing::info!("live: a client did not read for the send timeout; dropping it");
            Err(End::Gone)
        }
    }
}

impl Connection {
    /// Sends `first` and what else the session has ready now (up to [`BURST`]), in one go: the
    /// frames leave together, under one send timeout rather than one timer per message.
    async fn deliver_burst(&mut self, first: Next, session: &mut Session) -> Result<(), End> {
        let send_timeout = self.hub.settings().send_timeout;
        within(send_timeout, async {
            self.deliver(first).await?;
            for _ in 0..BURST {
                match session.try_next() {
                    Some(next) => self.deliver(next).await?,
                    None => break,
                }
            }
            Ok(())
        })
        .await
    }

    /// Sends what the session says next; the end of the connection for anything but an event.
    async fn deliver(&mut self, next: Next) -> Result<(), End> {
        match next {
            Next::Event(event) => self.send_unbounded(event.json().clone()).await,
            Next::Lagged(position) => {
                self.send_unbounded(json!({"type": "lagged", "position": position}).to_string())
                    .await?;
                Err(End::Close(
                    CLOSE_LAGGED,
                    format!("too slow: resume from {position}"),
                ))
            }
            Next::Failed(e) => {
                tracing::warn!(error = %e, "live: reading the log failed");
                self.send_unbounded(error_message(
                    "SERVICE_UNAVAILABLE",
                    "the event log cannot be read now; reconnect with from_position",
                ))
                .await?;
                Err(End::Close(1011, "the event log cannot be read now".into()))
            }
            Next::Stopped => Err(End::Close(1001, "the server is stopping".into())),
        }
    }
}

fn protocol_end(e: &ProtocolError) -> End {
    match e {
        ProtocolError::Overflow => End::Close(1009, "message too large".into()),
        _ => End::Close(1002, "protocol error".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_subscription_forms_and_ours_name_the_same_channels() {
        let ours = parse(r#"{"type":"subscribe","channels":["environment:e1"]}"#).unwrap();
        let gestvenv = parse(r#"{"type":"subscribe","environment_id":"e1"}"#).unwrap();
        let single = parse(r#"{"type":"subscribe","channel":"environment:e1"}"#).unwrap();
        assert_eq!(ours, gestvenv);
        assert_eq!(ours, single);
        let sentinel = parse(r#"{"type":"subscribe","channels":["camera_1","events"]}"#).unwrap();
        assert_eq!(
            sentinel,
            Request::Subscribe(
                vec![
                    Channel::parse("camera:1").unwrap(),
                    Channel::parse("category:detection").unwrap()
                ],
                None
            )
        );
    }

    #[test]
    fn bad_messages_are_refused_with_a_stable_code() {
        let code = |text: &str| parse(text).unwrap_err().code;
        assert_eq!(code("{"), "MALFORMED_MESSAGE");
        assert_eq!(code("[1]"), "MALFORMED_MESSAGE");
        assert_eq!(code(r#"{"kind":"ping"}"#), "MALFORMED_MESSAGE");
        assert_eq!(code(r#"{"type":"camera:start"}"#), "UNKNOWN_MESSAGE_TYPE");
        // A context's command parses; its handler judges its fields.
        assert!(matches!(
            parse(r#"{"type":"environment:refresh"}"#),
            Ok(Request::Command(kind, _)) if kind == "environment:refresh"
        ));
        assert_eq!(code(r#"{"type":"subscribe"}"#), "INVALID_CHANNEL");
        assert_eq!(
            code(r#"{"type":"subscribe","channels":"x"}"#),
            "INVALID_CHANNEL"
        );
        assert_eq!(
            code(r#"{"type":"subscribe","channels":["A B"]}"#),
            "INVALID_CHANNEL"
        );
        assert_eq!(
            code(r#"{"type":"subscribe","channels":["*"],"from_position":"12"}"#),
            "INVALID_POSITION"
        );
        assert_eq!(code(r#"{"type":"auth"}"#), "MALFORMED_MESSAGE");
    }

    #[test]
    fn a_ping_echoes_its_timestamp() {
        assert_eq!(
            parse(r#"{"type":"ping","timestamp":1234567890}"#).unwrap(),
            Request::Ping(Some(json!(1234567890)))
        );
    }
}
