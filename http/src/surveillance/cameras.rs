//! Cameras (Sentinel): `GET`/`POST /cameras`, `GET`/`PUT`/`DELETE /cameras/{id}`,
//! `POST /cameras/{id}/start`, `POST /cameras/{id}/stop`, `GET /cameras/{id}/stats`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::handler::Written;
use atelier_commands::surveillance::cameras::{CameraUpdate, NewCamera};
use atelier_domain::identity::Permission;
use atelier_domain::surveillance::camera::{
    Camera, CameraError, CameraName, CameraStatus, CaptureSettings, MotionSettings, SourceUrl,
    parse_location,
};
use atelier_projections::surveillance::{
    CAMERAS, CameraFilter, CameraRow, get_camera, list_cameras,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::conventions::{
    Reply, await_projection, command_error, etag, idempotent, if_match, json_body,
};
use crate::kit::{Principal, command_context, path_id};
use crate::pagination::{Page, PageParams, Pagination};
use crate::problem::{ApiError, FieldError, Problem, collect};
use crate::state::AppState;

/// A frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResolutionView {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// How frames are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaptureView {
    /// Frames read per second (1 to 30).
    pub fps: u32,
    /// Thumbnails per second sent to the camera's live subscribers (0 to 5).
    pub thumbnail_fps: u32,
}

/// How motion is detected.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MotionView {
    /// Whether the motion detector runs.
    pub enabled: bool,
    /// Per-pixel change that counts (1 to 255).
    pub threshold: u8,
    /// Smallest changed share of the frame that makes a detection (0.0001 to 1).
    pub min_area: f64,
}

/// A camera, as the API shows it (Sentinel's `CameraResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "0193a0c4-5b7e-7c1a-9c51-0a6c7e1d2f3a", "name": "Entrance",
    "url": "rtsp://***@127.0.0.1:8554/stream1", "location": "Hall", "status": "active",
    "running": true, "last_error": null, "resolution": {"width": 640, "height": 360}, "fps": 5,
    "last_frame_at": "2026-12-06T10:00:03Z", "capture": {"fps": 5, "thumbnail_fps": 1},
    "motion": {"enabled": true, "threshold": 25, "min_area": 0.01}, "runner": "atelier-1",
    "started_at": "2026-12-06T10:00:00Z", "status_changed_at": "2026-12-06T10:00:01Z",
    "created_at": "2026-12-06T09:00:00Z", "updated_at": "2026-12-06T09:00:00Z", "revision": 4}))]
pub struct CameraView {
    /// Its id.
    pub id: Uuid,
    /// Its name, unique within the organization.
    pub name: String,
    /// Its source; credentials show as `***`.
    pub url: String,
    /// Where it is.
    pub location: String,
    /// `active`, `inactive`, `error` or `connecting`, as its pipeline reports.
    pub status: String,
    /// Whether it was started (its pipeline should run).
    pub running: bool,
    /// Why its source last failed, while in error.
    pub last_error: Option<String>,
    /// The decoded frame size, once a frame arrived.
    pub resolution: Option<ResolutionView>,
    /// Frames read per second, once a frame arrived.
    pub fps: Option<u32>,
    /// When the last frame was decoded (from the pipeline's figures).
    pub last_frame_at: Option<DateTime<Utc>>,
    /// How frames are taken.
    pub capture: CaptureView,
    /// How motion is detected.
    pub motion: MotionView,
    /// The server whose pipeline runs it.
    pub runner: Option<String>,
    /// When it was last started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its status last changed.
    pub status_changed_at: DateTime<Utc>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When its settings last changed.
    pub updated_at: DateTime<Utc>,
    /// Its revision: the `ETag`.
    pub revision: u64,
}

fn capture_view(c: CaptureSettings) -> CaptureView {
    CaptureView {
        fps: c.fps,
        thumbnail_fps: c.thumbnail_fps,
    }
}

fn motion_view(m: MotionSettings) -> MotionView {
    MotionView {
        enabled: m.enabled,
        threshold: m.threshold,
        min_area: m.min_area,
    }
}

impl CameraView {
    fn from_row(r: CameraRow) -> Result<Self, ApiError> {
        let url = SourceUrl::parse(&r.url).map_err(ApiError::bug)?;
        let capture: CaptureSettings = serde_json::from_value(r.capture).map_err(ApiError::bug)?;
        let motion: MotionSettings = serde_json::from_value(r.motion).map_err(ApiError::bug)?;
        Ok(Self {
            id: r.id,
            name: r.name,
            url: url.shown(r.has_credentials),
            location: r.location,
            status: r.status,
            running: r.running,
            last_error: r.last_error,
            resolution: match (r.width, r.height) {
                (Some(w), Some(h)) => Some(ResolutionView {
                    width: w as u32,
                    height: h as u32,
                }),
                _ => None,
            },
            fps: r.fps.map(|f| f as u32),
            last_frame_at: r.last_frame_at,
            capture: capture_view(capture),
            motion: motion_view(motion),
            runner: r.runner,
            started_at: r.started_at,
            status_changed_at: r.status_changed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            revision: r.revision as u64,
        })
    }
}

fn view(written: &Written<Camera>) -> Result<CameraView, ApiError> {
    let c = written
        .state
        .present()
        .ok_or_else(|| ApiError::not_found("no such camera"))?;
    Ok(CameraView {
        id: c.id,
        name: c.name.as_str().to_owned(),
        url: c.url.shown(c.credentials.is_some()),
        location: c.location.clone(),
        status: c.status.as_str().to_owned(),
        running: c.running,
        last_error: c.last_error.clone(),
        resolution: c.resolution.map(|r| ResolutionView {
            width: r.width,
            height: r.height,
        }),
        fps: c.fps,
        last_frame_at: None,
        capture: capture_view(c.capture),
        motion: motion_view(c.motion),
        runner: c.claim.as_ref().map(|c| c.runner.clone()),
        started_at: c.started_at,
        status_changed_at: c.status_changed_at,
        created_at: c.created_at,
        updated_at: c.updated_at,
        revision: written.revision.unwrap_or(0),
    })
}

/// What a refused camera command answers.
pub fn rejected(e: CameraError) -> ApiError {
    match e {
        CameraError::NotFound => ApiError::not_found("no such camera"),
        CameraError::AlreadyExists => ApiError::conflict("the camera already exists"),
        other => ApiError::conflict(other.to_string()),
    }
}

/// Capture settings as a body gives them (each optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CaptureBody {
    /// Frames read per second, 1 to 30 (default 5).
    pub fps: Option<u32>,
    /// Thumbnails per second to live subscribers, 0 to 5 (default 1).
    pub thumbnail_fps: Option<u32>,
}

/// Motion settings as a body gives them (each optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct MotionBody {
    /// Whether the motion detector runs (default true).
    pub enabled: Option<bool>,
    /// Per-pixel change that counts, 1 to 255 (default 25).
    pub threshold: Option<u8>,
    /// Smallest changed share of the frame, 0.0001 to 1 (default 0.01).
    pub min_area: Option<f64>,
}

fn capture_settings(
    base: CaptureSettings,
    body: &Option<CaptureBody>,
    errors: &mut Vec<FieldError>,
) -> Option<CaptureSettings> {
    let body = body.as_ref()?;
    let settings = CaptureSettings {
        fps: body.fps.unwrap_or(base.fps),
        thumbnail_fps: body.thumbnail_fps.unwrap_or(base.thumbnail_fps),
    };
    let found = settings.check();
    let ok = found.is_empty();
    for e in found {
        errors.push(FieldError {
            field: format!("capture.{}", e.field),
            message: e.message,
        });
    }
    ok.then_some(settings)
}

fn motion_settings(
    base: MotionSettings,
    body: &Option<MotionBody>,
    errors: &mut Vec<FieldError>,
) -> Option<MotionSettings> {
    let body = body.as_ref()?;
    let settings = MotionSettings {
        enabled: body.enabled.unwrap_or(base.enabled),
        threshold: body.threshold.unwrap_or(base.threshold),
        min_area: body.min_area.unwrap_or(base.min_area),
    };
    let found = settings.check();
    let ok = found.is_empty();
    for e in found {
        errors.push(FieldError {
            field: e.field.to_owned(),
            message: e.message,
        });
    }
    ok.then_some(settings)
}

/// A new camera (Sentinel's `CameraCreate`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Entrance", "url": "synthetic://motion?size=640x360&rate=5",
    "location": "Hall", "capture": {"fps": 5, "thumbnail_fps": 1},
    "motion": {"enabled": true, "threshold": 25, "min_area": 0.01}}))]
pub struct CameraBody {
    /// 1 to 100 characters, unique within the organization.
    pub name: String,
    /// `rtsp://`, `rtsps://`, `http://` (MJPEG or snapshots), `https://`, or `synthetic://`
    /// (`testsrc`, `testsrc2`, `smptebars`, `color`, `motion`, with `?size=WxH&rate=R`).
    /// Credentials in it (`user:password@`) are kept apart and never shown.
    pub url: String,
    /// Up to 200 characters.
    #[serde(default)]
    pub location: String,
    /// How frames are taken.
    pub capture: Option<CaptureBody>,
    /// How motion is detected.
    pub motion: Option<MotionBody>,
}

/// A change (Sentinel's `CameraUpdate`): only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(example = json!({"location": "Back door", "motion": {"threshold": 40}}))]
pub struct CameraUpdateBody {
    /// A new name.
    pub name: Option<String>,
    /// A new source.
    pub url: Option<String>,
    /// A new location.
    pub location: Option<String>,
    /// New capture settings (missing fields keep their value).
    pub capture: Option<CaptureBody>,
    /// New motion settings (missing fields keep their value).
    pub motion: Option<MotionBody>,
}

/// List parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only cameras in this status: `active`, `inactive`, `error`, `connecting`.
    pub status: Option<String>,
    /// Location containing this, case-insensitive.
    pub location: Option<String>,
    /// Name or location containing this, case-insensitive.
    pub search: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

fn status_filter(raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<CameraStatus> {
    let raw = raw?;
    let all = [
        CameraStatus::Active,
        CameraStatus::Inactive,
        CameraStatus::Error,
        CameraStatus::Connecting,
    ];
    let found = all.into_iter().find(|s| s.as_str() == raw);
    if found.is_none() {
        errors.push(FieldError {
            field: "status".into(),
            message: "must be one of active, inactive, error, connecting".into(),
        });
    }
    found
}

/// Lists the organization's cameras by name.
#[utoipa::path(
    get, path = "/api/v1/cameras", tag = "surveillance", operation_id = "list_cameras",
    params(PageParams, ListParams),
    responses(
        (status = 200, description = "A page of cameras", body = Page<CameraView>),
        (status = 400, description = "Invalid filters", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cameras.list", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let (page, per_page) = page.collect(&mut errors);
    let filter = CameraFilter {
        status: status_filter(params.status.as_deref(), &mut errors),
        location: crate::pagination::search(params.location.as_deref(), &mut errors),
        search: crate::pagination::search(params.search.as_deref(), &mut errors),
    };
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, CAMERAS).await?;
    let (rows, total) = list_cameras(&state.pool, principal.org_id, &filter, page, per_page)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(Page {
        data: rows
            .into_iter()
            .map(CameraView::from_row)
            .collect::<Result<Vec<_>, _>>()?,
        pagination: Pagination::new(page, per_page, total),
    }))
}

/// Registers a camera (inactive until started).
#[utoipa::path(
    post, path = "/api/v1/cameras", tag = "surveillance", operation_id = "create_camera",
    request_body = CameraBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request")),
    responses(
        (status = 201, description = "Registered", body = CameraView),
        (status = 400, description = "Invalid fields, every one named", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cameras.create", skip_all, fields(org = %principal.org_id))]
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let parsed = json_body::<CameraBody>(&req, &body)?;
    let mut errors = Vec::new();
    let name = collect(&mut errors, CameraName::parse(&parsed.name));
    let url = collect(&mut errors, SourceUrl::parse(&parsed.url));
    let location = collect(&mut errors, parse_location(&parsed.location));
    let capture = match &parsed.capture {
        None => Some(CaptureSettings::default()),
        some => capture_settings(CaptureSettings::default(), some, &mut errors),
    };
    let motion = match &parsed.motion {
        None => Some(MotionSettings::default()),
        some => motion_settings(MotionSettings::default(), some, &mut errors),
    };
    let (Some(name), Some(url), Some(location), Some(capture), Some(motion)) =
        (name, url, location, capture, motion)
    else {
        return Err(ApiError::validation(errors));
    };
    idempotent(&state, &req, principal.org_id, &body, async || {
        let written = state
            .surveillance
            .cameras
            .register(
                &command_context(&principal),
                NewCamera {
                    name: name.clone(),
                    url: url.clone(),
                    location: location.clone(),
                    capture,
                    motion,
                },
            )
            .await
            .map_err(|e| command_error(e, rejected))?;
        let view = view(&written)?;
        Ok(Reply::json(StatusCode::CREATED, &view)
            .header("location", format!("/api/v1/cameras/{}", view.id))
            .etag(written.revision)
            .position(written.position))
    })
    .await
}

/// Query parameters of a single camera.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Wait until the camera reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Reads a camera.
#[utoipa::path(
    get, path = "/api/v1/cameras/{id}", tag = "surveillance", operation_id = "get_camera",
    params(("id" = Uuid, Path, description = "The camera's id"), GetParams),
    responses(
        (status = 200, description = "The camera", body = CameraView),
        (status = 404, description = "No such camera in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cameras.get", skip_all, fields(org = %principal.org_id))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "camera")?;
    await_projection(&state, &req, CAMERAS).await?;
    let view = CameraView::from_row(
        get_camera(&state.pool, principal.org_id, id)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .ok_or_else(|| ApiError::not_found("no such camera"))?,
    )?;
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(view.revision)))
        .json(view))
}

/// Changes a camera: only the fields given. A running camera whose source or settings change
/// restarts its pipeline.
#[utoipa::path(
    put, path = "/api/v1/cameras/{id}", tag = "surveillance", operation_id = "update_camera",
    request_body = CameraUpdateBody,
    params(
        ("id" = Uuid, Path, description = "The camera's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on"),
    ),
    responses(
        (status = 200, description = "Changed", body = CameraView),
        (status = 400, description = "Invalid fields, every one named", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such camera in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new name is taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cameras.update", skip_all, fields(org = %principal.org_id))]
pub async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "camera")?;
    let expected = if_match(req.headers())?;
    let parsed = json_body::<CameraUpdateBody>(&req, &body)?;
    let service = &state.surveillance.cameras;
    let (current, _) = service
        .get(principal.org_id, id)
        .await
        .map_err(|e| command_error(e, rejected))?
        .ok_or_else(|| ApiError::not_found("no such camera"))?;
    let current = current
        .present()
        .cloned()
        .ok_or_else(|| ApiError::not_found("no such camera"))?;
    let mut errors = Vec::new();
    let update = CameraUpdate {
        name: parsed
            .name
            .as_deref()
            .and_then(|n| collect(&mut errors, CameraName::parse(n))),
        url: parsed
            .url
            .as_deref()
            .and_then(|u| collect(&mut errors, SourceUrl::parse(u))),
        location: parsed
            .location
            .as_deref()
            .and_then(|l| collect(&mut errors, parse_location(l))),
        capture: capture_settings(current.capture, &parsed.capture, &mut errors),
        motion: motion_settings(current.motion, &parsed.motion, &mut errors),
    };
    crate::pagination::validate(errors)?;
    let written = service
        .change(&command_context(&principal), id, expected, update)
        .await
        .map_err(|e| command_error(e, rejected))?;
    let view = view(&written)?;
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Deletes a camera (it stops); its detections stay.
#[utoipa::path(
    delete, path = "/api/v1/cameras/{id}", tag = "surveillance", operation_id = "delete_camera",
    params(
        ("id" = Uuid, Path, description = "The camera's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the deletion is based on"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such camera in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cameras.delete", skip_all, fields(org = %principal.org_id))]
pub async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "camera")?;
    let expected = if_match(req.headers())?;
    let written = state
        .surveillance
        .cameras
        .delete(&command_context(&principal), id, expected)
        .await
        .map_err(|e| command_error(e, rejected))?;
    Ok(Reply::empty(StatusCode::NO_CONTENT)
        .position(written.position)
        .into_response())
}

async fn run(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    start: bool,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "camera")?;
    let ctx = command_context(&principal);
    let service = &state.surveillance.cameras;
    let written = if start {
        service.start(&ctx, id).await
    } else {
        service.stop(&ctx, id).await
    }
    .map_err(|e| command_error(e, rejected))?;
    let view = view(&written)?;
    Ok(Reply::json(StatusCode::OK, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

/// Starts a camera: its pipeline connects (`connecting`), then goes `active` on its first
/// frame, or `error` with the reason (retried with backoff). Starting a started camera changes
/// nothing.
#[utoipa::path(
    post, path = "/api/v1/cameras/{id}/start", tag = "surveillance", operation_id = "start_camera",
    params(("id" = Uuid, Path, description = "The camera's id")),
    responses(
        (status = 200, description = "Started (connecting)", body = CameraView),
        (status = 404, description = "No such camera in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cameras.start", skip_all, fields(org = %principal.org_id))]
pub async fn start(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    run(state, principal, id, true).await
}

/// Stops a camera (`inactive`): its pipeline ends.
#[utoipa::path(
    post, path = "/api/v1/cameras/{id}/stop", tag = "surveillance", operation_id = "stop_camera",
    params(("id" = Uuid, Path, description = "The camera's id")),
    responses(
        (status = 200, description = "Stopped", body = CameraView),
        (status = 404, description = "No such camera in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cameras.stop", skip_all, fields(org = %principal.org_id))]
pub async fn stop(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    run(state, principal, id, false).await
}
