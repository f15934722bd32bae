//! `GET /api/v1/stream`: the live feed as server-sent events.
//!
//! Each event is `id: <position>` and `data: <message>` (the WebSocket's message, unnamed so
//! `EventSource.onmessage` gets it), so a browser that reconnects sends `Last-Event-ID` and
//! resumes exactly after the last event it saw. Heartbeats are comments that also carry the
//! position the client has reached (an `id:` without data), so a reconnect after a quiet spell
//! does not rescan the log. A client that falls behind gets an `event: lagged` and the stream
//! ends; its `EventSource` reconnects by itself from there.

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_store::Position;
use serde_json::json;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::channels::Channel;
use super::feed::FeedEvent;
use super::hub::{ConnectionGuard, Hub};
use super::session::{Next, Session};
use super::{LiveQuery, Watch, principal_of, too_many_connections};
use crate::identity::auth::AuthState;
use crate::problem::ApiError;

/// Follows the live feed as `text/event-stream`.
#[utoipa::path(
    get, path = "/api/v1/stream", tag = "live", operation_id = "stream_live_events",
    params(
        LiveQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The last position received: resume after it (browsers send it when they reconnect)"),
    ),
    responses(
        (status = 200, description = "Server-sent events: `id:` the position, `data:` the message (`{type, event_type, event_id, stream, revision, position, occurred_at, data}`); `event: lagged` before the end when the client fell behind", content_type = "text/event-stream"),
        (status = 400, description = "A malformed channel or position", body = crate::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, bad or expired credentials", body = crate::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server holds its maximum of live connections", body = crate::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.live.sse", skip_all, fields(org = tracing::field::Empty))]
pub async fn stream(
    req: HttpRequest,
    hub: web::Data<Hub>,
    auth: web::Data<AuthState>,
    query: web::Query<LiveQuery>,
) -> Result<HttpResponse, ApiError> {
    let (principal, credential) = principal_of(&req, &query, &auth).await?.ok_or_else(|| {
        ApiError::unauthorized(
            "an access token is required (Authorization: Bearer <token>, or access_token=<token>)",
        )
    })?;
    tracing::Span::current().record("org", tracing::field::display(principal.org_id));
    let (mut channels, from) = query.parse()?;
    let last_event_id = match req.headers().get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<Position>().ok())
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "Last-Event-ID",
                        "must be a position \"<commit>-<prepare>\" as sent in `id:`",
                    )
                })?,
        ),
    };
    if channels.is_empty() {
        channels.push(Channel::All);
    }
    let settings = hub.settings().clone();
    let guard = hub
        .connect()
        .ok_or_else(|| too_many_connections(settings.max_connections))?;
    let mut session = Session::new(hub.get_ref().clone(), principal.org_id);
    // A reconnecting browser repeats the URL's from_position: Last-Event-ID is further on.
    session.start_after(last_event_id.or(from));
    session
        .subscribe(channels, None)
        .map_err(|e| ApiError::invalid_field("channels", e.to_string()))?;
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + settings.heartbeat, settings.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let expires = super::ws::instant_at(principal.expires_at);
    let feed = Feed {
        watch: Watch::new(auth.into_inner(), credential, &hub),
        principal,
        closing: Box::pin(hub.closing()),
        session,
        heartbeat,
        expires,
        started: false,
        done: false,
        pending: None,
        _guard: guard,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(feed.into_stream()))
}

struct Feed {
    /// Checks the credentials again when a revocation concerns them.
    watch: Watch,
    principal: crate::identity::auth::Principal,
    session: Session,
    closing: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    heartbeat: Interval,
    expires: Instant,
    started: bool,
    done: bool,
    /// What the last chunk stopped before.
    pending: Option<Next>,
    _guard: ConnectionGuard,
}

impl Feed {
    fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> {
        futures::stream::unfold(self, |mut feed| async move {
            let chunk = feed.next_chunk().await?;
            Some((Ok(chunk), feed))
        })
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some(Bytes::from_static(b": connected\nretry: 2000\n\n"));
        }
        let next = match self.pending.take() {
            Some(next) => next,
            None => tokio::select! {
                _ = &mut self.closing => return None,
                checked = self.watch.revoked(&self.principal) => match checked {
                    Ok(p) => {
                        self.principal = p;
                        return Some(Bytes::from_static(b": credentials checked\n\n"));
                    }
                    Err(e) => {
                        self.done = true;
                        let message = e.problem().detail.clone().unwrap_or_default();
                        let data = json!({"type": "error", "code": "UNAUTHORIZED", "message": message});
                        return Some(Bytes::from(format!("event: error\ndata: {data}\n\n")));
                    }
                },
                next = self.session.next() => next,
                _ = self.heartbeat.tick() => return Some(Bytes::from(match self.session.position() {
                    Some(p) => format!(": heartbeat\nid: {p}\n\n"),
                    None => ": heartbeat\n\n".to_owned(),
                })),
                _ = tokio::time::sleep_until(self.expires) => {
                    self.done = true;
                    let data = json!({"type": "error", "code": "TOKEN_EXPIRED", "message": "the access token has expired; reconnect with a new one"});
                    return Some(Bytes::from(format!("event: error\ndata: {data}\n\n")));
                }
            },
        };
        match next {
            Next::Event(event) => {
                let mut chunk = Vec::new();
                push_event(&mut chunk, &event);
                // What else is waiting now goes in the same chunk.
                for _ in 0..BURST {
                    match self.session.try_next() {
                        Some(Next::Event(event)) => push_event(&mut chunk, &event),
                        // The end goes in the next chunk.
                        Some(other) => {
                            self.pending = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                Some(Bytes::from(chunk))
            }
            Next::Lagged(position) => {
                self.done = true;
                let data = json!({"type": "lagged", "position": position});
                Some(Bytes::from(format!(
                    "id: {position}\nevent: lagged\ndata: {data}\n\n"
                )))
            }
            Next::Failed(e) => {
                tracing::warn!(error = %e, "live: reading the log failed");
                self.done = true;
                let data = json!({"type": "error", "code": "SERVICE_UNAVAILABLE", "message": "the event log cannot be read now; reconnect"});
                Some(Bytes::from(format!("event: error\ndata: {data}\n\n")))
            }
            Next::Stopped => None,
        }
    }
}

/// Events sent in one chunk at most.
const BURST: usize = 64;

/// Appends an event as `id: <position>` and `data: <message>`.
fn push_event(chunk: &mut Vec<u8>, event: &FeedEvent) {
    chunk.extend_from_slice(b"id: ");
    chunk.extend_from_slice(event.position().to_string().as_bytes());
    chunk.extend_from_slice(b"\ndata: ");
    chunk.extend_from_slice(event.json().as_bytes());
    chunk.extend_from_slice(b"\n\n");
}
