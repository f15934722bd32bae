//! The `builds` read model, and the factory's stats over it.

use async_trait::async_trait;
use atelier_domain::factory::build::{Build, BuildEvent, BuildStatus};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::{Counting, KeptCount, ListPage, Matching, Paging, Sort, Sorts, list_page};

/// The count this projection keeps beside its rows (the list's total).
pub const BUILD_COUNTS: KeptCount = KeptCount {
    table: "build_counts",
    column: "builds",
    keys: &["org_id", "project_id"],
};

/// The `builds` read model.
pub struct BuildsProjection;

/// Its name.
pub const BUILDS: &str = "factory.builds";

#[async_trait]
impl Projection for BuildsProjection {
    fn name(&self) -> &'static str {
        BUILDS
    }

    fn tables(&self) -> &'static [&'static str] {
        &["builds", "build_counts"]
    }

    fn categories(&self) -> Option<&'static [&'static str]> {
        Some(&[Build::CATEGORY])
    }

    fn version(&self) -> i32 {
        1
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM builds").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM build_counts")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream.category() != Build::CATEGORY {
            return Ok(());
        }
        let revision = event.revision as i64;
        let updated =
            match BuildEvent::decode_stored(&event.event_type, &event.metadata, &event.data)? {
                BuildEvent::BuildQueued {
                    build_id,
                    org_id,
                    project_id,
                    project_revision,
                    repo_url,
                    build_command,
                    triggered_by,
                    restart_of,
                    queued_at,
                } => {
                    let inserted = sqlx::query(
                        "INSERT INTO builds (id, org_id, project_id, project_revision, repo_url, \
                     build_command, status, triggered_by, restart_of, queued_at, revision) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9, $10)",
                    )
                    .bind(build_id)
                    .bind(org_id)
                    .bind(project_id)
                    .bind(project_revision as i64)
                    .bind(repo_url.as_str())
                    .bind(build_command.as_ref().map(|c| c.as_str()))
                    .bind(triggered_by)
                    .bind(restart_of)
                    .bind(queued_at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?;
                    // Builds are never removed: each queued one counts for good.
                    BUILD_COUNTS
                        .add_one(&mut *tx, &[org_id, project_id])
                        .await?;
                    inserted
                }
                BuildEvent::BuildStarted {
                    build_id,
                    runner,
                    started_at,
                } => {
                    sqlx::query(
                        "UPDATE builds SET status = 'running', runner = $2, started_at = $3, \
                     revision = $4 WHERE id = $1",
                    )
                    .bind(build_id)
                    .bind(runner)
                    .bind(started_at)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?
                }
                BuildEvent::BuildSucceeded {
                    build_id,
                    finished_at,
                    duration_ms,
                } => {
                    sqlx::query(
                        "UPDATE builds SET status = 'succeeded', exit_code = 0, finished_at = $2, \
                     duration_ms = $3, revision = $4 WHERE id = $1",
                    )
                    .bind(build_id)
                    .bind(finished_at)
                    .bind(duration_ms)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?
                }
                BuildEvent::BuildFailed {
                    build_id,
                    exit_code,
                    reason,
                    message,
                    finished_at,
                    duration_ms,
                } => {
                    sqlx::query(
                        "UPDATE builds SET status = 'failed', exit_code = $2, failure = $3, \
                     message = $4, finished_at = $5, duration_ms = $6, revision = $7 \
                     WHERE id = $1",
                    )
                    .bind(build_id)
                    .bind(exit_code)
                    .bind(reason.as_str())
                    .bind(message)
                    .bind(finished_at)
                    .bind(duration_ms)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?
                }
                BuildEvent::BuildCancelled {
                    build_id,
                    finished_at,
                    duration_ms,
                    ..
                } => {
                    sqlx::query(
                        "UPDATE builds SET status = 'cancelled', finished_at = $2, \
                     duration_ms = $3, revision = $4 WHERE id = $1",
                    )
                    .bind(build_id)
                    .bind(finished_at)
                    .bind(duration_ms)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?
                }
            };
        if updated.rows_affected() != 1 {
            return Err(ProjectionError::Invalid(format!(
                "build of stream {} is not in the read model",
                event.stream
            )));
        }
        Ok(())
    }
}

/// A build as lists and detail pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BuildRow {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// The project.
    pub project_id: Uuid,
    /// The project's revision it ran against.
    pub project_revision: i64,
    /// The repository.
    pub repo_url: String,
    /// The command.
    pub build_command: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Who triggered it.
    pub triggered_by: String,
    /// The build it restarts.
    pub restart_of: Option<Uuid>,
    /// The runner that ran it.
    pub runner: Option<String>,
    /// Its command's exit status.
    pub exit_code: Option<i32>,
    /// Why it failed: `exit_status`, `timed_out`, `error`, `interrupted`.
    pub failure: Option<String>,
    /// A short explanation of a failure.
    pub message: Option<String>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long it ran, in milliseconds.
    pub duration_ms: Option<i64>,
    /// Its revision (the `ETag`).
    pub revision: i64,
}

const BUILD_COLUMNS: &str = "id, org_id, project_id, project_revision, repo_url, build_command, \
    status, triggered_by, restart_of, runner, exit_code, failure, message, queued_at, started_at, \
    finished_at, duration_ms, revision";

/// A project's builds are listed newest first; `builds_project_queued` on `(org_id,
/// project_id, queued_at DESC, id DESC)` serves it, and `builds_project_status_queued` with the
/// status before `queued_at` a list of one status.
pub const BUILD_SORTS: Sorts = Sorts {
    all: &[Sort::by_time("-queued_at", "queued_at")],
    default: Sort::by_time("-queued_at", "queued_at"),
};

/// A page request of a project's builds, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildQuery {
    /// Which page.
    pub paging: Paging,
    /// Only builds in this status.
    pub status: Option<BuildStatus>,
}

/// One page of a project's builds, newest first, optionally of one status, by number or after
/// a keyset. Without a status the total is the project's, kept by the projection
/// (`build_counts`); with one, counted up to [`crate::sql::COUNT_CAP`].
pub async fn list_builds(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    query: &BuildQuery,
) -> Result<ListPage<BuildRow>, sqlx::Error> {
    let mut matching = Matching::new("builds");
    let org = matching.and_eq("org_id", org_id);
    let project = matching.and_eq("project_id", project_id);
    let counting = match query.status {
        Some(status) => {
            matching.and_eq("status", status.as_str());
            Counting::Bounded
        }
        None => BUILD_COUNTS.counting(&[&org, &project]),
    };
    list_page(pool, BUILD_COLUMNS, matching, &query.paging, &counting).await
}

/// One build of an organization.
pub async fn get_build(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<BuildRow>, sqlx::Error> {
    sqlx::query_as::<_, BuildRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {BUILD_COLUMNS} FROM builds WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A build the runner must look at after a restart.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UnfinishedBuild {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// `queued` or `running`.
    pub status: String,
    /// The runner running it.
    pub runner: Option<String>,
}

/// Every queued or running build, of every organization, oldest first: only the build runner
/// (a process of the platform itself, not acting for a tenant) asks this.
pub async fn unfinished_builds(pool: &PgPool) -> Result<Vec<UnfinishedBuild>, sqlx::Error> {
    sqlx::query_as::<_, UnfinishedBuild>(
        "SELECT id, org_id, status, runner FROM builds \
         WHERE status IN ('queued', 'running') ORDER BY queued_at, id",
    )
    .fetch_all(pool)
    .await
}

/// The factory's figures for one organization.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FactoryStats {
    /// How many projects it has.
    pub projects: u64,
    /// How many builds, by status (every status is present).
    pub builds: std::collections::BTreeMap<&'static str, u64>,
    /// How many builds in all.
    pub builds_total: u64,
    /// Succeeded ÷ (succeeded + failed); `None` before any build finished that way.
    pub success_rate: Option<f64>,
    /// The median duration of succeeded and failed builds, in seconds.
    pub median_duration_s: Option<f64>,
}

/// The factory's figures for one organization.
pub async fn factory_stats(pool: &PgPool, org_id: Uuid) -> Result<FactoryStats, sqlx::Error> {
    let projects: i64 = sqlx::query_scalar("SELECT count(*) FROM projects WHERE org_id = $1")
        .bind(org_id)
        .fetch_one(pool)
        .await?;
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM builds WHERE org_id = $1 GROUP BY status")
            .bind(org_id)
            .fetch_all(pool)
            .await?;
    let median: Option<f64> = sqlx::query_scalar(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) / 1000.0 \
         FROM builds WHERE org_id = $1 AND status IN ('succeeded', 'failed')",
    )
    .bind(org_id)
    .fetch_one(pool)
    .await?;
    let mut builds: std::collections::BTreeMap<&'static str, u64> =
        BuildStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for (status, n) in counts {
        if let Some(s) = BuildStatus::parse(&status) {
            builds.insert(s.as_str(), n as u64);
        }
    }
    let (ok, failed) = (builds["succeeded"], builds["failed"]);
    Ok(FactoryStats {
        projects: projects as u64,
        builds_total: builds.values().sum(),
        builds,
        success_rate: (ok + failed > 0).then(|| ok as f64 / (ok + failed) as f64),
        median_duration_s: median,
    })
}
