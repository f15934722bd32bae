//! The software factory's read models: projects (with their last build, [`projects`]) and
//! builds with the factory's stats ([`builds`]), and the queries over them.

mod builds;
mod projects;

pub use builds::*;
pub use projects::*;

use std::sync::Arc;

use crate::runtime::Projection;

/// The factory's projections, as the runtime starts them.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(ProjectsProjection), Arc::new(BuildsProjection)]
}
