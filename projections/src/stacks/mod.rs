//! The stacks context's read model ([`read_model`]) and its queries.

mod read_model;

pub use read_model::*;

use std::sync::Arc;

use crate::runtime::Projection;

/// The stacks context's projections.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(StacksProjection)]
}
