//! The software factory: projects and their builds.

pub mod build;
pub mod project;
