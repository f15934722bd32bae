//! The `api_keys` read model: an organization's keys (never their secrets).

use atelier_domain::identity::api_key::KeyEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::expect_one;
use crate::runtime::ProjectionError;

pub(super) async fn apply_key(
    tx: &mut PgConnection,
    event: KeyEvent,
) -> Result<(), ProjectionError> {
    match event {
        KeyEvent::ApiKeyCreated {
            key_id,
            org_id,
            name,
            scopes,
            expires_at,
            created_by,
            created_at,
        } => {
            sqlx::query(
                "INSERT INTO api_keys \
                 (id, org_id, name, scopes, expires_at, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            )
            .bind(key_id)
            .bind(org_id)
            .bind(name)
            .bind(scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .bind(expires_at)
            .bind(created_by)
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
        KeyEvent::ApiKeyRevoked {
            key_id, revoked_at, ..
        } => {
            let done = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1")
                .bind(key_id)
                .bind(revoked_at)
                .execute(&mut *tx)
                .await?;
            expect_one(done, &format!("API key {key_id}"))
        }
    }
}

/// An API key, as lists show it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKeyRow {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who created it.
    pub created_by: Uuid,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A page of an organization's API keys, newest first, with the total.
pub async fn list_api_keys(
    pool: &PgPool,
    org_id: Uuid,
    page: u32,
    per_page: u32,
) -> Result<(Vec<ApiKeyRow>, u64), sqlx::Error> {
    let rows: Vec<ApiKeyRow> = sqlx::query_as(
        "SELECT k.id, k.org_id, k.name, k.scopes, k.expires_at, k.created_by, k.created_at, \
         k.revoked_at, s.last_used_at FROM api_keys k \
         LEFT JOIN api_key_secrets s ON s.key_id = k.id \
         WHERE k.org_id = $1 ORDER BY k.created_at DESC, k.id DESC LIMIT $2 OFFSET $3",
    )
    .bind(org_id)
    .bind(i64::from(per_page))
    .bind(i64::from(page.saturating_sub(1)) * i64::from(per_page))
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE org_id = $1")
        .bind(org_id)
        .fetch_one(pool)
        .await?;
    Ok((rows, u64::try_from(total).unwrap_or(0)))
}
