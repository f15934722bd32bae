//! Stacks and the assistant (WindFlow): stacks, their validation, generation and optimization
//! ([`routes`]), and the LLM services ([`llm`]).

pub mod llm;
pub mod routes;

use actix_web::web;
use atelier_domain::Aggregate;
use atelier_domain::identity::Permission;
use atelier_domain::stacks::stack::Stack;
use utoipa::OpenApi;

use crate::contexts::Context;

/// The stacks context, as the HTTP layer serves it.
pub const CONTEXT: Context = Context {
    name: "stacks",
    routes: configure,
    openapi: Doc::openapi,
    live: &[crate::contexts::LiveCategory {
        category: Stack::CATEGORY,
        resource: "stack",
    }],
    workers: crate::contexts::no_workers,
    revokes: crate::contexts::no_revocations,
    org_figures: crate::contexts::no_org_figures,
    live_message: crate::contexts::plain_messages,
    live_commands: &[],
    live_alias: crate::contexts::no_aliases,
    resources: &[crate::audit::history::resource::<Stack>(
        "stacks",
        "stack",
        crate::audit::history::Access::Tenant(Permission::Read),
    )],
};

/// The stacks context's operations.
#[derive(OpenApi)]
#[openapi(
    paths(
        routes::list,
        routes::create,
        routes::get,
        routes::update,
        routes::delete,
        routes::validate,
        routes::validate_stack,
        routes::generate,
        routes::optimize,
        routes::deploy,
        llm::analyze,
        llm::troubleshoot,
        llm::optimize,
    ),
    tags((name = "stacks", description = "Stacks (docker compose configurations), their validation, and the assistant that generates, optimizes and troubleshoots them"))
)]
pub struct Doc;

/// Registers the context's routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(routes::configure).configure(llm::configure);
}
