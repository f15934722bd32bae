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
    Counting, KeptCount, ListPage, Matching, Paging, Sort, Sorts, like_pattern, list_page,
};

/// The count this projection keeps beside its rows (the list's total).
pub const PROJECT_COUNTS: KeptCount = KeptCount {
    table: "project_counts",
    column: "projects",
    keys: &["org_id"],
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

    fn categories(&self) -> Option<&'static [&'static str]> {
        Some(&[Project::CATEGORY, Build::CATEGORY])
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
                PROJECT_COUNTS.add_one(&mut *tx, &[org_id]).await?;
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
                PROJECT_COUNTS
                    .delete_one(&mut *tx, "projects", project_id)
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

/// The orders a project list may be sorted in: by name, by creation (the default) or by last
/// change, each either way; `projects_org_name_id`, `projects_org_created` and
/// `projects_org_updated` on `(org_id, <column>, id)` serve them, in both directions.
pub const PROJECT_SORTS: Sorts = Sorts {
    all: &[
        Sort::by_text("name", "name_key"),
        Sort::by_text("-name", "name_key"),
        Sort::by_time("created_at", "created_at"),
        Sort::by_time("-created_at", "created_at"),
        Sort::by_time("updated_at", "updated_at"),
        Sort::by_time("-updated_at", "updated_at"),
    ],
    default: Sort::by_time("created_at", "created_at"),
};

/// A page request, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectQuery {
    /// Which page, in which order.
    pub paging: Paging,
    /// Part of the name, case-insensitive.
    pub search: Option<String>,
}

const COLUMNS: &str = "id, org_id, name, repo_url, build_command, revision, created_at, \
    updated_at, created_by, last_build_status, last_build_id, last_build_at";

/// One page of an organization's projects: by page number (OFFSET) or by keyset, seeking an
/// index on `(org_id, <sort key>, id)`, in one statement. Without a search the total is the
/// organization's, kept by the projection (`project_counts`): exact, and one indexed row
/// whatever the size; a search counts its matches, at most [`crate::sql::Total::limit`].
pub async fn list_projects(
    pool: &PgPool,
    org_id: Uuid,
    query: &ProjectQuery,
) -> Result<ListPage<ProjectRow>, sqlx::Error> {
    let mut matching = Matching::new("projects");
    let org = matching.and_eq("org_id", org_id);
    let counting = match query.search.as_deref() {
        Some(search) => {
            let pattern = matching.param(like_pattern(search));
            matching.and(format!("name ILIKE {pattern}"));
            Counting::Bounded
        }
        None => PROJECT_COUNTS.counting(&[&org]),
    };
    list_page(pool, COLUMNS, matching, &query.paging, &counting).await
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
        let name_desc = PROJECT_SORTS.parse("-name").unwrap();
        assert_eq!((name_desc.column, name_desc.descending), ("name_key", true));
        assert_eq!(PROJECT_SORTS.parse("name; DROP TABLE projects"), None);
        assert_eq!(PROJECT_SORTS.parse("repo_url"), None);
        assert_eq!(PROJECT_SORTS.default.name, "created_at");
    }
}
