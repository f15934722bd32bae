//! Tenancy and authorization through real HTTP: which organization a request acts in
//! (`X-Organization-Id`, an API key's, the user's default), what each role may do there, that
//! another organization's resources are 404s, and that revocations count from the next request.

mod common;

use common::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

/// Credentials to call with.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    Key(&'a str),
}

async fn call(
    app: &TestApp,
    auth: Auth<'_>,
    method: Method,
    path: &str,
    org: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path));
    req = match auth {
        Auth::Bearer(token) => req.bearer_auth(token),
        Auth::Key(key) => req.header("api-key", key),
    };
    if let Some(org) = org {
        req = req.header("x-organization-id", org);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Someone calling: their credentials, and the organization they name, if any.
#[derive(Clone, Copy)]
struct Caller<'a> {
    app: &'a TestApp,
    auth: Auth<'a>,
    org: Option<&'a str>,
}

fn bearer<'a>(app: &'a TestApp, token: &'a str) -> Caller<'a> {
    Caller {
        app,
        auth: Auth::Bearer(token),
        org: None,
    }
}

fn key<'a>(app: &'a TestApp, key: &'a str) -> Caller<'a> {
    Caller {
        app,
        auth: Auth::Key(key),
        org: None,
    }
}

impl<'a> Caller<'a> {
    /// Naming this organization (`X-Organization-Id`).
    fn in_org(self, org: &'a str) -> Self {
        self.with_org(Some(org))
    }

    fn with_org(self, org: Option<&'a str>) -> Self {
        Caller { org, ..self }
    }

    async fn send(self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        call(self.app, self.auth, method, path, self.org, body).await
    }

    async fn get(self, path: &str) -> (u16, Value) {
        self.send(Method::GET, path, None).await
    }

    async fn post(self, path: &str, body: Value) -> (u16, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn put(self, path: &str, body: Value) -> (u16, Value) {
        self.send(Method::PUT, path, Some(body)).await
    }

    async fn delete(self, path: &str) -> (u16, Value) {
        self.send(Method::DELETE, path, None).await
    }
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let (status, body) = bearer(app, token).post(path, body).await;
    assert!((200..300).contains(&status), "POST {path}: {status} {body}");
    body
}

async fn login(app: &TestApp, username: &str) -> String {
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": username, "password": "long enough"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "login of {username}");
    res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Creates a user in an organization with a role, and returns their id.
async fn user(app: &TestApp, root: &str, name: &str, org: &str, role: &str) -> String {
    let body = post(
        app,
        root,
        "/api/v1/users",
        json!({"username": name, "email": format!("{name}@example.com"),
               "password": "long enough", "organization_id": org, "role": role}),
    )
    .await;
    body["id"].as_str().unwrap().to_owned()
}

async fn settle_identity(app: &TestApp) {
    app.settle().await;
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// An operation of the table: a method, a path in the organization under test, a body, the
/// least role that may do it, and what it answers then.
struct Operation {
    method: Method,
    path: String,
    body: Option<Value>,
    least: &'static str,
    ok: u16,
    /// Whether the path names the organization's resource itself (`/organizations/{id}`…):
    /// then another organization's is a 404 with or without `X-Organization-Id`.
    names_org: bool,
}

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 1,
        "member" => 2,
        "admin" => 3,
        "owner" => 4,
        _ => 0,
    }
}

/// The operations on one organization's resources (`org`, its project `project`, its camera
/// and a detection of it).
fn operations(
    org: &str,
    project: &str,
    sentinel: &Sentinel,
    extra_user: &str,
    n: &mut u32,
) -> Vec<Operation> {
    let Sentinel { camera, detection } = sentinel;
    *n += 1;
    let op = |method: Method, path: String, body: Option<Value>, least, ok, names_org| Operation {
        method,
        path,
        body,
        least,
        ok,
        names_org,
    };
    vec![
        op(
            Method::GET,
            "/api/v1/projects".into(),
            None,
            "viewer",
            200,
            false,
        ),
        op(
            Method::GET,
            format!("/api/v1/projects/{project}"),
            None,
            "viewer",
            200,
            false,
        ),
        op(
            Method::GET,
            format!("/api/v1/projects/{project}/builds"),
            None,
            "viewer",
            200,
            false,
        ),
        op(
            Method::POST,
            "/api/v1/projects".into(),
            Some(json!({"name": format!("made-{n}"), "repo": "https://example.com/m.git"})),
            "member",
            201,
            false,
        ),
        op(
            Method::PUT,
            format!("/api/v1/projects/{project}"),
            Some(json!({"name": "app", "repo": "https://example.com/a.git"})),
            "member",
            200,
            false,
        ),
        op(
            Method::POST,
            format!("/api/v1/projects/{project}/build"),
            Some(json!({})),
            "member",
            202,
            false,
        ),
        op(
            Method::GET,
            format!("/api/v1/organizations/{org}"),
            None,
            "viewer",
            200,
            true,
        ),
        op(
            Method::GET,
            format!("/api/v1/organizations/{org}/members"),
            None,
            "viewer",
            200,
            true,
        ),
        op(
            Method::POST,
            format!("/api/v1/organizations/{org}/members"),
            Some(json!({"user_id": extra_user, "role": "viewer"})),
            "admin",
            200,
            true,
        ),
        op(
            Method::GET,
            "/api/v1/api-keys".into(),
            None,
            "admin",
            200,
            false,
        ),
        op(
            Method::POST,
            "/api/v1/api-keys".into(),
            Some(json!({"name": format!("key-{n}"), "scopes": ["read"]})),
            "admin",
            201,
            false,
        ),
        op(
            Method::GET,
            "/api/v1/users".into(),
            None,
            "admin",
            200,
            false,
        ),
        op(
            Method::GET,
            "/api/v1/cameras".into(),
            None,
            "viewer",
            200,
            false,
        ),
        op(
            Method::GET,
            format!("/api/v1/cameras/{camera}/stats"),
            None,
            "viewer",
            200,
            false,
        ),
        op(
            Method::POST,
            "/api/v1/cameras".into(),
            Some(json!({"name": format!("cam-{n}"), "url": "synthetic://testsrc"})),
            "member",
            201,
            false,
        ),
        op(
            Method::PUT,
            format!("/api/v1/cameras/{camera}"),
            Some(json!({"location": format!("hall {n}")})),
            "member",
            200,
            false,
        ),
        op(
            Method::GET,
            format!("/api/v1/detections/{detection}"),
            None,
            "viewer",
            200,
            false,
        ),
        op(
            Method::POST,
            format!("/api/v1/detections/{detection}/acknowledge"),
            None,
            "member",
            200,
            false,
        ),
    ]
}

/// A camera of an organization and a detection of it.
struct Sentinel {
    camera: String,
    detection: String,
}

#[actix_web::test]
async fn every_endpoint_answers_each_role_in_its_own_organization_and_404_in_another() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let alpha = id(&post(
        &app,
        &root,
        "/api/v1/organizations",
        json!({"name": "Alpha"}),
    )
    .await);
    let beta = id(&post(
        &app,
        &root,
        "/api/v1/organizations",
        json!({"name": "Beta"}),
    )
    .await);
    let extra = user(&app, &root, "extra", &alpha, "viewer").await;
    let _ = post(
        &app,
        &root,
        &format!("/api/v1/organizations/{beta}/members"),
        json!({"user_id": extra, "role": "viewer"}),
    )
    .await;
    let mut tokens = Vec::new();
    for role in ["owner", "admin", "member", "viewer"] {
        let name = format!("an-{role}");
        user(&app, &root, &name, &alpha, role).await;
        tokens.push((role, login(&app, &name).await));
    }
    // A project, a camera and a detection in each organization, made by the superadmin acting
    // there.
    let mut projects = Vec::new();
    let mut sentinels = Vec::new();
    for org in [&alpha, &beta] {
        let (status, camera) = bearer(&app, &root)
            .in_org(org)
            .post(
                "/api/v1/cameras",
                json!({"name": "door", "url": "synthetic://testsrc"}),
            )
            .await;
        assert_eq!(status, 201, "{camera}");
        let (status, detection) = bearer(&app, &root)
            .in_org(org)
            .post(
                "/api/v1/detections",
                json!({"camera_id": id(&camera), "type": "person", "confidence": 0.9}),
            )
            .await;
        assert_eq!(status, 201, "{detection}");
        sentinels.push(Sentinel {
            camera: id(&camera),
            detection: id(&detection),
        });
        let (status, made) = bearer(&app, &root)
            .in_org(org)
            .post(
                "/api/v1/projects",
                json!({"name": "app", "repo": "https://example.com/a.git"}),
            )
            .await;
        assert_eq!(status, 201, "{made}");
        projects.push(id(&made));
    }
    app.settle().await;
    settle_identity(&app).await;

    let mut n = 0;
    let mut checked = 0;
    for (role, token) in &tokens {
        // Their own organization: allowed from the least role up, 403 below it. Alpha is
        // their only organization, so it is their default: no header needed.
        for op in operations(&alpha, &projects[0], &sentinels[0], &extra, &mut n) {
            let (status, body) = bearer(&app, token)
                .send(op.method.clone(), &op.path, op.body.clone())
                .await;
            let expected = if rank(role) >= rank(op.least) {
                op.ok
            } else {
                403
            };
            assert_eq!(
                status, expected,
                "{role} {} {} in their own organization: {body}",
                op.method, op.path
            );
            checked += 1;
        }
        // Another organization: a 404, whether they name it or reach for its resources.
        for op in operations(&beta, &projects[1], &sentinels[1], &extra, &mut n) {
            for header in [None, Some(beta.as_str())] {
                let names_resource = op.path.contains(&projects[1])
                    || op.path.contains(&sentinels[1].camera)
                    || op.path.contains(&sentinels[1].detection);
                if header.is_none() && !op.names_org && !names_resource {
                    // Without the header, an organization-wide path is their own organization's.
                    continue;
                }
                let (status, body) = bearer(&app, token)
                    .with_org(header)
                    .send(op.method.clone(), &op.path, op.body.clone())
                    .await;
                // Acting in their own organization, a role too low for the operation is refused
                // before anything is looked up (a 403 that says nothing of the other
                // organization); otherwise, or when naming the other organization, a 404.
                let expected = if header.is_none() && !op.names_org && rank(role) < rank(op.least) {
                    403
                } else {
                    404
                };
                assert_eq!(
                    status, expected,
                    "{role} {} {} in another organization (header {header:?}): {body}",
                    op.method, op.path
                );
                checked += 1;
            }
        }
    }
    // The superadmin crosses organizations by naming them.
    for (org, project, sentinel) in [
        (&alpha, &projects[0], &sentinels[0]),
        (&beta, &projects[1], &sentinels[1]),
    ] {
        for op in operations(org, project, sentinel, &extra, &mut n) {
            let (status, body) = bearer(&app, &root)
                .in_org(org)
                .send(op.method.clone(), &op.path, op.body.clone())
                .await;
            assert_eq!(
                status, op.ok,
                "superadmin {} {}: {body}",
                op.method, op.path
            );
            checked += 1;
        }
    }
    // Only an owner deletes the organization (If-Match on an old revision: authorized, then 412,
    // so nothing is deleted); another organization is not found.
    for (role, token) in &tokens {
        for (org, expected) in [
            (&alpha, if *role == "owner" { 412 } else { 403 }),
            (&beta, 404),
        ] {
            let res = app
                .client
                .delete(app.url(&format!("/api/v1/organizations/{org}")))
                .bearer_auth(token)
                .header("if-match", "\"0\"")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), expected, "{role} deletes {org}");
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked} checks");
    app.stop().await;
}

#[actix_web::test]
async fn a_member_of_two_organizations_picks_one_with_x_organization_id() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let beta = id(&post(
        &app,
        &root,
        "/api/v1/organizations",
        json!({"name": "Beta"}),
    )
    .await);
    let default_org = {
        let (_, me) = bearer(&app, &root).get("/api/v1/auth/me").await;
        me["organization_id"].as_str().unwrap().to_owned()
    };
    let ada = user(&app, &root, "ada", &default_org, "member").await;
    post(
        &app,
        &root,
        &format!("/api/v1/organizations/{beta}/members"),
        json!({"user_id": ada, "role": "viewer"}),
    )
    .await;
    let token = login(&app, "ada").await;
    let project = Some(json!({"name": "p", "repo": "https://example.com/p.git"}));
    // A member in the default organization, a viewer in Beta.
    let (status, _) = bearer(&app, &token)
        .send(Method::POST, "/api/v1/projects", project.clone())
        .await;
    assert_eq!(status, 201);
    let (status, body) = bearer(&app, &token)
        .in_org(&beta)
        .send(Method::POST, "/api/v1/projects", project.clone())
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, me) = bearer(&app, &token)
        .in_org(&beta)
        .get("/api/v1/auth/me")
        .await;
    assert_eq!(status, 200);
    assert_eq!(me["organization_id"], beta.as_str());
    assert_eq!(me["role"], "viewer");
    // A malformed header is a 400; an organization that does not exist, a 404.
    let (status, _) = bearer(&app, &token)
        .in_org("not-a-uuid")
        .get("/api/v1/projects")
        .await;
    assert_eq!(status, 400);
    let (status, _) = bearer(&app, &token)
        .in_org(&uuid::Uuid::now_v7().to_string())
        .get("/api/v1/projects")
        .await;
    assert_eq!(status, 404);
    // Removed from Beta: the same token is refused there on the next request.
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/organizations/{beta}/members/{ada}")))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (status, _) = bearer(&app, &token)
        .in_org(&beta)
        .get("/api/v1/projects")
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[actix_web::test]
async fn a_role_change_a_deactivation_and_a_password_change_count_from_the_next_request() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let (_, me) = bearer(&app, &root).get("/api/v1/auth/me").await;
    let org = me["organization_id"].as_str().unwrap().to_owned();
    let bo = user(&app, &root, "bob", &org, "member").await;
    let token = login(&app, "bob").await;
    let other_session = login(&app, "bob").await;
    let project = || {
        Some(
            json!({"name": format!("p-{}", uuid::Uuid::now_v7().simple()), "repo": "https://example.com/p.git"}),
        )
    };
    assert_eq!(
        bearer(&app, &token)
            .send(Method::POST, "/api/v1/projects", project())
            .await
            .0,
        201
    );
    // Demoted to viewer: no more writes with the same token.
    post(
        &app,
        &root,
        &format!("/api/v1/organizations/{org}/members"),
        json!({"user_id": bo, "role": "viewer"}),
    )
    .await;
    assert_eq!(
        bearer(&app, &token)
            .send(Method::POST, "/api/v1/projects", project())
            .await
            .0,
        403
    );
    assert_eq!(bearer(&app, &token).get("/api/v1/projects").await.0, 200);
    // A password change ends every session of the user.
    let (status, _) = bearer(&app, &token)
        .post(
            "/api/v1/auth/change-password",
            json!({"current_password": "long enough", "new_password": "longer still"}),
        )
        .await;
    assert_eq!(status, 204);
    for t in [&token, &other_session] {
        let (status, body) = bearer(&app, t).get("/api/v1/projects").await;
        assert_eq!(status, 401, "{body}");
    }
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "bob", "password": "longer still"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Deactivated by a superadmin: refused at once, and at login.
    let (status, _) = bearer(&app, &root)
        .delete(&format!("/api/v1/users/{bo}"))
        .await;
    assert_eq!(status, 204);
    let (status, body) = bearer(&app, &token).get("/api/v1/projects").await;
    assert_eq!(status, 401, "{body}");
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "bob", "password": "longer still"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    app.stop().await;
}

#[actix_web::test]
async fn an_api_key_is_shown_once_acts_within_its_scopes_and_stops_when_revoked() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let (_, me) = bearer(&app, &root).get("/api/v1/auth/me").await;
    let org = me["organization_id"].as_str().unwrap().to_owned();
    let beta = id(&post(
        &app,
        &root,
        "/api/v1/organizations",
        json!({"name": "Beta"}),
    )
    .await);
    user(&app, &root, "ivy", &org, "member").await;
    let ivy = login(&app, "ivy").await;

    // Members do not manage keys; admins do, and the key is in the answer only once.
    let body = json!({"name": "ci", "scopes": ["read"]});
    let (status, _) = bearer(&app, &ivy)
        .post("/api/v1/api-keys", body.clone())
        .await;
    assert_eq!(status, 403);
    let read = post(&app, &root, "/api/v1/api-keys", body).await;
    let read_key = read["key"].as_str().unwrap().to_owned();
    assert!(read_key.starts_with("atk_"), "{read}");
    let write = post(
        &app,
        &root,
        "/api/v1/api-keys",
        json!({"name": "deployer", "scopes": ["write"]}),
    )
    .await;
    let write_key = write["key"].as_str().unwrap().to_owned();
    settle_identity(&app).await;
    let (status, list) = bearer(&app, &root).get("/api/v1/api-keys").await;
    assert_eq!(status, 200);
    assert_eq!(list["pagination"]["total"], 2);
    assert!(
        !list.to_string().contains(&read_key[12..]),
        "a list never shows a key"
    );
    assert!(list["data"][0].get("key").is_none());

    // Bad fields are named.
    let (status, problem) = bearer(&app, &root)
        .post("/api/v1/api-keys", json!({"name": "x", "scopes": ["root"]}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["field"], "scopes");
    let (status, _) = bearer(&app, &root)
        .post(
            "/api/v1/api-keys",
            json!({"name": "old", "scopes": ["read"], "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 400);

    // A read key reads, and may not write; a write key writes.
    let project = Some(json!({"name": "keyed", "repo": "https://example.com/k.git"}));
    assert_eq!(key(&app, &read_key).get("/api/v1/projects").await.0, 200);
    let (status, problem) = key(&app, &read_key)
        .send(Method::POST, "/api/v1/projects", project.clone())
        .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(
        key(&app, &write_key)
            .send(Method::POST, "/api/v1/projects", project)
            .await
            .0,
        201
    );
    // A key acts in its organization only (its creator, the superadmin, sees two), and never
    // manages keys.
    let (status, orgs) = key(&app, &read_key).get("/api/v1/organizations").await;
    assert_eq!(status, 200);
    assert_eq!(orgs["pagination"]["total"], 1, "{orgs}");
    assert_eq!(orgs["data"][0]["id"], org.as_str());
    assert_eq!(
        key(&app, &read_key)
            .in_org(&beta)
            .get("/api/v1/projects")
            .await
            .0,
        404
    );
    assert_eq!(
        key(&app, &write_key)
            .get(&format!("/api/v1/organizations/{beta}"))
            .await
            .0,
        404
    );
    let (status, _) = key(&app, &write_key)
        .post(
            "/api/v1/api-keys",
            json!({"name": "more", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(status, 403);
    // A wrong or malformed key is a 401.
    let wrong = format!("{}{}", &read_key[..read_key.len() - 4], "0000");
    assert_eq!(key(&app, &wrong).get("/api/v1/projects").await.0, 401);
    assert_eq!(
        key(&app, "atk_nonsense").get("/api/v1/projects").await.0,
        401
    );

    // Login with the key (WindFlow's login-key) answers tokens acting as the key.
    let res = app
        .client
        .post(app.url("/api/v1/auth/login-key"))
        .header("api-key", &read_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    let key_token = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        bearer(&app, &key_token).get("/api/v1/projects").await.0,
        200
    );
    assert_eq!(
        bearer(&app, &key_token)
            .post(
                "/api/v1/projects",
                json!({"name": "nope", "repo": "https://example.com/n.git"})
            )
            .await
            .0,
        403
    );

    // Revoked: the key and the tokens of its login stop at once; another organization's admin
    // cannot revoke it (404).
    let beta_owner_id = user(&app, &root, "olga", &beta, "owner").await;
    let _ = beta_owner_id;
    let olga = login(&app, "olga").await;
    let key_id = id(&read);
    let path = format!("/api/v1/api-keys/{key_id}");
    assert_eq!(bearer(&app, &olga).delete(&path).await.0, 404);
    assert_eq!(key(&app, &read_key).get("/api/v1/projects").await.0, 200);
    assert_eq!(bearer(&app, &root).delete(&path).await.0, 204);
    assert_eq!(key(&app, &read_key).get("/api/v1/projects").await.0, 401);
    assert_eq!(
        bearer(&app, &key_token).get("/api/v1/projects").await.0,
        401
    );
    let res = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("refresh-token", tokens["refresh_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .client
        .post(app.url("/api/v1/auth/login-key"))
        .header("api-key", &read_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // The write key still works.
    assert_eq!(key(&app, &write_key).get("/api/v1/projects").await.0, 200);
    app.stop().await;
}

#[actix_web::test]
async fn users_are_listed_read_and_changed_by_those_allowed_to() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let (_, me) = bearer(&app, &root).get("/api/v1/auth/me").await;
    let org = me["organization_id"].as_str().unwrap().to_owned();
    let beta = id(&post(
        &app,
        &root,
        "/api/v1/organizations",
        json!({"name": "Beta"}),
    )
    .await);
    let amy = user(&app, &root, "amy", &org, "admin").await;
    let ben = user(&app, &root, "ben", &org, "member").await;
    let cid = user(&app, &root, "cid", &beta, "member").await;
    settle_identity(&app).await;
    let amy_token = login(&app, "amy").await;
    let ben_token = login(&app, "ben").await;

    // The superadmin lists everyone; an admin, the members of their organization; a member no one.
    let (status, all) = bearer(&app, &root).get("/api/v1/users?per_page=100").await;
    assert_eq!(status, 200);
    assert_eq!(all["pagination"]["total"], 4);
    let (status, in_beta) = bearer(&app, &root)
        .get(&format!("/api/v1/users?organization_id={beta}"))
        .await;
    assert_eq!(status, 200);
    let names: Vec<_> = in_beta["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("admin"), json!("cid")],
        "Beta's creator and cid"
    );
    let (status, mine) = bearer(&app, &amy_token).get("/api/v1/users?search=b").await;
    assert_eq!(status, 200, "{mine}");
    let names: Vec<_> = mine["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].clone())
        .collect();
    assert_eq!(names, [json!("ben")]);
    assert_eq!(bearer(&app, &ben_token).get("/api/v1/users").await.0, 403);
    let (status, _) = bearer(&app, &amy_token)
        .get("/api/v1/users?is_active=maybe")
        .await;
    assert_eq!(status, 400);
    // Reading: oneself, a member for an admin; another organization's user is not found.
    for (who, token, whom, expected) in [
        ("ben", &ben_token, &ben, 200),
        ("ben", &ben_token, &amy, 404),
        ("amy", &amy_token, &ben, 200),
        ("amy", &amy_token, &cid, 404),
    ] {
        let (status, body) = bearer(&app, token)
            .get(&format!("/api/v1/users/{whom}"))
            .await;
        assert_eq!(status, expected, "{who} reads {whom}: {body}");
    }
    // Changing: one's own email and name; nobody else's but for a superadmin.
    let (status, changed) = bearer(&app, &ben_token)
        .put(
            &format!("/api/v1/users/{ben}"),
            json!({"email": "ben@new.example.com", "full_name": "Ben"}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["email"], "ben@new.example.com");
    assert_eq!(
        bearer(&app, &ben_token)
            .put(
                &format!("/api/v1/users/{ben}"),
                json!({"is_superadmin": true})
            )
            .await
            .0,
        403
    );
    assert_eq!(
        bearer(&app, &amy_token)
            .put(&format!("/api/v1/users/{ben}"), json!({"full_name": "B"}))
            .await
            .0,
        404
    );
    // An email in use is a conflict; the new one logs in, the old one is free again.
    assert_eq!(
        bearer(&app, &amy_token)
            .put(
                &format!("/api/v1/users/{amy}"),
                json!({"email": "BEN@new.example.com"})
            )
            .await
            .0,
        409
    );
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "ben@new.example.com", "password": "long enough"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        bearer(&app, &amy_token)
            .put(
                &format!("/api/v1/users/{amy}"),
                json!({"email": "ben@example.com"})
            )
            .await
            .0,
        200
    );
    // A superadmin grants and withdraws, but not on themselves.
    let root_id = me["user_id"].as_str().unwrap();
    assert_eq!(
        bearer(&app, &root)
            .delete(&format!("/api/v1/users/{root_id}"))
            .await
            .0,
        403
    );
    let (status, granted) = bearer(&app, &root)
        .put(
            &format!("/api/v1/users/{cid}"),
            json!({"is_superadmin": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(granted["is_superadmin"], true);
    app.stop().await;
}

#[actix_web::test]
async fn an_invited_user_sets_their_password_with_a_token_that_works_once() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let invited = post(
        &app,
        &root,
        "/api/v1/users",
        json!({"username": "ina", "email": "ina@example.com", "invite": true}),
    )
    .await;
    let token = invited["invitation_token"].as_str().unwrap().to_owned();
    assert!(invited["invitation_expires_at"].is_string());
    // Not both, not neither.
    let (status, problem) = bearer(&app, &root)
        .post(
            "/api/v1/users",
            json!({"username": "ivo", "email": "ivo@example.com"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["field"], "password");
    let (status, _) = bearer(&app, &root).post("/api/v1/users", json!({"username": "ivo", "email": "ivo@example.com", "password": "long enough", "invite": true})).await;
    assert_eq!(status, 400);
    // No login before acceptance.
    let login_as = |password: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"username": "ina", "password": password}))
            .send()
    };
    assert_eq!(login_as("long enough").await.unwrap().status(), 401);
    let accept = |token: String, password: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/accept-invitation"))
            .json(&json!({"token": token, "password": password}))
            .send()
    };
    assert_eq!(accept(token.clone(), "short").await.unwrap().status(), 400);
    assert_eq!(
        accept("0".repeat(64), "long enough")
            .await
            .unwrap()
            .status(),
        400
    );
    let res = accept(token.clone(), "long enough").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["username"], "ina");
    assert_eq!(login_as("long enough").await.unwrap().status(), 200);
    // Used up.
    assert_eq!(accept(token, "another one").await.unwrap().status(), 400);
    app.stop().await;
}

#[actix_web::test]
async fn no_password_token_or_key_reaches_the_event_log() {
    let app = TestApp::spawn().await;
    let root_login: Value = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": common::ADMIN, "password": common::PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let root = root_login["access_token"].as_str().unwrap().to_owned();
    let refreshed: Value = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header(
            "refresh-token",
            root_login["refresh_token"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = post(
        &app,
        &root,
        "/api/v1/api-keys",
        json!({"name": "ci", "scopes": ["read"]}),
    )
    .await;
    let invited = post(
        &app,
        &root,
        "/api/v1/users",
        json!({"username": "una", "email": "una@example.com", "invite": true}),
    )
    .await;
    post(
        &app,
        &root,
        "/api/v1/users",
        json!({"username": "uli", "email": "uli@example.com", "password": "uli's secret password"}),
    )
    .await;
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "uli", "password": "uli's secret password"}))
        .send()
        .await
        .unwrap();
    let uli = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = bearer(&app, &uli).post("/api/v1/auth/change-password", json!({"current_password": "uli's secret password", "new_password": "uli's next password"}))
    .await;
    assert_eq!(status, 204);
    let secrets = [
        common::PASSWORD.to_owned(),
        "uli's secret password".to_owned(),
        "uli's next password".to_owned(),
        uli.clone(),
        root.clone(),
        root_login["refresh_token"].as_str().unwrap().to_owned(),
        refreshed["access_token"].as_str().unwrap().to_owned(),
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
        key["key"].as_str().unwrap().to_owned(),
        // The secret part of the key alone.
        key["key"]
            .as_str()
            .unwrap()
            .rsplit('_')
            .next()
            .unwrap()
            .to_owned(),
        invited["invitation_token"].as_str().unwrap().to_owned(),
    ];
    let events: Vec<(String, String)> =
        sqlx::query_as("SELECT data::text, metadata::text FROM events")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(events.len() > 10, "{} events", events.len());
    for (data, metadata) in &events {
        for secret in &secrets {
            assert!(
                !data.contains(secret.as_str()) && !metadata.contains(secret.as_str()),
                "a secret in {data} {metadata}"
            );
        }
        assert!(!data.contains("argon2"), "a hash in {data}");
    }
    app.stop().await;
}
