//! CORS: browsers may call the API from the configured origins (`ATELIER_CORS_ORIGINS`).

use actix_cors::Cors;
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};

/// Request headers a browser may send.
pub const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "if-match",
    "if-none-match",
    "idempotency-key",
    "x-request-id",
    "x-organization-id",
    // Read-your-writes (see `conventions::MIN_POSITION_HEADER`).
    "atelier-min-position",
    // `POST /auth/login-key` and `POST /auth/refresh` take their credential as a header.
    "api-key",
    "refresh-token",
];

/// Response headers a browser's script may read.
pub const EXPOSED_HEADERS: &[&str] = &[
    "etag",
    "location",
    "x-request-id",
    "atelier-position",
    "retry-after",
    // Marks an `Idempotency-Key` replay (see `conventions::REPLAYED_HEADER`).
    "idempotent-replayed",
];

/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE_SECONDS: usize = 3600;

/// The CORS middleware for these origins, each as a browser sends it in `Origin`
/// (`http://localhost:5173`; a trailing `/` is ignored). `*` allows any origin, without
/// credentials; otherwise credentials are allowed. Origins that cannot be an `Origin` are skipped
/// with a warning. Preflights from other origins are refused (400); simple requests from them are
/// served without CORS headers, so the browser withholds the answer from the page.
pub fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allowed_headers(ALLOWED_HEADERS.iter().map(|h| HeaderName::from_static(h)))
        .expose_headers(EXPOSED_HEADERS.iter().map(|h| HeaderName::from_static(h)))
        .max_age(MAX_AGE_SECONDS);
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.contains(&"*") {
        return cors.allow_any_origin().send_wildcard();
    }
    for origin in origins {
        let origin = origin.strip_suffix('/').unwrap_or(origin);
        if is_origin(origin) {
            cors = cors.allowed_origin(origin);
        } else {
            tracing::warn!(
                origin,
                "ignoring a CORS origin that is not scheme://host[:port]"
            );
        }
    }
    cors.supports_credentials()
}

/// Whether `s` has the shape of an `Origin` header: `scheme://host[:port]`, nothing more.
fn is_origin(s: &str) -> bool {
    let Ok(uri) = s.parse::<actix_web::http::Uri>() else {
        return false;
    };
    HeaderValue::from_str(s).is_ok()
        && uri.scheme().is_some()
        && uri.authority().is_some_and(|a| !a.host().is_empty())
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none()
        && !s.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert!(is_origin("http://localhost:5173"));
        assert!(is_origin("https://app.example.com"));
        assert!(!is_origin("localhost:5173"));
        assert!(!is_origin("http://localhost:5173/app"));
        assert!(!is_origin("not an origin"));
    }
}
