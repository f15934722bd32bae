//! The venvs context's settings and the operation runner as a server starts it, with the
//! backlog it reads from the read models after a start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atelier_commands::venvs::backend::{BackendSettings, Backends};
use atelier_commands::venvs::expiry::{Ephemerals, ExpiryWorker};
use atelier_commands::venvs::runner::{Backlog, OperationRunner, RunnerConfig, Unfinished};
use atelier_commands::worker::Worker;
use atelier_projections::Registry;
use atelier_projections::venvs::{ENVIRONMENTS, OPERATIONS, unfinished_operations};
use atelier_store::Position;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Services;
use crate::server::ServerConfig;

/// The venvs context's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VenvSettings {
    /// Where environments live (one directory per organization).
    pub data_dir: PathBuf,
    /// The tools and their cache.
    pub backends: BackendSettings,
    /// The operation runner (`None`: this server runs no operations).
    pub runner: Option<VenvRunnerSettings>,
}

impl Default for VenvSettings {
    fn default() -> Self {
        Self {
            data_dir: std::env::temp_dir().join("atelier-venvs"),
            backends: BackendSettings::default(),
            runner: Some(VenvRunnerSettings::default()),
        }
    }
}

/// The operation runner's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VenvRunnerSettings {
    /// This runner's id (operations it was running when it stopped are failed as interrupted
    /// when it starts again).
    pub runner_id: String,
    /// The most operations at once (GestVenv's `MAX_CONCURRENT_OPERATIONS`: 50).
    pub concurrency: usize,
}

impl Default for VenvRunnerSettings {
    fn default() -> Self {
        Self {
            runner_id: crate::factory::runner::default_runner_id(),
            concurrency: 50,
        }
    }
}

/// The Pythons and backends of this machine, found once per process for each set of settings
/// (every server of a process, and each test's, shares what the first found: discovery runs a
/// dozen probes).
pub async fn discover(settings: &BackendSettings) -> Arc<Backends> {
    static FOUND: tokio::sync::Mutex<Vec<(BackendSettings, Arc<Backends>)>> =
        tokio::sync::Mutex::const_new(Vec::new());
    let mut found = FOUND.lock().await;
    if let Some((_, backends)) = found.iter().find(|(s, _)| s == settings) {
        return backends.clone();
    }
    let backends = Arc::new(Backends::discover(settings).await);
    found.push((settings.clone(), backends.clone()));
    backends
}

/// What the runner looks at after a start, from the read models.
struct ReadModelBacklog {
    pool: PgPool,
    projections: Registry,
}

#[async_trait]
impl Backlog for ReadModelBacklog {
    async fn unfinished(&self, position: Position) -> Result<Vec<Unfinished>, String> {
        self.projections
            .wait_for(OPERATIONS, position, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        let rows = unfinished_operations(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(
                |(operation_id, environment_id, status, runner)| Unfinished {
                    operation_id,
                    environment_id,
                    running_on: (status == "running").then(|| runner.unwrap_or_default()),
                },
            )
            .collect())
    }

    async fn creating(&self, position: Position) -> Result<Vec<Uuid>, String> {
        self.projections
            .wait_for(ENVIRONMENTS, position, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        atelier_projections::venvs::creating_environments(&self.pool)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The live ephemeral environments, from the read model.
struct ReadModelEphemerals {
    pool: PgPool,
    projections: Registry,
}

#[async_trait]
impl Ephemerals for ReadModelEphemerals {
    async fn live(
        &self,
        position: Position,
    ) -> Result<Vec<(Uuid, chrono::DateTime<chrono::Utc>)>, String> {
        self.projections
            .wait_for(ENVIRONMENTS, position, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        atelier_projections::venvs::live_ephemerals(&self.pool)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Starts the expiry worker of ephemeral environments.
pub fn start_expiry(services: &Services, settings: &VenvRunnerSettings) -> ExpiryWorker {
    ExpiryWorker::start(
        services.app.store.clone(),
        Arc::new(ReadModelEphemerals {
            pool: services.app.pool.clone(),
            projections: services.app.projections.clone(),
        }),
        format!("runner:{}", settings.runner_id),
    )
}

/// Starts an operation runner for these services (the server does at start; tests start one
/// again after stopping it).
pub fn start_runner(services: &Services, settings: &VenvRunnerSettings) -> OperationRunner {
    let venvs = &services.app.venvs;
    OperationRunner::start(
        services.app.store.clone(),
        venvs.logs.clone(),
        Arc::new(ReadModelBacklog {
            pool: services.app.pool.clone(),
            projections: services.app.projections.clone(),
        }),
        RunnerConfig {
            id: settings.runner_id.clone(),
            concurrency: settings.concurrency,
            data_dir: venvs.data_dir.clone(),
            backends: venvs.backends.clone(),
        },
    )
}

/// The venvs context's workers: the operation runner and the expiry of ephemeral
/// environments, unless this server runs no operations.
pub fn workers(services: &Services, config: &ServerConfig) -> Vec<Box<dyn Worker>> {
    match &config.venvs.runner {
        Some(settings) => vec![
            Box::new(start_runner(services, settings)),
            Box::new(start_expiry(services, settings)),
        ],
        None => Vec::new(),
    }
}
