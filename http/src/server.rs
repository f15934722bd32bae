//! Wiring: the services an Atelier server runs, built from a pool and a store. The binary and
//! the black-box tests start servers the same way.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use async_trait::async_trait;
use atelier_commands::factory::RepoPolicy;
use atelier_commands::factory::driver::{BuildDriver, ShellDriver, SimulatedDriver};
use atelier_commands::factory::runner::{Backlog, BuildRunner, RunnerConfig, Unfinished};
use atelier_commands::identity::{Bootstrap, Identity};
use atelier_projections::Registry;
use atelier_projections::factory::{BUILDS, unfinished_builds};
use atelier_store::{EventStore, Position};
use chrono::Utc;
use sqlx::PgPool;

use crate::Services;
use crate::auth::AuthState;
use crate::platform::PlatformState;
use crate::state::{AppState, HttpSettings};

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
    pub auth: crate::auth::AuthSettings,
    /// HTTP settings.
    pub http: HttpSettings,
    /// The build runner (`None`: this server runs no builds).
    pub builds: Option<BuildSettings>,
    /// Which repositories projects may name and builds clone (local ones only when allowed:
    /// `ATELIER_ALLOW_LOCAL_REPOS`).
    pub repos: RepoPolicy,
    /// The bearer token `/metrics` asks for (`None`: open).
    pub metrics_token: Option<String>,
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
            .field("repos", &self.repos)
            .field("metrics_token", &set(&self.metrics_token))
            .finish()
    }
}

/// How builds run.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverSettings {
    /// The seed's simulated builds.
    Simulated {
        /// Multiplies the simulated durations (2 to 10 s).
        time_scale: f64,
        /// The odds of a failure, 0 to 1.
        failure_rate: f64,
    },
    /// git clone, then the project's build command with `sh -c`.
    Shell {
        /// Where build directories go.
        work_dir: std::path::PathBuf,
        /// The longest a build may take.
        timeout: Duration,
    },
}

/// The build runner's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSettings {
    /// This runner's id (builds it was running when it stopped are failed as interrupted when
    /// it starts again).
    pub runner_id: String,
    /// The most builds at once.
    pub concurrency: usize,
    /// How builds run.
    pub driver: DriverSettings,
}

impl Default for BuildSettings {
    fn default() -> Self {
        Self {
            runner_id: default_runner_id(),
            concurrency: 4,
            driver: DriverSettings::Simulated {
                time_scale: 1.0,
                failure_rate: 0.5,
            },
        }
    }
}

/// The host's name, else `local`.
pub fn default_runner_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}

/// The builds the runner must look at after a start, from the builds read model.
struct ReadModelBacklog {
    pool: PgPool,
    projections: Registry,
}

#[async_trait]
impl Backlog for ReadModelBacklog {
    async fn unfinished(&self, position: Position) -> Result<Vec<Unfinished>, String> {
        self.projections
            .wait_for(BUILDS, position, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        let rows = unfinished_builds(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|r| Unfinished {
                build_id: r.id,
                running_on: if r.status == "running" {
                    Some(r.runner.unwrap_or_default())
                } else {
                    None
                },
            })
            .collect())
    }
}

/// Starts a build runner for these services (the server does at start; tests start one again
/// after stopping it).
pub fn start_runner(services: &Services, settings: &BuildSettings) -> BuildRunner {
    let driver: Arc<dyn BuildDriver> = match &settings.driver {
        DriverSettings::Simulated {
            time_scale,
            failure_rate,
        } => Arc::new(SimulatedDriver {
            time_scale: *time_scale,
            failure_rate: *failure_rate,
        }),
        DriverSettings::Shell { work_dir, timeout } => Arc::new(ShellDriver {
            work_dir: work_dir.clone(),
            timeout: *timeout,
            kill_grace: Duration::from_secs(5),
            // The projects' policy: what may be created is what may be cloned.
            repos: services.app.projects.repo_policy(),
        }),
    };
    BuildRunner::start(
        services.app.store.clone(),
        services.app.logs.clone(),
        Arc::new(ReadModelBacklog {
            pool: services.app.pool.clone(),
            projections: services.app.projections.clone(),
        }),
        RunnerConfig {
            id: settings.runner_id.clone(),
            concurrency: settings.concurrency,
            driver,
        },
    )
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            production: false,
            jwt_secret: None,
            admin_username: "admin".to_owned(),
            admin_email: "admin@atelier.local".to_owned(),
            admin_password: None,
            auth: crate::auth::AuthSettings::default(),
            http: HttpSettings::default(),
            builds: Some(BuildSettings::default()),
            repos: RepoPolicy::default(),
            metrics_token: None,
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
    let identity = Identity::new(pool.clone());
    let secret = identity
        .jwt_secret(config.jwt_secret.as_deref(), config.production)
        .await?;
    let bootstrap = identity
        .bootstrap(&config.admin_username, config.admin_password.as_deref())
        .await?;
    atelier_commands::identity::record_bootstrap(
        store.as_ref(),
        &bootstrap,
        &config.admin_email,
        Utc::now(),
    )
    .await?;
    identity
        .set_login_email(bootstrap.admin_user_id, &config.admin_email)
        .await?;
    let projections = Registry::new();
    for projection in atelier_projections::all() {
        projections.start(projection, store.clone(), pool.clone());
    }
    let live = crate::live::hub::Hub::start(store.clone(), config.http.live.clone()).await?;
    let services_store = store.clone();
    let services = Services {
        live: web::Data::new(live),
        app: web::Data::new(
            AppState::new(store, pool.clone(), projections.clone(), config.http)
                .with_repo_policy(config.repos),
        ),
        auth: web::Data::new(AuthState::new(
            identity,
            services_store.clone(),
            &secret,
            config.auth,
        )),
        platform: web::Data::new(
            PlatformState::new(pool, projections).with_metrics_token(config.metrics_token.clone()),
        ),
        runner: Arc::default(),
    };
    if let Some(settings) = &config.builds {
        let runner = start_runner(&services, settings);
        *services.runner.lock().await = Some(runner);
    }
    Ok((services, bootstrap))
}
