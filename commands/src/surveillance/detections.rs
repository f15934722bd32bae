//! Detections: recorded by the pipeline's detectors or by external ones (their camera must be
//! one of the organization's), annotated, acknowledged and withdrawn per person, deleted. A
//! snapshot is stored before the event that names it, and dropped with its detection.

use std::sync::Arc;

use atelier_domain::surveillance::camera::Camera;
use atelier_domain::surveillance::detection::{
    BoundingBox, Confidence, Detection, DetectionCommand, DetectionError, DetectionType,
    NewDetection, Severity, Snapshot, Source,
};
use atelier_store::{EventStore, StoreError, StreamName};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::vault::Snapshots;
use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};

/// A detection command's error.
pub type DetectionCommandError = CommandError<DetectionError>;

/// A detection as a detector reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The camera.
    pub camera_id: Uuid,
    /// What was seen.
    pub detection_type: DetectionType,
    /// How serious (`None`: the type's default).
    pub severity: Option<Severity>,
    /// How sure.
    pub confidence: Confidence,
    /// Where.
    pub bbox: Option<BoundingBox>,
    /// The frame, as JPEG.
    pub snapshot: Option<Vec<u8>>,
    /// What the detector said.
    pub description: String,
    /// Who reported it.
    pub source: Source,
    /// When it was seen (`None`: now).
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Writes detections.
#[derive(Clone)]
pub struct DetectionService {
    store: Arc<dyn EventStore>,
    snapshots: Snapshots,
}

impl DetectionService {
    /// A service writing to `store`, keeping snapshots in `snapshots`.
    pub fn new(store: Arc<dyn EventStore>, snapshots: Snapshots) -> Self {
        Self { store, snapshots }
    }

    /// A detection's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<Detection>(id)
    }

    /// The snapshots.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The detection as the log has it now (`None`: not one of this organization's).
    pub async fn get(
        &self,
        org_id: Uuid,
        id: Uuid,
    ) -> Result<Option<(Detection, Option<u64>)>, DetectionCommandError> {
        let (detection, revision) =
            load::<Detection>(self.store.as_ref(), &Self::stream(id)).await?;
        Ok(detection
            .present()
            .is_some_and(|d| d.org_id == org_id)
            .then_some((detection, revision)))
    }

    /// Records a detection with a new id. The camera must be one of the organization's
    /// (`NotFound` otherwise, as the camera).
    pub async fn record(
        &self,
        ctx: &CommandContext,
        report: Report,
    ) -> Result<Written<Detection>, CommandError<RecordError>> {
        let (camera, _) =
            load::<Camera>(self.store.as_ref(), &stream_of::<Camera>(report.camera_id))
                .await
                .map_err(|e| e.map_rejected(|_| RecordError::UnknownCamera))?;
        if camera.present().is_none_or(|c| c.org_id != ctx.org_id) {
            return Err(CommandError::Rejected(RecordError::UnknownCamera));
        }
        let id = Uuid::now_v7();
        let snapshot = match &report.snapshot {
            Some(jpeg) => {
                let bytes = u32::try_from(jpeg.len()).unwrap_or(u32::MAX);
                let snapshot_id = self
                    .snapshots
                    .put(ctx.org_id, id, jpeg)
                    .await
                    .map_err(|e| CommandError::Store(StoreError::backend(e)))?;
                Some(Snapshot {
                    id: snapshot_id,
                    bytes,
                })
            }
            None => None,
        };
        let command = DetectionCommand::Record(Box::new(NewDetection {
            detection_id: id,
            org_id: ctx.org_id,
            camera_id: report.camera_id,
            detection_type: report.detection_type,
            severity: report
                .severity
                .unwrap_or_else(|| report.detection_type.default_severity()),
            confidence: report.confidence,
            bbox: report.bbox,
            snapshot,
            description: report.description,
            source: report.source,
            occurred_at: report.occurred_at.unwrap_or(ctx.occurred_at),
        }));
        let written =
            execute::<Detection>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await;
        match written {
            Ok(w) => Ok(w),
            Err(e) => {
                if snapshot.is_some() {
                    self.snapshots.forget(ctx.org_id, id).await.ok();
                }
                Err(e.map_rejected(RecordError::Detection))
            }
        }
    }

    async fn run(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        command: DetectionCommand,
    ) -> Result<Written<Detection>, DetectionCommandError> {
        execute::<Detection>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            command,
        )
        .await
    }

    /// Replaces a detection's notes.
    pub async fn annotate(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        notes: String,
    ) -> Result<Written<Detection>, DetectionCommandError> {
        let command = DetectionCommand::Annotate {
            org_id: ctx.org_id,
            notes,
            at: ctx.occurred_at,
        };
        self.run(ctx, id, if_match, command).await
    }

    /// `by` acknowledges a detection (or withdraws their acknowledgement), at the revision
    /// `if_match` if given.
    pub async fn acknowledge(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        by: Uuid,
        acknowledged: bool,
    ) -> Result<Written<Detection>, DetectionCommandError> {
        let (org_id, at) = (ctx.org_id, ctx.occurred_at);
        let command = if acknowledged {
            DetectionCommand::Acknowledge { org_id, by, at }
        } else {
            DetectionCommand::Withdraw { org_id, by, at }
        };
        self.run(ctx, id, if_match, command).await
    }

    /// Deletes a detection and its snapshot.
    pub async fn delete(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
    ) -> Result<Written<Detection>, DetectionCommandError> {
        let command = DetectionCommand::Delete {
            org_id: ctx.org_id,
            at: ctx.occurred_at,
        };
        let written = self.run(ctx, id, if_match, command).await?;
        if written
            .previous
            .present()
            .is_some_and(|d| d.snapshot.is_some())
        {
            self.snapshots.forget(ctx.org_id, id).await.ok();
        }
        Ok(written)
    }
}

/// Why a detection is not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The camera is not one of the organization's.
    #[error("the camera does not exist")]
    UnknownCamera,
    /// The detection refused it.
    #[error(transparent)]
    Detection(#[from] DetectionError),
}
