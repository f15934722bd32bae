//! Logins, sessions and access tokens over real HTTP: a server on a free port, a fresh database
//! per test. Tokens are checked by `POST /api/v1/auth/verify`, which needs a valid one.

use std::sync::Arc;

use atelier_commands::identity::{CredentialError, CredentialStore};
use atelier_http::server::{ServerConfig, start};
use atelier_store::EventStore;
use atelier_store::postgres::{PgConfig, PgEventStore};
use atelier_store::testing::TestDatabase;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "a test secret of at least thirty-two bytes";
const PASSWORD: &str = "correct horse battery staple";

struct Server {
    base: String,
    client: reqwest::Client,
    identity: CredentialStore,
    handle: actix_web::dev::ServerHandle,
    _db: TestDatabase,
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tune: impl FnOnce(&mut ServerConfig)) -> anyhow::Result<Self> {
        let db = TestDatabase::create().await?;
        let pool = db.pool(6).await?;
        let store: Arc<dyn EventStore> = Arc::new(PgEventStore::with_pool(
            pool.clone(),
            PgConfig::new(&db.url),
        ));
        let mut config = ServerConfig {
            jwt_secret: Some(SECRET.to_owned()),
            admin_password: Some(PASSWORD.to_owned()),
            admin_email: "root@example.com".to_owned(),
            builds: None,
            ..ServerConfig::default()
        };
        tune(&mut config);
        let (services, _) = start(pool.clone(), store, config)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let server = actix_web::HttpServer::new(move || atelier_http::app(services.clone()))
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
            identity: CredentialStore::new(pool),
            handle,
            _db: db,
        })
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?)
    }

    async fn login_raw(&self, body: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .post(format!("{}/api/v1/auth/login", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await?)
    }

    /// Logs in as the superadmin: the whole answer.
    async fn login(&self) -> anyhow::Result<Value> {
        let res = self
            .post(
                "/api/v1/auth/login",
                json!({"username": "admin", "password": PASSWORD}),
            )
            .await?;
        anyhow::ensure!(res.status() == StatusCode::OK, "login: {}", res.status());
        Ok(res.json().await?)
    }

    /// `POST /auth/verify` with this `Authorization` value.
    async fn verify(&self, authorization: Option<&str>) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .client
            .post(format!("{}/api/v1/auth/verify", self.base));
        if let Some(value) = authorization {
            req = req.header("authorization", value);
        }
        Ok(req.send().await?)
    }

    async fn verify_token(&self, token: &str) -> anyhow::Result<reqwest::Response> {
        self.verify(Some(&format!("Bearer {token}"))).await
    }

    async fn refresh_in_header(&self, refresh: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .post(format!("{}/api/v1/auth/refresh", self.base))
            .header("refresh-token", refresh)
            .send()
            .await?)
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a token of ours.
fn claims_of(token: &str) -> anyhow::Result<Value> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    Ok(jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )?
    .claims)
}

/// These claims, signed with `secret` and `alg`.
fn sign(alg: Algorithm, claims: &Value, secret: &[u8]) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret),
    )?)
}

fn token(body: &Value, name: &str) -> String {
    body[name].as_str().unwrap_or_default().to_owned()
}

/// Asserts a 401 problem with `WWW-Authenticate: Bearer` and this code; returns its detail.
async fn assert_unauthorized_with(res: reqwest::Response, code: &str) -> anyhow::Result<String> {
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_problem(res, code).await
}

async fn assert_unauthorized(res: reqwest::Response) -> anyhow::Result<String> {
    assert_unauthorized_with(res, "UNAUTHORIZED").await
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
async fn a_login_answers_an_access_token_a_refresh_token_and_who_logged_in() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let res = server
        .post(
            "/api/v1/auth/login",
            json!({"username": "ADMIN", "password": PASSWORD, "remember_me": true}),
        )
        .await?;
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
    assert_eq!(body["user_info"]["username"], "admin");
    assert_eq!(body["user_info"]["email"], "root@example.com");
    assert_eq!(body["user_info"]["is_superadmin"], true);
    let refresh = claims_of(&token(&body, "refresh_token"))?;
    let lifetime = refresh["exp"].as_i64().unwrap_or_default() - now();
    assert!(
        lifetime > 29 * 24 * 3600,
        "remember_me keeps 30 days: {lifetime}"
    );
    let res = server.verify_token(&token(&body, "access_token")).await?;
    assert_eq!(res.status(), StatusCode::OK);
    let verified: Value = res.json().await?;
    assert_eq!(verified["username"], "admin");
    assert_eq!(verified["valid"], true);
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_user_logs_in_with_their_email_address_whatever_its_case() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let res = server
        .post(
            "/api/v1/auth/login",
            json!({"username": "Root@Example.com", "password": PASSWORD}),
        )
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_later_bootstrap_changes_no_password() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let again = server
        .identity
        .bootstrap("admin", Some("another password"))
        .await?;
    assert!(!again.created);
    assert_eq!(again.generated_password, None);
    let refused = server
        .login_raw(r#"{"username": "admin", "password": "another password"}"#)
        .await?;
    assert_unauthorized(refused).await?;
    server.login().await?;
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_wrong_password_is_refused_like_an_unknown_user() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let wrong = server
        .login_raw(r#"{"username": "admin", "password": "not it at all"}"#)
        .await?;
    let wrong = assert_unauthorized(wrong).await?;
    let body = json!({ "username": "nobody", "password": PASSWORD }).to_string();
    let unknown = assert_unauthorized(server.login_raw(&body).await?).await?;
    assert_eq!(wrong, unknown);
    assert!(!wrong.contains("not it at all"));
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_malformed_body_or_a_missing_field_is_a_bad_request() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let res = server
        .login_raw(r#"{"username": "admin", "password":"#)
        .await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_problem(res, "BAD_REQUEST").await?;

    let res = server.login_raw("").await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let res = server.login_raw(r#"{"username": "admin"}"#).await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await?;
    assert_eq!(body["code"], "VALIDATION_ERROR");
    assert_eq!(body["errors"][0]["field"], "password");

    let res = server.login_raw(r#"["admin", "password"]"#).await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_protected_route_refuses_a_missing_or_garbage_token() -> anyhow::Result<()> {
    let server = Server::start().await?;
    assert_unauthorized(server.verify(None).await?).await?;
    for value in [
        "Bearer garbage",
        "Bearer ",
        "Bearer a.b.c",
        "Basic YWRtaW46YWRtaW4=",
        "garbage",
    ] {
        assert_unauthorized(server.verify(Some(value)).await?).await?;
    }
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_tampered_token_or_one_signed_with_another_secret_is_refused() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let access = token(&server.login().await?, "access_token");
    let claims = claims_of(&access)?;
    let forged = sign(Algorithm::HS256, &claims, &[7u8; 32])?;
    let detail = assert_unauthorized(server.verify_token(&forged).await?).await?;
    assert!(detail.contains("signature"), "{detail}");

    // The same signature over a payload that says something else.
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    let mut other = claims.clone();
    other["org"] = json!(uuid::Uuid::now_v7());
    let resigned = sign(
        Algorithm::HS256,
        &other,
        b"whatever secret, 32 bytes or more",
    )?;
    parts[1] = resigned.split('.').nth(1).unwrap_or_default().to_owned();
    let detail = assert_unauthorized(server.verify_token(&parts.join(".")).await?).await?;
    assert!(detail.contains("signature"), "{detail}");
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn an_expired_or_not_yet_valid_token_is_refused_and_the_leeway_is_five_seconds()
-> anyhow::Result<()> {
    let server = Server::start().await?;
    let claims = claims_of(&token(&server.login().await?, "access_token"))?;
    let with = |nbf: i64, exp: i64| {
        let mut c = claims.clone();
        c["nbf"] = json!(nbf);
        c["exp"] = json!(exp);
        sign(Algorithm::HS256, &c, SECRET.as_bytes())
    };
    let detail = assert_unauthorized(
        server
            .verify_token(&with(now() - 3600, now() - 60)?)
            .await?,
    )
    .await?;
    assert!(detail.contains("expired"), "{detail}");
    let detail = assert_unauthorized(
        server
            .verify_token(&with(now() + 600, now() + 1200)?)
            .await?,
    )
    .await?;
    assert!(detail.contains("not valid yet"), "{detail}");
    // Expiring this very second is within the leeway; the same claims are otherwise fine.
    let res = server.verify_token(&with(now() - 10, now())?).await?;
    assert_eq!(res.status(), StatusCode::OK);
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_token_with_another_algorithm_or_none_is_refused() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let real = token(&server.login().await?, "access_token");
    let claims = claims_of(&real)?;
    let other_alg = sign(Algorithm::HS512, &claims, SECRET.as_bytes())?;
    let detail = assert_unauthorized(server.verify_token(&other_alg).await?).await?;
    assert!(detail.contains("algorithm"), "{detail}");

    // `{"alg":"none","typ":"JWT"}` over a real token's claims, without a signature.
    let payload = real.split('.').nth(1).unwrap_or_default();
    for unsigned in [
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}"),
    ] {
        assert_unauthorized(server.verify_token(&unsigned).await?).await?;
    }
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_refresh_token_is_not_an_access_token_nor_the_reverse() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let body = server.login().await?;
    let detail =
        assert_unauthorized(server.verify_token(&token(&body, "refresh_token")).await?).await?;
    assert!(detail.contains("not an access token"), "{detail}");
    let detail = assert_unauthorized(
        server
            .refresh_in_header(&token(&body, "access_token"))
            .await?,
    )
    .await?;
    assert!(detail.contains("not a refresh token"), "{detail}");

    let mut untyped = claims_of(&token(&body, "access_token"))?;
    untyped.as_object_mut().map(|c| c.remove("typ"));
    let untyped = sign(Algorithm::HS256, &untyped, SECRET.as_bytes())?;
    assert_unauthorized(server.verify_token(&untyped).await?).await?;
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_refresh_rotates_the_tokens_in_the_header_or_the_body() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let first = server.login().await?;
    let res = server
        .refresh_in_header(&token(&first, "refresh_token"))
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await?;
    assert_ne!(
        token(&second, "refresh_token"),
        token(&first, "refresh_token")
    );
    assert_eq!(second["user_info"]["username"], "admin");
    let res = server
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": token(&second, "refresh_token")}),
        )
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let third: Value = res.json().await?;
    // Every access token of the session works while it lasts.
    for body in [&first, &second, &third] {
        let res = server.verify_token(&token(body, "access_token")).await?;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = server.post("/api/v1/auth/refresh", json!({})).await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_reused_refresh_token_ends_its_whole_session() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let first = server.login().await?;
    let other_session = server.login().await?;
    let res = server
        .refresh_in_header(&token(&first, "refresh_token"))
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await?;

    // The spent token again: a thief, or a replay.
    let res = server
        .refresh_in_header(&token(&first, "refresh_token"))
        .await?;
    assert_unauthorized_with(res, "REFRESH_TOKEN_REUSED").await?;
    // Everything of that session is void now, the legitimate holder's newest tokens too.
    assert_unauthorized(server.verify_token(&token(&second, "access_token")).await?).await?;
    assert_unauthorized(
        server
            .refresh_in_header(&token(&second, "refresh_token"))
            .await?,
    )
    .await?;
    // Another session of the same user is untouched.
    let res = server
        .verify_token(&token(&other_session, "access_token"))
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn a_logout_ends_the_session_on_the_next_request() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let body = server.login().await?;
    let access = token(&body, "access_token");
    assert_eq!(server.verify_token(&access).await?.status(), StatusCode::OK);
    let res = server
        .client
        .post(format!("{}/api/v1/auth/logout", server.base))
        .bearer_auth(&access)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let detail = assert_unauthorized(server.verify_token(&access).await?).await?;
    assert!(detail.contains("session has ended"), "{detail}");
    assert_unauthorized(
        server
            .refresh_in_header(&token(&body, "refresh_token"))
            .await?,
    )
    .await?;
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn repeated_logins_are_throttled_per_account_with_retry_after_even_with_the_right_password()
-> anyhow::Result<()> {
    let server = Server::start().await?;
    let limit = atelier_http::identity::throttle::LoginLimits::default()
        .per_account
        .burst;
    for _ in 0..limit {
        let res = server
            .login_raw(r#"{"username": "admin", "password": "a wrong guess"}"#)
            .await?;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = server
        .post(
            "/api/v1/auth/login",
            json!({"username": "Admin", "password": PASSWORD}),
        )
        .await?;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert_problem(res, "RATE_LIMITED").await?;
    // Another account from the same address still gets its answer.
    let res = server
        .login_raw(r#"{"username": "someone", "password": "a wrong guess"}"#)
        .await?;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn repeated_logins_from_one_address_are_throttled_across_accounts() -> anyhow::Result<()> {
    let server = Server::start_with(|c| {
        c.auth.login_limits.per_ip.burst = 3;
        c.auth.login_limits.per_ip.period = std::time::Duration::from_secs(3600);
    })
    .await?;
    for name in ["ann", "bea", "cid"] {
        let res = server
            .post(
                "/api/v1/auth/login",
                json!({"username": name, "password": "a wrong guess"}),
            )
            .await?;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = server
        .post(
            "/api/v1/auth/login",
            json!({"username": "admin", "password": PASSWORD}),
        )
        .await?;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    server.stop().await;
    Ok(())
}

#[actix_web::test]
async fn production_refuses_to_start_without_a_secret() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let identity = CredentialStore::new(db.pool(2).await?);
    let err = identity.jwt_secret(None, true).await.unwrap_err();
    assert!(matches!(err, CredentialError::MissingSecret));
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
    let identity = CredentialStore::new(db.pool(2).await?);
    for production in [false, true] {
        let short = identity
            .jwt_secret(Some("0123456789abcdef0123456789abcde"), production)
            .await;
        assert!(matches!(short, Err(CredentialError::WeakSecret)));
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
    let first = CredentialStore::new(db.pool(2).await?)
        .jwt_secret(None, false)
        .await?;
    assert!(first.len() >= 32);
    // Another server on the same database (a restart) agrees.
    let second = CredentialStore::new(db.pool(2).await?)
        .jwt_secret(None, false)
        .await?;
    assert_eq!(first, second);
    Ok(())
}
