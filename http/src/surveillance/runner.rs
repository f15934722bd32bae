//! The capture runner's wiring (the pipeline itself comes with the capture module).

use atelier_commands::worker::Worker;

use crate::Services;
use crate::server::ServerConfig;

/// No capture worker yet.
pub fn workers(_: &Services, _: &ServerConfig) -> Vec<Box<dyn Worker>> {
    Vec::new()
}
