//! Projections for Atelier: actix actors that follow the event log from a checkpoint and build the
//! PostgreSQL read models used for lists, stats and pagination, writing each batch and its
//! checkpoint in one transaction. The query functions that read those models (always taking the
//! tenant explicitly and returning DTOs) live here as well.
//!
//! The runtime ([`runtime`]), the database checks ([`health`]) and the SQL helpers every read
//! model uses ([`sql`]) sit at the root; each context has its own module tree, named as in
//! `atelier-domain`, whose `projections()` lists what it runs. Projection names read
//! `<context>.<read model>`.

pub mod audit;
pub mod deploy;
pub mod factory;
pub mod health;
pub mod identity;
pub mod rebuild;
pub mod runtime;
pub mod sql;
pub mod stacks;
pub mod surveillance;
pub mod venvs;

pub use runtime::{ProjectionStatus, RebuildReport, Registry, RunState};

use std::sync::Arc;

/// Every projection Atelier runs: each context's, one line per context.
pub fn all() -> Vec<Arc<dyn runtime::Projection>> {
    [
        factory::projections(),
        identity::projections(),
        deploy::projections(),
        venvs::projections(),
        stacks::projections(),
        surveillance::projections(),
        audit::projections(),
    ]
    .concat()
}
