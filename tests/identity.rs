//! Organizations through real HTTP: the bootstrap's `default` organization and its owner,
//! WindFlow's list parameters, and 404s.

mod common;

use atelier_domain::DomainEvent;
use atelier_domain::identity::Role;
use atelier_domain::identity::organization::{JsonObject, OrgEvent, OrgName, OrgProfile};
use atelier_store::{EventData, EventStore, ExpectedRevision, StreamName};
use common::TestApp;
use serde_json::{Value, json};
use uuid::Uuid;

async fn settle(app: &TestApp) {
    app.settle().await;
}

async fn get(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// Another organization, with one member who is not the admin, appended through the store
/// (organizations cannot be created through the API yet).
async fn other_organization(app: &TestApp, name: &str, active: bool) -> Uuid {
    let org = Uuid::now_v7();
    let mut events = vec![
        OrgEvent::OrganizationCreated {
            org_id: org,
            profile: OrgProfile {
                name: OrgName::parse(name).unwrap(),
                description: None,
                settings: JsonObject::default(),
                quotas: JsonObject::default(),
            },
            created_at: chrono::Utc::now(),
        },
        OrgEvent::MemberAdded {
            org_id: org,
            user_id: Uuid::now_v7(),
            role: Role::Owner,
            at: chrono::Utc::now(),
        },
    ];
    if !active {
        events.push(OrgEvent::OrganizationDeactivated {
            org_id: org,
            at: chrono::Utc::now(),
        });
    }
    let data = events
        .iter()
        .map(|e| {
            let (ty, data) = e.encode();
            EventData::new(ty, data).with_metadata(json!({ "org_id": org }))
        })
        .collect();
    app.store
        .append(
            &StreamName::new(format!("org-{org}")).unwrap(),
            ExpectedRevision::NoStream,
            data,
        )
        .await
        .unwrap();
    org
}

#[actix_web::test]
async fn the_superadmin_sees_the_default_organization_it_owns() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    settle(&app).await;
    let (status, page) = get(&app, &token, "/api/v1/organizations").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["pagination"]["total"], 1);
    let default = &page["data"][0];
    assert_eq!(default["name"], "default");
    assert_eq!(default["is_active"], true);
    assert_eq!(default["user_count"], 1);
    let id = default["id"].as_str().unwrap();
    let res = app
        .client
        .get(app.url(&format!("/api/v1/organizations/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let (status, members) = get(&app, &token, &format!("/api/v1/organizations/{id}/members")).await;
    assert_eq!(status, 200);
    assert_eq!(members.as_array().unwrap().len(), 1);
    assert_eq!(members[0]["username"], common::ADMIN);
    assert_eq!(members[0]["role"], "owner");
    app.stop().await;
}

#[actix_web::test]
async fn the_list_filters_by_name_and_activity_as_windflow_does() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    other_organization(&app, "Acme Corp", true).await;
    other_organization(&app, "Dormant Inc", false).await;
    settle(&app).await;
    let names = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, all) = get(&app, &token, "/api/v1/organizations").await;
    assert_eq!(names(&all), ["Acme Corp", "default", "Dormant Inc"]);
    let (_, found) = get(&app, &token, "/api/v1/organizations?search=acme").await;
    assert_eq!(names(&found), ["Acme Corp"]);
    let (_, inactive) = get(&app, &token, "/api/v1/organizations?is_active=false").await;
    assert_eq!(names(&inactive), ["Dormant Inc"]);
    let (_, paged) = get(&app, &token, "/api/v1/organizations?per_page=2&page=2").await;
    assert_eq!(names(&paged), ["Dormant Inc"]);
    assert_eq!(paged["pagination"]["total"], 3);
    assert_eq!(paged["pagination"]["has_prev"], true);
    let (status, bad) = get(
        &app,
        &token,
        "/api/v1/organizations?is_active=maybe&per_page=500",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(bad["code"], "VALIDATION_ERROR");
    let fields: Vec<_> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"is_active") && fields.contains(&"per_page"),
        "{bad}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn an_unknown_organization_is_a_404_and_the_list_needs_a_token() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    for path in [
        format!("/api/v1/organizations/{}", Uuid::now_v7()),
        format!("/api/v1/organizations/{}/members", Uuid::now_v7()),
        "/api/v1/organizations/not-a-uuid".to_owned(),
    ] {
        let (status, problem) = get(&app, &token, &path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(problem["code"], "NOT_FOUND");
    }
    let res = app
        .client
        .get(app.url("/api/v1/organizations"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    app.stop().await;
}

#[actix_web::test]
async fn a_superadmin_creates_renames_and_deletes_an_organization_with_unique_names() {
    let app = TestApp::spawn().await;
    let token = app.token().await;
    let post = |body: Value| {
        app.client
            .post(app.url("/api/v1/organizations"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let res =
        post(json!({"name": "Acme", "description": "makers", "quotas": {"max_projects": 10}}))
            .await
            .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()["etag"],
        "\"1\"",
        "created, and its owner added"
    );
    let position = res.headers()["atelier-position"]
        .to_str()
        .unwrap()
        .to_owned();
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["user_count"], 1);
    assert_eq!(created["quotas"], json!({"max_projects": 10}));
    let (status, listed) = get(
        &app,
        &token,
        &format!("/api/v1/organizations?search=acme&min_position={position}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["id"], json!(id));
    let (_, members) = get(&app, &token, &format!("/api/v1/organizations/{id}/members")).await;
    assert_eq!(members[0]["role"], "owner");

    // The name is unique, whatever its case and spacing; bad fields are all named.
    let res = post(json!({"name": "  ACME "})).await.unwrap();
    assert_eq!(res.status(), 409);
    let res = post(json!({"name": "A", "settings": [1], "description": "d".repeat(501)}))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let problem: Value = res.json().await.unwrap();
    let mut fields: Vec<_> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    fields.sort();
    assert_eq!(fields, ["description", "name", "settings"]);

    // Rename with If-Match; a stale one is refused.
    let put = |etag: &str, name: &str| {
        app.client
            .put(app.url(&format!("/api/v1/organizations/{id}")))
            .bearer_auth(&token)
            .header("if-match", etag)
            .json(&json!({"name": name}))
            .send()
    };
    let res = put("\"1\"", "Acme Corp").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let res = put("\"1\"", "Acme Again").await.unwrap();
    assert_eq!(res.status(), 412);
    // The old name is free again.
    assert_eq!(post(json!({"name": "Acme"})).await.unwrap().status(), 201);

    let res = app
        .client
        .delete(app.url(&format!("/api/v1/organizations/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let position = res.headers()["atelier-position"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, _) = get(
        &app,
        &token,
        &format!("/api/v1/organizations/{id}?min_position={position}"),
    )
    .await;
    assert_eq!(status, 404);
    app.stop().await;
}

/// The bootstrap organization, where the superadmin acts (users join it only when named).
async fn default_org(app: &TestApp, root: &str) -> String {
    let (_, me) = get(app, root, "/api/v1/auth/me").await;
    me["organization_id"].as_str().unwrap().to_owned()
}

async fn login(app: &TestApp, username: &str, password: &str) -> String {
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "login of {username}");
    res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    let res = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn two_organizations_created_through_the_api_cannot_see_each_others_projects() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let (status, beta) = post(
        &app,
        &root,
        "/api/v1/organizations",
        json!({"name": "Beta"}),
    )
    .await;
    assert_eq!(status, 201, "{beta}");
    let beta_id = beta["id"].as_str().unwrap().to_owned();
    let (status, bob) = post(
        &app,
        &root,
        "/api/v1/users",
        json!({"username": "bob", "email": "bob@example.com", "password": "bob's password",
               "organization_id": beta_id, "role": "member"}),
    )
    .await;
    assert_eq!(status, 201, "{bob}");
    assert!(!bob.to_string().contains("bob's password"));
    let (status, carol) = post(
        &app,
        &root,
        "/api/v1/users",
        json!({"username": "carol", "email": "carol@example.com", "password": "carol's password",
               "organization_id": default_org(&app, &root).await}),
    )
    .await;
    assert_eq!(status, 201, "{carol}");

    let bob = login(&app, "bob", "bob's password").await;
    let carol = login(&app, "carol", "carol's password").await;
    let (status, theirs) = post(
        &app,
        &bob,
        "/api/v1/projects",
        json!({"name": "beta-app", "repo": "https://example.com/b.git"}),
    )
    .await;
    assert_eq!(status, 201, "{theirs}");
    let (status, ours) = post(
        &app,
        &carol,
        "/api/v1/projects",
        json!({"name": "default-app", "repo": "https://example.com/d.git"}),
    )
    .await;
    assert_eq!(status, 201, "{ours}");
    app.settle().await;
    for (token, own, other) in [(&bob, &theirs, &ours), (&carol, &ours, &theirs)] {
        let (_, list) = get(&app, token, "/api/v1/projects").await;
        let names: Vec<_> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].clone())
            .collect();
        assert_eq!(names, [own["name"].clone()]);
        let (status, _) = get(
            &app,
            token,
            &format!("/api/v1/projects/{}", other["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(status, 404, "another organization's project is not found");
    }
    // Bob sees Beta only; Carol, the default organization only.
    settle(&app).await;
    let (_, orgs) = get(&app, &bob, "/api/v1/organizations").await;
    assert_eq!(orgs["pagination"]["total"], 1);
    assert_eq!(orgs["data"][0]["name"], "Beta");
    let (status, _) = get(&app, &carol, &format!("/api/v1/organizations/{beta_id}")).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[actix_web::test]
async fn users_are_unique_valid_and_created_only_by_those_who_manage_the_organization() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let org = default_org(&app, &root).await;
    let user = |name: &str| json!({"username": name, "email": format!("{name}@example.com"), "password": "long enough", "organization_id": org});
    assert_eq!(
        post(&app, &root, "/api/v1/users", user("dave")).await.0,
        201
    );
    // The bootstrap superadmin's name is taken too.
    assert_eq!(
        post(
            &app,
            &root,
            "/api/v1/users",
            user(&common::ADMIN.to_uppercase())
        )
        .await
        .0,
        409
    );
    // Usernames and emails are unique whatever their case.
    assert_eq!(
        post(&app, &root, "/api/v1/users", user("DAVE")).await.0,
        409
    );
    let (status, _) = post(
        &app,
        &root,
        "/api/v1/users",
        json!({"username": "david", "email": "Dave@Example.com", "password": "long enough"}),
    )
    .await;
    assert_eq!(status, 409);
    // WindFlow's field rules, every bad field named.
    let (status, problem) = post(
        &app,
        &root,
        "/api/v1/users",
        json!({"username": "x", "email": "nope", "password": "short", "role": "root"}),
    )
    .await;
    assert_eq!(status, 400);
    let mut fields: Vec<_> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    fields.sort();
    assert_eq!(fields, ["email", "password", "role", "username"]);
    // A member may not add users; nobody but a superadmin creates superadmins; another
    // organization is not found.
    let dave = login(&app, "dave", "long enough").await;
    assert_eq!(
        post(&app, &dave, "/api/v1/users", user("erin")).await.0,
        403
    );
    let (_, beta) = post(
        &app,
        &root,
        "/api/v1/organizations",
        json!({"name": "Beta"}),
    )
    .await;
    let mut in_beta = user("frank");
    in_beta["organization_id"] = beta["id"].clone();
    assert_eq!(post(&app, &dave, "/api/v1/users", in_beta).await.0, 404);
    let mut superadmin = user("grace");
    superadmin["is_superadmin"] = json!(true);
    assert_eq!(post(&app, &root, "/api/v1/users", superadmin).await.0, 201);
    app.stop().await;
}

#[actix_web::test]
async fn viewers_read_members_create_and_change() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    for (name, role) in [("vera", "viewer"), ("mark", "member")] {
        let (status, body) = post(
            &app,
            &root,
            "/api/v1/users",
            json!({"username": name, "email": format!("{name}@example.com"),
                   "password": "long enough", "role": role,
                   "organization_id": default_org(&app, &root).await}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let vera = login(&app, "vera", "long enough").await;
    let mark = login(&app, "mark", "long enough").await;
    let project = json!({"name": "app", "repo": "https://example.com/a.git"});
    let (status, problem) = post(&app, &vera, "/api/v1/projects", project.clone()).await;
    assert_eq!(status, 403);
    assert_eq!(problem["code"], "FORBIDDEN");
    let (status, made) = post(&app, &mark, "/api/v1/projects", project).await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap();
    app.settle().await;
    let (status, list) = get(&app, &vera, "/api/v1/projects").await;
    assert_eq!(status, 200);
    assert_eq!(list["pagination"]["total"], 1);
    assert_eq!(
        get(&app, &vera, &format!("/api/v1/projects/{id}")).await.0,
        200
    );
    let build = format!("/api/v1/projects/{id}/build");
    assert_eq!(post(&app, &vera, &build, json!({})).await.0, 403);
    assert_eq!(post(&app, &mark, &build, json!({})).await.0, 202);
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/projects/{id}")))
        .bearer_auth(&vera)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    app.stop().await;
}

#[actix_web::test]
async fn me_verify_and_change_password_work_as_sentinel_documents_them() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let (status, beta) = post(
        &app,
        &root,
        "/api/v1/organizations",
        json!({"name": "Beta"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &app,
        &root,
        "/api/v1/users",
        json!({"username": "hana", "email": "hana@example.com", "password": "first password",
               "organization_id": beta["id"], "role": "admin", "full_name": "Hana"}),
    )
    .await;
    assert_eq!(status, 201);
    let hana = login(&app, "hana", "first password").await;
    settle(&app).await;
    let (status, me) = get(&app, &hana, "/api/v1/auth/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "hana");
    assert_eq!(me["email"], "hana@example.com");
    assert_eq!(me["full_name"], "Hana");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["organization_id"], beta["id"]);
    assert_eq!(
        me["organizations"],
        json!([{"organization_id": beta["id"], "name": "Beta", "role": "admin"}])
    );
    let (status, verified) = post(&app, &hana, "/api/v1/auth/verify", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(verified["valid"], true);
    assert_eq!(
        post(&app, "forged", "/api/v1/auth/verify", json!({}))
            .await
            .0,
        401
    );

    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let (status, problem) = post(
        &app,
        &hana,
        "/api/v1/auth/change-password",
        change("wrong one", "second password"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["field"], "current_password");
    let (status, problem) = post(
        &app,
        &hana,
        "/api/v1/auth/change-password",
        change("first password", "short"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["field"], "new_password");
    let (status, _) = post(
        &app,
        &hana,
        "/api/v1/auth/change-password",
        change("first password", "second password"),
    )
    .await;
    assert_eq!(status, 204);
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "hana", "password": "first password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the old password no longer works");
    login(&app, "hana", "second password").await;
    // The change is a fact in the user's stream, without any secret.
    let stream = format!("user-{}", me["user_id"].as_str().unwrap());
    let events = app
        .store
        .read_stream(
            &StreamName::new(stream).unwrap(),
            atelier_store::ReadStream::forward(),
        )
        .await
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.event_type, "PasswordChanged");
    let text = last.data.to_string();
    assert!(
        !text.contains("password\":") && !text.contains("second"),
        "{text}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn admins_manage_members_but_only_owners_make_owners_and_the_last_owner_stays() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let (_, beta) = post(
        &app,
        &root,
        "/api/v1/organizations",
        json!({"name": "Beta"}),
    )
    .await;
    let beta_id = beta["id"].as_str().unwrap().to_owned();
    let members = format!("/api/v1/organizations/{beta_id}/members");
    let mut ids = std::collections::HashMap::new();
    for (name, role) in [("hana", "admin"), ("ivan", "viewer")] {
        let (status, user) = post(
            &app,
            &root,
            "/api/v1/users",
            json!({"username": name, "email": format!("{name}@example.com"),
                   "password": "long enough", "organization_id": beta_id, "role": role}),
        )
        .await;
        assert_eq!(status, 201, "{user}");
        ids.insert(name, user["id"].as_str().unwrap().to_owned());
    }
    let (_, other) = post(
        &app,
        &root,
        "/api/v1/users",
        json!({"username": "judy", "email": "judy@example.com", "password": "long enough"}),
    )
    .await;
    let judy = other["id"].as_str().unwrap().to_owned();
    let hana = login(&app, "hana", "long enough").await;
    let ivan = login(&app, "ivan", "long enough").await;

    // An admin adds a member and changes a role; a viewer may not.
    let (status, body) = post(
        &app,
        &hana,
        &members,
        json!({"user_id": judy, "role": "member"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        post(
            &app,
            &hana,
            &members,
            json!({"user_id": ids["ivan"], "role": "member"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        post(
            &app,
            &ivan,
            &members,
            json!({"user_id": judy, "role": "admin"})
        )
        .await
        .0,
        403
    );
    // Only owners make owners; unknown users and roles are refused.
    assert_eq!(
        post(
            &app,
            &hana,
            &members,
            json!({"user_id": judy, "role": "owner"})
        )
        .await
        .0,
        403
    );
    assert_eq!(
        post(
            &app,
            &hana,
            &members,
            json!({"user_id": Uuid::now_v7(), "role": "member"})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        post(
            &app,
            &hana,
            &members,
            json!({"user_id": judy, "role": "boss"})
        )
        .await
        .0,
        400
    );
    // The root user is Beta's only owner: it cannot be removed, even by itself.
    let root_id = {
        let (_, me) = get(&app, &root, "/api/v1/auth/me").await;
        me["user_id"].as_str().unwrap().to_owned()
    };
    let remove = |token: &str, user: &str| {
        app.client
            .delete(app.url(&format!("{members}/{user}")))
            .bearer_auth(token.to_owned())
            .send()
    };
    assert_eq!(
        remove(&hana, &root_id).await.unwrap().status(),
        403,
        "only owners remove owners"
    );
    assert_eq!(
        remove(&root, &root_id).await.unwrap().status(),
        409,
        "the last owner stays"
    );
    let res = remove(&hana, &judy).await.unwrap();
    assert_eq!(res.status(), 204);
    let position = res.headers()["atelier-position"]
        .to_str()
        .unwrap()
        .to_owned();
    let (_, list) = get(&app, &root, &format!("{members}?min_position={position}")).await;
    let mut roles: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["username"].as_str().unwrap(),
                m["role"].as_str().unwrap()
            )
        })
        .collect();
    roles.sort();
    assert_eq!(roles, ["admin:owner", "hana:admin", "ivan:member"]);
    app.stop().await;
}

#[actix_web::test]
async fn a_look_alike_of_an_organization_name_is_taken_and_invisible_characters_are_refused() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let orgs = "/api/v1/organizations";
    assert_eq!(
        post(&app, &root, orgs, json!({"name": "AlphaCorp"}))
            .await
            .0,
        201
    );
    // Cyrillic capital A (U+0410) and small o (U+043E); full-width letters.
    for look_alike in ["\u{410}lphaC\u{43e}rp", "ＡｌｐｈａＣｏｒｐ"] {
        let (status, body) = post(&app, &root, orgs, json!({ "name": look_alike })).await;
        assert_eq!(status, 409, "{look_alike:?}: {body}");
    }
    for hidden in [
        "Alpha\u{200b}Corp",
        "AlphaCorp\u{202e}",
        "\u{2066}AlphaCorp",
    ] {
        let (status, body) = post(&app, &root, orgs, json!({ "name": hidden })).await;
        assert_eq!(status, 400, "{hidden:?}: {body}");
        assert_eq!(body["errors"][0]["field"], "name", "{body}");
    }
    // The bootstrap's organization is taken by its look-alikes too.
    let (status, _) = post(&app, &root, orgs, json!({"name": "ｄｅｆａｕｌｔ"})).await;
    assert_eq!(status, 409);
    app.stop().await;
}

#[actix_web::test]
async fn a_look_alike_of_a_username_is_taken_and_invisible_characters_are_refused() {
    let app = TestApp::spawn().await;
    let root = app.token().await;
    let user = |name: &str, email: &str| json!({"username": name, "email": email, "password": "long enough"});
    let (status, created) = post(
        &app,
        &root,
        "/api/v1/users",
        user("alice", "alice@example.com"),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    // Full-width letters are `alice` itself; `1` passes for `l`; the admin's name in capitals
    // and full width.
    for (look_alike, email) in [
        ("ａｌｉｃｅ", "alice2@example.com"),
        ("a1ice", "alice3@example.com"),
        ("ＡＤＭＩＮ", "admin2@example.com"),
    ] {
        let (status, body) = post(&app, &root, "/api/v1/users", user(look_alike, email)).await;
        assert_eq!(status, 409, "{look_alike:?}: {body}");
    }
    let (status, body) = post(
        &app,
        &root,
        "/api/v1/users",
        user("ali\u{200b}ce", "alice4@example.com"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "username", "{body}");
    // An address whose local part is full-width is the same mailbox's key.
    let (status, body) = post(
        &app,
        &root,
        "/api/v1/users",
        user("alicia", "ａｌｉｃｅ@example.com"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    app.stop().await;
}
