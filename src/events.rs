//! The operator's log tools, run against the configured database with no server:
//! `atelier events tail|export|import` and `atelier audit`.
//!
//! The reads are the store's ([`PgEventStore::query_log`], paged by position, filtered in SQL);
//! the archive and its checks are `atelier_store::archive`'s.

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use atelier_store::archive::{self, ArchiveError};
use atelier_store::postgres::{self, LogQuery, PgConfig, PgEventStore};
use atelier_store::{EventStore, Position, RecordedEvent, SubscribeFrom, SubscriptionMessage};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::cli::DbArgs;

/// Events read from the database per query.
const PAGE: usize = 500;

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Print the last events of the log (or every event after a position), oldest first, and
    /// with `--follow` the new ones as they come, until Ctrl-C.
    Tail(TailArgs),
    /// Write the whole log (events in order, and each stream's state) into a portable,
    /// checksummed archive (gzip JSON lines).
    Export {
        /// The archive to write (replaced if it exists, once the export is complete).
        file: PathBuf,
    },
    /// Load an archive into an EMPTY database: the whole file is verified first, then written
    /// in one transaction, so a bad file or a failure writes nothing.
    Import {
        /// The archive to read.
        file: PathBuf,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// A line per event (position, time, stream@revision, type, actor) and its data below.
    #[default]
    Pretty,
    /// One JSON object per line (for `jq`).
    Json,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Keep printing new events until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// This stream only.
    #[arg(long)]
    pub stream: Option<String>,
    /// Streams of this category only (`project`, `build`, …: the name before its first `-`).
    #[arg(long)]
    pub category: Option<String>,
    /// This event type only.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Every event after this position (`<commit>-<prepare>`, as `Atelier-Position` shows;
    /// `0-0`: from the start) instead of the last ones.
    #[arg(long, value_name = "POSITION")]
    pub from: Option<Position>,
    /// How many events to print (default: the last 20; with `--from`: all).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// `pretty` or `json`.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Who acted: a user id, or `apikey:<uuid>`.
    #[arg(long)]
    pub actor: Option<String>,
    /// With which credential: `session:<uuid>` or `apikey:<uuid>`.
    #[arg(long)]
    pub credential: Option<String>,
    /// In which organization (its id).
    #[arg(long, value_name = "ORG_ID")]
    pub org: Option<String>,
    /// Everything one request caused (its correlation id).
    #[arg(long, value_name = "ID")]
    pub correlation: Option<String>,
    /// Recorded at or after this time (RFC 3339: `2026-01-31T12:00:00Z`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<DateTime<Utc>>,
    /// Recorded before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<DateTime<Utc>>,
    /// This stream only.
    #[arg(long)]
    pub stream: Option<String>,
    /// This event type only.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// `pretty` or `json`.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    /// At most this many events (default: every match, read page by page).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// Runs `atelier events …`.
pub async fn run(db: &DbArgs, command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::Tail(args) => tail(db, args).await,
        EventsCommand::Export { file } => export(db, &file).await,
        EventsCommand::Import { file } => import(db, &file).await,
    }
}

/// Runs `atelier audit …`: the matching events, oldest first.
pub async fn audit(db: &DbArgs, args: AuditArgs) -> anyhow::Result<()> {
    let store = connect(db).await?;
    let query = LogQuery {
        stream: args.stream,
        category: None,
        event_type: args.event_type,
        actor: args.actor.map(normalize_id),
        credential: args.credential,
        org_id: args.org.map(normalize_id),
        correlation_id: args.correlation.map(normalize_id),
        since: args.since,
        until: args.until,
    };
    let mut out = Output::new(args.format);
    let printed = page_forward(&store, &query, Position::START, None, args.limit, &mut out).await;
    quiet_pipe(printed.and_then(|_| out.flush().map_err(Into::into)))
}

/// Ids are compared as text: a UUID given in another case or form is written as the log has it.
fn normalize_id(id: String) -> String {
    uuid::Uuid::parse_str(&id).map_or(id, |u| u.to_string())
}

async fn tail(db: &DbArgs, args: TailArgs) -> anyhow::Result<()> {
    let store = connect(db).await?;
    let query = LogQuery {
        stream: args.stream,
        category: args.category,
        event_type: args.event_type,
        ..LogQuery::default()
    };
    let mut out = Output::new(args.format);
    // Following starts after the head, which stops below every transaction still open: what is
    // printed first ends there, so the subscription neither repeats nor skips an event.
    let head = if args.follow {
        Some(store.head().await?.unwrap_or(Position::START))
    } else {
        None
    };
    let printed = match args.from {
        None => {
            let events = store
                .query_log_last(&query, head, args.limit.unwrap_or(20))
                .await?;
            events.iter().try_for_each(|e| out.event(e))?;
            Ok(())
        }
        Some(from) => page_forward(&store, &query, from, head, args.limit, &mut out).await,
    };
    quiet_pipe(printed.and_then(|_| out.flush().map_err(Into::into)))?;
    let Some(head) = head else {
        return Ok(());
    };
    let start = head.max(args.from.unwrap_or(Position::START));
    let from = if start == Position::START {
        SubscribeFrom::Start
    } else {
        SubscribeFrom::After(start)
    };
    let mut subscription = store.subscribe_all(from, query.filter());
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            message = subscription.next() => match message {
                Some(SubscriptionMessage::Event(e)) if query.matches(&e) => {
                    quiet_pipe(out.event(&e).and_then(|_| out.flush()).map_err(Into::into))?;
                }
                Some(_) => {}
                None => return Ok(()),
            },
            _ = &mut interrupted => return Ok(()),
        }
    }
}

/// Prints the events after `after` (up to `upto`) that meet `query`, page by page, at most
/// `limit`.
async fn page_forward(
    store: &PgEventStore,
    query: &LogQuery,
    mut after: Position,
    upto: Option<Position>,
    limit: Option<usize>,
    out: &mut Output,
) -> anyhow::Result<()> {
    let mut left = limit.unwrap_or(usize::MAX);
    while left > 0 {
        let want = left.min(PAGE);
        let page = store.query_log(query, after, upto, want).await?;
        for e in &page {
            out.event(e)?;
        }
        left -= page.len();
        match page.last() {
            Some(last) if page.len() == want => after = last.position,
            _ => break,
        }
    }
    Ok(())
}

/// A closed pipe (`| head`) ends the output quietly.
fn quiet_pipe(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Events printed on standard output.
struct Output {
    format: OutputFormat,
    out: BufWriter<std::io::Stdout>,
}

impl Output {
    fn new(format: OutputFormat) -> Self {
        Self {
            format,
            out: BufWriter::new(std::io::stdout()),
        }
    }

    fn event(&mut self, e: &RecordedEvent) -> std::io::Result<()> {
        match self.format {
            OutputFormat::Json => {
                serde_json::to_writer(&mut self.out, &json_line(e))?;
                writeln!(self.out)
            }
            OutputFormat::Pretty => {
                let meta = |field: &str| e.metadata.get(field).and_then(|v| v.as_str());
                let who = match (meta("actor"), meta("credential")) {
                    (Some(a), Some(c)) => format!("{a} ({c})"),
                    (Some(a), None) => a.to_owned(),
                    (None, _) => "-".to_owned(),
                };
                writeln!(
                    self.out,
                    "{}  {}  {}@{}  {}  {}",
                    e.position,
                    e.created.to_rfc3339_opts(SecondsFormat::Millis, true),
                    e.stream,
                    e.revision,
                    e.event_type,
                    who
                )?;
                writeln!(self.out, "    {}", e.data)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// An event as `--format json` prints it.
fn json_line(e: &RecordedEvent) -> serde_json::Value {
    json!({
        "position": e.position,
        "stream": e.stream,
        "revision": e.revision,
        "type": e.event_type,
        "event_id": e.event_id,
        "created": e.created,
        "occurred_at": e.metadata.get("occurred_at"),
        "metadata": e.metadata,
        "data": e.data,
    })
}

/// The store on the configured database, which must exist (nothing is created or migrated).
async fn connect(db: &DbArgs) -> anyhow::Result<PgEventStore> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&db.database_url)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    Ok(PgEventStore::with_pool(
        pool,
        PgConfig::new(db.database_url.clone()),
    ))
}

fn bar(len: u64, template: &str) -> ProgressBar {
    // Drawn on stderr when it is a terminal, hidden otherwise.
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn export(db: &DbArgs, file: &Path) -> anyhow::Result<()> {
    let store = connect(db).await?;
    // Written aside and renamed once complete: a failed export leaves no file that looks done.
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let out = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let progress = bar(0, "exporting [{bar:40}] {pos}/{len} events ({eta})");
    let result = store
        .export_archive(BufWriter::new(out), &mut |done, total| {
            progress.set_length(total);
            progress.set_position(done);
        })
        .await;
    progress.finish_and_clear();
    let done = result
        .map_err(anyhow::Error::from)
        .and_then(|(out, trailer)| {
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            Ok(trailer)
        });
    let trailer = match done {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context("the export failed"));
        }
    };
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot move the archive to {}", file.display()))?;
    println!(
        "exported {} events and {} streams to {} (sha256 of its content {})",
        trailer.events,
        trailer.streams,
        file.display(),
        trailer.sha256
    );
    Ok(())
}

async fn import(db: &DbArgs, file: &Path) -> anyhow::Result<()> {
    // Not found or unreadable: said before anything else happens.
    let len = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    postgres::create_database_if_missing(&db.database_url)
        .await
        .context("cannot reach or create the database (DATABASE_URL)")?;
    let store = connect(db).await?;
    postgres::migrate(store.pool())
        .await
        .context("migrations failed")?;
    let (events, streams) = store.count_events_and_streams().await?;
    if events > 0 || streams > 0 {
        return Err(anyhow!(ArchiveError::NotEmpty { events, streams })
            .context("import refused; nothing was written"));
    }
    // First pass: the whole file, before anything is written.
    let verifying = bar(len, "verifying [{bar:40}] {bytes}/{total_bytes} ({eta})");
    let input = verifying.wrap_read(
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let summary = tokio::task::spawn_blocking(move || archive::verify(input))
        .await?
        .map_err(|e| {
            anyhow!(e).context(format!(
                "import of {} refused; nothing was written",
                file.display()
            ))
        })?;
    verifying.finish_and_clear();
    // Second pass: one transaction, committed once the file was read again to its checksum.
    let importing = bar(
        summary.trailer.events,
        "importing [{bar:40}] {pos}/{len} events ({eta})",
    );
    let input = BufReader::new(std::fs::File::open(file)?);
    store
        .import_archive(input, &mut |n| importing.set_position(n))
        .await
        .map_err(|e| anyhow!(e).context("the import failed; nothing was written"))?;
    importing.finish_and_clear();
    println!(
        "imported {} events and {} streams from {} (exported {}); positions are new, in the \
         same order",
        summary.trailer.events,
        summary.trailer.streams,
        file.display(),
        summary
            .header
            .exported_at
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    // Readers of the log (the rebuild's too) stop below the oldest transaction still open
    // anywhere on the PostgreSQL server, so the import may not be readable yet when another
    // database's transaction is running: wait until it is, or the read models would be built
    // from part of it. A poll, bounded: other sessions' transactions notify nothing here.
    let last = store
        .query_log_last(&LogQuery::default(), None, 1)
        .await?
        .pop()
        .map(|e| e.position);
    if let Some(last) = last {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while store.head().await?.is_none_or(|head| head < last) {
            if std::time::Instant::now() > deadline {
                return Err(anyhow!(
                    "the events are imported, but a transaction open elsewhere on the \
                     PostgreSQL server holds them back from readers; build the read models \
                     with `atelier projections rebuild --all` once it ends"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The read models, so that the imported database answers (and `atelier verify` passes)
    // without a server having to start first.
    println!("building the read models from the imported log");
    crate::rebuild::run(store.pool(), &store, None, true)
        .await
        .context("the events are imported, but building the read models failed (run `atelier projections rebuild --all` again)")?;
    Ok(())
}
