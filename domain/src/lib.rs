//! The pure heart of Atelier: aggregates, their commands, events, value types and errors.
//!
//! Everything here is deterministic and free of IO: no async, no database, no clock reads.
//! An aggregate is a pair of functions, [`Aggregate::decide`] and [`Aggregate::evolve`]; value
//! types parse their input once so that invalid data cannot be held. One module per context
//! (`factory`, `identity`, `deploy`, `venvs`, `stacks` now; `surveillance` as its issue arrives),
//! mirroring the modules of the other layers. [`testing`] holds the given/when/then harness.

pub mod aggregate;
pub mod deploy;
pub mod factory;
pub mod identity;
pub mod stacks;
pub mod surveillance;
pub mod testing;
pub mod value;
pub mod venvs;

pub use aggregate::{Aggregate, DomainEvent, EventDecodeError, Upcaster};
