//! The text rule, at the edge, for every string the API accepts: no control characters other
//! than tab, line feed and carriage return (U+0000, which PostgreSQL refuses in text and JSON,
//! above all). It is checked before routing reaches a handler, in the path, every query
//! parameter and JSON bodies at any depth, keys included, and answered 400 `VALIDATION_ERROR`
//! naming the field (`name`, `settings.region`, `packages[2]`, `search`…). Headers need no rule
//! here: the HTTP parser refuses control characters in them.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use crate::problem::{ApiError, FieldError};

/// What a refused string is told.
pub const MESSAGE: &str = "must not contain control characters (U+0000 to U+001F other than tab, line feed and carriage \
     return)";

/// Whether the rule refuses this character.
pub fn is_refused(c: char) -> bool {
    c < ' ' && !matches!(c, '\t' | '\n' | '\r')
}

fn refused(field: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: MESSAGE.to_owned(),
    }
}

/// Checks a request path (percent-encoded as sent).
pub fn check_path(path: &str) -> Result<(), FieldError> {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    match decoded.chars().any(is_refused) {
        true => Err(refused("path")),
        false => Ok(()),
    }
}

/// Checks every parameter of a query string (names and values, decoded).
pub fn check_query(query: &str) -> Result<(), FieldError> {
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name.chars().any(is_refused) {
            return Err(refused("query"));
        }
        if value.chars().any(is_refused) {
            return Err(refused(name.into_owned()));
        }
    }
    Ok(())
}

/// Whether a JSON text may hold a refused character in a string: an escape `\u00XX` of one
/// (a raw control character inside a string is not JSON at all, which the handler answers).
fn may_hold_refused(body: &[u8]) -> bool {
    body.windows(6).any(|w| {
        w.starts_with(b"\\u00")
            && std::str::from_utf8(&w[4..])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|b| is_refused(char::from(b)))
    })
}

/// Checks a JSON body at any depth; a body that is not JSON passes (its handler answers it).
pub fn check_json(body: &[u8]) -> Result<(), FieldError> {
    if !may_hold_refused(body) {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => check_value(&value, &mut String::new()),
        Err(_) => Ok(()),
    }
}

fn check_value(value: &serde_json::Value, path: &mut String) -> Result<(), FieldError> {
    let here = |path: &str| {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        }
    };
    match value {
        serde_json::Value::String(s) if s.chars().any(is_refused) => Err(refused(here(path))),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_value(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        serde_json::Value::Object(fields) => {
            for (key, item) in fields {
                if key.chars().any(is_refused) {
                    return Err(refused(here(path)));
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                check_value(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The content types of bodies that are not text (left to their handlers).
pub const BINARY_TYPES: [&str; 4] = [
    "application/gzip",
    "application/x-gzip",
    "application/x-tar",
    "application/octet-stream",
];

/// Middleware (for `actix_web::middleware::from_fn`): applies the rule to the path, the query
/// and the body of every request before its handler runs; the body is read once (within the
/// application's body limit) and handed on unchanged.
pub async fn text_rule<B: MessageBody>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let mut verdict = check_path(req.path()).and_then(|()| check_query(req.query_string()));
    // Archives (a cache import) are not text: their handler reads and checks them itself,
    // under its own size limit.
    let binary = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| BINARY_TYPES.iter().any(|b| t.starts_with(b)));
    let has_body =
        !binary && !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if verdict.is_ok() && has_body {
        let body = match req.extract::<web::Bytes>().await {
            Ok(body) => body,
            // Too large, or cut short: answered here, as a response the middleware outside
            // sees (the problem fallback gives it the one error shape).
            Err(e) => {
                let res = e.error_response();
                return Ok(req.into_response(res).map_into_right_body());
            }
        };
        verdict = check_json(&body);
        req.set_payload(actix_web::dev::Payload::from(body));
    }
    match verdict {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(field) => {
            tracing::info!(field = %field.field, "refused text with control characters");
            let res = ApiError::validation(vec![field]).error_response();
            Ok(req.into_response(res).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_anywhere_in_a_json_body_is_refused_with_its_path() {
        let cases: [(&str, &str); 5] = [
            (r#"{"username": "a\u0000b"}"#, "username"),
            (r#"{"settings": {"region": "eu\u0001"}}"#, "settings.region"),
            (r#"{"settings": {"re\u0000gion": "eu"}}"#, "settings"),
            (r#"{"packages": ["ok", "b\u001fad"]}"#, "packages[1]"),
            (r#"["\u0000"]"#, "[0]"),
        ];
        for (body, field) in cases {
            assert_eq!(
                check_json(body.as_bytes()).unwrap_err().field,
                field,
                "{body}"
            );
        }
        assert_eq!(check_json(br#""\u0000""#).unwrap_err().field, "body");
    }

    #[test]
    fn tabs_new_lines_escaped_backslashes_and_other_text_pass() {
        for body in [
            r#"{"build_command": "make\ttest\r\n"}"#,
            r#"{"name": "a\\u0000 is written like this"}"#,
            r#"{"name": "Ünïcødé ✓"}"#,
            "not json \\u0000",
        ] {
            assert_eq!(check_json(body.as_bytes()), Ok(()), "{body}");
        }
    }

    #[test]
    fn a_nul_in_the_path_or_a_query_parameter_is_refused_with_its_name() {
        assert_eq!(
            check_path("/api/v1/projects/a%00b").unwrap_err().field,
            "path"
        );
        assert_eq!(check_path("/api/v1/projects/a%20b"), Ok(()));
        assert_eq!(
            check_query("page=1&search=x%00y").unwrap_err().field,
            "search"
        );
        assert_eq!(check_query("se%01arch=x").unwrap_err().field, "query");
        assert_eq!(check_query("search=a+b%09c"), Ok(()));
    }
}
