//! `store-bench`: measures Atelier's PostgreSQL event store against raw PostgreSQL.
//!
//! Every measure runs against a fresh database (`atelier_bench` by default) that is dropped and
//! recreated first. The result is one markdown table on stdout; progress and per-run figures go
//! to stderr. See `bench/README.md` for what each row measures.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use atelier_store::postgres::{self, PgConfig, PgEventStore};
use atelier_store::testing::with_database;
use atelier_store::{
    EventData, EventStore, ExpectedRevision, Filter, Position, StoreError, StreamName,
    SubscribeFrom, SubscriptionMessage,
};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// Serialized size of an event's data, in bytes (approximately: numbers vary in width).
const DATA_BYTES: usize = 200;
/// Serialized size of an event's metadata, in bytes.
const METADATA_BYTES: usize = 100;
/// The event type of every event the benchmark appends.
const EVENT_TYPE: &str = "BenchAppended";
/// Events per page of the `$all` read.
const READ_PAGE: usize = 1000;
/// Targets.
const TARGET_APPEND_RATIO: f64 = 0.8;
const TARGET_READ_EVENTS_PER_S: f64 = 100_000.0;
const TARGET_SUBSCRIPTION_P99_MS: f64 = 20.0;

/// Benchmarks the event store (appends, `$all` reads, subscriptions) against pgbench.
#[derive(Parser, Debug, Clone)]
#[command(name = "store-bench", version, args_override_self = true)]
struct Args {
    /// The benchmark database: DROPPED and recreated. Its name must contain "bench".
    #[arg(
        long,
        env = "ATELIER_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/atelier_bench"
    )]
    database_url: String,
    /// Measured seconds per append level, per batch run, per pgbench run and for the
    /// subscription.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds before each timed store measure (not counted).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// How many times the whole sequence runs; the table shows the median of each figure.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Concurrency levels of the 1-event appends and of pgbench.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 32])]
    writers: Vec<usize>,
    /// Number of streams the appends pick from at random.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Writers of the batch appends.
    #[arg(long, default_value_t = 8)]
    batch_writers: usize,
    /// Events per batch append.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// The `$all` read needs at least this many events; batches are appended first if needed.
    #[arg(long, default_value_t = 200_000)]
    min_read_events: u64,
    /// Appends per second offered to the subscription measure.
    #[arg(long, default_value_t = 1000)]
    subscription_rate: u64,
    /// The pgbench executable.
    #[arg(long, env = "PGBENCH", default_value = "pgbench")]
    pgbench: PathBuf,
    /// Append transactions the store keeps in flight (`PgConfig::append_writers`; default: the
    /// store's).
    #[arg(long)]
    append_writers: Option<usize>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.seconds > 0, "--seconds must be at least 1");
    ensure!(args.runs > 0, "--runs must be at least 1");
    ensure!(args.streams > 0, "--streams must be at least 1");
    ensure!(
        !args.writers.is_empty(),
        "--writers needs at least one level"
    );
    ensure!(
        args.writers.iter().all(|w| *w > 0),
        "--writers levels must be at least 1"
    );
    ensure!(args.batch_writers > 0, "--batch-writers must be at least 1");
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    ensure!(
        (1..=1_000_000).contains(&args.subscription_rate),
        "--subscription-rate must be between 1 and 1,000,000"
    );

    let bench = Bench::setup(&args).await?;
    let mut results = Results::default();
    for run in 1..=args.runs {
        eprintln!("== run {run} of {}", args.runs);
        bench.run(run, &mut results).await?;
    }
    let tmp = bench.tmp.clone();
    bench.admin.close().await;
    let _ = std::fs::remove_dir_all(&tmp);

    print_table(&args, &results, &bench.server_version);
    Ok(())
}

/// What the benchmark shares between measures.
struct Bench {
    args: Args,
    url: String,
    /// A small pool on the benchmark database, for setup, counts and checkpoints.
    admin: PgPool,
    streams: Arc<Vec<StreamName>>,
    /// The last revision of each stream, as far as the writers know.
    revisions: Arc<Vec<AtomicU64>>,
    metadata: Value,
    tmp: PathBuf,
    pgbench_script: PathBuf,
    server_version: String,
}

impl Bench {
    /// Recreates the database, migrates it, creates the baseline table and the streams.
    async fn setup(args: &Args) -> Result<Self> {
        let url = args.database_url.clone();
        let options = PgConnectOptions::from_str(&url).context("parsing --database-url")?;
        let name = options
            .get_database()
            .ok_or_else(|| anyhow!("--database-url names no database"))?
            .to_owned();
        ensure!(
            name.contains("bench"),
            "refusing to drop database {name:?}: the benchmark database's name must contain \"bench\""
        );

        eprintln!("recreating database {name}");
        let admin_url = with_database(&url, "postgres");
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&name)
        )))
        .execute(&mut conn)
        .await
        .context("dropping the benchmark database")?;
        conn.close().await?;
        postgres::create_database_if_missing(&url).await?;

        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .context("connecting to the benchmark database")?;
        postgres::migrate(&admin).await?;
        sqlx::raw_sql(
            "CREATE TABLE pgbench_baseline (id bigserial PRIMARY KEY, stream text, \
             data jsonb, metadata jsonb)",
        )
        .execute(&admin)
        .await?;
        let server_version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&admin)
            .await?;

        let streams: Vec<StreamName> = (0..args.streams)
            .map(|i| StreamName::new(format!("bench-{i}")))
            .collect::<Result<_, _>>()?;
        let revisions = (0..args.streams).map(|_| AtomicU64::new(0)).collect();

        let tmp = std::env::temp_dir().join(format!("atelier-store-bench-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        let pgbench_script = tmp.join("insert.sql");
        std::fs::write(
            &pgbench_script,
            "\\set s random(0, 9999)\n\
             INSERT INTO pgbench_baseline (stream, data, metadata) \
             VALUES ('bench-' || :s, CAST(:data AS jsonb), CAST(:meta AS jsonb));\n",
        )?;

        let bench = Bench {
            args: args.clone(),
            url,
            admin,
            streams: Arc::new(streams),
            revisions: Arc::new(revisions),
            metadata: metadata(),
            tmp,
            pgbench_script,
            server_version,
        };
        eprintln!(
            "payload: data {} bytes, metadata {} bytes",
            serde_json::to_vec(&data(0, 0, None))?.len(),
            serde_json::to_vec(&bench.metadata)?.len()
        );
        bench.create_streams().await?;
        Ok(bench)
    }

    /// Gives every stream its first event (revision 0), so that `Exact` appends apply.
    async fn create_streams(&self) -> Result<()> {
        let started = Instant::now();
        let store = self.connect(32 + 4).await?;
        let mut appends = futures::stream::iter(self.streams.iter().enumerate())
            .map(|(i, stream)| {
                let store = &store;
                let event = EventData::new(EVENT_TYPE, data(0, i as u64, None))
                    .with_metadata(self.metadata.clone());
                async move {
                    store
                        .append(stream, ExpectedRevision::NoStream, vec![event])
                        .await
                }
            })
            .buffer_unordered(32);
        while let Some(r) = appends.next().await {
            r?;
        }
        drop(appends);
        shutdown(store).await;
        eprintln!(
            "created {} streams in {:.1} s",
            self.streams.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// One run of every measure.
    async fn run(&self, run: usize, results: &mut Results) -> Result<()> {
        for &writers in &self.args.writers {
            self.checkpoint().await;
            let s = self.single_appends(writers).await?;
            eprintln!(
                "append 1 event x {writers} writers: {:.0} events/s, p50 {:.3} ms, p99 {:.3} ms, \
                 {} conflicts",
                s.per_second, s.p50_ms, s.p99_ms, s.conflicts
            );
            results.appends.entry(writers).push(s);

            self.checkpoint().await;
            let b = self.pgbench(writers, run).await?;
            eprintln!(
                "pgbench {writers} clients: {:.0} tx/s, average {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
                b.per_second, b.mean_ms, b.p50_ms, b.p99_ms
            );
            results.baseline.entry(writers).push(b);
        }

        self.checkpoint().await;
        let b = self.batch_appends().await?;
        eprintln!(
            "append {} events x {} writers: {:.0} events/s, p50 {:.3} ms, p99 {:.3} ms",
            self.args.batch_size, self.args.batch_writers, b.per_second, b.p50_ms, b.p99_ms
        );
        results.batches.push(b);

        self.top_up().await?;
        self.checkpoint().await;
        let r = self.read_all().await?;
        eprintln!(
            "$all read: {} events, {:.0} events/s, page p50 {:.3} ms, p99 {:.3} ms",
            r.count, r.per_second, r.p50_ms, r.p99_ms
        );
        results.reads.push(r);

        self.checkpoint().await;
        let s = self.subscription().await?;
        eprintln!(
            "subscription at {}/s: {} sent, {} received, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            self.args.subscription_rate, s.count, s.received, s.p50_ms, s.p99_ms, s.max_ms
        );
        results.subscriptions.push(s);
        Ok(())
    }

    async fn connect(&self, max_connections: u32) -> Result<PgEventStore> {
        let mut config = PgConfig {
            max_connections,
            ..PgConfig::new(self.url.clone())
        };
        if let Some(writers) = self.args.append_writers {
            config.append_writers = writers.max(1);
        }
        Ok(PgEventStore::connect(config).await?)
    }

    /// Flushes dirty pages so that a checkpoint does not land in the middle of a measure.
    async fn checkpoint(&self) {
        if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(&self.admin).await {
            eprintln!("warning: CHECKPOINT failed: {e}");
        }
    }

    fn window(&self) -> Window {
        let start = Instant::now();
        let from = start + Duration::from_secs(self.args.warmup);
        Window {
            from,
            to: from + Duration::from_secs(self.args.seconds),
        }
    }

    /// Measure 1: 1-event appends with `Exact` expected revisions to random streams.
    async fn single_appends(&self, writers: usize) -> Result<Sample> {
        let store = self.connect(writers as u32 + 4).await?;
        let window = self.window();
        let mut tasks = JoinSet::new();
        for w in 0..writers {
            let store = store.clone();
            let streams = self.streams.clone();
            let revisions = self.revisions.clone();
            let metadata = self.metadata.clone();
            tasks.spawn(async move {
                let mut rng = Rng::seeded();
                let mut tally = Tally::new();
                let mut seq = 0u64;
                while Instant::now() < window.to {
                    let i = rng.below(streams.len());
                    let started = Instant::now();
                    let mut expected = revisions[i].load(Ordering::Relaxed);
                    let mut conflicts = 0;
                    loop {
                        let event = EventData::new(EVENT_TYPE, data(w, seq, None))
                            .with_metadata(metadata.clone());
                        match store
                            .append(&streams[i], ExpectedRevision::Exact(expected), vec![event])
                            .await
                        {
                            Ok(r) => {
                                revisions[i].fetch_max(r.next_expected_revision, Ordering::Relaxed);
                                break;
                            }
                            // Another writer appended to this stream first: take its revision
                            // and try again.
                            Err(StoreError::WrongExpectedRevision {
                                actual: Some(actual),
                                ..
                            }) => {
                                conflicts += 1;
                                revisions[i].fetch_max(actual, Ordering::Relaxed);
                                expected = actual;
                            }
                            Err(e) => return Err(anyhow::Error::from(e)),
                        }
                    }
                    seq += 1;
                    let done = Instant::now();
                    if window.contains(done) {
                        tally.record(1, done - started);
                        tally.conflicts += conflicts;
                    }
                }
                Ok(tally)
            });
        }
        let tally = join_tallies(tasks).await?;
        let groups = store.append_groups();
        shutdown(store).await;
        let mut sample = tally.sample(self.args.seconds);
        // Over the whole level, warm-up included.
        sample.per_group = groups.appends as f64 / groups.groups.max(1) as f64;
        Ok(sample)
    }

    /// Measure 2: batch appends (`Any`) to random streams.
    async fn batch_appends(&self) -> Result<Sample> {
        let writers = self.args.batch_writers;
        let size = self.args.batch_size;
        let store = self.connect(writers as u32 + 4).await?;
        let window = self.window();
        let mut tasks = JoinSet::new();
        for w in 0..writers {
            let store = store.clone();
            let streams = self.streams.clone();
            let revisions = self.revisions.clone();
            let metadata = self.metadata.clone();
            tasks.spawn(async move {
                let mut rng = Rng::seeded();
                let mut tally = Tally::new();
                let mut seq = 0u64;
                while Instant::now() < window.to {
                    let i = rng.below(streams.len());
                    let events = (0..size)
                        .map(|k| {
                            EventData::new(EVENT_TYPE, data(w, seq + k as u64, None))
                                .with_metadata(metadata.clone())
                        })
                        .collect();
                    seq += size as u64;
                    let started = Instant::now();
                    let r = store
                        .append(&streams[i], ExpectedRevision::Any, events)
                        .await?;
                    revisions[i].fetch_max(r.next_expected_revision, Ordering::Relaxed);
                    let done = Instant::now();
                    if window.contains(done) {
                        tally.record(size as u64, done - started);
                    }
                }
                Ok::<_, anyhow::Error>(tally)
            });
        }
        let tally = join_tallies(tasks).await?;
        shutdown(store).await;
        Ok(tally.sample(self.args.seconds))
    }

    /// Appends batches (unmeasured) until the log holds at least `--min-read-events` events.
    async fn top_up(&self) -> Result<()> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.admin)
            .await?;
        let count = count as u64;
        if count >= self.args.min_read_events {
            return Ok(());
        }
        let missing = self.args.min_read_events - count;
        eprintln!("appending {missing} more events for the $all read");
        let size = self.args.batch_size as u64;
        let store = self.connect(self.args.batch_writers as u32 + 4).await?;
        let mut appends = futures::stream::iter(0..missing.div_ceil(size))
            .map(|b| {
                let store = &store;
                let i = Rng::seeded().below(self.streams.len());
                let events = (0..size)
                    .map(|k| {
                        EventData::new(EVENT_TYPE, data(0, b * size + k, None))
                            .with_metadata(self.metadata.clone())
                    })
                    .collect();
                async move {
                    let r = store
                        .append(&self.streams[i], ExpectedRevision::Any, events)
                        .await?;
                    self.revisions[i].fetch_max(r.next_expected_revision, Ordering::Relaxed);
                    Ok::<_, StoreError>(())
                }
            })
            .buffer_unordered(self.args.batch_writers);
        while let Some(r) = appends.next().await {
            r?;
        }
        drop(appends);
        shutdown(store).await;
        Ok(())
    }

    /// Measure 3: the whole log, from the start, in pages.
    async fn read_all(&self) -> Result<Sample> {
        let store = self.connect(1 + 4).await?;
        let mut tally = Tally::new();
        let mut after = Position::START;
        let started = Instant::now();
        loop {
            let page_started = Instant::now();
            let slice = store.read_all(after, READ_PAGE, &Filter::All).await?;
            tally.record(slice.events.len() as u64, page_started.elapsed());
            after = slice.next;
            if slice.scanned < READ_PAGE {
                break;
            }
        }
        let elapsed = started.elapsed();
        shutdown(store).await;
        let mut sample = tally.sample(1);
        sample.per_second = tally.count as f64 / elapsed.as_secs_f64();
        if tally.count < self.args.min_read_events {
            eprintln!(
                "warning: the $all read saw {} events, fewer than the {} wanted",
                tally.count, self.args.min_read_events
            );
        }
        Ok(sample)
    }

    /// Measure 4: the time from just before an append to the event's delivery by a live
    /// `$all` subscription, with appends offered at a fixed rate.
    async fn subscription(&self) -> Result<Sample> {
        let store = self.connect(8 + 4).await?;
        let clock = Instant::now();
        let mut subscription = store.subscribe_all(SubscribeFrom::End, Filter::All);
        // Let the subscription read the head and go live before anything is appended.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let received = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let subscriber = {
            let received = received.clone();
            tokio::spawn(async move {
                let mut tally = Tally::new();
                loop {
                    let message = tokio::select! {
                        _ = &mut stopped => break,
                        m = subscription.next() => m,
                    };
                    let now = clock.elapsed().as_nanos() as u64;
                    match message {
                        Some(SubscriptionMessage::Event(e)) => {
                            let sent = e.data.get("sent_ns").and_then(Value::as_u64);
                            let measured = e.data.get("measured").and_then(Value::as_bool);
                            if let (Some(sent), Some(true)) = (sent, measured) {
                                tally.record(1, Duration::from_nanos(now.saturating_sub(sent)));
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(SubscriptionMessage::Checkpoint(_)) => {}
                        None => break,
                    }
                }
                tally
            })
        };

        let window = self.window();
        let mut ticks = tokio::time::interval(Duration::from_nanos(
            1_000_000_000 / self.args.subscription_rate,
        ));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let sent = Arc::new(AtomicU64::new(0));
        let mut appends = JoinSet::new();
        let mut rng = Rng::seeded();
        let mut seq = 0u64;
        loop {
            ticks.tick().await;
            let now = Instant::now();
            if now >= window.to {
                break;
            }
            let measured = now >= window.from;
            let i = rng.below(self.streams.len());
            let store = store.clone();
            let streams = self.streams.clone();
            let revisions = self.revisions.clone();
            let metadata = self.metadata.clone();
            let sent = sent.clone();
            appends.spawn(async move {
                let sent_ns = clock.elapsed().as_nanos() as u64;
                let event = EventData::new(EVENT_TYPE, data(0, seq, Some((sent_ns, measured))))
                    .with_metadata(metadata);
                let r = store
                    .append(&streams[i], ExpectedRevision::Any, vec![event])
                    .await?;
                revisions[i].fetch_max(r.next_expected_revision, Ordering::Relaxed);
                if measured {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, StoreError>(())
            });
            seq += 1;
            while let Some(r) = appends.try_join_next() {
                r??;
            }
        }
        while let Some(r) = appends.join_next().await {
            r??;
        }
        let sent = sent.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(());
        let tally = subscriber.await?;
        shutdown(store).await;
        let mut sample = tally.sample(self.args.seconds);
        sample.count = sent;
        sample.received = tally.count;
        Ok(sample)
    }

    /// Measure 5: pgbench, one single-row INSERT per transaction, `clients` connections.
    async fn pgbench(&self, clients: usize, run: usize) -> Result<Sample> {
        let prefix = format!("pgbench_c{clients}_r{run}");
        let data = serde_json::to_string(&data(0, 0, None))?;
        let meta = serde_json::to_string(&self.metadata)?;
        let output = tokio::process::Command::new(&self.args.pgbench)
            .arg("-n")
            .args(["-M", "prepared"])
            .args(["-c", &clients.to_string()])
            .args(["-j", "2"])
            .args(["-T", &self.args.seconds.to_string()])
            .arg("-f")
            .arg(&self.pgbench_script)
            .arg("-D")
            .arg(format!("data={data}"))
            .arg("-D")
            .arg(format!("meta={meta}"))
            .arg("-l")
            .arg(format!(
                "--log-prefix={}",
                self.tmp.join(&prefix).to_string_lossy()
            ))
            .arg(&self.url)
            .output()
            .await
            .with_context(|| format!("running {}", self.args.pgbench.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            bail!("pgbench failed ({}):\n{text}", output.status);
        }
        let tps = parse_after(&text, "tps = ")
            .ok_or_else(|| anyhow!("no \"tps = \" in pgbench's output:\n{text}"))?;
        let average = parse_after(&text, "latency average = ")
            .ok_or_else(|| anyhow!("no \"latency average = \" in pgbench's output:\n{text}"))?;
        let latencies = pgbench_latencies(&self.tmp, &prefix)?;
        Ok(Sample {
            per_second: tps,
            mean_ms: average,
            p50_ms: ms(latencies.value_at_quantile(0.5)),
            p99_ms: ms(latencies.value_at_quantile(0.99)),
            max_ms: ms(latencies.max()),
            count: latencies.len(),
            ..Sample::default()
        })
    }
}

/// Closes a store's pool once its background tasks have let go of their connections.
async fn shutdown(store: PgEventStore) {
    let pool = store.pool().clone();
    drop(store);
    let _ = tokio::time::timeout(Duration::from_secs(10), pool.close()).await;
}

/// The measured part of a timed measure.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.from && t < self.to
    }
}

/// Events counted and latencies (in microseconds) recorded by one task.
struct Tally {
    count: u64,
    conflicts: u64,
    latencies: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            count: 0,
            conflicts: 0,
            latencies: histogram(),
        }
    }

    fn record(&mut self, events: u64, latency: Duration) {
        self.count += events;
        self.latencies
            .saturating_record((latency.as_micros() as u64).max(1));
    }

    fn merge(&mut self, other: &Tally) -> Result<()> {
        self.count += other.count;
        self.conflicts += other.conflicts;
        self.latencies
            .add(&other.latencies)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))
    }

    fn sample(&self, seconds: u64) -> Sample {
        Sample {
            per_second: self.count as f64 / seconds as f64,
            mean_ms: self.latencies.mean() / 1000.0,
            p50_ms: ms(self.latencies.value_at_quantile(0.5)),
            p99_ms: ms(self.latencies.value_at_quantile(0.99)),
            max_ms: ms(self.latencies.max()),
            count: self.count,
            conflicts: self.conflicts,
            received: 0,
            per_group: 0.0,
        }
    }
}

fn histogram() -> Histogram<u64> {
    // From 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

async fn join_tallies(mut tasks: JoinSet<Result<Tally>>) -> Result<Tally> {
    let mut total = Tally::new();
    while let Some(t) = tasks.join_next().await {
        total.merge(&t??)?;
    }
    Ok(total)
}

/// The figures of one measure in one run.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    per_second: f64,
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Events counted (sent, for the subscription).
    count: u64,
    conflicts: u64,
    /// Events the subscriber received (subscription only).
    received: u64,
    /// Appends per transaction the combiner sent (single appends only).
    per_group: f64,
}

/// Samples of every run, per measure.
#[derive(Default)]
struct Results {
    appends: PerLevel,
    baseline: PerLevel,
    batches: Vec<Sample>,
    reads: Vec<Sample>,
    subscriptions: Vec<Sample>,
}

#[derive(Default)]
struct PerLevel(Vec<(usize, Vec<Sample>)>);

impl PerLevel {
    fn entry(&mut self, level: usize) -> &mut Vec<Sample> {
        let i = match self.0.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                self.0.push((level, Vec::new()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    fn get(&self, level: usize) -> Option<&[Sample]> {
        self.0
            .iter()
            .find(|(l, _)| *l == level)
            .map(|(_, s)| s.as_slice())
    }
}

/// The median of each figure over the runs.
struct Medians {
    per_second: f64,
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    count: u64,
    conflicts: u64,
    received: u64,
    per_group: f64,
}

fn medians(samples: &[Sample]) -> Medians {
    let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Medians {
        per_second: m(|s| s.per_second),
        mean_ms: m(|s| s.mean_ms),
        p50_ms: m(|s| s.p50_ms),
        p99_ms: m(|s| s.p99_ms),
        count: m(|s| s.count as f64) as u64,
        conflicts: samples.iter().map(|s| s.conflicts).sum(),
        received: m(|s| s.received as f64) as u64,
        per_group: m(|s| s.per_group),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// "1 writer", "8 writers".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn print_table(args: &Args, results: &Results, server_version: &str) {
    let mut targets = Vec::new();
    println!(
        "| measure | concurrency | events/s | mean ms | p50 ms | p99 ms | baseline tx/s | ratio | target |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let last_level = args.writers.iter().copied().max().unwrap_or(0);
    for &level in &args.writers {
        let (Some(appends), Some(baseline)) =
            (results.appends.get(level), results.baseline.get(level))
        else {
            continue;
        };
        let a = medians(appends);
        let b = medians(baseline);
        let ratio = a.per_second / b.per_second;
        let target = if level == last_level {
            let ok = ratio >= TARGET_APPEND_RATIO;
            targets.push(format!(
                "appends at {level} writers ≥ {TARGET_APPEND_RATIO} × baseline: {} ({ratio:.2})",
                pass(ok)
            ));
            format!("≥ {TARGET_APPEND_RATIO:.2}: {}", pass(ok))
        } else {
            String::new()
        };
        println!(
            "| append 1 event, `Exact` | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.0} | {ratio:.2} | {target} |",
            count(level, "writer"),
            a.per_second,
            a.mean_ms,
            a.p50_ms,
            a.p99_ms,
            b.per_second
        );
    }
    for &level in &args.writers {
        if let Some(baseline) = results.baseline.get(level) {
            let b = medians(baseline);
            println!(
                "| pgbench: 1-row INSERT per tx (baseline) | {} | {:.0} | {:.3} | {:.3} | {:.3} | | | |",
                count(level, "client"),
                b.per_second,
                b.mean_ms,
                b.p50_ms,
                b.p99_ms
            );
        }
    }
    if !results.batches.is_empty() {
        let b = medians(&results.batches);
        println!(
            "| append {}-event batches, `Any` (latency per batch) | {} | {:.0} | {:.3} | {:.3} | {:.3} | | | |",
            args.batch_size,
            count(args.batch_writers, "writer"),
            b.per_second,
            b.mean_ms,
            b.p50_ms,
            b.p99_ms
        );
    }
    if !results.reads.is_empty() {
        let r = medians(&results.reads);
        let ok = r.per_second >= TARGET_READ_EVENTS_PER_S;
        targets.push(format!(
            "`$all` read ≥ {TARGET_READ_EVENTS_PER_S:.0} events/s: {} ({:.0})",
            pass(ok),
            r.per_second
        ));
        println!(
            "| `$all` read, {} events in pages of {READ_PAGE} (latency per page) | 1 reader | {:.0} | {:.3} | {:.3} | {:.3} | | | ≥ {TARGET_READ_EVENTS_PER_S:.0}/s: {} |",
            r.count,
            r.per_second,
            r.mean_ms,
            r.p50_ms,
            r.p99_ms,
            pass(ok)
        );
    }
    if !results.subscriptions.is_empty() {
        let s = medians(&results.subscriptions);
        let complete = s.received >= s.count;
        let ok = s.p99_ms <= TARGET_SUBSCRIPTION_P99_MS && complete;
        targets.push(format!(
            "subscription p99 ≤ {TARGET_SUBSCRIPTION_P99_MS:.0} ms: {} ({:.3} ms{})",
            pass(ok),
            s.p99_ms,
            if complete { "" } else { ", events missing" }
        ));
        println!(
            "| append → `$all` subscriber at {}/s ({} of {} received) | 1 subscriber | {:.0} | {:.3} | {:.3} | {:.3} | | | p99 ≤ {TARGET_SUBSCRIPTION_P99_MS:.0} ms: {} |",
            args.subscription_rate,
            s.received,
            s.count,
            s.per_second,
            s.mean_ms,
            s.p50_ms,
            s.p99_ms,
            pass(ok)
        );
    }
    println!();
    println!("Targets: {}.", targets.join("; "));
    // One figure of the append measure per level: "1 writer: x, 8 writers: y, …".
    let per_level = |figure: &dyn Fn(&Medians) -> String| -> String {
        args.writers
            .iter()
            .filter_map(|&l| {
                results
                    .appends
                    .get(l)
                    .map(|s| format!("{}: {}", count(l, "writer"), figure(&medians(s))))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let conflicts = per_level(&|m| m.conflicts.to_string());
    let per_group = per_level(&|m| format!("{:.1}", m.per_group));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Median of {} run(s), {} s measured per measure (+{} s warm-up for store measures), \
         {cores} cores, PostgreSQL {server_version}, {}. Exact-revision conflicts retried (all runs): {}. \
         Appends per transaction (write combining, median): {}.",
        args.runs,
        args.seconds,
        args.warmup,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        conflicts,
        per_group
    );
}

/// The number after `key` in pgbench's output, such as `tps = 1234.5 (...)`.
fn parse_after(text: &str, key: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The per-transaction latencies of pgbench's logs (`-l`): the third field, in microseconds.
fn pgbench_latencies(dir: &Path, prefix: &str) -> Result<Histogram<u64>> {
    let mut h = histogram();
    let start = format!("{prefix}.");
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(&start) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())?;
        for line in text.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|f| f.parse::<u64>().ok())
            {
                h.saturating_record(us.max(1));
            }
        }
        std::fs::remove_file(entry.path())?;
    }
    ensure!(!h.is_empty(), "pgbench wrote no per-transaction log");
    Ok(h)
}

/// An event's data: about [`DATA_BYTES`] of JSON. The subscription measure adds when it was sent
/// (nanoseconds since the measure's clock started) and whether it falls in the measured window.
fn data(writer: usize, seq: u64, sent: Option<(u64, bool)>) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!("bench.appended"));
    m.insert("writer".into(), json!(writer));
    m.insert("seq".into(), json!(seq));
    if let Some((sent_ns, measured)) = sent {
        m.insert("sent_ns".into(), json!(sent_ns));
        m.insert("measured".into(), json!(measured));
    }
    m.insert(
        "note".into(),
        json!("a benchmark event of about two hundred bytes"),
    );
    padded(m, DATA_BYTES)
}

/// An event's metadata: about [`METADATA_BYTES`] of JSON.
fn metadata() -> Value {
    let mut m = Map::new();
    m.insert(
        "correlation_id".into(),
        json!(uuid::Uuid::new_v4().to_string()),
    );
    m.insert("actor".into(), json!("store-bench"));
    padded(m, METADATA_BYTES)
}

/// Adds a `pad` string so that the object serializes to `target` bytes (or a little more).
fn padded(mut m: Map<String, Value>, target: usize) -> Value {
    m.insert("pad".into(), json!(""));
    let len = serde_json::to_vec(&m).map_or(0, |v| v.len());
    m.insert("pad".into(), json!("x".repeat(target.saturating_sub(len))));
    Value::Object(m)
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SplitMix64: a small, fast generator; good enough to pick streams.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        Self(uuid::Uuid::new_v4().as_u128() as u64)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
