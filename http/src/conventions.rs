//! The HTTP conventions every context shares: `ETag`/`If-Match`, the position a write returns
//! and a read may wait for, `Idempotency-Key`, JSON bodies, and how command errors answer.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use atelier_commands::handler::CommandError;
use atelier_commands::idempotency::{Begin, StoredResponse};
use atelier_projections::runtime::WaitError;
use atelier_store::Position;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::problem::{ApiError, FieldError};
use crate::state::AppState;

/// The response header carrying the log position of a write.
pub const POSITION_HEADER: &str = "atelier-position";
/// The request header (or `min_position` query parameter) asking a read to wait for a position.
pub const MIN_POSITION_HEADER: &str = "atelier-min-position";
/// The response header marking a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A JSON answer that can be stored and replayed.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// Headers to send (and replay).
    pub headers: Vec<(String, String)>,
    /// The JSON body (empty for 204).
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: StatusCode, body: &impl Serialize) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// An empty reply.
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_owned(), value.to_string()));
        self
    }

    /// Adds the `ETag` of a revision.
    pub fn etag(self, revision: Option<u64>) -> Self {
        match revision {
            Some(r) => self.header("etag", etag(r)),
            None => self,
        }
    }

    /// Adds the position of a write.
    pub fn position(self, position: Option<Position>) -> Self {
        match position {
            Some(p) => self.header(POSITION_HEADER, p),
            None => self,
        }
    }

    /// The HTTP response.
    pub fn into_response(self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                res.insert_header((n, v));
            }
        }
        let typed = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if self.body.is_empty() {
            res.finish()
        } else if typed {
            res.body(self.body)
        } else {
            res.content_type("application/json").body(self.body)
        }
    }

    fn from_error(e: &ApiError) -> Self {
        let mut problem = e.problem().clone();
        problem.request_id = problem
            .request_id
            .or_else(crate::problem::current_request_id);
        Self {
            status: StatusCode::from_u16(problem.status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: vec![("content-type".into(), "application/problem+json".into())],
            body: serde_json::to_vec(&problem).unwrap_or_default(),
        }
    }
}

/// The strong `ETag` of a revision.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// The revision an `If-Match` header names: `None` without the header (or with `*`).
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::precondition_failed("If-Match is not readable"))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_matches('"').parse().map(Some).map_err(|_| {
        ApiError::precondition_failed(format!(
            "If-Match {text} names no revision of this resource"
        ))
    })
}

/// Whether an `If-None-Match` header matches a revision (a `304` is then due).
pub fn if_none_match(headers: &HeaderMap, revision: u64) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == "*" || t == etag(revision))
        })
}

/// Parses a JSON body into `T`, with problems a person can act on.
pub fn json_body<T: DeserializeOwned>(req: &HttpRequest, body: &[u8]) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let mime = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                let message = e.to_string();
                let field = message
                    .split('`')
                    .nth(1)
                    .filter(|_| {
                        message.starts_with("missing field") || message.starts_with("unknown field")
                    })
                    .unwrap_or("body")
                    .to_owned();
                let message = message
                    .split(" at line")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                ApiError::validation(vec![FieldError { field, message }])
            }
            _ => ApiError::bad_request(format!("the body is not valid JSON: {e}")),
        }
    })
}

/// Maps a command error to its problem.
pub fn command_error<E: std::error::Error + 'static>(
    e: CommandError<E>,
    rejected: impl FnOnce(E) -> ApiError,
) -> ApiError {
    match e {
        CommandError::Rejected(e) => rejected(e),
        CommandError::PreconditionFailed { expected, actual } => {
            ApiError::precondition_failed(match actual {
                Some(actual) => {
                    format!("the resource is at revision {actual}, not {expected}: read it again")
                }
                None => format!("the resource does not exist (If-Match named revision {expected})"),
            })
        }
        CommandError::Invalid(e) => ApiError::invalid_field(e.field, e.message),
        CommandError::Conflict(message) => ApiError::conflict(message),
        CommandError::Contention { .. } => {
            ApiError::conflict("the resource changed too often meanwhile; try again")
        }
        other => ApiError::internal(&other),
    }
}

/// The position a read must wait for, from `min_position` or `Atelier-Min-Position`.
pub fn min_position(req: &HttpRequest) -> Result<Option<Position>, ApiError> {
    let from_query = url_query_value(req.query_string(), "min_position");
    let from_header = req
        .headers()
        .get(MIN_POSITION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match from_query.or(from_header) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e: atelier_store::ParsePositionError| {
                ApiError::invalid_field("min_position", e.to_string())
            }),
    }
}

fn url_query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| v.to_owned())
    })
}

/// Read-your-writes: waits (bounded) until `projection` has applied `position`.
pub async fn await_projection(
    state: &AppState,
    req: &HttpRequest,
    projection: &str,
) -> Result<(), ApiError> {
    let Some(position) = min_position(req)? else {
        return Ok(());
    };
    wait_for_position(state, projection, position).await
}

/// Waits until every read model has passed the position the request names (`min_position`),
/// for views that gather figures from every context: an organization's (its
/// `environment_count` comes from the deploy context's targets).
pub async fn await_every_projection(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(position) = min_position(req)? else {
        return Ok(());
    };
    for projection in atelier_projections::all() {
        wait_for_position(state, projection.name(), position).await?;
    }
    Ok(())
}

/// Waits (bounded by the read wait) until `projection` has applied `position`: a 503 when it
/// lags or has failed.
pub async fn wait_for_position(
    state: &AppState,
    projection: &str,
    position: atelier_store::Position,
) -> Result<(), ApiError> {
    state
        .projections
        .wait_for(projection, position, state.settings.read_wait)
        .await
        .map_err(|e| match e {
            WaitError::Timeout(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PROJECTION_LAGGING",
                format!("the read model has not reached position {position} yet; retry shortly"),
            ),
            WaitError::Failed(name) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PROJECTION_FAILED",
                format!(
                    "the read model {name} is stopped by a failure; an operator must look at it"
                ),
            ),
            WaitError::Unknown(name) => ApiError::bug(format!("no projection {name}")),
        })
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiError::invalid_field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Runs a POST once per `Idempotency-Key` (within `org_id`): the first answer, success or
/// client error, is stored and replayed to retries; a server error frees the key.
pub async fn idempotent<F>(
    state: &AppState,
    req: &HttpRequest,
    org_id: Uuid,
    body: &[u8],
    handle: F,
) -> Result<HttpResponse, ApiError>
where
    F: AsyncFnOnce() -> Result<Reply, ApiError>,
{
    let Some(key) = idempotency_key(req)? else {
        return handle().await.map(Reply::into_response);
    };
    let fingerprint = format!(
        "{} {}\n{}",
        req.method(),
        req.path(),
        String::from_utf8_lossy(body)
    );
    let begin = state
        .idempotency
        .begin(org_id, &key, &fingerprint)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match begin {
        Begin::Replay(stored) => {
            let mut reply = Reply {
                status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                headers: stored.headers,
                body: stored.body,
            };
            reply.headers.push((REPLAYED_HEADER.into(), "true".into()));
            Ok(reply.into_response())
        }
        Begin::InProgress => Err(ApiError::conflict(
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )),
        Begin::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used for a different request",
        )),
        Begin::New => {
            let reply = match handle().await {
                Ok(reply) => reply,
                Err(e) if e.problem().status < 500 => Reply::from_error(&e),
                Err(e) => {
                    if let Err(db) = state.idempotency.abandon(org_id, &key).await {
                        tracing::warn!(error = %db, "could not free an idempotency key");
                    }
                    return Err(e);
                }
            };
            let stored = StoredResponse {
                status: reply.status.as_u16(),
                headers: reply.headers.clone(),
                body: reply.body.clone(),
            };
            if let Err(db) = state.idempotency.complete(org_id, &key, &stored).await {
                tracing::warn!(error = %db, "could not store an idempotent answer");
            }
            Ok(reply.into_response())
        }
    }
}
