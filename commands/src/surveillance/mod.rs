//! Surveillance (Sentinel): cameras ([`cameras`]) and detections ([`detections`]), what is kept
//! beside the log ([`vault`]: sources' credentials, snapshots, telemetry), discovery of cameras
//! on the hosts a request names ([`discovery`]) and the machine's figures ([`system`]); the
//! capture pipeline ([`capture`]: ffmpeg, retries, telemetry) and what runs on its frames
//! ([`vision`]: the detector trait, motion detection, JPEG).

pub mod cameras;
pub mod capture;
pub mod detections;
pub mod discovery;
pub mod runner;
pub mod system;
pub mod vault;
pub mod vision;

use std::sync::Arc;

use atelier_store::EventStore;
use sqlx::PgPool;

/// The surveillance context's services.
#[derive(Clone)]
pub struct SurveillanceServices {
    /// Cameras.
    pub cameras: cameras::CameraService,
    /// Detections.
    pub detections: detections::DetectionService,
    /// The pipelines' figures, as written by the servers that run them.
    pub telemetry: vault::TelemetryTable,
    /// The figures of the pipelines this server runs, fresh.
    pub pipelines: runner::LivePipelines,
    system: Arc<std::sync::OnceLock<system::SystemMonitor>>,
}

impl SurveillanceServices {
    /// Services over `store`, keeping what is not in the log in `pool`.
    pub fn new(store: Arc<dyn EventStore>, pool: PgPool) -> Self {
        Self {
            cameras: cameras::CameraService::new(
                store.clone(),
                vault::Credentials::new(pool.clone()),
            ),
            detections: detections::DetectionService::new(
                store,
                vault::Snapshots::new(pool.clone()),
            ),
            telemetry: vault::TelemetryTable::new(pool),
            pipelines: runner::LivePipelines::default(),
            system: Arc::default(),
        }
    }

    /// The machine's figures, refreshed in the background from the first call on (which must
    /// be on a tokio runtime: the server makes it as it starts).
    pub fn system(&self) -> &system::SystemMonitor {
        self.system.get_or_init(system::SystemMonitor::start)
    }
}
