//! The secret vault: values of environment variables marked secret, kept beside the log in
//! `deploy_secrets` and named in events only by their id (`secret_ref`). A value is written
//! before the event that names it, read by the runner when it starts the app, and removed
//! when the deployment is destroyed.
//!
//! Values are stored as given (the database's own encryption at rest applies); they never go
//! into an event, a log line, the live feed or an answer.

use sqlx::PgPool;
use uuid::Uuid;

/// The vault.
#[derive(Clone)]
pub struct Vault {
    pool: PgPool,
}

impl Vault {
    /// The vault in this database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores a value: its reference.
    pub async fn put(
        &self,
        org_id: Uuid,
        deployment_id: Uuid,
        name: &str,
        value: &str,
    ) -> Result<Uuid, sqlx::Error> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO deploy_secrets (id, org_id, deployment_id, name, value) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(org_id)
        .bind(deployment_id)
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// The values of these references (of this deployment only), by reference.
    pub async fn values(
        &self,
        deployment_id: Uuid,
        refs: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, String>, sqlx::Error> {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, value FROM deploy_secrets WHERE deployment_id = $1 AND id = ANY($2)",
        )
        .bind(deployment_id)
        .bind(refs)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Removes every value of a deployment.
    pub async fn forget(&self, deployment_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM deploy_secrets WHERE deployment_id = $1")
            .bind(deployment_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes values that no event names (written for a command that was then refused).
    pub async fn discard(&self, refs: &[Uuid]) -> Result<(), sqlx::Error> {
        if refs.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM deploy_secrets WHERE id = ANY($1)")
            .bind(refs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
