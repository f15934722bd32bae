//! Command line and configuration: every setting comes from a flag or its environment variable,
//! with defaults that work on a developer machine with a local PostgreSQL.

use std::io::Write;
use std::net::TcpListener;

use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

use atelier_commands::deploy::driver::AddressPool;
use atelier_commands::factory::RepoPolicy;
use atelier_commands::rate_limit::Limit;
use atelier_http::HttpSettings;
use atelier_http::deploy::deployments::CreationLimit;
use atelier_http::identity::auth::AuthSettings;
use atelier_http::live::LiveSettings;
use atelier_http::server::{
    BuildSettings, CaptureRunnerSettings, DeploySettings, DriverSettings, ProvisionerSettings,
    ServerConfig, VenvRunnerSettings, VenvSettings, default_runner_id,
};
use atelier_projections::runtime;
use atelier_store::postgres::{self, PgConfig, PgEventStore};
use atelier_store::{EventStore, Position};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::info;

/// The default database: a local PostgreSQL, database `atelier` (created if missing), over
/// loopback without TLS. TLS on loopback protects nothing, and it cost here a sixth of the
/// `$all` read rate and four fifths of the rate of 100-event appends (`bench/README.md`); a URL
/// of one's own keeps sqlx's default (`sslmode=prefer`) unless it says otherwise.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/atelier?sslmode=disable";

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
    Serve(Box<ServeArgs>),
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate,
    /// Inspect or rebuild projections (read models).
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Read the log (no server needed): tail it, export it to an archive, import an archive.
    #[command(subcommand)]
    Events(crate::events::EventsCommand),
    /// Who did what: the log filtered on its metadata (actor, credential, organization, …).
    Audit(Box<crate::events::AuditArgs>),
    /// Rebuild every read model into a scratch schema and compare it row by row with the live
    /// one at the same position; exits non-zero on any difference or failed projection.
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum ProjectionsCommand {
    /// Show each projection's version, checkpoint and state.
    Status,
    /// Rebuild a projection's read model beside the old one and swap it in once caught up
    /// (readers never see it empty). A running server's runner continues from the new state.
    Rebuild {
        /// The projection's name (see `atelier projections status`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Rebuild every projection, one after the other.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// PostgreSQL URL of the event store and read models.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,
    /// Connection pool size (default: 4 per core, from 8 to 64).
    #[arg(long, env = "ATELIER_DB_POOL_SIZE", global = true)]
    pub db_pool_size: Option<u32>,
    /// Append transactions in flight at once; appends arriving meanwhile share the next one
    /// (default: the store's, 2).
    #[arg(long, env = "ATELIER_APPEND_WRITERS", global = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub append_writers: Option<u16>,
}

impl DbArgs {
    /// The pool size: as configured, else 4 connections per core (at least 8, at most 64). A
    /// pool much larger than the cores lets request handlers starve the projections: on 2 cores
    /// a pool of 40 put the read models seconds behind under load (see bench/README.md).
    pub fn pool_size(&self) -> u32 {
        self.db_pool_size.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            u32::try_from(cores * 4).unwrap_or(64).clamp(8, 64)
        })
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the address is logged and printed).
    #[arg(long, env = "ATELIER_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// `development` or `production` (refuses weak or missing secrets).
    #[arg(long, env = "ATELIER_ENV", value_enum, default_value_t = Environment::Development)]
    pub env: Environment,
    /// The bootstrap superadmin's username.
    #[arg(long, env = "ATELIER_ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,
    /// The bootstrap superadmin's email address.
    #[arg(
        long,
        env = "ATELIER_ADMIN_EMAIL",
        default_value = "admin@atelier.local"
    )]
    pub admin_email: String,
    /// The bootstrap superadmin's password (generated and printed once when absent).
    #[arg(long, env = "ATELIER_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// HS256 secret for access tokens, at least 32 bytes (generated and kept in the database in
    /// development).
    #[arg(long, env = "ATELIER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "ATELIER_ACCESS_TOKEN_TTL_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    pub access_token_ttl_secs: u64,
    /// How long a login session can be refreshed, in seconds (30 days with `remember_me`).
    #[arg(long, env = "ATELIER_SESSION_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_ttl_secs: u64,
    /// Login attempts allowed at once from one IP address (then one every 2 s).
    #[arg(long, env = "ATELIER_LOGIN_BURST_PER_IP", default_value_t = 30)]
    pub login_burst_per_ip: u32,
    /// Login attempts allowed at once for one account (then one every 30 s).
    #[arg(long, env = "ATELIER_LOGIN_BURST_PER_ACCOUNT", default_value_t = 10)]
    pub login_burst_per_account: u32,
    /// Allowed CORS origins, comma-separated (`*` for any).
    #[arg(
        long,
        env = "ATELIER_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:5173,http://localhost:3000"
    )]
    pub cors_origins: Vec<String>,
    /// Largest JSON body accepted, in bytes.
    #[arg(long, env = "ATELIER_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// Longest a read waits for its projection to reach a position it was given, in ms.
    #[arg(long, env = "ATELIER_READ_WAIT_MS", default_value_t = 5000)]
    pub read_wait_ms: u64,
    /// How long, in ms, a caller's checked access (session or key, user, organization) is
    /// trusted without a query; a logout or revocation made through this server counts from the
    /// next request regardless, one made by another process within this time. 0: every request
    /// checks.
    #[arg(long, env = "ATELIER_ACCESS_RECHECK_MS", default_value_t = 1000)]
    pub access_recheck_ms: u64,
    /// Seconds between the live feed's heartbeats (WebSocket and SSE).
    #[arg(long, env = "ATELIER_LIVE_HEARTBEAT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub live_heartbeat_secs: u64,
    /// Messages a live client may have waiting before it is cut off as lagged.
    #[arg(long, env = "ATELIER_LIVE_QUEUE", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub live_queue: u64,
    /// Live connections (WebSocket and SSE) held at most.
    #[arg(long, env = "ATELIER_LIVE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub live_max_connections: usize,
    /// A bearer token `/metrics` asks for (default: none, `/metrics` is open; the server listens
    /// on 127.0.0.1 unless `ATELIER_LISTEN` says otherwise).
    #[arg(long, env = "ATELIER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// The assistant's LLM: the base URL of an OpenAI-compatible API, up to `/v1`
    /// (`http://127.0.0.1:11434/v1` for a local Ollama). Unset: the offline engine answers.
    #[arg(long, env = "ATELIER_LLM_URL")]
    pub llm_url: Option<String>,
    /// The model the LLM engine asks.
    #[arg(long, env = "ATELIER_LLM_MODEL", default_value = "llama3.1")]
    pub llm_model: String,
    /// The LLM endpoint's API key, if it wants one (sent in a header only; never logged).
    #[arg(long, env = "ATELIER_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// How long one LLM request may take, in seconds (then the offline engine answers).
    #[arg(long, env = "ATELIER_LLM_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub llm_timeout_secs: u64,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "ATELIER_WORKERS")]
    pub workers: Option<usize>,
    /// How builds run: `simulated` (the seed's behaviour), `shell` (git clone, then the
    /// project's build command) or `none` (this server runs no builds).
    #[arg(long, env = "ATELIER_BUILD_DRIVER", value_enum, default_value_t = BuildDriverArg::Simulated)]
    pub build_driver: BuildDriverArg,
    /// The most builds run at once.
    #[arg(long, env = "ATELIER_BUILD_CONCURRENCY", default_value_t = 4)]
    pub build_concurrency: usize,
    /// The longest a shell build may take, in seconds (clone included).
    #[arg(long, env = "ATELIER_BUILD_TIMEOUT_SECS", default_value_t = 1800)]
    pub build_timeout_secs: u64,
    /// Where shell builds get their directories (default: `atelier-builds` in the temp dir).
    #[arg(long, env = "ATELIER_BUILD_WORK_DIR")]
    pub build_work_dir: Option<std::path::PathBuf>,
    /// Multiplies simulated build durations (2 to 10 s).
    #[arg(long, env = "ATELIER_BUILD_TIME_SCALE", default_value_t = 1.0)]
    pub build_time_scale: f64,
    /// This server's runner id; builds it was running when it stopped are failed as
    /// interrupted when it starts again (default: the host name).
    #[arg(long, env = "ATELIER_RUNNER_ID")]
    pub runner_id: Option<String>,
    /// Whether this server runs started cameras' capture pipelines (ffmpeg on its PATH). Off:
    /// an API-only server; another server with capture on runs them.
    #[arg(long, env = "ATELIER_CAPTURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub capture: bool,
    /// Accept projects whose repository is on this server's disk (`file://` URLs) and let
    /// shell builds clone them. Off by default: a project could name `/etc`.
    #[arg(long, env = "ATELIER_ALLOW_LOCAL_REPOS")]
    pub allow_local_repos: bool,
    /// How deployments are provisioned: `simulated` (the PaaS seed: an address of the pool,
    /// staged durations, nothing sent anywhere), `process` (clone, build and run each app on
    /// this machine, on 127.0.0.1) or `none` (this server runs no deployments).
    #[arg(long, env = "ATELIER_DEPLOY_DRIVER", value_enum, default_value_t = DeployDriverArg::Simulated)]
    pub deploy_driver: DeployDriverArg,
    /// The most rollouts at once.
    #[arg(long, env = "ATELIER_DEPLOY_CONCURRENCY", default_value_t = 16)]
    pub deploy_concurrency: usize,
    /// Multiplies simulated provisioning (3 to 8 s) and deployment (2 to 6 s) durations.
    #[arg(long, env = "ATELIER_DEPLOY_TIME_SCALE", default_value_t = 1.0)]
    pub deploy_time_scale: f64,
    /// The odds that a simulated rollout fails, 0 to 1.
    #[arg(long, env = "ATELIER_DEPLOY_FAILURE_RATE", default_value_t = 0.1)]
    pub deploy_failure_rate: f64,
    /// The simulated driver's address pool (unique per organization).
    #[arg(long, env = "ATELIER_DEPLOY_POOL", default_value = "192.168.100.0/24")]
    pub deploy_pool: String,
    /// Where the process driver puts deployments (default: `atelier-deployments` in the temp
    /// dir).
    #[arg(long, env = "ATELIER_DEPLOY_WORK_DIR")]
    pub deploy_work_dir: Option<std::path::PathBuf>,
    /// URL rewrites before a clone, comma-separated `prefix=replacement`
    /// (`https://github.com/=file:///srv/mirror/`).
    #[arg(long, env = "ATELIER_DEPLOY_MIRRORS", value_delimiter = ',')]
    pub deploy_mirrors: Vec<String>,
    /// The longest a process-driver clone and build may take, in seconds.
    #[arg(long, env = "ATELIER_DEPLOY_BUILD_TIMEOUT_SECS", default_value_t = 900)]
    pub deploy_build_timeout_secs: u64,
    /// The longest an app may take to answer HTTP after its start, in seconds.
    #[arg(long, env = "ATELIER_DEPLOY_READY_TIMEOUT_SECS", default_value_t = 60)]
    pub deploy_ready_timeout_secs: u64,
    /// Deployment creations allowed per user per minute (WindFlow: 10; 0: no limit).
    #[arg(
        long,
        env = "ATELIER_DEPLOY_CREATIONS_PER_MINUTE",
        default_value_t = 10
    )]
    pub deploy_creations_per_minute: u32,
    /// The networks camera discovery may probe, comma-separated CIDRs
    /// (`192.168.1.0/24,127.0.0.1/32`). Unset: whatever a request names (resolving host names).
    /// Set: anything else, and any host name, is refused before anything is sent.
    #[arg(long, env = "ATELIER_DISCOVERY_NETWORKS", value_delimiter = ',')]
    pub discovery_networks: Option<Vec<ipnet::IpNet>>,
    /// Where Python environments live, one directory per organization (default:
    /// `atelier-venvs` in the temp dir).
    #[arg(long, env = "ATELIER_VENV_DATA_DIR")]
    pub venv_data_dir: Option<std::path::PathBuf>,
    /// The package cache pip and uv use (default: `atelier-venvs-cache` in the temp dir).
    #[arg(long, env = "ATELIER_VENV_CACHE_DIR")]
    pub venv_cache_dir: Option<std::path::PathBuf>,
    /// uv's executable (default: `uv` on the PATH, if any).
    #[arg(long, env = "ATELIER_UV")]
    pub uv: Option<std::path::PathBuf>,
    /// Operations run at once (GestVenv's MAX_CONCURRENT_OPERATIONS); 0: this server runs
    /// none.
    #[arg(long, env = "ATELIER_VENV_CONCURRENCY", default_value_t = 50)]
    pub venv_concurrency: usize,
    /// The package index pip and uv install from (default: their own configuration, PyPI).
    #[arg(long, env = "ATELIER_VENV_INDEX_URL")]
    pub venv_index_url: Option<String>,
    /// The longest one backend command (a creation, an install) may take, in seconds.
    #[arg(long, env = "ATELIER_VENV_TIMEOUT_SECS", default_value_t = 900)]
    pub venv_timeout_secs: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeployDriverArg {
    #[default]
    Simulated,
    Process,
    None,
}

#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BuildDriverArg {
    #[default]
    Simulated,
    Shell,
    None,
}

impl ServeArgs {
    fn deploy_settings(&self) -> anyhow::Result<Option<DeploySettings>> {
        let driver = match self.deploy_driver {
            DeployDriverArg::None => return Ok(None),
            DeployDriverArg::Simulated => ProvisionerSettings::Simulated {
                time_scale: self.deploy_time_scale,
                failure_rate: self.deploy_failure_rate,
                pool: AddressPool::parse(&self.deploy_pool)
                    .map_err(|e| anyhow::anyhow!("ATELIER_DEPLOY_POOL: {e}"))?,
            },
            DeployDriverArg::Process => {
                let mut mirrors = Vec::new();
                for m in self.deploy_mirrors.iter().filter(|m| !m.is_empty()) {
                    let (from, to) = m.split_once('=').ok_or_else(|| {
                        anyhow::anyhow!("ATELIER_DEPLOY_MIRRORS: {m:?} is not prefix=replacement")
                    })?;
                    mirrors.push((from.to_owned(), to.to_owned()));
                }
                ProvisionerSettings::Process {
                    work_dir: self
                        .deploy_work_dir
                        .clone()
                        .unwrap_or_else(|| std::env::temp_dir().join("atelier-deployments")),
                    mirrors,
                    build_timeout: Duration::from_secs(self.deploy_build_timeout_secs),
                    ready_timeout: Duration::from_secs(self.deploy_ready_timeout_secs),
                }
            }
        };
        Ok(Some(DeploySettings {
            runner_id: self.runner_id.clone().unwrap_or_else(default_runner_id),
            concurrency: self.deploy_concurrency,
            driver,
        }))
    }

    fn venv_settings(&self) -> VenvSettings {
        let defaults = VenvSettings::default();
        let mut backends = defaults.backends;
        if let Some(dir) = &self.venv_cache_dir {
            backends.cache_dir = dir.clone();
        }
        backends.uv = self.uv.clone();
        backends.timeout = Duration::from_secs(self.venv_timeout_secs);
        backends.index_url = self.venv_index_url.clone().filter(|u| !u.is_empty());
        VenvSettings {
            data_dir: self.venv_data_dir.clone().unwrap_or(defaults.data_dir),
            backends,
            runner: (self.venv_concurrency > 0).then(|| VenvRunnerSettings {
                runner_id: self.runner_id.clone().unwrap_or_else(default_runner_id),
                concurrency: self.venv_concurrency,
            }),
        }
    }

    fn build_settings(&self) -> Option<BuildSettings> {
        let driver = match self.build_driver {
            BuildDriverArg::None => return None,
            BuildDriverArg::Simulated => DriverSettings::Simulated {
                time_scale: self.build_time_scale,
                failure_rate: 0.5,
            },
            BuildDriverArg::Shell => DriverSettings::Shell {
                work_dir: self
                    .build_work_dir
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join("atelier-builds")),
                timeout: Duration::from_secs(self.build_timeout_secs),
            },
        };
        Some(BuildSettings {
            runner_id: self.runner_id.clone().unwrap_or_else(default_runner_id),
            concurrency: self.build_concurrency,
            driver,
        })
    }
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
            .unwrap_or_else(|| Command::Serve(Box::new(ServeArgs::parse_env())))
        {
            Command::Migrate => {
                prepare_database(&self.db).await?;
                info!("migrations applied");
                Ok(())
            }
            Command::Serve(args) => serve(&self.db, *args).await,
            Command::Projections(ProjectionsCommand::Status) => projections_status(&self.db).await,
            Command::Projections(ProjectionsCommand::Rebuild { name, all }) => {
                let (pool, store) = store(&self.db).await?;
                crate::rebuild::run(&pool, &store, name.as_deref(), all).await
            }
            Command::Verify => {
                let (pool, store) = store(&self.db).await?;
                crate::verify::run(&pool, &store).await
            }
            Command::Events(command) => crate::events::run(&self.db, command).await,
            Command::Audit(args) => crate::events::audit(&self.db, *args).await,
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
        .max_connections(db.pool_size())
        // A request waits this long for a connection before it answers 503 (the database is
        // down or every connection is busy), instead of sqlx's 30 s.
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&db.database_url)
        .await
        .context("cannot connect to the database")?;
    postgres::migrate(&pool)
        .await
        .context("migrations failed")?;
    Ok(pool)
}

async fn store(db: &DbArgs) -> anyhow::Result<(sqlx::PgPool, PgEventStore)> {
    let pool = prepare_database(db).await?;
    let mut config = PgConfig::new(db.database_url.clone());
    config.max_connections = db.pool_size();
    if let Some(writers) = db.append_writers {
        config.append_writers = usize::from(writers);
    }
    let store = PgEventStore::with_pool(pool.clone(), config);
    Ok((pool, store))
}

async fn serve(db: &DbArgs, args: ServeArgs) -> anyhow::Result<()> {
    let (pool, store) = store(db).await?;
    let config = ServerConfig {
        production: args.env == Environment::Production,
        jwt_secret: args.jwt_secret.clone(),
        admin_username: args.admin_username.clone(),
        admin_email: args.admin_email.clone(),
        admin_password: args.admin_password.clone(),
        auth: {
            let mut auth = AuthSettings {
                access_ttl: Duration::from_secs(args.access_token_ttl_secs),
                session_ttl: Duration::from_secs(args.session_ttl_secs),
                ..AuthSettings::default()
            };
            auth.login_limits.per_ip.burst = args.login_burst_per_ip;
            auth.login_limits.per_account.burst = args.login_burst_per_account;
            auth
        },
        http: HttpSettings {
            body_limit: args.body_limit,
            read_wait: Duration::from_millis(args.read_wait_ms),
            access_recheck: Duration::from_millis(args.access_recheck_ms),
            cors_origins: args.cors_origins.clone(),
            live: LiveSettings {
                heartbeat: Duration::from_secs(args.live_heartbeat_secs),
                queue: usize::try_from(args.live_queue).unwrap_or(usize::MAX),
                max_connections: args.live_max_connections,
                ..LiveSettings::default()
            },
            deploy_creations: CreationLimit(Limit {
                max: args.deploy_creations_per_minute,
                window: Duration::from_secs(60),
            }),
            discovery_networks: args.discovery_networks.clone(),
        },
        builds: args.build_settings(),
        capture: args.capture.then(|| CaptureRunnerSettings {
            runner_id: args.runner_id.clone().unwrap_or_else(default_runner_id),
            ..CaptureRunnerSettings::default()
        }),
        deployments: args.deploy_settings()?,
        venvs: args.venv_settings(),
        repos: RepoPolicy {
            allow_local: args.allow_local_repos,
        },
        metrics_token: args.metrics_token.clone(),
        llm: args
            .llm_url
            .as_ref()
            .map(|url| atelier_commands::stacks::assistant::LlmSettings {
                url: url.clone(),
                model: args.llm_model.clone(),
                api_key: args.llm_api_key.clone(),
                timeout: Duration::from_secs(args.llm_timeout_secs),
                retries: 2,
            }),
    };
    let (services, bootstrap) = atelier_http::server::start(pool, Arc::new(store), config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?;
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, env = ?args.env, "serving");
    // Printed on stdout too, so scripts and tests can find a port picked with `:0`. A closed
    // stdout is no reason to stop serving: write errors are ignored.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}");
    if let Some(password) = &bootstrap.generated_password {
        // Shown once, on the terminal only: never logged.
        let _ = writeln!(
            out,
            "created the superadmin {:?} with the generated password: {password}",
            bootstrap.admin_username
        );
    }
    let _ = out.flush();
    drop(out);
    let workers = services.clone();
    let live = services.live.clone();
    let mut server = actix_web::HttpServer::new(move || atelier_http::app(services.clone()))
        // Signals are handled below, so live connections are closed before the graceful stop
        // waits for connections to end.
        .disable_signals();
    if let Some(workers) = args.workers {
        server = server.workers(workers);
    }
    let server = server.listen(listener)?.run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown_signal().await;
        info!("stopping: closing live connections, finishing requests");
        live.close_all();
        handle.stop(true).await;
    });
    server.await?;
    // The contexts' workers stop last (builds still running are failed as interrupted when
    // this runner starts again).
    workers.stop_workers().await;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::terminate(),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = interrupt.await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}

async fn projections_status(db: &DbArgs) -> anyhow::Result<()> {
    let (pool, store) = store(db).await?;
    let head = store.head().await?.unwrap_or(Position::START);
    let stored = runtime::stored_checkpoints(&pool).await?;
    println!("log head: {head}");
    println!(
        "{:<24} {:>7} {:>24} {:>8}  error",
        "projection", "version", "position", "status"
    );
    for p in atelier_projections::all() {
        match stored.iter().find(|s| s.name == p.name()) {
            Some(s) => {
                let version = if s.version == p.version() {
                    s.version.to_string()
                } else {
                    format!("{}->{}", s.version, p.version())
                };
                let status = if s.status == "running" && s.position >= head {
                    "live".to_owned()
                } else if s.status == "running" {
                    "behind".to_owned()
                } else {
                    s.status.clone()
                };
                println!(
                    "{:<24} {:>7} {:>24} {:>8}  {}",
                    s.name,
                    version,
                    s.position.to_string(),
                    status,
                    s.error.as_deref().unwrap_or("")
                );
            }
            None => println!(
                "{:<24} {:>7} {:>24} {:>8}",
                p.name(),
                p.version(),
                "-",
                "new"
            ),
        }
    }
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
    use super::{ServeArgs, redact};
    use clap::Parser;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn local_repositories_are_refused_unless_the_operator_allows_them() {
        assert!(!Serve::parse_from(["atelier"]).serve.allow_local_repos);
        assert!(
            Serve::parse_from(["atelier", "--allow-local-repos"])
                .serve
                .allow_local_repos
        );
    }

    #[test]
    fn a_database_password_never_reaches_a_message() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
