//! Command handling for Atelier: load an aggregate's stream from the event store, let the pure
//! domain decide, append the resulting events with the expected revision, and on a revision
//! conflict reload and decide again (bounded). Uniqueness reservations (reservation streams
//! appended with `NoStream`) and the process managers (reactors) that turn events into side
//! effects and new commands live here too. One module per context, as in `atelier-domain`.

pub mod access;
pub mod api_keys;
pub mod factory;
pub mod handler;
pub mod idempotency;
pub mod identity;
pub mod organizations;
pub mod reservation;
pub mod secrets;
pub mod sessions;
pub mod users;

pub use atelier_domain as domain;
pub use atelier_store as store;
