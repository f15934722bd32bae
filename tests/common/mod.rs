//! A real Atelier server on port 0 over a fresh database, for black-box tests.

#![allow(dead_code)]

use std::sync::Arc;

use atelier_http::server::{ServerConfig, start};
use atelier_projections::Registry;
use atelier_store::EventStore;
use atelier_store::postgres::{PgConfig, PgEventStore};
use atelier_store::testing::TestDatabase;
use serde_json::{Value, json};

pub const ADMIN: &str = "admin";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: PgEventStore,
    pub pool: sqlx::PgPool,
    pub projections: Registry,
    pub server: actix_web::dev::ServerHandle,
    pub db: TestDatabase,
}

impl TestApp {
    /// Starts a server. Must run inside an actix system (`#[actix_web::test]`).
    pub async fn spawn() -> Self {
        let db = TestDatabase::create().await.unwrap();
        let pool = db.pool(8).await.unwrap();
        let store = PgEventStore::with_pool(pool.clone(), PgConfig::new(&db.url));
        let config = ServerConfig {
            admin_username: ADMIN.to_owned(),
            admin_password: Some(PASSWORD.to_owned()),
            ..ServerConfig::default()
        };
        let shared: Arc<dyn EventStore> = Arc::new(store.clone());
        let (services, _) = start(pool.clone(), shared, config).await.unwrap();
        let projections = services.platform.projections.clone();
        let server = {
            let services = services.clone();
            actix_web::HttpServer::new(move || atelier_http::app(services.clone()))
                .workers(2)
                .bind(("127.0.0.1", 0))
                .unwrap()
        };
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            store,
            pool,
            projections,
            server: handle,
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn token(&self) -> String {
        let res = self
            .client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({ "username": ADMIN, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn stop(self) {
        self.server.stop(true).await;
    }
}
