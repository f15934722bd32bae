//! The deploy context's endpoints: the frameworks catalog and deployments ([`deployments`]),
//! targets ([`targets`]), and the deploy runner a server starts ([`runner`]).

pub mod deployments;
pub mod runner;
pub mod targets;

use actix_web::web;
use atelier_domain::Aggregate;
use atelier_domain::deploy::deployment::Deployment;
use atelier_domain::deploy::target::Target;
use atelier_domain::identity::Permission;
use utoipa::OpenApi;

use crate::contexts::{Context, FiguresFuture, LiveCategory, no_revocations};

/// The deploy context, as the HTTP layer serves it.
pub const CONTEXT: Context = Context {
    name: "deploy",
    routes: configure,
    openapi: Doc::openapi,
    live: &[
        LiveCategory {
            category: Deployment::CATEGORY,
            resource: "deployment",
        },
        LiveCategory {
            category: Target::CATEGORY,
            resource: "target",
        },
    ],
    workers: runner::workers,
    revokes: no_revocations,
    org_figures: environment_counts,
    live_message: crate::contexts::plain_messages,
    live_commands: &[],
    live_alias: crate::contexts::no_aliases,
    resources: &[
        crate::audit::history::resource::<Deployment>(
            "deployments",
            "deployment",
            crate::audit::history::Access::Tenant(Permission::Read),
        ),
        crate::audit::history::resource::<Target>(
            "targets",
            "target",
            crate::audit::history::Access::Tenant(Permission::Read),
        ),
    ],
};

/// WindFlow's `environment_count`: how many targets each organization has.
fn environment_counts(pool: sqlx::PgPool, org_ids: Vec<uuid::Uuid>) -> FiguresFuture {
    Box::pin(async move {
        let counts = atelier_projections::deploy::target_counts(&pool, &org_ids).await?;
        Ok(org_ids
            .into_iter()
            .map(|org| {
                let n = counts.get(&org).copied().unwrap_or(0);
                (org, vec![("environment_count", n)])
            })
            .collect())
    })
}

/// The deploy context's operations.
#[derive(OpenApi)]
#[openapi(
    paths(
        deployments::frameworks,
        deployments::list,
        deployments::create,
        deployments::get,
        deployments::status,
        deployments::logs,
        deployments::versions,
        deployments::stop,
        deployments::start,
        deployments::cancel,
        deployments::redeploy,
        deployments::rollback,
        deployments::delete,
        deployments::get_env,
        deployments::put_env,
        targets::list,
        targets::create,
        targets::get,
        targets::update,
        targets::delete,
    ),
    tags((name = "deploy", description = "Deployments (the PaaS seed and WindFlow): frameworks, deployments, their logs, variables and rollbacks, and targets"))
)]
pub struct Doc;

/// Registers the deploy context's routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(deployments::configure)
        .configure(targets::configure);
}
