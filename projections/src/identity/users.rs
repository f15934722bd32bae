//! The `users` read model.

use atelier_domain::identity::user::UserEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::expect_one;
use crate::runtime::ProjectionError;
use crate::sql::like_pattern;

pub(super) async fn apply_user(
    tx: &mut PgConnection,
    event: UserEvent,
    revision: i64,
) -> Result<(), ProjectionError> {
    let (user_id, set, at): (Uuid, UserChange, DateTime<Utc>) = match event {
        UserEvent::UserRegistered {
            user_id,
            username,
            profile,
            is_superadmin,
            created_at,
        } => {
            sqlx::query(
                "INSERT INTO users (id, username, email, full_name, is_superadmin, is_active, \
                 revision, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, true, $6, $7, $7)",
            )
            .bind(user_id)
            .bind(username.as_str())
            .bind(profile.email.as_str())
            .bind(profile.full_name)
            .bind(is_superadmin)
            .bind(revision)
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
            return Ok(());
        }
        UserEvent::UserUpdated {
            user_id,
            profile,
            updated_at,
        } => (
            user_id,
            UserChange::Profile(profile.email.as_str().to_owned(), profile.full_name),
            updated_at,
        ),
        UserEvent::UserDeactivated { user_id, at } => (user_id, UserChange::Active(false), at),
        UserEvent::UserReactivated { user_id, at } => (user_id, UserChange::Active(true), at),
        UserEvent::SuperadminChanged {
            user_id,
            is_superadmin,
            at,
        } => (user_id, UserChange::Superadmin(is_superadmin), at),
        UserEvent::PasswordChanged { user_id, at } => (user_id, UserChange::Nothing, at),
    };
    let query = match &set {
        UserChange::Profile(..) => {
            "UPDATE users SET email = $4, full_name = $5, revision = $2, updated_at = $3 \
             WHERE id = $1"
        }
        UserChange::Active(_) => {
            "UPDATE users SET is_active = $4, revision = $2, updated_at = $3 WHERE id = $1"
        }
        UserChange::Superadmin(_) => {
            "UPDATE users SET is_superadmin = $4, revision = $2, updated_at = $3 WHERE id = $1"
        }
        UserChange::Nothing => "UPDATE users SET revision = $2, updated_at = $3 WHERE id = $1",
    };
    let q = sqlx::query(query).bind(user_id).bind(revision).bind(at);
    let q = match set {
        UserChange::Profile(email, full_name) => q.bind(email).bind(full_name),
        UserChange::Active(b) | UserChange::Superadmin(b) => q.bind(b),
        UserChange::Nothing => q,
    };
    let done = q.execute(&mut *tx).await?;
    expect_one(done, &format!("user {user_id}"))
}

/// What a user event changes besides its revision and time.
enum UserChange {
    Profile(String, Option<String>),
    Active(bool),
    Superadmin(bool),
    Nothing,
}

/// A user, as `me` and user lists show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UserRow {
    /// Their id.
    pub id: Uuid,
    /// Their username.
    pub username: String,
    /// Their email address.
    pub email: String,
    /// Their name.
    pub full_name: Option<String>,
    /// Whether they administer the platform.
    pub is_superadmin: bool,
    /// Whether they may log in.
    pub is_active: bool,
    /// When they registered.
    pub created_at: DateTime<Utc>,
}

/// The user with this id (a user reads themselves: no tenant applies).
pub async fn get_user(pool: &PgPool, user_id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, email, full_name, is_superadmin, is_active, created_at \
         FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// Which users to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuery {
    /// Page number, from 1.
    pub page: u32,
    /// Rows per page.
    pub per_page: u32,
    /// Part of the username or email address, case-insensitive.
    pub search: Option<String>,
    /// Only active (or only inactive) ones.
    pub is_active: Option<bool>,
    /// Only the members of this organization (`None`: everyone, for a superadmin).
    pub org_id: Option<Uuid>,
}

/// A page of users by username, with the total.
pub async fn list_users(
    pool: &PgPool,
    query: &UserQuery,
) -> Result<(Vec<UserRow>, u64), sqlx::Error> {
    const VISIBLE: &str = "($1::uuid IS NULL OR EXISTS (SELECT 1 FROM memberships m \
         WHERE m.user_id = u.id AND m.org_id = $1)) \
         AND ($2::text IS NULL OR u.username ILIKE $2 OR u.email ILIKE $2) \
         AND ($3::boolean IS NULL OR u.is_active = $3)";
    let pattern = query.search.as_deref().map(like_pattern);
    let offset = i64::from(query.page.saturating_sub(1)) * i64::from(query.per_page);
    let rows = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!(
        "SELECT u.id, u.username, u.email, u.full_name, u.is_superadmin, u.is_active, \
         u.created_at FROM users u WHERE {VISIBLE} \
         ORDER BY lower(u.username), u.id LIMIT $4 OFFSET $5"
    )))
    .bind(query.org_id)
    .bind(pattern.as_deref())
    .bind(query.is_active)
    .bind(i64::from(query.per_page))
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM users u WHERE {VISIBLE}"
    )))
    .bind(query.org_id)
    .bind(pattern.as_deref())
    .bind(query.is_active)
    .fetch_one(pool)
    .await?;
    Ok((rows, u64::try_from(total).unwrap_or(0)))
}
