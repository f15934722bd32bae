//! Atelier's HTTP surface, built on actix-web: routes per context, authentication, the RFC 9457
//! problem+json error shape, pagination, OpenAPI, WebSocket and SSE. Handlers turn requests into
//! commands (via `atelier-commands`) or queries (via `atelier-projections`); they hold no SQL and
//! no business rules.

pub mod admin;
pub mod audit;
pub mod contexts;
pub mod conventions;
pub mod cors;
pub mod deploy;
pub mod docs;
pub mod factory;
pub mod identity;
pub mod kit;
pub mod live;
pub mod logs;
pub mod metrics;
pub mod middleware;
pub mod pagination;
pub mod platform;
pub mod problem;
pub mod server;
pub mod stacks;
pub mod state;
pub mod surveillance;
pub mod text;
pub mod venvs;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use atelier_commands::worker::Worker;

pub use problem::{ApiError, FieldError, Problem};
pub use state::{AppState, HttpSettings};

/// Everything the application shares between its workers.
#[derive(Clone)]
pub struct Services {
    /// The contexts' state.
    pub app: web::Data<AppState>,
    /// Login and tokens.
    pub auth: web::Data<identity::auth::AuthState>,
    /// Health, readiness, status and metrics.
    pub platform: web::Data<platform::PlatformState>,
    /// The live feed's fan-out.
    pub live: web::Data<live::hub::Hub>,
    /// The contexts' background workers this server runs.
    pub workers: std::sync::Arc<tokio::sync::Mutex<Vec<Box<dyn Worker>>>>,
}

impl Services {
    /// Runs `worker` with these services (stopped by [`Services::stop_workers`]).
    pub async fn add_worker(&self, worker: Box<dyn Worker>) {
        tracing::info!(worker = worker.name(), "worker started");
        self.workers.lock().await.push(worker);
    }

    /// Stops every worker, the last started first.
    pub async fn stop_workers(&self) {
        let workers = std::mem::take(&mut *self.workers.lock().await);
        for worker in workers.into_iter().rev() {
            let name = worker.name();
            worker.stop().await;
            tracing::info!(worker = name, "worker stopped");
        }
    }
}

/// The application: every route, with the shared middleware (request ids and tracing, CORS, one
/// error shape, body limits).
pub fn app(
    services: Services,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let settings = services.app.settings.clone();
    App::new()
        .app_data(services.app.clone())
        .app_data(services.auth.clone())
        .app_data(services.platform.clone())
        .app_data(services.live.clone())
        .app_data(web::PayloadConfig::new(settings.body_limit))
        .wrap(from_fn(text::text_rule))
        .wrap(from_fn(problem::problem_fallback))
        .wrap(from_fn(middleware::protective_headers))
        .wrap(cors::cors(&settings.cors_origins))
        .wrap(from_fn(middleware::request_context))
        .configure(platform::configure)
        .configure(docs::configure)
        .configure(live::configure_ws)
        .service(
            contexts::ALL
                .iter()
                .fold(web::scope("/api/v1"), |scope, context| {
                    scope.configure(context.routes)
                })
                .configure(live::configure_sse)
                .configure(admin::configure),
        )
}
