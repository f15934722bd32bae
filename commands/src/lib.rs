//! Command handling for Atelier: load an aggregate's stream from the event store, let the pure
//! domain decide, append the resulting events with the expected revision, and on a revision
//! conflict reload and decide again (bounded).
//!
//! What every context uses sits at the root: the command loop ([`handler`]), idempotent
//! requests ([`idempotency`]), uniqueness reservations ([`reservation`]), the background
//! worker contract ([`worker`]), process output logs ([`output`]), child process groups
//! ([`process`]) and rate limits shared by every server on one database ([`rate_limit`]). Each context has its own module tree, named as in
//! `atelier-domain`, with one `…Services` struct that the HTTP layer holds.

pub mod deploy;
pub mod factory;
pub mod handler;
pub mod idempotency;
pub mod identity;
pub mod output;
pub mod process;
pub mod rate_limit;
pub mod reservation;
pub mod stacks;
pub mod surveillance;
pub mod venvs;
pub mod worker;

pub use atelier_domain as domain;
pub use atelier_store as store;
