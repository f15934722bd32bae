//! Login and access tokens over real HTTP: a server on a free port, a fresh database per test.

use std::time::Duration;

use actix_web::{App, HttpServer, web};
use atelier_commands::identity::{Identity, IdentityError};
use atelier_http::auth::{AuthState, Principal};
use atelier_store::testing::TestDatabase;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const THIRTY_MINUTES: Duration = Duration::from_secs(30 * 60);

/// A server with the login route and a protected `GET /whoami`, over a bootstrapped database.
struct Server {
    base: String,
    client: reqwest::Client,
    identity: Identity,
    secret: Vec<u8>,
    /// The superadmin's generated password.
    password: String,
    handle: actix_web::dev::ServerHandle,
    _db: TestDatabase,
}

async fn whoami(principal: Principal) -> String {
    principal.username
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        let db = TestDatabase::create().await?;
        let identity = Identity::new(db.pool(4).await?);
        let secret = identity.jwt_secret(None, false).await?;
        let bootstrap = identity.bootstrap("admin", None).await?;
        let password = bootstrap
            .generated_password
            .ok_or_else(|| anyhow::anyhow!("a first bootstrap without a password generates one"))?;
        let state = web::Data::new(AuthState::new(
            identity.clone(),
            memory_store(),
            &secret,
            THIRTY_MINUTES,
        ));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(atelier_http::auth::configure)
                .route("/whoami", web::get().to(whoami))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))?;
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Ok(Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            identity,
            secret,
            password,
            handle,
            _db: db,
        })
    }

    async fn login(&self, body: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .post(format!("{}/api/v1/auth/login", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await?)
    }

    async fn token(&self) -> anyhow::Result<String> {
        let body = json!({ "username": "admin", "password": self.password }).to_string();
        let res = self.login(&body).await?;
        anyhow::ensure!(
            res.status() == StatusCode::OK,
            "login failed: {}",
            res.status()
        );
        let body: Value = res.json().await?;
        Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
    }

    async fn whoami(&self, authorization: Option<&str>) -> anyhow::Result<reqwest::Response> {
        let mut req = self.client.get(format!("{}/whoami", self.base));
        if let Some(value) = authorization {
            req = req.header("authorization", value);
        }
        Ok(req.send().await?)
    }

    /// A token signed with this server's secret, with these claims and this algorithm.
    fn forge(&self, alg: Algorithm, claims: &Value) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(&self.secret),
        )?)
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a valid access token for someone.
fn claims() -> Value {
    json!({
        "sub": Uuid::now_v7(), "org": Uuid::now_v7(), "name": "mallory", "sa": true,
        "typ": "access", "iat": now(), "nbf": now(), "exp": now() + 600,
    })
}

/// Asserts a 401 `UNAUTHORIZED` problem with `WWW-Authenticate: Bearer`; returns its detail.
async fn assert_unauthorized(res: reqwest::Response) -> anyhow::Result<String> {
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_problem(res, "UNAUTHORIZED").await
}

/// Asserts a problem+json with this code; returns its detail.
async fn assert_problem(res: reqwest::Response, code: &str) -> anyhow::Result<String> {
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "{content_type}"
    );
    let body: Value = res.json().await?;
    assert_eq!(body["code"], code, "{body}");
    Ok(body["detail"].as_str().unwrap_or_default().to_owned())
}

#[actix_web::test]
async fn the_first_bootstrap_creates_the_admin_and_a_second_one_changes_nothing()
-> anyhow::Result<()> {
    let server = Server::start().await?;
    let again = server
        .identity
        .bootstrap("admin", Some("another password"))
        .await?;
    assert!(!again.created);
    assert_eq!(again.generated_password, None);
    assert_eq!(again.admin_username, "admin");
    let refused = server
        .login(r#"{"username": "admin", "password": "another password"}"#)
        .await?;
    assert_unauthorized(refused).await?;
    server.token().await?;
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn the_right_password_gets_a_bearer_token_that_opens_a_protected_route() -> anyhow::Result<()>
{
    let server = Server::start().await?;
    let body = json!({ "username": "ADMIN", "password": server.password }).to_string();
    let res = server.login(&body).await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body: Value = res.json().await?;
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1800);
    let token = body["access_token"].as_str().unwrap_or_default();
    let res = server.whoami(Some(&format!("Bearer {token}"))).await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await?, "admin");
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_wrong_password_is_refused_like_an_unknown_user() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let wrong = server
        .login(r#"{"username": "admin", "password": "not it"}"#)
        .await?;
    let wrong = assert_unauthorized(wrong).await?;
    let body = json!({ "username": "nobody", "password": server.password }).to_string();
    let unknown = assert_unauthorized(server.login(&body).await?).await?;
    assert_eq!(wrong, unknown);
    assert!(!wrong.contains("not it"));
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_malformed_body_or_a_missing_field_is_a_bad_request() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let res = server.login(r#"{"username": "admin", "password":"#).await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_problem(res, "BAD_REQUEST").await?;

    let res = server.login("").await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_problem(res, "BAD_REQUEST").await?;

    let res = server.login(r#"{"username": "admin"}"#).await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await?;
    assert_eq!(body["code"], "VALIDATION_ERROR");
    assert_eq!(body["errors"][0]["field"], "password");

    let res = server.login(r#"{"username": 1, "password": ""}"#).await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await?;
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(2), "{body}");

    let res = server.login(r#"["admin", "password"]"#).await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_protected_route_refuses_a_missing_or_garbage_token() -> anyhow::Result<()> {
    let server = Server::start().await?;
    assert_unauthorized(server.whoami(None).await?).await?;
    for value in [
        "Bearer garbage",
        "Bearer ",
        "Bearer a.b.c",
        "Basic YWRtaW46YWRtaW4=",
        "garbage",
    ] {
        assert_unauthorized(server.whoami(Some(value)).await?).await?;
    }
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_token_signed_with_another_secret_is_refused() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let other = AuthState::new(
        server.identity.clone(),
        memory_store(),
        &[7u8; 32],
        THIRTY_MINUTES,
    );
    let user = server
        .identity
        .authenticate("admin", &server.password)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the admin authenticates"))?;
    let token = other
        .issue(&user, None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let detail =
        assert_unauthorized(server.whoami(Some(&format!("Bearer {token}"))).await?).await?;
    assert!(detail.contains("signature"), "{detail}");
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn an_expired_or_not_yet_valid_token_is_refused() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut expired = claims();
    expired["iat"] = json!(now() - 3600);
    expired["nbf"] = json!(now() - 3600);
    expired["exp"] = json!(now() - 60);
    let token = server.forge(Algorithm::HS256, &expired)?;
    let detail =
        assert_unauthorized(server.whoami(Some(&format!("Bearer {token}"))).await?).await?;
    assert!(detail.contains("expired"), "{detail}");

    let mut early = claims();
    early["nbf"] = json!(now() + 600);
    let token = server.forge(Algorithm::HS256, &early)?;
    assert_unauthorized(server.whoami(Some(&format!("Bearer {token}"))).await?).await?;

    // The forged claims themselves are fine: only the times made them fail.
    let token = server.forge(Algorithm::HS256, &claims())?;
    let res = server.whoami(Some(&format!("Bearer {token}"))).await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await?, "mallory");
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_token_that_expires_now_is_accepted_within_the_leeway() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let no_ttl = AuthState::new(
        server.identity.clone(),
        memory_store(),
        &server.secret,
        Duration::ZERO,
    );
    let user = server
        .identity
        .authenticate("admin", &server.password)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the admin authenticates"))?;
    let token = no_ttl
        .issue(&user, None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let res = server.whoami(Some(&format!("Bearer {token}"))).await?;
    assert_eq!(res.status(), StatusCode::OK);
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_token_with_another_algorithm_or_none_is_refused() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let token = server.forge(Algorithm::HS512, &claims())?;
    assert_unauthorized(server.whoami(Some(&format!("Bearer {token}"))).await?).await?;

    // `{"alg":"none","typ":"JWT"}` over a real token's claims, without a signature.
    let real = server.token().await?;
    let payload = real.split('.').nth(1).unwrap_or_default();
    for unsigned in [
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}"),
    ] {
        assert_unauthorized(server.whoami(Some(&format!("Bearer {unsigned}"))).await?).await?;
    }
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_refresh_token_is_not_an_access_token() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut refresh = claims();
    refresh["typ"] = json!("refresh");
    let token = server.forge(Algorithm::HS256, &refresh)?;
    let detail =
        assert_unauthorized(server.whoami(Some(&format!("Bearer {token}"))).await?).await?;
    assert!(detail.contains("not an access token"), "{detail}");

    let mut untyped = claims();
    untyped.as_object_mut().map(|c| c.remove("typ"));
    let token = server.forge(Algorithm::HS256, &untyped)?;
    assert_unauthorized(server.whoami(Some(&format!("Bearer {token}"))).await?).await?;
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn production_refuses_to_start_without_a_secret() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let identity = Identity::new(db.pool(2).await?);
    let err = identity.jwt_secret(None, true).await.unwrap_err();
    assert!(matches!(err, IdentityError::MissingSecret));
    assert!(err.to_string().contains("ATELIER_JWT_SECRET"));
    let stored: Option<String> =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'jwt_secret'")
            .fetch_optional(&db.pool(1).await?)
            .await?;
    assert_eq!(stored, None, "production never generates a secret");
    Ok(())
}

#[actix_web::test]
async fn a_secret_shorter_than_32_bytes_is_refused_in_every_mode() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let identity = Identity::new(db.pool(2).await?);
    for production in [false, true] {
        let short = identity
            .jwt_secret(Some("0123456789abcdef0123456789abcde"), production)
            .await;
        assert!(matches!(short, Err(IdentityError::WeakSecret)));
        let enough = identity
            .jwt_secret(Some("0123456789abcdef0123456789abcdef"), production)
            .await?;
        assert_eq!(enough, b"0123456789abcdef0123456789abcdef");
    }
    Ok(())
}

#[actix_web::test]
async fn development_generates_a_secret_once_and_returns_it_again() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let first = Identity::new(db.pool(2).await?)
        .jwt_secret(None, false)
        .await?;
    assert!(first.len() >= 32);
    // Another server on the same database (a restart) agrees.
    let second = Identity::new(db.pool(2).await?)
        .jwt_secret(None, false)
        .await?;
    assert_eq!(first, second);
    Ok(())
}

/// A store with no organization in it: logins carry no role (the superadmin needs none).
fn memory_store() -> std::sync::Arc<dyn atelier_store::EventStore> {
    std::sync::Arc::new(atelier_store::memory::MemoryEventStore::new())
}
