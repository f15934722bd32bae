//! Cameras: register (the source's credentials go to the vault, never into an event), change,
//! start, stop, delete, with names unique within an organization; and what the capture
//! pipeline reports, through the runner that holds the camera.

use std::sync::Arc;

use atelier_domain::surveillance::camera::{
    Camera, CameraChanges, CameraCommand, CameraError, CameraName, CaptureSettings, MotionSettings,
    Resolution, SourceUrl,
};
use atelier_store::{EventStore, StreamName};
use uuid::Uuid;

use super::vault::Credentials;
use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};
use crate::reservation::{claim, release_quietly, reservation_stream, settle_key_change};

/// A camera command's error.
pub type CameraCommandError = CommandError<CameraError>;

/// A new camera's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCamera {
    /// Its name.
    pub name: CameraName,
    /// Its source, credentials included (they go to the vault).
    pub url: SourceUrl,
    /// Where it is.
    pub location: String,
    /// How frames are taken.
    pub capture: CaptureSettings,
    /// How motion is detected.
    pub motion: MotionSettings,
}

/// What a change asks (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CameraUpdate {
    /// A new name.
    pub name: Option<CameraName>,
    /// A new source, credentials included.
    pub url: Option<SourceUrl>,
    /// A new location.
    pub location: Option<String>,
    /// New capture settings.
    pub capture: Option<CaptureSettings>,
    /// New motion settings.
    pub motion: Option<MotionSettings>,
}

/// Writes cameras.
#[derive(Clone)]
pub struct CameraService {
    store: Arc<dyn EventStore>,
    credentials: Credentials,
}

fn name_reservation(org_id: Uuid, name: &CameraName) -> StreamName {
    reservation_stream("camera-name", org_id, &name.key())
}

impl CameraService {
    /// A service writing to `store`, keeping credentials in `credentials`.
    pub fn new(store: Arc<dyn EventStore>, credentials: Credentials) -> Self {
        Self { store, credentials }
    }

    /// A camera's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<Camera>(id)
    }

    /// The camera as the log has it now (`None`: not one of this organization's).
    pub async fn get(
        &self,
        org_id: Uuid,
        id: Uuid,
    ) -> Result<Option<(Camera, Option<u64>)>, CameraCommandError> {
        let (camera, revision) = load::<Camera>(self.store.as_ref(), &Self::stream(id)).await?;
        Ok(camera
            .present()
            .is_some_and(|c| c.org_id == org_id)
            .then_some((camera, revision)))
    }

    /// The camera as the log has it now, whoever owns it (for the runner).
    pub async fn load(&self, id: Uuid) -> Result<(Camera, Option<u64>), CameraCommandError> {
        load::<Camera>(self.store.as_ref(), &Self::stream(id)).await
    }

    /// The URL the pipeline opens: the source with its credentials put back.
    pub async fn source_of(&self, camera: &Camera) -> Result<Option<SourceUrl>, sqlx::Error> {
        let Some(c) = camera.present() else {
            return Ok(None);
        };
        Ok(Some(match c.credentials {
            Some(reference) => match self.credentials.value(c.org_id, c.id, reference).await? {
                Some(value) => c.url.with_credentials(&value),
                None => c.url.clone(),
            },
            None => c.url.clone(),
        }))
    }

    async fn reserve_name(
        &self,
        ctx: &CommandContext,
        owner: Uuid,
        name: &CameraName,
    ) -> Result<StreamName, CameraCommandError> {
        let key = name.key();
        claim(
            self.store.as_ref(),
            name_reservation(ctx.org_id, name),
            owner,
            ctx,
            |c: &Camera| c.present().is_some_and(|c| c.name.key() == key),
            || {
                format!(
                    "a camera named {:?} already exists in this organization",
                    name.as_str()
                )
            },
        )
        .await
    }

    /// Splits a source's credentials off into the vault: the URL events carry, and the
    /// reference.
    async fn keep_credentials(
        &self,
        org_id: Uuid,
        camera_id: Uuid,
        url: &SourceUrl,
    ) -> Result<(SourceUrl, Option<Uuid>), CameraCommandError> {
        let (bare, credentials) = url.split_credentials();
        let reference = match credentials {
            Some(value) => Some(
                self.credentials
                    .put(org_id, camera_id, &value)
                    .await
                    .map_err(|e| CommandError::Store(atelier_store::StoreError::backend(e)))?,
            ),
            None => None,
        };
        Ok((bare, reference))
    }

    /// Registers a camera with a new id (inactive).
    pub async fn register(
        &self,
        ctx: &CommandContext,
        input: NewCamera,
    ) -> Result<Written<Camera>, CameraCommandError> {
        let id = Uuid::now_v7();
        let reservation = self.reserve_name(ctx, id, &input.name).await?;
        let (url, credentials) = match self.keep_credentials(ctx.org_id, id, &input.url).await {
            Ok(kept) => kept,
            Err(e) => {
                release_quietly(
                    self.store.as_ref(),
                    &name_reservation(ctx.org_id, &input.name),
                    id,
                )
                .await;
                return Err(e);
            }
        };
        let command = CameraCommand::Register {
            camera_id: id,
            org_id: ctx.org_id,
            name: input.name,
            url,
            credentials,
            location: input.location,
            capture: input.capture,
            motion: input.motion,
            at: ctx.occurred_at,
        };
        let written =
            execute::<Camera>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await;
        if written.is_err() {
            self.credentials.forget(ctx.org_id, id).await.ok();
        }
        settle_key_change(self.store.as_ref(), id, &written, Some(reservation), |_| {
            None
        })
        .await;
        written
    }

    /// Changes a camera's description or settings.
    pub async fn change(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        update: CameraUpdate,
    ) -> Result<Written<Camera>, CameraCommandError> {
        let stream = Self::stream(id);
        let (current, _) = load::<Camera>(self.store.as_ref(), &stream).await?;
        let current_key = match current.present() {
            Some(c) if c.org_id == ctx.org_id => c.name.key(),
            _ => return Err(CommandError::Rejected(CameraError::NotFound)),
        };
        let new_reservation = match &update.name {
            Some(n) if n.key() != current_key => Some(self.reserve_name(ctx, id, n).await?),
            _ => None,
        };
        let url = match &update.url {
            Some(url) => Some(self.keep_credentials(ctx.org_id, id, url).await?),
            None => None,
        };
        let new_reference = url.as_ref().and_then(|(_, r)| *r);
        let command = CameraCommand::Change {
            org_id: ctx.org_id,
            changes: CameraChanges {
                name: update.name,
                url,
                location: update.location,
                capture: update.capture,
                motion: update.motion,
            },
            at: ctx.occurred_at,
        };
        let written = execute::<Camera>(self.store.as_ref(), &stream, ctx, if_match, command).await;
        // Credentials no event names (refused, or the same source again) are dropped.
        let named = written
            .as_ref()
            .ok()
            .and_then(|w| w.state.present())
            .and_then(|c| c.credentials);
        if let Some(reference) = new_reference
            && named != Some(reference)
        {
            self.credentials.discard(ctx.org_id, reference).await.ok();
        }
        settle_key_change(self.store.as_ref(), id, &written, new_reservation, |w| {
            let (before, after) = (w.previous.present()?, w.state.present()?);
            (before.name.key() != after.name.key())
                .then(|| name_reservation(ctx.org_id, &before.name))
        })
        .await;
        written
    }

    /// Starts a camera: its pipeline connects.
    pub async fn start(
        &self,
        ctx: &CommandContext,
        id: Uuid,
    ) -> Result<Written<Camera>, CameraCommandError> {
        let command = CameraCommand::Start {
            org_id: ctx.org_id,
            at: ctx.occurred_at,
        };
        execute::<Camera>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }

    /// Stops a camera.
    pub async fn stop(
        &self,
        ctx: &CommandContext,
        id: Uuid,
    ) -> Result<Written<Camera>, CameraCommandError> {
        let command = CameraCommand::Stop {
            org_id: ctx.org_id,
            at: ctx.occurred_at,
        };
        execute::<Camera>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }

    /// Deletes a camera (it stops); its name is free again, its credentials forgotten. Its
    /// detections stay.
    pub async fn delete(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
    ) -> Result<Written<Camera>, CameraCommandError> {
        let written = execute::<Camera>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            CameraCommand::Delete {
                org_id: ctx.org_id,
                at: ctx.occurred_at,
            },
        )
        .await?;
        if let Some(before) = written.previous.present() {
            release_quietly(
                self.store.as_ref(),
                &name_reservation(ctx.org_id, &before.name),
                id,
            )
            .await;
            self.credentials.forget(ctx.org_id, id).await.ok();
        }
        Ok(written)
    }

    /// The pipeline's report, as the runner `runner` (the camera's owner).
    pub async fn report(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        report: Report,
    ) -> Result<Written<Camera>, CameraCommandError> {
        let at = ctx.occurred_at;
        let command = match report {
            Report::Claim(runner) => CameraCommand::Claim { runner, at },
            Report::Connecting(runner) => CameraCommand::ReportConnecting { runner, at },
            Report::Active {
                runner,
                resolution,
                fps,
            } => CameraCommand::ReportActive {
                runner,
                resolution,
                fps,
                at,
            },
            Report::Failed {
                runner,
                reason,
                retry_in_secs,
            } => CameraCommand::ReportFailed {
                runner,
                reason,
                retry_in_secs,
                at,
            },
        };
        execute::<Camera>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }
}

/// What a runner reports about a camera it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// It takes the camera.
    Claim(String),
    /// Connecting (again).
    Connecting(String),
    /// The first frame arrived.
    Active {
        /// The runner.
        runner: String,
        /// The frame size.
        resolution: Resolution,
        /// The frame rate.
        fps: u32,
    },
    /// The source failed.
    Failed {
        /// The runner.
        runner: String,
        /// Why (credentials masked).
        reason: String,
        /// When it retries, in seconds.
        retry_in_secs: u64,
    },
}
