//! Stacks: container configurations (Compose files) and what is checked about them.

pub mod compose;
