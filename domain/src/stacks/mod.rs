//! Stacks: WindFlow's container configurations (compose documents held as JSON mappings) and
//! the offline assistant that generates, optimizes, analyzes and troubleshoots them
//! ([`assistant`]).

pub mod assistant;
