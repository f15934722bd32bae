//! The lists paged by keyset cursor beside page numbers, through real HTTP on a fresh database:
//! projects, a project's builds, deployments, environments (lasting and ephemeral),
//! operations, detections and organizations. Every row once and in order (ties on the sort key
//! included), with their filters; cursors that continue any page, that writes do not shift,
//! that are refused when tampered with or made for another sort, and that show nothing of
//! another organization; totals kept exact, or counted.

mod common;

use std::collections::HashSet;

use atelier_commands::handler::{CommandContext, stream_of};
use atelier_domain::deploy::deployment::Deployment;
use atelier_domain::factory::build::Build;
use atelier_domain::factory::project::{Project, ProjectEvent, ProjectName, RepoUrl};
use atelier_domain::identity::organization::{OrgName, Organization};
use atelier_domain::surveillance::detection::Detection;
use atelier_domain::venvs::environment::Environment;
use atelier_domain::venvs::operation::Operation;
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::{EventStore, ExpectedRevision};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use common::{Client, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const PROJECTS: &str = "/api/v1/projects";

const SORTS: [&str; 6] = [
    "name",
    "-name",
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
];

async fn create(c: &Client<'_>, name: &str) -> String {
    let created = c
        .json(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"name": name, "repo": "https://example.com/r.git"})),
            StatusCode::CREATED,
        )
        .await;
    created["id"].as_str().unwrap().to_owned()
}

/// Projects written straight to the log, as the command writes them, all created at the same
/// instant: ties on `created_at` and `updated_at`, and (two share a name, which only the
/// command's reservation forbids) on the name's sort key.
async fn created_together(app: &TestApp, org_id: Uuid, names: &[&str]) -> Vec<String> {
    let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut ctx = CommandContext::new(org_id, "test");
    ctx.occurred_at = at;
    let mut ids = Vec::new();
    for name in names {
        let project_id = Uuid::now_v7();
        let event = ProjectEvent::ProjectCreated {
            project_id,
            org_id,
            name: ProjectName::parse(name).unwrap(),
            repo_url: RepoUrl::parse("https://example.com/r.git").unwrap(),
            build_command: None,
            created_at: at,
        };
        app.store
            .append(
                &stream_of::<Project>(project_id),
                ExpectedRevision::NoStream,
                ctx.encode(&[event], &[]),
            )
            .await
            .unwrap();
        ids.push(project_id.to_string());
    }
    app.settle().await;
    ids
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `path` with `query` added to its query string.
fn with(path: &str, query: &str) -> String {
    match (query.is_empty(), path.contains('?')) {
        (true, _) => path.to_owned(),
        (false, true) => format!("{path}&{query}"),
        (false, false) => format!("{path}?{query}"),
    }
}

/// Every page of `list` (a path and its filters), two rows a page, followed by cursor from the
/// first (which also has `first`: a sort, a cursor…), and the ids in the order seen.
async fn walk(c: &Client<'_>, list: &str, first: &str) -> (Vec<Value>, Vec<String>) {
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    let mut path = with(&with(list, "per_page=2"), first);
    loop {
        let page = c.json(Method::GET, &path, None, StatusCode::OK).await;
        seen.extend(ids(&page));
        let next = page["pagination"]["next_cursor"]
            .as_str()
            .map(str::to_owned);
        assert_eq!(page["pagination"]["has_next"], next.is_some(), "{page}");
        pages.push(page);
        match next {
            // The sort is left out: the cursor carries it. The filters are not: they are asked
            // again.
            Some(cursor) => path = with(list, &format!("per_page=2&cursor={cursor}")),
            None => return (pages, seen),
        }
        assert!(pages.len() < 100, "the walk does not end");
    }
}

/// Walks `list` by cursor and asserts that it yields exactly `expected`, in that order: every
/// row once, none other, each page numbered from the first and counting them all exactly.
async fn assert_walk(c: &Client<'_>, list: &str, expected: &[Uuid]) {
    let (pages, walked) = walk(c, list, "").await;
    let expected: Vec<String> = expected.iter().map(Uuid::to_string).collect();
    assert_eq!(walked, expected, "{list}");
    let n = expected.len();
    assert_eq!(pages.len(), n.div_ceil(2).max(1), "{list}");
    for (i, page) in pages.iter().enumerate() {
        let p = &page["pagination"];
        assert_eq!(p["page"], i + 1, "{list}: {p}");
        assert_eq!(p["total"], n, "{list}: {p}");
        assert_eq!(p["pages"], n.div_ceil(2), "{list}: {p}");
        assert_eq!(p["total_capped"], false, "{list}: {p}");
    }
}

/// A time `seconds` after an instant every list's rows are placed around.
fn at(seconds: i64) -> DateTime<Utc> {
    "2026-06-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(seconds)
}

/// The ids of `rows` (a time, an id) newest first, ties broken by the id, last first: the
/// order of every list sorted by a time, descending.
fn newest_first(rows: &[(DateTime<Utc>, Uuid)]) -> Vec<Uuid> {
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| b.cmp(a));
    rows.into_iter().map(|(_, id)| id).collect()
}

/// Appends these events (type, data) as the start of the stream of `A` `id`, in organization
/// `org`, as its command would: rows at the times and with the ties a test needs, and in
/// organizations no request of the test acts in.
async fn record<A: Aggregate>(app: &TestApp, org: Uuid, id: Uuid, events: &[(&str, Value)]) {
    let events: Vec<A::Event> = events
        .iter()
        .map(|(event_type, data)| {
            <A::Event as DomainEvent>::decode(event_type, data).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    app.store
        .append(
            &stream_of::<A>(id),
            ExpectedRevision::NoStream,
            CommandContext::new(org, "test").encode(&events, &[]),
        )
        .await
        .unwrap();
}

/// The organization the test admin acts in.
async fn my_org(c: &Client<'_>) -> Uuid {
    let me = c
        .json(Method::GET, "/api/v1/auth/me", None, StatusCode::OK)
        .await;
    me["organization_id"].as_str().unwrap().parse().unwrap()
}

/// A cursor as a list makes them, for `sort`, after the row with `key` and `id`.
fn forged_cursor(sort: &str, key: &str, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"s": sort, "k": key, "i": id, "p": 2}).to_string())
}

/// Asserts that `path` is a 400 validation problem naming exactly `field`.
async fn assert_refused(c: &Client<'_>, path: &str, field: &str) {
    let problem = c
        .json(Method::GET, path, None, StatusCode::BAD_REQUEST)
        .await;
    assert_eq!(problem["code"], "VALIDATION_ERROR", "{path}: {problem}");
    let fields: Vec<_> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, [field], "{path}: {problem}");
}

async fn org_of(app: &TestApp, project: &str) -> Uuid {
    // The read model has the project once the projections have passed what was written.
    app.settle().await;
    sqlx::query_scalar("SELECT org_id FROM projects WHERE id = $1")
        .bind(Uuid::parse_str(project).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[actix_web::test]
async fn walking_every_page_by_cursor_yields_every_project_once_in_order_in_each_sort() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let first = create(&c, "Delta").await;
    for name in ["alpha", "Charlie", "echo"] {
        create(&c, name).await;
    }
    let org = org_of(&app, &first).await;
    created_together(&app, org, &["Bravo", "bravo", "Foxtrot", "Golf", "Hotel"]).await;
    // Updates spread `updated_at` over some of them; the rest keep their ties.
    c.json(
        Method::PUT,
        &format!("/api/v1/projects/{first}"),
        Some(json!({"name": "Delta", "repo": "https://example.com/other.git"})),
        StatusCode::OK,
    )
    .await;
    let seen = c.seen().await;

    for sort in SORTS {
        // The oracle: the same sort by page number, in one page.
        let all = c
            .json(
                Method::GET,
                &format!("/api/v1/projects?per_page=100&sort={sort}&{seen}"),
                None,
                StatusCode::OK,
            )
            .await;
        let expected = ids(&all);
        assert_eq!(expected.len(), 9, "{all}");
        let (pages, walked) = walk(&c, PROJECTS, &format!("sort={sort}")).await;
        assert_eq!(walked, expected, "sort={sort}");
        assert_eq!(walked.iter().collect::<HashSet<_>>().len(), 9);
        assert_eq!(pages.len(), 5);
        for (n, page) in pages.iter().enumerate() {
            let p = &page["pagination"];
            assert_eq!(p["page"], n + 1, "{p}");
            assert_eq!(p["has_prev"], n > 0, "{p}");
            assert_eq!(p["total"], 9, "{p}");
            assert_eq!(p["pages"], 5, "{p}");
            assert_eq!(p["total_capped"], false, "{p}");
        }
        assert_eq!(pages[4]["pagination"]["next_cursor"], Value::Null);
    }
}

#[actix_web::test]
async fn a_cursor_from_page_three_continues_where_page_three_ended() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    for n in 0..9 {
        create(&c, &format!("Project {n}")).await;
    }
    let seen = c.seen().await;
    let page3 = c
        .json(
            Method::GET,
            &format!("/api/v1/projects?per_page=2&page=3&sort=-name&{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    let cursor = page3["pagination"]["next_cursor"].as_str().unwrap();
    let by_cursor = c
        .json(
            Method::GET,
            &format!("/api/v1/projects?per_page=2&cursor={cursor}&sort=-name"),
            None,
            StatusCode::OK,
        )
        .await;
    let page4 = c
        .json(
            Method::GET,
            "/api/v1/projects?per_page=2&page=4&sort=-name",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids(&by_cursor), ids(&page4));
    assert_eq!(by_cursor["data"][0]["name"], "Project 2");
    let (a, b) = (&by_cursor["pagination"], &page4["pagination"]);
    for field in ["page", "per_page", "total", "pages", "has_next", "has_prev"] {
        assert_eq!(a[field], b[field], "{field}: {a} against {b}");
    }
    assert_eq!(a["page"], 4);
}

#[actix_web::test]
async fn a_project_created_during_a_cursor_walk_does_not_shift_it() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let mut before = HashSet::new();
    for n in 0..6 {
        before.insert(create(&c, &format!("Project {n}")).await);
    }
    let seen = c.seen().await;
    let first = c
        .json(
            Method::GET,
            &format!("/api/v1/projects?per_page=2&sort=-created_at&{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    let mut walked = ids(&first);
    let mut cursor = first["pagination"]["next_cursor"]
        .as_str()
        .map(str::to_owned);
    // The newest of all: first in this order, before every page already read.
    let newcomer = create(&c, "Newcomer").await;
    let seen = c.seen().await;
    // A page number now shifts (page 2 repeats the last row of page 1)…
    let shifted = c
        .json(
            Method::GET,
            &format!("/api/v1/projects?per_page=2&page=2&sort=-created_at&{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids(&shifted)[0], walked[1]);
    // …the cursor does not.
    while let Some(at) = cursor {
        let page = c
            .json(
                Method::GET,
                &format!("/api/v1/projects?per_page=2&cursor={at}"),
                None,
                StatusCode::OK,
            )
            .await;
        walked.extend(ids(&page));
        cursor = page["pagination"]["next_cursor"]
            .as_str()
            .map(str::to_owned);
    }
    assert_eq!(walked.len(), 6);
    assert_eq!(walked.iter().cloned().collect::<HashSet<_>>(), before);
    assert!(!walked.contains(&newcomer));
}

#[actix_web::test]
async fn a_tampered_cursor_is_a_400_naming_the_cursor() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    for n in 0..3 {
        create(&c, &format!("Project {n}")).await;
    }
    let seen = c.seen().await;
    let page = c
        .json(
            Method::GET,
            &format!("/api/v1/projects?per_page=1&sort=name&{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    let cursor = page["pagination"]["next_cursor"].as_str().unwrap();
    let mut flipped = cursor.to_owned().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let forged = forged_cursor("created_at", "not a time", Uuid::nil());
    let cases = [
        (format!("cursor={}", &cursor[..cursor.len() - 3]), "cursor"),
        (format!("cursor={flipped}"), "cursor"),
        ("cursor=not%20a%20cursor".to_owned(), "cursor"),
        (format!("cursor={}", "A".repeat(2000)), "cursor"),
        (format!("cursor={forged}"), "cursor"),
        // Made for another sort than the one asked.
        (format!("cursor={cursor}&sort=-name"), "cursor"),
        // A cursor carries its page: a page number beside it is refused.
        (format!("cursor={cursor}&page=2"), "page"),
    ];
    for (query, field) in cases {
        assert_refused(&c, &with(PROJECTS, &query), field).await;
    }
}

#[actix_web::test]
async fn another_organizations_cursor_shows_nothing_of_it() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let mut mine = HashSet::new();
    for n in 0..4 {
        mine.insert(create(&c, &format!("Mine {n}")).await);
    }
    // Another organization, with projects of its own, made by the superadmin acting there.
    let other = c
        .json(
            Method::POST,
            "/api/v1/organizations",
            Some(json!({"name": "Other"})),
            StatusCode::CREATED,
        )
        .await;
    let other = other["id"].as_str().unwrap().to_owned();
    let in_other = |method: Method, path: &str| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(&c.token)
            .header("x-organization-id", &other)
    };
    let mut theirs = HashSet::new();
    for n in 0..4 {
        let res = in_other(Method::POST, "/api/v1/projects")
            .json(&json!({"name": format!("Theirs {n}"), "repo": "https://example.com/r.git"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        theirs.insert(body["id"].as_str().unwrap().to_owned());
    }
    app.settle().await;
    let res = in_other(Method::GET, "/api/v1/projects?per_page=1&sort=name")
        .send()
        .await
        .unwrap();
    let their_page: Value = res.json().await.unwrap();
    assert_eq!(their_page["pagination"]["total"], 4, "{their_page}");
    let their_cursor = their_page["pagination"]["next_cursor"].as_str().unwrap();
    // Their cursor, in my organization: where to start among my rows, and only mine.
    let (_, walked) = walk(&c, PROJECTS, &format!("cursor={their_cursor}")).await;
    assert!(walked.iter().all(|id| mine.contains(id)), "{walked:?}");
    assert!(walked.iter().all(|id| !theirs.contains(id)));
    // ("Theirs 0" sorts after every "Mine …": nothing of mine follows it.)
    assert!(walked.is_empty(), "{walked:?}");
    // And mine, in theirs: theirs only.
    let mine_page = c
        .json(
            Method::GET,
            "/api/v1/projects?per_page=1&sort=name",
            None,
            StatusCode::OK,
        )
        .await;
    let my_cursor = mine_page["pagination"]["next_cursor"].as_str().unwrap();
    let res = in_other(
        Method::GET,
        &format!("/api/v1/projects?per_page=100&cursor={my_cursor}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page: Value = res.json().await.unwrap();
    let got: HashSet<_> = ids(&page).into_iter().collect();
    assert_eq!(got, theirs, "{page}");
}

#[actix_web::test]
async fn a_search_pages_by_cursor_through_its_matches_only() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let mut blue = Vec::new();
    for n in 0..5 {
        blue.push(create(&c, &format!("Blue {n}")).await);
        create(&c, &format!("Red {n}")).await;
    }
    let seen = c.seen().await;
    c.json(
        Method::GET,
        &format!("/api/v1/projects?{seen}"),
        None,
        StatusCode::OK,
    )
    .await;
    let mut path = "/api/v1/projects?per_page=2&search=blue".to_owned();
    let mut walked = Vec::new();
    loop {
        let page = c.json(Method::GET, &path, None, StatusCode::OK).await;
        assert_eq!(page["pagination"]["total"], 5, "{page}");
        walked.extend(ids(&page));
        match page["pagination"]["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/api/v1/projects?per_page=2&search=blue&cursor={cursor}")
            }
            None => break,
        }
    }
    // Created in order, listed oldest first (the default sort).
    assert_eq!(walked, blue);
}

#[actix_web::test]
async fn the_total_without_a_search_is_the_organizations_exact_count_after_creations_and_deletions()
{
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let mut ids = Vec::new();
    for name in ["one", "two", "three", "four"] {
        ids.push(create(&c, name).await);
    }
    let deleted = c
        .send(
            Method::DELETE,
            &format!("/api/v1/projects/{}", ids[1]),
            None,
        )
        .await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    // One per page: the first page does not end the list, so its total is not inferred from it.
    let seen = c.seen().await;
    let page = c
        .json(
            Method::GET,
            &format!("/api/v1/projects?per_page=1&{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(page["pagination"]["total"], 3, "{page}");
    assert_eq!(page["pagination"]["total_capped"], false);
    assert_eq!(page["pagination"]["pages"], 3);
    // A search still counts its own matches ("one", "four"; "two" is gone).
    let searched = c
        .json(
            Method::GET,
            &format!("/api/v1/projects?per_page=1&search=o&{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(searched["pagination"]["total"], 2, "{searched}");
    // The count is kept by the projection: one row for the organization.
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT projects FROM project_counts")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, [(3,)], "one organization, three projects");
}

/// A build queued at `queued_at` (the event as the trigger writes it).
fn queued(org: Uuid, project: Uuid, id: Uuid, queued_at: DateTime<Utc>) -> (&'static str, Value) {
    (
        "BuildQueued",
        json!({"build_id": id, "org_id": org, "project_id": project, "project_revision": 0,
            "repo_url": "https://example.com/r.git", "triggered_by": "test", "queued_at": queued_at}),
    )
}

/// The instants the lists' rows are made at: ties of three and of two among them.
const INSTANTS: [i64; 7] = [0, 0, 0, 1, 2, 2, 3];

#[actix_web::test]
async fn walking_a_projects_builds_by_cursor_yields_each_once_newest_first_and_none_of_another_project_or_organization()
 {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let project = create(&c, "Built").await;
    let other_project: Uuid = create(&c, "Other").await.parse().unwrap();
    let org = org_of(&app, &project).await;
    let project: Uuid = project.parse().unwrap();
    let theirs = Uuid::now_v7();
    let (mut all, mut cancelled) = (Vec::new(), Vec::new());
    for (n, seconds) in INSTANTS.into_iter().enumerate() {
        let id = Uuid::now_v7();
        let mut events = vec![queued(org, project, id, at(seconds))];
        if n % 2 == 0 {
            events.push((
                "BuildCancelled",
                json!({"build_id": id, "by": "test", "finished_at": at(seconds), "duration_ms": null}),
            ));
            cancelled.push((at(seconds), id));
        }
        record::<Build>(&app, org, id, &events).await;
        all.push((at(seconds), id));
        // At the same instant: a build of another project of the organization, and one of
        // another organization under this project's own id.
        for (org, project) in [(org, other_project), (theirs, project)] {
            let id = Uuid::now_v7();
            record::<Build>(&app, org, id, &[queued(org, project, id, at(seconds))]).await;
        }
    }
    // And one triggered through the API.
    let triggered = c
        .json(
            Method::POST,
            &format!("/api/v1/projects/{project}/build"),
            None,
            StatusCode::ACCEPTED,
        )
        .await;
    all.push((
        triggered["queued_at"].as_str().unwrap().parse().unwrap(),
        triggered["id"].as_str().unwrap().parse().unwrap(),
    ));
    app.settle().await;
    let builds = format!("/api/v1/projects/{project}/builds");
    assert_walk(&c, &builds, &newest_first(&all)).await;
    assert_walk(
        &c,
        &with(&builds, "status=cancelled"),
        &newest_first(&cancelled),
    )
    .await;
}

#[actix_web::test]
async fn walking_deployments_by_cursor_yields_each_live_one_once_newest_first_and_none_of_another_organization()
 {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let org = my_org(&c).await;
    let theirs = Uuid::now_v7();
    let created = |org: Uuid, id: Uuid, framework: &str, seconds: i64| {
        (
            "DeploymentCreated",
            json!({"deployment_id": id, "org_id": org, "created_by": "test",
                "created_at": at(seconds),
                "spec": {"name": format!("app-{seconds}"), "deployment_type": "vm",
                    "framework": framework, "github_url": "https://github.com/user/repo",
                    "resources": {"cores": 1, "memory": 512, "disk": 10}}}),
        )
    };
    let (mut live, mut deleted, mut flask) = (Vec::new(), Vec::new(), Vec::new());
    for (n, seconds) in INSTANTS.into_iter().enumerate() {
        let id = Uuid::now_v7();
        let framework = if n % 3 == 0 { "flask" } else { "django" };
        let mut events = vec![created(org, id, framework, seconds)];
        if n % 4 == 1 {
            events.push((
                "DeploymentDeleted",
                json!({"deployment_id": id, "by": "test", "at": at(seconds)}),
            ));
            deleted.push((at(seconds), id));
        } else {
            live.push((at(seconds), id));
            if framework == "flask" {
                flask.push((at(seconds), id));
            }
        }
        record::<Deployment>(&app, org, id, &events).await;
        let id = Uuid::now_v7();
        record::<Deployment>(&app, theirs, id, &[created(theirs, id, framework, seconds)]).await;
    }
    app.settle().await;
    // Deleted ones only when asked for.
    assert_walk(&c, "/api/v1/deployments", &newest_first(&live)).await;
    assert_walk(
        &c,
        "/api/v1/deployments?status=deleted",
        &newest_first(&deleted),
    )
    .await;
    assert_walk(
        &c,
        "/api/v1/deployments?framework=flask",
        &newest_first(&flask),
    )
    .await;
}

#[actix_web::test]
async fn walking_environments_by_cursor_yields_each_live_one_of_its_kind_once_newest_first_and_none_of_another_organization()
 {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let org = my_org(&c).await;
    let theirs = Uuid::now_v7();
    // Not due during the test.
    let expires_at = Utc::now() + Duration::days(1);
    let created = |org: Uuid, id: Uuid, name: String, ephemeral: bool, seconds: i64| {
        let ephemeral = ephemeral.then(
            || json!({"ttl_secs": 86_400, "expires_at": expires_at, "isolation_level": "process"}),
        );
        (
            "EnvironmentCreated",
            json!({"environment_id": id, "org_id": org, "name": name, "python_version": "3.11",
                "backend": "uv", "ephemeral": ephemeral, "operation_id": Uuid::now_v7(),
                "by": "test", "at": at(seconds)}),
        )
    };
    let (mut lasting, mut ephemerals, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
    for (n, seconds) in INSTANTS.into_iter().enumerate() {
        let id = Uuid::now_v7();
        let mut events = vec![created(org, id, format!("env-{n}"), false, seconds)];
        if n % 3 == 2 {
            events.push((
                "EnvironmentDeleted",
                json!({"environment_id": id, "by": "test", "at": at(seconds)}),
            ));
            deleted.push((at(seconds), id));
        } else {
            lasting.push((at(seconds), id));
        }
        record::<Environment>(&app, org, id, &events).await;
        let id = Uuid::now_v7();
        record::<Environment>(
            &app,
            org,
            id,
            &[created(org, id, format!("eph-{n}"), true, seconds)],
        )
        .await;
        ephemerals.push((at(seconds), id));
        for ephemeral in [false, true] {
            let id = Uuid::now_v7();
            let name = format!("theirs-{n}-{ephemeral}");
            record::<Environment>(
                &app,
                theirs,
                id,
                &[created(theirs, id, name, ephemeral, seconds)],
            )
            .await;
        }
    }
    app.settle().await;
    assert_walk(&c, "/api/v1/environments", &newest_first(&lasting)).await;
    assert_walk(
        &c,
        "/api/v1/ephemeral/environments",
        &newest_first(&ephemerals),
    )
    .await;
    assert_walk(
        &c,
        "/api/v1/environments?status=deleted",
        &newest_first(&deleted),
    )
    .await;
}

#[actix_web::test]
async fn walking_operations_by_cursor_yields_each_once_newest_first_and_none_of_another_organization()
 {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let org = my_org(&c).await;
    let theirs = Uuid::now_v7();
    let (mut all, mut uninstalls) = (Vec::new(), Vec::new());
    for (n, seconds) in INSTANTS.into_iter().enumerate() {
        let request = if n % 3 == 1 {
            json!({"kind": "uninstall", "packages": ["six"]})
        } else {
            json!({"kind": "refresh"})
        };
        for org in [org, theirs] {
            let id = Uuid::now_v7();
            record::<Operation>(
                &app,
                org,
                id,
                &[(
                    "OperationQueued",
                    json!({"operation_id": id, "org_id": org, "request": request, "by": "test",
                        "at": at(seconds)}),
                )],
            )
            .await;
            if org != theirs {
                all.push((at(seconds), id));
                if n % 3 == 1 {
                    uninstalls.push((at(seconds), id));
                }
            }
        }
    }
    app.settle().await;
    assert_walk(&c, "/api/v1/operations", &newest_first(&all)).await;
    assert_walk(
        &c,
        "/api/v1/operations?type=uninstall",
        &newest_first(&uninstalls),
    )
    .await;
    // Every one is queued: in progress.
    assert_walk(&c, "/api/v1/operations?active=true", &newest_first(&all)).await;
}

/// A detection seen by camera `camera` at `seconds`.
fn recorded(org: Uuid, id: Uuid, camera: Uuid, kind: &str, seconds: i64) -> (&'static str, Value) {
    (
        "DetectionRecorded",
        json!({"detection_id": id, "org_id": org, "camera_id": camera, "detection_type": kind,
            "severity": "low", "confidence": 0.5, "source": {"kind": "api"},
            "occurred_at": at(seconds)}),
    )
}

#[actix_web::test]
async fn walking_detections_by_cursor_yields_each_once_newest_first_and_none_of_another_organization()
 {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let org = my_org(&c).await;
    let theirs = Uuid::now_v7();
    let camera = Uuid::now_v7();
    let (mut all, mut people) = (Vec::new(), Vec::new());
    for (n, seconds) in INSTANTS.into_iter().enumerate() {
        let kind = if n % 2 == 1 { "person" } else { "motion" };
        for org in [org, theirs] {
            let id = Uuid::now_v7();
            record::<Detection>(&app, org, id, &[recorded(org, id, camera, kind, seconds)]).await;
            if org != theirs {
                all.push((at(seconds), id));
                if kind == "person" {
                    people.push((at(seconds), id));
                }
            }
        }
    }
    app.settle().await;
    assert_walk(&c, "/api/v1/detections", &newest_first(&all)).await;
    assert_walk(&c, "/api/v1/detections?type=person", &newest_first(&people)).await;
    assert_walk(
        &c,
        "/api/v1/detections?acknowledged=false",
        &newest_first(&all),
    )
    .await;
}

#[actix_web::test]
async fn walking_organizations_by_cursor_yields_a_members_own_once_by_name_and_no_other() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let org = my_org(&c).await;
    let created = c
        .json(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "walker", "email": "walker@example.com",
                "password": "long enough", "organization_id": org, "role": "member"})),
            StatusCode::CREATED,
        )
        .await;
    let walker: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    // The walker's organizations, two of them with one name, and as many of others' with the
    // same names.
    let names = [
        "alpha", "bravo", "Bravo", "charlie", "echo", "foxtrot", "golf",
    ];
    let mut mine = Vec::new();
    for (n, name) in names.into_iter().enumerate() {
        for member in [true, false] {
            let id = Uuid::now_v7();
            let mut events = vec![(
                "OrganizationCreated",
                json!({"org_id": id, "name": name, "created_at": at(n as i64)}),
            )];
            if member {
                events.push((
                    "MemberAdded",
                    json!({"org_id": id, "user_id": walker, "role": "member", "at": at(n as i64)}),
                ));
                mine.push((OrgName::parse(name).unwrap().sort_key(), id));
            }
            record::<Organization>(&app, id, id, &events).await;
        }
    }
    app.settle().await;
    let default: String = sqlx::query_scalar("SELECT name_key FROM organizations WHERE id = $1")
        .bind(org)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    mine.push((default, org));
    mine.sort();
    let by_name: Vec<Uuid> = mine.iter().map(|(_, id)| *id).collect();
    let walker = Client {
        token: login(&app, "walker").await,
        app: &app,
    };
    assert_walk(&walker, "/api/v1/organizations", &by_name).await;
    let bravos: Vec<Uuid> = mine
        .iter()
        .filter(|(key, _)| key == "bravo")
        .map(|(_, id)| *id)
        .collect();
    assert_walk(&walker, "/api/v1/organizations?search=bravo", &bravos).await;
}

async fn login(app: &TestApp, username: &str) -> String {
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": username, "password": "long enough"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "login of {username}");
    res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[actix_web::test]
async fn every_list_refuses_a_tampered_cursor_or_one_made_for_another_sort_naming_the_cursor() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let project = create(&c, "One").await;
    create(&c, "Two").await;
    let seen = c.seen().await;
    // A real cursor, of the projects list sorted by creation.
    let projects = c
        .json(
            Method::GET,
            &format!("/api/v1/projects?per_page=1&{seen}"),
            None,
            StatusCode::OK,
        )
        .await;
    let of_projects = projects["pagination"]["next_cursor"].as_str().unwrap();
    let time = at(0).to_rfc3339();
    let lists = [
        (
            format!("/api/v1/projects/{project}/builds"),
            "-queued_at",
            time.as_str(),
        ),
        ("/api/v1/deployments".to_owned(), "-created_at", &time),
        ("/api/v1/environments".to_owned(), "-created_at", &time),
        (
            "/api/v1/ephemeral/environments".to_owned(),
            "-created_at",
            &time,
        ),
        ("/api/v1/operations".to_owned(), "-queued_at", &time),
        ("/api/v1/detections".to_owned(), "-occurred_at", &time),
        ("/api/v1/organizations".to_owned(), "name", "acme"),
    ];
    for (list, sort, key) in lists {
        // A cursor made for the list's own sort is taken…
        let own = forged_cursor(sort, key, Uuid::now_v7());
        c.json(
            Method::GET,
            &with(&list, &format!("cursor={own}")),
            None,
            StatusCode::OK,
        )
        .await;
        // …one made for another sort (or list) is not, nor one that is no cursor at all…
        let other_sort = if sort == "name" {
            forged_cursor("-created_at", &time, Uuid::now_v7())
        } else {
            forged_cursor("name", "acme", Uuid::now_v7())
        };
        let mut bad = vec![
            other_sort,
            of_projects.to_owned(),
            own[..own.len() - 3].to_owned(),
            "not%20a%20cursor".to_owned(),
        ];
        if sort != "name" {
            // Its own sort, with a key that is no time.
            bad.push(forged_cursor(sort, "yesterday", Uuid::nil()));
        }
        for bad in bad {
            assert_refused(&c, &with(&list, &format!("cursor={bad}")), "cursor").await;
        }
        // …and a page number beside one is refused for itself.
        assert_refused(&c, &with(&list, &format!("cursor={own}&page=2")), "page").await;
    }
}

#[actix_web::test]
async fn kept_totals_are_exact_on_every_page_after_recordings_and_deletions_and_filters_count_their_own_matches()
 {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let project = create(&c, "Built").await;
    let org = org_of(&app, &project).await;
    let project: Uuid = project.parse().unwrap();
    // Each list, its total, and the count its projection keeps.
    let mut lists: Vec<(String, i64)> = Vec::new();
    let mut kept: Vec<(&str, i64)> = Vec::new();

    for n in 0..4 {
        let id = Uuid::now_v7();
        let mut events = vec![queued(org, project, id, at(n))];
        if n == 0 {
            events.push((
                "BuildCancelled",
                json!({"build_id": id, "by": "test", "finished_at": at(n), "duration_ms": null}),
            ));
        }
        record::<Build>(&app, org, id, &events).await;
    }
    let builds = format!("/api/v1/projects/{project}/builds");
    lists.push((with(&builds, "status=cancelled"), 1));
    lists.push((builds, 4));
    kept.push((
        "SELECT builds FROM build_counts WHERE org_id = $1 AND project_id = $2",
        4,
    ));

    for n in 0..4 {
        let id = Uuid::now_v7();
        let request = if n == 0 {
            json!({"kind": "refresh"})
        } else {
            json!({"kind": "uninstall", "packages": ["six"]})
        };
        record::<Operation>(
            &app,
            org,
            id,
            &[(
                "OperationQueued",
                json!({"operation_id": id, "org_id": org, "request": request, "by": "test",
                    "at": at(n)}),
            )],
        )
        .await;
    }
    lists.push(("/api/v1/operations".into(), 4));
    lists.push(("/api/v1/operations?type=uninstall".into(), 3));
    kept.push((
        "SELECT operations FROM operation_counts WHERE org_id = $1 AND $2::uuid IS NOT NULL",
        4,
    ));

    let camera = Uuid::now_v7();
    let mut detections = Vec::new();
    for n in 0..4 {
        let id = Uuid::now_v7();
        let kind = if n == 0 { "person" } else { "motion" };
        record::<Detection>(&app, org, id, &[recorded(org, id, camera, kind, n)]).await;
        detections.push(id);
    }
    // A deleted detection leaves the count.
    let deleted = c
        .send(
            Method::DELETE,
            &format!("/api/v1/detections/{}", detections[1]),
            None,
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    lists.push(("/api/v1/detections".into(), 3));
    lists.push(("/api/v1/detections?type=person".into(), 1));
    kept.push((
        "SELECT detections FROM detection_counts WHERE org_id = $1 AND $2::uuid IS NOT NULL",
        3,
    ));

    let seen = c.seen().await;
    for (list, total) in lists {
        // One a page: the first page does not end the list, so its total is not inferred from
        // it; a page past the end has no row to carry it.
        for page in [1, 9] {
            let answer = c
                .json(
                    Method::GET,
                    &with(&list, &format!("per_page=1&page={page}&{seen}")),
                    None,
                    StatusCode::OK,
                )
                .await;
            let p = &answer["pagination"];
            assert_eq!(p["total"], total, "{list} page {page}: {p}");
            assert_eq!(p["total_capped"], false, "{list} page {page}: {p}");
        }
    }
    // The kept counts are rows of their projections, one per organization (and project).
    for (sql, count) in kept {
        let got: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(org)
            .bind(project)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(got, count, "{sql}");
    }
}
