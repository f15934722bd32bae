//! Detections (Sentinel's events; the word event belongs to the log): `GET`/`POST
//! /detections`, `GET /detections/stats`, `GET`/`PATCH`/`DELETE /detections/{id}`,
//! `POST /detections/{id}/acknowledge`, `POST /detections/acknowledge` (bulk) and
//! `GET /detections/{id}/snapshot`.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::surveillance::detections::{RecordError, Report};
use atelier_domain::identity::Permission;
use atelier_domain::surveillance::detection::{
    BoundingBox, Confidence, DetectionError, DetectionType, Severity, Source, parse_description,
    parse_notes,
};
use atelier_projections::surveillance::{
    AcknowledgementRow, DETECTION_SORTS, DETECTIONS, DetectionFilter, DetectionRow, DetectionStats,
    acknowledgements, camera_names, detection_stats, get_detection, list_detections,
};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::conventions::{
    Reply, await_projection, command_error, etag, idempotent, if_match, json_body,
};
use crate::kit::{Principal, command_context, path_id};
use crate::pagination::{CursorParams, KeysetPage, PageParams};
use crate::problem::{ApiError, FieldError, Problem, collect};
use crate::state::AppState;

/// The largest snapshot a detector may send, in bytes (decoded).
pub const MAX_SNAPSHOT_BYTES: usize = 1024 * 1024;
/// The most detections one bulk acknowledgement names.
pub const MAX_BULK: usize = 500;

/// Where in the frame, as shares of its width and height (0 to 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BoxView {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// One person's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AcknowledgementView {
    /// Who (a user id).
    pub user_id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
}

/// A detection, as the API shows it (Sentinel's `EventResponse`, with who acknowledged it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "0193a0c4-6b7e-7c1a-9c51-0a6c7e1d2f3b",
    "camera_id": "0193a0c4-5b7e-7c1a-9c51-0a6c7e1d2f3a", "camera_name": "Entrance",
    "type": "motion", "severity": "low", "confidence": 0.82,
    "bbox": {"x": 0.31, "y": 0.39, "width": 0.13, "height": 0.22},
    "snapshot_url": "/api/v1/detections/0193a0c4-6b7e-7c1a-9c51-0a6c7e1d2f3b/snapshot",
    "description": "motion over 2.9% of the frame", "source": {"kind": "pipeline", "detector": "motion"},
    "timestamp": "2026-12-06T10:00:04Z", "notes": "", "acknowledged": true, "acknowledged_by_me": false,
    "acknowledgements": [{"user_id": "0193a0c4-0000-7000-8000-000000000001", "at": "2026-12-06T10:01:00Z"}],
    "time_to_acknowledge_seconds": 56.0, "revision": 1}))]
pub struct DetectionView {
    /// Its id.
    pub id: Uuid,
    /// The camera that saw it.
    pub camera_id: Uuid,
    /// The camera's name (`null` once the camera is deleted).
    pub camera_name: Option<String>,
    /// What was seen: person, vehicle, animal, intrusion, fall, motion, fire, smoke,
    /// loitering, package, other.
    #[serde(rename = "type")]
    pub detection_type: String,
    /// low, medium, high or critical.
    pub severity: String,
    /// From 0 to 1.
    pub confidence: f64,
    /// Where in the frame.
    pub bbox: Option<BoxView>,
    /// The JPEG snapshot's address, if one was kept.
    pub snapshot_url: Option<String>,
    /// What the detector said.
    pub description: String,
    /// Who reported it: `{"kind": "pipeline", "detector": "motion"}` or `{"kind": "api"}`.
    #[schema(value_type = Object)]
    pub source: serde_json::Value,
    /// When it was seen.
    pub timestamp: DateTime<Utc>,
    /// Notes.
    pub notes: String,
    /// Whether anyone acknowledged it.
    pub acknowledged: bool,
    /// Whether the caller did.
    pub acknowledged_by_me: bool,
    /// Who acknowledged it and when, in order.
    pub acknowledgements: Vec<AcknowledgementView>,
    /// Seconds from the detection to its first acknowledgement.
    pub time_to_acknowledge_seconds: Option<f64>,
    /// Its revision: the `ETag`.
    pub revision: u64,
}

fn snapshot_url(id: Uuid) -> String {
    format!("/api/v1/detections/{id}/snapshot")
}

/// Views of rows, with their cameras' names and acknowledgements, for `caller`.
async fn views(
    state: &AppState,
    org_id: Uuid,
    caller: Uuid,
    rows: Vec<DetectionRow>,
) -> Result<Vec<DetectionView>, ApiError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut cameras: Vec<Uuid> = rows.iter().map(|r| r.camera_id).collect();
    cameras.sort();
    cameras.dedup();
    let names = camera_names(&state.pool, org_id, &cameras)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut acks: HashMap<Uuid, Vec<AcknowledgementRow>> = HashMap::new();
    for a in acknowledgements(&state.pool, org_id, &ids)
        .await
        .map_err(|e| ApiError::internal(&e))?
    {
        acks.entry(a.detection_id).or_default().push(a);
    }
    rows.into_iter()
        .map(|r| {
            let acks = acks.remove(&r.id).unwrap_or_default();
            Ok(DetectionView {
                id: r.id,
                camera_id: r.camera_id,
                camera_name: names.get(&r.camera_id).cloned(),
                detection_type: r.detection_type,
                severity: r.severity,
                confidence: r.confidence,
                bbox: r
                    .bbox
                    .map(serde_json::from_value::<BoxView>)
                    .transpose()
                    .map_err(ApiError::bug)?,
                snapshot_url: r.snapshot_id.map(|_| snapshot_url(r.id)),
                description: r.description,
                source: r.source,
                timestamp: r.occurred_at,
                notes: r.notes,
                acknowledged: r.acknowledged,
                acknowledged_by_me: acks.iter().any(|a| a.user_id == caller),
                time_to_acknowledge_seconds: r
                    .first_acknowledged_at
                    .map(|at| (at - r.occurred_at).num_milliseconds() as f64 / 1000.0),
                acknowledgements: acks
                    .into_iter()
                    .map(|a| AcknowledgementView {
                        user_id: a.user_id,
                        at: a.at,
                    })
                    .collect(),
                revision: r.revision as u64,
            })
        })
        .collect()
}

async fn one(state: &AppState, principal: &Principal, id: Uuid) -> Result<DetectionView, ApiError> {
    let row = get_detection(&state.pool, principal.org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such detection"))?;
    views(state, principal.org_id, principal.user_id, vec![row])
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found("no such detection"))
}

fn rejected(e: DetectionError) -> ApiError {
    match e {
        DetectionError::NotFound => ApiError::not_found("no such detection"),
        DetectionError::AlreadyExists => ApiError::conflict("the detection already exists"),
    }
}

fn record_rejected(e: RecordError) -> ApiError {
    match e {
        RecordError::UnknownCamera => {
            ApiError::invalid_field("camera_id", "no such camera in this organization")
        }
        RecordError::Detection(e) => rejected(e),
    }
}

/// List and statistics parameters (Sentinel's `EventFilters`).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilterParams {
    /// One camera's detections.
    #[param(value_type = Option<Uuid>)]
    pub camera_id: Option<String>,
    /// Types, comma-separated (`person,vehicle`).
    #[serde(rename = "type")]
    pub detection_type: Option<String>,
    /// Severities, comma-separated (`high,critical`).
    pub severity: Option<String>,
    /// `true`: acknowledged by someone; `false`: by nobody.
    #[param(value_type = Option<bool>)]
    pub acknowledged: Option<String>,
    /// Seen at or after (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub start_time: Option<String>,
    /// Seen before (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub end_time: Option<String>,
    /// At least this confident (0 to 1).
    #[param(value_type = Option<f64>)]
    pub min_confidence: Option<String>,
    /// Wait until the answer reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

impl FilterParams {
    fn parse(&self, errors: &mut Vec<FieldError>) -> DetectionFilter {
        let time = |field: &str, raw: &Option<String>, errors: &mut Vec<FieldError>| {
            raw.as_deref()
                .and_then(|s| match DateTime::parse_from_rfc3339(s.trim()) {
                    Ok(t) => Some(t.with_timezone(&Utc)),
                    Err(_) => {
                        errors.push(field_error(
                            field,
                            "must be an RFC 3339 time (2026-12-06T10:00:00Z)",
                        ));
                        None
                    }
                })
        };
        let since = time("start_time", &self.start_time, errors);
        let until = time("end_time", &self.end_time, errors);
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            errors.push(field_error("end_time", "must be after start_time"));
        }
        let list = |raw: &Option<String>| -> Vec<String> {
            raw.as_deref()
                .map(|s| {
                    s.split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let types = list(&self.detection_type)
            .iter()
            .filter_map(|t| collect(errors, DetectionType::parse("type", t)))
            .collect();
        let severities = list(&self.severity)
            .iter()
            .filter_map(|s| collect(errors, Severity::parse("severity", s)))
            .collect();
        let camera_id = self
            .camera_id
            .as_deref()
            .and_then(|s| match Uuid::parse_str(s.trim()) {
                Ok(id) => Some(id),
                Err(_) => {
                    errors.push(field_error("camera_id", "must be a camera's id (a UUID)"));
                    None
                }
            });
        let acknowledged = self.acknowledged.as_deref().and_then(|s| match s.trim() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                errors.push(field_error("acknowledged", "must be true or false"));
                None
            }
        });
        let min_confidence = self.min_confidence.as_deref().and_then(|s| {
            match s
                .trim()
                .parse::<f64>()
                .ok()
                .map(|v| Confidence::parse("min_confidence", v))
            {
                Some(Ok(c)) => Some(c.get()),
                _ => {
                    errors.push(field_error(
                        "min_confidence",
                        "must be a number from 0 to 1",
                    ));
                    None
                }
            }
        });
        DetectionFilter {
            camera_id,
            types,
            severities,
            acknowledged,
            since,
            until,
            min_confidence,
        }
    }
}

/// Lists the organization's detections, newest first, by page number or by keyset cursor.
///
/// Every page carries `pagination.next_cursor`: `cursor=<next_cursor>` answers the detections
/// after that page's last one (with the same filters), with a cost that does not grow with the
/// depth, and detections recorded meanwhile do not shift it. Without filters `total` is exact
/// (a count the read model keeps); with one, it counts at most 10,000 matches (`total_capped`
/// says when it stopped: the total is then a lower bound). `has_next` is exact either way.
#[utoipa::path(
    get, path = "/api/v1/detections", tag = "surveillance", operation_id = "list_detections",
    params(PageParams, CursorParams, FilterParams),
    responses(
        (status = 200, description = "A page of detections", body = KeysetPage<DetectionView>),
        (status = 400, description = "Invalid filters, every one named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.detections.list", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
    cursor: web::Query<CursorParams>,
    params: web::Query<FilterParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let paging = crate::pagination::paging(&DETECTION_SORTS, &page, &cursor, None, &mut errors);
    let filter = params.parse(&mut errors);
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, DETECTIONS).await?;
    let listed = list_detections(&state.pool, principal.org_id, &filter, &paging)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let data = views(&state, principal.org_id, principal.user_id, listed.rows).await?;
    Ok(HttpResponse::Ok().json(KeysetPage::with(
        &paging,
        data,
        listed.total,
        listed.next.as_ref(),
    )))
}

/// Statistics over detections.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({"total": 12, "unacknowledged": 9,
    "by_type": {"motion": 10, "person": 2}, "by_severity": {"low": 10, "medium": 2, "high": 0, "critical": 0},
    "by_camera": {"0193a0c4-5b7e-7c1a-9c51-0a6c7e1d2f3a": 12},
    "per_hour": [{"hour": "2026-12-06T10:00:00Z", "count": 12}],
    "time_to_acknowledge": {"acknowledged": 3, "mean_seconds": 41.0, "median_seconds": 35.5, "p90_seconds": 70.2}}))]
pub struct DetectionStatsView {
    /// Detections in all.
    pub total: u64,
    /// Acknowledged by nobody.
    pub unacknowledged: u64,
    /// By type.
    pub by_type: std::collections::BTreeMap<String, u64>,
    /// By severity (each present).
    pub by_severity: std::collections::BTreeMap<String, u64>,
    /// By camera id.
    pub by_camera: std::collections::BTreeMap<Uuid, u64>,
    /// Per hour over the last 24 hours, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub per_hour: Vec<serde_json::Value>,
    /// Seconds from detection to first acknowledgement.
    #[schema(value_type = Object)]
    pub time_to_acknowledge: serde_json::Value,
}

impl From<DetectionStats> for DetectionStatsView {
    fn from(s: DetectionStats) -> Self {
        Self {
            total: s.total,
            unacknowledged: s.unacknowledged,
            by_type: s.by_type,
            by_severity: s.by_severity,
            by_camera: s.by_camera,
            per_hour: s
                .per_hour
                .iter()
                .map(|h| serde_json::json!({"hour": h.hour, "count": h.count}))
                .collect(),
            time_to_acknowledge: serde_json::to_value(&s.time_to_acknowledge).unwrap_or_default(),
        }
    }
}

/// Statistics over the organization's detections (the same filters as the list): by type,
/// severity and camera, per hour over the last 24 hours, and the time to acknowledge.
#[utoipa::path(
    get, path = "/api/v1/detections/stats", tag = "surveillance", operation_id = "detection_stats",
    params(FilterParams),
    responses(
        (status = 200, description = "The statistics", body = DetectionStatsView),
        (status = 400, description = "Invalid filters, every one named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.detections.stats", skip_all, fields(org = %principal.org_id))]
pub async fn stats(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    params: web::Query<FilterParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let filter = params.parse(&mut errors);
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, DETECTIONS).await?;
    let stats = detection_stats(&state.pool, principal.org_id, &filter, Utc::now())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(DetectionStatsView::from(stats)))
}

/// A detection from an external detector (Sentinel's `EventCreate`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"camera_id": "0193a0c4-5b7e-7c1a-9c51-0a6c7e1d2f3a", "type": "person",
    "severity": "medium", "confidence": 0.91, "bbox": {"x": 0.4, "y": 0.2, "width": 0.1, "height": 0.5},
    "description": "person at the door"}))]
pub struct DetectionBody {
    /// The camera (one of the organization's).
    pub camera_id: String,
    /// What was seen.
    #[serde(rename = "type")]
    pub detection_type: String,
    /// How serious (default: by type; fire, smoke and fall are critical).
    pub severity: Option<String>,
    /// From 0 to 1.
    pub confidence: f64,
    /// Where in the frame.
    pub bbox: Option<BoxView>,
    /// A JPEG, base64 (at most 1 MiB decoded).
    pub snapshot: Option<String>,
    /// What the detector said (up to 500 characters).
    #[serde(default)]
    pub description: String,
    /// When it was seen (default: now); not in the future.
    pub timestamp: Option<DateTime<Utc>>,
}

/// Records a detection from an external detector; it reaches the live feed as `new_event`.
#[utoipa::path(
    post, path = "/api/v1/detections", tag = "surveillance", operation_id = "create_detection",
    request_body = DetectionBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request")),
    responses(
        (status = 201, description = "Recorded", body = DetectionView),
        (status = 400, description = "Invalid fields, every one named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.detections.create", skip_all, fields(org = %principal.org_id))]
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let b = json_body::<DetectionBody>(&req, &body)?;
    let mut errors = Vec::new();
    let camera_id = match Uuid::parse_str(b.camera_id.trim()) {
        Ok(id) => Some(id),
        Err(_) => {
            errors.push(field_error("camera_id", "must be a camera's id (a UUID)"));
            None
        }
    };
    let detection_type = collect(&mut errors, DetectionType::parse("type", &b.detection_type));
    let severity = match &b.severity {
        Some(s) => collect(&mut errors, Severity::parse("severity", s)).map(Some),
        None => Some(None),
    };
    let confidence = collect(&mut errors, Confidence::parse("confidence", b.confidence));
    let bbox = match b.bbox {
        Some(v) => match BoundingBox::parse(v.x, v.y, v.width, v.height) {
            Ok(bbox) => Some(Some(bbox)),
            Err(found) => {
                errors.extend(found.into_iter().map(|e| field_error(e.field, e.message)));
                None
            }
        },
        None => Some(None),
    };
    let description = collect(&mut errors, parse_description(&b.description));
    let snapshot = match &b.snapshot {
        None => Some(None),
        Some(text) => match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
            Ok(bytes) if bytes.len() > MAX_SNAPSHOT_BYTES => {
                errors.push(field_error("snapshot", "must be at most 1 MiB"));
                None
            }
            Ok(bytes) if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) => Some(Some(bytes)),
            Ok(_) => {
                errors.push(field_error("snapshot", "must be a JPEG image"));
                None
            }
            Err(_) => {
                errors.push(field_error("snapshot", "must be base64"));
                None
            }
        },
    };
    let now = Utc::now();
    if b.timestamp
        .is_some_and(|t| t > now + chrono::Duration::minutes(1))
    {
        errors.push(field_error("timestamp", "must not be in the future"));
    }
    let (
        Some(camera_id),
        Some(detection_type),
        Some(severity),
        Some(confidence),
        Some(bbox),
        Some(description),
        Some(snapshot),
        true,
    ) = (
        camera_id,
        detection_type,
        severity,
        confidence,
        bbox,
        description,
        snapshot,
        errors.is_empty(),
    )
    else {
        return Err(ApiError::validation(errors));
    };
    idempotent(&state, &req, principal.org_id, &body, async || {
        let written = state
            .surveillance
            .detections
            .record(
                &command_context(&principal),
                Report {
                    camera_id,
                    detection_type,
                    severity,
                    confidence,
                    bbox,
                    snapshot: snapshot.clone(),
                    description: description.clone(),
                    source: Source::Api,
                    occurred_at: b.timestamp,
                },
            )
            .await
            .map_err(|e| command_error(e, record_rejected))?;
        let d = written
            .state
            .present()
            .ok_or_else(|| ApiError::bug("a recorded detection is present"))?;
        let view = DetectionView {
            id: d.id,
            camera_id: d.camera_id,
            camera_name: None,
            detection_type: d.detection_type.as_str().to_owned(),
            severity: d.severity.as_str().to_owned(),
            confidence: d.confidence.get(),
            bbox: d.bbox.map(|b| BoxView {
                x: b.x,
                y: b.y,
                width: b.width,
                height: b.height,
            }),
            snapshot_url: d.snapshot.map(|_| snapshot_url(d.id)),
            description: d.description.clone(),
            source: serde_json::to_value(&d.source).unwrap_or_default(),
            timestamp: d.occurred_at,
            notes: String::new(),
            acknowledged: false,
            acknowledged_by_me: false,
            acknowledgements: Vec::new(),
            time_to_acknowledge_seconds: None,
            revision: written.revision.unwrap_or(0),
        };
        Ok(Reply::json(StatusCode::CREATED, &view)
            .header("location", format!("/api/v1/detections/{}", view.id))
            .etag(written.revision)
            .position(written.position))
    })
    .await
}

/// Query parameters of a single detection.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Wait until the detection reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Reads a detection.
#[utoipa::path(
    get, path = "/api/v1/detections/{id}", tag = "surveillance", operation_id = "get_detection",
    params(("id" = Uuid, Path, description = "The detection's id"), GetParams),
    responses(
        (status = 200, description = "The detection", body = DetectionView),
        (status = 404, description = "No such detection in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.detections.get", skip_all, fields(org = %principal.org_id))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "detection")?;
    await_projection(&state, &req, DETECTIONS).await?;
    let view = one(&state, &principal, id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(view.revision)))
        .json(view))
}

/// The JPEG snapshot of a detection.
#[utoipa::path(
    get, path = "/api/v1/detections/{id}/snapshot", tag = "surveillance", operation_id = "get_detection_snapshot",
    params(("id" = Uuid, Path, description = "The detection's id")),
    responses(
        (status = 200, description = "The JPEG", content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, description = "No such detection, or no snapshot", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.detections.snapshot", skip_all, fields(org = %principal.org_id))]
pub async fn snapshot(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "detection")?;
    let (detection, _) = state
        .surveillance
        .detections
        .get(principal.org_id, id)
        .await
        .map_err(|e| command_error(e, rejected))?
        .ok_or_else(|| ApiError::not_found("no such detection"))?;
    let snapshot = detection
        .present()
        .and_then(|d| d.snapshot)
        .ok_or_else(|| ApiError::not_found("this detection has no snapshot"))?;
    let jpeg = state
        .surveillance
        .detections
        .snapshots()
        .get(principal.org_id, snapshot.id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("this detection has no snapshot"))?;
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header(("cache-control", "private, max-age=86400, immutable"))
        .body(jpeg))
}

/// A change (Sentinel's `EventUpdate`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(example = json!({"notes": "the postman", "acknowledged": true}))]
pub struct DetectionUpdateBody {
    /// New notes (up to 2000 characters).
    pub notes: Option<String>,
    /// `true`: the caller acknowledges it; `false`: the caller withdraws their acknowledgement.
    pub acknowledged: Option<bool>,
}

/// Changes a detection's notes, or the caller's acknowledgement.
#[utoipa::path(
    patch, path = "/api/v1/detections/{id}", tag = "surveillance", operation_id = "update_detection",
    request_body = DetectionUpdateBody,
    params(
        ("id" = Uuid, Path, description = "The detection's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on"),
    ),
    responses(
        (status = 200, description = "Changed", body = DetectionView),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such detection in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.detections.update", skip_all, fields(org = %principal.org_id))]
pub async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "detection")?;
    let mut expected = if_match(req.headers())?;
    let b = json_body::<DetectionUpdateBody>(&req, &body)?;
    let notes = match &b.notes {
        Some(n) => Some(parse_notes(n).map_err(|e| ApiError::invalid_field(e.field, e.message))?),
        None => None,
    };
    let ctx = command_context(&principal);
    let service = &state.surveillance.detections;
    let mut position = None;
    if let Some(notes) = notes {
        let written = service
            .annotate(&ctx, id, expected, notes)
            .await
            .map_err(|e| command_error(e, rejected))?;
        position = written.position.or(position);
        if written.position.is_some() {
            expected = written.revision;
        }
    }
    if let Some(acknowledged) = b.acknowledged {
        // The caller's own acknowledgement, at the revision the notes left (If-Match holds for
        // the whole change).
        let written = service
            .acknowledge(&ctx, id, expected, principal.user_id, acknowledged)
            .await
            .map_err(|e| command_error(e, rejected))?;
        position = written.position.or(position);
    }
    if let Some(position) = position {
        state
            .projections
            .wait_for(DETECTIONS, position, state.settings.read_wait)
            .await
            .ok();
    }
    let view = one(&state, &principal, id).await?;
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(Some(view.revision))
        .position(position)
        .into_response())
}

/// Acknowledges a detection as the caller (with who and when; again: nothing changes).
#[utoipa::path(
    post, path = "/api/v1/detections/{id}/acknowledge", tag = "surveillance", operation_id = "acknowledge_detection",
    params(("id" = Uuid, Path, description = "The detection's id")),
    responses(
        (status = 200, description = "Acknowledged", body = DetectionView),
        (status = 404, description = "No such detection in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.detections.acknowledge", skip_all, fields(org = %principal.org_id))]
pub async fn acknowledge(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "detection")?;
    let written = state
        .surveillance
        .detections
        .acknowledge(
            &command_context(&principal),
            id,
            None,
            principal.user_id,
            true,
        )
        .await
        .map_err(|e| command_error(e, rejected))?;
    if let Some(position) = written.position {
        state
            .projections
            .wait_for(DETECTIONS, position, state.settings.read_wait)
            .await
            .ok();
    }
    let view = one(&state, &principal, id).await?;
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// A bulk acknowledgement.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"ids": ["0193a0c4-6b7e-7c1a-9c51-0a6c7e1d2f3b"]}))]
pub struct BulkBody {
    /// Up to 500 detections of the organization.
    pub ids: Vec<String>,
}

/// What a bulk acknowledgement did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BulkView {
    /// Acknowledged now by the caller.
    pub acknowledged: Vec<Uuid>,
    /// Already acknowledged by the caller.
    pub unchanged: Vec<Uuid>,
    /// Not found in the organization.
    pub not_found: Vec<Uuid>,
}

/// Acknowledges many detections as the caller; each is its own change, and unknown ids are
/// listed, not fatal.
#[utoipa::path(
    post, path = "/api/v1/detections/acknowledge", tag = "surveillance", operation_id = "acknowledge_detections",
    request_body = BulkBody,
    responses(
        (status = 200, description = "What changed", body = BulkView),
        (status = 400, description = "Invalid ids, or too many", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.detections.acknowledge_bulk", skip_all, fields(org = %principal.org_id))]
pub async fn acknowledge_bulk(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let b = json_body::<BulkBody>(&req, &body)?;
    let mut errors = Vec::new();
    if b.ids.is_empty() || b.ids.len() > MAX_BULK {
        errors.push(field_error(
            "ids",
            format!("must name 1 to {MAX_BULK} detections"),
        ));
    }
    let mut ids = Vec::new();
    for (i, raw) in b.ids.iter().enumerate() {
        match Uuid::parse_str(raw.trim()) {
            Ok(id) => ids.push(id),
            Err(_) => errors.push(field_error(
                &format!("ids[{i}]"),
                "must be a detection's id (a UUID)",
            )),
        }
    }
    crate::pagination::validate(errors)?;
    ids.sort();
    ids.dedup();
    let ctx = command_context(&principal);
    let mut out = BulkView {
        acknowledged: Vec::new(),
        unchanged: Vec::new(),
        not_found: Vec::new(),
    };
    let mut last = None;
    for id in ids {
        match state
            .surveillance
            .detections
            .acknowledge(&ctx, id, None, principal.user_id, true)
            .await
        {
            Ok(w) if w.position.is_some() => {
                last = w.position.or(last);
                out.acknowledged.push(id);
            }
            Ok(_) => out.unchanged.push(id),
            Err(atelier_commands::handler::CommandError::Rejected(DetectionError::NotFound)) => {
                out.not_found.push(id)
            }
            Err(e) => return Err(command_error(e, rejected)),
        }
    }
    Ok(Reply::json(StatusCode::OK, &out)
        .position(last)
        .into_response())
}

/// Deletes a detection and its snapshot.
#[utoipa::path(
    delete, path = "/api/v1/detections/{id}", tag = "surveillance", operation_id = "delete_detection",
    params(
        ("id" = Uuid, Path, description = "The detection's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the deletion is based on"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such detection in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.detections.delete", skip_all, fields(org = %principal.org_id))]
pub async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "detection")?;
    let expected = if_match(req.headers())?;
    let written = state
        .surveillance
        .detections
        .delete(&command_context(&principal), id, expected)
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::empty(StatusCode::NO_CONTENT)
        .position(written.position)
        .into_response())
}
