//! The request context every request runs in: its id, its tracing span, its log line and its
//! metrics.

use std::fmt;
use std::future::{Ready, ready};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use tracing::Instrument;
use tracing::field::Empty;
use uuid::Uuid;

use crate::problem;

/// The request and response header carrying the request id.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a client.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// The id of the request being served: the client's `x-request-id` when it is acceptable, else a
/// new UUIDv7. Handlers can take it as an argument; it is also in
/// [`problem::REQUEST_ID`] while the request is served.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(pub String);

impl RequestId {
    /// A new id (a UUIDv7, so ids sort by time).
    pub fn generate() -> Self {
        Self(Uuid::now_v7().to_string())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromRequest for RequestId {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .or_else(|| problem::current_request_id().map(RequestId))
            // Without the middleware: still an id, if not one the logs know.
            .unwrap_or_else(RequestId::generate);
        ready(Ok(id))
    }
}

/// Whether a client's request id is kept: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Paths polled by probes and scrapers: logged at debug, not info.
fn is_quiet(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics")
}

/// The method as a metrics label (unknown methods are grouped, so they cannot multiply series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware (for `actix_web::middleware::from_fn`), to wrap outermost: gives the request its
/// id ([`RequestId`] in the extensions, [`problem::REQUEST_ID`] while it is served, the
/// `x-request-id` response header), runs it in an `http.request` span, logs one line when it is
/// answered and records `http_requests_total` and `http_request_duration_seconds` by route
/// pattern.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map_or_else(RequestId::generate, |v| RequestId(v.to_owned()));
    req.extensions_mut().insert(id.clone());

    let method = req.method().clone();
    let pattern = req.match_pattern();
    let path = pattern.as_deref().unwrap_or(req.path()).to_owned();
    let quiet = is_quiet(req.path());
    let span = tracing::info_span!(
        "http.request",
        method = %method,
        path = %path,
        request_id = %id,
        status = Empty,
        latency_ms = Empty,
    );

    // `next.call` starts the inner services synchronously (routing, sync middleware): call it
    // when first polled, inside the id's scope and the span.
    let inner = async move { next.call(req).await }.instrument(span.clone());
    let result = problem::REQUEST_ID.scope(id.0.clone(), inner).await;

    let status = match &result {
        Ok(res) => res.status(),
        Err(err) => err.as_response_error().status_code(),
    };
    let latency = started.elapsed();
    span.record("status", status.as_u16());
    span.record("latency_ms", latency.as_secs_f64() * 1000.0);
    log_line(&span, quiet);
    crate::metrics::record_request(
        method_label(&method),
        pattern
            .as_deref()
            .unwrap_or(crate::metrics::UNMATCHED_ROUTE),
        status.as_u16(),
        latency,
    );

    let mut res = result?;
    // The id is checked or generated above: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        res.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(res)
}

/// The Content-Security-Policy of API answers: they are data, never a page to run or frame.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The Content-Security-Policy of the docs page (Swagger UI): its own scripts, styles, images
/// and calls only, never framed.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' \
     'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
     base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Middleware (for `actix_web::middleware::from_fn`): the protective headers of every answer —
/// `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, no framing
/// (`X-Frame-Options: DENY` and the CSP's `frame-ancestors`), a restrictive
/// `Content-Security-Policy` ([`DOCS_CSP`] on the docs page, [`API_CSP`] elsewhere), and
/// `Cache-Control: no-store` on answers to requests that bear credentials, unless the handler
/// chose a cache policy itself.
pub async fn protective_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use actix_web::http::header;
    let credentials = req.headers().contains_key(header::AUTHORIZATION)
        || crate::identity::auth::API_KEY_HEADERS
            .iter()
            .any(|h| req.headers().contains_key(*h));
    let docs = req.path() == crate::docs::DOCS_PATH
        || req
            .path()
            .strip_prefix(crate::docs::DOCS_PATH)
            .is_some_and(|rest| rest.starts_with('/'));
    // The services inside answer errors as responses (the text rule and the problem fallback
    // see to it), so every answer passes here.
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    let set = |headers: &mut actix_web::http::header::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        if docs { DOCS_CSP } else { API_CSP },
    );
    if credentials && !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    Ok(res)
}

/// The request's log line; its fields (method, path, request id, status, latency) are the span's.
fn log_line(span: &tracing::Span, quiet: bool) {
    let _entered = span.enter();
    if quiet {
        tracing::debug!("request served");
    } else {
        tracing::info!("request served");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_plain() {
        assert!(is_valid_request_id("abc-123_X.y"));
        assert!(is_valid_request_id(&"a".repeat(64)));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id(&"a".repeat(65)));
        assert!(!is_valid_request_id("a b"));
        assert!(!is_valid_request_id("a/b"));
        assert!(!is_valid_request_id("é"));
    }

    #[test]
    fn a_generated_request_id_is_a_uuid_v7() {
        let id = RequestId::generate();
        let uuid = Uuid::parse_str(id.as_str()).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert!(is_valid_request_id(id.as_str()));
    }
}
