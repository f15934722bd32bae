//! The surveillance context's read models: cameras ([`cameras`]) and detections
//! ([`detections`]), and their queries.

mod cameras;
mod detections;

pub use cameras::*;
pub use detections::*;

use std::sync::Arc;

use crate::runtime::Projection;

/// The surveillance context's projections.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(CamerasProjection), Arc::new(DetectionsProjection)]
}
