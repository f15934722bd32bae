//! The `organizations` and `memberships` read models: organizations with their member count,
//! and who belongs where with which role.

use atelier_domain::identity::organization::OrgEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::expect_one;
use crate::runtime::ProjectionError;
use crate::sql::{Counting, ListPage, Matching, Paging, Sort, Sorts, like_pattern, list_page};

async fn touch_org(
    tx: &mut PgConnection,
    org_id: Uuid,
    revision: i64,
    at: DateTime<Utc>,
    member_delta: i32,
) -> Result<(), ProjectionError> {
    let done = sqlx::query(
        "UPDATE organizations SET revision = $2, updated_at = greatest(updated_at, $3), \
         member_count = member_count + $4 WHERE id = $1",
    )
    .bind(org_id)
    .bind(revision)
    .bind(at)
    .bind(member_delta)
    .execute(&mut *tx)
    .await?;
    expect_one(done, &format!("organization {org_id}"))
}

pub(super) async fn apply_org(
    tx: &mut PgConnection,
    event: OrgEvent,
    revision: i64,
) -> Result<(), ProjectionError> {
    match event {
        OrgEvent::OrganizationCreated {
            org_id,
            profile,
            created_at,
        } => {
            sqlx::query(
                "INSERT INTO organizations (id, name, name_key, description, settings, quotas, \
                 is_active, revision, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, true, $7, $8, $8)",
            )
            .bind(org_id)
            .bind(profile.name.as_str())
            .bind(profile.name.sort_key())
            .bind(profile.description)
            .bind(sqlx::types::Json(profile.settings.as_map()))
            .bind(sqlx::types::Json(profile.quotas.as_map()))
            .bind(revision)
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
        }
        OrgEvent::OrganizationUpdated {
            org_id,
            profile,
            updated_at,
        } => {
            let done = sqlx::query(
                "UPDATE organizations SET name = $2, name_key = $3, description = $4, \
                 settings = $5, quotas = $6, revision = $7, updated_at = $8 WHERE id = $1",
            )
            .bind(org_id)
            .bind(profile.name.as_str())
            .bind(profile.name.sort_key())
            .bind(profile.description)
            .bind(sqlx::types::Json(profile.settings.as_map()))
            .bind(sqlx::types::Json(profile.quotas.as_map()))
            .bind(revision)
            .bind(updated_at)
            .execute(&mut *tx)
            .await?;
            expect_one(done, &format!("organization {org_id}"))?;
        }
        OrgEvent::OrganizationDeactivated { org_id, at }
        | OrgEvent::OrganizationReactivated { org_id, at } => {
            let active = matches!(event, OrgEvent::OrganizationReactivated { .. });
            let done = sqlx::query(
                "UPDATE organizations SET is_active = $2, revision = $3, updated_at = $4 \
                 WHERE id = $1",
            )
            .bind(org_id)
            .bind(active)
            .bind(revision)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            expect_one(done, &format!("organization {org_id}"))?;
        }
        OrgEvent::OrganizationDeleted { org_id, .. } => {
            sqlx::query("DELETE FROM memberships WHERE org_id = $1")
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM organizations WHERE id = $1")
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
        }
        OrgEvent::MemberAdded {
            org_id,
            user_id,
            role,
            at,
        } => {
            sqlx::query(
                "INSERT INTO memberships (org_id, user_id, role, since) VALUES ($1, $2, $3, $4)",
            )
            .bind(org_id)
            .bind(user_id)
            .bind(role.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await?;
            touch_org(tx, org_id, revision, at, 1).await?;
        }
        OrgEvent::MemberRoleChanged {
            org_id,
            user_id,
            role,
            at,
        } => {
            let done =
                sqlx::query("UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id)
                    .bind(user_id)
                    .bind(role.as_str())
                    .execute(&mut *tx)
                    .await?;
            expect_one(done, &format!("membership of {user_id} in {org_id}"))?;
            touch_org(tx, org_id, revision, at, 0).await?;
        }
        OrgEvent::MemberRemoved {
            org_id,
            user_id,
            at,
        } => {
            let done = sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
                .bind(org_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            expect_one(done, &format!("membership of {user_id} in {org_id}"))?;
            touch_org(tx, org_id, revision, at, -1).await?;
        }
    }
    Ok(())
}

/// An organization, as lists and details show it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct OrganizationRow {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// What it is.
    pub description: Option<String>,
    /// Its settings.
    pub settings: serde_json::Value,
    /// Its quotas.
    pub quotas: serde_json::Value,
    /// Whether it may be used.
    pub is_active: bool,
    /// How many members it has.
    pub member_count: i32,
    /// Its revision (the ETag).
    pub revision: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A member of an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MemberRow {
    /// The user.
    pub user_id: Uuid,
    /// Their username.
    pub username: String,
    /// Their role.
    pub role: String,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// The organization with this id, if `viewer` may see it: a superadmin sees every one, anyone
/// else those they are a member of (another's is "not found").
pub async fn get_organization(
    pool: &PgPool,
    viewer: Uuid,
    viewer_is_superadmin: bool,
    org_id: Uuid,
) -> Result<Option<OrganizationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, o.name, o.description, o.settings, o.quotas, o.is_active, o.member_count, \
         o.revision, o.created_at, o.updated_at FROM organizations o \
         WHERE o.id = $1 AND ($3 OR EXISTS \
           (SELECT 1 FROM memberships m WHERE m.org_id = o.id AND m.user_id = $2))",
    )
    .bind(org_id)
    .bind(viewer)
    .bind(viewer_is_superadmin)
    .fetch_optional(pool)
    .await
}

/// The members of an organization, by username.
pub async fn list_members(pool: &PgPool, org_id: Uuid) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.user_id, coalesce(u.username, '') AS username, m.role, m.since \
         FROM memberships m LEFT JOIN users u ON u.id = m.user_id \
         WHERE m.org_id = $1 ORDER BY lower(u.username), m.user_id",
    )
    .bind(org_id)
    .fetch_all(pool)
    .await
}

/// Organizations are listed by name; `organizations_name_key` on `(name_key, id)` serves a
/// superadmin's list (every organization), `memberships_user` a member's (theirs only).
pub const ORGANIZATION_SORTS: Sorts = Sorts {
    all: &[Sort::by_text("name", "name_key")],
    default: Sort::by_text("name", "name_key"),
};

/// What an organization list asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationQuery {
    /// Which page.
    pub paging: Paging,
    /// Part of the name, case-insensitive.
    pub search: Option<String>,
    /// Only active (or only inactive) ones.
    pub is_active: Option<bool>,
    /// Only this one (an API key sees its own organization only).
    pub only: Option<Uuid>,
}

/// The organizations `viewer` may see (a superadmin: all; anyone else: those they are a member
/// of), by name, one page by number or after a keyset, with the total counted up to
/// [`crate::sql::COUNT_CAP`]. Nobody keeps a count: a member's organizations are few, and a
/// superadmin's list, the platform's tenants, reads at most the cap.
pub async fn list_organizations(
    pool: &PgPool,
    viewer: Uuid,
    viewer_is_superadmin: bool,
    query: &OrganizationQuery,
) -> Result<ListPage<OrganizationRow>, sqlx::Error> {
    let mut matching = Matching::new("organizations");
    if !viewer_is_superadmin {
        let viewer = matching.param(viewer);
        matching.and(format!(
            "EXISTS (SELECT 1 FROM memberships m \
             WHERE m.org_id = organizations.id AND m.user_id = {viewer})"
        ));
    }
    if let Some(search) = query.search.as_deref() {
        let pattern = matching.param(like_pattern(search));
        matching.and(format!("name ILIKE {pattern}"));
    }
    if let Some(is_active) = query.is_active {
        matching.and_eq("is_active", is_active);
    }
    if let Some(only) = query.only {
        matching.and_eq("id", only);
    }
    list_page(
        pool,
        "id, name, description, settings, quotas, is_active, member_count, revision, \
         created_at, updated_at",
        matching,
        &query.paging,
        &Counting::Bounded,
    )
    .await
}

/// One of a user's organizations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MembershipRow {
    /// The organization.
    pub org_id: Uuid,
    /// Its name.
    pub name: String,
    /// The user's role there.
    pub role: String,
}

/// The organizations a user belongs to, by name.
pub async fn memberships_of(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.org_id, o.name, m.role FROM memberships m \
         JOIN organizations o ON o.id = m.org_id WHERE m.user_id = $1 ORDER BY o.name_key, o.id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// Whether a user belongs to an organization.
pub async fn is_member(pool: &PgPool, org_id: Uuid, user_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM memberships WHERE org_id = $1 AND user_id = $2)",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_one(pool)
    .await
}
