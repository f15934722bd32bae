//! History and time travel for every resource, written once: `GET /{resource}/{id}/history`
//! (each change: revision, type, who, when, through which credential), `GET /{resource}/{id}
//! ?as_of=<position or RFC 3339 time>` (the resource as it was, folded from its stream with the
//! domain's own `evolve`) and `GET /{resource}/{id}/diff?from=&to=` (what changed between two
//! revisions, field by field).
//!
//! A context gets all three by listing its aggregates in `Context::resources`
//! ([`resource`]): no handler of its own. Everything is read from the event store, never from
//! a read model, so it answers at once after a write and cannot drift from the log.

use actix_web::{HttpRequest, HttpResponse, guard, web};
use atelier_domain::Aggregate;
use atelier_domain::DomainEvent;
use atelier_domain::EventDecodeError;
use atelier_domain::identity::Permission;
use atelier_domain::identity::caller::UserSight;
use atelier_store::{Position, ReadStream, RecordedEvent, StreamName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::kit::{Principal, path_id};
use crate::pagination::{Page, PageParams, Pagination};
use crate::problem::{ApiError, FieldError};
use crate::state::AppState;

/// Folds a stream's events into the aggregate's state, as JSON.
pub type Fold = fn(&[RecordedEvent]) -> Result<serde_json::Value, EventDecodeError>;

/// Who may read a resource's past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// It belongs to the organization its first event was recorded for: its members with this
    /// permission see it; another organization's is not found.
    Tenant(Permission),
    /// It is the organization itself: its members see it.
    Organization,
    /// It is a user: as `Caller::sees_user` says (themselves, their organization's admins,
    /// superadmins).
    User,
}

/// A resource whose past the API serves.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    /// Its collection in paths: `projects` serves `/projects/{id}/history`.
    pub path: &'static str,
    /// Its name in answers and problems: `project`.
    pub what: &'static str,
    /// The stream category of its aggregate.
    pub category: &'static str,
    /// Who may read it.
    pub access: Access,
    /// How its state is folded.
    pub fold: Fold,
}

/// Declares aggregate `A` as the resource under `/{path}/{id}`.
pub const fn resource<A: Aggregate + Serialize>(
    path: &'static str,
    what: &'static str,
    access: Access,
) -> Resource {
    Resource {
        path,
        what,
        category: A::CATEGORY,
        access,
        fold: fold::<A>,
    }
}

/// Folds `events` with the domain's own `evolve`, reading each through its upcasters.
pub fn fold<A: Aggregate + Serialize>(
    events: &[RecordedEvent],
) -> Result<serde_json::Value, EventDecodeError> {
    let mut state = A::default();
    for e in events {
        state = state.evolve(&A::Event::decode_stored(
            &e.event_type,
            &e.metadata,
            &e.data,
        )?);
    }
    serde_json::to_value(&state).map_err(|e| EventDecodeError {
        event_type: A::CATEGORY.to_owned(),
        reason: e.to_string(),
    })
}

/// Every resource of every context.
pub fn resources() -> impl Iterator<Item = &'static Resource> {
    crate::contexts::ALL.iter().flat_map(|c| c.resources.iter())
}

/// Registers `/{path}/{id}/history`, `/{path}/{id}/diff` and `/{path}/{id}?as_of=` for every
/// resource. Mounted before the contexts' own routes: `?as_of=` takes the single-resource
/// `GET` only when the parameter is there.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for r in resources() {
        let data = web::Data::new(*r);
        cfg.service(
            web::resource(format!("/{}/{{id}}/history", r.path))
                .app_data(data.clone())
                .route(web::get().to(history)),
        )
        .service(
            web::resource(format!("/{}/{{id}}/diff", r.path))
                .app_data(data.clone())
                .route(web::get().to(diff)),
        )
        .service(
            web::resource(format!("/{}/{{id}}", r.path))
                .guard(guard::fn_guard(|ctx| {
                    ctx.head()
                        .uri
                        .query()
                        .is_some_and(|q| q.split('&').any(|p| p.starts_with("as_of=")))
                }))
                .app_data(data)
                .route(web::get().to(as_of)),
        );
    }
}

/// One change in a resource's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Change {
    /// Its revision in the resource's stream, from 0.
    pub revision: u64,
    /// Its place in the log.
    #[schema(value_type = String, example = "7421-93")]
    pub position: Position,
    /// What happened (the event's type).
    #[serde(rename = "type")]
    pub event_type: String,
    /// Who: a user id, `apikey:<id>`, `runner:<id>` or `system:<what>`.
    pub actor: Option<String>,
    /// Through which credential: `session:<id>` or `apikey:<id>`.
    pub credential: Option<String>,
    /// When the command was issued.
    pub occurred_at: DateTime<Utc>,
    /// The HTTP request that caused it.
    pub request_id: Option<String>,
    /// What groups everything that request caused.
    pub correlation_id: Option<String>,
    /// The schema version of `data`.
    pub schema: u32,
    /// The event's data, as recorded.
    pub data: serde_json::Value,
}

impl From<&RecordedEvent> for Change {
    fn from(e: &RecordedEvent) -> Self {
        let text = |k: &str| {
            e.metadata
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Self {
            revision: e.revision,
            position: e.position,
            event_type: e.event_type.clone(),
            actor: text("actor"),
            credential: text("credential"),
            occurred_at: text("occurred_at")
                .and_then(|t| t.parse().ok())
                .unwrap_or(e.created),
            request_id: text("request_id"),
            correlation_id: text("correlation_id"),
            schema: atelier_domain::aggregate::schema_of(&e.metadata),
            data: e.data.value().clone(),
        }
    }
}

/// The organization an event was recorded for (its metadata's `org_id`): for a stream's first
/// event, whose resource it is.
pub fn owner(event: &RecordedEvent) -> Option<Uuid> {
    event
        .metadata
        .get("org_id")
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// The events of the resource `id` names, once the caller may see it: a 404 when it does not
/// exist for them.
async fn stream_of(
    state: &AppState,
    principal: &Principal,
    r: &Resource,
    raw_id: &str,
) -> Result<(Uuid, Vec<RecordedEvent>), ApiError> {
    let id = path_id(raw_id, r.what)?;
    let missing = || ApiError::not_found(format!("no such {}", r.what));
    match r.access {
        Access::Tenant(permission) => principal.require(permission)?,
        Access::Organization => {
            principal.require(Permission::Read)?;
            if id != principal.org_id && !principal.is_superadmin {
                return Err(missing());
            }
        }
        Access::User => match principal.sees_user(id) {
            UserSight::Yes => {}
            UserSight::IfMemberOf(org) => {
                let member = atelier_projections::identity::is_member(&state.pool, org, id)
                    .await
                    .map_err(|e| ApiError::internal(&e))?;
                if !member {
                    return Err(missing());
                }
            }
            UserSight::No => return Err(missing()),
        },
    }
    let stream = StreamName::new(format!("{}-{id}", r.category)).map_err(|_| missing())?;
    let events = match state
        .store
        .read_stream(&stream, ReadStream::forward())
        .await
    {
        Ok(events) => events,
        Err(atelier_store::StoreError::StreamDeleted { .. }) => return Err(missing()),
        Err(e) => return Err(ApiError::internal(&e)),
    };
    let Some(first) = events.first() else {
        return Err(missing());
    };
    if let Access::Tenant(_) = r.access
        && owner(first) != Some(principal.org_id)
    {
        return Err(missing());
    }
    Ok((id, events))
}

/// The changes of one resource, oldest first, paged.
#[tracing::instrument(name = "http.history", skip_all, fields(resource = r.what))]
async fn history(
    state: web::Data<AppState>,
    principal: Principal,
    r: web::Data<Resource>,
    id: web::Path<String>,
    page: web::Query<PageParams>,
) -> Result<HttpResponse, ApiError> {
    let (page_no, per_page) = page.parse().map_err(ApiError::validation)?;
    let (_, events) = stream_of(&state, &principal, &r, &id).await?;
    let total = events.len() as u64;
    let start = (u64::from(page_no - 1) * u64::from(per_page)).min(total) as usize;
    let data: Vec<Change> = events
        .iter()
        .skip(start)
        .take(per_page as usize)
        .map(Change::from)
        .collect();
    Ok(HttpResponse::Ok().json(Page {
        data,
        pagination: Pagination::new(page_no, per_page, total),
    }))
}

/// `?as_of=`: a position (`commit-prepare`) or an RFC 3339 time.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AsOfParams {
    /// The position or time to look at the resource as of (`7421-93`, `2026-12-06T10:00:00Z`).
    pub as_of: String,
}

/// A moment of the log: a position, or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Everything up to this position, inclusive.
    Position(Position),
    /// Everything recorded at or before this time.
    Time(DateTime<Utc>),
}

impl Moment {
    /// Parses `as_of`: a position, else an RFC 3339 time (a `+` that a query string turned
    /// into a space is taken back).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        if let Ok(p) = raw.parse::<Position>() {
            return Ok(Self::Position(p));
        }
        DateTime::parse_from_rfc3339(&raw.replace(' ', "+"))
            .map(|t| Self::Time(t.with_timezone(&Utc)))
            .map_err(|_| FieldError {
                field: "as_of".into(),
                message: "must be a log position (`<commit>-<prepare>`) or an RFC 3339 time".into(),
            })
    }

    fn includes(&self, e: &RecordedEvent) -> bool {
        match self {
            Self::Position(p) => e.position <= *p,
            Self::Time(t) => e.created <= *t,
        }
    }
}

/// A resource as it was.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PastState {
    /// The kind of resource (`project`).
    pub resource: String,
    /// Its id.
    pub id: Uuid,
    /// What was asked.
    pub as_of: String,
    /// Its revision then.
    pub revision: u64,
    /// The position of that revision.
    #[schema(value_type = String, example = "7421-93")]
    pub position: Position,
    /// When that revision was recorded.
    pub changed_at: DateTime<Utc>,
    /// Its state then, folded from its events by the domain (`state`: `active`, `present`,
    /// `deleted`…, and its fields).
    pub state: serde_json::Value,
}

/// `GET /{resource}/{id}?as_of=`.
#[tracing::instrument(name = "http.as_of", skip_all, fields(resource = r.what))]
async fn as_of(
    state: web::Data<AppState>,
    principal: Principal,
    r: web::Data<Resource>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params = web::Query::<AsOfParams>::from_query(req.query_string())
        .map_err(|_| ApiError::invalid_field("as_of", "must be given once"))?;
    let moment = Moment::parse(&params.as_of).map_err(|e| ApiError::validation(vec![e]))?;
    let (id, events) = stream_of(&state, &principal, &r, &id).await?;
    let upto = events.iter().take_while(|e| moment.includes(e)).count();
    let Some(last) = upto.checked_sub(1).map(|i| &events[i]) else {
        return Err(ApiError::not_found(format!(
            "the {} did not exist as of {}",
            r.what,
            params.as_of.trim()
        )));
    };
    let folded = (r.fold)(&events[..upto]).map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(PastState {
        resource: r.what.to_owned(),
        id,
        as_of: params.as_of.trim().to_owned(),
        revision: last.revision,
        position: last.position,
        changed_at: last.created,
        state: folded,
    }))
}

/// `?from=&to=`: two revisions.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffParams {
    /// The earlier revision (default: the first, the creation).
    #[param(value_type = Option<u64>)]
    pub from: Option<String>,
    /// The later revision (default: the current one).
    #[param(value_type = Option<u64>)]
    pub to: Option<String>,
}

/// One field that changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FieldChange {
    /// The field, as a JSON pointer into the state (`/name`, `/members/0190…`).
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// Its value at `from` (absent when added).
    pub from: Option<serde_json::Value>,
    /// Its value at `to` (absent when removed).
    pub to: Option<serde_json::Value>,
}

/// What changed between two revisions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Diff {
    /// The kind of resource.
    pub resource: String,
    /// Its id.
    pub id: Uuid,
    /// The earlier revision.
    pub from: u64,
    /// The later revision.
    pub to: u64,
    /// The fields that differ, in document order.
    pub changes: Vec<FieldChange>,
}

/// `GET /{resource}/{id}/diff`.
#[tracing::instrument(name = "http.diff", skip_all, fields(resource = r.what))]
async fn diff(
    state: web::Data<AppState>,
    principal: Principal,
    r: web::Data<Resource>,
    id: web::Path<String>,
    params: web::Query<DiffParams>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = Vec::new();
    let mut revision = |field: &str, raw: &Option<String>| match raw.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(FieldError {
                    field: field.into(),
                    message: "must be a revision: a whole number from 0".into(),
                });
                None
            }
        },
    };
    let from = revision("from", &params.from);
    let to = revision("to", &params.to);
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        errors.push(FieldError {
            field: "from".into(),
            message: "must not be after `to`".into(),
        });
    }
    crate::pagination::validate(errors)?;
    let (id, events) = stream_of(&state, &principal, &r, &id).await?;
    let last = events.last().map_or(0, |e| e.revision);
    let from = from.unwrap_or(events.first().map_or(0, |e| e.revision));
    let to = to.unwrap_or(last);
    if from > to {
        return Err(ApiError::invalid_field("from", "must not be after `to`"));
    }
    let upto = |rev: u64| -> Result<serde_json::Value, ApiError> {
        let n = events.iter().take_while(|e| e.revision <= rev).count();
        if n.checked_sub(1)
            .and_then(|i| events.get(i))
            .map(|e| e.revision)
            != Some(rev)
        {
            return Err(ApiError::not_found(format!(
                "the {} has no revision {rev} (its last is {last})",
                r.what
            )));
        }
        (r.fold)(&events[..n]).map_err(|e| ApiError::internal(&e))
    };
    let (before, after) = (upto(from)?, upto(to)?);
    Ok(HttpResponse::Ok().json(Diff {
        resource: r.what.to_owned(),
        id,
        from,
        to,
        changes: changes(&before, &after),
    }))
}

/// The fields that differ between two states, from a JSON Patch (RFC 6902) between them.
pub fn changes(before: &serde_json::Value, after: &serde_json::Value) -> Vec<FieldChange> {
    use json_patch::PatchOperation as Op;
    json_patch::diff(before, after)
        .0
        .into_iter()
        .filter_map(|op| {
            let (path, change, to) = match op {
                Op::Add(a) => (a.path.to_string(), "added", Some(a.value)),
                Op::Remove(r) => (r.path.to_string(), "removed", None),
                Op::Replace(r) => (r.path.to_string(), "changed", Some(r.value)),
                // A diff only adds, removes and replaces.
                _ => return None,
            };
            let from = (change != "added")
                .then(|| before.pointer(&path).cloned())
                .flatten();
            Some(FieldChange {
                path,
                change: change.to_owned(),
                from,
                to,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_diff_names_each_field_that_changed_with_both_values() {
        let before = json!({"state": "active", "name": "A", "repo": "r", "tags": {"x": 1}});
        let after = json!({"state": "active", "name": "C", "tags": {"x": 1, "y": 2}});
        let c = changes(&before, &after);
        let find = |p: &str| c.iter().find(|c| c.path == p).unwrap();
        assert_eq!(find("/name").change, "changed");
        assert_eq!(find("/name").from, Some(json!("A")));
        assert_eq!(find("/name").to, Some(json!("C")));
        assert_eq!(find("/repo").change, "removed");
        assert_eq!(find("/repo").from, Some(json!("r")));
        assert_eq!(find("/tags/y").change, "added");
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn as_of_takes_a_position_or_a_time_and_nothing_else() {
        assert_eq!(
            Moment::parse("12-3").unwrap(),
            Moment::Position(Position::new(12, 3))
        );
        assert!(matches!(
            Moment::parse("2026-12-06T10:00:00Z"),
            Ok(Moment::Time(_))
        ));
        // A `+` a query string decoded as a space.
        assert!(matches!(
            Moment::parse("2026-12-06T10:00:00 01:00"),
            Ok(Moment::Time(_))
        ));
        for bad in ["", "yesterday", "12", "2026-13-01T00:00:00Z"] {
            assert!(Moment::parse(bad).is_err(), "{bad:?}");
        }
    }
}

/// The template of a history operation, copied for each resource by [`HistoryDocs`].
#[utoipa::path(
    get, path = "/api/v1/{resource}/{id}/history", tag = "audit",
    params(("id" = Uuid, Path, description = "The resource's id"), PageParams),
    responses(
        (status = 200, description = "Every change, oldest first: revision, type, who, when, through which credential", body = Page<Change>),
        (status = 404, description = "No such resource for the caller", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn history_doc() {}

/// The template of a diff operation, copied for each resource by [`HistoryDocs`].
#[utoipa::path(
    get, path = "/api/v1/{resource}/{id}/diff", tag = "audit",
    params(("id" = Uuid, Path, description = "The resource's id"), DiffParams),
    responses(
        (status = 200, description = "The fields that changed between the two revisions", body = Diff,
         example = json!({"resource": "project", "id": "0193a5c2-7a4e-7cc1-9b1e-3f0a9a3c1d2e", "from": 0, "to": 2,
                          "changes": [{"path": "/name", "change": "changed", "from": "billing", "to": "invoicing"}]})),
        (status = 400, description = "A revision is malformed, or `from` is after `to`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such resource, or no such revision", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn diff_doc() {}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(history_doc, diff_doc),
    components(schemas(Change, Diff, FieldChange, PastState))
)]
struct Templates;

/// Adds `/{path}/{id}/history` and `/{path}/{id}/diff` for every resource, and the `as_of`
/// parameter to its single-resource `GET`.
pub struct HistoryDocs;

impl utoipa::Modify for HistoryDocs {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::OpenApi;
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::AnyOfBuilder;
        use utoipa::openapi::{ObjectBuilder, Ref, RefOr, Required, Schema, Type};
        let mut templates = Templates::openapi();
        let mut take = |path: &str| templates.paths.paths.remove(path).and_then(|p| p.get);
        let (Some(history), Some(diff)) = (
            take("/api/v1/{resource}/{id}/history"),
            take("/api/v1/{resource}/{id}/diff"),
        ) else {
            return;
        };
        for r in resources() {
            let slug = r.what.replace(' ', "_").to_lowercase();
            for (suffix, template, verb) in
                [("history", &history, "history"), ("diff", &diff, "diff")]
            {
                let mut op = template.clone();
                op.operation_id = Some(format!("{slug}_{verb}"));
                op.summary = Some(match verb {
                    "history" => format!("Every change of a {}", r.what),
                    _ => format!("What changed in a {} between two revisions", r.what),
                });
                let mut item = utoipa::openapi::PathItem::default();
                item.get = Some(op);
                doc.paths
                    .paths
                    .insert(format!("/api/v1/{}/{{id}}/{suffix}", r.path), item);
            }
            let prefix = format!("/api/v1/{}/{{", r.path);
            for (path, item) in doc.paths.paths.iter_mut() {
                let single = path.starts_with(&prefix) && path[prefix.len()..].find('/').is_none();
                let Some(get) = item.get.as_mut().filter(|_| single) else {
                    continue;
                };
                let as_of = ParameterBuilder::new()
                    .name("as_of")
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(format!(
                        "Time travel: the {} as it was at this log position (`<commit>-<prepare>`) \
                         or RFC 3339 time, folded from its events; the answer is then a \
                         `PastState` (404 when it did not exist yet)",
                        r.what
                    )))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .build();
                get.parameters
                    .get_or_insert_with(Vec::new)
                    .push(as_of.into());
                // With `as_of`, the answer is the past state: the 200 is one or the other.
                if let Some(RefOr::T(ok)) = get.responses.responses.get_mut("200") {
                    for content in ok.content.values_mut() {
                        let RefOr::T(content) = content else {
                            continue;
                        };
                        if let Some(now) = content.schema.take() {
                            let either = AnyOfBuilder::new()
                                .item(now)
                                .item(Ref::from_schema_name("PastState"))
                                .build();
                            content.schema = Some(RefOr::T(Schema::AnyOf(either)));
                        }
                    }
                }
            }
        }
        if let Some(components) = templates.components
            && let Some(mine) = doc.components.as_mut()
        {
            mine.schemas.extend(components.schemas);
        }
    }
}
