//! The venvs context's endpoints (GestVenv): environments ([`environments`]) and ephemeral
//! ones ([`ephemeral`]), their packages ([`packages`]), operations ([`operations`]), the
//! package cache ([`cache`]), the system ([`system`]), the live feed's GestVenv forms ([`live`]), and the workers a server
//! starts ([`runner`]).

pub mod cache;
pub mod environments;
pub mod ephemeral;
pub mod live;
pub mod operations;
pub mod packages;
pub mod runner;
pub mod system;

use actix_web::web;
use atelier_domain::Aggregate;
use atelier_domain::identity::Permission;
use atelier_domain::venvs::environment::Environment;
use atelier_domain::venvs::operation::Operation;
use utoipa::OpenApi;

use crate::contexts::{Context, LiveCategory, no_org_figures, no_revocations};

/// The venvs context, as the HTTP layer serves it.
pub const CONTEXT: Context = Context {
    name: "venvs",
    routes: configure,
    openapi: Doc::openapi,
    live: &[
        LiveCategory {
            category: Environment::CATEGORY,
            resource: "environment",
        },
        LiveCategory {
            category: Operation::CATEGORY,
            resource: "operation",
        },
    ],
    workers: runner::workers,
    revokes: no_revocations,
    org_figures: no_org_figures,
    live_message: live::message,
    live_commands: live::COMMANDS,
    live_alias: live::alias,
    resources: &[
        crate::audit::history::resource::<Environment>(
            "environments",
            "environment",
            crate::audit::history::Access::Tenant(Permission::Read),
        ),
        crate::audit::history::resource::<Operation>(
            "operations",
            "operation",
            crate::audit::history::Access::Tenant(Permission::Read),
        ),
    ],
};

/// The venvs context's operations.
#[derive(OpenApi)]
#[openapi(
    paths(
        environments::list,
        environments::create,
        environments::get,
        environments::update,
        environments::delete,
        environments::activate,
        environments::export,
        ephemeral::create,
        ephemeral::list,
        ephemeral::stats,
        ephemeral::delete,
        ephemeral::cleanup_all,
        packages::list,
        packages::install,
        packages::update,
        packages::uninstall,
        operations::list,
        operations::get,
        operations::cancel,
        operations::stream,
        system::info,
        system::backends,
        system::diagnostics,
        cache::info,
        cache::clear,
        cache::packages,
        cache::export,
        cache::import,
    ),
    tags((name = "venvs", description = "Python environments (GestVenv): environments made by pip or uv, their packages, the operations that change them, and the system they run on"))
)]
pub struct Doc;

/// Registers the venvs context's routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/environments")
            .route(web::get().to(environments::list))
            .route(web::post().to(environments::create)),
    )
    .service(
        web::resource("/environments/{env_id}")
            .route(web::get().to(environments::get))
            .route(web::put().to(environments::update))
            .route(web::delete().to(environments::delete)),
    )
    .service(
        web::resource("/environments/{env_id}/activate")
            .route(web::post().to(environments::activate)),
    )
    .service(
        web::resource("/environments/{env_id}/export").route(web::get().to(environments::export)),
    )
    .service(
        web::resource("/environments/{env_id}/packages")
            .route(web::get().to(packages::list))
            .route(web::post().to(packages::install))
            .route(web::put().to(packages::update)),
    )
    .service(
        web::resource("/environments/{env_id}/packages/{package_name}")
            .route(web::delete().to(packages::uninstall)),
    )
    .service(web::resource("/operations").route(web::get().to(operations::list)))
    .service(
        web::resource("/operations/{id}")
            .route(web::get().to(operations::get))
            .route(web::delete().to(operations::cancel)),
    )
    .service(web::resource("/operations/{id}/stream").route(web::get().to(operations::stream)))
    .service(
        web::resource("/ephemeral/environments")
            .route(web::get().to(ephemeral::list))
            .route(web::post().to(ephemeral::create)),
    )
    .service(
        web::resource("/ephemeral/environments/{env_id}")
            .route(web::delete().to(ephemeral::delete)),
    )
    .service(web::resource("/ephemeral/stats").route(web::get().to(ephemeral::stats)))
    .service(
        web::resource("/ephemeral/cleanup-all").route(web::delete().to(ephemeral::cleanup_all)),
    )
    .service(web::resource("/system/info").route(web::get().to(system::info)))
    .service(web::resource("/system/backends").route(web::get().to(system::backends)))
    .service(web::resource("/system/diagnostics").route(web::get().to(system::diagnostics)))
    .service(
        web::resource("/cache")
            .route(web::get().to(cache::info))
            .route(web::delete().to(cache::clear)),
    )
    .service(web::resource("/cache/packages").route(web::post().to(cache::packages)))
    .service(web::resource("/cache/export").route(web::get().to(cache::export)))
    .service(web::resource("/cache/import").route(web::post().to(cache::import)));
}
