//! The deploy context's commands: deployments and targets ([`deployments`], [`targets`]), the
//! secret vault ([`vault`]), the provisioner drivers ([`driver`], [`process_driver`]) and the
//! runner that drives them ([`runner`]).

pub mod deployments;
pub mod driver;
pub mod process_driver;
pub mod runner;
pub mod targets;
pub mod vault;

use std::sync::Arc;

use atelier_store::EventStore;
use sqlx::PgPool;

use crate::output::{LogTable, OutputLog};
use crate::rate_limit::RateLimiter;

pub use deployments::{DeploymentCommandError, DeploymentService, EnvChange};
pub use targets::{TargetCommandError, TargetService};

/// Where deployment logs go.
pub const DEPLOYMENT_LOGS: LogTable = LogTable {
    table: "deployment_logs",
    owner: "deployment_id",
};

/// The deploy context's write side, as the HTTP layer holds it.
#[derive(Clone)]
pub struct DeployServices {
    /// Deployments.
    pub deployments: DeploymentService,
    /// Targets.
    pub targets: TargetService,
    /// Deployment logs.
    pub logs: OutputLog,
    /// Rate limits (deployment creations).
    pub limiter: RateLimiter,
    /// What runners hold.
    pub allocations: driver::Allocations,
}

impl DeployServices {
    /// The services over a store and the read models' pool.
    pub fn new(store: Arc<dyn EventStore>, pool: PgPool) -> Self {
        Self {
            deployments: DeploymentService::new(store.clone(), vault::Vault::new(pool.clone())),
            targets: TargetService::new(store),
            logs: OutputLog::new(pool.clone(), DEPLOYMENT_LOGS),
            limiter: RateLimiter::new(pool.clone()),
            allocations: driver::Allocations::new(pool),
        }
    }
}
