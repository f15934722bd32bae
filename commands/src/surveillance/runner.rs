//! The capture runner: a worker that runs the pipeline ([`super::capture`]) of every started
//! camera this server owns, and records what it sees.
//!
//! It follows the cameras' streams from the log's head, after reading its backlog from the
//! read model (every started camera no server holds, or this one does: after a restart or a
//! `kill -9`). For each camera it reconciles: a started camera no runner holds is claimed (the
//! append decides between servers: one owns a camera at a time); a camera it holds runs one
//! pipeline, started again when its source or settings change; a stopped, deleted or
//! elsewhere-held camera runs none. The pipeline's reports become the camera's events
//! (connecting, active, error with the reason), its findings detections (with a JPEG snapshot),
//! its thumbnails `frame_update` messages for whoever watches ([`FrameSink`]), its figures the
//! camera's telemetry row, written every few seconds.
//!
//! When the server stops, each camera it ran says so (error: "the server running it
//! stopped"), and keeps its claim: the same runner takes it up again when it starts. After a
//! crash the camera still says active until then; the restarted runner reports it connecting
//! before its first frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atelier_domain::Aggregate;
use atelier_domain::surveillance::camera::{
    Camera, CameraError, CaptureSettings, MotionSettings, Resolution, SourceUrl,
};
use atelier_domain::surveillance::detection::{BoundingBox, Confidence, DetectionType, Source};
use atelier_store::{EventStore, Filter, Position, SubscribeFrom, SubscriptionMessage};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use super::cameras::{CameraService, Report};
use super::capture::{Backoff, Pipeline, PipelineSink, Telemetry, TelemetrySnapshot};
use super::detections::{self, DetectionService};
use super::vault::TelemetryTable;
use super::vision::{Detector, Finding, Frame, MotionDetector};
use crate::handler::{CommandContext, CommandError};

/// Pipelines running now.
pub const PIPELINES: &str = "atelier_surveillance_pipelines";
/// Detections the pipelines recorded.
pub const DETECTIONS: &str = "atelier_surveillance_detections_total";

/// Where the runner finds the cameras to look at after a start: the read model, once it has
/// passed `position` (the wiring provides it, so commands do not depend on projections).
#[async_trait]
pub trait Backlog: Send + Sync + 'static {
    /// Every started camera that no runner holds or `runner` holds, as of at least `position`.
    async fn cameras(&self, runner: &str, position: Position) -> Result<Vec<Uuid>, String>;
}

/// Where thumbnails go: the live feed's watchers of a camera.
pub trait FrameSink: Send + Sync + 'static {
    /// Whether anybody watches this camera now (no thumbnail is encoded otherwise).
    fn watched(&self, org_id: Uuid, camera_id: Uuid) -> bool;
    /// Sends a JPEG thumbnail to the camera's watchers.
    fn publish(&self, org_id: Uuid, camera_id: Uuid, jpeg: &[u8]);
}

/// The figures of the pipelines this server runs now, by camera: what `/cameras/{id}/stats`
/// and `/stats/performance` read first (fresh to the frame), before the telemetry rows other
/// servers write every few seconds.
#[derive(Clone, Default)]
pub struct LivePipelines(Arc<Mutex<HashMap<Uuid, Arc<Telemetry>>>>);

impl LivePipelines {
    /// A camera's figures now, if its pipeline runs on this server.
    pub fn figures(&self, camera_id: Uuid) -> Option<serde_json::Value> {
        let telemetry = lock(&self.0).get(&camera_id).cloned()?;
        Some(figures(&telemetry.snapshot()))
    }

    fn insert(&self, camera_id: Uuid, telemetry: Arc<Telemetry>) {
        lock(&self.0).insert(camera_id, telemetry);
    }

    fn remove(&self, camera_id: Uuid) {
        lock(&self.0).remove(&camera_id);
    }
}

/// A pipeline's figures as the API and the telemetry rows show them (latencies in ms).
pub fn figures(snapshot: &TelemetrySnapshot) -> serde_json::Value {
    let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
    serde_json::json!({
        "frames_processed": snapshot.frames_processed,
        "frames_dropped": snapshot.frames_dropped,
        "thumbnails_encoded": snapshot.thumbnails_encoded,
        "fps": snapshot.fps,
        "last_frame_at": snapshot.last_frame_at,
        "decode_latency_ms": {"p50": ms(snapshot.decode_p50_us), "p99": ms(snapshot.decode_p99_us)},
        "detection_latency_ms": {"p50": ms(snapshot.detection_p50_us), "p99": ms(snapshot.detection_p99_us)},
        "started_at": snapshot.started_at,
        "uptime_seconds": snapshot.uptime_secs,
        "last_error": snapshot.last_error,
        "last_error_at": snapshot.last_error_at,
    })
}

/// How the runner runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerConfig {
    /// This runner's id, recorded in the cameras it claims.
    pub id: String,
    /// How often each pipeline's figures are written.
    pub telemetry_every: Duration,
    /// Retries after a source fails.
    pub backoff: Backoff,
    /// How long after a detection of a kind on a camera the motion detector stays quiet.
    pub cooldown: Duration,
}

impl RunnerConfig {
    /// A runner with this id and the defaults: figures every 2 s, retries from 1 s to 60 s,
    /// one motion detection per 5 s at most.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            telemetry_every: Duration::from_secs(2),
            backoff: Backoff::default(),
            cooldown: super::vision::DEFAULT_COOLDOWN,
        }
    }
}

/// What makes a pipeline: a change of any of it starts the camera's pipeline again.
#[derive(Debug, Clone, PartialEq)]
struct Setup {
    url: SourceUrl,
    credentials: Option<Uuid>,
    capture: CaptureSettings,
    motion: MotionSettings,
}

struct Running {
    setup: Setup,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    store: Arc<dyn EventStore>,
    cameras: CameraService,
    detections: DetectionService,
    telemetry: TelemetryTable,
    frames: Arc<dyn FrameSink>,
    pipelines: LivePipelines,
    config: RunnerConfig,
    running: Mutex<HashMap<Uuid, Running>>,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running capture runner; [`CaptureRunner::stop`] stops it.
pub struct CaptureRunner {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// What the runner is given.
pub struct RunnerParts {
    /// The log.
    pub store: Arc<dyn EventStore>,
    /// Cameras.
    pub cameras: CameraService,
    /// Detections.
    pub detections: DetectionService,
    /// Where figures go.
    pub telemetry: TelemetryTable,
    /// Where thumbnails go.
    pub frames: Arc<dyn FrameSink>,
    /// Where the running pipelines' figures are shown.
    pub pipelines: LivePipelines,
    /// Where the backlog comes from.
    pub backlog: Arc<dyn Backlog>,
}

impl CaptureRunner {
    /// Starts the runner on the current tokio runtime.
    pub fn start(parts: RunnerParts, config: RunnerConfig) -> Self {
        let shared = Arc::new(Shared {
            store: parts.store,
            cameras: parts.cameras,
            detections: parts.detections,
            telemetry: parts.telemetry,
            frames: parts.frames,
            pipelines: parts.pipelines,
            config,
            running: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
        });
        let task = tokio::spawn(run(shared.clone(), parts.backlog));
        Self { shared, task }
    }

    /// The cameras whose pipeline runs here now.
    pub fn cameras(&self) -> Vec<Uuid> {
        lock(&self.shared.running).keys().copied().collect()
    }

    /// Stops every pipeline (each camera says its server stopped) and the runner.
    pub async fn stop(self) {
        self.shared.stop.cancel();
        let _ = self.task.await;
        let running: Vec<(Uuid, Running)> = lock(&self.shared.running).drain().collect();
        for (id, r) in running {
            r.stop.cancel();
            let _ = r.task.await;
            self.shared.pipelines.remove(id);
            report_stopped(&self.shared, id).await;
        }
        metrics::gauge!(PIPELINES).set(0.0);
    }
}

#[async_trait]
impl crate::worker::Worker for CaptureRunner {
    fn name(&self) -> &'static str {
        "surveillance.capture-runner"
    }

    async fn stop(self: Box<Self>) {
        CaptureRunner::stop(*self).await;
    }
}

async fn run(shared: Arc<Shared>, backlog: Arc<dyn Backlog>) {
    crate::worker::follow_until_stopped("surveillance.capture-runner", &shared.stop, || {
        follow(&shared, backlog.as_ref())
    })
    .await;
}

async fn follow(shared: &Arc<Shared>, backlog: &dyn Backlog) -> Result<(), String> {
    let head = shared
        .store
        .head()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(Position::START);
    let mut ids = backlog.cameras(&shared.config.id, head).await?;
    // Those running here already (a follow that starts over) are looked at again too.
    ids.extend(lock(&shared.running).keys().copied());
    ids.sort();
    ids.dedup();
    for id in ids {
        reconcile(shared, id).await;
    }
    info!(runner = %shared.config.id, %head, "capture runner following the log");
    let mut sub = shared.store.subscribe_all(
        SubscribeFrom::After(head),
        Filter::Category(vec![Camera::CATEGORY.to_owned()]),
    );
    while let Some(message) = sub.next().await {
        let SubscriptionMessage::Event(event) = message else {
            continue;
        };
        // Its own reports change nothing it must act on.
        if matches!(
            event.event_type.as_str(),
            "CameraConnecting" | "CameraActive" | "CameraFailed"
        ) {
            continue;
        }
        let Some(id) = event
            .stream
            .as_str()
            .strip_prefix("camera-")
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            continue;
        };
        reconcile(shared, id).await;
    }
    Err("the subscription ended".to_owned())
}

fn context(org_id: Uuid, runner: &str) -> CommandContext {
    CommandContext::new(org_id, format!("runner:{runner}"))
}

/// Makes this server's pipeline for a camera match the camera.
async fn reconcile(shared: &Arc<Shared>, id: Uuid) {
    let camera = match shared.cameras.load(id).await {
        Ok((camera, _)) => camera,
        Err(e) => {
            warn!(camera_id = %id, error = %e, "capture runner: the camera could not be read");
            return;
        }
    };
    let me = &shared.config.id;
    let wanted = camera
        .present()
        .filter(|c| c.running && c.claim.as_ref().is_none_or(|claim| claim.runner == *me));
    let Some(c) = wanted else {
        end(shared, id).await;
        return;
    };
    if c.claim.is_none() {
        match shared
            .cameras
            .report(&context(c.org_id, me), id, Report::Claim(me.clone()))
            .await
        {
            Ok(_) => info!(camera_id = %id, runner = %me, "camera claimed"),
            Err(CommandError::Rejected(CameraError::ClaimedElsewhere(other))) => {
                info!(camera_id = %id, %other, "camera held by another server");
                end(shared, id).await;
                return;
            }
            Err(e) => {
                warn!(camera_id = %id, error = %e, "capture runner: claiming failed");
                return;
            }
        }
    }
    let setup = Setup {
        url: c.url.clone(),
        credentials: c.credentials,
        capture: c.capture,
        motion: c.motion,
    };
    if lock(&shared.running)
        .get(&id)
        .is_some_and(|r| r.setup == setup)
    {
        return;
    }
    end(shared, id).await;
    let source = match shared.cameras.source_of(&camera).await {
        Ok(Some(source)) => source,
        Ok(None) => return,
        Err(e) => {
            warn!(camera_id = %id, error = %e, "capture runner: the source's credentials could not be read");
            return;
        }
    };
    start(shared, id, c.org_id, setup, source);
}

fn start(shared: &Arc<Shared>, id: Uuid, org_id: Uuid, setup: Setup, source: SourceUrl) {
    let stop = shared.stop.child_token();
    let telemetry = Arc::new(Telemetry::new());
    let telemetry_shown = telemetry.clone();
    let sink = Arc::new(CameraSink {
        shared: shared.clone(),
        camera_id: id,
        org_id,
    });
    let detectors: Vec<Box<dyn Detector>> = if setup.motion.enabled {
        vec![Box::new(MotionDetector::new(
            setup.motion,
            shared.config.cooldown,
        ))]
    } else {
        Vec::new()
    };
    let pipeline = Pipeline::new(
        source.expose(),
        setup.capture,
        detectors,
        sink,
        telemetry.clone(),
    )
    .with_backoff(shared.config.backoff);
    let task = {
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(
            async move {
                let figures = write_figures(&shared, id, org_id, telemetry.clone(), stop.clone());
                tokio::join!(pipeline.run(stop.clone()), figures);
            }
            .instrument(info_span!("camera", camera_id = %id)),
        )
    };
    shared.pipelines.insert(id, telemetry_shown);
    let mut running = lock(&shared.running);
    running.insert(id, Running { setup, stop, task });
    metrics::gauge!(PIPELINES).set(running.len() as f64);
    info!(camera_id = %id, source = %source.masked(), "capture pipeline started");
}

/// Ends the camera's pipeline here, if one runs.
async fn end(shared: &Arc<Shared>, id: Uuid) {
    let stopped = {
        let mut running = lock(&shared.running);
        let r = running.remove(&id);
        metrics::gauge!(PIPELINES).set(running.len() as f64);
        r
    };
    if let Some(r) = stopped {
        r.stop.cancel();
        let _ = r.task.await;
        shared.pipelines.remove(id);
        info!(camera_id = %id, "capture pipeline stopped");
    }
}

/// Writes a pipeline's figures every `telemetry_every`, and once more when it ends.
async fn write_figures(
    shared: &Arc<Shared>,
    id: Uuid,
    org_id: Uuid,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(shared.config.telemetry_every);
    loop {
        let ended = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let figures = figures(&telemetry.snapshot());
        if let Err(e) = shared
            .telemetry
            .put(org_id, id, &shared.config.id, &figures)
            .await
        {
            warn!(camera_id = %id, error = %e, "capture runner: figures not written");
        }
        if ended {
            return;
        }
    }
}

/// A camera whose pipeline this server stops (with the server) says so.
async fn report_stopped(shared: &Arc<Shared>, id: Uuid) {
    let Ok((camera, _)) = shared.cameras.load(id).await else {
        return;
    };
    let Some(c) = camera.present() else { return };
    let me = &shared.config.id;
    let reason = format!(
        "the server running this camera stopped (runner {me}); capture resumes when it starts again"
    );
    let report = Report::Failed {
        runner: me.clone(),
        reason,
        retry_in_secs: 0,
    };
    match shared
        .cameras
        .report(&context(c.org_id, me), id, report)
        .await
    {
        Ok(_) | Err(CommandError::Rejected(CameraError::NotOwner)) => {}
        Err(e) => warn!(camera_id = %id, error = %e, "capture runner: the stop was not recorded"),
    }
}

/// What one camera's pipeline reports, turned into events and live messages.
struct CameraSink {
    shared: Arc<Shared>,
    camera_id: Uuid,
    org_id: Uuid,
}

impl CameraSink {
    async fn report(&self, report: Report) {
        let me = &self.shared.config.id;
        match self
            .shared
            .cameras
            .report(&context(self.org_id, me), self.camera_id, report)
            .await
        {
            Ok(_) => {}
            // Stopped, deleted or taken meanwhile: the runner ends this pipeline.
            Err(CommandError::Rejected(CameraError::NotOwner | CameraError::NotFound)) => {}
            Err(e) => {
                warn!(camera_id = %self.camera_id, error = %e, "capture runner: a report was not recorded")
            }
        }
    }
}

/// The detection type a detector's finding names (`other` for kinds the domain does not know).
fn detection_type(kind: &str) -> DetectionType {
    DetectionType::parse("type", kind).unwrap_or(DetectionType::Other)
}

/// A finding's box, brought within the frame.
fn bounding_box(bbox: [f64; 4]) -> Option<BoundingBox> {
    let [x, y, w, h] = bbox.map(|v| {
        if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        }
    });
    BoundingBox::parse(x, y, w.min(1.0 - x), h.min(1.0 - y)).ok()
}

#[async_trait]
impl PipelineSink for CameraSink {
    async fn connecting(&self) {
        self.report(Report::Connecting(self.shared.config.id.clone()))
            .await;
    }

    async fn active(&self, width: u32, height: u32, fps: u32) {
        self.report(Report::Active {
            runner: self.shared.config.id.clone(),
            resolution: Resolution { width, height },
            fps,
        })
        .await;
    }

    async fn failed(&self, reason: &str, retry_in: Duration) {
        self.report(Report::Failed {
            runner: self.shared.config.id.clone(),
            reason: reason.to_owned(),
            retry_in_secs: retry_in.as_secs_f64().ceil() as u64,
        })
        .await;
    }

    async fn finding(&self, frame: &Frame, finding: &Finding, snapshot_jpeg: Vec<u8>) {
        let Ok(confidence) = Confidence::parse("confidence", finding.confidence.clamp(0.0, 1.0))
        else {
            return;
        };
        let bbox = bounding_box(finding.bbox);
        let area = bbox.map_or(0.0, |b| b.width * b.height * 100.0);
        let report = detections::Report {
            camera_id: self.camera_id,
            detection_type: detection_type(finding.kind),
            severity: None,
            confidence,
            bbox,
            snapshot: (!snapshot_jpeg.is_empty()).then_some(snapshot_jpeg),
            description: format!("{} over {area:.1}% of the frame", finding.kind),
            source: Source::Pipeline {
                detector: finding.kind.to_owned(),
            },
            occurred_at: Some(frame.at),
        };
        let me = &self.shared.config.id;
        match self
            .shared
            .detections
            .record(&context(self.org_id, me), report)
            .await
        {
            Ok(_) => metrics::counter!(DETECTIONS).increment(1),
            Err(e) => {
                warn!(camera_id = %self.camera_id, error = %e, "capture runner: a detection was not recorded")
            }
        }
    }

    fn wants_thumbnail(&self) -> bool {
        self.shared.frames.watched(self.org_id, self.camera_id)
    }

    fn thumbnail(&self, jpeg: Vec<u8>) {
        self.shared
            .frames
            .publish(self.org_id, self.camera_id, &jpeg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_findings_box_is_brought_within_the_frame() {
        let b = bounding_box([0.9, -0.2, 0.5, 0.5]).unwrap();
        assert!((b.x - 0.9).abs() < 1e-9 && b.y == 0.0);
        assert!((b.width - 0.1).abs() < 1e-9, "{b:?}");
        assert!(
            bounding_box([f64::NAN, 0.0, 0.0, 0.1]).is_none(),
            "no width"
        );
        assert_eq!(detection_type("motion"), DetectionType::Motion);
        assert_eq!(detection_type("unicorn"), DetectionType::Other);
    }
}
