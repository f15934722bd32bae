//! The deploy runner as a server starts it: its settings, the driver they choose, and the
//! backlog it reads from the deployments read model after a start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atelier_commands::deploy::driver::{AddressPool, Provisioner, SimulatedProvisioner};
use atelier_commands::deploy::process_driver::ProcessProvisioner;
use atelier_commands::deploy::runner::{Backlog, DeployRunner, RunnerConfig};
use atelier_commands::worker::Worker;
use atelier_projections::Registry;
use atelier_projections::deploy::{DEPLOYMENTS, deployment_work};
use atelier_store::Position;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Services;
use crate::server::ServerConfig;

/// How deployments are provisioned.
#[derive(Debug, Clone, PartialEq)]
pub enum ProvisionerSettings {
    /// The PaaS seed's simulated VMs and containers: nothing is sent anywhere.
    Simulated {
        /// Multiplies the simulated durations (provisioning 3–8 s, deployment 2–6 s).
        time_scale: f64,
        /// The odds of a failure, 0 to 1.
        failure_rate: f64,
        /// Where addresses come from.
        pool: AddressPool,
    },
    /// Runs each app on this machine (clone, build, start on 127.0.0.1).
    Process {
        /// Where deployments get their directories.
        work_dir: PathBuf,
        /// URL prefix rewrites applied before a clone (`https://github.com/=file:///srv/m/`).
        mirrors: Vec<(String, String)>,
        /// The longest a clone and build may take.
        build_timeout: Duration,
        /// The longest an app may take to answer HTTP.
        ready_timeout: Duration,
    },
}

/// The deploy runner's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploySettings {
    /// This runner's id (the deployments it claimed are its own until destroyed).
    pub runner_id: String,
    /// The most rollouts at once.
    pub concurrency: usize,
    /// How deployments are provisioned.
    pub driver: ProvisionerSettings,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            runner_id: crate::factory::runner::default_runner_id(),
            concurrency: 16,
            driver: ProvisionerSettings::Simulated {
                time_scale: 1.0,
                failure_rate: 0.1,
                pool: AddressPool::default(),
            },
        }
    }
}

/// The deployments the runner must look at after a start, from the read model.
struct ReadModelBacklog {
    pool: PgPool,
    projections: Registry,
}

#[async_trait]
impl Backlog for ReadModelBacklog {
    async fn work(&self, runner: &str, position: Position) -> Result<Vec<Uuid>, String> {
        self.projections
            .wait_for(DEPLOYMENTS, position, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        deployment_work(&self.pool, runner)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Starts a deploy runner for these services (the server does at start; tests start one again
/// after stopping it).
pub fn start_runner(services: &Services, settings: &DeploySettings) -> DeployRunner {
    let deploy = &services.app.deploy;
    let driver: Arc<dyn Provisioner> = match &settings.driver {
        ProvisionerSettings::Simulated {
            time_scale,
            failure_rate,
            pool,
        } => Arc::new(SimulatedProvisioner {
            time_scale: *time_scale,
            failure_rate: *failure_rate,
            addresses: *pool,
            allocations: deploy.allocations.clone(),
            runner: settings.runner_id.clone(),
        }),
        ProvisionerSettings::Process {
            work_dir,
            mirrors,
            build_timeout,
            ready_timeout,
        } => {
            let mut p = ProcessProvisioner::new(
                work_dir.clone(),
                deploy.allocations.clone(),
                settings.runner_id.clone(),
            );
            p.mirrors = mirrors.clone();
            p.build_timeout = *build_timeout;
            p.ready_timeout = *ready_timeout;
            Arc::new(p)
        }
    };
    DeployRunner::start(
        services.app.store.clone(),
        deploy.deployments.clone(),
        deploy.logs.clone(),
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

/// The deploy context's workers: the runner, unless this server runs no deployments.
pub fn workers(services: &Services, config: &ServerConfig) -> Vec<Box<dyn Worker>> {
    match &config.deployments {
        Some(settings) => vec![Box::new(start_runner(services, settings))],
        None => Vec::new(),
    }
}
