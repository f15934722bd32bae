//! The software factory's endpoints: projects ([`projects`]), their builds, logs and stats
//! ([`builds`]), and the build runner a server starts ([`runner`]).

pub mod builds;
pub mod projects;
pub mod runner;

use actix_web::web;
use atelier_domain::Aggregate;
use atelier_domain::factory::build::Build;
use atelier_domain::factory::project::Project;
use atelier_domain::identity::Permission;
use utoipa::OpenApi;

use crate::contexts::{Context, LiveCategory, no_revocations};

/// The factory, as the HTTP layer serves it.
pub const CONTEXT: Context = Context {
    name: "factory",
    routes: configure,
    openapi: Doc::openapi,
    live: &[
        LiveCategory {
            category: Project::CATEGORY,
            resource: "project",
        },
        LiveCategory {
            category: Build::CATEGORY,
            resource: "build",
        },
    ],
    workers: runner::workers,
    revokes: no_revocations,
    org_figures: crate::contexts::no_org_figures,
    live_message: crate::contexts::plain_messages,
    live_commands: &[],
    live_alias: crate::contexts::no_aliases,
    resources: &[
        crate::audit::history::resource::<Project>(
            "projects",
            "project",
            crate::audit::history::Access::Tenant(Permission::Read),
        ),
        crate::audit::history::resource::<Build>(
            "builds",
            "build",
            crate::audit::history::Access::Tenant(Permission::Read),
        ),
    ],
};

/// The factory's operations.
#[derive(OpenApi)]
#[openapi(
    paths(
        projects::list,
        projects::create,
        projects::get,
        projects::update,
        projects::delete,
        builds::trigger,
        builds::list,
        builds::get,
        builds::cancel,
        builds::restart,
        builds::logs,
        builds::stats,
    ),
    tags((name = "factory", description = "The software factory: projects, builds, logs and stats"))
)]
pub struct Doc;

/// Registers the factory's routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(projects::configure)
        .configure(builds::configure);
}
