//! What the handlers share.

use std::sync::Arc;
use std::time::Duration;

use atelier_commands::factory::ProjectService;
use atelier_commands::factory::builds::BuildService;
use atelier_commands::factory::logs::BuildLogs;
use atelier_commands::idempotency::IdempotencyStore;
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
    /// Factory projects.
    pub projects: ProjectService,
    /// Factory builds.
    pub builds: BuildService,
    /// Organizations.
    pub organizations: atelier_commands::organizations::OrganizationService,
    /// Users.
    pub users: atelier_commands::users::UserService,
    /// Build logs.
    pub logs: BuildLogs,
    /// Settings.
    pub settings: HttpSettings,
}

impl AppState {
    /// State over a store and a pool.
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: PgPool,
        projections: Registry,
        settings: HttpSettings,
    ) -> Self {
        Self {
            projects: ProjectService::new(store.clone()),
            builds: BuildService::new(store.clone()),
            organizations: atelier_commands::organizations::OrganizationService::new(store.clone()),
            users: atelier_commands::users::UserService::new(
                store.clone(),
                atelier_commands::identity::Identity::new(pool.clone()),
            ),
            logs: BuildLogs::new(pool.clone()),
            idempotency: IdempotencyStore::new(pool.clone()),
            store,
            pool,
            projections,
            settings,
        }
    }

    /// The same state with projects (and the build drivers started from it) under this
    /// repository policy.
    pub fn with_repo_policy(mut self, repos: atelier_commands::factory::RepoPolicy) -> Self {
        self.projects = self.projects.with_repo_policy(repos);
        self
    }
}
