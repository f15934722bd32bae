//! `camera-bench`: measures the cameras' pipelines of a running Atelier server.
//!
//! It creates N synthetic cameras (`synthetic://motion`, a white square crossing a black frame,
//! one ffmpeg each, at F frames/s, motion detection on with its defaults), opens S WebSocket
//! subscribers spread over the cameras (each on one camera's channel `camera_<id>`, for its
//! `frame_update` thumbnails, and on `events`, for every `new_event`), starts the cameras, waits
//! until they are all `active`, then measures for the given seconds:
//!
//! - frames processed per second: the pipelines' `frames_processed` (from `GET
//!   /api/v1/stats/performance`, written every 2 s) over the window, and the sum of their `fps`;
//! - decode and detection latency p99, as the pipelines measure them (the worst camera);
//! - `new_event` delivery: message received − the detection's `data.timestamp` (the frame's
//!   time: frame read → detection recorded → delivered), and − its `occurred_at` (recorded →
//!   delivered);
//! - thumbnails received per subscriber per second, against the cameras' `thumbnail_fps`;
//! - the server's CPU (utime + stime of `/proc/<pid>/stat`) and memory (VmRSS, VmHWM), and
//!   apart from it the CPU of its ffmpeg processes (its descendants whose command is `ffmpeg`),
//!   which do the decoding.
//!
//! The result is one markdown table on stdout; progress goes to stderr. It exits with an error
//! after printing the table when a camera did not become active, a subscriber lagged or was
//! closed, or a detection did not reach every subscriber. The cameras are stopped at the end.
//! `bench/cameras.sh` starts a server and runs it; see `bench/README.md`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use atelier_bench::{group, histogram, memory, pass};
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Targets (from the issue).
const TARGET_FRAMES_SHARE: f64 = 0.95;
const TARGET_DECODE_P99_MS: f64 = 50.0;
const TARGET_DETECTION_P99_MS: f64 = 50.0;
const TARGET_DELIVERY_P99_MS: f64 = 500.0;
const TARGET_RSS_MB: f64 = 150.0;
const TARGET_THUMBNAILS_SHARE: f64 = 0.9;
/// The motion detector's cooldown per camera: at most one detection per camera in this time.
const COOLDOWN_SECS: f64 = 5.0;
/// The longest one connection may take to open and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Benchmarks the cameras' pipelines: N synthetic cameras with motion detection, S WebSocket
/// subscribers watching their thumbnails and detections.
#[derive(Parser, Debug, Clone)]
#[command(name = "camera-bench", version, args_override_self = true)]
struct Args {
    /// The server's base URL; the feed is at `<base>/ws` (http → ws).
    #[arg(long, default_value = "http://127.0.0.1:18082")]
    base_url: String,
    /// An access token (from `POST /api/v1/auth/login`).
    #[arg(long, env = "ATELIER_BENCH_TOKEN", hide_env_values = true)]
    token: String,
    /// Synthetic cameras created and started.
    #[arg(long, default_value_t = 8)]
    cameras: usize,
    /// Frames per second of each camera (its source's rate and its capture's fps).
    #[arg(long, default_value_t = 5)]
    fps: u32,
    /// The synthetic source's frame size.
    #[arg(long, default_value = "640x360")]
    size: String,
    /// WebSocket subscribers, spread over the cameras (subscriber i watches camera i mod N).
    #[arg(long, default_value_t = 50)]
    subscribers: usize,
    /// Seconds measured, once every camera is active.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Thumbnails per second each camera sends its watchers (0 to 5).
    #[arg(long, default_value_t = 1)]
    thumbnail_fps: u32,
    /// The server's pid, for its CPU time and memory (`/proc/<pid>`) and its ffmpeg processes;
    /// none: not measured.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Longest wait for every camera to be `active`, in seconds.
    #[arg(long, default_value_t = 60)]
    active_timeout: u64,
    /// Seconds between all cameras active and the start of the measure (the first figures).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Seconds to keep reading after the window, for the last detections' deliveries.
    #[arg(long, default_value_t = 3)]
    drain_seconds: u64,
    /// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One `new_event` as a subscriber received it.
struct Delivery {
    detection: String,
    camera: String,
    received: Instant,
    /// Received − `data.timestamp` (the frame's time), µs; negative if the clocks disagree.
    from_frame_us: Option<i64>,
    /// Received − `occurred_at` (when the server recorded it), µs.
    from_recorded_us: Option<i64>,
}

/// What one subscriber saw.
#[derive(Default)]
struct Received {
    /// The camera it watches.
    camera: String,
    /// Each `frame_update` of its camera: when, and the base64 text's length.
    thumbnails: Vec<(Instant, usize)>,
    /// `frame_update`s of another camera than the one it watches.
    foreign_thumbnails: u64,
    deliveries: Vec<Delivery>,
    lagged: bool,
    closed: Option<String>,
    errors: u64,
    unknown: u64,
    first_unknown: Option<String>,
}

/// One camera's figures, as `/stats/performance` shows them.
#[derive(Clone, Debug, Default)]
struct Figures {
    status: String,
    frames_processed: Option<u64>,
    frames_dropped: Option<u64>,
    fps: Option<f64>,
    decode_p50: Option<f64>,
    decode_p99: Option<f64>,
    detection_p50: Option<f64>,
    detection_p99: Option<f64>,
    updated_at: Option<DateTime<Utc>>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camera-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    ensure!(args.cameras > 0, "--cameras must be at least 1");
    ensure!((1..=30).contains(&args.fps), "--fps must be 1 to 30");
    ensure!(args.thumbnail_fps <= 5, "--thumbnail-fps must be 0 to 5");
    ensure!(args.seconds > 0, "--seconds must be at least 1");
    let base = args.base_url.trim_end_matches('/').to_owned();
    let ws_url = ws_url(&base)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let api = Api {
        http: &http,
        base: &base,
        token: &args.token,
    };

    // 1. Cameras.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let url = format!("synthetic://motion?size={}&rate={}", args.size, args.fps);
    eprintln!("creating {} cameras ({url})…", args.cameras);
    let mut cameras: Vec<String> = Vec::with_capacity(args.cameras);
    for i in 0..args.cameras {
        let body = api
            .send(
                reqwest::Method::POST,
                "/api/v1/cameras",
                Some(json!({
                    "name": format!("bench-{}-{i}", &run_id[..8]),
                    "url": url,
                    "location": "camera-bench",
                    "capture": {"fps": args.fps, "thumbnail_fps": args.thumbnail_fps},
                    "motion": {"enabled": true},
                })),
            )
            .await
            .with_context(|| format!("creating camera {i}"))?;
        let id = body["id"]
            .as_str()
            .ok_or_else(|| anyhow!("creating camera {i}: no id in {body}"))?;
        cameras.push(id.to_owned());
    }
    let result = measure(&args, &api, &ws_url, &cameras).await;
    // Whatever happened: stop the cameras (their ffmpeg processes end with them).
    for id in &cameras {
        if let Err(e) = api
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/cameras/{id}/stop"),
                None,
            )
            .await
        {
            eprintln!("note: stopping camera {id}: {e:#}");
        }
    }
    result
}

async fn measure(args: &Args, api: &Api<'_>, ws_url: &str, cameras: &[String]) -> Result<()> {
    // 2. Subscribers, before the cameras start: subscriber i watches camera i mod N.
    eprintln!("opening {} WebSocket subscribers…", args.subscribers);
    let connect_start = Instant::now();
    let mut opened = Vec::with_capacity(args.subscribers);
    {
        let mut attempts = futures::stream::iter(0..args.subscribers)
            .map(|i| {
                let camera = cameras[i % cameras.len()].clone();
                async move {
                    let ws = open_subscriber(ws_url, api.token, &camera)
                        .await
                        .with_context(|| format!("subscriber {i}"));
                    (camera, ws)
                }
            })
            .buffer_unordered(25);
        while let Some((camera, ws)) = attempts.next().await {
            opened.push((camera, ws?));
        }
    }
    let connect_time = connect_start.elapsed();
    eprintln!(
        "{} subscribers connected and subscribed in {:.2} s",
        opened.len(),
        connect_time.as_secs_f64()
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    for (camera, ws) in opened {
        readers.spawn(read_subscriber(ws, camera, stop_rx.clone()));
    }

    // 3. Start the cameras; wait until every one is active.
    for id in cameras {
        api.send(
            reqwest::Method::POST,
            &format!("/api/v1/cameras/{id}/start"),
            None,
        )
        .await
        .with_context(|| format!("starting camera {id}"))?;
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.active_timeout);
    loop {
        let mut waiting = Vec::new();
        for id in cameras {
            // Not found yet: the read model has not caught up with the creation.
            let camera = api
                .send(reqwest::Method::GET, &format!("/api/v1/cameras/{id}"), None)
                .await
                .unwrap_or_else(|e| json!({"status": "unknown", "last_error": format!("{e:#}")}));
            let status = camera["status"].as_str().unwrap_or("?");
            if status != "active" {
                waiting.push(format!(
                    "{id}: {status}{}",
                    camera["last_error"]
                        .as_str()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
        }
        if waiting.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "{} of {} cameras not active after {} s: {}",
                waiting.len(),
                cameras.len(),
                args.active_timeout,
                waiting.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let active_after = start.elapsed();
    eprintln!(
        "{} cameras active {:.2} s after their start; warming up {} s…",
        cameras.len(),
        active_after.as_secs_f64(),
        args.warmup
    );
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    // 4. The window.
    let figures_before = performance(api, cameras).await?;
    let server_before = args.server_pid.map(cpu_ticks).transpose()?;
    let ffmpeg_before = args.server_pid.map(ffmpeg_ticks).unwrap_or_default();
    let client_before = cpu_ticks_self()?;
    let window_start = Instant::now();
    eprintln!(
        "measuring {} s ({} ffmpeg processes under the server)…",
        args.seconds,
        ffmpeg_before.len()
    );
    // Sample the server's RSS every second (VmHWM has the peak; this is its peak over the window).
    let mut rss_max_kb = 0u64;
    let window_end = window_start + Duration::from_secs(args.seconds);
    while Instant::now() < window_end {
        if let Some(pid) = args.server_pid {
            rss_max_kb = rss_max_kb.max(memory(pid)?.0);
        }
        let left = window_end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
    let window = window_start.elapsed();
    let server_after = args.server_pid.map(cpu_ticks).transpose()?;
    let ffmpeg_after = args.server_pid.map(ffmpeg_ticks).unwrap_or_default();
    let ffmpeg_rss_kb: u64 = ffmpeg_after.values().map(|(_, rss)| rss).sum();
    let client_after = cpu_ticks_self()?;
    let memory_now = args.server_pid.map(memory).transpose()?;
    // The figures are written every 2 s: wait for the next writing, then read them.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let figures_after = performance(api, cameras).await?;
    let left = Duration::from_secs(args.drain_seconds).saturating_sub(Duration::from_millis(2100));
    tokio::time::sleep(left).await;
    let _ = stop_tx.send(true);
    let mut received = Vec::with_capacity(args.subscribers);
    while let Some(joined) = readers.join_next().await {
        received.push(joined.context("a subscriber task panicked")?);
    }

    // 5. Figures.
    // CPU: between the two samples; what is counted by its arrival (thumbnails, deliveries):
    // in exactly the nominal window.
    let window_s = window.as_secs_f64();
    let nominal_s = args.seconds as f64;
    let in_window = |at: Instant| at >= window_start && at < window_end;
    let our: HashSet<&str> = cameras.iter().map(String::as_str).collect();

    // Frames: Δframes_processed / Δupdated_at per camera, summed.
    let mut processed_rate = 0.0;
    let mut processed_frames = 0u64;
    let mut dropped = 0u64;
    let mut fps_sum = 0.0;
    let mut decode_p99 = None::<f64>;
    let mut decode_p50 = None::<f64>;
    let mut detection_p99 = None::<f64>;
    let mut detection_p50 = None::<f64>;
    let mut figures_missing = 0usize;
    let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    for id in cameras {
        let (Some(b), Some(a)) = (figures_before.get(id), figures_after.get(id)) else {
            figures_missing += 1;
            continue;
        };
        match (
            b.frames_processed,
            a.frames_processed,
            b.updated_at,
            a.updated_at,
        ) {
            (Some(pb), Some(pa), Some(tb), Some(ta)) if ta > tb => {
                let frames = pa.saturating_sub(pb);
                processed_frames += frames;
                processed_rate +=
                    frames as f64 / ((ta - tb).num_microseconds().unwrap_or(1) as f64 / 1e6);
            }
            _ => figures_missing += 1,
        }
        dropped += a
            .frames_dropped
            .unwrap_or(0)
            .saturating_sub(b.frames_dropped.unwrap_or(0));
        fps_sum += a.fps.unwrap_or(0.0);
        decode_p99 = max(decode_p99, a.decode_p99);
        decode_p50 = max(decode_p50, a.decode_p50);
        detection_p99 = max(detection_p99, a.detection_p99);
        detection_p50 = max(detection_p50, a.detection_p50);
    }
    let not_active: Vec<String> = cameras
        .iter()
        .filter_map(|id| {
            let status = figures_after.get(id).map_or("?", |f| f.status.as_str());
            (status != "active").then(|| format!("{id}: {status}"))
        })
        .collect();

    // new_event: deliveries received in the window, of this run's cameras.
    let mut from_frame = histogram()?;
    let mut from_recorded = histogram()?;
    let mut negative = 0u64;
    let mut deliveries = 0u64;
    let mut duplicates = 0u64;
    let mut foreign_events = 0u64;
    // Per detection first received in the window: its camera and how many subscribers got it.
    let mut detections: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut first_seen: HashMap<&str, Instant> = HashMap::new();
    for r in &received {
        for d in &r.deliveries {
            let at = first_seen.entry(d.detection.as_str()).or_insert(d.received);
            *at = (*at).min(d.received);
        }
    }
    for r in &received {
        let mut seen = HashSet::new();
        for d in &r.deliveries {
            if !our.contains(d.camera.as_str()) {
                foreign_events += 1;
                continue;
            }
            if !seen.insert(d.detection.as_str()) {
                duplicates += 1;
                continue;
            }
            if !in_window(first_seen[d.detection.as_str()]) {
                continue;
            }
            detections
                .entry(d.detection.as_str())
                .or_insert((d.camera.as_str(), 0))
                .1 += 1;
            if !in_window(d.received) {
                continue;
            }
            deliveries += 1;
            for (value, h) in [
                (d.from_frame_us, &mut from_frame),
                (d.from_recorded_us, &mut from_recorded),
            ] {
                if let Some(us) = value {
                    if us < 0 {
                        negative += 1;
                    }
                    let _ = h.record(us.max(1) as u64);
                }
            }
        }
    }
    let missing: u64 = detections
        .values()
        .map(|(_, got)| args.subscribers.saturating_sub(*got) as u64)
        .sum();
    let mut per_camera: HashMap<&str, u64> = HashMap::new();
    for (camera, _) in detections.values() {
        *per_camera.entry(*camera).or_default() += 1;
    }
    let cameras_without = cameras
        .iter()
        .filter(|c| !per_camera.contains_key(c.as_str()))
        .count();
    let most_possible = (cameras.len() as f64 * (nominal_s / COOLDOWN_SECS).ceil()) as u64;

    // Thumbnails.
    let mut thumbnails = 0u64;
    let mut thumb_bytes = 0u64;
    let mut per_subscriber_min = f64::MAX;
    let mut foreign_thumbnails = 0u64;
    for r in &received {
        let mine = r
            .thumbnails
            .iter()
            .filter(|(at, _)| in_window(*at))
            .collect::<Vec<_>>();
        thumbnails += mine.len() as u64;
        thumb_bytes += mine
            .iter()
            .map(|(_, len)| (*len as u64) * 3 / 4)
            .sum::<u64>();
        per_subscriber_min = per_subscriber_min.min(mine.len() as f64 / nominal_s);
        foreign_thumbnails += r.foreign_thumbnails;
    }
    let expected_thumbnails =
        args.subscribers as u64 * u64::from(args.thumbnail_fps) * args.seconds;

    let lagged = received.iter().filter(|r| r.lagged).count();
    let closed: Vec<&String> = received.iter().filter_map(|r| r.closed.as_ref()).collect();
    let server_errors: u64 = received.iter().map(|r| r.errors).sum();
    let unknown: u64 = received.iter().map(|r| r.unknown).sum();

    // 6. The table.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = |ticks: u64| ticks as f64 / args.clk_tck as f64 / window_s * 100.0;
    let mut out = String::new();
    out.push_str("| measure | result | target |\n|---|---|---|\n");
    let frames_target = TARGET_FRAMES_SHARE * cameras.len() as f64 * f64::from(args.fps);
    let _ = writeln!(
        out,
        "| frames processed, {} cameras × {} fps ({}, motion detection on), {:.0} s | {:.1} frames/s \
         ({} frames; the pipelines' own fps: {:.1} in all), {} dropped{} | ≥ {:.0}/s: {} |",
        cameras.len(),
        args.fps,
        args.size,
        window_s,
        processed_rate,
        group(processed_frames),
        fps_sum,
        group(dropped),
        if figures_missing > 0 {
            format!(", {figures_missing} cameras without figures")
        } else {
            String::new()
        },
        frames_target,
        pass(figures_missing == 0 && processed_rate >= frames_target),
    );
    let _ = writeln!(
        out,
        "| decode latency (the worst camera: ffmpeg's first byte → whole frame read) | p50 {}, p99 {} | p99 ≤ {} ms: {} |",
        opt_ms(decode_p50),
        opt_ms(decode_p99),
        TARGET_DECODE_P99_MS,
        pass(decode_p99.is_some_and(|p| p <= TARGET_DECODE_P99_MS)),
    );
    let _ = writeln!(
        out,
        "| detection latency (the worst camera: motion detector per frame) | p50 {}, p99 {} | p99 ≤ {} ms: {} |",
        opt_ms(detection_p50),
        opt_ms(detection_p99),
        TARGET_DETECTION_P99_MS,
        pass(detection_p99.is_some_and(|p| p <= TARGET_DETECTION_P99_MS)),
    );
    let delivery_p99 = ms(&from_frame, 0.99);
    let _ = writeln!(
        out,
        "| `new_event` delivery, frame → subscriber (received − `data.timestamp`) | p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms; {} deliveries of {} detections, {} missing | p99 ≤ {} ms: {} |",
        ms(&from_frame, 0.5),
        delivery_p99,
        from_frame.max() as f64 / 1000.0,
        group(deliveries),
        detections.len(),
        group(missing),
        TARGET_DELIVERY_P99_MS,
        pass(!from_frame.is_empty() && delivery_p99 <= TARGET_DELIVERY_P99_MS && missing == 0),
    );
    let _ = writeln!(
        out,
        "| `new_event` delivery, recorded → subscriber (received − `occurred_at`) | p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms | |",
        ms(&from_recorded, 0.5),
        ms(&from_recorded, 0.99),
        from_recorded.max() as f64 / 1000.0,
    );
    let _ = writeln!(
        out,
        "| detections (motion; one per camera per {COOLDOWN_SECS:.0} s at most) | {} in {:.0} s \
         (at most {}), {} cameras without any | |",
        detections.len(),
        nominal_s,
        most_possible,
        cameras_without,
    );
    let thumbnails_ok = args.thumbnail_fps == 0
        || thumbnails as f64 >= TARGET_THUMBNAILS_SHARE * expected_thumbnails as f64;
    let _ = writeln!(
        out,
        "| thumbnails (`frame_update`) delivered, {} subscribers at {}/s | {} of {} expected \
         ({:.2}/s per subscriber, the least {:.2}/s; {:.1} KB each) | ≥ {}×: {} |",
        args.subscribers,
        args.thumbnail_fps,
        group(thumbnails),
        group(expected_thumbnails),
        thumbnails as f64 / args.subscribers as f64 / nominal_s,
        if per_subscriber_min == f64::MAX {
            0.0
        } else {
            per_subscriber_min
        },
        if thumbnails > 0 {
            thumb_bytes as f64 / thumbnails as f64 / 1000.0
        } else {
            0.0
        },
        TARGET_THUMBNAILS_SHARE,
        pass(thumbnails_ok),
    );
    match (server_before, server_after) {
        (Some(b), Some(a)) => {
            let _ = writeln!(
                out,
                "| server CPU (its own threads: capture loops, detection, thumbnails, API, feed) | \
                 {:.0} % of one core ({cores} cores) | |",
                cpu(a.saturating_sub(b))
            );
        }
        _ => out.push_str("| server CPU | not measured (no --server-pid) | |\n"),
    }
    if args.server_pid.is_some() {
        // Per process: its ticks over the window (a process that appeared counts from 0).
        let ticks: u64 = ffmpeg_after
            .iter()
            .map(|(pid, (after, _))| {
                after.saturating_sub(ffmpeg_before.get(pid).map_or(0, |(b, _)| *b))
            })
            .sum();
        let restarted = ffmpeg_after
            .keys()
            .filter(|pid| !ffmpeg_before.contains_key(pid))
            .count();
        let _ = writeln!(
            out,
            "| ffmpeg CPU (the decoding: {} processes under the server{}) | {:.0} % of one core, \
             {:.1} % per camera; {} MB of memory in all (PSS) | |",
            ffmpeg_after.len(),
            if restarted > 0 {
                format!(", {restarted} started during the window")
            } else {
                String::new()
            },
            cpu(ticks),
            cpu(ticks) / cameras.len() as f64,
            ffmpeg_rss_kb / 1024,
        );
    }
    let _ = writeln!(
        out,
        "| bench client CPU (same machine) | {:.0} % of one core | |",
        cpu(client_after.saturating_sub(client_before))
    );
    match memory_now {
        Some((rss_kb, hwm_kb)) => {
            let _ = writeln!(
                out,
                "| server RSS | {} MB now, {} MB most during the window, {} MB peak | ≤ {} MB: {} |",
                rss_kb / 1024,
                rss_max_kb.max(rss_kb) / 1024,
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
        "| connections | {} opened and subscribed in {:.2} s, {} lagged, {} closed; cameras active {:.1} s after their start | |",
        args.subscribers,
        connect_time.as_secs_f64(),
        lagged,
        closed.len(),
        active_after.as_secs_f64(),
    );
    print!("{out}");

    // Details and failures, on stderr.
    let mut problems = Vec::new();
    if !not_active.is_empty() {
        problems.push(format!(
            "cameras not active at the end: {}",
            not_active.join("; ")
        ));
    }
    if lagged > 0 {
        problems.push(format!("{lagged} subscribers lagged"));
    }
    if !closed.is_empty() {
        problems.push(format!(
            "{} subscribers closed early (first: {})",
            closed.len(),
            closed[0]
        ));
    }
    if missing > 0 {
        problems.push(format!("{} new_event deliveries missing", group(missing)));
    }
    if negative > 0 {
        eprintln!("note: {negative} deliveries received before their timestamp (clocks?)");
    }
    if duplicates > 0 {
        eprintln!("note: {duplicates} new_event messages received twice by the same subscriber");
    }
    if foreign_events > 0 {
        eprintln!("note: {foreign_events} new_event messages of other cameras than this run's");
    }
    if foreign_thumbnails > 0 {
        eprintln!("note: {foreign_thumbnails} thumbnails of a camera the subscriber did not watch");
    }
    if server_errors > 0 {
        eprintln!("note: {server_errors} error messages from the server");
    }
    if unknown > 0 {
        eprintln!(
            "note: {unknown} unexpected messages (first: {})",
            received
                .iter()
                .find_map(|r| r.first_unknown.clone())
                .unwrap_or_default()
        );
    }
    let mut per_camera: Vec<_> = cameras
        .iter()
        .map(|c| per_camera.get(c.as_str()).copied().unwrap_or(0))
        .collect();
    per_camera.sort_unstable();
    eprintln!("detections per camera in the window: {per_camera:?}");
    if problems.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("the run failed: {}", problems.join("; ")))
    }
}

/// The API, with the bench's token.
struct Api<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    token: &'a str,
}

impl Api<'_> {
    /// One request; its JSON answer (`null` when empty). A non-2xx status is an error.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        ensure!(
            status.is_success(),
            "{method} {path}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: not JSON"))
    }
}

/// `/stats/performance`, for the given cameras.
async fn performance(api: &Api<'_>, cameras: &[String]) -> Result<HashMap<String, Figures>> {
    let body = api
        .send(reqwest::Method::GET, "/api/v1/stats/performance", None)
        .await?;
    let list = body
        .as_array()
        .ok_or_else(|| anyhow!("/stats/performance: not a list: {body}"))?;
    let mut out = HashMap::new();
    for item in list {
        let Some(id) = item["camera_id"].as_str() else {
            continue;
        };
        if !cameras.iter().any(|c| c == id) {
            continue;
        }
        let f = &item["figures"];
        out.insert(
            id.to_owned(),
            Figures {
                status: item["status"].as_str().unwrap_or("?").to_owned(),
                frames_processed: f["frames_processed"].as_u64(),
                frames_dropped: f["frames_dropped"].as_u64(),
                fps: f["fps"].as_f64(),
                decode_p50: f["decode_latency_ms"]["p50"].as_f64(),
                decode_p99: f["decode_latency_ms"]["p99"].as_f64(),
                detection_p50: f["detection_latency_ms"]["p50"].as_f64(),
                detection_p99: f["detection_latency_ms"]["p99"].as_f64(),
                updated_at: item["updated_at"]
                    .as_str()
                    .and_then(|s| s.parse::<DateTime<Utc>>().ok()),
            },
        );
    }
    Ok(out)
}

fn ws_url(base: &str) -> Result<String> {
    let rest = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        bail!("--base-url must start with http:// or https://: {base}");
    };
    Ok(format!("{rest}/ws"))
}

/// Opens one connection (the token in `Authorization`) and subscribes it to one camera and to
/// `events`; returns once the server said `subscribed`.
async fn open_subscriber(url: &str, token: &str, camera: &str) -> Result<Ws> {
    timeout(CONNECT_TIMEOUT, async {
        let mut request = url.into_client_request().context("the WebSocket URL")?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).context("the token")?,
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
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
        let subscribe = json!({
            "type": "subscribe",
            "channels": [format!("camera_{camera}"), "events"],
        })
        .to_string();
        ws.send(Message::text(subscribe))
            .await
            .context("sending subscribe")?;
        loop {
            let text = next_text(&mut ws)
                .await
                .context("waiting for `subscribed`")?;
            match message_type(&text)?.as_str() {
                "subscribed" => break,
                "heartbeat" | "pong" | "frame_update" | "new_event" => {}
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
    let message: Value =
        serde_json::from_str(text).with_context(|| format!("not a message: {text}"))?;
    Ok(message["type"].as_str().unwrap_or_default().to_owned())
}

/// Microseconds from `at` (RFC 3339) to `now`.
fn since(now: DateTime<Utc>, at: &Value) -> Option<i64> {
    let at = at.as_str()?.parse::<DateTime<Utc>>().ok()?;
    (now - at).num_microseconds()
}

/// Reads one subscriber's messages until told to stop, then closes politely.
async fn read_subscriber(mut ws: Ws, camera: String, mut stop: watch::Receiver<bool>) -> Received {
    let mut r = Received {
        camera,
        ..Received::default()
    };
    loop {
        let message = tokio::select! {
            biased;
            message = ws.next() => message,
            _ = stop.changed() => break,
        };
        let at = Instant::now();
        let now = Utc::now();
        match message {
            Some(Ok(Message::Text(text))) => {
                let Ok(m) = serde_json::from_str::<Value>(text.as_str()) else {
                    note_unknown(&mut r, text.as_str());
                    continue;
                };
                match m["type"].as_str().unwrap_or_default() {
                    "frame_update" => {
                        if m["camera_id"].as_str() == Some(r.camera.as_str()) {
                            let len = m["data"].as_str().map_or(0, str::len);
                            r.thumbnails.push((at, len));
                        } else {
                            r.foreign_thumbnails += 1;
                        }
                    }
                    "new_event" => {
                        let data = &m["data"];
                        match (data["id"].as_str(), data["camera_id"].as_str()) {
                            (Some(id), Some(camera)) => r.deliveries.push(Delivery {
                                detection: id.to_owned(),
                                camera: camera.to_owned(),
                                received: at,
                                from_frame_us: since(now, &data["timestamp"]),
                                from_recorded_us: since(now, &m["occurred_at"]),
                            }),
                            _ => note_unknown(&mut r, text.as_str()),
                        }
                    }
                    "lagged" => r.lagged = true,
                    "error" => r.errors += 1,
                    "connected" | "subscribed" | "unsubscribed" | "authenticated" | "heartbeat"
                    | "pong" => {}
                    // Other events of the subscribed channels (a camera's own events).
                    _ if m.get("position").is_some() => {}
                    _ => note_unknown(&mut r, text.as_str()),
                }
            }
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

fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64 / 1000.0
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| format!("{v:.1} ms"))
}

/// utime + stime of a process, in clock ticks (all its threads).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_stat(&stat)
        .with_context(|| format!("parsing {path}"))?
        .ticks)
}

fn cpu_ticks_self() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    Ok(parse_stat(&stat).context("parsing /proc/self/stat")?.ticks)
}

/// What the bench reads of `/proc/<pid>/stat`.
struct Stat {
    comm: String,
    ppid: u32,
    ticks: u64,
}

fn parse_stat(stat: &str) -> Result<Stat> {
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let (head, after) = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("no command name"))?;
    let comm = head
        .split_once('(')
        .map(|(_, c)| c.to_owned())
        .ok_or_else(|| anyhow!("no command name"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); ppid is field 4, utime field 14, stime field 15.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("no field {n}"))?
            .parse::<u64>()
            .map_err(|e| anyhow!("field {n}: {e}"))
    };
    Ok(Stat {
        comm,
        ppid: u32::try_from(field(4)?)?,
        ticks: field(14)? + field(15)?,
    })
}

/// The server's ffmpeg processes (its descendants whose command is `ffmpeg`): pid → (utime +
/// stime in ticks, PSS in kB, or VmRSS where smaps_rollup is not readable).
fn ffmpeg_ticks(server: u32) -> HashMap<u32, (u64, u64)> {
    let mut parents = HashMap::new();
    let mut stats = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Ok(stat) = parse_stat(&text) {
            parents.insert(pid, stat.ppid);
            stats.insert(pid, stat);
        }
    }
    let descends = |mut pid: u32| {
        for _ in 0..64 {
            match parents.get(&pid) {
                Some(&parent) if parent == server => return true,
                Some(&parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    stats
        .iter()
        .filter(|(pid, s)| s.comm == "ffmpeg" && descends(**pid))
        .map(|(pid, s)| {
            let rss = pss(*pid).or_else(|| memory(*pid).ok().map(|(rss, _)| rss));
            let rss = rss.unwrap_or(0);
            (*pid, (s.ticks, rss))
        })
        .collect()
}

/// The proportional set size of a process, in kB: its shared pages (ffmpeg's libraries) divided
/// among the processes that map them, so that the sum over processes is what they hold.
fn pss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command_name() {
        let stat = "42 (a (b) c) S 7 2 3 4 5 6 7 8 9 10 11 12 13 14 15";
        let s = parse_stat(stat).unwrap();
        assert_eq!(s.comm, "a (b) c");
        assert_eq!(s.ppid, 7);
        // utime = 11 + stime = 12 (fields 14 and 15).
        assert_eq!(s.ticks, 23);
    }

    #[test]
    fn times_since_an_rfc3339_timestamp() {
        let now: DateTime<Utc> = "2026-12-06T10:00:01.250000Z".parse().unwrap();
        assert_eq!(
            since(now, &json!("2026-12-06T10:00:01.000001Z")),
            Some(249_999)
        );
        assert_eq!(since(now, &json!(null)), None);
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(999), "999");
        assert_eq!(group(4_000_000), "4,000,000");
    }
}
