//! The software factory: projects (and, with their issue, builds).

pub mod project;
