//! The software factory's commands: projects ([`projects`]), builds ([`builds`]), their logs
//! ([`logs`]), and the build runner ([`runner`]) with its drivers ([`driver`]).

pub mod builds;
pub mod driver;
pub mod logs;
pub mod projects;
pub mod runner;

use std::sync::Arc;

use atelier_store::EventStore;
use sqlx::PgPool;

pub use projects::{ProjectCommandError, ProjectInput, ProjectService, RepoPolicy};

/// The factory's write side, as the HTTP layer holds it.
#[derive(Clone)]
pub struct FactoryServices {
    /// Projects.
    pub projects: ProjectService,
    /// Builds.
    pub builds: builds::BuildService,
    /// Build logs.
    pub logs: logs::BuildLogs,
}

impl FactoryServices {
    /// The services over a store and the read models' pool, projects under this repository
    /// policy.
    pub fn new(store: Arc<dyn EventStore>, pool: PgPool, repos: RepoPolicy) -> Self {
        Self {
            projects: ProjectService::new(store.clone()).with_repo_policy(repos),
            builds: builds::BuildService::new(store),
            logs: logs::build_logs(pool),
        }
    }
}
