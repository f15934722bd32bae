//! Platform endpoints (in progress).

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

/// Registers the platform routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health);
}
