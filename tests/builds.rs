//! Builds through real HTTP: the simulated driver end to end, the shell driver against a local
//! git repository the test creates (success, failure, timeout, cancel), logs from an offset and
//! followed live, a runner crash, and the refusals.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use atelier_commands::factory::{ProjectInput, ProjectService, RepoPolicy};
use atelier_commands::handler::CommandContext;
use atelier_domain::factory::project::{BuildCommand, ProjectName, RepoUrl};
use atelier_http::server::{BuildSettings, DriverSettings, ServerConfig};
use common::TestApp;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn simulated() -> ServerConfig {
    ServerConfig {
        builds: Some(BuildSettings {
            runner_id: "test-runner".to_owned(),
            concurrency: 4,
            driver: DriverSettings::Simulated {
                // 2 to 10 s become 2 to 10 ms.
                time_scale: 0.001,
                failure_rate: 0.0,
            },
        }),
        ..TestApp::config()
    }
}

fn shell(work_dir: &Path, timeout: Duration) -> ServerConfig {
    ServerConfig {
        builds: Some(BuildSettings {
            runner_id: "test-runner".to_owned(),
            concurrency: 4,
            driver: DriverSettings::Shell {
                work_dir: work_dir.to_owned(),
                timeout,
            },
        }),
        // The test's repositories are on this disk.
        ..TestApp::config_with_local_repos()
    }
}

/// A git repository with one commit, in a temporary directory.
fn git_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README"), "hello from the test repository\n").unwrap();
    for args in [
        &["init", "--quiet", "--initial-branch=main"][..],
        &["add", "README"],
        &[
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "--quiet",
            "-m",
            "first",
        ],
    ] {
        let status = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?} failed");
    }
    repo
}

struct Client<'a> {
    app: &'a TestApp,
    token: String,
}

impl<'a> Client<'a> {
    async fn new(app: &'a TestApp) -> Self {
        Self {
            token: app.token().await,
            app,
        }
    }

    async fn send(
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

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        status: StatusCode,
    ) -> Value {
        let res = self.send(method, path, body).await;
        let got = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(got, status, "{path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn project(&self, repo: &str, build_command: Option<&str>) -> String {
        let body = json!({"name": format!("p-{}", uuid::Uuid::now_v7()), "repo": repo, "build_command": build_command});
        let p = self
            .json(
                reqwest::Method::POST,
                "/api/v1/projects",
                Some(body),
                StatusCode::CREATED,
            )
            .await;
        p["id"].as_str().unwrap().to_owned()
    }

    async fn trigger(&self, project: &str) -> Value {
        self.json(
            reqwest::Method::POST,
            &format!("/api/v1/projects/{project}/build"),
            None,
            StatusCode::ACCEPTED,
        )
        .await
    }

    /// Follows a build's log as server-sent events from `offset` until its `end` event (or
    /// until `until` returns true for a line): the lines, and the end's data.
    async fn follow(
        &self,
        build: &str,
        offset: i64,
        until: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, Option<Value>) {
        let res = self
            .send(
                reqwest::Method::GET,
                &format!(
                    "/api/v1/builds/{build}/logs?follow=true&offset={offset}&{}",
                    self.seen().await
                ),
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut stream = res.bytes_stream();
        let mut buf = String::new();
        let mut lines = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let chunk = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("the followed log did not end in time");
            let Some(chunk) = chunk else {
                return (lines, None);
            };
            buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let mut kind = "";
                let mut data = "";
                let mut id = None;
                for l in event.lines() {
                    if let Some(v) = l.strip_prefix("event: ") {
                        kind = v;
                    } else if let Some(v) = l.strip_prefix("data: ") {
                        data = v;
                    } else if let Some(v) = l.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    }
                }
                match kind {
                    "log" => {
                        let line: Value = serde_json::from_str(data).unwrap();
                        assert_eq!(id.as_deref(), Some(line["seq"].to_string().as_str()));
                        let stop = until(&line);
                        lines.push(line);
                        if stop {
                            return (lines, None);
                        }
                    }
                    "end" => return (lines, Some(serde_json::from_str(data).unwrap())),
                    _ => {}
                }
            }
        }
    }

    /// `min_position=<head>`: a read that sees every write made so far (read-your-writes).
    async fn seen(&self) -> String {
        match self.app.last_written().await {
            Some(head) => format!("min_position={head}"),
            None => String::new(),
        }
    }

    async fn build(&self, id: &str) -> Value {
        self.json(
            reqwest::Method::GET,
            &format!("/api/v1/builds/{id}?{}", self.seen().await),
            None,
            StatusCode::OK,
        )
        .await
    }
}

fn texts(lines: &[Value], stream: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["stream"] == stream)
        .map(|l| l["line"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn a_simulated_build_runs_from_queued_to_succeeded_and_shows_on_its_project_and_stats() {
    let app = TestApp::spawn_with(simulated()).await;
    let c = Client::new(&app).await;
    let project = c
        .project("https://example.com/demo.git", Some("make"))
        .await;
    let queued = c.trigger(&project).await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["project_id"], project.as_str());
    let id = queued["id"].as_str().unwrap();
    let (lines, end) = c.follow(id, 0, |_| false).await;
    assert_eq!(end.unwrap()["status"], "succeeded");
    assert!(texts(&lines, "stdout").contains(&"Build succeeded".to_owned()));
    app.settle().await;
    let b = c.build(id).await;
    assert_eq!(b["status"], "succeeded");
    assert_eq!(b["exit_code"], 0);
    assert_eq!(b["runner"], "test-runner");
    assert!(b["started_at"].is_string() && b["finished_at"].is_string());
    assert!(b["duration_s"].as_f64().unwrap() >= 0.0);
    let p = c
        .json(
            reqwest::Method::GET,
            &format!("/api/v1/projects/{project}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(p["last_build_status"], "succeeded");
    assert_eq!(p["last_build_id"], id);
    let stats = c
        .json(reqwest::Method::GET, "/api/v1/stats", None, StatusCode::OK)
        .await;
    assert_eq!(stats["factory"]["projects"], 1);
    assert_eq!(stats["factory"]["builds"]["succeeded"], 1);
    assert_eq!(stats["factory"]["builds_total"], 1);
    assert_eq!(stats["factory"]["success_rate"], 1.0);
    assert!(stats["factory"]["median_duration_s"].as_f64().is_some());
    let list = c
        .json(
            reqwest::Method::GET,
            &format!("/api/v1/projects/{project}/builds?status=succeeded"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["pagination"]["total"], 1);
    assert_eq!(list["data"][0]["id"], id);
    app.stop().await;
}

#[actix_web::test]
async fn a_retried_trigger_with_the_same_idempotency_key_makes_one_build() {
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let project = c.project("https://example.com/demo.git", None).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let res = app
            .client
            .post(app.url(&format!("/api/v1/projects/{project}/builds")))
            .bearer_auth(&c.token)
            .header("idempotency-key", "trigger-1")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        ids.push(res.json::<Value>().await.unwrap()["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]));
    app.settle().await;
    let list = c
        .json(
            reqwest::Method::GET,
            &format!("/api/v1/projects/{project}/builds"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["pagination"]["total"], 1);
    app.stop().await;
}

#[actix_web::test]
async fn unknown_or_deleted_projects_and_unknown_builds_are_not_found_and_bad_filters_are_refused()
{
    let app = TestApp::spawn().await;
    let c = Client::new(&app).await;
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/api/v1/projects/{unknown}/build"),
        "/api/v1/projects/not-a-uuid/build".to_owned(),
        format!("/api/v1/builds/{unknown}/cancel"),
        format!("/api/v1/builds/{unknown}/restart"),
    ] {
        let body = c
            .json(reqwest::Method::POST, &path, None, StatusCode::NOT_FOUND)
            .await;
        assert_eq!(body["code"], "NOT_FOUND", "{path}");
    }
    for path in [
        format!("/api/v1/builds/{unknown}"),
        format!("/api/v1/builds/{unknown}/logs"),
        format!("/api/v1/projects/{unknown}/builds"),
    ] {
        c.json(reqwest::Method::GET, &path, None, StatusCode::NOT_FOUND)
            .await;
    }
    let project = c.project("https://example.com/demo.git", None).await;
    let body = c
        .json(
            reqwest::Method::GET,
            &format!("/api/v1/projects/{project}/builds?status=success&min_position=0%2F0"),
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(body["errors"][0]["field"], "status");
    let build = c.trigger(&project).await;
    let id = build["id"].as_str().unwrap();
    let res = c
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/projects/{project}"),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let body = c
        .json(
            reqwest::Method::POST,
            &format!("/api/v1/projects/{project}/build"),
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(body["detail"], "no such project");
    // A queued build is cancelled; a cancelled one cannot be restarted once its project is gone.
    let cancelled = c
        .json(
            reqwest::Method::POST,
            &format!("/api/v1/builds/{id}/cancel"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    c.json(
        reqwest::Method::POST,
        &format!("/api/v1/builds/{id}/restart"),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    // Nothing but the first build was written.
    app.settle().await;
    let builds: i64 = sqlx::query_scalar("SELECT count(*) FROM builds")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(builds, 1);
    app.stop().await;
}

#[actix_web::test]
async fn a_shell_build_clones_the_repository_and_runs_its_command_with_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git_repo(dir.path());
    let work = dir.path().join("work");
    let app = TestApp::spawn_with(shell(&work, Duration::from_secs(20))).await;
    let c = Client::new(&app).await;
    let command = "cat README; for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2; \
                   echo secret=${ATELIER_ADMIN_PASSWORD:-none} build=${ATELIER_BUILD_ID}";
    let project = c
        .project(&format!("file://{}", repo.display()), Some(command))
        .await;
    let id = c.trigger(&project).await["id"].as_str().unwrap().to_owned();
    let (lines, end) = c.follow(&id, 0, |_| false).await;
    assert_eq!(end.unwrap()["status"], "succeeded");
    let out = texts(&lines, "stdout");
    assert_eq!(out[0], "hello from the test repository");
    assert_eq!(&out[1..6], ["line1", "line2", "line3", "line4", "line5"]);
    assert_eq!(out[6], format!("secret=none build={id}"));
    assert_eq!(texts(&lines, "stderr"), ["oops"]);
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (0..seqs.len() as i64).collect::<Vec<_>>());
    // Read from an offset, in pages.
    let page = c
        .json(
            reqwest::Method::GET,
            &format!("/api/v1/builds/{id}/logs?offset=2&limit=3"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    assert_eq!(page["data"][0]["seq"], 2);
    assert_eq!(page["next_offset"], 5);
    assert_eq!(page["finished"], true);
    // A follower resuming after the last line it saw gets the rest, then the end.
    let (rest, end) = c.follow(&id, 4, |_| false).await;
    assert_eq!(rest[0]["seq"], 4);
    assert_eq!(rest.len(), lines.len() - 4);
    assert!(end.is_some());
    // The build directory is gone.
    assert!(!work.join(format!("build-{id}")).exists());
    app.stop().await;
}

#[actix_web::test]
async fn a_failing_command_fails_the_build_with_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git_repo(dir.path());
    let app = TestApp::spawn_with(shell(&dir.path().join("work"), Duration::from_secs(20))).await;
    let c = Client::new(&app).await;
    let project = c
        .project(
            &format!("file://{}", repo.display()),
            Some("echo about to fail; exit 3"),
        )
        .await;
    let id = c.trigger(&project).await["id"].as_str().unwrap().to_owned();
    let (lines, end) = c.follow(&id, 0, |_| false).await;
    let end = end.unwrap();
    assert_eq!(
        (end["status"].as_str(), end["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );
    assert!(texts(&lines, "stdout").contains(&"about to fail".to_owned()));
    app.settle().await;
    let b = c.build(&id).await;
    assert_eq!(b["failure"], "exit_status");
    assert_eq!(b["message"], "exited with status 3");
    // A repository that cannot be cloned fails the build as an error.
    let missing = c
        .project(
            &format!("file://{}/missing", dir.path().display()),
            Some("true"),
        )
        .await;
    let id = c.trigger(&missing).await["id"].as_str().unwrap().to_owned();
    let (_, end) = c.follow(&id, 0, |_| false).await;
    assert_eq!(end.unwrap()["status"], "failed");
    app.settle().await;
    assert_eq!(c.build(&id).await["failure"], "error");
    app.stop().await;
}

#[actix_web::test]
async fn a_build_over_its_timeout_is_killed_and_failed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git_repo(dir.path());
    let app = TestApp::spawn_with(shell(&dir.path().join("work"), Duration::from_secs(2))).await;
    let c = Client::new(&app).await;
    let project = c
        .project(
            &format!("file://{}", repo.display()),
            Some("echo waiting; sleep 60"),
        )
        .await;
    let id = c.trigger(&project).await["id"].as_str().unwrap().to_owned();
    let (_, end) = c.follow(&id, 0, |_| false).await;
    assert_eq!(end.unwrap()["status"], "failed");
    app.settle().await;
    let b = c.build(&id).await;
    assert_eq!(b["failure"], "timed_out");
    assert!(b["duration_s"].as_f64().unwrap() < 30.0);
    app.stop().await;
}

fn process_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

async fn wait_for_death(pid: i32) {
    for _ in 0..200 {
        if !process_alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("process {pid} is still alive");
}

#[actix_web::test]
async fn cancelling_a_running_build_kills_its_processes_and_a_finished_build_can_be_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git_repo(dir.path());
    let pidfile = dir.path().join("pid");
    let app = TestApp::spawn_with(shell(&dir.path().join("work"), Duration::from_secs(60))).await;
    let c = Client::new(&app).await;
    // A grandchild in the background: cancel must kill the whole process group.
    let command = format!(
        "sleep 300 & echo $! > {}; echo started; wait",
        pidfile.display()
    );
    let project = c
        .project(&format!("file://{}", repo.display()), Some(&command))
        .await;
    let id = c.trigger(&project).await["id"].as_str().unwrap().to_owned();
    let (lines, _) = c.follow(&id, 0, |l| l["line"] == "started").await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(process_alive(pid));
    let cancelled = c
        .json(
            reqwest::Method::POST,
            &format!("/api/v1/builds/{id}/cancel"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert!(
        cancelled["runner"].as_str().is_some_and(|r| !r.is_empty()),
        "the answer names the runner that ran it: {cancelled}"
    );
    wait_for_death(pid).await;
    let (_, end) = c.follow(&id, lines.len() as i64, |_| false).await;
    assert_eq!(end.unwrap()["status"], "cancelled");
    // A second cancel changes nothing; a finished build cannot be cancelled.
    c.json(
        reqwest::Method::POST,
        &format!("/api/v1/builds/{id}/cancel"),
        None,
        StatusCode::OK,
    )
    .await;
    let restarted = c
        .json(
            reqwest::Method::POST,
            &format!("/api/v1/builds/{id}/restart"),
            None,
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(restarted["restart_of"], id.as_str());
    let new_id = restarted["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    c.follow(&new_id, 0, |l| l["line"] == "started").await;
    let body = c
        .json(
            reqwest::Method::POST,
            &format!("/api/v1/builds/{new_id}/restart"),
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(body["code"], "CONFLICT");
    c.json(
        reqwest::Method::POST,
        &format!("/api/v1/builds/{new_id}/cancel"),
        None,
        StatusCode::OK,
    )
    .await;
    let (_, end) = c.follow(&new_id, 0, |_| false).await;
    assert_eq!(end.unwrap()["status"], "cancelled");
    let body = c
        .json(
            reqwest::Method::POST,
            &format!("/api/v1/builds/{id}/cancel"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(body["status"], "cancelled");
    app.stop().await;
}

#[actix_web::test]
async fn a_build_left_running_by_a_runner_crash_is_failed_as_interrupted_when_the_runner_restarts()
{
    let dir = tempfile::tempdir().unwrap();
    let repo = git_repo(dir.path());
    let pidfile = dir.path().join("pid");
    let config = shell(&dir.path().join("work"), Duration::from_secs(60));
    let settings = config.builds.clone().unwrap();
    let app = TestApp::spawn_with(config).await;
    let c = Client::new(&app).await;
    let command = format!(
        "sleep 300 & echo $! > {}; echo started; wait",
        pidfile.display()
    );
    let project = c
        .project(&format!("file://{}", repo.display()), Some(&command))
        .await;
    let id = c.trigger(&project).await["id"].as_str().unwrap().to_owned();
    c.follow(&id, 0, |l| l["line"] == "started").await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The crash: the runner stops with the build in flight; its processes go with it.
    app.services.stop_workers().await;
    wait_for_death(pid).await;
    app.settle().await;
    assert_eq!(c.build(&id).await["status"], "running");
    // Queued while no runner runs: the restarted runner takes it.
    let quick = c
        .project(&format!("file://{}", repo.display()), Some("echo quick"))
        .await;
    let queued = c.trigger(&quick).await["id"].as_str().unwrap().to_owned();
    let runner = atelier_http::server::start_runner(&app.services, &settings);
    app.services.add_worker(Box::new(runner)).await;
    let (lines, end) = c.follow(&id, 0, |_| false).await;
    assert_eq!(end.unwrap()["status"], "failed");
    assert_eq!(
        lines.last().unwrap()["line"],
        "the runner stopped while the build ran"
    );
    let (_, end) = c.follow(&queued, 0, |_| false).await;
    assert_eq!(end.unwrap()["status"], "succeeded");
    app.settle().await;
    let b = c.build(&id).await;
    assert_eq!(b["failure"], "interrupted");
    app.stop().await;
}

#[actix_web::test]
async fn the_shell_driver_refuses_to_clone_a_local_repository_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git_repo(dir.path());
    let marker = dir.path().join("cloned");
    let config = ServerConfig {
        repos: RepoPolicy::default(),
        ..shell(&dir.path().join("work"), Duration::from_secs(20))
    };
    let app = TestApp::spawn_with(config).await;
    let c = Client::new(&app).await;
    // A project that names this disk, recorded before local repositories were disallowed (the
    // API refuses to create one now).
    let org_id: String =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'default_org_id'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let ctx = CommandContext::new(org_id.parse().unwrap(), "test:before");
    let written = ProjectService::new(Arc::new(app.store.clone()))
        .with_repo_policy(RepoPolicy::ALLOW_LOCAL)
        .create(
            &ctx,
            ProjectInput {
                name: ProjectName::parse("from before").unwrap(),
                repo_url: RepoUrl::parse(&format!("file://{}", repo.display())).unwrap(),
                build_command: Some(
                    BuildCommand::parse(&format!("touch {}", marker.display())).unwrap(),
                ),
            },
        )
        .await
        .unwrap();
    let project = written.state.active().unwrap().id.to_string();
    app.settle().await;
    let id = c.trigger(&project).await["id"].as_str().unwrap().to_owned();
    let (lines, end) = c.follow(&id, 0, |_| false).await;
    assert_eq!(end.unwrap()["status"], "failed");
    let system = texts(&lines, "system");
    assert!(
        system.iter().all(|l| !l.starts_with("$ git clone")),
        "{system:?}"
    );
    assert!(
        system
            .iter()
            .any(|l| l.starts_with("not cloned: the repository is on the server's own disk")),
        "{system:?}"
    );
    assert!(!marker.exists(), "the build command ran");
    app.settle().await;
    assert_eq!(c.build(&id).await["failure"], "error");
    app.stop().await;
}
