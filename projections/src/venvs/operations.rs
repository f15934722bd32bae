//! The `venv_operations` read model, and the queries over it: lists, one operation, and the
//! unfinished ones a runner looks at after a start.

use async_trait::async_trait;
use atelier_domain::venvs::operation::{Operation, OperationEvent, OperationStatus};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::{Counting, KeptCount, ListPage, Matching, Paging, Sort, Sorts, list_page};

/// The count this projection keeps beside its rows (the list's total).
pub const OPERATION_COUNTS: KeptCount = KeptCount {
    table: "operation_counts",
    column: "operations",
    keys: &["org_id"],
};

/// The `venv_operations` read model.
pub struct OperationsProjection;

/// Its name.
pub const OPERATIONS: &str = "venvs.operations";

#[async_trait]
impl Projection for OperationsProjection {
    fn name(&self) -> &'static str {
        OPERATIONS
    }

    fn tables(&self) -> &'static [&'static str] {
        &["venv_operations", "operation_counts"]
    }

    fn categories(&self) -> Option<&'static [&'static str]> {
        Some(&[Operation::CATEGORY])
    }

    fn version(&self) -> i32 {
        1
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM venv_operations")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM operation_counts")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream.category() != Operation::CATEGORY {
            return Ok(());
        }
        let revision = event.revision as i64;
        use OperationEvent as E;
        let (id, updated) = match OperationEvent::decode_stored(
            &event.event_type,
            &event.metadata,
            &event.data,
        )? {
            E::OperationQueued {
                operation_id,
                org_id,
                environment_id,
                request,
                by,
                at,
            } => {
                let kind = request.kind();
                let request = serde_json::to_value(&request)
                    .map_err(|e| ProjectionError::Invalid(e.to_string()))?;
                let inserted = sqlx::query(
                    "INSERT INTO venv_operations (id, org_id, environment_id, kind, request, \
                     status, progress, message, created_by, queued_at, revision) \
                     VALUES ($1, $2, $3, $4, $5, 'queued', 0, '', $6, $7, $8)",
                )
                .bind(operation_id)
                .bind(org_id)
                .bind(environment_id)
                .bind(kind)
                .bind(request)
                .bind(&by)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?;
                // Operations are never removed: each queued one counts for good.
                OPERATION_COUNTS.add_one(&mut *tx, &[org_id]).await?;
                (operation_id, inserted)
            }
            E::OperationStarted {
                operation_id,
                runner,
                at,
                ..
            } => (
                operation_id,
                sqlx::query(
                    "UPDATE venv_operations SET status = 'running', runner = $2, started_at = $3, \
                     revision = $4 WHERE id = $1",
                )
                .bind(operation_id)
                .bind(&runner)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::OperationProgress {
                operation_id,
                progress,
                message,
                ..
            } => (
                operation_id,
                sqlx::query(
                    "UPDATE venv_operations SET progress = $2, message = $3, revision = $4 \
                     WHERE id = $1",
                )
                .bind(operation_id)
                .bind(i16::from(progress))
                .bind(&message)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::OperationCompleted {
                operation_id,
                result,
                duration,
                at,
                ..
            } => (
                operation_id,
                sqlx::query(
                    "UPDATE venv_operations SET status = 'completed', progress = 100, \
                     result = $2, duration = $3, finished_at = $4, revision = $5 WHERE id = $1",
                )
                .bind(operation_id)
                .bind(result)
                .bind(duration)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::OperationFailed {
                operation_id,
                reason,
                error,
                duration,
                at,
                ..
            } => (
                operation_id,
                sqlx::query(
                    "UPDATE venv_operations SET status = 'failed', failure = $2, error = $3, \
                     duration = $4, finished_at = $5, revision = $6 WHERE id = $1",
                )
                .bind(operation_id)
                .bind(reason.as_str())
                .bind(&error)
                .bind(duration)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::OperationCancelled {
                operation_id, at, ..
            } => (
                operation_id,
                sqlx::query(
                    "UPDATE venv_operations SET status = 'cancelled', finished_at = $2, \
                     duration = CASE WHEN started_at IS NULL THEN NULL \
                     ELSE extract(epoch FROM $2 - started_at)::double precision END, \
                     revision = $3 WHERE id = $1",
                )
                .bind(operation_id)
                .bind(at)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
        };
        if updated.rows_affected() != 1 {
            return Err(ProjectionError::Invalid(format!(
                "operation {id} is not in the read model"
            )));
        }
        Ok(())
    }
}

/// An operation as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct OperationRow {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its environment.
    pub environment_id: Option<Uuid>,
    /// What it does (`install`, `uninstall`…).
    pub kind: String,
    /// What it was asked.
    pub request: serde_json::Value,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// How far, 0 to 100.
    pub progress: i16,
    /// What it is doing now.
    pub message: String,
    /// What it found, once completed.
    pub result: Option<serde_json::Value>,
    /// What went wrong, if it failed.
    pub error: Option<String>,
    /// Why it failed (`backend`, `timed_out`, `interrupted`, `error`).
    pub failure: Option<String>,
    /// How long it ran, in seconds.
    pub duration: Option<f64>,
    /// The runner that did it.
    pub runner: Option<String>,
    /// Who asked.
    pub created_by: String,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its revision (the `ETag`).
    pub revision: i64,
}

const COLUMNS: &str = "id, org_id, environment_id, kind, request, status, progress, message, \
    result, error, failure, duration, runner, created_by, queued_at, started_at, finished_at, \
    revision";

/// Operations are listed newest first; `venv_operations_org_queued` on `(org_id, queued_at
/// DESC, id DESC)` serves the list without filters, `venv_operations_org_status` with the status
/// before `queued_at` a list of one status, `venv_operations_environment` one environment's and
/// `venv_operations_unfinished` those in progress.
pub const OPERATION_SORTS: Sorts = Sorts {
    all: &[Sort::by_time("-queued_at", "queued_at")],
    default: Sort::by_time("-queued_at", "queued_at"),
};

/// What a list of operations asks for.
#[derive(Debug, Clone)]
pub struct OperationQuery {
    /// Which page.
    pub paging: Paging,
    /// Only this status.
    pub status: Option<OperationStatus>,
    /// Only unfinished ones (queued or running: GestVenv's "operations in progress").
    pub active: Option<bool>,
    /// Only this environment's.
    pub environment_id: Option<Uuid>,
    /// Only this kind.
    pub kind: Option<String>,
}

impl OperationQuery {
    fn filtered(&self) -> bool {
        self.status.is_some()
            || self.active.is_some()
            || self.environment_id.is_some()
            || self.kind.is_some()
    }
}

/// A page of an organization's operations, newest first, by number or after a keyset. Without
/// a filter the total is the organization's, kept by the projection (`operation_counts`);
/// with one, counted up to [`crate::sql::COUNT_CAP`].
pub async fn list_operations(
    pool: &PgPool,
    org_id: Uuid,
    query: &OperationQuery,
) -> Result<ListPage<OperationRow>, sqlx::Error> {
    let mut matching = Matching::new("venv_operations");
    let org = matching.and_eq("org_id", org_id);
    if let Some(status) = query.status {
        matching.and_eq("status", status.as_str());
    }
    match query.active {
        Some(true) => {
            matching.and("status IN ('queued', 'running')");
        }
        Some(false) => {
            matching.and("status NOT IN ('queued', 'running')");
        }
        None => {}
    }
    if let Some(environment_id) = query.environment_id {
        matching.and_eq("environment_id", environment_id);
    }
    if let Some(kind) = query.kind.as_deref() {
        matching.and_eq("kind", kind);
    }
    let counting = if query.filtered() {
        Counting::Bounded
    } else {
        OPERATION_COUNTS.counting(&[&org])
    };
    list_page(pool, COLUMNS, matching, &query.paging, &counting).await
}

/// One operation of an organization.
pub async fn get_operation(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as::<_, OperationRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM venv_operations WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Every unfinished operation (queued or running), oldest first, with its environment, status
/// and runner:
/// a runner's backlog after a start (every organization's).
#[allow(clippy::type_complexity)]
pub async fn unfinished_operations(
    pool: &PgPool,
) -> Result<Vec<(Uuid, Option<Uuid>, String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, environment_id, status, runner FROM venv_operations \
         WHERE status IN ('queued', 'running') ORDER BY queued_at, id",
    )
    .fetch_all(pool)
    .await
}
