//! A real Atelier server on port 0 over a fresh database, for black-box tests.

#![allow(dead_code)]

pub mod process;

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
    pub services: atelier_http::Services,
    pub config: ServerConfig,
    pub db: TestDatabase,
}

impl TestApp {
    /// The configuration of [`TestApp::spawn`]: the test admin, and no build, deploy or
    /// operation runner.
    pub fn config() -> ServerConfig {
        ServerConfig {
            admin_username: ADMIN.to_owned(),
            admin_password: Some(PASSWORD.to_owned()),
            builds: None,
            deployments: None,
            venvs: atelier_http::server::VenvSettings {
                runner: None,
                ..Default::default()
            },
            ..ServerConfig::default()
        }
    }

    /// [`TestApp::config`] for tests that build from git repositories they create on this disk:
    /// local repositories allowed, as an operator allows them with `ATELIER_ALLOW_LOCAL_REPOS`.
    pub fn config_with_local_repos() -> ServerConfig {
        ServerConfig {
            repos: atelier_commands::factory::RepoPolicy::ALLOW_LOCAL,
            ..Self::config()
        }
    }

    /// Starts a server. Must run inside an actix system (`#[actix_web::test]`).
    pub async fn spawn() -> Self {
        Self::spawn_with(Self::config()).await
    }

    /// Starts a server with this configuration.
    pub async fn spawn_with(config: ServerConfig) -> Self {
        let db = TestDatabase::create().await.unwrap();
        let pool = db.pool(8).await.unwrap();
        let store = PgEventStore::with_pool(pool.clone(), PgConfig::new(&db.url));
        let shared: Arc<dyn EventStore> = Arc::new(store.clone());
        let (services, _) = start(pool.clone(), shared, config.clone()).await.unwrap();
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
            services,
            config,
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

    /// The position of the last event committed so far. Not the store's `head()`: that stops
    /// below any transaction still open anywhere, so it can lag behind writes already answered.
    pub async fn last_written(&self) -> Option<atelier_store::Position> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT commit, prepare FROM events ORDER BY commit DESC, prepare DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .unwrap();
        row.map(|(c, p)| atelier_store::Position::new(c as u64, p as u64))
    }

    /// Waits until every registered projection has passed every write so far (no sleeping:
    /// positions).
    pub async fn settle(&self) {
        if let Some(head) = self.last_written().await {
            for projection in atelier_projections::all() {
                self.projections
                    .wait_for(projection.name(), head, std::time::Duration::from_secs(20))
                    .await
                    .unwrap();
            }
        }
    }

    /// Waits (on the log itself, not on time) for an event of this type on this stream, then
    /// until every read model has it.
    pub async fn event_appended(&self, stream: &str, event_type: &str) {
        use atelier_store::{Filter, SubscribeFrom, SubscriptionMessage};
        use futures::StreamExt;
        let category = stream.split('-').next().unwrap_or(stream).to_owned();
        let mut sub = self
            .store
            .subscribe_all(SubscribeFrom::Start, Filter::Category(vec![category]));
        let wait = async {
            while let Some(m) = sub.next().await {
                if let SubscriptionMessage::Event(e) = m
                    && e.stream.as_str() == stream
                    && e.event_type == event_type
                {
                    return;
                }
            }
            panic!("the subscription ended");
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("no {event_type} on {stream}"));
        self.settle().await;
    }

    pub async fn stop(self) {
        self.services.stop_workers().await;
        self.services.live.close_all();
        self.server.stop(true).await;
    }
}

/// A bare repository `<mirror>/acme/site` holding an `index.html`.
pub fn site_repo(mirror: &std::path::Path, body: &str) -> std::path::PathBuf {
    let work = mirror.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("index.html"), body).unwrap();
    let git = |args: &[&str], dir: &std::path::Path| {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?} failed");
    };
    git(&["init", "--quiet", "--initial-branch=main"], &work);
    git(&["add", "index.html"], &work);
    git(
        &[
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "--quiet",
            "-m",
            "site",
        ],
        &work,
    );
    let bare = mirror.join("acme").join("site");
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    git(
        &[
            "clone",
            "--quiet",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
        mirror,
    );
    bare
}

/// A client of a test server, logged in as the test admin: requests with its token, and the
/// position of the last write for reads that must see it.
pub struct Client<'a> {
    pub app: &'a TestApp,
    pub token: String,
}

impl<'a> Client<'a> {
    /// Logs in.
    pub async fn new(app: &'a TestApp) -> Self {
        Self {
            token: app.token().await,
            app,
        }
    }

    /// Sends a request with the token (and a JSON body).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .app
            .client
            .request(method, self.app.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    /// Sends a request and reads its JSON answer, asserting its status.
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        status: reqwest::StatusCode,
    ) -> Value {
        let res = self.send(method, path, body).await;
        let got = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(got, status, "{path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// `min_position=` the last write, for a read that must see it.
    pub async fn seen(&self) -> String {
        match self.app.last_written().await {
            Some(head) => format!("min_position={head}"),
            None => String::new(),
        }
    }
}
