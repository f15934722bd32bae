//! A camera (Sentinel): its name, source URL, location and capture settings, and the status its
//! capture pipeline reports (connecting → active on the first frame, error with the reason,
//! inactive when stopped). The URL's credentials are kept for the pipeline but never shown:
//! [`SourceUrl::masked`] is what answers, logs and events carry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::value::{InvalidValue, folded, invalid, name_key, text, unique_name};
use crate::{Aggregate, DomainEvent};

/// Longest camera name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest location, in characters.
pub const MAX_LOCATION_CHARS: usize = 200;
/// Longest source URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// The schemes a camera's source may use: streams, HTTP (MJPEG or snapshots), and ffmpeg's
/// synthetic test patterns (`synthetic://testsrc?size=640x360&rate=5`).
pub const SCHEMES: [&str; 5] = ["rtsp", "rtsps", "http", "https", "synthetic"];

/// A camera's name: 1 to 100 characters, unique within its organization by [`CameraName::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CameraName(String);

impl CameraName {
    /// Parses a name from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        unique_name("name", raw, 1, MAX_NAME_CHARS).map(Self)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What makes it unique within the organization.
    pub fn key(&self) -> String {
        name_key(&self.0)
    }

    /// How it sorts.
    pub fn sort_key(&self) -> String {
        folded(&self.0)
    }
}

/// Where a camera is: free text, up to 200 characters (may be empty).
pub fn parse_location(raw: &str) -> Result<String, InvalidValue> {
    text("location", raw, 0, MAX_LOCATION_CHARS)
}

/// A camera's source: an absolute URL with a scheme of [`SCHEMES`] and a host (the synthetic
/// scheme names a pattern instead). Its user information (`user:password@`) is credentials:
/// [`SourceUrl::masked`] replaces them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceUrl(String);

impl std::fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceUrl({:?})", self.masked())
    }
}

impl SourceUrl {
    /// Parses a source URL from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let raw = raw.trim();
        let bad = |why: &str| invalid("url", why.to_owned());
        if raw.is_empty() {
            return Err(bad("must not be empty"));
        }
        if raw.len() > MAX_URL_BYTES {
            return Err(bad("must be at most 2048 bytes"));
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("must not contain spaces or control characters"));
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(bad(
                "must be an absolute URL: rtsp://, rtsps://, http://, https:// or synthetic://",
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(bad(
                "must use rtsp, rtsps, http, https or the synthetic scheme",
            ));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host.is_empty() {
            return Err(bad(if scheme == "synthetic" {
                "must name a pattern: synthetic://testsrc, synthetic://smptebars…"
            } else {
                "must name a host"
            }));
        }
        Ok(Self(format!("{scheme}://{rest}")))
    }

    /// The URL with its credentials, for the capture pipeline only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its scheme (lowercase).
    pub fn scheme(&self) -> &str {
        self.0.split_once("://").map_or("", |(s, _)| s)
    }

    /// Whether it is a synthetic test pattern.
    pub fn is_synthetic(&self) -> bool {
        self.scheme() == "synthetic"
    }

    /// Whether it carries credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials_span().is_some()
    }

    fn credentials_span(&self) -> Option<(usize, usize)> {
        let start = self.0.find("://")? + 3;
        let rest = &self.0[start..];
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let at = rest[..authority_len].rfind('@')?;
        Some((start, start + at))
    }

    /// The URL as answers, logs and events show it: credentials replaced by `***`.
    pub fn masked(&self) -> String {
        match self.credentials_span() {
            Some((from, to)) => format!("{}***{}", &self.0[..from], &self.0[to..]),
            None => self.0.clone(),
        }
    }

    /// The URL without its credentials, and the credentials (`user:password`), if any: events
    /// carry the first, the vault keeps the second.
    pub fn split_credentials(&self) -> (SourceUrl, Option<String>) {
        match self.credentials_span() {
            Some((from, to)) => (
                SourceUrl(format!("{}{}", &self.0[..from], &self.0[to + 1..])),
                Some(self.0[from..to].to_owned()),
            ),
            None => (self.clone(), None),
        }
    }

    /// This URL (without credentials) with these credentials put back, for the pipeline.
    pub fn with_credentials(&self, credentials: &str) -> SourceUrl {
        let (bare, _) = self.split_credentials();
        match bare.0.find("://") {
            Some(i) => SourceUrl(format!(
                "{}{credentials}@{}",
                &bare.0[..i + 3],
                &bare.0[i + 3..]
            )),
            None => bare,
        }
    }

    /// How answers show a URL (without credentials) whose credentials the vault keeps:
    /// `rtsp://***@host/…` when it has some.
    pub fn shown(&self, has_credentials: bool) -> String {
        if has_credentials {
            self.with_credentials("***").0
        } else {
            self.masked()
        }
    }
}

/// Sentinel's camera statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraStatus {
    /// Not capturing.
    Inactive,
    /// Started; waiting for its first frame.
    Connecting,
    /// Frames arrive.
    Active,
    /// The source failed; the pipeline retries with backoff.
    Error,
}

impl CameraStatus {
    /// The seed's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::Connecting => "connecting",
            Self::Active => "active",
            Self::Error => "error",
        }
    }
}

/// How motion is detected on a camera's frames: the difference between frames that counts as
/// change (per pixel, 1 to 255), and the smallest changed area, as a share of the frame, that
/// makes a detection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MotionSettings {
    /// Whether motion detection runs.
    pub enabled: bool,
    /// Per-pixel difference threshold, 1 to 255.
    pub threshold: u8,
    /// Smallest changed area, from 0.0001 to 1 (a share of the frame).
    pub min_area: f64,
}

impl Default for MotionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 25,
            min_area: 0.01,
        }
    }
}

impl Eq for MotionSettings {}

impl MotionSettings {
    /// Checks the settings, every invalid field named.
    pub fn check(&self) -> Vec<InvalidValue> {
        let mut errors = Vec::new();
        if self.threshold == 0 {
            errors.push(invalid("motion.threshold", "must be from 1 to 255"));
        }
        if !(self.min_area.is_finite() && (0.0001..=1.0).contains(&self.min_area)) {
            errors.push(invalid("motion.min_area", "must be from 0.0001 to 1"));
        }
        errors
    }
}

/// How frames are taken: the rate the pipeline reads (1 to 30 per second) and the rate of the
/// thumbnails it sends to subscribers (0 to 5 per second; none when nobody watches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSettings {
    /// Frames read per second.
    pub fps: u32,
    /// Thumbnails sent per second to a camera's subscribers.
    pub thumbnail_fps: u32,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            fps: 5,
            thumbnail_fps: 1,
        }
    }
}

impl CaptureSettings {
    /// Checks the settings, every invalid field named.
    pub fn check(&self) -> Vec<InvalidValue> {
        let mut errors = Vec::new();
        if !(1..=30).contains(&self.fps) {
            errors.push(invalid("fps", "must be from 1 to 30"));
        }
        if self.thumbnail_fps > 5 {
            errors.push(invalid("thumbnail_fps", "must be from 0 to 5"));
        }
        errors
    }
}

/// What a camera's status last changed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The new status.
    pub status: CameraStatus,
    /// Why (an error's reason), if any.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Whether a camera's status may move from `from` to `to`, as its pipeline reports it:
/// started (inactive or error → connecting; active → connecting when its pipeline starts over,
/// after a new source or a server's restart), first frame (connecting or error → active),
/// source failure (connecting or active → error; error → error records a new reason), stopped
/// (anything → inactive).
pub fn may_move(from: CameraStatus, to: CameraStatus) -> bool {
    use CameraStatus::*;
    matches!(
        (from, to),
        (Inactive | Error | Active, Connecting)
            | (Connecting | Error, Active)
            | (Connecting | Active | Error, Error)
            | (Connecting | Active | Error, Inactive)
    )
}

/// Who owns a camera's capture: one server at a time (its runner id), so that a restart or a
/// second server does not capture twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The runner.
    pub runner: String,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// The identity of a camera, for events and views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraRef {
    /// Its id.
    pub camera_id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
}

/// A frame size, as the pipeline decoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// What a live camera holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CameraData {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its name.
    pub name: CameraName,
    /// Its source, without credentials.
    pub url: SourceUrl,
    /// The vault's reference to the source's credentials, if it has any.
    pub credentials: Option<Uuid>,
    /// Where it is.
    pub location: String,
    /// How frames are taken.
    pub capture: CaptureSettings,
    /// How motion is detected.
    pub motion: MotionSettings,
    /// Whether it was started (and not stopped since): the pipeline should run.
    pub running: bool,
    /// What the pipeline last reported.
    pub status: CameraStatus,
    /// Why it last failed, if it is in error.
    pub last_error: Option<String>,
    /// The decoded frame size, once a frame arrived.
    pub resolution: Option<Resolution>,
    /// The frame rate the pipeline reads at, once a frame arrived.
    pub fps: Option<u32>,
    /// Which server's pipeline runs it.
    pub claim: Option<Claim>,
    /// When it was last started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its status last changed.
    pub status_changed_at: DateTime<Utc>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When its description or settings last changed.
    pub updated_at: DateTime<Utc>,
}

/// The camera aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Camera {
    /// Never registered.
    #[default]
    Absent,
    /// Registered and not deleted.
    Present(Box<CameraData>),
    /// Deleted; its id is never reused.
    Deleted {
        /// Its organization.
        org_id: Uuid,
    },
}

impl Camera {
    /// The live camera, if any.
    pub fn present(&self) -> Option<&CameraData> {
        match self {
            Camera::Present(c) => Some(c),
            _ => None,
        }
    }

    fn owned_by(&self, org_id: Uuid) -> Result<&CameraData, CameraError> {
        self.present()
            .filter(|c| c.org_id == org_id)
            .ok_or(CameraError::NotFound)
    }

    /// The camera, if `runner` holds its claim and it should run: what the pipeline reports is
    /// taken only from its owner.
    fn owned_by_runner(&self, runner: &str) -> Result<&CameraData, CameraError> {
        let c = self.present().ok_or(CameraError::NotFound)?;
        match &c.claim {
            Some(claim) if claim.runner == runner && c.running => Ok(c),
            _ => Err(CameraError::NotOwner),
        }
    }
}

/// What changes in a camera's description or settings (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CameraChanges {
    /// A new name.
    pub name: Option<CameraName>,
    /// A new source (without credentials) and its credentials' reference.
    pub url: Option<(SourceUrl, Option<Uuid>)>,
    /// A new location.
    pub location: Option<String>,
    /// New capture settings.
    pub capture: Option<CaptureSettings>,
    /// New motion settings.
    pub motion: Option<MotionSettings>,
}

/// What can be asked of a camera. People's commands name the organization acting (another's
/// camera is not found); the pipeline's name the runner that holds the camera's claim.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraCommand {
    /// Register it.
    Register {
        /// Its id.
        camera_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its name (unique: a reservation checks it).
        name: CameraName,
        /// Its source, without credentials.
        url: SourceUrl,
        /// The vault's reference to the source's credentials.
        credentials: Option<Uuid>,
        /// Where it is.
        location: String,
        /// How frames are taken.
        capture: CaptureSettings,
        /// How motion is detected.
        motion: MotionSettings,
        /// When.
        at: DateTime<Utc>,
    },
    /// Change its description or settings (a running pipeline restarts on a new source).
    Change {
        /// The organization acting.
        org_id: Uuid,
        /// What changes.
        changes: CameraChanges,
        /// When.
        at: DateTime<Utc>,
    },
    /// Start capturing: the pipeline connects.
    Start {
        /// The organization acting.
        org_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Stop capturing.
    Stop {
        /// The organization acting.
        org_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// A server's runner takes the camera's pipeline (it must be running and unclaimed, or
    /// claimed by this runner already: after a restart).
    Claim {
        /// The runner.
        runner: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The pipeline is connecting to the source.
    ReportConnecting {
        /// The runner.
        runner: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The pipeline decoded its first frame.
    ReportActive {
        /// The runner.
        runner: String,
        /// The frame size.
        resolution: Resolution,
        /// The frame rate it reads at.
        fps: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// The source failed; the pipeline retries after `retry_in_secs`.
    ReportFailed {
        /// The runner.
        runner: String,
        /// Why (credentials masked).
        reason: String,
        /// When it tries again, in seconds.
        retry_in_secs: u64,
        /// When.
        at: DateTime<Utc>,
    },
    /// Delete it (it stops).
    Delete {
        /// The organization acting.
        org_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What happens to cameras.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CameraEvent {
    /// A camera was registered (inactive).
    CameraRegistered {
        /// Its id.
        camera_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its name.
        name: CameraName,
        /// Its source, without credentials.
        url: SourceUrl,
        /// The vault's reference to the source's credentials.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<Uuid>,
        /// Where it is.
        location: String,
        /// How frames are taken.
        capture: CaptureSettings,
        /// How motion is detected.
        motion: MotionSettings,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its description or settings changed (only what changed is given).
    CameraChanged {
        /// Its id.
        camera_id: Uuid,
        /// The new name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<CameraName>,
        /// The new source, without credentials.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<SourceUrl>,
        /// The new credentials' reference (with a new source: `None` means none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<Uuid>,
        /// The new location.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<String>,
        /// The new capture settings.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capture: Option<CaptureSettings>,
        /// The new motion settings.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        motion: Option<MotionSettings>,
        /// When.
        at: DateTime<Utc>,
    },
    /// It was started: connecting.
    CameraStarted {
        /// Its id.
        camera_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// A server's runner took its pipeline.
    CameraClaimed {
        /// Its id.
        camera_id: Uuid,
        /// The runner.
        runner: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The pipeline is connecting to the source again (after an error).
    CameraConnecting {
        /// Its id.
        camera_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// The first frame arrived: active.
    CameraActive {
        /// Its id.
        camera_id: Uuid,
        /// The frame size.
        resolution: Resolution,
        /// The frame rate it reads at.
        fps: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// The source failed: error, retried after `retry_in_secs`.
    CameraFailed {
        /// Its id.
        camera_id: Uuid,
        /// Why.
        reason: String,
        /// When the pipeline tries again, in seconds.
        retry_in_secs: u64,
        /// When.
        at: DateTime<Utc>,
    },
    /// It was stopped: inactive, unclaimed.
    CameraStopped {
        /// Its id.
        camera_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// It was deleted.
    CameraDeleted {
        /// Its id.
        camera_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for CameraEvent {}

/// Why a camera command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CameraError {
    /// A camera with this id exists (or existed).
    #[error("the camera already exists")]
    AlreadyExists,
    /// No such camera in this organization.
    #[error("the camera does not exist")]
    NotFound,
    /// The camera is not running, or another runner holds it.
    #[error("this runner does not hold the camera")]
    NotOwner,
    /// Another server's runner holds the camera.
    #[error("the camera is captured by another server ({0})")]
    ClaimedElsewhere(String),
    /// The camera is stopped.
    #[error("the camera is not started")]
    NotRunning,
}

/// The longest failure reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 500;

impl Aggregate for Camera {
    type Command = CameraCommand;
    type Event = CameraEvent;
    type Error = CameraError;
    const CATEGORY: &'static str = "camera";

    fn decide(&self, command: CameraCommand) -> Result<Vec<CameraEvent>, CameraError> {
        use CameraCommand as C;
        use CameraEvent as E;
        match command {
            C::Register {
                camera_id,
                org_id,
                name,
                url,
                credentials,
                location,
                capture,
                motion,
                at,
            } => match self {
                Camera::Absent => Ok(vec![E::CameraRegistered {
                    camera_id,
                    org_id,
                    name,
                    url,
                    credentials,
                    location,
                    capture,
                    motion,
                    at,
                }]),
                _ => Err(CameraError::AlreadyExists),
            },
            C::Change {
                org_id,
                changes,
                at,
            } => {
                let c = self.owned_by(org_id)?;
                let name = changes.name.filter(|n| *n != c.name);
                let (url, credentials) = match changes.url {
                    Some((url, credentials)) if url != c.url || credentials != c.credentials => {
                        (Some(url), credentials)
                    }
                    _ => (None, None),
                };
                let location = changes.location.filter(|l| *l != c.location);
                let capture = changes.capture.filter(|s| *s != c.capture);
                let motion = changes.motion.filter(|s| *s != c.motion);
                if name.is_none()
                    && url.is_none()
                    && location.is_none()
                    && capture.is_none()
                    && motion.is_none()
                {
                    return Ok(vec![]);
                }
                Ok(vec![E::CameraChanged {
                    camera_id: c.id,
                    name,
                    url,
                    credentials,
                    location,
                    capture,
                    motion,
                    at,
                }])
            }
            C::Start { org_id, at } => {
                let c = self.owned_by(org_id)?;
                if c.running {
                    return Ok(vec![]);
                }
                Ok(vec![E::CameraStarted {
                    camera_id: c.id,
                    at,
                }])
            }
            C::Stop { org_id, at } => {
                let c = self.owned_by(org_id)?;
                if !c.running && c.status == CameraStatus::Inactive {
                    return Ok(vec![]);
                }
                Ok(vec![E::CameraStopped {
                    camera_id: c.id,
                    at,
                }])
            }
            C::Claim { runner, at } => {
                let c = self.present().ok_or(CameraError::NotFound)?;
                if !c.running {
                    return Err(CameraError::NotRunning);
                }
                match &c.claim {
                    Some(claim) if claim.runner == runner => Ok(vec![]),
                    Some(claim) => Err(CameraError::ClaimedElsewhere(claim.runner.clone())),
                    None => Ok(vec![E::CameraClaimed {
                        camera_id: c.id,
                        runner,
                        at,
                    }]),
                }
            }
            C::ReportConnecting { runner, at } => {
                let c = self.owned_by_runner(&runner)?;
                if c.status == CameraStatus::Connecting
                    || !may_move(c.status, CameraStatus::Connecting)
                {
                    return Ok(vec![]);
                }
                Ok(vec![E::CameraConnecting {
                    camera_id: c.id,
                    at,
                }])
            }
            C::ReportActive {
                runner,
                resolution,
                fps,
                at,
            } => {
                let c = self.owned_by_runner(&runner)?;
                if c.status == CameraStatus::Active
                    && c.resolution == Some(resolution)
                    && c.fps == Some(fps)
                {
                    return Ok(vec![]);
                }
                Ok(vec![E::CameraActive {
                    camera_id: c.id,
                    resolution,
                    fps,
                    at,
                }])
            }
            C::ReportFailed {
                runner,
                reason,
                retry_in_secs,
                at,
            } => {
                let c = self.owned_by_runner(&runner)?;
                let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
                // The same failure again, while retrying: nothing new to say.
                if c.status == CameraStatus::Error && c.last_error.as_deref() == Some(&reason) {
                    return Ok(vec![]);
                }
                Ok(vec![E::CameraFailed {
                    camera_id: c.id,
                    reason,
                    retry_in_secs,
                    at,
                }])
            }
            C::Delete { org_id, at } => {
                let c = self.owned_by(org_id)?;
                Ok(vec![E::CameraDeleted {
                    camera_id: c.id,
                    at,
                }])
            }
        }
    }

    fn evolve(self, event: &CameraEvent) -> Self {
        use CameraEvent as E;
        match (self, event) {
            (
                Camera::Absent,
                E::CameraRegistered {
                    camera_id,
                    org_id,
                    name,
                    url,
                    credentials,
                    location,
                    capture,
                    motion,
                    at,
                },
            ) => Camera::Present(Box::new(CameraData {
                id: *camera_id,
                org_id: *org_id,
                name: name.clone(),
                url: url.clone(),
                credentials: *credentials,
                location: location.clone(),
                capture: *capture,
                motion: *motion,
                running: false,
                status: CameraStatus::Inactive,
                last_error: None,
                resolution: None,
                fps: None,
                claim: None,
                started_at: None,
                status_changed_at: *at,
                created_at: *at,
                updated_at: *at,
            })),
            (Camera::Present(mut c), event) => {
                match event {
                    E::CameraRegistered { .. } => {}
                    E::CameraChanged {
                        name,
                        url,
                        credentials,
                        location,
                        capture,
                        motion,
                        at,
                        ..
                    } => {
                        if let Some(name) = name {
                            c.name = name.clone();
                        }
                        if let Some(url) = url {
                            c.url = url.clone();
                            c.credentials = *credentials;
                        }
                        if let Some(location) = location {
                            c.location = location.clone();
                        }
                        if let Some(capture) = capture {
                            c.capture = *capture;
                        }
                        if let Some(motion) = motion {
                            c.motion = *motion;
                        }
                        c.updated_at = *at;
                    }
                    E::CameraStarted { at, .. } => {
                        c.running = true;
                        c.status = CameraStatus::Connecting;
                        c.last_error = None;
                        c.started_at = Some(*at);
                        c.status_changed_at = *at;
                    }
                    E::CameraClaimed { runner, at, .. } => {
                        c.claim = Some(Claim {
                            runner: runner.clone(),
                            since: *at,
                        });
                    }
                    E::CameraConnecting { at, .. } => {
                        c.status = CameraStatus::Connecting;
                        c.status_changed_at = *at;
                    }
                    E::CameraActive {
                        resolution,
                        fps,
                        at,
                        ..
                    } => {
                        c.status = CameraStatus::Active;
                        c.last_error = None;
                        c.resolution = Some(*resolution);
                        c.fps = Some(*fps);
                        c.status_changed_at = *at;
                    }
                    E::CameraFailed { reason, at, .. } => {
                        c.status = CameraStatus::Error;
                        c.last_error = Some(reason.clone());
                        c.status_changed_at = *at;
                    }
                    E::CameraStopped { at, .. } => {
                        c.running = false;
                        c.status = CameraStatus::Inactive;
                        c.claim = None;
                        c.status_changed_at = *at;
                    }
                    E::CameraDeleted { .. } => return Camera::Deleted { org_id: c.org_id },
                }
                Camera::Present(c)
            }
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_urls_take_the_seed_schemes_and_refuse_the_rest_with_the_field() {
        for ok in [
            "rtsp://127.0.0.1:8554/stream1",
            "RTSPS://cam.example.com/live",
            "http://127.0.0.1:8080/video.mjpg",
            "https://cam.example.com/snapshot.jpg",
            "synthetic://testsrc?size=640x360&rate=5",
        ] {
            assert!(SourceUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ftp://cam/stream",
            "file:///etc/passwd",
            "rtsp://",
            "rtsp:///path",
            "synthetic://",
            "cam.example.com/stream",
            "rtsp://cam/ with space",
        ] {
            let e = SourceUrl::parse(bad).unwrap_err();
            assert_eq!(e.field, "url", "{bad}");
        }
        assert!(SourceUrl::parse(&format!("http://h/{}", "a".repeat(3000))).is_err());
        assert_eq!(
            SourceUrl::parse("RTSP://cam/s").unwrap().expose(),
            "rtsp://cam/s"
        );
    }

    #[test]
    fn credentials_in_a_url_are_masked_everywhere_but_the_pipeline() {
        let url = SourceUrl::parse("rtsp://admin:s3cret@127.0.0.1:8554/stream1?x=@y").unwrap();
        assert!(url.has_credentials());
        assert_eq!(url.masked(), "rtsp://***@127.0.0.1:8554/stream1?x=@y");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(url.expose().contains("s3cret"));
        let plain = SourceUrl::parse("http://127.0.0.1/a@b").unwrap();
        assert!(!plain.has_credentials());
        assert_eq!(plain.masked(), "http://127.0.0.1/a@b");
        assert!(
            SourceUrl::parse("synthetic://testsrc")
                .unwrap()
                .is_synthetic()
        );
    }

    #[test]
    fn credentials_split_from_a_url_go_back_into_it_for_the_pipeline_only() {
        let url = SourceUrl::parse("rtsp://admin:s3cret@127.0.0.1:8554/stream1").unwrap();
        let (bare, credentials) = url.split_credentials();
        assert_eq!(bare.expose(), "rtsp://127.0.0.1:8554/stream1");
        assert_eq!(credentials.as_deref(), Some("admin:s3cret"));
        assert_eq!(bare.with_credentials("admin:s3cret"), url);
        assert_eq!(bare.shown(true), "rtsp://***@127.0.0.1:8554/stream1");
        assert_eq!(bare.shown(false), "rtsp://127.0.0.1:8554/stream1");
        let plain = SourceUrl::parse("http://127.0.0.1/a@b").unwrap();
        assert_eq!(plain.split_credentials(), (plain.clone(), None));
    }

    #[test]
    fn status_follows_the_pipeline_and_refuses_moves_it_cannot_make() {
        use CameraStatus::*;
        assert!(may_move(Inactive, Connecting));
        assert!(may_move(Connecting, Active));
        assert!(may_move(Active, Error));
        assert!(may_move(Error, Error), "a new reason");
        assert!(may_move(Error, Active), "a retry that worked");
        assert!(may_move(Active, Inactive));
        assert!(!may_move(Inactive, Active), "no frame before a start");
        assert!(!may_move(Inactive, Error));
        assert!(may_move(Active, Connecting), "a pipeline starting over");
        assert!(!may_move(Inactive, Inactive));
    }

    #[test]
    fn settings_out_of_range_name_every_field() {
        let motion = MotionSettings {
            enabled: true,
            threshold: 0,
            min_area: 2.0,
        };
        let fields: Vec<_> = motion.check().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["motion.threshold", "motion.min_area"]);
        assert!(MotionSettings::default().check().is_empty());
        let capture = CaptureSettings {
            fps: 0,
            thumbnail_fps: 9,
        };
        assert_eq!(capture.check().len(), 2);
        assert!(CaptureSettings::default().check().is_empty());
        assert!(CameraName::parse("").is_err());
        assert!(parse_location(&"x".repeat(201)).is_err());
    }

    mod aggregate {
        use super::super::*;
        use crate::testing::given;

        fn t(s: i64) -> DateTime<Utc> {
            DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
        }
        const CAM: Uuid = Uuid::from_u128(1);
        const ORG: Uuid = Uuid::from_u128(2);

        fn registered() -> CameraEvent {
            CameraEvent::CameraRegistered {
                camera_id: CAM,
                org_id: ORG,
                name: CameraName::parse("Entrée").unwrap(),
                url: SourceUrl::parse("synthetic://motion").unwrap(),
                credentials: None,
                location: "hall".into(),
                capture: CaptureSettings::default(),
                motion: MotionSettings::default(),
                at: t(0),
            }
        }
        fn started() -> CameraEvent {
            CameraEvent::CameraStarted {
                camera_id: CAM,
                at: t(1),
            }
        }
        fn claimed(runner: &str) -> CameraEvent {
            CameraEvent::CameraClaimed {
                camera_id: CAM,
                runner: runner.into(),
                at: t(2),
            }
        }
        fn active() -> CameraEvent {
            CameraEvent::CameraActive {
                camera_id: CAM,
                resolution: Resolution {
                    width: 640,
                    height: 360,
                },
                fps: 5,
                at: t(3),
            }
        }

        #[test]
        fn a_started_camera_connects_and_goes_active_on_its_first_frame() {
            given::<Camera>([registered()])
                .when(CameraCommand::Start {
                    org_id: ORG,
                    at: t(1),
                })
                .then([started()]);
            given::<Camera>([registered(), started()])
                .when(CameraCommand::Claim {
                    runner: "a".into(),
                    at: t(2),
                })
                .then([claimed("a")]);
            given::<Camera>([registered(), started(), claimed("a")])
                .when(CameraCommand::ReportActive {
                    runner: "a".into(),
                    resolution: Resolution {
                        width: 640,
                        height: 360,
                    },
                    fps: 5,
                    at: t(3),
                })
                .then([active()]);
            let g = given::<Camera>([registered(), started(), claimed("a"), active()]);
            let c = g.state().present().unwrap();
            assert_eq!(c.status, CameraStatus::Active);
            assert_eq!(c.resolution.map(|r| r.width), Some(640));
        }

        #[test]
        fn one_server_owns_a_camera_and_only_its_reports_count() {
            given::<Camera>([registered(), started(), claimed("a")])
                .when(CameraCommand::Claim {
                    runner: "b".into(),
                    at: t(3),
                })
                .then_error(CameraError::ClaimedElsewhere("a".into()));
            given::<Camera>([registered(), started(), claimed("a")])
                .when(CameraCommand::Claim {
                    runner: "a".into(),
                    at: t(3),
                })
                .then([]);
            given::<Camera>([registered(), started(), claimed("a")])
                .when(CameraCommand::ReportFailed {
                    runner: "b".into(),
                    reason: "x".into(),
                    retry_in_secs: 1,
                    at: t(3),
                })
                .then_error(CameraError::NotOwner);
            given::<Camera>([registered()])
                .when(CameraCommand::Claim {
                    runner: "a".into(),
                    at: t(3),
                })
                .then_error(CameraError::NotRunning);
        }

        #[test]
        fn a_failing_source_is_an_error_with_its_reason_said_once() {
            let failed = CameraEvent::CameraFailed {
                camera_id: CAM,
                reason: "connection refused".into(),
                retry_in_secs: 2,
                at: t(4),
            };
            given::<Camera>([registered(), started(), claimed("a"), active()])
                .when(CameraCommand::ReportFailed {
                    runner: "a".into(),
                    reason: "connection refused".into(),
                    retry_in_secs: 2,
                    at: t(4),
                })
                .then([failed.clone()]);
            given::<Camera>([registered(), started(), claimed("a"), failed.clone()])
                .when(CameraCommand::ReportFailed {
                    runner: "a".into(),
                    reason: "connection refused".into(),
                    retry_in_secs: 4,
                    at: t(6),
                })
                .then([]);
            given::<Camera>([registered(), started(), claimed("a"), failed])
                .when(CameraCommand::ReportConnecting {
                    runner: "a".into(),
                    at: t(6),
                })
                .then([CameraEvent::CameraConnecting {
                    camera_id: CAM,
                    at: t(6),
                }]);
        }

        #[test]
        fn a_stopped_camera_is_inactive_and_unclaimed_and_another_org_does_not_find_it() {
            let stopped = CameraEvent::CameraStopped {
                camera_id: CAM,
                at: t(5),
            };
            given::<Camera>([registered(), started(), claimed("a"), active()])
                .when(CameraCommand::Stop {
                    org_id: ORG,
                    at: t(5),
                })
                .then([stopped.clone()]);
            let g = given::<Camera>([registered(), started(), claimed("a"), active(), stopped]);
            let c = g.state().present().unwrap();
            assert_eq!(
                (c.running, c.status, &c.claim),
                (false, CameraStatus::Inactive, &None)
            );
            given::<Camera>([registered()])
                .when(CameraCommand::Stop {
                    org_id: ORG,
                    at: t(5),
                })
                .then([]);
            given::<Camera>([registered()])
                .when(CameraCommand::Start {
                    org_id: Uuid::from_u128(9),
                    at: t(5),
                })
                .then_error(CameraError::NotFound);
        }

        #[test]
        fn a_change_records_only_what_changed() {
            let url = SourceUrl::parse("rtsp://127.0.0.1:8554/s").unwrap();
            given::<Camera>([registered()])
                .when(CameraCommand::Change {
                    org_id: ORG,
                    changes: CameraChanges {
                        name: Some(CameraName::parse("Entrée").unwrap()),
                        url: Some((url.clone(), Some(Uuid::from_u128(5)))),
                        ..Default::default()
                    },
                    at: t(9),
                })
                .then([CameraEvent::CameraChanged {
                    camera_id: CAM,
                    name: None,
                    url: Some(url),
                    credentials: Some(Uuid::from_u128(5)),
                    location: None,
                    capture: None,
                    motion: None,
                    at: t(9),
                }]);
            given::<Camera>([registered()])
                .when(CameraCommand::Change {
                    org_id: ORG,
                    changes: CameraChanges::default(),
                    at: t(9),
                })
                .then([]);
        }
    }
}
