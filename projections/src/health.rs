//! Database checks for health and readiness endpoints.

use sqlx::PgPool;

/// Whether the database answers a trivial query.
pub async fn database_ok(pool: &PgPool) -> bool {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await
        .is_ok()
}
