//! A camera (Sentinel): its name, source URL, location and capture settings, and the status its
//! capture pipeline reports (connecting → active on the first frame, error with the reason,
//! inactive when stopped). The URL's credentials are kept for the pipeline but never shown:
//! [`SourceUrl::masked`] is what answers, logs and events carry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::value::{InvalidValue, folded, invalid, name_key, text, unique_name};

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
/// started (inactive or error → connecting), first frame (connecting or error → active), source
/// failure (connecting or active → error; error → error records a new reason), stopped
/// (anything → inactive).
pub fn may_move(from: CameraStatus, to: CameraStatus) -> bool {
    use CameraStatus::*;
    matches!(
        (from, to),
        (Inactive | Error, Connecting)
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
        assert!(!may_move(Active, Connecting));
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
}
