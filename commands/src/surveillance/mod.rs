//! The surveillance context (Sentinel's cameras): camera discovery on the network, the host's figures.

pub mod discovery;
pub mod system;
