//! Command line and configuration: every setting comes from a flag or its environment variable,
//! with defaults that work on a developer machine with a local PostgreSQL.

use std::net::TcpListener;

use anyhow::Context;
use atelier_store::postgres::{self, PgConfig, PgEventStore};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::info;

/// The default database: a local PostgreSQL, database `atelier` (created if missing).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/atelier";

#[derive(Parser, Debug)]
#[command(
    name = "atelier",
    version,
    about = "Atelier: an event-sourced control plane"
)]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the database if missing, migrate it, and serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate,
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// PostgreSQL URL of the event store and read models.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,
    /// Connection pool size.
    #[arg(
        long,
        env = "ATELIER_DB_POOL_SIZE",
        default_value_t = 16,
        global = true
    )]
    pub db_pool_size: u32,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the address is logged and printed).
    #[arg(long, env = "ATELIER_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// `development` or `production`.
    #[arg(long, env = "ATELIER_ENV", value_enum, default_value_t = Environment::Development)]
    pub env: Environment,
}

#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Environment {
    #[default]
    Development,
    Production,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// `pretty` or `json`.
    #[arg(long, env = "ATELIER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(log: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self
            .command
            .unwrap_or_else(|| Command::Serve(ServeArgs::parse_env()))
        {
            Command::Migrate => {
                prepare_database(&self.db).await?;
                info!("migrations applied");
                Ok(())
            }
            Command::Serve(args) => serve(&self.db, args).await,
        }
    }
}

impl ServeArgs {
    /// The serve settings when no subcommand was given: environment and defaults only.
    fn parse_env() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Only::parse_from(["atelier"]).serve
    }
}

/// Creates the database if missing and migrates it; returns a pool on it.
async fn prepare_database(db: &DbArgs) -> anyhow::Result<sqlx::PgPool> {
    postgres::create_database_if_missing(&db.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot reach or create the database ({})",
                redact(&db.database_url)
            )
        })?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(db.db_pool_size)
        .connect(&db.database_url)
        .await
        .context("cannot connect to the database")?;
    postgres::migrate(&pool)
        .await
        .context("migrations failed")?;
    Ok(pool)
}

async fn serve(db: &DbArgs, args: ServeArgs) -> anyhow::Result<()> {
    let pool = prepare_database(db).await?;
    let mut config = PgConfig::new(db.database_url.clone());
    config.max_connections = db.db_pool_size;
    let store = PgEventStore::with_pool(pool, config);
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, env = ?args.env, "serving");
    // Printed on stdout too, so scripts and tests can find a port picked with `:0`.
    println!("listening on http://{addr}");
    let store = actix_web::web::Data::new(store);
    actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(store.clone())
            .configure(atelier_http::platform::configure)
    })
    .listen(listener)?
    .run()
    .await?;
    Ok(())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_database_password_never_reaches_a_message() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
