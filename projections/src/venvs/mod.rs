//! The venvs context's read models: environments with their packages ([`environments`]) and
//! operations ([`operations`]), and the queries over them.

mod environments;
mod operations;

pub use environments::*;
pub use operations::*;

use std::sync::Arc;

use crate::runtime::Projection;

/// The venvs context's projections, as the runtime starts them.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(EnvironmentsProjection),
        Arc::new(OperationsProjection),
    ]
}
