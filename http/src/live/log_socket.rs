//! A followed output log over WebSocket (WindFlow's `/deployments/{id}/logs` socket): the
//! same [`Follower`] as the server-sent form, one JSON message per line.
//!
//! | server → client | when |
//! |---|---|
//! | `{type:"log", data:{seq, stream, line, at}}` | each line, in order |
//! | `{type:"status", data:{status, …}}` | at first, then each time the owner moves |
//! | `{type:"end", data:{status, …, next_offset}}` | the owner settled; then a close with 1000 |
//!
//! Closes: 4003 the owner is not the caller's (or does not exist: the two are not told apart);
//! 4401 the credentials expired or were revoked; 1001 the server is stopping; 1011 the log could
//! not be read. Credentials are checked before the upgrade (401), as for `GET /ws`. The client
//! sends nothing but pings (answered) and its close; text it sends is ignored.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use super::hub::Hub;
use super::ws::{CLOSE_UNAUTHORIZED, instant_at};
use super::{Credential, LiveQuery, Watch, principal_of, too_many_connections};
use crate::identity::auth::{AuthState, Principal};
use crate::logs::{Followed, Follower};
use crate::problem::ApiError;

/// Closed because the log's owner is not the caller's to read (WindFlow's "Permission denied").
pub const CLOSE_FORBIDDEN: u16 = 4003;

/// Query parameters of a log socket.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogSocketQuery {
    /// The first line to send, from 0.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// The access token, for clients that cannot set headers (browsers' WebSocket).
    pub access_token: Option<String>,
    /// The organization to act in, for clients that cannot set `X-Organization-Id`.
    pub organization_id: Option<String>,
}

/// Whether a request asks for a WebSocket (`Upgrade: websocket`): the guard that sends a log's
/// `GET` to its socket form.
pub fn is_upgrade(ctx: &actix_web::guard::GuardContext<'_>) -> bool {
    ctx.head()
        .headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Who opens the socket: their credentials as for `GET /ws`, but required before the upgrade.
pub(crate) async fn caller(
    req: &HttpRequest,
    query: &LogSocketQuery,
    auth: &AuthState,
) -> Result<(Principal, Credential), ApiError> {
    let live = LiveQuery {
        channels: None,
        from_position: None,
        access_token: query.access_token.clone(),
        organization_id: query.organization_id.clone(),
    };
    principal_of(req, &live, auth).await?.ok_or_else(|| {
        ApiError::unauthorized(
            "a log socket needs credentials: `Authorization: Bearer …`, `X-API-Key`, or `access_token=`",
        )
    })
}

/// Upgrades to a WebSocket and sends the log `follower` follows (`None`: the owner is not the
/// caller's, and the socket closes with 4003 at once).
pub(crate) fn open(
    req: &HttpRequest,
    body: web::Payload,
    hub: &Hub,
    auth: Arc<AuthState>,
    caller: (Principal, Credential),
    follower: Option<Follower>,
) -> Result<HttpResponse, ApiError> {
    let guard = hub
        .connect()
        .ok_or_else(|| too_many_connections(hub.settings().max_connections))?;
    let (response, session, stream) = actix_ws::handle(req, body).map_err(|e| {
        ApiError::bad_request(format!(
            "a log socket must be a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket): {e}"
        ))
    })?;
    let (principal, credential) = caller;
    let watch = Watch::new(auth, credential, hub);
    let hub = hub.clone();
    let span =
        tracing::info_span!("live.log_socket", user = %principal.user_id, org = %principal.org_id);
    actix_web::rt::spawn(tracing::Instrument::instrument(
        async move {
            let _guard = guard;
            let (code, reason) = match follower {
                None => (CLOSE_FORBIDDEN, "Permission denied".to_owned()),
                Some(f) => serve(session.clone(), stream, f, &hub, watch, principal).await,
            };
            let _ = session
                .close(Some(CloseReason {
                    code: CloseCode::Other(code),
                    description: Some(reason),
                }))
                .await;
        },
        span,
    ));
    Ok(response)
}

/// Sends the log until it ends, the client leaves or the credentials stop holding; the close
/// code and reason.
async fn serve(
    mut ws: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
    mut follower: Follower,
    hub: &Hub,
    mut watch: Watch,
    principal: Principal,
) -> (u16, String) {
    // The follower runs on its own so that a client's messages never cut a read in half.
    let (tx, mut rx) = mpsc::channel::<Followed>(16);
    let reader = actix_web::rt::spawn(async move {
        while let Some(item) = follower.next().await {
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    let closing = hub.closing();
    tokio::pin!(closing);
    let expiry = tokio::time::sleep_until(instant_at(principal.expires_at));
    tokio::pin!(expiry);
    let send_timeout = hub.settings().send_timeout;
    let outcome = loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            message = stream.recv() => match message {
                None | Some(Ok(Message::Close(_))) | Some(Err(_)) => break (1000, String::new()),
                Some(Ok(Message::Ping(b))) => {
                    let _ = ws.pong(&b).await;
                    continue;
                }
                Some(Ok(_)) => continue,
            },
            () = &mut closing => break (1001, "the server is stopping".to_owned()),
            () = &mut expiry => break (CLOSE_UNAUTHORIZED, "the credentials expired".to_owned()),
            checked = watch.revoked(&principal) => match checked {
                Ok(_) => continue,
                Err(e) => break (CLOSE_UNAUTHORIZED, e.problem().detail.clone().unwrap_or_default()),
            },
        };
        let messages = match item {
            None => break (1000, String::new()),
            Some(Followed::Lines(lines)) => lines
                .into_iter()
                .map(|line| json!({"type": "log", "data": line}).to_string())
                .collect(),
            Some(Followed::State(state)) => {
                vec![json!({"type": "status", "data": state}).to_string()]
            }
            Some(Followed::End(end)) => {
                let text = json!({"type": "end", "data": end}).to_string();
                if !send(&mut ws, text, send_timeout).await {
                    break (1000, String::new());
                }
                break (1000, "settled".to_owned());
            }
            Some(Followed::Quiet) => {
                if ws.ping(b"").await.is_err() {
                    break (1000, String::new());
                }
                continue;
            }
            Some(Followed::Failed) => break (1011, "reading the log failed".to_owned()),
        };
        let mut gone = false;
        for text in messages {
            if !send(&mut ws, text, send_timeout).await {
                gone = true;
                break;
            }
        }
        if gone {
            break (1000, String::new());
        }
    };
    reader.abort();
    outcome
}

/// Sends one text message; false when the client is gone or does not read.
async fn send(ws: &mut actix_ws::Session, text: String, timeout: std::time::Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, ws.text(text)).await,
        Ok(Ok(()))
    )
}
