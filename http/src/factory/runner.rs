//! The build runner as a server starts it: its settings, the drivers they choose, and the
//! backlog it reads from the builds read model after a start.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atelier_commands::factory::driver::{BuildDriver, ShellDriver, SimulatedDriver};
use atelier_commands::factory::runner::{Backlog, BuildRunner, RunnerConfig, Unfinished};
use atelier_commands::worker::Worker;
use atelier_projections::Registry;
use atelier_projections::factory::{BUILDS, unfinished_builds};
use atelier_store::Position;
use sqlx::PgPool;

use crate::Services;
use crate::server::ServerConfig;

/// How builds run.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverSettings {
    /// The seed's simulated builds.
    Simulated {
        /// Multiplies the simulated durations (2 to 10 s).
        time_scale: f64,
        /// The odds of a failure, 0 to 1.
        failure_rate: f64,
    },
    /// git clone, then the project's build command with `sh -c`.
    Shell {
        /// Where build directories go.
        work_dir: std::path::PathBuf,
        /// The longest a build may take.
        timeout: Duration,
    },
}

/// The build runner's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSettings {
    /// This runner's id (builds it was running when it stopped are failed as interrupted when
    /// it starts again).
    pub runner_id: String,
    /// The most builds at once.
    pub concurrency: usize,
    /// How builds run.
    pub driver: DriverSettings,
}

impl Default for BuildSettings {
    fn default() -> Self {
        Self {
            runner_id: default_runner_id(),
            concurrency: 4,
            driver: DriverSettings::Simulated {
                time_scale: 1.0,
                failure_rate: 0.5,
            },
        }
    }
}

/// The host's name, else `local`.
pub fn default_runner_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}

/// The builds the runner must look at after a start, from the builds read model.
struct ReadModelBacklog {
    pool: PgPool,
    projections: Registry,
}

#[async_trait]
impl Backlog for ReadModelBacklog {
    async fn unfinished(&self, position: Position) -> Result<Vec<Unfinished>, String> {
        self.projections
            .wait_for(BUILDS, position, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        let rows = unfinished_builds(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|r| Unfinished {
                build_id: r.id,
                running_on: if r.status == "running" {
                    Some(r.runner.unwrap_or_default())
                } else {
                    None
                },
            })
            .collect())
    }
}

/// Starts a build runner for these services (the server does at start; tests start one again
/// after stopping it).
pub fn start_runner(services: &Services, settings: &BuildSettings) -> BuildRunner {
    let driver: Arc<dyn BuildDriver> = match &settings.driver {
        DriverSettings::Simulated {
            time_scale,
            failure_rate,
        } => Arc::new(SimulatedDriver {
            time_scale: *time_scale,
            failure_rate: *failure_rate,
        }),
        DriverSettings::Shell { work_dir, timeout } => Arc::new(ShellDriver {
            work_dir: work_dir.clone(),
            timeout: *timeout,
            kill_grace: Duration::from_secs(5),
            // The projects' policy: what may be created is what may be cloned.
            repos: services.app.factory.projects.repo_policy(),
        }),
    };
    BuildRunner::start(
        services.app.store.clone(),
        services.app.factory.logs.clone(),
        Arc::new(ReadModelBacklog {
            pool: services.app.pool.clone(),
            projections: services.app.projections.clone(),
        }),
        RunnerConfig {
            id: settings.runner_id.clone(),
            concurrency: settings.concurrency,
            driver,
        },
    )
}

/// The factory's workers: the build runner, unless this server runs no builds.
pub fn workers(services: &Services, config: &ServerConfig) -> Vec<Box<dyn Worker>> {
    match &config.builds {
        Some(settings) => vec![Box::new(start_runner(services, settings))],
        None => Vec::new(),
    }
}
