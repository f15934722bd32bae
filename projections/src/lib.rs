//! Projections for Atelier: actix actors that follow the event log from a checkpoint and build the
//! PostgreSQL read models used for lists, stats and pagination, writing each batch and its
//! checkpoint in one transaction. The query functions that read those models (always taking the
//! tenant explicitly and returning DTOs) live here as well. One module per context.

pub mod factory;
pub mod health;
pub mod identity;
pub mod runtime;

pub use runtime::{ProjectionStatus, Registry, RunState};

use std::sync::Arc;

/// Every projection Atelier runs.
pub fn all() -> Vec<Arc<dyn runtime::Projection>> {
    vec![
        Arc::new(factory::ProjectsProjection),
        Arc::new(factory::BuildsProjection),
        Arc::new(identity::IdentityProjection),
    ]
}
