//! `scale-bench`: what a request costs as an organization grows to 10³, 10⁵ and 10⁶ projects.
//!
//! For each size, ascending, it fills the log up to that many `ProjectCreated` events (the
//! event and metadata the command writes, appended straight to the store by concurrent
//! writers: the name reservations are skipped, which nothing below reads), waits for the
//! running server's projection to catch up (events/s), then times, sequentially, `--requests`
//! of each: the first list page, a page near the end by number (OFFSET) and the same depth by
//! cursor, a search, a single `GET`, a one-event `Exact` append to the store, and a command
//! (`PUT /api/v1/projects/{id}`). Last, at each size, it rebuilds `factory.projects` through
//! the admin API and reports its rate over the whole log.
//!
//! One markdown table (sizes as columns) on stdout; progress on stderr. `bench/scale.sh` starts
//! a server and runs it; see `bench/README.md`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use atelier_bench::{group, histogram};
use atelier_commands::handler::{CommandContext, stream_of};
use atelier_domain::factory::project::{Project, ProjectEvent, ProjectName, RepoUrl};
use atelier_store::postgres::{PgConfig, PgEventStore};
use atelier_store::{EventData, EventStore, ExpectedRevision, ReadStream, StreamName};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use uuid::Uuid;

/// Measures requests at growing numbers of projects.
#[derive(Parser, Debug, Clone)]
#[command(name = "scale-bench", version)]
struct Args {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:18082")]
    base_url: String,
    /// An access token of a superadmin (from `POST /api/v1/auth/login`).
    #[arg(long, env = "ATELIER_BENCH_TOKEN", hide_env_values = true)]
    token: String,
    /// The server's database, where the log is filled.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Numbers of projects to measure at, ascending, comma-separated.
    #[arg(long, default_value = "1000,100000,1000000", value_delimiter = ',')]
    sizes: Vec<u64>,
    /// Sequential requests per measure.
    #[arg(long, default_value_t = 200)]
    requests: u64,
    /// Concurrent writers filling the log (each project is its own stream; the store gathers
    /// concurrent appends into shared transactions).
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Rows per list page.
    #[arg(long, default_value_t = 20)]
    per_page: u64,
    /// Skip the rebuild of `factory.projects` at each size.
    #[arg(long)]
    no_rebuild: bool,
}

/// p50 and p99 in ms of one measure at one size.
type Cell = Option<(f64, f64)>;

const MEASURES: [&str; 7] = [
    "list, first page",
    "list, page near the end (`page=`, OFFSET)",
    "list, same depth by `cursor=`",
    "search (`search=`, a few matches)",
    "GET one project",
    "append 1 event, `Exact` (store)",
    "command: `PUT` a project",
];

struct Column {
    size: u64,
    cells: Vec<Cell>,
    fill_rate: f64,
    catch_up_rate: f64,
    rebuild: Option<(u64, f64)>,
    log_events: u64,
}

struct Bench {
    args: Args,
    http: reqwest::Client,
    store: PgEventStore,
    org_id: Uuid,
    /// Projects in the log so far.
    projects: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.sizes.windows(2).all(|w| w[0] < w[1]),
        "--sizes must ascend"
    );
    let store = PgEventStore::connect(PgConfig {
        max_connections: args.writers as u32 + 2,
        ..PgConfig::new(args.database_url.clone())
    })
    .await?;
    let http = reqwest::Client::new();
    let mut bench = Bench {
        args: args.clone(),
        http,
        store,
        org_id: Uuid::nil(),
        projects: 0,
    };
    bench.org_id = bench.organization().await?;
    let mut columns = Vec::new();
    for &size in &args.sizes {
        let started = Instant::now();
        let (fill_rate, catch_up_rate) = bench.fill(size).await?;
        let cells = bench.measure(size).await?;
        let rebuild = if args.no_rebuild {
            None
        } else {
            Some(bench.rebuild().await?)
        };
        let log_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(bench.store.pool())
            .await?;
        eprintln!(
            "{} projects measured in {:.0?}",
            group(size),
            started.elapsed()
        );
        columns.push(Column {
            size,
            cells,
            fill_rate,
            catch_up_rate,
            rebuild,
            log_events: log_events as u64,
        });
    }
    print!("{}", table(&columns));
    Ok(())
}

impl Bench {
    /// The organization the token acts in: that of a first project, made by the command.
    async fn organization(&mut self) -> Result<Uuid> {
        let res = self
            .http
            .post(self.url("/api/v1/projects"))
            .bearer_auth(&self.args.token)
            .json(&json!({"name": "Bench 0000000", "repo": "https://example.com/r.git"}))
            .send()
            .await?;
        ensure!(res.status() == 201, "creating a project: {}", res.status());
        let created: Value = res.json().await?;
        let id: Uuid = created["id"].as_str().context("no id")?.parse()?;
        self.projects = 1;
        // The stream's first event names the organization.
        let events = self
            .store
            .read_stream(&stream_of::<Project>(id), ReadStream::forward())
            .await?;
        let org = events
            .first()
            .and_then(|e| e.metadata.get("org_id"))
            .and_then(Value::as_str)
            .context("no org_id in the event's metadata")?;
        Ok(org.parse()?)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.args.base_url)
    }

    /// Appends `ProjectCreated` events up to `size` projects, then waits for the projection.
    /// (events/s appended, events/s projected from the first append to caught up).
    async fn fill(&mut self, size: u64) -> Result<(f64, f64)> {
        let missing = size.saturating_sub(self.projects);
        eprintln!("appending {} ProjectCreated events…", group(missing));
        let started = Instant::now();
        let org_id = self.org_id;
        let first = self.projects;
        let store = &self.store;
        let mut appends = futures::stream::iter(first..first + missing)
            .map(|n| async move {
                let project_id = Uuid::now_v7();
                let ctx = CommandContext::new(org_id, "bench");
                let event = ProjectEvent::ProjectCreated {
                    project_id,
                    org_id,
                    name: ProjectName::parse(&format!("Bench {n:07}"))?,
                    repo_url: RepoUrl::parse("https://example.com/r.git")?,
                    build_command: None,
                    created_at: ctx.occurred_at,
                };
                store
                    .append(
                        &stream_of::<Project>(project_id),
                        ExpectedRevision::NoStream,
                        ctx.encode(&[event], &[]),
                    )
                    .await?;
                anyhow::Ok(())
            })
            .buffer_unordered(self.args.writers);
        let mut done = 0u64;
        while let Some(r) = appends.next().await {
            r?;
            done += 1;
            if done.is_multiple_of(100_000) {
                eprintln!("  {} appended", group(done));
            }
        }
        drop(appends);
        let appended = started.elapsed();
        self.projects += missing;
        // Caught up: the projection's lag is zero and it shows every project.
        loop {
            let projections = self.get_json("/api/v1/admin/projections").await?;
            let lag = projections["data"]
                .as_array()
                .and_then(|all| all.iter().find(|p| p["name"] == "factory.projects"))
                .map(|p| p["lag_events"].as_u64().unwrap_or(u64::MAX))
                .context("no factory.projects")?;
            if lag == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let caught_up = started.elapsed();
        // What autovacuum does soon after a bulk load: the visibility map that lets the count
        // stop in the index, and the statistics that choose that plan. Measured right after
        // the load instead, the count takes a bitmap scan of the whole organization.
        sqlx::query("VACUUM ANALYZE projects")
            .execute(self.store.pool())
            .await?;
        let page = self.get_json("/api/v1/projects?per_page=1").await?;
        let total = page["pagination"]["total"].as_u64().unwrap_or(0);
        ensure!(total >= size.min(10_000), "the list shows {total} projects");
        let rate = |d: Duration| missing as f64 / d.as_secs_f64().max(1e-9);
        eprintln!(
            "  appended in {appended:.1?} ({:.0}/s), projected in {caught_up:.1?} ({:.0}/s)",
            rate(appended),
            rate(caught_up)
        );
        Ok((rate(appended), rate(caught_up)))
    }

    async fn get_json(&self, path: &str) -> Result<Value> {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.args.token)
            .send()
            .await?;
        let status = res.status();
        let body = res.text().await?;
        ensure!(status.is_success(), "GET {path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Times `requests` sequential GETs of `paths` (cycled).
    async fn time_gets(&self, paths: &[String]) -> Result<Cell> {
        let mut h = histogram()?;
        for i in 0..self.args.requests as usize {
            let path = &paths[i % paths.len()];
            let t = Instant::now();
            let res = self
                .http
                .get(self.url(path))
                .bearer_auth(&self.args.token)
                .send()
                .await?;
            let status = res.status();
            res.bytes().await?;
            h.record(t.elapsed().as_micros() as u64)?;
            ensure!(status.is_success(), "GET {path}: {status}");
        }
        Ok(cell(&h))
    }

    async fn measure(&self, size: u64) -> Result<Vec<Cell>> {
        let per_page = self.args.per_page;
        let base = format!("/api/v1/projects?per_page={per_page}");
        let last_page = self.projects.div_ceil(per_page);
        let deep = last_page.saturating_sub(1).max(1);
        // The cursor that leads to the same page, from the page before it.
        let cursor_path = if deep > 1 {
            let before = self.get_json(&format!("{base}&page={}", deep - 1)).await?;
            let cursor = before["pagination"]["next_cursor"]
                .as_str()
                .context("no next_cursor")?;
            let by_number = self.get_json(&format!("{base}&page={deep}")).await?;
            let by_cursor = self.get_json(&format!("{base}&cursor={cursor}")).await?;
            ensure!(
                by_number["data"] == by_cursor["data"],
                "page {deep} by number and by cursor differ"
            );
            format!("{base}&cursor={cursor}")
        } else {
            base.clone()
        };
        // 200 projects spread over the list, from the read model.
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM projects TABLESAMPLE BERNOULLI ($2::real) WHERE org_id = $1 LIMIT 200",
        )
        .bind(self.org_id)
        .bind((100.0 * 400.0 / self.projects as f64).min(100.0))
        .fetch_all(self.store.pool())
        .await?;
        ensure!(!ids.is_empty(), "no project to read");
        let gets: Vec<String> = ids
            .iter()
            .map(|id| format!("/api/v1/projects/{id}"))
            .collect();
        // "Bench 00042…": 10 matches at any size from 10⁵ up, one at 10³.
        let search = format!(
            "{base}&search=Bench%20{:05}",
            (size / 100).saturating_sub(1) % 100_000
        );
        eprintln!("measuring at {} projects (deep page {deep})…", group(size));
        let mut cells = vec![
            self.time_gets(std::slice::from_ref(&base)).await?,
            self.time_gets(&[format!("{base}&page={deep}")]).await?,
            self.time_gets(&[cursor_path]).await?,
            self.time_gets(&[search]).await?,
            self.time_gets(&gets).await?,
        ];
        cells.push(self.appends().await?);
        cells.push(self.commands(&ids).await?);
        Ok(cells)
    }

    /// One-event `Exact` appends to a stream of its own.
    async fn appends(&self) -> Result<Cell> {
        let stream = StreamName::new(format!("scalebench-{}", Uuid::now_v7()))?;
        let mut expected = ExpectedRevision::NoStream;
        let mut h = histogram()?;
        for i in 0..self.args.requests {
            let event = EventData::new("Measured", json!({"n": i, "pad": "x".repeat(150)}));
            let t = Instant::now();
            let r = self.store.append(&stream, expected, vec![event]).await?;
            h.record(t.elapsed().as_micros() as u64)?;
            expected = ExpectedRevision::Exact(r.next_expected_revision);
        }
        Ok(cell(&h))
    }

    /// `PUT /api/v1/projects/{id}`: a new build command, the same name and repository.
    async fn commands(&self, ids: &[Uuid]) -> Result<Cell> {
        let mut h = histogram()?;
        for i in 0..self.args.requests as usize {
            let id = ids[i % ids.len()];
            let name: String = sqlx::query_scalar("SELECT name FROM projects WHERE id = $1")
                .bind(id)
                .fetch_one(self.store.pool())
                .await?;
            let t = Instant::now();
            let res = self
                .http
                .put(self.url(&format!("/api/v1/projects/{id}")))
                .bearer_auth(&self.args.token)
                .json(&json!({"name": name, "repo": "https://example.com/r.git", "build_command": format!("make {i}")}))
                .send()
                .await?;
            let status = res.status();
            res.bytes().await?;
            h.record(t.elapsed().as_micros() as u64)?;
            ensure!(status.is_success(), "PUT {id}: {status}");
        }
        Ok(cell(&h))
    }

    /// Rebuilds `factory.projects` beside its read model: (events read, events/s).
    async fn rebuild(&self) -> Result<(u64, f64)> {
        eprintln!("rebuilding factory.projects…");
        let res = self
            .http
            .post(self.url("/api/v1/admin/projections/factory.projects/rebuild"))
            .bearer_auth(&self.args.token)
            .send()
            .await?;
        ensure!(res.status() == 202, "rebuild: {}", res.status());
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let projections = self.get_json("/api/v1/admin/projections").await?;
            let Some(p) = projections["data"]
                .as_array()
                .and_then(|all| all.iter().find(|p| p["name"] == "factory.projects"))
            else {
                bail!("no factory.projects");
            };
            let rebuild = &p["rebuild"];
            if rebuild["running"] == false {
                if let Some(e) = rebuild["error"].as_str() {
                    bail!("the rebuild failed: {e}");
                }
                let events = rebuild["events"].as_u64().unwrap_or(0);
                let seconds = match (
                    rebuild["started_at"]
                        .as_str()
                        .map(chrono::DateTime::parse_from_rfc3339),
                    rebuild["finished_at"]
                        .as_str()
                        .map(chrono::DateTime::parse_from_rfc3339),
                ) {
                    (Some(Ok(a)), Some(Ok(b))) => (b - a).num_milliseconds() as f64 / 1000.0,
                    _ => started.elapsed().as_secs_f64(),
                };
                return Ok((events, events as f64 / seconds.max(1e-3)));
            }
            ensure!(
                started.elapsed() < Duration::from_secs(3600),
                "the rebuild takes more than an hour"
            );
        }
    }
}

fn cell(h: &Histogram<u64>) -> Cell {
    Some((
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}

fn table(columns: &[Column]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = write!(out, "| p50 / p99 ms |");
    for c in columns {
        let _ = write!(out, " {} projects |", group(c.size));
    }
    let _ = write!(out, "\n|---|");
    for _ in columns {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for (i, measure) in MEASURES.iter().enumerate() {
        let _ = write!(out, "| {measure} |");
        for c in columns {
            match c.cells[i] {
                Some((p50, p99)) => {
                    let _ = write!(out, " {p50:.2} / {p99:.2} |");
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    let mut rate_row = |name: &str, f: &dyn Fn(&Column) -> String| {
        let _ = write!(out, "| {name} |");
        for c in columns {
            let _ = write!(out, " {} |", f(c));
        }
        out.push('\n');
    };
    rate_row("fill: `ProjectCreated` appended, events/s", &|c| {
        group(c.fill_rate as u64)
    });
    rate_row("projection catch-up during the fill, events/s", &|c| {
        group(c.catch_up_rate as u64)
    });
    rate_row(
        "rebuild of `factory.projects`, events/s (events read)",
        &|c| {
            c.rebuild.map_or("–".into(), |(events, rate)| {
                format!("{} ({})", group(rate as u64), group(events))
            })
        },
    );
    rate_row("events in the log", &|c| group(c.log_events));
    out
}
