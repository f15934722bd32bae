//! Test support: a fresh, migrated PostgreSQL database per test, dropped afterwards.

use sqlx::Executor;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres};
use uuid::Uuid;

use crate::StoreError;
use crate::postgres::migrate;

/// The server tests create their databases on: `ATELIER_TEST_DATABASE_URL`, else
/// `DATABASE_URL`, else the local default. Only its host, port and credentials are used.
pub fn test_server_url() -> String {
    std::env::var("ATELIER_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/atelier".to_owned())
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// A database made for one test, migrated, and dropped (forcibly) when this value is dropped.
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates and migrates a database with a unique name.
    pub async fn create() -> Result<Self, StoreError> {
        let server = test_server_url();
        let admin_url = with_database(&server, "postgres");
        let name = format!("atelier_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .map_err(StoreError::backend)?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .map_err(StoreError::backend)?;
        admin.close().await.map_err(StoreError::backend)?;
        let db = Self {
            url: with_database(&server, &name),
            name,
            admin_url,
        };
        let pool = db.pool(2).await?;
        migrate(&pool).await?;
        pool.close().await;
        Ok(db)
    }

    /// A pool on this database (waiting at most 10 s for a connection, as a server would
    /// rather answer 503 than hang).
    pub async fn pool(&self, max_connections: u32) -> Result<PgPool, StoreError> {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&self.url)
            .await
            .map_err(StoreError::backend)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cuts every connection to it and refuses new ones until [`TestDatabase::reconnect`], as
    /// a database that went away would.
    pub async fn disconnect(&self) -> Result<(), StoreError> {
        self.admin(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            self.name
        ))
        .await?;
        self.admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            self.name
        ))
        .await
    }

    /// Accepts connections again after [`TestDatabase::disconnect`].
    pub async fn reconnect(&self) -> Result<(), StoreError> {
        self.admin(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            self.name
        ))
        .await
    }

    async fn admin(&self, sql: &str) -> Result<(), StoreError> {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .map_err(StoreError::backend)?;
        admin
            .execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .map_err(StoreError::backend)?;
        admin.close().await.map_err(StoreError::backend)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Dropping needs IO, and Drop cannot be async: do it on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query::<Postgres>(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .ok()
            })
        });
        let _ = dropped.join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/atelier", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/atelier?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
