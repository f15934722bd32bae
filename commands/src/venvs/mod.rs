//! Python environments (GestVenv): environments ([`environments`]) and the operations that
//! change them ([`operations`]), the tools that make them and install packages into them
//! ([`backend`]), the runner that runs operations with those tools ([`runner`]), and the
//! expiry of ephemeral environments ([`expiry`]).

pub mod backend;
pub mod cache;
pub mod environments;
pub mod expiry;
pub mod operations;
pub mod runner;

use std::sync::Arc;

use atelier_store::EventStore;
use sqlx::PgPool;

use crate::output::{LogTable, OutputLog};

pub use environments::{Created, EnvironmentCommandError, EnvironmentService};
pub use operations::{OperationCommandError, OperationService, QueueError};

/// Where operation logs go.
pub const OPERATION_LOGS: LogTable = LogTable {
    table: "operation_logs",
    owner: "operation_id",
};

/// The venvs context's write side, as the HTTP layer holds it.
#[derive(Clone)]
pub struct VenvServices {
    /// Environments.
    pub environments: EnvironmentService,
    /// Operations.
    pub operations: OperationService,
    /// Operation logs.
    pub logs: OutputLog,
    /// The Pythons and backends this server has.
    pub backends: Arc<backend::Backends>,
    /// Where environments live.
    pub data_dir: std::path::PathBuf,
    /// Each organization's package cache.
    pub cache: cache::Cache,
}

impl VenvServices {
    /// The services over a store and the read models' pool, with the backends found and the
    /// directory environments live in.
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: PgPool,
        backends: Arc<backend::Backends>,
        data_dir: std::path::PathBuf,
    ) -> Self {
        Self {
            environments: EnvironmentService::new(store.clone()),
            operations: OperationService::new(store),
            logs: OutputLog::new(pool, OPERATION_LOGS),
            cache: cache::Cache::new(backends.settings().cache_dir.clone()),
            backends,
            data_dir,
        }
    }
}
