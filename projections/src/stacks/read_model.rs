//! The `stacks` read model: an organization's stacks at their current version.

use async_trait::async_trait;
use atelier_domain::stacks::stack::{Stack, StackEvent};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::like_pattern;

/// The `stacks` read model.
pub struct StacksProjection;

/// Its name.
pub const STACKS: &str = "stacks.stacks";

fn json(v: &impl Serialize) -> Result<serde_json::Value, ProjectionError> {
    serde_json::to_value(v).map_err(|e| ProjectionError::Invalid(e.to_string()))
}

#[async_trait]
impl Projection for StacksProjection {
    fn name(&self) -> &'static str {
        STACKS
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["stacks"]
    }

    fn categories(&self) -> Option<&'static [&'static str]> {
        Some(&[Stack::CATEGORY])
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM stacks").execute(tx).await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream.category() != Stack::CATEGORY {
            return Ok(());
        }
        let revision = event.revision as i64;
        use StackEvent as E;
        let (id, updated) =
            match StackEvent::decode_stored(&event.event_type, &event.metadata, &event.data)? {
                E::StackCreated {
                    stack_id,
                    org_id,
                    name,
                    description,
                    configuration,
                    valid,
                    origin,
                    created_at,
                } => (
                    stack_id,
                    sqlx::query(
                        "INSERT INTO stacks (id, org_id, name, sort_key, description, \
                         configuration, version, valid, llm_optimized, origin, created_at, \
                         updated_at, revision) \
                         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, false, $8, $9, $9, $10) \
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(stack_id)
                    .bind(org_id)
                    .bind(name.as_str())
                    .bind(name.sort_key())
                    .bind(&description)
                    .bind(&configuration)
                    .bind(valid)
                    .bind(json(&origin)?)
                    .bind(created_at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::StackDescribed {
                    stack_id,
                    name,
                    description,
                    at,
                } => (
                    stack_id,
                    sqlx::query(
                        "UPDATE stacks SET name = COALESCE($2, name), \
                         sort_key = COALESCE($3, sort_key), \
                         description = COALESCE($4, description), updated_at = $5, \
                         revision = $6 WHERE id = $1",
                    )
                    .bind(stack_id)
                    .bind(name.as_ref().map(|n| n.as_str().to_owned()))
                    .bind(name.as_ref().map(|n| n.sort_key()))
                    .bind(description)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::StackConfigured {
                    stack_id,
                    version,
                    configuration,
                    valid,
                    llm_optimized,
                    origin,
                    at,
                } => (
                    stack_id,
                    sqlx::query(
                        "UPDATE stacks SET configuration = $2, version = $3, valid = $4, \
                         llm_optimized = $5, origin = $6, updated_at = $7, revision = $8 \
                         WHERE id = $1",
                    )
                    .bind(stack_id)
                    .bind(&configuration)
                    .bind(version as i32)
                    .bind(valid)
                    .bind(llm_optimized)
                    .bind(json(&origin)?)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::StackDeployed {
                    stack_id,
                    version,
                    at,
                    ..
                } => (
                    stack_id,
                    sqlx::query(
                        "UPDATE stacks SET deployed_version = $2, last_deployed_at = $3, \
                         revision = $4 WHERE id = $1",
                    )
                    .bind(stack_id)
                    .bind(version as i32)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::StackDeleted { stack_id, .. } => (
                    stack_id,
                    sqlx::query("DELETE FROM stacks WHERE id = $1")
                        .bind(stack_id)
                        .execute(&mut *tx)
                        .await?,
                ),
            };
        if updated.rows_affected() != 1 && event.revision > 0 {
            return Err(ProjectionError::Invalid(format!(
                "stack {id} is not in the read model"
            )));
        }
        Ok(())
    }
}

/// A stack as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StackRow {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its configuration.
    pub configuration: serde_json::Value,
    /// Its configuration's version.
    pub version: i32,
    /// Whether that version passed validation.
    pub valid: bool,
    /// Whether it is the assistant's optimization.
    pub llm_optimized: bool,
    /// Who proposed it.
    pub origin: serde_json::Value,
    /// The version last deployed.
    pub deployed_version: Option<i32>,
    /// When one was.
    pub last_deployed_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its revision.
    pub revision: i64,
}

const COLUMNS: &str = "id, name, description, configuration, version, valid, llm_optimized, \
     origin, deployed_version, last_deployed_at, created_at, updated_at, revision";

/// A page of an organization's stacks, by name, with the total.
pub async fn list_stacks(
    pool: &PgPool,
    org_id: Uuid,
    search: Option<&str>,
    page: u32,
    per_page: u32,
) -> Result<(Vec<StackRow>, u64), sqlx::Error> {
    let pattern = search.map(like_pattern);
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stacks WHERE org_id = $1 \
         AND ($2::text IS NULL OR name ILIKE $2 OR description ILIKE $2)",
    )
    .bind(org_id)
    .bind(pattern.as_deref())
    .fetch_one(pool)
    .await?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
    let rows = sqlx::query_as::<_, StackRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM stacks WHERE org_id = $1 \
         AND ($2::text IS NULL OR name ILIKE $2 OR description ILIKE $2) \
         ORDER BY sort_key, id LIMIT $3 OFFSET $4"
    )))
    .bind(org_id)
    .bind(pattern.as_deref())
    .bind(i64::from(per_page))
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((rows, total as u64))
}

/// One stack of an organization.
pub async fn get_stack(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<StackRow>, sqlx::Error> {
    sqlx::query_as::<_, StackRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM stacks WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}
