//! The projection runtime (in progress).

use std::sync::{Arc, RwLock};

use atelier_store::Position;
use serde::Serialize;

/// Where a projection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Loading its checkpoint.
    Starting,
    /// Reading the log's backlog.
    CatchingUp,
    /// Following new events.
    Live,
    /// Stopped by an event it could not apply.
    Failed,
}

/// What a projection reports.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: i32,
    /// Its state.
    pub state: RunState,
    /// Its checkpoint: every event up to here is applied.
    pub position: Position,
    /// Why it failed.
    pub error: Option<String>,
    /// The event it failed on.
    pub failed_at: Option<Position>,
}

/// Every projection running in this process.
#[derive(Clone, Default)]
pub struct Registry {
    statuses: Arc<RwLock<Vec<ProjectionStatus>>>,
}

impl Registry {
    /// Their statuses.
    pub fn statuses(&self) -> Vec<ProjectionStatus> {
        self.statuses.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether every projection has caught up with the log as it was when it started, and none
    /// has failed.
    pub fn is_ready(&self) -> bool {
        self.statuses()
            .iter()
            .all(|s| s.state == RunState::Live)
    }
}
