//! `Idempotency-Key`: the first answer to a request is stored and replayed to its retries.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// How long answers are kept.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a request may stay in progress before a retry may take it over (its server died).
const IN_PROGRESS_TIMEOUT_SECS: i64 = 60;

/// A key's row: fingerprint, status, headers, body.
type StoredRow = (
    String,
    Option<i32>,
    Option<sqlx::types::Json<Vec<(String, String)>>>,
    Option<Vec<u8>>,
);

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The HTTP status.
    pub status: u16,
    /// The headers worth replaying (`Location`, `ETag`, …).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// What to do with a request that carries a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time: process it, then [`IdempotencyStore::complete`] or
    /// [`IdempotencyStore::abandon`].
    New,
    /// Answered before: replay this.
    Replay(StoredResponse),
    /// The same key is being processed right now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// The keys and their answers, per organization.
#[derive(Clone)]
pub struct IdempotencyStore {
    pool: PgPool,
    ttl: Duration,
}

impl IdempotencyStore {
    /// A store keeping answers for [`DEFAULT_TTL`].
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            ttl: DEFAULT_TTL,
        }
    }

    /// Claims `key` for a request identified by `fingerprint` (method, path and body).
    pub async fn begin(
        &self,
        org_id: Uuid,
        key: &str,
        fingerprint: &str,
    ) -> Result<Begin, sqlx::Error> {
        let ttl_secs = self.ttl.as_secs_f64();
        // Expired answers, and requests whose server died, no longer hold their key.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE org_id = $1 AND key = $2 \
             AND (expires_at < now() OR (status IS NULL \
                  AND created_at < now() - make_interval(secs => $3)))",
        )
        .bind(org_id)
        .bind(key)
        .bind(IN_PROGRESS_TIMEOUT_SECS as f64)
        .execute(&self.pool)
        .await?;
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (org_id, key, fingerprint, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
             ON CONFLICT DO NOTHING",
        )
        .bind(org_id)
        .bind(key)
        .bind(fingerprint)
        .bind(ttl_secs)
        .execute(&self.pool)
        .await?;
        if claimed.rows_affected() == 1 {
            return Ok(Begin::New);
        }
        let row: Option<StoredRow> = sqlx::query_as(
            "SELECT fingerprint, status, headers, body FROM idempotency_keys \
                 WHERE org_id = $1 AND key = $2",
        )
        .bind(org_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            // Removed meanwhile (expired, abandoned): the caller may simply retry.
            None => Begin::InProgress,
            Some((stored, ..)) if stored != fingerprint => Begin::Mismatch,
            Some((_, None, ..)) => Begin::InProgress,
            Some((_, Some(status), headers, body)) => Begin::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                headers: headers.map(|h| h.0).unwrap_or_default(),
                body: body.unwrap_or_default(),
            }),
        })
    }

    /// Stores the answer to a claimed key.
    pub async fn complete(
        &self,
        org_id: Uuid,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 \
             WHERE org_id = $1 AND key = $2",
        )
        .bind(org_id)
        .bind(key)
        .bind(i32::from(response.status))
        .bind(sqlx::types::Json(&response.headers))
        .bind(&response.body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Frees a claimed key without an answer (the request failed in a way worth retrying).
    pub async fn abandon(&self, org_id: Uuid, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE org_id = $1 AND key = $2 AND status IS NULL",
        )
        .bind(org_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
