//! The audit API: `GET /api/v1/audit/events` (the log, filtered on who acted, through which
//! credential, for which organization, in which stream, as part of which request) and
//! `GET /api/v1/audit/streams/{stream}` (one stream's events). Admins of an organization read
//! theirs, superadmins every organization's; everyone else is refused (403).

use actix_web::{HttpRequest, HttpResponse, web};
use atelier_domain::identity::Permission;
use atelier_projections::audit::{AUDIT, AuditEntry, AuditFilter, Order, list_events};
use atelier_store::Position;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::conventions::await_projection;
use crate::kit::Principal;
use crate::pagination::{CursorPage, CursorPagination, DEFAULT_PER_PAGE, MAX_PER_PAGE, validate};
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// An event as the audit shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "position": "7421-93", "stream": "project-0193a5c2-7a4e-7cc1-9b1e-3f0a9a3c1d2e",
    "category": "project", "revision": 1, "event_id": "0193a5c2-8000-7cc1-9b1e-3f0a9a3c1d2e",
    "type": "ProjectUpdated", "occurred_at": "2026-12-06T10:00:00Z",
    "recorded_at": "2026-12-06T10:00:00.002Z",
    "org_id": "0193a5c1-0000-7000-8000-000000000001",
    "actor": "apikey:0193a5c1-0000-7000-8000-0000000000aa",
    "credential": "apikey:0193a5c1-0000-7000-8000-0000000000aa",
    "request_id": "0193a5c2-7fff-7cc1-9b1e-3f0a9a3c1d2e",
    "correlation_id": "0193a5c2-7fff-7cc1-9b1e-3f0a9a3c1d2e", "causation_id": null,
    "schema": 2, "data": {"project_id": "0193a5c2-7a4e-7cc1-9b1e-3f0a9a3c1d2e", "name": "billing", "updated_at": "2026-12-06T10:00:00Z"}
}))]
pub struct AuditEvent {
    /// Its place in the log.
    pub position: String,
    /// Its stream.
    pub stream: String,
    /// Its stream's category.
    pub category: String,
    /// Its revision in the stream.
    pub revision: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the command that caused it was issued.
    pub occurred_at: DateTime<Utc>,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The organization it acted for.
    pub org_id: Option<Uuid>,
    /// Who acted: a user id, `apikey:<id>`, `runner:<id>`, `system:<what>`.
    pub actor: Option<String>,
    /// The credential they acted through: `session:<id>` or `apikey:<id>`.
    pub credential: Option<String>,
    /// The HTTP request.
    pub request_id: Option<String>,
    /// What groups everything one request caused.
    pub correlation_id: Option<String>,
    /// The event or command that caused it.
    pub causation_id: Option<String>,
    /// The schema version its data was written in.
    pub schema: i32,
    /// Its data, as written (secrets are never in events).
    pub data: serde_json::Value,
}

impl From<AuditEntry> for AuditEvent {
    fn from(e: AuditEntry) -> Self {
        Self {
            position: e.position.to_string(),
            stream: e.stream,
            category: e.category,
            revision: e.revision,
            event_id: e.event_id,
            event_type: e.event_type,
            occurred_at: e.occurred_at,
            recorded_at: e.recorded_at,
            org_id: e.org_id,
            actor: e.actor,
            credential: e.credential,
            request_id: e.request_id,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            schema: e.schema,
            data: e.data,
        }
    }
}

/// The audit's filters. Text fields match exactly.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Who acted: a user id or `apikey:<id>`.
    pub actor: Option<String>,
    /// The credential that acted: `session:<id>` or `apikey:<id>`.
    pub credential: Option<String>,
    /// The organization (superadmins; others read only their own).
    #[param(value_type = Option<Uuid>)]
    pub organization: Option<String>,
    /// The stream (`project-<id>`).
    pub stream: Option<String>,
    /// The stream category (`project`, `deployment`, `org`…).
    pub category: Option<String>,
    /// The event type (`ProjectUpdated`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// The correlation id (one request's events).
    pub correlation_id: Option<String>,
    /// Recorded at or after this RFC 3339 time.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub since: Option<String>,
    /// Recorded before this RFC 3339 time.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub until: Option<String>,
    /// Only events after this position (`<commit>-<prepare>`).
    pub from_position: Option<String>,
    /// `newest` first (the default) or `oldest` first.
    #[param(value_type = Option<String>, pattern = "^(newest|oldest)$")]
    pub order: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Rows per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub per_page: Option<String>,
}

/// What a parsed query asks.
struct Query {
    filter: AuditFilter,
    order: Order,
    cursor: Option<Position>,
    per_page: u32,
}

fn text(raw: &Option<String>) -> Option<String> {
    raw.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn position(field: &str, raw: &Option<String>, errors: &mut Vec<FieldError>) -> Option<Position> {
    let raw = text(raw)?;
    raw.parse()
        .map_err(|_| {
            errors.push(FieldError {
                field: field.into(),
                message: "must be a log position: `<commit>-<prepare>`".into(),
            })
        })
        .ok()
}

fn time(field: &str, raw: &Option<String>, errors: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
    let raw = text(raw)?;
    DateTime::parse_from_rfc3339(&raw.replace(' ', "+"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            errors.push(FieldError {
                field: field.into(),
                message: "must be an RFC 3339 time (`2026-12-06T10:00:00Z`)".into(),
            })
        })
        .ok()
}

/// Parses the parameters and decides whose events the caller reads: their organization's as
/// an admin, any (or every) organization's as a superadmin.
fn parse(principal: &Principal, p: &AuditParams) -> Result<Query, ApiError> {
    let mut errors = Vec::new();
    let organization = text(&p.organization).and_then(|s| {
        Uuid::parse_str(&s)
            .map_err(|_| {
                errors.push(FieldError {
                    field: "organization".into(),
                    message: "must be an organization id (a UUID)".into(),
                })
            })
            .ok()
    });
    let since = time("since", &p.since, &mut errors);
    let until = time("until", &p.until, &mut errors);
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        errors.push(FieldError {
            field: "until".into(),
            message: "must not be before `since`".into(),
        });
    }
    let from_position = position("from_position", &p.from_position, &mut errors);
    let cursor = position("cursor", &p.cursor, &mut errors);
    let order = match text(&p.order).as_deref() {
        None | Some("newest") => Order::Newest,
        Some("oldest") => Order::Oldest,
        Some(_) => {
            errors.push(FieldError {
                field: "order".into(),
                message: "must be `newest` or `oldest`".into(),
            });
            Order::Newest
        }
    };
    let per_page = match text(&p.per_page) {
        None => DEFAULT_PER_PAGE,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_PER_PAGE).contains(&n) => n,
            _ => {
                errors.push(FieldError {
                    field: "per_page".into(),
                    message: format!("must be a whole number from 1 to {MAX_PER_PAGE}"),
                });
                DEFAULT_PER_PAGE
            }
        },
    };
    validate(errors)?;
    let org_id = if principal.is_superadmin {
        organization
    } else {
        match organization {
            Some(org) if org != principal.org_id => {
                return Err(ApiError::forbidden(
                    "only superadmins read another organization's audit",
                ));
            }
            _ => Some(principal.org_id),
        }
    };
    Ok(Query {
        filter: AuditFilter {
            org_id,
            actor: text(&p.actor),
            credential: text(&p.credential),
            stream: text(&p.stream),
            category: text(&p.category),
            event_type: text(&p.event_type),
            correlation_id: text(&p.correlation_id),
            since,
            until,
            from_position,
        },
        order,
        cursor,
        per_page,
    })
}

async fn page(
    state: &AppState,
    req: &HttpRequest,
    query: Query,
) -> Result<CursorPage<AuditEvent>, ApiError> {
    await_projection(state, req, AUDIT).await?;
    let (entries, has_next) = list_events(
        &state.pool,
        &query.filter,
        query.order,
        query.cursor,
        query.per_page,
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let next_cursor = has_next
        .then(|| entries.last().map(|e| e.position.to_string()))
        .flatten();
    Ok(CursorPage {
        data: entries.into_iter().map(AuditEvent::from).collect(),
        pagination: CursorPagination {
            per_page: query.per_page,
            has_next,
            next_cursor,
        },
    })
}

/// Reads the log as an audit trail: who did what, when, through which credential, as part of
/// which request. Paged by position: a cursor that new events never shift.
#[utoipa::path(
    get, path = "/api/v1/audit/events", tag = "audit", operation_id = "list_audit_events",
    params(AuditParams),
    responses(
        (status = 200, description = "A page of the log, filtered", body = CursorPage<AuditEvent>),
        (status = 400, description = "A filter is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin of the organization (or another organization without being a superadmin)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.audit.events", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    params: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Manage)?;
    let query = parse(&principal, &params)?;
    Ok(HttpResponse::Ok().json(page(&state, &req, query).await?))
}

/// Reads one stream's events as an audit trail, oldest first.
#[utoipa::path(
    get, path = "/api/v1/audit/streams/{stream}", tag = "audit", operation_id = "audit_stream",
    params(("stream" = String, Path, description = "The stream (`project-<id>`)"), AuditParams),
    responses(
        (status = 200, description = "The stream's events", body = CursorPage<AuditEvent>),
        (status = 400, description = "A filter is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin of the organization", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream in the organizations the caller reads", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.audit.stream", skip_all, fields(org = %principal.org_id))]
pub async fn stream(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    stream: web::Path<String>,
    params: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Manage)?;
    let mut params = params.into_inner();
    if params.order.is_none() {
        params.order = Some("oldest".into());
    }
    let mut query = parse(&principal, &params)?;
    let first_page = query.cursor.is_none() && query.filter.from_position.is_none();
    query.filter.stream = Some(stream.into_inner());
    let page = page(&state, &req, query).await?;
    if first_page && page.data.is_empty() {
        return Err(ApiError::not_found(
            "no such stream, or none of its events matches the filters",
        ));
    }
    Ok(HttpResponse::Ok().json(page))
}
