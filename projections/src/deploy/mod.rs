//! The deploy context's read models: deployments with their versions and the deploy stats
//! ([`deployments`]), and targets ([`targets`]), and the queries over them.

mod deployments;
mod targets;

pub use deployments::*;
pub use targets::*;

use std::sync::Arc;

use crate::runtime::Projection;

/// The deploy context's projections, as the runtime starts them.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(DeploymentsProjection), Arc::new(TargetsProjection)]
}
