//! `live-bench`: measures the live event feed (`/ws`) of a running Atelier server.
//!
//! It creates a few projects through the API, opens N WebSocket subscribers on
//! `category:project`, then updates random projects at a steady rate (`PUT
//! /api/v1/projects/{id}`) for S seconds. Every write answers an `Atelier-Position`; every
//! subscriber records when each event's position reached it. After the run the two are joined:
//! latency = message received − PUT sent (so it includes the command's handling). It also reads
//! the server's CPU time and memory from `/proc/<pid>`.
//!
//! The result is one markdown table on stdout; progress goes to stderr. It exits with an error
//! after printing the table when a subscriber lagged or was closed, a write failed, or a delivery
//! is missing. `bench/live.sh` starts a server and runs it; see `bench/README.md`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use atelier_bench::{group, histogram, memory, pass};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Targets (from the issue).
const TARGET_P99_MS: f64 = 100.0;
const TARGET_RSS_MB: f64 = 200.0;
/// The longest one connection may take to open and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Benchmarks the live feed: N WebSocket subscribers, R events/s for S seconds.
#[derive(Parser, Debug, Clone)]
#[command(name = "live-bench", version, args_override_self = true)]
struct Args {
    /// The server's base URL; the feed is at `<base>/ws` (http → ws).
    #[arg(long, default_value = "http://127.0.0.1:18081")]
    base_url: String,
    /// An access token (from `POST /api/v1/auth/login`).
    #[arg(long, env = "ATELIER_BENCH_TOKEN", hide_env_values = true)]
    token: String,
    /// WebSocket subscribers.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Events written per second (one `PUT` each).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Seconds of writes.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The server's pid, for its CPU time and memory (`/proc/<pid>`); none: not measured.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Projects created first; the writes update them at random. Few projects make concurrent
    /// updates of one project (conflicts, retries) part of what is measured.
    #[arg(long, default_value_t = 1000)]
    projects: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 50)]
    connect_concurrency: usize,
    /// The channel every subscriber subscribes to.
    #[arg(long, default_value = "category:project")]
    channel: String,
    /// Longest wait for the last deliveries after the writes, in seconds.
    #[arg(long, default_value_t = 5)]
    drain_seconds: u64,
    /// Write the first subscriber's events to this file, one line each: milliseconds from the
    /// start of the writes to the PUT, position, latency in ms (for a closer look at a run).
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
    /// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

/// A position in the log: `<commit>-<prepare>`, ordered by commit then prepare.
type Position = (u64, u64);

fn parse_position(text: &str) -> Option<Position> {
    let (commit, prepare) = text.trim().split_once('-')?;
    Some((commit.parse().ok()?, prepare.parse().ok()?))
}

/// What the bench reads of a server message; everything else (`data`, …) is skipped.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    position: Option<Cow<'a, str>>,
}

/// Message types of the protocol itself (not events).
fn is_control(kind: &str) -> bool {
    matches!(
        kind,
        "connected"
            | "subscribed"
            | "unsubscribed"
            | "authenticated"
            | "heartbeat"
            | "pong"
            | "lagged"
            | "error"
    )
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one subscriber saw.
#[derive(Default)]
struct Received {
    /// Each event's position and when its message arrived, in arrival order.
    events: Vec<(Position, Instant)>,
    /// It received `{"type":"lagged"}`.
    lagged: bool,
    /// Why it stopped before the end (close frame, error, end of stream), if it did.
    closed: Option<String>,
    /// `{"type":"error"}` messages.
    errors: u64,
    /// Text messages that were neither events nor known control messages, or not JSON.
    unknown: u64,
    /// The first unexpected message, to show.
    first_unknown: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("live-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    ensure!(args.subscribers > 0, "--subscribers must be at least 1");
    ensure!(
        (1..=100_000).contains(&args.rate),
        "--rate must be between 1 and 100,000"
    );
    ensure!(args.seconds > 0, "--seconds must be at least 1");
    ensure!(args.projects > 0, "--projects must be at least 1");
    ensure!(
        args.connect_concurrency > 0,
        "--connect-concurrency must be at least 1"
    );
    let base = args.base_url.trim_end_matches('/').to_owned();
    let ws_url = ws_url(&base, &args.token)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;

    // 1. Projects to update.
    eprintln!("creating {} projects…", args.projects);
    let projects = create_projects(&http, &base, &args.token, args.projects).await?;

    // 2. Subscribers: connect, wait for `connected`, subscribe, wait for `subscribed`.
    eprintln!(
        "opening {} WebSocket subscribers ({} at a time)…",
        args.subscribers, args.connect_concurrency
    );
    let per_subscriber = usize::try_from(args.rate * args.seconds)
        .unwrap_or(usize::MAX)
        .saturating_add(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Once the writes are over: the last position they were answered with. Every subscriber
    // that has received it has received everything before it (the feed is in log order).
    let (target_tx, target_rx) = watch::channel(None::<Position>);
    let caught_up = Arc::new(AtomicU64::new(0));
    let connect_start = Instant::now();
    let mut opened: Vec<Ws> = Vec::with_capacity(args.subscribers);
    let mut failures: Vec<String> = Vec::new();
    {
        let mut attempts = futures::stream::iter(0..args.subscribers)
            .map(|i| {
                let url = ws_url.clone();
                let channel = args.channel.clone();
                async move { (i, open_subscriber(&url, &channel).await) }
            })
            .buffer_unordered(args.connect_concurrency);
        while let Some((i, result)) = attempts.next().await {
            match result {
                Ok(ws) => opened.push(ws),
                Err(e) => failures.push(format!("subscriber {i}: {e:#}")),
            }
        }
    }
    let connect_time = connect_start.elapsed();
    if !failures.is_empty() {
        for failure in failures.iter().take(10) {
            eprintln!("  {failure}");
        }
        bail!(
            "{} of {} WebSocket connections failed (first: {})",
            failures.len(),
            args.subscribers,
            failures[0]
        );
    }
    eprintln!(
        "{} subscribers connected and subscribed in {:.2} s",
        opened.len(),
        connect_time.as_secs_f64()
    );
    let mut readers = JoinSet::new();
    for ws in opened {
        readers.spawn(read_subscriber(
            ws,
            stop_rx.clone(),
            target_rx.clone(),
            Arc::clone(&caught_up),
            per_subscriber,
        ));
    }

    // 3. Writes at a steady rate; each request is its own task so a slow one delays no other.
    eprintln!("writing {} events/s for {} s…", args.rate, args.seconds);
    let sends: Arc<Mutex<HashMap<Position, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(per_subscriber)));
    let write_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let put_latency = Arc::new(Mutex::new(histogram()?));
    let server_before = args.server_pid.map(cpu_ticks).transpose()?;
    let client_before = cpu_ticks_self()?;
    let write_start = Instant::now();
    let write_end = write_start + Duration::from_secs(args.seconds);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut writes = JoinSet::new();
    let mut counter: u64 = 0;
    loop {
        let tick = ticker.tick().await;
        if tick.into_std() >= write_end {
            break;
        }
        counter += 1;
        let project = &projects[(rand_index(counter) % projects.len() as u64) as usize];
        let request = http
            .put(format!("{base}/api/v1/projects/{}", project.id))
            .bearer_auth(&args.token)
            .json(&json!({
                "name": project.name,
                "repo": project.repo,
                "build_command": format!("make live-{counter}"),
            }));
        let sends = Arc::clone(&sends);
        let write_errors = Arc::clone(&write_errors);
        let put_latency = Arc::clone(&put_latency);
        writes.spawn(async move {
            let sent = Instant::now();
            let outcome = put(request).await;
            let answered = sent.elapsed();
            match outcome {
                Ok(position) => {
                    sends.lock().expect("sends").insert(position, sent);
                    let _ = put_latency
                        .lock()
                        .expect("put latency")
                        .record(micros(answered));
                }
                Err(e) => write_errors.lock().expect("errors").push(format!("{e:#}")),
            }
        });
    }
    let write_window = write_start.elapsed();
    let server_after = args.server_pid.map(cpu_ticks).transpose()?;
    let client_after = cpu_ticks_self()?;
    while let Some(joined) = writes.join_next().await {
        joined.context("a write task panicked")?;
    }
    let written = sends.lock().expect("sends").len() as u64;
    eprintln!(
        "{counter} writes sent in {:.2} s, {written} answered with a position",
        write_window.as_secs_f64()
    );

    // 4. Drain: wait until every subscriber has the last event written, or the drain time is up.
    let expected = written * args.subscribers as u64;
    let last_written = sends.lock().expect("sends").keys().max().copied();
    let _ = target_tx.send(last_written);
    let drain_start = Instant::now();
    let drain_deadline = drain_start + Duration::from_secs(args.drain_seconds);
    let everyone = args.subscribers as u64;
    while last_written.is_some()
        && caught_up.load(Ordering::Acquire) < everyone
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "drained in {:.2} s ({} of {} subscribers received the last event written)",
        drain_start.elapsed().as_secs_f64(),
        caught_up.load(Ordering::Acquire),
        everyone
    );
    let memory = args.server_pid.map(memory).transpose()?;
    let _ = stop_tx.send(true);
    let mut received = Vec::with_capacity(args.subscribers);
    while let Some(joined) = readers.join_next().await {
        received.push(joined.context("a subscriber task panicked")?);
    }

    // 5. Join receipts with sends.
    let sends = std::mem::take(&mut *sends.lock().expect("sends"));
    let mut latency = histogram()?;
    // Per event: when the first and the last subscriber received it.
    let mut spread: HashMap<Position, (Instant, Instant)> = HashMap::with_capacity(sends.len());
    let mut matched: u64 = 0;
    let mut unmatched: u64 = 0;
    let mut duplicates: u64 = 0;
    let mut out_of_order: u64 = 0;
    let mut lagged = 0usize;
    let mut closed = 0usize;
    let mut server_errors: u64 = 0;
    let mut unknown: u64 = 0;
    let mut first_closed: Option<String> = None;
    let mut first_unknown: Option<String> = None;
    for r in &received {
        let mut seen = std::collections::HashSet::with_capacity(r.events.len());
        let mut last: Option<Position> = None;
        for (position, at) in &r.events {
            if last.is_some_and(|l| *position <= l) {
                out_of_order += 1;
            }
            last = Some(*position);
            if !seen.insert(*position) {
                duplicates += 1;
                continue;
            }
            match sends.get(position) {
                Some(sent) => {
                    matched += 1;
                    let _ = latency.record(micros(at.saturating_duration_since(*sent)));
                    let (first, last) = spread.entry(*position).or_insert((*at, *at));
                    *first = (*first).min(*at);
                    *last = (*last).max(*at);
                }
                None => unmatched += 1,
            }
        }
        lagged += usize::from(r.lagged);
        if let Some(why) = &r.closed {
            closed += 1;
            first_closed.get_or_insert_with(|| why.clone());
        }
        server_errors += r.errors;
        unknown += r.unknown;
        if let Some(u) = &r.first_unknown {
            first_unknown.get_or_insert_with(|| u.clone());
        }
    }
    let missing = expected.saturating_sub(matched);
    if missing > 0 {
        // Which writes some subscriber never got, and by how many subscribers.
        let mut absent: HashMap<Position, usize> = HashMap::new();
        for r in &received {
            let got: std::collections::HashSet<Position> =
                r.events.iter().map(|(p, _)| *p).collect();
            for position in sends.keys().filter(|p| !got.contains(p)) {
                *absent.entry(*position).or_default() += 1;
            }
        }
        let mut absent: Vec<_> = absent.into_iter().collect();
        absent.sort();
        for ((commit, prepare), n) in absent.iter().take(20) {
            let at = sends[&(*commit, *prepare)].saturating_duration_since(write_start);
            eprintln!(
                "missing: {commit}-{prepare} (PUT sent at {:.3} s) not received by {n} of {} \
                 subscribers",
                at.as_secs_f64(),
                received.len()
            );
        }
    }
    if let (Some(path), Some(first)) = (&args.dump, received.first()) {
        let mut lines = String::from("sent_ms position latency_ms\n");
        for (position, at) in &first.events {
            if let Some(sent) = sends.get(position) {
                let _ = writeln!(
                    lines,
                    "{:.3} {}-{} {:.3}",
                    sent.saturating_duration_since(write_start).as_secs_f64() * 1000.0,
                    position.0,
                    position.1,
                    at.saturating_duration_since(*sent).as_secs_f64() * 1000.0
                );
            }
        }
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    let write_errors = std::mem::take(&mut *write_errors.lock().expect("errors"));
    let put_latency = put_latency.lock().expect("put latency").clone();

    // 6. The table.
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let window_s = write_window.as_secs_f64();
    let mut out = String::new();
    out.push_str("\n| measure | result | target |\n|---|---|---|\n");
    let p99 = ms(&latency, 0.99);
    let _ = writeln!(
        out,
        "| WebSocket delivery, {} subscribers, {} events/s, {} s (PUT sent → event message \
         received: includes the command's handling) | p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms; {} events, {} of {} deliveries | p99 ≤ {} ms: {} |",
        args.subscribers,
        args.rate,
        args.seconds,
        ms(&latency, 0.5),
        ms(&latency, 0.9),
        p99,
        latency.max() as f64 / 1000.0,
        group(written),
        group(matched),
        group(expected),
        TARGET_P99_MS,
        pass(!latency.is_empty() && p99 <= TARGET_P99_MS && missing == 0),
    );
    let mut fan_out = histogram()?;
    for (first, last) in spread.values() {
        let _ = fan_out.record(micros(last.saturating_duration_since(*first)));
    }
    let _ = writeln!(
        out,
        "| fan-out: first → last subscriber to receive an event | p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms | |",
        ms(&fan_out, 0.5),
        ms(&fan_out, 0.99),
        fan_out.max() as f64 / 1000.0,
    );
    let _ = writeln!(
        out,
        "| the writes (PUT /api/v1/projects/{{id}} → response) | {:.0} req/s, p50 {:.1} ms, \
         p99 {:.1} ms, {} errors | |",
        counter as f64 / window_s,
        ms(&put_latency, 0.5),
        ms(&put_latency, 0.99),
        write_errors.len(),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = |before: u64, after: u64| {
        (after.saturating_sub(before)) as f64 / args.clk_tck as f64 / window_s * 100.0
    };
    match (server_before, server_after) {
        (Some(b), Some(a)) => {
            let _ = writeln!(
                out,
                "| server CPU during the writes | {:.0} % of one core ({cores} cores) | |",
                cpu(b, a)
            );
        }
        _ => out.push_str("| server CPU during the writes | not measured (no --server-pid) | |\n"),
    }
    let _ = writeln!(
        out,
        "| bench client CPU during the writes (same machine) | {:.0} % of one core | |",
        cpu(client_before, client_after)
    );
    match memory {
        Some((rss_kb, hwm_kb)) => {
            let _ = writeln!(
                out,
                "| server RSS | {} MB now, {} MB peak | ≤ {} MB: {} |",
                rss_kb / 1024,
                hwm_kb / 1024,
                TARGET_RSS_MB,
                pass(hwm_kb as f64 / 1024.0 <= TARGET_RSS_MB),
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| server RSS | not measured (no --server-pid) | ≤ {TARGET_RSS_MB} MB |"
            );
        }
    }
    let _ = writeln!(
        out,
        "| connections | {} opened and subscribed in {:.2} s, {} lagged, {} closed | |",
        group(args.subscribers as u64),
        connect_time.as_secs_f64(),
        lagged,
        closed,
    );
    print!("{out}");

    // Details and failures, on stderr.
    let mut problems = Vec::new();
    if lagged > 0 {
        problems.push(format!("{lagged} subscribers lagged"));
    }
    if closed > 0 {
        problems.push(format!(
            "{closed} subscribers closed early (first: {})",
            first_closed.unwrap_or_default()
        ));
    }
    if !write_errors.is_empty() {
        problems.push(format!(
            "{} writes failed (first: {})",
            write_errors.len(),
            write_errors[0]
        ));
    }
    if missing > 0 {
        problems.push(format!("{} deliveries missing", group(missing)));
    }
    if server_errors > 0 {
        eprintln!("note: {server_errors} error messages from the server");
    }
    if unknown > 0 {
        eprintln!(
            "note: {unknown} unexpected messages (first: {})",
            first_unknown.unwrap_or_default()
        );
    }
    if unmatched > 0 {
        eprintln!("note: {unmatched} events received that no write of this run answered");
    }
    if duplicates > 0 {
        eprintln!("note: {duplicates} events received twice by the same subscriber");
    }
    if out_of_order > 0 {
        eprintln!("note: {out_of_order} events received after a later position");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("the run failed: {}", problems.join("; ")))
    }
}

/// A project the writes update; its name and repository stay the same.
struct Project {
    id: String,
    name: String,
    repo: String,
}

async fn create_projects(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    count: usize,
) -> Result<Vec<Project>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let repo = "https://example.com/r.git";
    let mut projects = Vec::with_capacity(count);
    let mut created = futures::stream::iter(0..count)
        .map(|i| {
            let name = format!("live-{}-{i}", &run[..8]);
            async move {
                let response = http
                    .post(format!("{base}/api/v1/projects"))
                    .bearer_auth(token)
                    .json(&json!({ "name": name, "repo": repo }))
                    .send()
                    .await
                    .with_context(|| format!("POST {base}/api/v1/projects"))?;
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                ensure!(
                    status.is_success(),
                    "creating project {name}: {status}: {body}"
                );
                let id = body["id"]
                    .as_str()
                    .ok_or_else(|| anyhow!("creating project {name}: no id in {body}"))?
                    .to_owned();
                Ok(Project {
                    id,
                    name,
                    repo: repo.to_owned(),
                })
            }
        })
        .buffer_unordered(8);
    while let Some(project) = created.next().await {
        projects.push(project?);
    }
    Ok(projects)
}

/// One update; the position its response names.
async fn put(request: reqwest::RequestBuilder) -> Result<Position> {
    let response = request.send().await?;
    let status = response.status();
    let position = response
        .headers()
        .get("atelier-position")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_position);
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    position.ok_or_else(|| anyhow!("{status} without an Atelier-Position header"))
}

fn ws_url(base: &str, token: &str) -> Result<String> {
    let rest = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        bail!("--base-url must start with http:// or https://: {base}");
    };
    Ok(format!("{rest}/ws?access_token={token}"))
}

/// Opens one connection and subscribes it; returns once the server said `subscribed`.
async fn open_subscriber(url: &str, channel: &str) -> Result<Ws> {
    timeout(CONNECT_TIMEOUT, async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("connecting")?;
        let first = next_text(&mut ws)
            .await
            .context("waiting for `connected`")?;
        let kind = message_type(&first)?;
        ensure!(
            kind == "connected",
            "expected `connected` first, got {first}"
        );
        let subscribe = json!({ "type": "subscribe", "channels": [channel] }).to_string();
        ws.send(Message::text(subscribe))
            .await
            .context("sending subscribe")?;
        loop {
            let text = next_text(&mut ws)
                .await
                .context("waiting for `subscribed`")?;
            match message_type(&text)?.as_str() {
                "subscribed" => break,
                "heartbeat" | "pong" => {}
                _ => bail!("expected `subscribed`, got {text}"),
            }
        }
        Ok(ws)
    })
    .await
    .map_err(|_| anyhow!("no `subscribed` within {CONNECT_TIMEOUT:?}"))?
}

/// The next text message; pings are answered by tungstenite.
async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => bail!("closed by the server: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the connection ended"),
        }
    }
}

fn message_type(text: &str) -> Result<String> {
    let message: Incoming<'_> =
        serde_json::from_str(text).with_context(|| format!("not a message: {text}"))?;
    Ok(message.kind.into_owned())
}

/// Reads one subscriber's messages until told to stop, then closes politely.
async fn read_subscriber(
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
    mut target: watch::Receiver<Option<Position>>,
    caught_up: Arc<AtomicU64>,
    capacity: usize,
) -> Received {
    let mut r = Received {
        events: Vec::with_capacity(capacity),
        ..Received::default()
    };
    // The target, until this subscriber has reached it.
    let mut waiting_for: Option<Position> = None;
    let mut reached = false;
    let mut check = |r: &Received, waiting_for: Option<Position>| {
        if !reached
            && let (Some(t), Some((last, _))) = (waiting_for, r.events.last())
            && *last >= t
        {
            reached = true;
            caught_up.fetch_add(1, Ordering::AcqRel);
        }
    };
    loop {
        let message = tokio::select! {
            biased;
            message = ws.next() => message,
            _ = stop.changed() => break,
            Ok(()) = target.changed() => {
                waiting_for = *target.borrow_and_update();
                check(&r, waiting_for);
                continue;
            }
        };
        let at = Instant::now();
        match message {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<Incoming<'_>>(&text) {
                Ok(m) if m.kind == "lagged" => r.lagged = true,
                Ok(m) if m.kind == "error" => r.errors += 1,
                Ok(m) if is_control(&m.kind) => {}
                Ok(Incoming {
                    position: Some(p), ..
                }) => match parse_position(&p) {
                    Some(position) => {
                        r.events.push((position, at));
                        check(&r, waiting_for);
                    }
                    None => note_unknown(&mut r, text.as_str()),
                },
                _ => note_unknown(&mut r, text.as_str()),
            },
            Some(Ok(Message::Close(frame))) => {
                r.closed = Some(format!("close frame {frame:?}"));
                return r;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                r.closed = Some(format!("error: {e}"));
                return r;
            }
            None => {
                r.closed = Some("the connection ended".to_owned());
                return r;
            }
        }
    }
    let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
    r
}

fn note_unknown(r: &mut Received, text: &str) {
    r.unknown += 1;
    if r.first_unknown.is_none() {
        r.first_unknown = Some(text.chars().take(300).collect());
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// A cheap, well-spread pseudo-random number from a counter (splitmix64).
fn rand_index(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// utime + stime of a process, in clock ticks (all its threads).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_ticks(&stat).with_context(|| format!("parsing {path}"))
}

fn cpu_ticks_self() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    parse_stat_ticks(&stat).context("parsing /proc/self/stat")
}

fn parse_stat_ticks(stat: &str) -> Result<u64> {
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("no command name"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14, stime field 15.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("no field {n}"))?
            .parse::<u64>()
            .map_err(|e| anyhow!("field {n}: {e}"))
    };
    Ok(field(14)? + field(15)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_order() {
        assert_eq!(parse_position("123-4"), Some((123, 4)));
        assert_eq!(parse_position("12a-4"), None);
        assert!(parse_position("2-0").unwrap() > parse_position("1-9").unwrap());
    }

    #[test]
    fn stat_fields_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15";
        // utime = 11 + stime = 12 (fields 14 and 15).
        assert_eq!(parse_stat_ticks(stat).unwrap(), 23);
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(4_000_000), "4,000,000");
    }

    #[test]
    fn event_messages_are_read_without_their_data() {
        let m: Incoming<'_> = serde_json::from_str(
            r#"{"type":"project:updated","event_id":"x","position":"7-1","data":{"a":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(m.kind, "project:updated");
        assert_eq!(m.position.as_deref(), Some("7-1"));
    }
}
