//! What the handlers share.

use std::sync::Arc;
use std::time::Duration;

use atelier_commands::deploy::DeployServices;
use atelier_commands::factory::{FactoryServices, RepoPolicy};
use atelier_commands::idempotency::IdempotencyStore;
use atelier_commands::identity::IdentityServices;
use atelier_commands::stacks::StacksServices;
use atelier_commands::stacks::assistant::Assistant;
use atelier_commands::surveillance::SurveillanceServices;
use atelier_commands::venvs::VenvServices;
use atelier_projections::Registry;
use atelier_store::EventStore;
use sqlx::PgPool;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest JSON body accepted, in bytes.
    pub body_limit: usize,
    /// How long a query waits for its projection to reach a position it was given.
    pub read_wait: Duration,
    /// Allowed CORS origins.
    pub cors_origins: Vec<String>,
    /// The live feed.
    pub live: crate::live::LiveSettings,
    /// How many deployments one user may create in a window.
    pub deploy_creations: crate::deploy::deployments::CreationLimit,
    /// The networks camera discovery may probe (`None`: whatever a request names; names are
    /// then resolved). With a list, a request naming anything outside it, or a host name, is
    /// refused before anything is sent.
    pub discovery_networks: Option<Vec<ipnet::IpNet>>,
    /// How long a caller's checked access (session or key, user, organization) is trusted
    /// without a query, unless this server writes an identity stream meanwhile; zero checks
    /// every request.
    pub access_recheck: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            read_wait: Duration::from_secs(5),
            cors_origins: vec![
                "http://localhost:5173".to_owned(),
                "http://localhost:3000".to_owned(),
            ],
            live: crate::live::LiveSettings::default(),
            access_recheck: atelier_commands::identity::access::DEFAULT_RECHECK,
            deploy_creations: Default::default(),
            discovery_networks: None,
        }
    }
}

/// The state of the context handlers: the write side, the read side, and settings.
pub struct AppState {
    /// The event store.
    pub store: Arc<dyn EventStore>,
    /// Read models.
    pub pool: PgPool,
    /// The running projections.
    pub projections: Registry,
    /// Answers to `Idempotency-Key` requests.
    pub idempotency: IdempotencyStore,
    /// The software factory's services.
    pub factory: FactoryServices,
    /// Identity's services.
    pub identity: IdentityServices,
    /// The deploy context's services.
    pub deploy: DeployServices,
    /// The venvs context's services.
    pub venvs: VenvServices,
    /// The stacks context's services.
    pub stacks: StacksServices,
    /// The surveillance context's services.
    pub surveillance: SurveillanceServices,
    /// Settings.
    pub settings: HttpSettings,
}

impl AppState {
    /// State over a store and a pool; projects (and the build drivers started from them) under
    /// this repository policy; environments made by these backends under this directory.
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: PgPool,
        projections: Registry,
        settings: HttpSettings,
        repos: RepoPolicy,
        venvs: (
            Arc<atelier_commands::venvs::backend::Backends>,
            std::path::PathBuf,
        ),
        assistant: Assistant,
    ) -> Self {
        Self {
            stacks: StacksServices::new(store.clone(), assistant),
            surveillance: SurveillanceServices::new(store.clone(), pool.clone()),
            venvs: VenvServices::new(store.clone(), pool.clone(), venvs.0, venvs.1),
            factory: FactoryServices::new(store.clone(), pool.clone(), repos),
            identity: IdentityServices::new(store.clone(), pool.clone(), settings.access_recheck),
            deploy: DeployServices::new(store.clone(), pool.clone()),
            idempotency: IdempotencyStore::new(pool.clone()),
            store,
            pool,
            projections,
            settings,
        }
    }
}
