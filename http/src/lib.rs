//! Atelier's HTTP surface, built on actix-web: routes per context, authentication, the RFC 9457
//! problem+json error shape, pagination, OpenAPI, WebSocket and SSE. Handlers turn requests into
//! commands (via `atelier-commands`) or queries (via `atelier-projections`); they hold no SQL and
//! no business rules.

use actix_web::{HttpResponse, Responder, get, web};

/// `GET /health`: liveness, answered without touching the database.
#[get("/health")]
pub async fn health() -> impl Responder {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "service": "atelier",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Registers every route served so far.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health);
}
