//! Wiring: the services an Atelier server runs, built from a pool and a store. The binary and
//! the black-box tests start servers the same way.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use atelier_commands::identity::{Bootstrap, Identity};
use atelier_projections::Registry;
use atelier_store::EventStore;
use chrono::Utc;
use sqlx::PgPool;

use crate::Services;
use crate::auth::AuthState;
use crate::platform::PlatformState;
use crate::state::{AppState, HttpSettings};

/// How a server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Production refuses weak or missing secrets.
    pub production: bool,
    /// The configured JWT secret, if any.
    pub jwt_secret: Option<String>,
    /// The bootstrap superadmin's name.
    pub admin_username: String,
    /// Its password; generated (and printed once) when absent.
    pub admin_password: Option<String>,
    /// Access tokens live this long.
    pub access_ttl: Duration,
    /// HTTP settings.
    pub http: HttpSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            production: false,
            jwt_secret: None,
            admin_username: "admin".to_owned(),
            admin_password: None,
            access_ttl: Duration::from_secs(30 * 60),
            http: HttpSettings::default(),
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
    let projections = Registry::new();
    for projection in atelier_projections::all() {
        projections.start(projection, store.clone(), pool.clone());
    }
    let services = Services {
        app: web::Data::new(AppState::new(
            store,
            pool.clone(),
            projections.clone(),
            config.http,
        )),
        auth: web::Data::new(AuthState::new(identity, &secret, config.access_ttl)),
        platform: web::Data::new(PlatformState {
            pool,
            projections,
            started_at: std::time::Instant::now(),
            started_utc: Utc::now(),
            metrics: crate::metrics::recorder(),
        }),
    };
    Ok((services, bootstrap))
}
