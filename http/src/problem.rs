//! The one error shape: RFC 9457 `application/problem+json`, with a stable `code`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

tokio::task_local! {
    /// The id of the request being served, set by the request middleware.
    pub static REQUEST_ID: String;
}

/// The current request's id, when called while serving one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// How long clients are told to wait before retrying a 503, in seconds.
pub const RETRY_UNAVAILABLE_SECS: u64 = 2;

/// Requests answered 503 because the database could not be reached.
pub const DATABASE_UNAVAILABLE: &str = "atelier_database_unavailable_total";

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The field, as named in the request (`name`, `repo_url`, `body`…).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl From<atelier_domain::value::InvalidValue> for FieldError {
    fn from(e: atelier_domain::value::InvalidValue) -> Self {
        Self {
            field: e.field.to_owned(),
            message: e.message,
        }
    }
}

/// Keeps a parsed value, or records why it was refused.
pub fn collect<T>(
    errors: &mut Vec<FieldError>,
    parsed: Result<T, atelier_domain::value::InvalidValue>,
) -> Option<T> {
    parsed.map_err(|e| errors.push(e.into())).ok()
}

/// An RFC 9457 problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A stable code for programs: `VALIDATION_ERROR`, `NOT_FOUND`, `CONFLICT`…
    pub code: String,
    /// The invalid fields (validation errors only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The request's id, as in the `x-request-id` header and the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Seconds after which a retry may succeed (sent as `Retry-After`, not in the body).
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<u64>,
}

/// An error answered as a problem.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} {}: {}", .0.status, .0.code, .0.detail.as_deref().unwrap_or(&.0.title))]
pub struct ApiError(pub Box<Problem>);

impl ApiError {
    /// A problem with this status, code and detail.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error").to_owned();
        Self(Box::new(Problem {
            problem_type: format!("/problems/{}", code.to_ascii_lowercase().replace('_', "-")),
            title,
            status: status.as_u16(),
            detail: Some(detail.into()),
            code: code.to_owned(),
            errors: Vec::new(),
            request_id: None,
            retry_after: None,
        }))
    }

    /// 429 `RATE_LIMITED`, to be retried after `retry_after` seconds.
    pub fn rate_limited(detail: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", detail);
        e.0.retry_after = Some(retry_after.max(1));
        e
    }

    /// 400 `VALIDATION_ERROR` with the invalid fields.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        let mut e = Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", detail);
        e.0.errors = errors;
        e
    }

    /// 400 `VALIDATION_ERROR` for one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    /// 400 `BAD_REQUEST`: a body or parameter that cannot be read at all.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", detail)
    }

    /// 401 `UNAUTHORIZED`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", detail)
    }

    /// 403 `FORBIDDEN`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", detail)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", detail)
    }

    /// 409 `CONFLICT`.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", detail)
    }

    /// 412 `PRECONDITION_FAILED`.
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "PRECONDITION_FAILED",
            detail,
        )
    }

    /// 503 `SERVICE_UNAVAILABLE`, to be retried after [`RETRY_UNAVAILABLE_SECS`].
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            detail,
        );
        e.0.retry_after = Some(RETRY_UNAVAILABLE_SECS);
        e
    }

    /// What a failure below the API answers: 503 `SERVICE_UNAVAILABLE` when the database
    /// cannot be reached now (see [`connection_lost`](atelier_store::connection_lost)), else
    /// 500 `INTERNAL_ERROR`. The cause is logged, never shown.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        if atelier_store::connection_lost(cause) {
            tracing::warn!(error = %cause, "the database cannot be reached");
            metrics::counter!(DATABASE_UNAVAILABLE).increment(1);
            return Self::unavailable("the database cannot be reached now; try again shortly");
        }
        Self::bug(cause)
    }

    /// 500 `INTERNAL_ERROR` for something that should not happen: the cause is logged, never
    /// shown.
    pub fn bug(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "an internal error occurred; the request id identifies it in the logs",
        )
    }

    /// The problem.
    pub fn problem(&self) -> &Problem {
        &self.0
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut problem = (*self.0).clone();
        problem.request_id = problem.request_id.or_else(current_request_id);
        let mut res = HttpResponse::build(self.status_code());
        res.content_type("application/problem+json");
        if self.0.status == 401 {
            res.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let Some(seconds) = self.0.retry_after {
            res.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        res.json(problem)
    }
}

/// Middleware: any error answer that is not a problem yet (an unknown route, a method not
/// allowed, a body too large, a malformed query…) becomes one, so clients see one error shape.
pub async fn problem_fallback(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<
        actix_web::body::EitherBody<impl actix_web::body::MessageBody, actix_web::body::BoxBody>,
    >,
    actix_web::Error,
> {
    let res = next.call(req).await?;
    let status = res.status();
    let is_problem = res
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if status.as_u16() < 400 || is_problem {
        return Ok(res.map_into_left_body());
    }
    let (req, old) = res.into_parts();
    let detail = old
        .error()
        .map(|e| e.to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let code = match status.as_u16() {
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        406 => "NOT_ACCEPTABLE",
        408 => "REQUEST_TIMEOUT",
        409 => "CONFLICT",
        412 => "PRECONDITION_FAILED",
        413 => "PAYLOAD_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        422 => "UNPROCESSABLE_ENTITY",
        429 => "RATE_LIMITED",
        503 => "SERVICE_UNAVAILABLE",
        s if s >= 500 => "INTERNAL_ERROR",
        _ => "CLIENT_ERROR",
    };
    let detail = if status.as_u16() == 404 && old.error().is_none() {
        format!("no route for {} {}", req.method(), req.path())
    } else if status.is_server_error() {
        "an internal error occurred; the request id identifies it in the logs".to_owned()
    } else {
        detail
    };
    let mut new = ApiError::new(status, code, detail).error_response();
    for (name, value) in old.headers() {
        if name == actix_web::http::header::ALLOW || name == actix_web::http::header::RETRY_AFTER {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(actix_web::dev::ServiceResponse::new(req, new).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_problem_lists_its_fields_and_has_a_stable_code() {
        let e = ApiError::invalid_field("name", "is empty");
        let p = e.problem();
        assert_eq!(p.status, 400);
        assert_eq!(p.code, "VALIDATION_ERROR");
        assert_eq!(p.problem_type, "/problems/validation-error");
        assert_eq!(p.errors[0].field, "name");
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(json["type"], "/problems/validation-error");
    }
}
