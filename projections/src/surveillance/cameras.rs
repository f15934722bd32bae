//! The `surveillance.cameras` read model: an organization's cameras with their status as the
//! pipeline last reported it.

use async_trait::async_trait;
use atelier_domain::surveillance::camera::{Camera, CameraEvent, CameraStatus};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::like_pattern;

/// The `surveillance.cameras` read model.
pub struct CamerasProjection;

/// Its name.
pub const CAMERAS: &str = "surveillance.cameras";

fn json(v: &impl Serialize) -> Result<serde_json::Value, ProjectionError> {
    serde_json::to_value(v).map_err(|e| ProjectionError::Invalid(e.to_string()))
}

#[async_trait]
impl Projection for CamerasProjection {
    fn name(&self) -> &'static str {
        CAMERAS
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["surveillance_cameras"]
    }

    fn categories(&self) -> Option<&'static [&'static str]> {
        Some(&[Camera::CATEGORY])
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM surveillance_cameras")
            .execute(tx)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream.category() != Camera::CATEGORY {
            return Ok(());
        }
        let revision = event.revision as i64;
        let status = |s: CameraStatus| s.as_str();
        use CameraEvent as E;
        let (id, updated) =
            match CameraEvent::decode_stored(&event.event_type, &event.metadata, &event.data)? {
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
                } => (
                    camera_id,
                    sqlx::query(
                        "INSERT INTO surveillance_cameras (id, org_id, name, sort_key, url, \
                         has_credentials, location, status, running, capture, motion, \
                         status_changed_at, created_at, updated_at, revision) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, 'inactive', false, $8, $9, $10, \
                         $10, $10, $11) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(camera_id)
                    .bind(org_id)
                    .bind(name.as_str())
                    .bind(name.sort_key())
                    .bind(url.expose())
                    .bind(credentials.is_some())
                    .bind(&location)
                    .bind(json(&capture)?)
                    .bind(json(&motion)?)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::CameraChanged {
                    camera_id,
                    name,
                    url,
                    credentials,
                    location,
                    capture,
                    motion,
                    at,
                } => (
                    camera_id,
                    sqlx::query(
                        "UPDATE surveillance_cameras SET name = COALESCE($2, name), \
                         sort_key = COALESCE($3, sort_key), url = COALESCE($4, url), \
                         has_credentials = CASE WHEN $4::text IS NULL THEN has_credentials \
                         ELSE $5 END, location = COALESCE($6, location), \
                         capture = COALESCE($7, capture), motion = COALESCE($8, motion), \
                         updated_at = $9, revision = $10 WHERE id = $1",
                    )
                    .bind(camera_id)
                    .bind(name.as_ref().map(|n| n.as_str().to_owned()))
                    .bind(name.as_ref().map(|n| n.sort_key()))
                    .bind(url.as_ref().map(|u| u.expose().to_owned()))
                    .bind(credentials.is_some())
                    .bind(location)
                    .bind(capture.map(|c| json(&c)).transpose()?)
                    .bind(motion.map(|m| json(&m)).transpose()?)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::CameraStarted { camera_id, at } => (
                    camera_id,
                    sqlx::query(
                        "UPDATE surveillance_cameras SET running = true, status = $2, \
                         last_error = NULL, started_at = $3, status_changed_at = $3, \
                         revision = $4 WHERE id = $1",
                    )
                    .bind(camera_id)
                    .bind(status(CameraStatus::Connecting))
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::CameraClaimed {
                    camera_id, runner, ..
                } => (
                    camera_id,
                    sqlx::query(
                        "UPDATE surveillance_cameras SET runner = $2, revision = $3 WHERE id = $1",
                    )
                    .bind(camera_id)
                    .bind(runner)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::CameraConnecting { camera_id, at } => (
                    camera_id,
                    sqlx::query(
                        "UPDATE surveillance_cameras SET status = $2, status_changed_at = $3, \
                         revision = $4 WHERE id = $1",
                    )
                    .bind(camera_id)
                    .bind(status(CameraStatus::Connecting))
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::CameraActive {
                    camera_id,
                    resolution,
                    fps,
                    at,
                } => (
                    camera_id,
                    sqlx::query(
                        "UPDATE surveillance_cameras SET status = $2, last_error = NULL, \
                         width = $3, height = $4, fps = $5, status_changed_at = $6, \
                         revision = $7 WHERE id = $1",
                    )
                    .bind(camera_id)
                    .bind(status(CameraStatus::Active))
                    .bind(resolution.width as i32)
                    .bind(resolution.height as i32)
                    .bind(fps as i32)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::CameraFailed {
                    camera_id,
                    reason,
                    at,
                    ..
                } => (
                    camera_id,
                    sqlx::query(
                        "UPDATE surveillance_cameras SET status = $2, last_error = $3, \
                         status_changed_at = $4, revision = $5 WHERE id = $1",
                    )
                    .bind(camera_id)
                    .bind(status(CameraStatus::Error))
                    .bind(reason)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::CameraStopped { camera_id, at } => (
                    camera_id,
                    sqlx::query(
                        "UPDATE surveillance_cameras SET running = false, status = $2, \
                         runner = NULL, status_changed_at = $3, revision = $4 WHERE id = $1",
                    )
                    .bind(camera_id)
                    .bind(status(CameraStatus::Inactive))
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::CameraDeleted { camera_id, .. } => (
                    camera_id,
                    sqlx::query("DELETE FROM surveillance_cameras WHERE id = $1")
                        .bind(camera_id)
                        .execute(&mut *tx)
                        .await?,
                ),
            };
        if updated.rows_affected() != 1 && event.revision > 0 {
            return Err(ProjectionError::Invalid(format!(
                "camera {id} is not in the read model"
            )));
        }
        Ok(())
    }
}

/// A camera as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct CameraRow {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its source, without credentials.
    pub url: String,
    /// Whether the vault keeps credentials for it.
    pub has_credentials: bool,
    /// Where it is.
    pub location: String,
    /// What the pipeline last reported.
    pub status: String,
    /// Whether it was started.
    pub running: bool,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// Decoded frame width.
    pub width: Option<i32>,
    /// Decoded frame height.
    pub height: Option<i32>,
    /// Frames read per second.
    pub fps: Option<i32>,
    /// Capture settings.
    pub capture: serde_json::Value,
    /// Motion settings.
    pub motion: serde_json::Value,
    /// The server that runs it.
    pub runner: Option<String>,
    /// When it was last started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its pipeline last decoded a frame (from its telemetry).
    pub last_frame_at: Option<DateTime<Utc>>,
    /// When its status last changed.
    pub status_changed_at: DateTime<Utc>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When its settings last changed.
    pub updated_at: DateTime<Utc>,
    /// Its revision.
    pub revision: i64,
}

/// The columns of a [`CameraRow`], over `surveillance_cameras c` joined with the telemetry the
/// pipeline writes (`t`).
const COLUMNS: &str = "c.id, c.name, c.url, c.has_credentials, c.location, c.status, c.running, \
     c.last_error, c.width, c.height, c.fps, c.capture, c.motion, c.runner, c.started_at, \
     (t.figures->>'last_frame_at')::timestamptz AS last_frame_at, c.status_changed_at, \
     c.created_at, c.updated_at, c.revision";

const FROM: &str = "surveillance_cameras c LEFT JOIN surveillance_telemetry t \
     ON t.camera_id = c.id AND t.org_id = c.org_id";

/// What a camera list is filtered by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CameraFilter {
    /// Only this status.
    pub status: Option<CameraStatus>,
    /// Location containing this (case-insensitive).
    pub location: Option<String>,
    /// Name or location containing this (case-insensitive).
    pub search: Option<String>,
}

/// A page of an organization's cameras, by name, with the total.
pub async fn list_cameras(
    pool: &PgPool,
    org_id: Uuid,
    filter: &CameraFilter,
    page: u32,
    per_page: u32,
) -> Result<(Vec<CameraRow>, u64), sqlx::Error> {
    let search = filter.search.as_deref().map(like_pattern);
    let location = filter.location.as_deref().map(like_pattern);
    let status = filter.status.map(CameraStatus::as_str);
    const WHERE: &str = "WHERE c.org_id = $1 AND ($2::text IS NULL OR c.status = $2) \
         AND ($3::text IS NULL OR c.location ILIKE $3) \
         AND ($4::text IS NULL OR c.name ILIKE $4 OR c.location ILIKE $4)";
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM surveillance_cameras c {WHERE}"
    )))
    .bind(org_id)
    .bind(status)
    .bind(location.as_deref())
    .bind(search.as_deref())
    .fetch_one(pool)
    .await?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
    let rows = sqlx::query_as::<_, CameraRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM {FROM} {WHERE} ORDER BY c.sort_key, c.id LIMIT $5 OFFSET $6"
    )))
    .bind(org_id)
    .bind(status)
    .bind(location.as_deref())
    .bind(search.as_deref())
    .bind(i64::from(per_page))
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((rows, total as u64))
}

/// One camera of an organization.
pub async fn get_camera(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<CameraRow>, sqlx::Error> {
    sqlx::query_as::<_, CameraRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE c.org_id = $1 AND c.id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The names of these cameras of an organization, by id.
pub async fn camera_names(
    pool: &PgPool,
    org_id: Uuid,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, String>, sqlx::Error> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, name FROM surveillance_cameras WHERE org_id = $1 AND id = ANY($2)",
    )
    .bind(org_id)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Every camera of an organization, by name: `(id, name, status)`.
pub async fn camera_statuses(
    pool: &PgPool,
    org_id: Uuid,
) -> Result<Vec<(Uuid, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, status FROM surveillance_cameras WHERE org_id = $1 \
         ORDER BY sort_key, id",
    )
    .bind(org_id)
    .fetch_all(pool)
    .await
}

/// An organization's cameras by status (every status present, 0 when none).
pub async fn cameras_by_status(
    pool: &PgPool,
    org_id: Uuid,
) -> Result<Vec<(String, u64)>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM surveillance_cameras WHERE org_id = $1 GROUP BY status",
    )
    .bind(org_id)
    .fetch_all(pool)
    .await?;
    Ok(["active", "connecting", "error", "inactive"]
        .into_iter()
        .map(|s| {
            let n = rows.iter().find(|(r, _)| r == s).map_or(0, |(_, n)| *n);
            (s.to_owned(), n as u64)
        })
        .collect())
}

/// Every started camera (of every organization) that no runner holds or `runner` holds: what a
/// starting runner takes. `(camera id, organization)`.
pub async fn cameras_to_run(pool: &PgPool, runner: &str) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, org_id FROM surveillance_cameras WHERE running \
         AND (runner IS NULL OR runner = $1) ORDER BY id",
    )
    .bind(runner)
    .fetch_all(pool)
    .await
}
