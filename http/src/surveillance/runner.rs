//! The capture runner as a server starts it: its settings, the backlog it reads from the
//! cameras read model after a start, and the live feed's watchers as its thumbnails' sink.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atelier_commands::surveillance::runner::{
    Backlog, CaptureRunner, FrameSink, RunnerConfig, RunnerParts,
};
use atelier_commands::worker::Worker;
use atelier_projections::Registry;
use atelier_projections::surveillance::{CAMERAS, cameras_to_run};
use atelier_store::Position;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Services;
use crate::live::frames::Frames;
use crate::server::ServerConfig;

/// The capture runner's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRunnerSettings {
    /// This runner's id (the cameras it claims are its own until stopped).
    pub runner_id: String,
    /// How often each pipeline's figures are written.
    pub telemetry_every: Duration,
}

impl Default for CaptureRunnerSettings {
    fn default() -> Self {
        Self {
            runner_id: crate::factory::runner::default_runner_id(),
            telemetry_every: Duration::from_secs(2),
        }
    }
}

struct ReadModelBacklog {
    pool: PgPool,
    projections: Registry,
}

#[async_trait]
impl Backlog for ReadModelBacklog {
    async fn cameras(&self, runner: &str, position: Position) -> Result<Vec<Uuid>, String> {
        self.projections
            .wait_for(CAMERAS, position, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        Ok(cameras_to_run(&self.pool, runner)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }
}

struct LiveFrames(Arc<Frames>);

impl FrameSink for LiveFrames {
    fn watched(&self, org_id: Uuid, camera_id: Uuid) -> bool {
        self.0.watched(org_id, camera_id)
    }

    fn publish(&self, org_id: Uuid, camera_id: Uuid, jpeg: &[u8]) {
        self.0.publish(org_id, camera_id, jpeg);
    }
}

/// Starts a capture runner for these services.
pub fn start_runner(services: &Services, settings: &CaptureRunnerSettings) -> CaptureRunner {
    let app = &services.app;
    let mut config = RunnerConfig::new(settings.runner_id.clone());
    config.telemetry_every = settings.telemetry_every;
    CaptureRunner::start(
        RunnerParts {
            store: app.store.clone(),
            cameras: app.surveillance.cameras.clone(),
            detections: app.surveillance.detections.clone(),
            telemetry: app.surveillance.telemetry.clone(),
            frames: Arc::new(LiveFrames(services.live.frames().clone())),
            pipelines: app.surveillance.pipelines.clone(),
            backlog: Arc::new(ReadModelBacklog {
                pool: app.pool.clone(),
                projections: app.projections.clone(),
            }),
        },
        config,
    )
}

/// The surveillance context's workers: the capture runner, unless this server runs no camera.
pub fn workers(services: &Services, config: &ServerConfig) -> Vec<Box<dyn Worker>> {
    match &config.capture {
        Some(settings) => vec![Box::new(start_runner(services, settings))],
        None => Vec::new(),
    }
}
