//! Surveillance (Sentinel): cameras ([`cameras`]), detections ([`detections`]), statistics
//! and discovery ([`stats`]), the capture runner's wiring ([`runner`]); detections reach the
//! live feed as Sentinel's `new_event`, thumbnails as `frame_update` (`crate::live::frames`).

pub mod cameras;
pub mod detections;
pub mod runner;
pub mod stats;

use actix_web::web;
use atelier_domain::identity::Permission;
use atelier_domain::surveillance::camera::Camera;
use atelier_domain::surveillance::detection::{Detection, DetectionEvent};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use utoipa::OpenApi;

use crate::contexts::Context;

/// The surveillance context, as the HTTP layer serves it.
pub const CONTEXT: Context = Context {
    name: "surveillance",
    routes: configure,
    openapi: Doc::openapi,
    live: &[
        crate::contexts::LiveCategory {
            category: Camera::CATEGORY,
            resource: "camera",
        },
        crate::contexts::LiveCategory {
            category: Detection::CATEGORY,
            resource: "detection",
        },
    ],
    workers: runner::workers,
    revokes: crate::contexts::no_revocations,
    org_figures: crate::contexts::no_org_figures,
    live_message,
    live_commands: &[],
    live_alias: crate::contexts::no_aliases,
    resources: &[
        crate::audit::history::resource::<Camera>(
            "cameras",
            "camera",
            crate::audit::history::Access::Tenant(Permission::Read),
        ),
        crate::audit::history::resource::<Detection>(
            "detections",
            "detection",
            crate::audit::history::Access::Tenant(Permission::Read),
        ),
    ],
};

/// Sentinel's `new_event`: a new detection, with the detection in `data` (as the API shows it,
/// less what only a read model knows: the camera's name, acknowledgements).
fn live_message(record: &RecordedEvent) -> Option<(&'static str, serde_json::Value)> {
    if record.event_type != "DetectionRecorded" {
        return None;
    }
    let DetectionEvent::DetectionRecorded {
        detection_id,
        camera_id,
        detection_type,
        severity,
        confidence,
        bbox,
        snapshot,
        description,
        source,
        occurred_at,
        ..
    } = DetectionEvent::decode_stored(&record.event_type, &record.metadata, &record.data).ok()?
    else {
        return None;
    };
    Some((
        "new_event",
        serde_json::json!({
            "id": detection_id,
            "camera_id": camera_id,
            "type": detection_type.as_str(),
            "severity": severity.as_str(),
            "confidence": confidence.get(),
            "bbox": bbox,
            "snapshot_url": snapshot.map(|_| format!("/api/v1/detections/{detection_id}/snapshot")),
            "description": description,
            "source": source,
            "timestamp": occurred_at,
            "acknowledged": false,
            "notes": "",
        }),
    ))
}

/// The surveillance context's operations.
#[derive(OpenApi)]
#[openapi(
    paths(
        cameras::list,
        cameras::create,
        cameras::get,
        cameras::update,
        cameras::delete,
        cameras::start,
        cameras::stop,
        stats::camera,
        stats::discover,
        detections::list,
        detections::stats,
        detections::create,
        detections::get,
        detections::snapshot,
        detections::update,
        detections::acknowledge,
        detections::acknowledge_bulk,
        detections::delete,
        stats::dashboard,
        stats::system,
        stats::performance,
    ),
    tags((name = "surveillance", description = "Cameras and their capture pipelines, detections (Sentinel's events) and who acknowledged them, statistics, discovery"))
)]
pub struct Doc;

/// Registers the context's routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/cameras/discover", web::post().to(stats::discover))
        .service(
            web::resource("/cameras")
                .route(web::get().to(cameras::list))
                .route(web::post().to(cameras::create)),
        )
        .service(
            web::resource("/cameras/{id}")
                .route(web::get().to(cameras::get))
                .route(web::put().to(cameras::update))
                .route(web::delete().to(cameras::delete)),
        )
        .route("/cameras/{id}/start", web::post().to(cameras::start))
        .route("/cameras/{id}/stop", web::post().to(cameras::stop))
        .route("/cameras/{id}/stats", web::get().to(stats::camera))
        .route("/detections/stats", web::get().to(detections::stats))
        .route(
            "/detections/acknowledge",
            web::post().to(detections::acknowledge_bulk),
        )
        .service(
            web::resource("/detections")
                .route(web::get().to(detections::list))
                .route(web::post().to(detections::create)),
        )
        .service(
            web::resource("/detections/{id}")
                .route(web::get().to(detections::get))
                .route(web::patch().to(detections::update))
                .route(web::delete().to(detections::delete)),
        )
        .route(
            "/detections/{id}/acknowledge",
            web::post().to(detections::acknowledge),
        )
        .route(
            "/detections/{id}/snapshot",
            web::get().to(detections::snapshot),
        )
        .route("/stats/dashboard", web::get().to(stats::dashboard))
        .route("/stats/system", web::get().to(stats::system))
        .route("/stats/performance", web::get().to(stats::performance));
}
