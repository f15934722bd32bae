//! The `venv_environments` read model with each environment's packages (`venv_packages`), and
//! the queries over them: lists, one environment by id or by name, its packages, the ephemeral
//! ones and when they expire.

use async_trait::async_trait;
use atelier_domain::venvs::environment::{EnvStatus, Environment, EnvironmentEvent};
use atelier_domain::venvs::requirement::normalize_name as normalize;
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::{Counting, ListPage, Matching, Paging, Sort, Sorts, like_pattern, list_page};

/// The `venv_environments` read model.
pub struct EnvironmentsProjection;

/// Its name.
pub const ENVIRONMENTS: &str = "venvs.environments";

#[async_trait]
impl Projection for EnvironmentsProjection {
    fn name(&self) -> &'static str {
        ENVIRONMENTS
    }

    fn tables(&self) -> &'static [&'static str] {
        &["venv_environments", "venv_packages"]
    }

    fn categories(&self) -> Option<&'static [&'static str]> {
        Some(&[Environment::CATEGORY])
    }

    fn version(&self) -> i32 {
        1
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM venv_packages")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM venv_environments")
            .execute(tx)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream.category() != Environment::CATEGORY {
            return Ok(());
        }
        let revision = event.revision as i64;
        use EnvironmentEvent as E;
        let (id, updated) =
            match EnvironmentEvent::decode_stored(&event.event_type, &event.metadata, &event.data)?
            {
                E::EnvironmentCreated {
                    environment_id,
                    org_id,
                    name,
                    python_version,
                    backend,
                    description,
                    packages,
                    ephemeral,
                    operation_id,
                    by,
                    at,
                } => {
                    let requested = serde_json::to_value(&packages)
                        .map_err(|e| ProjectionError::Invalid(e.to_string()))?;
                    let r = sqlx::query(
                    "INSERT INTO venv_environments (id, org_id, name, name_key, python_version, \
                     backend, description, requested, status, ephemeral, ttl_secs, expires_at, \
                     isolation_level, operation_id, created_by, created_at, updated_at, \
                     revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'creating', $9, $10, $11, \
                     $12, $13, $14, $15, $15, $16)",
                )
                .bind(environment_id)
                .bind(org_id)
                .bind(name.as_str())
                .bind(name.key())
                .bind(python_version.to_string())
                .bind(backend.as_str())
                .bind(&description)
                .bind(requested)
                .bind(ephemeral.is_some())
                .bind(ephemeral.as_ref().map(|e| e.ttl_secs as i64))
                .bind(ephemeral.as_ref().map(|e| e.expires_at))
                .bind(ephemeral.as_ref().map(|e| e.isolation_level.clone()))
                .bind(operation_id)
                .bind(&by)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?;
                    (environment_id, r)
                }
                E::EnvironmentReady {
                    environment_id,
                    python,
                    at,
                } => (
                    environment_id,
                    sqlx::query(
                        "UPDATE venv_environments SET status = 'ready', python = $2, \
                     updated_at = $3, revision = $4 WHERE id = $1",
                    )
                    .bind(environment_id)
                    .bind(&python)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::EnvironmentCreationFailed {
                    environment_id,
                    error,
                    at,
                } => (
                    environment_id,
                    sqlx::query(
                        "UPDATE venv_environments SET status = 'failed', error = $2, \
                     updated_at = $3, revision = $4 WHERE id = $1",
                    )
                    .bind(environment_id)
                    .bind(&error)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::EnvironmentUpdated {
                    environment_id,
                    description,
                    at,
                    ..
                } => (
                    environment_id,
                    sqlx::query(
                        "UPDATE venv_environments SET description = $2, updated_at = $3, \
                     revision = $4 WHERE id = $1",
                    )
                    .bind(environment_id)
                    .bind(&description)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::PackageInstalled {
                    environment_id,
                    package,
                    ..
                } => {
                    sqlx::query(
                    "INSERT INTO venv_packages (environment_id, name_key, org_id, name, version, \
                     installed_at) SELECT $1, $2, org_id, $3, $4, $5 FROM venv_environments \
                     WHERE id = $1 ON CONFLICT (environment_id, name_key) DO UPDATE \
                     SET name = EXCLUDED.name, version = EXCLUDED.version, \
                     installed_at = EXCLUDED.installed_at",
                )
                .bind(environment_id)
                .bind(normalize(&package.name))
                .bind(&package.name)
                .bind(&package.version)
                .bind(package.installed_at)
                .execute(&mut *tx)
                .await?;
                    (
                        environment_id,
                        count_packages(tx, environment_id, package.installed_at, revision).await?,
                    )
                }
                E::PackageUninstalled {
                    environment_id,
                    package_name,
                    at,
                    ..
                } => {
                    sqlx::query(
                        "DELETE FROM venv_packages WHERE environment_id = $1 AND name_key = $2",
                    )
                    .bind(environment_id)
                    .bind(normalize(&package_name))
                    .execute(&mut *tx)
                    .await?;
                    (
                        environment_id,
                        count_packages(tx, environment_id, at, revision).await?,
                    )
                }
                E::EnvironmentActivated { environment_id, at } => (
                    environment_id,
                    sqlx::query(
                        "UPDATE venv_environments SET activated_at = $2, updated_at = $2, \
                     revision = $3 WHERE id = $1",
                    )
                    .bind(environment_id)
                    .bind(at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?,
                ),
                E::EnvironmentDeleted {
                    environment_id, at, ..
                } => gone(tx, environment_id, EnvStatus::Deleted, at, revision).await?,
                E::EnvironmentExpired {
                    environment_id, at, ..
                } => gone(tx, environment_id, EnvStatus::Expired, at, revision).await?,
            };
        if updated.rows_affected() != 1 {
            return Err(ProjectionError::Invalid(format!(
                "environment {id} is not in the read model"
            )));
        }
        Ok(())
    }
}

async fn count_packages(
    tx: &mut PgConnection,
    id: Uuid,
    at: DateTime<Utc>,
    revision: i64,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    sqlx::query(
        "UPDATE venv_environments SET package_count = \
         (SELECT count(*) FROM venv_packages WHERE environment_id = $1), \
         updated_at = greatest(updated_at, $2), revision = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(at)
    .bind(revision)
    .execute(&mut *tx)
    .await
}

async fn gone(
    tx: &mut PgConnection,
    id: Uuid,
    status: EnvStatus,
    at: DateTime<Utc>,
    revision: i64,
) -> Result<(Uuid, sqlx::postgres::PgQueryResult), sqlx::Error> {
    sqlx::query("DELETE FROM venv_packages WHERE environment_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let r = sqlx::query(
        "UPDATE venv_environments SET status = $2, package_count = 0, activated_at = NULL, \
         updated_at = $3, revision = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(at)
    .bind(revision)
    .execute(&mut *tx)
    .await?;
    Ok((id, r))
}

/// An environment as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct EnvironmentRow {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its Python version (`3.11`).
    pub python_version: String,
    /// The Python it runs (`3.11.7`), once made.
    pub python: Option<String>,
    /// Its backend.
    pub backend: String,
    /// What it is for.
    pub description: String,
    /// The packages asked for at creation.
    pub requested: serde_json::Value,
    /// `creating`, `ready`, `failed`, `deleted` or `expired`.
    pub status: String,
    /// Why it could not be made.
    pub error: Option<String>,
    /// How many packages are installed.
    pub package_count: i32,
    /// Whether it is ephemeral.
    pub ephemeral: bool,
    /// Its time to live, for an ephemeral one.
    pub ttl_secs: Option<i64>,
    /// When it expires, for an ephemeral one.
    pub expires_at: Option<DateTime<Utc>>,
    /// GestVenv's isolation level, for an ephemeral one.
    pub isolation_level: Option<String>,
    /// The operation that made it.
    pub operation_id: Uuid,
    /// When it was last activated.
    pub activated_at: Option<DateTime<Utc>>,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its revision (the `ETag`).
    pub revision: i64,
}

const COLUMNS: &str = "id, org_id, name, python_version, python, backend, description, \
    requested, status, error, package_count, ephemeral, ttl_secs, expires_at, isolation_level, \
    operation_id, activated_at, created_by, created_at, updated_at, revision";

/// Environments are listed newest first; `venv_environments_org_live` on `(org_id, ephemeral,
/// created_at DESC, id DESC)` of the live ones serves the list without `status`,
/// `venv_environments_org_status` with the status before `created_at` a list of one status.
pub const ENVIRONMENT_SORTS: Sorts = Sorts {
    all: &[Sort::by_time("-created_at", "created_at")],
    default: Sort::by_time("-created_at", "created_at"),
};

/// What a list of environments asks for.
#[derive(Debug, Clone)]
pub struct EnvironmentQuery {
    /// Which page.
    pub paging: Paging,
    /// Part of the name.
    pub search: Option<String>,
    /// Only this backend.
    pub backend: Option<String>,
    /// Only this status (else every live one).
    pub status: Option<EnvStatus>,
    /// `Some(true)`: only ephemeral ones; `Some(false)`: only lasting ones.
    pub ephemeral: Option<bool>,
}

/// A page of an organization's environments, newest first, by number or after a keyset, with
/// the total counted up to [`crate::sql::COUNT_CAP`]. Nobody keeps a count: the list without a
/// status shows the live environments, each a directory of packages on a server, which their
/// disk keeps few, and the count reads only those, from `venv_environments_org_live`.
pub async fn list_environments(
    pool: &PgPool,
    org_id: Uuid,
    query: &EnvironmentQuery,
) -> Result<ListPage<EnvironmentRow>, sqlx::Error> {
    let mut matching = Matching::new("venv_environments");
    matching.and_eq("org_id", org_id);
    if let Some(ephemeral) = query.ephemeral {
        matching.and_eq("ephemeral", ephemeral);
    }
    match query.status {
        Some(status) => {
            matching.and_eq("status", status.as_str());
        }
        None => {
            matching.and("status NOT IN ('deleted', 'expired')");
        }
    }
    if let Some(backend) = query.backend.as_deref() {
        matching.and_eq("backend", backend);
    }
    if let Some(search) = query.search.as_deref() {
        let pattern = matching.param(like_pattern(search));
        matching.and(format!("name ILIKE {pattern}"));
    }
    list_page(pool, COLUMNS, matching, &query.paging, &Counting::Bounded).await
}

/// One environment of an organization, by id (gone ones too).
pub async fn get_environment(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<EnvironmentRow>, sqlx::Error> {
    sqlx::query_as::<_, EnvironmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM venv_environments WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The live environment of an organization with this name (case aside).
pub async fn find_environment_by_name(
    pool: &PgPool,
    org_id: Uuid,
    name: &str,
) -> Result<Option<EnvironmentRow>, sqlx::Error> {
    sqlx::query_as::<_, EnvironmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM venv_environments WHERE org_id = $1 AND name_key = $2 \
         AND status NOT IN ('deleted', 'expired') ORDER BY created_at DESC LIMIT 1"
    )))
    .bind(org_id)
    .bind(name.to_ascii_lowercase())
    .fetch_optional(pool)
    .await
}

/// The organization's active environment: the live one activated last.
pub async fn active_environment(
    pool: &PgPool,
    org_id: Uuid,
) -> Result<Option<EnvironmentRow>, sqlx::Error> {
    sqlx::query_as::<_, EnvironmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM venv_environments WHERE org_id = $1 AND activated_at IS NOT NULL \
         AND status = 'ready' ORDER BY activated_at DESC, id DESC LIMIT 1"
    )))
    .bind(org_id)
    .fetch_optional(pool)
    .await
}

/// A package installed in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PackageRow {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// When it was first seen at this version.
    pub installed_at: DateTime<Utc>,
}

/// The packages of an environment of an organization's, by name.
pub async fn environment_packages(
    pool: &PgPool,
    org_id: Uuid,
    environment_id: Uuid,
) -> Result<Vec<PackageRow>, sqlx::Error> {
    sqlx::query_as::<_, PackageRow>(
        "SELECT name, version, installed_at FROM venv_packages \
         WHERE org_id = $1 AND environment_id = $2 ORDER BY name_key",
    )
    .bind(org_id)
    .bind(environment_id)
    .fetch_all(pool)
    .await
}

/// The packages of these environments of an organization's, by environment.
pub async fn packages_of(
    pool: &PgPool,
    org_id: Uuid,
    environment_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<PackageRow>>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        environment_id: Uuid,
        #[sqlx(flatten)]
        package: PackageRow,
    }
    let rows = sqlx::query_as::<_, Row>(
        "SELECT environment_id, name, version, installed_at FROM venv_packages \
         WHERE org_id = $1 AND environment_id = ANY($2) ORDER BY environment_id, name_key",
    )
    .bind(org_id)
    .bind(environment_ids)
    .fetch_all(pool)
    .await?;
    let mut out: std::collections::HashMap<Uuid, Vec<PackageRow>> = Default::default();
    for r in rows {
        out.entry(r.environment_id).or_default().push(r.package);
    }
    Ok(out)
}

/// Every environment still being made (every organization's): a runner makes sure its
/// operation is queued after a start.
pub async fn creating_environments(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM venv_environments WHERE status = 'creating' ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
}

/// Every live ephemeral environment and when it expires (every organization's): the expiry
/// worker's schedule after a start.
pub async fn live_ephemerals(pool: &PgPool) -> Result<Vec<(Uuid, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, expires_at FROM venv_environments \
         WHERE ephemeral AND expires_at IS NOT NULL AND status NOT IN ('deleted', 'expired') \
         ORDER BY expires_at, id",
    )
    .fetch_all(pool)
    .await
}

/// The live ephemeral environments of an organization (their ids).
pub async fn org_ephemerals(pool: &PgPool, org_id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM venv_environments WHERE org_id = $1 AND ephemeral \
         AND status NOT IN ('deleted', 'expired') ORDER BY created_at, id",
    )
    .bind(org_id)
    .fetch_all(pool)
    .await
}

/// An organization's figures about its ephemeral environments.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct EphemeralStats {
    /// Live ones.
    pub active: i64,
    /// Live ones still being made.
    pub creating: i64,
    /// Ever created.
    pub total_created: i64,
    /// Expired on time.
    pub expired: i64,
    /// Deleted before their time.
    pub deleted: i64,
    /// Their mean time to live, in seconds.
    pub average_ttl: Option<f64>,
    /// When the next one expires.
    pub next_expiry: Option<DateTime<Utc>>,
}

/// The figures of an organization's ephemeral environments.
pub async fn ephemeral_stats(pool: &PgPool, org_id: Uuid) -> Result<EphemeralStats, sqlx::Error> {
    sqlx::query_as::<_, EphemeralStats>(
        "SELECT count(*) FILTER (WHERE status NOT IN ('deleted', 'expired')) AS active, \
         count(*) FILTER (WHERE status = 'creating') AS creating, \
         count(*) AS total_created, \
         count(*) FILTER (WHERE status = 'expired') AS expired, \
         count(*) FILTER (WHERE status = 'deleted') AS deleted, \
         avg(ttl_secs)::double precision AS average_ttl, \
         min(expires_at) FILTER (WHERE status NOT IN ('deleted', 'expired')) AS next_expiry \
         FROM venv_environments WHERE org_id = $1 AND ephemeral",
    )
    .bind(org_id)
    .fetch_one(pool)
    .await
}
