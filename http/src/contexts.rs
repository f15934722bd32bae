//! The one list of the contexts the HTTP layer serves. Each context's module declares a
//! [`Context`]: its routes, its OpenAPI document, which of its stream categories the live feed
//! may send, and the background workers it starts. The application ([`crate::app`]), the
//! document ([`crate::docs::openapi`]), the live feed and the server ([`crate::server`]) read
//! this list; adding a context is one line in [`ALL`].

use std::collections::{BTreeMap, HashMap};

use actix_web::web;
use atelier_commands::worker::Worker;
use atelier_store::RecordedEvent;
use futures::future::BoxFuture;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Services;
use crate::live::hub::Revoked;
use crate::server::ServerConfig;

/// What a context gives the HTTP layer.
pub struct Context {
    /// Its name, as the other layers' modules are named (`factory`).
    pub name: &'static str,
    /// Registers its routes, inside `/api/v1`.
    pub routes: fn(&mut web::ServiceConfig),
    /// Its operations, schemas and tags.
    pub openapi: fn() -> utoipa::openapi::OpenApi,
    /// The stream categories whose events the live feed sends to the organization's clients.
    /// Every other category of the context is private: a new one is private until it is listed
    /// here.
    pub live: &'static [LiveCategory],
    /// Starts its background workers for a server with this configuration.
    pub workers: fn(&Services, &ServerConfig) -> Vec<Box<dyn Worker>>,
    /// What one of its events withdraws from live clients (their connections check their
    /// credentials again), if anything.
    pub revokes: fn(&RecordedEvent) -> Option<Revoked>,
    /// The figures it adds to each organization's view (the deploy context's
    /// `environment_count`), so that identity shows them without knowing the context.
    pub org_figures: OrgFigures,
    /// How the live feed sends one of its events when a seed expects another type or shape
    /// than `<resource>:<verb>` with the event's data (GestVenv's `package:installed`, its
    /// `environment:created` with `data.environment`); `None`: the plain form.
    pub live_message: fn(&RecordedEvent) -> Option<(&'static str, serde_json::Value)>,
    /// The commands clients may send on the live WebSocket besides subscriptions (GestVenv's
    /// `package:install`), by message type.
    pub live_commands: &'static [LiveCommand],
    /// Resolves a resource that a live subscription names otherwise than by its id (GestVenv
    /// subscribes to environments by name): `Some(future)` for the categories it knows.
    pub live_alias: LiveAlias,
    /// Its aggregates whose past the API serves: `/{path}/{id}/history`, `/{path}/{id}/diff`
    /// and `/{path}/{id}?as_of=` (`crate::audit::history`), with no handler of its own.
    pub resources: &'static [crate::audit::history::Resource],
}

/// A command a client may send on the live WebSocket: `{type: kind, …}`, answered with the
/// JSON `run` returns, or an `error` message with the problem's code.
pub struct LiveCommand {
    /// The message type.
    pub kind: &'static str,
    /// What it does, as the caller (the connection's principal) in its organization.
    pub run: LiveCommandRun,
}

/// What a live command does: given the state, the caller and the message's fields, the answer.
pub type LiveCommandRun =
    fn(
        web::Data<crate::state::AppState>,
        crate::kit::Principal,
        serde_json::Map<String, serde_json::Value>,
    ) -> BoxFuture<'static, Result<serde_json::Value, crate::problem::ApiError>>;

/// Resolves `(category, id)` as a live subscription names it, in an organization: the
/// resource's id (`None`: no such resource). `None` for categories the context does not know.
pub type LiveAlias = fn(
    web::Data<crate::state::AppState>,
    Uuid,
    &str,
    &str,
) -> Option<BoxFuture<'static, Option<String>>>;

/// The plain live form of every event.
pub fn plain_messages(_: &RecordedEvent) -> Option<(&'static str, serde_json::Value)> {
    None
}

/// No aliases: subscriptions name resources by id.
pub fn no_aliases(
    _: web::Data<crate::state::AppState>,
    _: Uuid,
    _: &str,
    _: &str,
) -> Option<BoxFuture<'static, Option<String>>> {
    None
}

/// The live command of this type, across contexts.
pub fn live_command(kind: &str) -> Option<&'static LiveCommand> {
    ALL.iter()
        .flat_map(|c| c.live_commands.iter())
        .find(|c| c.kind == kind)
}

/// The context that declares this category public, and how.
pub fn live_category(category: &str) -> Option<(&'static Context, &'static LiveCategory)> {
    ALL.iter().find_map(|c| {
        c.live
            .iter()
            .find(|l| l.category == category)
            .map(|l| (c, l))
    })
}

/// Figures about organizations: for each of these organizations, `(name, value)` for every
/// figure the context declares (organizations without any row count 0).
pub type OrgFigures = fn(PgPool, Vec<Uuid>) -> FiguresFuture;

/// What an [`OrgFigures`] answers: by organization, `(name, value)` pairs.
pub type FiguresFuture =
    BoxFuture<'static, Result<HashMap<Uuid, Vec<(&'static str, u64)>>, sqlx::Error>>;

/// Every context's figures about these organizations, by organization; each declared figure is
/// present for every organization (0 when it has none).
pub async fn organization_figures(
    pool: &PgPool,
    org_ids: &[Uuid],
) -> Result<HashMap<Uuid, BTreeMap<&'static str, u64>>, sqlx::Error> {
    let mut out: HashMap<Uuid, BTreeMap<&'static str, u64>> =
        org_ids.iter().map(|id| (*id, BTreeMap::new())).collect();
    for context in ALL {
        for (org, figures) in (context.org_figures)(pool.clone(), org_ids.to_vec()).await? {
            out.entry(org).or_default().extend(figures);
        }
    }
    Ok(out)
}

/// No figures about organizations.
pub fn no_org_figures(_: PgPool, _: Vec<Uuid>) -> FiguresFuture {
    Box::pin(async { Ok(HashMap::new()) })
}

/// A stream category the live feed sends, and the name the API gives its resource (the feed's
/// kinds and channels use it: the `org` category is the `organization` resource).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCategory {
    /// The stream category (`A::CATEGORY`).
    pub category: &'static str,
    /// The resource's name in the API.
    pub resource: &'static str,
}

/// Every context Atelier serves.
pub const ALL: &[Context] = &[
    crate::audit::CONTEXT,
    crate::factory::CONTEXT,
    crate::identity::CONTEXT,
    crate::deploy::CONTEXT,
    crate::venvs::CONTEXT,
    crate::stacks::CONTEXT,
    crate::surveillance::CONTEXT,
];

/// The public categories, across contexts.
pub fn live_categories() -> impl Iterator<Item = &'static LiveCategory> {
    ALL.iter().flat_map(|c| c.live.iter())
}

/// No revocations (a context whose events withdraw no credential).
pub fn no_revocations(_: &RecordedEvent) -> Option<Revoked> {
    None
}

/// No workers (a context that runs none).
pub fn no_workers(_: &Services, _: &ServerConfig) -> Vec<Box<dyn Worker>> {
    Vec::new()
}
