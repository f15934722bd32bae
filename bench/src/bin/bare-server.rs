//! The limit the API's rows are read against: a bare actix-web + sqlx server, the same runtime,
//! pool size and JSON as Atelier, and nothing else (no authentication, no event store, no
//! projection, no middleware). `bench/api.sh` drives it with the same wrk settings as Atelier,
//! against the same database, so each API row reads "x req/s = r × the bare handler".
//!
//! - `PUT /bare/items/{id}`: reads a JSON body of a project update's size and INSERTs one row
//!   into `bare_items` (created on start): the least a command over HTTP can cost.
//! - `GET /bare/projects?page=&search=`: a page of 20 of the organization's projects from
//!   Atelier's own `projects` read model, by name, with the cheapest correct SQL for a page
//!   ([`CHEAPEST_PAGE_SQL`], [`CHEAPEST_SEARCH_SQL`]: no total, an index walk with OFFSET; see
//!   bench/README.md).
//! - `GET /bare/projects-as-atelier?page=&search=`: the same page with the SQL Atelier runs
//!   ([`ATELIER_PAGE_SQL`], `list_projects` in projections/src/factory/projects.rs, verbatim).

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Parser;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// Rows per page, as the bench asks Atelier for.
const PER_PAGE: i64 = 20;

/// The cheapest correct SQL for "page n of the organization's projects by name": the page's rows
/// only (no total), in the list's order, read in that order from an index on
/// `(org_id, name_key, id)` and stopped after OFFSET + 20 rows.
const CHEAPEST_PAGE_SQL: &str = "SELECT id, name, repo_url, build_command, revision, \
     created_at, updated_at, last_build_status, last_build_id, last_build_at \
     FROM projects WHERE org_id = $1 ORDER BY name_key, id LIMIT $2 OFFSET $3";

/// The same with a search: a substring ILIKE cannot use a b-tree, so it filters the same walk
/// (or, for few matches, PostgreSQL reads the organization's rows and sorts the matches).
const CHEAPEST_SEARCH_SQL: &str = "SELECT id, name, repo_url, build_command, revision, \
     created_at, updated_at, last_build_status, last_build_id, last_build_at \
     FROM projects WHERE org_id = $1 AND name ILIKE $2 ORDER BY name_key, id LIMIT $3 OFFSET $4";

/// Atelier's list SQL (`list_projects` through `projections::sql::list_page`, sorted by name,
/// page by number), verbatim: the page with one row more (`LIMIT` 21: is there a next?), the
/// sort key of each row (the last one's makes the next cursor), and the total as an
/// uncorrelated subquery; a statement of its own with and without a search, numbered as its
/// parameters come. Without a search the total is the organization's kept count
/// (`project_counts`).
const ATELIER_PAGE_SQL: &str = "SELECT id, org_id, name, repo_url, build_command, revision, \
     created_at, updated_at, created_by, last_build_status, last_build_id, last_build_at, \
     name_key AS keyset_key, (SELECT COALESCE((SELECT projects FROM project_counts \
     WHERE org_id = $1), 0)) AS bounded_total \
     FROM projects WHERE org_id = $1 ORDER BY name_key ASC, id ASC LIMIT $2 OFFSET $3";

/// The same with a search: the count of at most `$5` matches (10,000, or through the row after
/// the page).
const ATELIER_SEARCH_SQL: &str = "SELECT id, org_id, name, repo_url, build_command, revision, \
     created_at, updated_at, created_by, last_build_status, last_build_id, last_build_at, \
     name_key AS keyset_key, (SELECT count(*) FROM (SELECT 1 FROM projects WHERE org_id = $1 \
     AND name ILIKE $2 LIMIT $5) AS bounded) AS bounded_total \
     FROM projects WHERE org_id = $1 AND name ILIKE $2 \
     ORDER BY name_key ASC, id ASC LIMIT $3 OFFSET $4";

/// Atelier's total for a page past the end (`list_page`'s second statement), verbatim: the
/// kept count without a search…
const ATELIER_COUNT_SQL: &str = "SELECT (SELECT COALESCE((SELECT projects FROM project_counts \
     WHERE org_id = $1), 0))";

/// …and the bounded count with one.
const ATELIER_SEARCH_COUNT_SQL: &str = "SELECT (SELECT count(*) FROM (SELECT 1 FROM projects \
     WHERE org_id = $1 AND name ILIKE $2 LIMIT $3) AS bounded)";

/// Atelier's cap on a count.
const COUNT_CAP: i64 = 10_000;

#[derive(Parser, Debug)]
#[command(about = "A bare actix-web + sqlx server: the limit the API bench compares Atelier with")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18090")]
    listen: String,
    /// The database (Atelier's, for its `projects` table).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The organization whose projects the list routes read.
    #[arg(long)]
    org_id: Uuid,
    /// Pool size; by default Atelier's (`ATELIER_DB_POOL_SIZE`'s default: 4 per core, 8 to 64).
    #[arg(long)]
    pool_size: Option<u32>,
}

/// Atelier's default pool size (`DbArgs::pool_size` in src/cli.rs).
fn atelier_pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(cores * 4).unwrap_or(64).clamp(8, 64)
}

struct State {
    pool: PgPool,
    org_id: Uuid,
}

/// A project update's body (`PUT /api/v1/projects/{id}` in the bench).
#[derive(Deserialize, Serialize)]
struct ItemBody {
    name: String,
    repo: String,
    build_command: Option<String>,
}

#[derive(Serialize)]
struct Written {
    id: Uuid,
    seq: i64,
}

#[derive(Deserialize)]
struct PageParams {
    page: Option<u32>,
    search: Option<String>,
}

/// One project, as Atelier's `ProjectView` shows it.
#[derive(sqlx::FromRow, Serialize)]
struct ProjectView {
    id: Uuid,
    name: String,
    #[sqlx(rename = "repo_url")]
    repo: String,
    build_command: Option<String>,
    revision: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_build_status: Option<String>,
    last_build_id: Option<Uuid>,
    last_build_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Counted {
    #[sqlx(flatten)]
    row: ProjectView,
    #[sqlx(rename = "bounded_total")]
    total: i64,
}

#[derive(Serialize)]
struct Pagination {
    page: u32,
    per_page: i64,
    total: Option<i64>,
}

#[derive(Serialize)]
struct Page {
    data: Vec<ProjectView>,
    pagination: Pagination,
}

fn internal(e: impl std::fmt::Display) -> actix_web::Error {
    actix_web::error::ErrorInternalServerError(e.to_string())
}

/// `projections::sql::like_pattern`: the search is matched literally, as a substring.
fn like_pattern(search: &str) -> String {
    let escaped = search
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// (page, OFFSET, ILIKE pattern) of a request.
fn page_of(params: &PageParams) -> (u32, i64, Option<String>) {
    let page = params.page.unwrap_or(1).max(1);
    let offset = i64::from(page - 1) * PER_PAGE;
    (page, offset, params.search.as_deref().map(like_pattern))
}

async fn insert_item(
    state: web::Data<State>,
    path: web::Path<Uuid>,
    body: web::Json<ItemBody>,
) -> actix_web::Result<HttpResponse> {
    let item = path.into_inner();
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO bare_items (item, body, at) VALUES ($1, $2, now()) RETURNING id",
    )
    .bind(item)
    .bind(sqlx::types::Json(body.into_inner()))
    .fetch_one(&state.pool)
    .await
    .map_err(internal)?;
    Ok(HttpResponse::Ok().json(Written { id: item, seq }))
}

async fn cheapest_page(
    state: web::Data<State>,
    params: web::Query<PageParams>,
) -> actix_web::Result<HttpResponse> {
    let (page, offset, pattern) = page_of(&params);
    // One statement each, so neither plan carries the other's condition.
    let query = match &pattern {
        None => sqlx::query_as::<_, ProjectView>(CHEAPEST_PAGE_SQL).bind(state.org_id),
        Some(p) => sqlx::query_as::<_, ProjectView>(CHEAPEST_SEARCH_SQL)
            .bind(state.org_id)
            .bind(p),
    };
    let data = query
        .bind(PER_PAGE)
        .bind(offset)
        .fetch_all(&state.pool)
        .await
        .map_err(internal)?;
    Ok(HttpResponse::Ok().json(Page {
        data,
        pagination: Pagination {
            page,
            per_page: PER_PAGE,
            total: None,
        },
    }))
}

async fn atelier_page(
    state: web::Data<State>,
    params: web::Query<PageParams>,
) -> actix_web::Result<HttpResponse> {
    let (page, offset, pattern) = page_of(&params);
    let cap = COUNT_CAP.max(offset + PER_PAGE + 1);
    let sql = if pattern.is_some() {
        ATELIER_SEARCH_SQL
    } else {
        ATELIER_PAGE_SQL
    };
    let query = sqlx::query_as::<_, Counted>(sql).bind(state.org_id);
    let query = match pattern.as_deref() {
        Some(p) => query.bind(p).bind(PER_PAGE + 1).bind(offset).bind(cap),
        None => query.bind(PER_PAGE + 1).bind(offset),
    };
    let mut rows = query.fetch_all(&state.pool).await.map_err(internal)?;
    rows.truncate(PER_PAGE as usize);
    let total = match (rows.first(), pattern.as_deref()) {
        (Some(r), _) => r.total,
        (None, Some(p)) => sqlx::query_scalar(ATELIER_SEARCH_COUNT_SQL)
            .bind(state.org_id)
            .bind(p)
            .bind(cap)
            .fetch_one(&state.pool)
            .await
            .map_err(internal)?,
        (None, None) => sqlx::query_scalar(ATELIER_COUNT_SQL)
            .bind(state.org_id)
            .fetch_one(&state.pool)
            .await
            .map_err(internal)?,
    };
    Ok(HttpResponse::Ok().json(Page {
        data: rows.into_iter().map(|r| r.row).collect(),
        pagination: Pagination {
            page,
            per_page: PER_PAGE,
            total: Some(total),
        },
    }))
}

#[actix_web::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.pool_size.unwrap_or_else(atelier_pool_size))
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&args.database_url)
        .await
        .context("cannot connect to the database")?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS bare_items \
         (id bigserial PRIMARY KEY, item uuid, body jsonb, at timestamptz)",
    )
    .execute(&pool)
    .await
    .context("creating bare_items")?;
    let state = web::Data::new(State {
        pool,
        org_id: args.org_id,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/bare/items/{id}", web::put().to(insert_item))
            .route("/bare/projects", web::get().to(cheapest_page))
            .route("/bare/projects-as-atelier", web::get().to(atelier_page))
            .route("/health", web::get().to(HttpResponse::Ok))
    })
    .bind(&args.listen)
    .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("bare-server listening on http://{}", args.listen);
    server.run().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_searches_are_read_as_atelier_reads_them() {
        let (page, offset, pattern) = page_of(&PageParams {
            page: Some(3),
            search: Some("50%_a".into()),
        });
        assert_eq!((page, offset), (3, 40));
        assert_eq!(pattern.as_deref(), Some("%50\\%\\_a%"));
        assert_eq!(
            page_of(&PageParams {
                page: Some(0),
                search: None
            })
            .1,
            0
        );
        assert!((8..=64).contains(&atelier_pool_size()));
    }
}
