//! The `deployments` read model (with every version of each spec), the deploy stats, and what
//! a deploy runner looks at after a start.

use async_trait::async_trait;
use atelier_domain::deploy::deployment::{Deployment, DeploymentEvent, DeploymentStatus};
use atelier_domain::deploy::spec::{DeploymentSpec, EnvVar};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::{Counting, ListPage, Matching, Paging, Sort, Sorts, like_pattern, list_page};

/// The `deployments` read model.
pub struct DeploymentsProjection;

/// Its name.
pub const DEPLOYMENTS: &str = "deploy.deployments";

fn json(spec: &DeploymentSpec) -> Result<serde_json::Value, ProjectionError> {
    serde_json::to_value(spec).map_err(|e| ProjectionError::Invalid(e.to_string()))
}

fn env_json(env: &[EnvVar]) -> Result<serde_json::Value, ProjectionError> {
    serde_json::to_value(env).map_err(|e| ProjectionError::Invalid(e.to_string()))
}

/// A version to record.
struct NewVersion<'a> {
    version: u32,
    spec: &'a DeploymentSpec,
    cause: &'static str,
    rolled_back_from: Option<u32>,
    by: &'a str,
    at: DateTime<Utc>,
}

async fn insert_version(
    tx: &mut PgConnection,
    id: Uuid,
    v: NewVersion<'_>,
) -> Result<(), ProjectionError> {
    let NewVersion {
        version,
        spec,
        cause,
        rolled_back_from,
        by,
        at,
    } = v;
    sqlx::query(
        "INSERT INTO deployment_versions (deployment_id, version, org_id, spec, cause, \
         rolled_back_from, created_by, created_at) \
         SELECT $1, $2, org_id, $3, $4, $5, $6, $7 FROM deployments WHERE id = $1",
    )
    .bind(id)
    .bind(version as i32)
    .bind(json(spec)?)
    .bind(cause)
    .bind(rolled_back_from.map(|v| v as i32))
    .bind(by)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn version_spec(
    tx: &mut PgConnection,
    id: Uuid,
    version: u32,
) -> Result<DeploymentSpec, ProjectionError> {
    let spec: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT spec FROM deployment_versions WHERE deployment_id = $1 AND version = $2",
    )
    .bind(id)
    .bind(version as i32)
    .fetch_optional(&mut *tx)
    .await?;
    let spec = spec.ok_or_else(|| {
        ProjectionError::Invalid(format!("deployment {id} has no version {version}"))
    })?;
    serde_json::from_value(spec).map_err(|e| ProjectionError::Invalid(e.to_string()))
}

#[async_trait]
impl Projection for DeploymentsProjection {
    fn name(&self) -> &'static str {
        DEPLOYMENTS
    }

    fn tables(&self) -> &'static [&'static str] {
        &["deployments", "deployment_versions"]
    }

    fn categories(&self) -> Option<&'static [&'static str]> {
        Some(&[Deployment::CATEGORY])
    }

    fn version(&self) -> i32 {
        1
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM deployment_versions")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM deployments").execute(tx).await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream.category() != Deployment::CATEGORY {
            return Ok(());
        }
        let revision = event.revision as i64;
        use DeploymentEvent as E;
        let (id, updated) = match DeploymentEvent::decode_stored(
            &event.event_type,
            &event.metadata,
            &event.data,
        )? {
            E::DeploymentCreated {
                deployment_id,
                org_id,
                spec,
                created_by,
                created_at,
            } => {
                let r = sqlx::query(
                    "INSERT INTO deployments (id, org_id, name, name_key, deployment_type, \
                     framework, github_url, cores, memory, disk, target_id, env, status, version, \
                     versions, created_by, created_at, updated_at, revision, stack_id, \
                     stack_version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', 1, 1, \
                     $13, $14, $14, $15, $16, $17)",
                )
                .bind(deployment_id)
                .bind(org_id)
                .bind(spec.name.as_str())
                .bind(spec.name.key())
                .bind(spec.deployment_type.as_str())
                .bind(&spec.framework)
                .bind(spec.github_url.as_ref().map(|g| g.as_str()))
                .bind(spec.resources.cores as i32)
                .bind(spec.resources.memory as i32)
                .bind(spec.resources.disk as i32)
                .bind(spec.target_id)
                .bind(env_json(&spec.env)?)
                .bind(&created_by)
                .bind(created_at)
                .bind(revision)
                .bind(spec.stack.as_ref().map(|s| s.stack_id))
                .bind(spec.stack.as_ref().map(|s| s.version as i32))
                .execute(&mut *tx)
                .await?;
                insert_version(
                    tx,
                    deployment_id,
                    NewVersion {
                        version: 1,
                        spec: &spec,
                        cause: "created",
                        rolled_back_from: None,
                        by: &created_by,
                        at: created_at,
                    },
                )
                .await?;
                (deployment_id, r)
            }
            E::DeploymentProvisioning {
                deployment_id,
                runner,
                driver,
                at,
                ..
            } => (
                deployment_id,
                sqlx::query(
                    "UPDATE deployments SET status = 'provisioning', runner = $2, driver = $3, \
                     failure = NULL, error_message = NULL, updated_at = $4, revision = $5 \
                     WHERE id = $1",
                )
                .bind(deployment_id)
                .bind(runner)
                .bind(driver)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::DeploymentProvisioned {
                deployment_id,
                ip_address,
                vm_id,
                at,
            } => (
                deployment_id,
                sqlx::query(
                    "UPDATE deployments SET status = 'deploying', ip_address = $2, vm_id = $3, \
                     updated_at = $4, revision = $5 WHERE id = $1",
                )
                .bind(deployment_id)
                .bind(ip_address)
                .bind(vm_id as i32)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::DeploymentRunning {
                deployment_id,
                access_url,
                at,
            } => (
                deployment_id,
                sqlx::query(
                    "UPDATE deployments SET status = 'running', access_url = $2, \
                     deployed_at = $3, updated_at = $3, revision = $4 WHERE id = $1",
                )
                .bind(deployment_id)
                .bind(access_url)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::DeploymentFailed {
                deployment_id,
                reason,
                message,
                at,
            } => (
                deployment_id,
                failed(tx, deployment_id, reason.as_str(), &message, at, revision).await?,
            ),
            E::DeploymentCancelled {
                deployment_id, at, ..
            } => (
                deployment_id,
                failed(tx, deployment_id, "cancelled", "cancelled", at, revision).await?,
            ),
            E::DeploymentStopped {
                deployment_id, at, ..
            } => (
                deployment_id,
                status(tx, deployment_id, DeploymentStatus::Stopped, at, revision).await?,
            ),
            E::DeploymentStarted {
                deployment_id, at, ..
            } => (
                deployment_id,
                sqlx::query(
                    "UPDATE deployments SET status = 'deploying', access_url = NULL, \
                     updated_at = $2, revision = $3 WHERE id = $1",
                )
                .bind(deployment_id)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::DeploymentRedeployed {
                deployment_id, at, ..
            } => (
                deployment_id,
                sqlx::query(
                    "UPDATE deployments SET status = 'pending', failure = NULL, \
                     error_message = NULL, updated_at = $2, revision = $3 WHERE id = $1",
                )
                .bind(deployment_id)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::DeploymentRolledBack {
                deployment_id,
                from_version,
                to_version,
                version,
                by,
                at,
            } => {
                let spec = version_spec(tx, deployment_id, to_version).await?;
                insert_version(
                    tx,
                    deployment_id,
                    NewVersion {
                        version,
                        spec: &spec,
                        cause: "rollback",
                        rolled_back_from: Some(from_version),
                        by: &by,
                        at,
                    },
                )
                .await?;
                let r = sqlx::query(
                    "UPDATE deployments SET name = $2, name_key = $3, deployment_type = $4, \
                     framework = $5, github_url = $6, cores = $7, memory = $8, disk = $9, \
                     target_id = $10, env = $11, version = $12, versions = $12, \
                     status = 'pending', failure = NULL, error_message = NULL, \
                     updated_at = $13, revision = $14 WHERE id = $1",
                )
                .bind(deployment_id)
                .bind(spec.name.as_str())
                .bind(spec.name.key())
                .bind(spec.deployment_type.as_str())
                .bind(&spec.framework)
                .bind(spec.github_url.as_ref().map(|g| g.as_str()))
                .bind(spec.resources.cores as i32)
                .bind(spec.resources.memory as i32)
                .bind(spec.resources.disk as i32)
                .bind(spec.target_id)
                .bind(env_json(&spec.env)?)
                .bind(version as i32)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?;
                (deployment_id, r)
            }
            E::DeploymentEnvChanged {
                deployment_id,
                env,
                version,
                by,
                at,
            } => {
                let current: i32 =
                    sqlx::query_scalar("SELECT version FROM deployments WHERE id = $1")
                        .bind(deployment_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| {
                            ProjectionError::Invalid(format!(
                                "deployment {deployment_id} is not in the read model"
                            ))
                        })?;
                let mut spec = version_spec(tx, deployment_id, current as u32).await?;
                spec.env = env.clone();
                insert_version(
                    tx,
                    deployment_id,
                    NewVersion {
                        version,
                        spec: &spec,
                        cause: "env",
                        rolled_back_from: None,
                        by: &by,
                        at,
                    },
                )
                .await?;
                let r = sqlx::query(
                    "UPDATE deployments SET env = $2, version = $3, versions = $3, \
                     updated_at = $4, revision = $5 WHERE id = $1",
                )
                .bind(deployment_id)
                .bind(env_json(&env)?)
                .bind(version as i32)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?;
                (deployment_id, r)
            }
            E::DeploymentDeleted {
                deployment_id, at, ..
            } => (
                deployment_id,
                sqlx::query(
                    "UPDATE deployments SET status = 'deleted', access_url = NULL, \
                     destroyed = (runner IS NULL), updated_at = $2, revision = $3 WHERE id = $1",
                )
                .bind(deployment_id)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::DeploymentDestroyed { deployment_id, at } => (
                deployment_id,
                sqlx::query(
                    "UPDATE deployments SET destroyed = true, runner = NULL, ip_address = NULL, \
                     vm_id = NULL, access_url = NULL, updated_at = $2, revision = $3 \
                     WHERE id = $1",
                )
                .bind(deployment_id)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
        };
        if updated.rows_affected() != 1 {
            return Err(ProjectionError::Invalid(format!(
                "deployment {id} is not in the read model"
            )));
        }
        Ok(())
    }
}

async fn failed(
    tx: &mut PgConnection,
    id: Uuid,
    reason: &str,
    message: &str,
    at: DateTime<Utc>,
    revision: i64,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    sqlx::query(
        "UPDATE deployments SET status = 'failed', failure = $2, error_message = $3, \
         runner = NULL, ip_address = NULL, vm_id = NULL, access_url = NULL, updated_at = $4, \
         revision = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .bind(message)
    .bind(at)
    .bind(revision)
    .execute(&mut *tx)
    .await
}

async fn status(
    tx: &mut PgConnection,
    id: Uuid,
    status: DeploymentStatus,
    at: DateTime<Utc>,
    revision: i64,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    sqlx::query("UPDATE deployments SET status = $2, updated_at = $3, revision = $4 WHERE id = $1")
        .bind(id)
        .bind(status.as_str())
        .bind(at)
        .bind(revision)
        .execute(&mut *tx)
        .await
}

/// A deployment as lists and detail pages show it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DeploymentRow {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its name.
    pub name: String,
    /// `vm` or `lxc`.
    pub deployment_type: String,
    /// Its framework's key.
    pub framework: String,
    /// Its repository (`None`: a stack's deployment).
    pub github_url: Option<String>,
    /// The stack it runs, for a stack's deployment.
    pub stack_id: Option<Uuid>,
    /// Which version of it.
    pub stack_version: Option<i32>,
    /// Cores.
    pub cores: i32,
    /// Memory, MB.
    pub memory: i32,
    /// Disk, GB.
    pub disk: i32,
    /// Its target.
    pub target_id: Option<Uuid>,
    /// Its variables, as events hold them (secrets by reference).
    pub env: serde_json::Value,
    /// Its status.
    pub status: String,
    /// The version it runs.
    pub version: i32,
    /// How many versions it has.
    pub versions: i32,
    /// The runner that owns it.
    pub runner: Option<String>,
    /// The driver that provisioned it.
    pub driver: Option<String>,
    /// Its address.
    pub ip_address: Option<String>,
    /// Its VM id.
    pub vm_id: Option<i32>,
    /// Where its app answers.
    pub access_url: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// What went wrong.
    pub error_message: Option<String>,
    /// Whether a deleted deployment's resources are gone.
    pub destroyed: bool,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When its app last started answering.
    pub deployed_at: Option<DateTime<Utc>>,
    /// Its revision (the `ETag`).
    pub revision: i64,
}

const COLUMNS: &str = "id, org_id, name, deployment_type, framework, github_url, stack_id, stack_version, cores, memory, \
    disk, target_id, env, status, version, versions, runner, driver, ip_address, vm_id, \
    access_url, failure, error_message, destroyed, created_by, created_at, updated_at, \
    deployed_at, revision";

/// Deployments are listed newest first; `deployments_org_live` on `(org_id, created_at DESC,
/// id DESC)` of those not deleted serves the list without `status`, `deployments_org_status`
/// with the status before `created_at` a list of one status.
pub const DEPLOYMENT_SORTS: Sorts = Sorts {
    all: &[Sort::by_time("-created_at", "created_at")],
    default: Sort::by_time("-created_at", "created_at"),
};

/// A page request of deployments, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentQuery {
    /// Which page.
    pub paging: Paging,
    /// Only this status (deleted ones are listed only when asked for).
    pub status: Option<DeploymentStatus>,
    /// Only this framework.
    pub framework: Option<String>,
    /// Only this type (`vm`, `lxc`).
    pub deployment_type: Option<String>,
    /// Only this target.
    pub target_id: Option<Uuid>,
    /// Part of the name, case-insensitive.
    pub search: Option<String>,
}

/// One page of an organization's deployments, newest first, by number or after a keyset, and
/// how many match, counted up to [`crate::sql::COUNT_CAP`]. Nobody keeps a count: what the
/// list shows without a status is what runs (deleted ones aside), which what it costs to run
/// keeps small, and the count of it reads only those rows, from `deployments_org_live`.
pub async fn list_deployments(
    pool: &PgPool,
    org_id: Uuid,
    query: &DeploymentQuery,
) -> Result<ListPage<DeploymentRow>, sqlx::Error> {
    let mut matching = Matching::new("deployments");
    matching.and_eq("org_id", org_id);
    match query.status {
        Some(status) => {
            matching.and_eq("status", status.as_str());
        }
        None => {
            matching.and("status <> 'deleted'");
        }
    }
    if let Some(framework) = query.framework.as_deref() {
        matching.and_eq("framework", framework);
    }
    if let Some(deployment_type) = query.deployment_type.as_deref() {
        matching.and_eq("deployment_type", deployment_type);
    }
    if let Some(target_id) = query.target_id {
        matching.and_eq("target_id", target_id);
    }
    if let Some(search) = query.search.as_deref() {
        let pattern = matching.param(like_pattern(search));
        matching.and(format!("name ILIKE {pattern}"));
    }
    list_page(pool, COLUMNS, matching, &query.paging, &Counting::Bounded).await
}

/// One deployment of an organization (deleted ones too).
pub async fn get_deployment(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<DeploymentRow>, sqlx::Error> {
    sqlx::query_as::<_, DeploymentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deployments WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// One version of a deployment's spec.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct VersionRow {
    /// Its number, from 1.
    pub version: i32,
    /// The spec (variables' secrets by reference).
    pub spec: serde_json::Value,
    /// `created`, `env` or `rollback`.
    pub cause: String,
    /// For a rollback, the version it replaced.
    pub rolled_back_from: Option<i32>,
    /// Who.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Every version of a deployment, newest first.
pub async fn deployment_versions(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<Vec<VersionRow>, sqlx::Error> {
    sqlx::query_as::<_, VersionRow>(
        "SELECT version, spec, cause, rolled_back_from, created_by, created_at \
         FROM deployment_versions WHERE org_id = $1 AND deployment_id = $2 ORDER BY version DESC",
    )
    .bind(org_id)
    .bind(id)
    .fetch_all(pool)
    .await
}

/// The PaaS seed's figures for one organization (deleted deployments aside).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeployStats {
    /// Deployments that are not deleted.
    pub total_deployments: u64,
    /// Of which running.
    pub running_deployments: u64,
    /// Of which failed.
    pub failed_deployments: u64,
    /// Running ÷ total, in percent, to one decimal (the seed: 12 running of 15 is 80.0); 0
    /// without deployments.
    pub success_rate: f64,
}

/// The deploy figures of one organization.
pub async fn deploy_stats(pool: &PgPool, org_id: Uuid) -> Result<DeployStats, sqlx::Error> {
    let (total, running, failed): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'running'), \
         count(*) FILTER (WHERE status = 'failed') \
         FROM deployments WHERE org_id = $1 AND status <> 'deleted'",
    )
    .bind(org_id)
    .fetch_one(pool)
    .await?;
    Ok(DeployStats {
        total_deployments: total as u64,
        running_deployments: running as u64,
        failed_deployments: failed as u64,
        success_rate: success_rate(running as u64, total as u64),
    })
}

fn success_rate(running: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (running as f64 * 1000.0 / total as f64).round() / 10.0
}

/// Every deployment a runner must look at after a start: the pending ones, and those it owns
/// that are not settled for good. Only the runner (a process of the platform, not acting for a
/// tenant) asks this.
pub async fn deployment_work(pool: &PgPool, runner: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM deployments WHERE status = 'pending' \
         OR (runner = $1 AND status <> 'failed' AND NOT (status = 'deleted' AND destroyed)) \
         ORDER BY created_at, id",
    )
    .bind(runner)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_success_rate_is_running_over_total_in_percent_as_the_seed_shows() {
        assert_eq!(success_rate(12, 15), 80.0);
        assert_eq!(success_rate(1, 3), 33.3);
        assert_eq!(success_rate(0, 0), 0.0);
    }
}
