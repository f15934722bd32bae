//! The OpenAPI 3.1 document, generated from the code with utoipa, at `GET /api/openapi.json`, and
//! an interactive Swagger UI at `GET /api/docs`, served from assets compiled into the binary
//! (utoipa-swagger-ui's `vendored` feature), so it works with no internet.
//!
//! Documenting an operation:
//! 1. annotate the handler with `#[utoipa::path(...)]`, with a `tag` (its context), the
//!    responses particular to it (the shared ones, 400, 401, 403, 404, 412, 413, 415, 503 and the
//!    idempotency answers, are added by [`StandardResponses`]), `security(("bearer" = []))` when
//!    it takes credentials, and its full path (`path = "/api/v1/projects"`);
//! 2. derive `ToSchema` on its request and response types;
//! 3. add ONE line to the `paths(...)` of its context's document (`crate::factory::Doc`);
//!    [`openapi`] merges every context's.

use std::sync::{Arc, OnceLock};

use actix_web::http::header;
use actix_web::{HttpResponse, get, web};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, Header, Ref, RefOr, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::problem::{FieldError, Problem};

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";
/// Where the docs page is served (its assets are under `/api/docs/`).
pub const DOCS_PATH: &str = "/api/docs";
/// The name of the JWT bearer security scheme: `security(("bearer" = []))`.
pub const BEARER: &str = "bearer";

/// The name of the API-key security scheme in the document.
pub const API_KEY: &str = "api_key";

/// The document's shared part: what the platform serves itself (health, the live feed), the
/// problem schema. Each context's operations come from its own document ([`openapi`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Atelier",
        version = env!("CARGO_PKG_VERSION"),
        description = "Atelier: one event-sourced control plane for a software factory, \
            deployments, Python environments and more. Errors are RFC 9457 \
            `application/problem+json` documents with a stable `code` and the `request_id`; \
            authenticated operations take a JWT access token as `Authorization: Bearer <token>`."
    ),
    paths(
        crate::platform::health,
        crate::platform::ready,
        crate::platform::status,
        crate::platform::metrics,
        crate::live::ws::connect,
        crate::live::sse::stream,
    ),
    components(schemas(Problem, FieldError)),
    tags(
        (name = "platform", description = "Health, readiness, status and metrics"),
        (name = "live", description = "The event log, live: WebSocket `/ws` and server-sent events, per organization and channel, resumable by position"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme (a JWT access token in `Authorization: Bearer …`) and the
/// `api_key` one, which every operation that takes a token also accepts unless it is
/// [`PERSON_ONLY`](crate::identity::auth::PERSON_ONLY).
pub struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT access token from `POST /auth/login` (or `/auth/login-key`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "api-key",
                "An API key from `POST /api-keys` (also accepted as `X-API-Key`); it acts in its \
                 organization with its scopes",
            ))),
        );
        let bearer = serde_json::json!({ BEARER: [] });
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, operation) in [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
            ] {
                let Some(security) = operation.as_mut().and_then(|o| o.security.as_mut()) else {
                    continue;
                };
                let takes_token = security
                    .iter()
                    .any(|r| serde_json::to_value(r).is_ok_and(|v| v == bearer));
                if takes_token && !crate::identity::auth::person_only(method, path) {
                    security.push(SecurityRequirement::new(API_KEY, Vec::<String>::new()));
                }
            }
        }
    }
}

/// Operations whose body is read as JSON whatever its `Content-Type` (so they never answer
/// 415): the seeds' login clients do not all send one.
const ANY_CONTENT_TYPE: &[(&str, &str)] = &[("post", "/api/v1/auth/login")];

/// Adds the RFC 9457 problems that answers of the shared layers give, to every operation that
/// can get them and does not document them itself (its own description wins):
/// - 400 everywhere (a malformed query, header or body; `errors` names the fields) and 503 (the
///   database is unreachable, or a read waited too long for `min_position`; see `Retry-After`);
/// - 401, 403 and 404 where credentials are taken (a missing or bad credential, a role or scope
///   that does not allow it, an `X-Organization-Id` that names no organization of the caller's);
/// - 404 where the path names a resource; 412 where `If-Match` is taken;
/// - 413 and 415 where a JSON body is taken (larger than `ATELIER_BODY_LIMIT`, not JSON);
/// - 409 and 422 where `Idempotency-Key` is taken (the first request with that key is still
///   running; the key was used for another request).
pub struct StandardResponses;

/// The standard answers an operation can get: `(status, description)`.
fn standard_responses(path: &str, method: &str, operation: &Operation) -> Vec<(u16, &'static str)> {
    let header = |name: &str| {
        operation.parameters.iter().flatten().any(|p| match p {
            RefOr::T(p) => {
                p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case(name)
            }
            RefOr::Ref(_) => false,
        })
    };
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut answers = vec![
        (
            400,
            "The request is malformed, or a parameter or field is invalid (`errors` names them)",
        ),
        (
            503,
            "The service is unavailable for now (the database is unreachable, or a read waited too long for `min_position`); retry after `Retry-After` seconds",
        ),
    ];
    if secured {
        answers.push((401, "Missing, invalid or expired credentials"));
        answers.push((403, "The caller's role or the API key's scopes do not allow it, or the organization is deactivated"));
    }
    if path.contains('{') {
        answers.push((
            404,
            "No such resource, or not one of the caller's organization",
        ));
    } else if secured {
        answers.push((
            404,
            "`X-Organization-Id` names no organization of the caller's",
        ));
    }
    if header("If-Match") {
        answers.push((
            412,
            "`If-Match` names an old revision, or no revision of this resource",
        ));
    }
    if operation.request_body.is_some() {
        answers.push((
            413,
            "The body is larger than the server accepts (`ATELIER_BODY_LIMIT`)",
        ));
        if !ANY_CONTENT_TYPE.contains(&(method, path)) {
            answers.push((
                415,
                "The body is not JSON (`Content-Type: application/json`)",
            ));
        }
    }
    if header("Idempotency-Key") {
        answers.push((
            409,
            "A request with this `Idempotency-Key` is still being processed; retry shortly",
        ));
        answers.push((
            422,
            "This `Idempotency-Key` was used for a different request",
        ));
    }
    answers
}

/// A problem answer.
fn problem_response(status: u16, description: &str) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/problem+json",
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    if matches!(status, 429 | 503) {
        let mut retry =
            Header::new(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer));
        retry.description = Some("Seconds after which a retry may succeed".to_owned());
        response = response.header("Retry-After", retry);
    }
    RefOr::T(response.build())
}

impl Modify for StandardResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, operation) in [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
            ] {
                let Some(operation) = operation.as_mut() else {
                    continue;
                };
                for (status, description) in standard_responses(path, method, operation) {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| problem_response(status, description));
                }
            }
        }
    }
}

/// The text form of a log position (`Atelier-Position`, `from_position`, `Last-Event-ID`).
pub const POSITION_PATTERN: &str = "^[0-9]+-[0-9]+$";
/// A keyset list's opaque cursor (base64url, no padding).
pub const KEYSET_CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]{1,1024}$";
/// An `If-Match` value: `*` or a revision's strong ETag.
pub const IF_MATCH_PATTERN: &str = "^(\\*|\"[0-9]{1,19}\")$";
/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// Gives the parameters of the shared conventions (`conventions.rs`) their form wherever an
/// operation takes them, so that a client (or a fuzzer) knows what is accepted: positions,
/// `If-Match` and `Idempotency-Key`.
pub struct ConventionParameters;

impl Modify for ConventionParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            // The audit pages by log position; other lists by an opaque keyset cursor.
            let position_cursor = path.starts_with("/api/v1/audit/");
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for parameter in operation.parameters.iter_mut().flatten() {
                    let RefOr::T(parameter) = parameter else {
                        continue;
                    };
                    let pattern = match (&parameter.parameter_in, parameter.name.as_str()) {
                        // Not `min_position` yet: a well-formed position that no write returned
                        // waits ATELIER_READ_WAIT_MS and answers 503 where it should be a 400.
                        // Give it the pattern once that is so.
                        (ParameterIn::Query, "from_position") => POSITION_PATTERN,
                        (ParameterIn::Query, "cursor") if position_cursor => POSITION_PATTERN,
                        (ParameterIn::Query, "cursor") => KEYSET_CURSOR_PATTERN,
                        (ParameterIn::Header, "Last-Event-ID") => POSITION_PATTERN,
                        (ParameterIn::Header, "If-Match") => IF_MATCH_PATTERN,
                        (ParameterIn::Header, "Idempotency-Key") => IDEMPOTENCY_KEY_PATTERN,
                        _ => continue,
                    };
                    if let Some(RefOr::T(utoipa::openapi::Schema::Object(schema))) =
                        parameter.schema.as_mut()
                    {
                        schema.pattern = Some(pattern.to_owned());
                    }
                }
            }
        }
    }
}

/// The whole document: [`ApiDoc`] merged with every context's
/// ([`Context::openapi`](crate::contexts::Context::openapi)), then the shared conventions
/// applied to every operation (security schemes, standard problems, parameter forms).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for context in crate::contexts::ALL {
        doc.merge((context.openapi)());
    }
    doc.merge(crate::admin::Doc::openapi());
    crate::audit::history::HistoryDocs.modify(&mut doc);
    SecurityAddon.modify(&mut doc);
    StandardResponses.modify(&mut doc);
    ConventionParameters.modify(&mut doc);
    doc
}

/// The document, built once per process.
fn cached_openapi() -> utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(openapi).clone()
}

/// Swagger UI's settings: our document, no call to the online validator, the token kept across
/// reloads.
fn swagger_config() -> Config<'static> {
    Config::new([OPENAPI_PATH])
        .validator_url("none")
        .try_it_out_enabled(true)
        .persist_authorization(true)
        .display_request_duration(true)
}

/// `GET /api/docs`: the Swagger UI page itself (its assets are relative to `/api/docs/`).
#[get("/api/docs")]
async fn docs_page() -> HttpResponse {
    let page = utoipa_swagger_ui::serve("index.html", Arc::new(swagger_config()));
    match page {
        Ok(Some(file)) if !file.gzpipped => {
            let html = String::from_utf8_lossy(&file.bytes)
                .replacen(
                    "<head>",
                    &format!("<head>\n    <base href=\"{DOCS_PATH}/\" />"),
                    1,
                )
                .replacen("<title>Swagger UI</title>", "<title>Atelier API</title>", 1);
            HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .body(html)
        }
        _ => HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, format!("{DOCS_PATH}/")))
            .finish(),
    }
}

/// Registers `GET /api/openapi.json`, `GET /api/docs` and the docs page's assets under
/// `/api/docs/`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(docs_page).service(
        SwaggerUi::new(format!("{DOCS_PATH}/{{_:.*}}"))
            .url(OPENAPI_PATH, cached_openapi())
            .config(swagger_config()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_parts_of_the_document_give_one_schema_name_two_shapes() {
        // Merging keeps one schema per name: a second, different one would silently replace
        // the first in the served document (and in every client generated from it).
        let mut parts = vec![
            ("shared", ApiDoc::openapi()),
            ("admin", crate::admin::Doc::openapi()),
        ];
        parts.extend(crate::contexts::ALL.iter().map(|c| (c.name, (c.openapi)())));
        let mut seen: std::collections::BTreeMap<String, (&str, serde_json::Value)> =
            Default::default();
        let mut clashes = Vec::new();
        for (part, doc) in parts {
            let json = serde_json::to_value(doc).unwrap();
            let Some(schemas) = json["components"]["schemas"].as_object() else {
                continue;
            };
            for (name, schema) in schemas {
                match seen.get(name) {
                    Some((first, other)) if other != schema => {
                        clashes.push(format!("{name}: {first} and {part}"));
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(name.clone(), (part, schema.clone()));
                    }
                }
            }
        }
        assert!(
            clashes.is_empty(),
            "schemas named alike, shaped otherwise: {clashes:?}"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme_and_problem_schema() {
        let json = serde_json::to_value(openapi()).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1."));
        assert_eq!(json["info"]["title"], "Atelier");
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(json["components"]["schemas"]["Problem"].is_object());
        assert!(json["paths"]["/health"]["get"].is_object());
        assert!(json["paths"]["/ws"]["get"].is_object());
        assert!(json["paths"]["/api/v1/stream"]["get"].is_object());
    }

    /// Every operation of the document: `(method, path, operation)`.
    fn operations(json: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
        let mut all = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                all.push((method.clone(), path.clone(), operation.clone()));
            }
        }
        all
    }

    #[test]
    fn every_operation_has_its_own_operation_id() {
        let json = serde_json::to_value(openapi()).unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for (method, path, operation) in operations(&json) {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"))
                .to_owned();
            assert!(
                id.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{method} {path}: operationId {id} is not snake_case"
            );
            if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
                panic!("operationId {id} names both {other} and {method} {path}");
            }
        }
        assert!(seen.contains_key("list_projects") && seen.contains_key("list_organizations"));
    }

    #[test]
    fn path_parameters_are_exactly_the_path_template_s() {
        let json = serde_json::to_value(openapi()).unwrap();
        for (method, path, operation) in operations(&json) {
            let template: std::collections::BTreeSet<String> = path
                .split('{')
                .skip(1)
                .filter_map(|s| s.split_once('}').map(|(name, _)| name.to_owned()))
                .collect();
            let params = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let in_path: std::collections::BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(
                in_path, template,
                "{method} {path}: its path parameters are not its template's"
            );
            let mut unique = std::collections::BTreeSet::new();
            for p in &params {
                let key = (
                    p["in"].to_string(),
                    p["name"].to_string().to_ascii_lowercase(),
                );
                assert!(
                    unique.insert(key),
                    "{method} {path}: {} is declared twice",
                    p["name"]
                );
            }
        }
        let get_project = &json["paths"]["/api/v1/projects/{id}"]["get"]["parameters"];
        assert!(
            get_project
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "min_position" && p["in"] == "query"),
            "min_position is a query parameter"
        );
    }

    #[test]
    fn page_parameters_are_integers_with_their_bounds() {
        let json = serde_json::to_value(openapi()).unwrap();
        let mut lists = 0;
        for (method, path, operation) in operations(&json) {
            for p in operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let (max, name) = match p["name"].as_str().unwrap() {
                    "page" => (crate::pagination::MAX_PAGE, "page"),
                    "per_page" => (crate::pagination::MAX_PER_PAGE, "per_page"),
                    _ => continue,
                };
                lists += 1;
                let schema = &p["schema"];
                let types = match &schema["type"] {
                    serde_json::Value::Array(types) => types.clone(),
                    one => vec![one.clone()],
                };
                assert!(
                    types.contains(&"integer".into()) && !types.contains(&"string".into()),
                    "{method} {path}: {name} is typed {types:?}"
                );
                assert_eq!(p["in"], "query", "{method} {path}: {name}");
                assert_eq!(schema["minimum"], 1, "{method} {path}: {name}");
                assert_eq!(schema["maximum"], max, "{method} {path}: {name}");
            }
        }
        // The thirteen lists and every resource's history (page and per_page), and the two
        // audit pages (per_page: they page by cursor).
        let histories = crate::audit::history::resources().count();
        assert_eq!(
            lists,
            2 * 13 + 2 * histories + 2,
            "page and per_page of the thirteen lists, the histories and the audit"
        );
    }

    /// `schema` itself, or the component its `$ref` names.
    fn resolved<'a>(
        json: &'a serde_json::Value,
        schema: &'a serde_json::Value,
    ) -> &'a serde_json::Value {
        match schema["$ref"].as_str() {
            Some(name) => {
                &json["components"]["schemas"][name.trim_start_matches("#/components/schemas/")]
            }
            None => schema,
        }
    }

    #[test]
    fn the_lists_paged_by_keyset_take_a_cursor_and_answer_its_next_one_and_whether_the_total_is_capped()
     {
        let json = serde_json::to_value(openapi()).unwrap();
        let keyset = [
            "list_projects",
            "list_builds",
            "list_deployments",
            "list_environments",
            "list_ephemeral_environments",
            "list_operations",
            "list_detections",
            "list_organizations",
        ];
        let mut seen = Vec::new();
        for (method, path, operation) in operations(&json) {
            let id = operation["operationId"].as_str().unwrap_or_default();
            if !keyset.contains(&id) {
                continue;
            }
            seen.push(id.to_owned());
            let cursor = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "cursor" && p["in"] == "query")
                .unwrap_or_else(|| panic!("{method} {path} takes no cursor"));
            assert!(
                cursor["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("next_cursor")),
                "{method} {path}: {cursor}"
            );
            let page = resolved(
                &json,
                &operation["responses"]["200"]["content"]["application/json"]["schema"],
            );
            let pagination = resolved(&json, &page["properties"]["pagination"]);
            for field in ["next_cursor", "total_capped", "total", "has_next"] {
                assert!(
                    pagination["properties"][field].is_object(),
                    "{method} {path}: its pagination has no {field}: {pagination}"
                );
            }
            let text = operation["description"].as_str().unwrap_or_default();
            assert!(
                text.contains("cursor") && text.contains("10,000"),
                "{method} {path} does not say how it pages and counts: {text}"
            );
        }
        seen.sort();
        let mut expected = keyset.map(str::to_owned).to_vec();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn every_operation_documents_the_problems_the_shared_layers_answer() {
        let json = serde_json::to_value(openapi()).unwrap();
        for (method, path, operation) in operations(&json) {
            let responses = &operation["responses"];
            let has = |status: &str| responses[status].is_object();
            for status in ["400", "503"] {
                assert!(has(status), "{method} {path} lacks {status}");
            }
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if secured {
                for status in ["401", "403", "404"] {
                    assert!(has(status), "{method} {path} lacks {status}");
                }
            }
            let params = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let names_organization = params
                .iter()
                .any(|p| p["in"] == "query" && p["name"] == "organization_id");
            if path.contains('{') || names_organization {
                assert!(has("404"), "{method} {path} lacks 404");
            }
            let header = |name: &str| {
                params
                    .iter()
                    .any(|p| p["in"] == "header" && p["name"] == name)
            };
            if header("If-Match") {
                assert!(has("412"), "{method} {path} lacks 412");
            }
            if header("Idempotency-Key") {
                assert!(has("409") && has("422"), "{method} {path} lacks 409 or 422");
            }
            if operation["requestBody"].is_object() {
                assert!(has("413"), "{method} {path} lacks 413");
            }
            let problem = &responses["400"]["content"]["application/problem+json"]["schema"];
            assert_eq!(
                problem["$ref"], "#/components/schemas/Problem",
                "{method} {path}"
            );
        }
        let paths = &json["paths"];
        assert!(paths["/api/v1/builds/{id}/cancel"]["post"]["responses"]["412"].is_object());
        assert!(paths["/api/v1/projects"]["post"]["responses"]["415"].is_object());
        assert!(paths["/api/v1/auth/login"]["post"]["responses"]["415"].is_null());
        assert!(paths["/health"]["get"]["responses"]["401"].is_null());
        assert_eq!(
            paths["/api/v1/projects/{id}"]["put"]["responses"]["412"]["description"],
            "If-Match names an old revision",
            "an operation's own description is kept"
        );
    }

    #[test]
    fn the_conventions_parameters_have_their_form_everywhere() {
        let json = serde_json::to_value(openapi()).unwrap();
        let mut seen = 0;
        for (method, path, operation) in operations(&json) {
            for p in operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let expected = match (p["in"].as_str().unwrap(), p["name"].as_str().unwrap()) {
                    ("query", "from_position") => POSITION_PATTERN,
                    ("header", "If-Match") => IF_MATCH_PATTERN,
                    ("header", "Idempotency-Key") => IDEMPOTENCY_KEY_PATTERN,
                    _ => continue,
                };
                seen += 1;
                assert_eq!(
                    p["schema"]["pattern"], expected,
                    "{method} {path}: {}",
                    p["name"]
                );
            }
        }
        assert!(seen >= 9, "{seen} convention parameters");
        let position: atelier_store::Position = "12-3".parse().unwrap();
        assert_eq!(
            position.to_string(),
            "12-3",
            "the form POSITION_PATTERN describes"
        );
    }

    #[test]
    fn the_document_lists_login_and_every_project_operation_with_their_schemas() {
        let json = serde_json::to_value(openapi()).unwrap();
        let paths = &json["paths"];
        assert!(paths["/api/v1/auth/login"]["post"].is_object());
        for method in ["get", "post"] {
            assert!(
                paths["/api/v1/projects"][method].is_object(),
                "{method} /projects"
            );
        }
        for method in ["get", "put", "delete"] {
            assert!(
                paths["/api/v1/projects/{id}"][method].is_object(),
                "{method} /projects/{{id}}"
            );
        }
        assert_eq!(
            paths["/api/v1/projects"]["post"]["security"],
            serde_json::json!([{"bearer": []}, {"api_key": []}])
        );
        assert_eq!(
            paths["/api/v1/auth/logout"]["post"]["security"],
            serde_json::json!([{"bearer": []}]),
            "an API key cannot log out"
        );
        for (method, path) in crate::identity::auth::PERSON_ONLY {
            assert!(
                paths[*path][*method].is_object(),
                "{method} {path} is documented"
            );
        }
        let schemas = &json["components"]["schemas"];
        for schema in [
            "ProjectView",
            "ProjectBody",
            "LoginRequest",
            "TokenResponse",
        ] {
            assert!(schemas[schema].is_object(), "schema {schema} is missing");
        }
    }
}
