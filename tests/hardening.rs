//! What an outside probe of the API found (issue "Hardening"), through real HTTP: each test is
//! a hole that was open.

mod common;

use std::time::Duration;

use atelier_http::identity::auth::PERSON_ONLY;
use atelier_http::identity::throttle::{LoginLimit, LoginLimits};
use common::{ADMIN, PASSWORD, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn login_as(app: &TestApp, username: &str, password: &str) -> (u16, Value) {
    send(
        app,
        Method::POST,
        "/api/v1/auth/login",
        &[],
        Some(json!({"username": username, "password": password})),
    )
    .await
}

/// A server whose login budget is `per_account` attempts per account (and plenty per IP).
async fn with_account_budget(per_account: u32) -> TestApp {
    let mut config = TestApp::config();
    let hour = Duration::from_secs(3600);
    config.auth.login_limits = LoginLimits {
        per_ip: LoginLimit {
            burst: 1000,
            period: hour,
        },
        per_account: LoginLimit {
            burst: per_account,
            period: hour,
        },
    };
    TestApp::spawn_with(config).await
}

async fn api_key(app: &TestApp, token: &str, scopes: &[&str]) -> String {
    let bearer = format!("Bearer {token}");
    let (status, key) = send(
        app,
        Method::POST,
        "/api/v1/api-keys",
        &[("authorization", &bearer)],
        Some(json!({"name": format!("key-{}", scopes.join("-")), "scopes": scopes})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn an_api_key_or_a_key_login_is_refused_everything_only_a_person_may_do() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let read = api_key(&app, &root, &["read"]).await;
    let admin = api_key(&app, &root, &["read", "write", "admin"]).await;
    let (status, tokens) = send(
        &app,
        Method::POST,
        "/api/v1/auth/login-key",
        &[("api-key", &admin)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let key_login = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    let some_id = uuid::Uuid::now_v7().to_string();
    for (method, pattern) in PERSON_ONLY {
        let path = pattern.replace("{id}", &some_id);
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body = json!({"current_password": PASSWORD, "new_password": "taken over!", "name": "k", "scopes": ["read"]});
        for headers in [
            [("api-key", read.as_str())],
            [("api-key", admin.as_str())],
            [("authorization", key_login.as_str())],
        ] {
            let (status, problem) =
                send(&app, method.clone(), &path, &headers, Some(body.clone())).await;
            assert_eq!(
                status, 403,
                "{method} {path} with {:?}: {problem}",
                headers[0].0
            );
            assert_eq!(problem["code"], "FORBIDDEN");
        }
    }
    // The password did not change: the superadmin still logs in with it.
    assert_eq!(login_as(&app, ADMIN, PASSWORD).await.0, 200);
    app.stop().await;
}

#[actix_web::test]
async fn wrong_current_passwords_count_against_the_login_budget_of_the_account() {
    let app = with_account_budget(3).await;
    let root = format!("Bearer {}", app.token().await);
    let guess = |n: u32| json!({"current_password": format!("guess number {n}"), "new_password": "a new password"});
    // The login above used one attempt; two wrong guesses use the rest.
    for n in 0..2 {
        let (status, problem) = send(
            &app,
            Method::POST,
            "/api/v1/auth/change-password",
            &[("authorization", &root)],
            Some(guess(n)),
        )
        .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["errors"][0]["field"], "current_password");
    }
    let (status, problem) = send(
        &app,
        Method::POST,
        "/api/v1/auth/change-password",
        &[("authorization", &root)],
        Some(guess(3)),
    )
    .await;
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["code"], "RATE_LIMITED");
    // The same budget: the right password does not log in either until it refills.
    assert_eq!(login_as(&app, ADMIN, PASSWORD).await.0, 429);
    app.stop().await;
}

#[actix_web::test]
async fn the_login_budget_is_the_accounts_whether_it_is_reached_by_username_or_email() {
    let app = with_account_budget(4).await;
    let root = format!("Bearer {}", app.token().await);
    let (status, user) = send(
        &app,
        Method::POST,
        "/api/v1/users",
        &[("authorization", &root)],
        Some(json!({"username": "carol", "email": "carol@example.com", "password": "carols password"})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    for name in ["carol", "CAROL", "carol@example.com", "Carol@Example.com"] {
        assert_eq!(
            login_as(&app, name, "not her password").await.0,
            401,
            "{name}"
        );
    }
    for name in ["carol", "carol@example.com"] {
        let (status, problem) = login_as(&app, name, "carols password").await;
        assert_eq!(status, 429, "{name}: {problem}");
    }
    // Another account's budget is its own.
    assert_eq!(login_as(&app, ADMIN, "not the password").await.0, 401);
    app.stop().await;
}

#[actix_web::test]
async fn windflows_login_rules_answer_alike_for_known_and_unknown_accounts() {
    let app = with_account_budget(2).await;
    for username in [ADMIN, "nobody-here"] {
        let (status, problem) = login_as(&app, username, "short").await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["code"], "VALIDATION_ERROR");
        assert_eq!(
            problem["errors"],
            json!([{"field": "password", "message": "must be at least 8 characters"}])
        );
    }
    let (status, problem) = login_as(&app, "ad", "long enough").await;
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["field"], "username");
    let (status, problem) = login_as(&app, &"a".repeat(51), "long enough").await;
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["field"], "username");
    // Refused input reached no account: its budget is whole.
    assert_eq!(login_as(&app, ADMIN, PASSWORD).await.0, 200);
    assert_eq!(login_as(&app, ADMIN, PASSWORD).await.0, 200);
    app.stop().await;
}

#[actix_web::test]
async fn a_lost_database_answers_503_with_retry_after_and_nothing_half_written() {
    let app = TestApp::spawn().await;
    let bearer = format!("Bearer {}", app.token().await);
    let project = json!({"name": "Outage", "repo": "https://example.com/outage.git"});
    app.db.disconnect().await.unwrap();
    for (method, body) in [(Method::GET, None), (Method::POST, Some(project.clone()))] {
        let mut req = app
            .client
            .request(method.clone(), app.url("/api/v1/projects"))
            .header("authorization", &bearer);
        if let Some(body) = &body {
            req = req.json(body);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 503, "{method}");
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)));
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "SERVICE_UNAVAILABLE", "{problem}");
    }
    app.db.reconnect().await.unwrap();
    // Back: the refused creation left nothing behind (its name is free).
    let (status, created) = send(
        &app,
        Method::POST,
        "/api/v1/projects",
        &[("authorization", &bearer)],
        Some(project),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    app.stop().await;
}

/// Every operation of the OpenAPI document, with a string holding U+0000 in each place it takes
/// text (each path parameter, each query parameter, each property of its JSON body): a 400
/// naming the field, never a 500. Generated from the document, so new endpoints are covered
/// the day they are documented.
#[actix_web::test]
async fn a_nul_character_anywhere_the_api_takes_text_is_a_400_naming_the_field_on_every_operation()
{
    let app = TestApp::spawn().await;
    let bearer = format!("Bearer {}", app.token().await);
    let doc = serde_json::to_value(atelier_http::docs::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(r) => schemas[r.rsplit('/').next().unwrap()].clone(),
            None => schema.clone(),
        }
    };
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: Vec<&str> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .filter(|name| template.contains(&format!("{{{name}}}")))
                .collect();
            let valid_path = in_path.iter().fold(template.clone(), |t, name| {
                t.replace(&format!("{{{name}}}"), &uuid::Uuid::now_v7().to_string())
            });
            let mut cases: Vec<(String, Option<Value>, String)> = Vec::new();
            for name in &in_path {
                let path = in_path.iter().fold(template.clone(), |t, other| {
                    let value = if other == name {
                        "a%00b".to_owned()
                    } else {
                        uuid::Uuid::now_v7().to_string()
                    };
                    t.replace(&format!("{{{other}}}"), &value)
                });
                cases.push((path, None, "path".to_owned()));
            }
            for p in params.iter().filter(|p| p["in"] == "query") {
                let name = p["name"].as_str().unwrap();
                cases.push((format!("{valid_path}?{name}=a%00b"), None, name.to_owned()));
            }
            let body = &op["requestBody"]["content"]["application/json"]["schema"];
            let body = resolve(body);
            if let Some(props) = body["properties"].as_object() {
                for name in props.keys() {
                    cases.push((
                        valid_path.clone(),
                        Some(json!({ name: "a\u{0}b" })),
                        name.clone(),
                    ));
                }
                let nested = json!({ "settings": { "key\u{0}": "v" } });
                cases.push((valid_path.clone(), Some(nested), "settings".to_owned()));
            }
            for (path, body, field) in cases {
                let mut req = app
                    .client
                    .request(method.clone(), app.url(&path))
                    .header("authorization", &bearer);
                if let Some(body) = &body {
                    req = req.json(body);
                }
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                let problem: Value = res.json().await.unwrap_or(Value::Null);
                assert_eq!(status, 400, "{method} {path} {body:?}: {problem}");
                assert_eq!(problem["code"], "VALIDATION_ERROR", "{method} {path}");
                assert_eq!(
                    problem["errors"][0]["field"],
                    field.as_str(),
                    "{method} {path} {body:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "only {checked} cases: is the document read?");
    // The NUL the probe sent as a login username, unauthenticated.
    let (status, problem) = login_as(&app, "ad\u{0}min", PASSWORD).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "username");
    app.stop().await;
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[actix_web::test]
async fn answers_carry_protective_headers_and_authenticated_ones_are_not_stored() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let docs = app.client.get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let csp = header(&docs, "content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(header(&docs, "x-frame-options").as_deref(), Some("DENY"));
    for res in [
        docs,
        app.client.get(app.url("/health")).send().await.unwrap(),
        app.client
            .get(app.url("/api/v1/projects"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        app.client
            .get(app.url("/api/v1/nowhere"))
            .send()
            .await
            .unwrap(),
    ] {
        let what = res.url().path().to_owned();
        assert_eq!(
            header(&res, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(
            header(&res, "referrer-policy").as_deref(),
            Some("no-referrer"),
            "{what}"
        );
        assert!(header(&res, "content-security-policy").is_some(), "{what}");
    }
    let list = app
        .client
        .get(app.url("/api/v1/projects"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&list, "cache-control").as_deref(), Some("no-store"));
    let refused = app
        .client
        .get(app.url("/api/v1/projects"))
        .header("api-key", "atk_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        header(&refused, "cache-control").as_deref(),
        Some("no-store")
    );
    app.stop().await;
}

#[actix_web::test]
async fn metrics_can_be_protected_by_a_configured_token() {
    let mut config = TestApp::config();
    config.metrics_token = Some("scrape-me-please".to_owned());
    let app = TestApp::spawn_with(config).await;
    let open = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(open.status(), 401);
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-me-pleasE")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let scraped = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-me-please")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("http_requests_total")
    );
    app.stop().await;
}

#[actix_web::test]
async fn an_access_token_never_outlives_its_session() {
    let mut config = TestApp::config();
    config.auth.access_ttl = Duration::from_secs(1800);
    config.auth.session_ttl = Duration::from_secs(60);
    let app = TestApp::spawn_with(config).await;
    let (status, tokens) = login_as(&app, ADMIN, PASSWORD).await;
    assert_eq!(status, 200);
    let expires_in = tokens["expires_in"].as_u64().unwrap();
    assert!((1..=60).contains(&expires_in), "{tokens}");
    let bearer = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    let (status, verified) = send(
        &app,
        Method::POST,
        "/api/v1/auth/verify",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(verified["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        expires_at <= chrono::Utc::now() + chrono::Duration::seconds(61),
        "{verified}"
    );
    app.stop().await;
}

async fn as_bearer(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    org: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(org) = org {
        headers.push(("x-organization-id", org));
    }
    send(app, method, path, &headers, body).await
}

/// WindFlow's flow: a superadmin creates a user, adds them to an organization; they log in and
/// work there, and nowhere else. Before, such a user joined `default`, where every such user
/// saw every other's projects, and kept acting there.
#[actix_web::test]
async fn a_new_user_belongs_to_no_organization_until_added_and_then_works_in_theirs() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let (_, me) = as_bearer(&app, &root, Method::GET, "/api/v1/auth/me", None, None).await;
    let default_org = me["organization_id"].as_str().unwrap().to_owned();
    let (status, dave) = as_bearer(
        &app,
        &root,
        Method::POST,
        "/api/v1/users",
        None,
        Some(
            json!({"username": "dave", "email": "dave@example.com", "password": "daves password"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{dave}");
    let dave_id = dave["id"].as_str().unwrap().to_owned();

    // In no organization: he logs in, is told where he acts (nowhere), and cannot work yet.
    let (status, tokens) = login_as(&app, "dave", "daves password").await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(
        tokens["user_info"]["organization_id"],
        Value::Null,
        "{tokens}"
    );
    assert_eq!(tokens["user_info"]["organizations"], json!([]));
    let alone = tokens["access_token"].as_str().unwrap().to_owned();
    let (status, problem) =
        as_bearer(&app, &alone, Method::GET, "/api/v1/projects", None, None).await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no organization"),
        "{problem}"
    );
    let (status, _) = as_bearer(
        &app,
        &alone,
        Method::GET,
        "/api/v1/projects",
        Some(&default_org),
        None,
    )
    .await;
    assert_eq!(
        status, 404,
        "the bootstrap organization is not a shared room"
    );

    // Added to Acme, he works there on his next login.
    let (status, acme) = as_bearer(
        &app,
        &root,
        Method::POST,
        "/api/v1/organizations",
        None,
        Some(json!({"name": "Acme"})),
    )
    .await;
    assert_eq!(status, 201, "{acme}");
    let acme_id = acme["id"].as_str().unwrap().to_owned();
    let (status, member) = as_bearer(
        &app,
        &root,
        Method::POST,
        &format!("/api/v1/organizations/{acme_id}/members"),
        None,
        Some(json!({"user_id": dave_id, "role": "member"})),
    )
    .await;
    assert!((200..300).contains(&status), "{member}");
    let (status, tokens) = login_as(&app, "dave", "daves password").await;
    assert_eq!(status, 200);
    assert_eq!(
        tokens["user_info"]["organization_id"],
        acme_id.as_str(),
        "{tokens}"
    );
    let dave_token = tokens["access_token"].as_str().unwrap().to_owned();
    let (status, project) = as_bearer(
        &app,
        &dave_token,
        Method::POST,
        "/api/v1/projects",
        None,
        Some(json!({"name": "DaveProj", "repo": "https://example.com/dave.git"})),
    )
    .await;
    assert_eq!(status, 201, "{project}");
    app.settle().await;
    let path = format!("/api/v1/projects/{}", project["id"].as_str().unwrap());
    let (status, _) = as_bearer(&app, &root, Method::GET, &path, Some(&acme_id), None).await;
    assert_eq!(status, 200, "the project is Acme's");
    let (status, _) = as_bearer(&app, &root, Method::GET, &path, Some(&default_org), None).await;
    assert_eq!(status, 404, "and not the default organization's");
    // In a second organization too, he chooses: per request, or with a default of his own.
    let (_, beta) = as_bearer(
        &app,
        &root,
        Method::POST,
        "/api/v1/organizations",
        None,
        Some(json!({"name": "Beta"})),
    )
    .await;
    let beta_id = beta["id"].as_str().unwrap().to_owned();
    let members = format!("/api/v1/organizations/{beta_id}/members");
    let (status, _) = as_bearer(
        &app,
        &root,
        Method::POST,
        &members,
        None,
        Some(json!({"user_id": dave_id, "role": "viewer"})),
    )
    .await;
    assert!((200..300).contains(&status));
    let (_, tokens) = login_as(&app, "dave", "daves password").await;
    assert_eq!(
        tokens["user_info"]["organization_id"],
        acme_id.as_str(),
        "his first organization stays his default: {tokens}"
    );
    let both = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        as_bearer(
            &app,
            &both,
            Method::GET,
            "/api/v1/projects",
            Some(&beta_id),
            None
        )
        .await
        .0,
        200
    );
    let me = format!("/api/v1/users/{dave_id}");
    let (status, problem) = as_bearer(
        &app,
        &both,
        Method::PUT,
        &me,
        None,
        Some(json!({"default_organization_id": default_org})),
    )
    .await;
    assert_eq!(status, 400, "not one of his: {problem}");
    assert_eq!(problem["errors"][0]["field"], "default_organization_id");
    let (status, body) = as_bearer(
        &app,
        &both,
        Method::PUT,
        &me,
        None,
        Some(json!({"default_organization_id": beta_id})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, tokens) = login_as(&app, "dave", "daves password").await;
    assert_eq!(
        tokens["user_info"]["organization_id"],
        beta_id.as_str(),
        "{tokens}"
    );
    let (status, _) = as_bearer(
        &app,
        &dave_token,
        Method::GET,
        "/api/v1/projects",
        Some(&default_org),
        None,
    )
    .await;
    assert_eq!(status, 404);
    app.stop().await;
}
