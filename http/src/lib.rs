//! Atelier's HTTP surface, built on actix-web: routes per context, authentication, the RFC 9457
//! problem+json error shape, pagination, OpenAPI, WebSocket and SSE. Handlers turn requests into
//! commands (via `atelier-commands`) or queries (via `atelier-projections`); they hold no SQL and
//! no business rules.

pub mod auth;
pub mod docs;
pub mod platform;
pub mod problem;

pub use problem::{ApiError, FieldError, Problem};
