//! The log's third user, beside commands and the live feed: the audit API ([`events`]) and
//! every resource's history, time travel and diff ([`history`]), served for the aggregates the
//! contexts list in `Context::resources`.

pub mod events;
pub mod history;

use actix_web::web;
use utoipa::OpenApi;

use crate::contexts::Context;

/// The audit, as the HTTP layer serves it. It comes first in `contexts::ALL`: its `?as_of=`
/// routes must be tried before the contexts' own single-resource `GET`s.
pub const CONTEXT: Context = Context {
    name: "audit",
    routes: configure,
    openapi: Doc::openapi,
    live: &[],
    workers: crate::contexts::no_workers,
    revokes: crate::contexts::no_revocations,
    org_figures: crate::contexts::no_org_figures,
    live_message: crate::contexts::plain_messages,
    live_commands: &[],
    live_alias: crate::contexts::no_aliases,
    resources: &[],
};

/// The audit's operations (the history operations are added per resource by
/// [`history::HistoryDocs`]).
#[derive(OpenApi)]
#[openapi(
    paths(events::list, events::stream),
    tags((name = "audit", description = "The audit trail, and every resource's history, past states and diffs"))
)]
pub struct Doc;

/// Registers the audit's routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit/events", web::get().to(events::list))
        .route("/audit/streams/{stream}", web::get().to(events::stream))
        .configure(history::configure);
}
