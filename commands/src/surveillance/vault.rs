//! What the surveillance context keeps beside the log: camera sources' credentials
//! ([`Credentials`], named in events by id only), detections' JPEG snapshots ([`Snapshots`],
//! too big and binary for an event) and the pipelines' telemetry ([`TelemetryTable`]: figures
//! measured many times a second, which decide nothing).

use sqlx::PgPool;
use uuid::Uuid;

/// Camera sources' credentials (`user:password`), by reference. Values never reach an event, a
/// log line, the live feed or an answer.
#[derive(Clone)]
pub struct Credentials {
    pool: PgPool,
}

impl Credentials {
    /// The credentials kept in this database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Keeps a value: its reference.
    pub async fn put(
        &self,
        org_id: Uuid,
        camera_id: Uuid,
        value: &str,
    ) -> Result<Uuid, sqlx::Error> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO surveillance_credentials (id, org_id, camera_id, value) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(org_id)
        .bind(camera_id)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// The value of a reference of this camera of this organization.
    pub async fn value(
        &self,
        org_id: Uuid,
        camera_id: Uuid,
        reference: Uuid,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT value FROM surveillance_credentials \
             WHERE org_id = $1 AND camera_id = $2 AND id = $3",
        )
        .bind(org_id)
        .bind(camera_id)
        .bind(reference)
        .fetch_optional(&self.pool)
        .await
    }

    /// Drops a value of the organization that no event names.
    pub async fn discard(&self, org_id: Uuid, reference: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM surveillance_credentials WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(reference)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops every value of a camera of the organization.
    pub async fn forget(&self, org_id: Uuid, camera_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM surveillance_credentials WHERE org_id = $1 AND camera_id = $2")
            .bind(org_id)
            .bind(camera_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The largest snapshot kept, in bytes.
pub const MAX_SNAPSHOT_BYTES: usize = 2 * 1024 * 1024;

/// Detections' JPEG snapshots.
#[derive(Clone)]
pub struct Snapshots {
    pool: PgPool,
}

impl Snapshots {
    /// The snapshots kept in this database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Keeps a snapshot of a detection: its id.
    pub async fn put(
        &self,
        org_id: Uuid,
        detection_id: Uuid,
        jpeg: &[u8],
    ) -> Result<Uuid, sqlx::Error> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO surveillance_snapshots (id, org_id, detection_id, jpeg) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(org_id)
        .bind(detection_id)
        .bind(jpeg)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// A snapshot of this organization.
    pub async fn get(&self, org_id: Uuid, id: Uuid) -> Result<Option<Vec<u8>>, sqlx::Error> {
        sqlx::query_scalar("SELECT jpeg FROM surveillance_snapshots WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Drops the snapshots of a detection of the organization.
    pub async fn forget(&self, org_id: Uuid, detection_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM surveillance_snapshots WHERE org_id = $1 AND detection_id = $2")
            .bind(org_id)
            .bind(detection_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The pipelines' figures, one row per camera, written by the server that runs it.
#[derive(Clone)]
pub struct TelemetryTable {
    pool: PgPool,
}

impl TelemetryTable {
    /// The table in this database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Writes a camera's latest figures.
    pub async fn put(
        &self,
        org_id: Uuid,
        camera_id: Uuid,
        runner: &str,
        figures: &serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO surveillance_telemetry (camera_id, org_id, runner, figures, updated_at) \
             VALUES ($1, $2, $3, $4, now()) \
             ON CONFLICT (camera_id) DO UPDATE SET runner = $3, figures = $4, updated_at = now()",
        )
        .bind(camera_id)
        .bind(org_id)
        .bind(runner)
        .bind(figures)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A camera's latest figures and when they were written.
    pub async fn get(
        &self,
        org_id: Uuid,
        camera_id: Uuid,
    ) -> Result<Option<(serde_json::Value, chrono::DateTime<chrono::Utc>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT figures, updated_at FROM surveillance_telemetry WHERE org_id = $1 AND camera_id = $2",
        )
        .bind(org_id)
        .bind(camera_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Every camera's latest figures in an organization.
    pub async fn all(
        &self,
        org_id: Uuid,
    ) -> Result<Vec<(Uuid, serde_json::Value, chrono::DateTime<chrono::Utc>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT camera_id, figures, updated_at FROM surveillance_telemetry WHERE org_id = $1",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await
    }
}
