//! The `projects` read model: each project of an organization, with its last build.

use async_trait::async_trait;
use atelier_domain::factory::build::{Build, BuildEvent, BuildStatus};
use atelier_domain::factory::project::{Project, ProjectEvent};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::{
    Keyset, SortValue, Total, bind_keyset, bounded_count, keyset_after, like_pattern,
};

/// The `projects` read model.
pub struct ProjectsProjection;

/// Its name.
pub const PROJECTS: &str = "factory.projects";

fn actor(event: &RecordedEvent) -> String {
    event
        .metadata
        .get("actor")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_owned()
}

#[async_trait]
impl Projection for ProjectsProjection {
    fn name(&self) -> &'static str {
        PROJECTS
    }

    fn tables(&self) -> &'static [&'static str] {
        &["projects", "project_counts"]
    }

    fn version(&self) -> i32 {
        // 2: projects show their last build.
        2
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM projects")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM project_counts")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let category = event.stream.category();
        if category == Build::CATEGORY {
            return apply_last_build(tx, event).await;
        }
        if category != Project::CATEGORY {
            return Ok(());
        }
        let revision = event.revision as i64;
        match ProjectEvent::decode_stored(&event.event_type, &event.metadata, &event.data)? {
            ProjectEvent::ProjectCreated {
                project_id,
                org_id,
                name,
                repo_url,
                build_command,
                created_at,
            } => {
                sqlx::query(
                    "INSERT INTO projects (id, org_id, name, name_key, repo_url, build_command, \
                     revision, created_at, updated_at, created_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
                )
                .bind(project_id)
                .bind(org_id)
                .bind(name.as_str())
                .bind(name.sort_key())
                .bind(repo_url.as_str())
                .bind(build_command.as_ref().map(|c| c.as_str()))
                .bind(revision)
                .bind(created_at)
                .bind(actor(event))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO project_counts (org_id, projects) VALUES ($1, 1) \
                     ON CONFLICT (org_id) DO UPDATE SET projects = project_counts.projects + 1",
                )
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
            }
            ProjectEvent::ProjectUpdated {
                project_id,
                name,
                repo_url,
                build_command,
                updated_at,
            } => {
                // Only what changed: an absent field keeps its value ($8: the build command
                // changed, to $5, which may be none).
                let updated = sqlx::query(
                    "UPDATE projects SET name = COALESCE($2, name), \
                     name_key = COALESCE($3, name_key), repo_url = COALESCE($4, repo_url), \
                     build_command = CASE WHEN $8 THEN $5 ELSE build_command END, \
                     revision = $6, updated_at = $7 WHERE id = $1",
                )
                .bind(project_id)
                .bind(name.as_ref().map(|n| n.as_str()))
                .bind(name.as_ref().map(|n| n.sort_key()))
                .bind(repo_url.as_ref().map(|r| r.as_str()))
                .bind(
                    build_command
                        .as_ref()
                        .and_then(|c| c.as_ref().map(|c| c.as_str())),
                )
                .bind(revision)
                .bind(updated_at)
                .bind(build_command.is_some())
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() != 1 {
                    return Err(ProjectionError::Invalid(format!(
                        "project {project_id} is not in the read model"
                    )));
                }
            }
            ProjectEvent::ProjectDeleted { project_id, .. } => {
                sqlx::query(
                    "WITH gone AS (DELETE FROM projects WHERE id = $1 RETURNING org_id) \
                     UPDATE project_counts c SET projects = c.projects - 1 \
                     FROM gone WHERE c.org_id = gone.org_id",
                )
                .bind(project_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
}

/// Keeps `projects.last_build_*` on the project's most recently queued build.
async fn apply_last_build(
    tx: &mut PgConnection,
    event: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let (build_id, status) =
        match BuildEvent::decode_stored(&event.event_type, &event.metadata, &event.data)? {
            BuildEvent::BuildQueued {
                build_id,
                project_id,
                queued_at,
                ..
            } => {
                // A project deleted meanwhile has no row: nothing to show.
                sqlx::query(
                    "UPDATE projects SET last_build_id = $2, last_build_status = 'queued', \
                 last_build_at = $3 WHERE id = $1",
                )
                .bind(project_id)
                .bind(build_id)
                .bind(queued_at)
                .execute(&mut *tx)
                .await?;
                return Ok(());
            }
            BuildEvent::BuildStarted { build_id, .. } => (build_id, BuildStatus::Running),
            BuildEvent::BuildSucceeded { build_id, .. } => (build_id, BuildStatus::Succeeded),
            BuildEvent::BuildFailed { build_id, .. } => (build_id, BuildStatus::Failed),
            BuildEvent::BuildCancelled { build_id, .. } => (build_id, BuildStatus::Cancelled),
        };
    sqlx::query("UPDATE projects SET last_build_status = $2 WHERE last_build_id = $1")
        .bind(build_id)
        .bind(status.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A project as lists and detail pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ProjectRow {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its repository.
    pub repo_url: String,
    /// Its build command.
    pub build_command: Option<String>,
    /// Its revision (the `ETag`).
    pub revision: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: String,
    /// Its last build's status.
    pub last_build_status: Option<String>,
    /// Its last build.
    pub last_build_id: Option<Uuid>,
    /// When its last build was queued.
    pub last_build_at: Option<DateTime<Utc>>,
}

/// The orders a project list may be sorted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProjectSort {
    /// By name, A to Z.
    Name,
    /// By name, Z to A.
    NameDesc,
    /// Oldest first (the default).
    #[default]
    CreatedAt,
    /// Newest first.
    CreatedAtDesc,
    /// Least recently changed first.
    UpdatedAt,
    /// Most recently changed first.
    UpdatedAtDesc,
}

impl ProjectSort {
    /// The values the API accepts.
    pub const ACCEPTED: &'static str =
        "name, -name, created_at, -created_at, updated_at, -updated_at";

    /// Parses `name`, `-created_at`…
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "name" => Self::Name,
            "-name" => Self::NameDesc,
            "created_at" => Self::CreatedAt,
            "-created_at" => Self::CreatedAtDesc,
            "updated_at" => Self::UpdatedAt,
            "-updated_at" => Self::UpdatedAtDesc,
            _ => return None,
        })
    }

    fn order_by(self) -> &'static str {
        match self {
            Self::Name => "name_key ASC, id ASC",
            Self::NameDesc => "name_key DESC, id DESC",
            Self::CreatedAt => "created_at ASC, id ASC",
            Self::CreatedAtDesc => "created_at DESC, id DESC",
            Self::UpdatedAt => "updated_at ASC, id ASC",
            Self::UpdatedAtDesc => "updated_at DESC, id DESC",
        }
    }

    /// Its text form, as `parse` reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::NameDesc => "-name",
            Self::CreatedAt => "created_at",
            Self::CreatedAtDesc => "-created_at",
            Self::UpdatedAt => "updated_at",
            Self::UpdatedAtDesc => "-updated_at",
        }
    }

    /// Whether its key is a time (else the name's sort key, text).
    pub fn keyed_by_time(self) -> bool {
        !matches!(self, Self::Name | Self::NameDesc)
    }

    fn descending(self) -> bool {
        matches!(
            self,
            Self::NameDesc | Self::CreatedAtDesc | Self::UpdatedAtDesc
        )
    }

    fn column(self) -> &'static str {
        match self {
            Self::Name | Self::NameDesc => "name_key",
            Self::CreatedAt | Self::CreatedAtDesc => "created_at",
            Self::UpdatedAt | Self::UpdatedAtDesc => "updated_at",
        }
    }

    fn key(self, row: &Listed) -> Keyset {
        let key = match self {
            Self::Name | Self::NameDesc => SortValue::Text(row.name_key.clone()),
            Self::CreatedAt | Self::CreatedAtDesc => SortValue::Time(row.row.created_at),
            Self::UpdatedAt | Self::UpdatedAtDesc => SortValue::Time(row.row.updated_at),
        };
        Keyset {
            key,
            id: row.row.id,
        }
    }
}

/// A page request, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectQuery {
    /// Page number, from 1 (ignored with `after`).
    pub page: u32,
    /// Rows per page, 1 to 100.
    pub per_page: u32,
    /// Part of the name, case-insensitive.
    pub search: Option<String>,
    /// The order.
    pub sort: ProjectSort,
    /// A keyset page: the rows after this one in `sort`, with no OFFSET.
    pub after: Option<Keyset>,
}

/// One page of an organization's projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectPage {
    /// Its rows.
    pub rows: Vec<ProjectRow>,
    /// How many match in all, counted up to [`crate::sql::COUNT_CAP`] (or through this page).
    pub total: Total,
    /// Whether rows follow.
    pub has_next: bool,
    /// Where the next page starts (when rows follow).
    pub next: Option<Keyset>,
}

#[derive(sqlx::FromRow)]
struct Listed {
    #[sqlx(flatten)]
    row: ProjectRow,
    name_key: String,
    /// The page's bounded count (the same on every row).
    bounded_total: i64,
}

/// How many projects the organization `$1` has, as the projection keeps it.
const KEPT_COUNT: &str =
    "SELECT COALESCE((SELECT projects FROM project_counts WHERE org_id = $1), 0)";

/// The rows a list reads: an organization's, and those whose name matches `$2` if given. Two
/// statements rather than `($2 IS NULL OR name ILIKE $2)`: PostgreSQL switches a prepared
/// statement to a generic plan after five runs, and the generic plan of that disjunction
/// estimates one matching row, scans the organization and sorts it, where the statement
/// without a search walks the sort's index.
fn matching(search: bool) -> &'static str {
    if search {
        "FROM projects WHERE org_id = $1 AND name ILIKE $2"
    } else {
        "FROM projects WHERE org_id = $1 AND $2::text IS NULL"
    }
}

/// One page of an organization's projects: by page number (OFFSET) or, with `after`, by
/// keyset, seeking an index on `(org_id, <sort key>, id)`. Neither counts more than
/// [`Total::limit`] rows, in the same statement as the page (a page past the end counts in a
/// second one).
pub async fn list_projects(
    pool: &PgPool,
    org_id: Uuid,
    query: &ProjectQuery,
) -> Result<ProjectPage, sqlx::Error> {
    let pattern = query.search.as_deref().map(like_pattern);
    let sort = query.sort;
    let offset = query
        .after
        .is_none()
        .then(|| u64::from(query.page.saturating_sub(1)) * u64::from(query.per_page));
    // The ORDER BY and the key column come from a closed list (ProjectSort), never from input.
    // One row more than the page tells whether another follows. The bounded count rides along
    // as an uncorrelated subquery (run once, an InitPlan): one round trip per page.
    let (condition, paging, count_param) = match &query.after {
        Some(_) => (
            format!(
                " AND {}",
                keyset_after(
                    sort.column(),
                    if sort.keyed_by_time() {
                        "timestamptz"
                    } else {
                        "text"
                    },
                    sort.descending(),
                    4
                )
            ),
            "LIMIT $3",
            6,
        ),
        None => (String::new(), "LIMIT $3 OFFSET $4", 5),
    };
    let searched = pattern.is_some();
    let rows_matching = matching(searched);
    // Without a search the total is the organization's, kept by the projection
    // (`project_counts`): exact, and one indexed row whatever the size. A search counts its
    // matches, at most `limit` of them.
    let count_sql = if searched {
        bounded_count(&format!("SELECT 1 {rows_matching}"), count_param)
    } else {
        KEPT_COUNT.to_owned()
    };
    let sql = format!(
        "SELECT id, org_id, name, name_key, repo_url, build_command, revision, created_at, \
         updated_at, created_by, last_build_status, last_build_id, last_build_at, \
         ({count_sql}) AS bounded_total \
         {rows_matching}{condition} ORDER BY {} {paging}",
        sort.order_by()
    );
    let limit = Total::limit(offset, query.per_page);
    let fetch = sqlx::query_as::<_, Listed>(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .bind(pattern.as_deref())
        .bind(i64::from(query.per_page) + 1);
    let fetch = match (&query.after, offset) {
        (Some(after), _) => bind_keyset(fetch, after),
        (None, offset) => fetch.bind(offset.unwrap_or(0) as i64),
    };
    let fetch = if searched {
        fetch.bind(limit as i64)
    } else {
        fetch
    };
    let mut rows = fetch.fetch_all(pool).await?;
    let has_next = rows.len() > query.per_page as usize;
    rows.truncate(query.per_page as usize);
    let counted = |count: i64| {
        if searched {
            Total::counted(count, limit)
        } else {
            Total::exact(count)
        }
    };
    let total = match (Total::from_page(offset, rows.len(), has_next), rows.first()) {
        (Some(total), _) => total,
        (None, Some(first)) => counted(first.bounded_total),
        // A page past the end has no row to carry the count.
        (None, None) if searched => {
            let sql = bounded_count(&format!("SELECT 1 {rows_matching}"), 3);
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(org_id)
                .bind(pattern.as_deref())
                .bind(limit as i64)
                .fetch_one(pool)
                .await?;
            counted(count)
        }
        (None, None) => {
            let count: i64 = sqlx::query_scalar(KEPT_COUNT)
                .bind(org_id)
                .fetch_one(pool)
                .await?;
            counted(count)
        }
    };
    let next = if has_next {
        rows.last().map(|r| sort.key(r))
    } else {
        None
    };
    Ok(ProjectPage {
        rows: rows.into_iter().map(|r| r.row).collect(),
        total,
        has_next,
        next,
    })
}

/// One project of an organization.
pub async fn get_project(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<ProjectRow>, sqlx::Error> {
    sqlx::query_as::<_, ProjectRow>(
        "SELECT id, org_id, name, repo_url, build_command, revision, created_at, updated_at, \
         created_by, last_build_status, last_build_id, last_build_at FROM projects WHERE org_id = $1 AND id = $2",
    )
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whitelisted_sorts_are_accepted() {
        assert_eq!(ProjectSort::parse("-name"), Some(ProjectSort::NameDesc));
        assert_eq!(ProjectSort::parse("name; DROP TABLE projects"), None);
        assert_eq!(ProjectSort::parse("repo_url"), None);
    }
}
