//! The `deploy_targets` read model: an organization's targets, and how many it has.

use async_trait::async_trait;
use atelier_domain::deploy::target::{Target, TargetEvent, TargetKind};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::like_pattern;

/// The `deploy_targets` read model.
pub struct TargetsProjection;

/// Its name.
pub const TARGETS: &str = "deploy.targets";

#[async_trait]
impl Projection for TargetsProjection {
    fn name(&self) -> &'static str {
        TARGETS
    }

    fn tables(&self) -> &'static [&'static str] {
        &["deploy_targets"]
    }

    fn categories(&self) -> Option<&'static [&'static str]> {
        Some(&[Target::CATEGORY])
    }

    fn version(&self) -> i32 {
        1
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM deploy_targets")
            .execute(tx)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream.category() != Target::CATEGORY {
            return Ok(());
        }
        let revision = event.revision as i64;
        let (id, updated) =
            match TargetEvent::decode_stored(&event.event_type, &event.metadata, &event.data)? {
                TargetEvent::TargetCreated {
                    target_id,
                    org_id,
                    fields,
                    at,
                } => (
                    target_id,
                    sqlx::query(
                        "INSERT INTO deploy_targets (id, org_id, name, name_key, sort_key, kind, \
                     description, created_at, updated_at, revision) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
                    )
                    .bind(target_id)
                    .bind(org_id)
                    .bind(fields.name.as_str())
                    .bind(fields.name.key())
                    .bind(fields.name.sort_key())
                    .bind(fields.kind.as_str())
                    .bind(&fields.description)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                TargetEvent::TargetUpdated {
                    target_id,
                    fields,
                    at,
                } => (
                    target_id,
                    sqlx::query(
                        "UPDATE deploy_targets SET name = $2, name_key = $3, sort_key = $4, \
                     kind = $5, description = $6, updated_at = $7, revision = $8 WHERE id = $1",
                    )
                    .bind(target_id)
                    .bind(fields.name.as_str())
                    .bind(fields.name.key())
                    .bind(fields.name.sort_key())
                    .bind(fields.kind.as_str())
                    .bind(&fields.description)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                TargetEvent::TargetDeleted { target_id, .. } => (
                    target_id,
                    sqlx::query("DELETE FROM deploy_targets WHERE id = $1")
                        .bind(target_id)
                        .execute(&mut *tx)
                        .await?,
                ),
            };
        if updated.rows_affected() != 1 {
            return Err(ProjectionError::Invalid(format!(
                "target {id} is not in the read model"
            )));
        }
        Ok(())
    }
}

/// A target as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TargetRow {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// `dev`, `staging`, `prod` or `custom`.
    pub kind: String,
    /// What it is for.
    pub description: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its revision (the `ETag`).
    pub revision: i64,
}

/// A page of targets, by name.
pub async fn list_targets(
    pool: &PgPool,
    org_id: Uuid,
    kind: Option<TargetKind>,
    search: Option<&str>,
    page: u32,
    per_page: u32,
) -> Result<(Vec<TargetRow>, u64), sqlx::Error> {
    let pattern = search.map(like_pattern);
    let kind = kind.map(TargetKind::as_str);
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deploy_targets WHERE org_id = $1 \
         AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR name ILIKE $3)",
    )
    .bind(org_id)
    .bind(kind)
    .bind(pattern.as_deref())
    .fetch_one(pool)
    .await?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
    let rows = sqlx::query_as::<_, TargetRow>(
        "SELECT id, name, kind, description, created_at, updated_at, revision \
         FROM deploy_targets WHERE org_id = $1 \
         AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR name ILIKE $3) \
         ORDER BY sort_key, id LIMIT $4 OFFSET $5",
    )
    .bind(org_id)
    .bind(kind)
    .bind(pattern.as_deref())
    .bind(i64::from(per_page))
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((rows, total as u64))
}

/// One target of an organization.
pub async fn get_target(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<TargetRow>, sqlx::Error> {
    sqlx::query_as::<_, TargetRow>(
        "SELECT id, name, kind, description, created_at, updated_at, revision \
         FROM deploy_targets WHERE org_id = $1 AND id = $2",
    )
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// How many targets each of these organizations has (WindFlow's `environment_count`).
pub async fn target_counts(
    pool: &PgPool,
    org_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, u64>, sqlx::Error> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT org_id, count(*) FROM deploy_targets WHERE org_id = ANY($1) GROUP BY org_id",
    )
    .bind(org_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(o, n)| (o, n as u64)).collect())
}
