//! Rate limits that every server on one database agrees on: a sliding window of hits per key in
//! PostgreSQL (`rate_limit_hits`), counted under a transaction-scoped advisory lock on the key
//! and timed by the database's clock, so two servers never both let the eleventh request in.

use std::time::Duration;

use sqlx::PgPool;

/// A limit: at most `max` hits per `window` for each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Most hits in a window.
    pub max: u32,
    /// The window.
    pub window: Duration,
}

/// What a hit got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let in; the permit gives the hit back if what it allowed did not happen.
    Allowed(Permit),
    /// Refused: the window is full until `retry_after` has passed.
    Limited {
        /// How long until a hit is let in again.
        retry_after: Duration,
    },
}

/// A counted hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    id: i64,
    /// Hits left in the window after this one.
    pub remaining: u32,
}

/// Rate limits over one database.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    pool: PgPool,
}

impl RateLimiter {
    /// Limits counted in this database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Counts a hit on `key` (`deploy.create:<user>`) if the window has room.
    pub async fn hit(&self, key: &str, limit: Limit) -> Result<Decision, sqlx::Error> {
        let window_us = i64::try_from(limit.window.as_micros()).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM rate_limit_hits WHERE key = $1 \
             AND at <= clock_timestamp() - make_interval(secs => $2::float8 / 1e6)",
        )
        .bind(key)
        .bind(window_us as f64)
        .execute(&mut *tx)
        .await?;
        let (count, wait_us): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), (extract(epoch FROM min(at) \
             + make_interval(secs => $2::float8 / 1e6) - clock_timestamp()) * 1e6)::float8 \
             FROM rate_limit_hits WHERE key = $1",
        )
        .bind(key)
        .bind(window_us as f64)
        .fetch_one(&mut *tx)
        .await?;
        if count >= i64::from(limit.max) {
            tx.commit().await?;
            let wait = wait_us.unwrap_or(0.0).max(0.0) as u64;
            return Ok(Decision::Limited {
                retry_after: Duration::from_micros(wait),
            });
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO rate_limit_hits (key, at) VALUES ($1, clock_timestamp()) RETURNING id",
        )
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Decision::Allowed(Permit {
            id,
            remaining: limit.max.saturating_sub(count as u32 + 1),
        }))
    }

    /// Gives a hit back (what it allowed was refused for another reason).
    pub async fn refund(&self, permit: Permit) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM rate_limit_hits WHERE id = $1")
            .bind(permit.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_store::testing::TestDatabase;

    #[tokio::test]
    async fn a_window_allows_its_hits_then_says_when_to_retry_and_a_refund_gives_one_back() {
        let db = TestDatabase::create().await.unwrap();
        let limiter = RateLimiter::new(db.pool(2).await.unwrap());
        let limit = Limit {
            max: 2,
            window: Duration::from_secs(60),
        };
        let Decision::Allowed(first) = limiter.hit("k", limit).await.unwrap() else {
            panic!("the first hit is allowed");
        };
        assert_eq!(first.remaining, 1);
        let Decision::Allowed(second) = limiter.hit("k", limit).await.unwrap() else {
            panic!("the second hit is allowed");
        };
        assert_eq!(second.remaining, 0);
        let Decision::Limited { retry_after } = limiter.hit("k", limit).await.unwrap() else {
            panic!("the third hit is limited");
        };
        assert!(retry_after > Duration::from_secs(55) && retry_after <= limit.window);
        // Another key has its own window.
        assert!(matches!(
            limiter.hit("other", limit).await.unwrap(),
            Decision::Allowed(_)
        ));
        limiter.refund(second).await.unwrap();
        assert!(matches!(
            limiter.hit("k", limit).await.unwrap(),
            Decision::Allowed(_)
        ));
    }
}
