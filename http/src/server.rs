//! Wiring: the services an Atelier server runs, built from a pool and a store. The binary and
//! the black-box tests start servers the same way.

use std::sync::Arc;

use actix_web::web;
use atelier_commands::factory::RepoPolicy;
use atelier_commands::identity::credentials::Bootstrap;
use atelier_projections::Registry;
use atelier_store::EventStore;
use sqlx::PgPool;

use crate::Services;
pub use crate::deploy::runner::{DeploySettings, ProvisionerSettings};
pub use crate::factory::runner::{BuildSettings, DriverSettings, default_runner_id, start_runner};
use crate::identity::auth::AuthState;
use crate::platform::PlatformState;
use crate::state::{AppState, HttpSettings};
pub use crate::surveillance::runner::CaptureRunnerSettings;
pub use crate::venvs::runner::{VenvRunnerSettings, VenvSettings};

/// How a server is set up.
#[derive(Clone)]
pub struct ServerConfig {
    /// Production refuses weak or missing secrets.
    pub production: bool,
    /// The configured JWT secret, if any.
    pub jwt_secret: Option<String>,
    /// The bootstrap superadmin's name.
    pub admin_username: String,
    /// The bootstrap superadmin's email address (recorded in the identity log).
    pub admin_email: String,
    /// Its password; generated (and printed once) when absent.
    pub admin_password: Option<String>,
    /// Token lifetimes and login throttling.
    pub auth: crate::identity::auth::AuthSettings,
    /// HTTP settings.
    pub http: HttpSettings,
    /// The build runner (`None`: this server runs no builds).
    pub builds: Option<BuildSettings>,
    /// The deploy runner (`None`: this server runs no deployments).
    pub deployments: Option<DeploySettings>,
    /// Python environments: where they live, their tools, the operation runner.
    pub venvs: VenvSettings,
    /// Which repositories projects may name and builds clone (local ones only when allowed:
    /// `ATELIER_ALLOW_LOCAL_REPOS`).
    pub repos: RepoPolicy,
    /// The bearer token `/metrics` asks for (`None`: open).
    pub metrics_token: Option<String>,
    /// The assistant's LLM engine (`None`: the offline engine answers alone).
    pub llm: Option<atelier_commands::stacks::assistant::LlmSettings>,
    /// The cameras' capture runner (`None`: this server runs no camera's pipeline).
    pub capture: Option<CaptureRunnerSettings>,
}

impl std::fmt::Debug for ServerConfig {
    /// Secrets show only whether they are set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &Option<String>| if s.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("ServerConfig")
            .field("production", &self.production)
            .field("jwt_secret", &set(&self.jwt_secret))
            .field("admin_username", &self.admin_username)
            .field("admin_email", &self.admin_email)
            .field("admin_password", &set(&self.admin_password))
            .field("auth", &self.auth)
            .field("http", &self.http)
            .field("builds", &self.builds)
            .field("deployments", &self.deployments)
            .field("venvs", &self.venvs)
            .field("repos", &self.repos)
            .field("metrics_token", &set(&self.metrics_token))
            .field("llm", &self.llm)
            .field("capture", &self.capture)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            production: false,
            jwt_secret: None,
            admin_username: "admin".to_owned(),
            admin_email: "admin@atelier.local".to_owned(),
            admin_password: None,
            auth: crate::identity::auth::AuthSettings::default(),
            http: HttpSettings::default(),
            builds: Some(BuildSettings::default()),
            deployments: Some(DeploySettings::default()),
            venvs: VenvSettings::default(),
            repos: RepoPolicy::default(),
            metrics_token: None,
            llm: None,
            capture: Some(CaptureRunnerSettings::default()),
        }
    }
}

/// A failure to start.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// Starts the projections (on the current actix system), bootstraps the superadmin and returns
/// the application's services, with what the bootstrap did.
pub async fn start(
    pool: PgPool,
    store: Arc<dyn EventStore>,
    config: ServerConfig,
) -> Result<(Services, Bootstrap), StartError> {
    let (secret, bootstrap) = crate::identity::first_start(&pool, store.as_ref(), &config).await?;
    let projections = Registry::new();
    for projection in atelier_projections::all() {
        projections.start(projection, store.clone(), pool.clone());
    }
    let live = crate::live::hub::Hub::start(store.clone(), config.http.live.clone()).await?;
    let backends = crate::venvs::runner::discover(&config.venvs.backends).await;
    let app = AppState::new(
        store,
        pool.clone(),
        projections.clone(),
        config.http.clone(),
        config.repos,
        (backends, config.venvs.data_dir.clone()),
        match &config.llm {
            Some(settings) => {
                atelier_commands::stacks::assistant::Assistant::with_llm(std::sync::Arc::new(
                    atelier_commands::stacks::assistant::Llm::new(settings.clone())?,
                ))
            }
            None => atelier_commands::stacks::assistant::Assistant::offline(),
        },
    );
    // The machine's figures are measured from the start, so the first answer has a CPU reading.
    app.surveillance.system();
    let services = Services {
        live: web::Data::new(live),
        auth: web::Data::new(AuthState::new(&app.identity, &secret, config.auth)),
        app: web::Data::new(app),
        platform: web::Data::new(
            PlatformState::new(pool, projections).with_metrics_token(config.metrics_token.clone()),
        ),
        workers: Arc::default(),
    };
    for context in crate::contexts::ALL {
        for worker in (context.workers)(&services, &config) {
            tracing::debug!(context = context.name, "starting a worker");
            services.add_worker(worker).await;
        }
    }
    Ok((services, bootstrap))
}
