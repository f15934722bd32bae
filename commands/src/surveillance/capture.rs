//! Reading a camera's frames with ffmpeg, and the per-camera pipeline around it.
//!
//! [`ffmpeg_input`] turns a source URL into ffmpeg's input arguments; a [`Capture`] runs one
//! ffmpeg (its own process group, a clean environment, killed with its owner) that writes
//! rgb24 frames on a pipe; [`run`] ([`Pipeline`]) is the camera's loop: connect, read, detect,
//! thumbnails and snapshots to a [`PipelineSink`], retry with backoff, until stopped;
//! [`Telemetry`] is what it measures on the way.
//!
//! A source URL may carry credentials (`rtsp://user:password@host/…`). They reach ffmpeg's
//! arguments and nothing else: errors, logs, `Debug` and the stderr kept for reasons use the
//! masked URL ([`SourceUrl::masked`]), and every stderr line is scrubbed of the user
//! information and the password (plain and percent-decoded) before it is kept. (ffmpeg's
//! arguments are visible to local users through `/proc`; ffmpeg offers no other way to pass
//! them for RTSP.)

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atelier_domain::surveillance::camera::{CaptureSettings, SourceUrl};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::vision::{Detector, Finding, Frame, encode_jpeg};
use crate::process::{GroupGuard, clean_command};

/// How long ffmpeg waits on a silent socket (RTSP, HTTP streams) before it gives up, in µs.
const SOCKET_TIMEOUT_US: &str = "10000000";
/// Lines of ffmpeg's stderr kept for an error's reason (warnings and worse).
const STDERR_LINES: usize = 20;
/// Longest reason, in characters.
const MAX_REASON_CHARS: usize = 600;
/// Widest thumbnail.
pub const THUMBNAIL_WIDTH: u32 = 320;
/// Widest snapshot of a finding.
pub const SNAPSHOT_WIDTH: u32 = 640;
/// Widest frame the pipeline reads, unless told otherwise: detection works on a 160-wide grid
/// and the widest picture it makes is a snapshot.
pub const DEFAULT_MAX_WIDTH: u32 = SNAPSHOT_WIDTH;
const THUMBNAIL_QUALITY: u8 = 70;
const SNAPSHOT_QUALITY: u8 = 85;

/// The synthetic patterns (`synthetic://<pattern>?size=WxH&rate=R`).
pub const SYNTHETIC_PATTERNS: [&str; 5] = ["testsrc", "testsrc2", "smptebars", "color", "motion"];

/// Why a capture could not start or stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// The source URL cannot be read.
    #[error("invalid source: {0}")]
    Source(String),
    /// ffmpeg could not be started.
    #[error("ffmpeg could not be started: {0}")]
    Spawn(String),
    /// The source failed; the reason is ffmpeg's, credentials masked.
    #[error("{0}")]
    Failed(String),
}

/// ffmpeg's input arguments for a source URL (everything up to and including `-i <url>`).
///
/// - `rtsp`, `rtsps`: over TCP (`-rtsp_transport tcp`: no lost UDP packets, through NAT), a
///   socket timeout (`-timeout`, µs);
/// - `http`, `https`: a socket timeout (`-rw_timeout`, µs) and ffmpeg's own format detection,
///   which reads an MJPEG stream (`multipart/x-mixed-replace`) as a stream. A snapshot URL (one
///   JPEG per request) ends after one picture: [`Capture`] notices (ffmpeg named the input
///   `jpeg_pipe`, or another `*_pipe` image format, and ended cleanly) and switches to
///   [`snapshot_input`], ffmpeg's `image2` demuxer looping on the URL, which fetches it again
///   for every frame at the capture's rate;
/// - `synthetic://<pattern>?size=WxH&rate=R`: ffmpeg's lavfi test sources, read at their own
///   rate (`-re`): `testsrc`, `testsrc2`, `smptebars`, `color` (`&color=red` or `%23ff0000`),
///   and `motion`, a black background with a white square (a quarter of the height) crossing
///   it, for motion detection to find. `size` defaults to 640x360 (16 to 3840 by 16 to
///   2160), `rate` to 5 (1 to 60). Unknown patterns and parameters are refused.
pub fn ffmpeg_input(url: &str) -> Result<Vec<String>, CaptureError> {
    let source = SourceUrl::parse(url).map_err(|e| CaptureError::Source(e.message))?;
    input_args(&source, Mode::Stream, 1)
}

/// ffmpeg's input arguments for an HTTP URL that serves one picture per request, read `fps`
/// times a second (the `image2` demuxer, looping: it opens the URL again for each frame).
pub fn snapshot_input(url: &str, fps: u32) -> Result<Vec<String>, CaptureError> {
    let source = SourceUrl::parse(url).map_err(|e| CaptureError::Source(e.message))?;
    if !matches!(source.scheme(), "http" | "https") {
        return Err(CaptureError::Source(
            "only an http or https source can be a snapshot URL".into(),
        ));
    }
    input_args(&source, Mode::Snapshot, fps)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    Snapshot,
}

fn input_args(source: &SourceUrl, mode: Mode, fps: u32) -> Result<Vec<String>, CaptureError> {
    let url = source.expose().to_owned();
    let args: Vec<String> = match (source.scheme(), mode) {
        ("rtsp" | "rtsps", _) => vec![
            "-rtsp_transport".into(),
            "tcp".into(),
            "-timeout".into(),
            SOCKET_TIMEOUT_US.into(),
            "-i".into(),
            url,
        ],
        ("http" | "https", Mode::Stream) => vec![
            "-rw_timeout".into(),
            SOCKET_TIMEOUT_US.into(),
            "-i".into(),
            url,
        ],
        // image2 takes no protocol options (no -rw_timeout): the pipeline's stall timeout
        // stands in for it. `-pattern_type none`: a `%` in the URL is not a sequence number.
        ("http" | "https", Mode::Snapshot) => vec![
            "-f".into(),
            "image2".into(),
            "-loop".into(),
            "1".into(),
            "-pattern_type".into(),
            "none".into(),
            "-c:v".into(),
            "mjpeg".into(),
            "-framerate".into(),
            fps.clamp(1, 60).to_string(),
            "-re".into(),
            "-i".into(),
            url,
        ],
        ("synthetic", _) => vec![
            "-re".into(),
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            synthetic_graph(&url)?,
        ],
        (other, _) => {
            return Err(CaptureError::Source(format!(
                "the {other} scheme is not supported"
            )));
        }
    };
    Ok(args)
}

/// The lavfi graph of a `synthetic://` URL.
fn synthetic_graph(url: &str) -> Result<String, CaptureError> {
    let bad = |why: String| Err(CaptureError::Source(why));
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let (pattern, query) = rest.split_once('?').unwrap_or((rest, ""));
    let pattern = pattern.trim_end_matches('/').to_ascii_lowercase();
    if pattern.contains(['@', '/', ':', '#']) {
        return bad(
            "a synthetic source is a pattern name alone, with no credentials, port or path".into(),
        );
    }
    if !SYNTHETIC_PATTERNS.contains(&pattern.as_str()) {
        let shown: String = pattern.chars().take(32).collect();
        return bad(format!(
            "unknown synthetic pattern {shown:?}: testsrc, testsrc2, smptebars, color or motion"
        ));
    }
    let (mut width, mut height, mut rate) = (640u32, 360u32, 5u32);
    let mut color = "gray".to_owned();
    for pair in query.split(['&', '#']).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "size" => {
                let parsed = value
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                    .filter(|(w, h)| (16..=3840).contains(w) && (16..=2160).contains(h));
                match parsed {
                    Some((w, h)) => (width, height) = (w, h),
                    None => {
                        return bad(
                            "size must be WIDTHxHEIGHT, 16 to 3840 by 16 to 2160 (640x360)".into(),
                        );
                    }
                }
            }
            "rate" => match value.parse::<u32>() {
                Ok(r) if (1..=60).contains(&r) => rate = r,
                _ => return bad("rate must be a whole number of frames a second, 1 to 60".into()),
            },
            "color" if pattern == "color" => {
                let value = value.replace("%23", "#");
                let ok = !value.is_empty()
                    && value.len() <= 32
                    && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '#');
                if !ok {
                    return bad("color must be a color name or #rrggbb".into());
                }
                color = value;
            }
            _ => {
                let shown: String = key.chars().take(32).collect();
                return bad(format!(
                    "unknown parameter {shown:?} of a synthetic source: size and rate (and color for synthetic://color)"
                ));
            }
        }
    }
    let size = format!("{width}x{height}");
    Ok(match pattern.as_str() {
        "color" => format!("color=c={color}:size={size}:rate={rate}"),
        "motion" => {
            // A square a quarter of the height (even), crossing the frame in 4 seconds and
            // starting again: deterministic motion for the detector.
            let side = (height / 4).max(2) & !1;
            let travel = width.saturating_sub(side).max(1);
            let speed = (travel / 4).max(1);
            let y = (height - side) / 2;
            format!(
                "color=c=black:size={size}:rate={rate}[bg];\
                 color=c=white:size={side}x{side}:rate={rate}[box];\
                 [bg][box]overlay=x='mod(t*{speed},{travel})':y={y}[out0]"
            )
        }
        other => format!("{other}=size={size}:rate={rate}"),
    })
}

/// What must never leave the pipeline: the URL's user information and password.
#[derive(Clone)]
struct Secrets {
    exposed: String,
    masked: String,
    /// Longest first, so that `user:password` goes before `password`.
    needles: Vec<String>,
}

impl Secrets {
    fn of(source: &SourceUrl) -> Self {
        let exposed = source.expose().to_owned();
        let rest = exposed.split_once("://").map_or("", |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let mut needles = Vec::new();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            needles.push(userinfo.to_owned());
            needles.push(percent_decoded(userinfo));
            if let Some((_, password)) = userinfo.split_once(':') {
                needles.push(password.to_owned());
                needles.push(percent_decoded(password));
            }
        }
        needles.retain(|n| !n.is_empty());
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self {
            exposed,
            masked: source.masked(),
            needles,
        }
    }

    /// The text with the URL masked and the credentials replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.exposed, &self.masked);
        for needle in &self.needles {
            out = out.replace(needle.as_str(), "***");
        }
        out
    }
}

fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: &u8| (*b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// ffmpeg's log levels, as `-loglevel level+…` prefixes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Info,
    Warning,
    Error,
}

/// A line of ffmpeg's stderr: its level and its text without the level tag, the context's
/// address (`[tcp @ 0x55…]` → `[tcp]`) nor trailing spaces.
fn split_level(line: &str) -> (Level, String) {
    const TAGS: [(&str, Level); 8] = [
        ("[panic] ", Level::Error),
        ("[fatal] ", Level::Error),
        ("[error] ", Level::Error),
        ("[warning] ", Level::Warning),
        ("[info] ", Level::Info),
        ("[verbose] ", Level::Info),
        ("[debug] ", Level::Info),
        ("[trace] ", Level::Info),
    ];
    let (level, text) = TAGS
        .iter()
        .find_map(|(tag, level)| {
            line.find(tag).map(|at| {
                (
                    *level,
                    format!("{}{}", &line[..at], &line[at + tag.len()..]),
                )
            })
        })
        .unwrap_or((Level::Warning, line.to_owned()));
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(" @ 0x") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 5..];
        let end = after
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    (level, out.trim().to_owned())
}

/// The first `WIDTHxHEIGHT` of a stream line (`…, rgb24(pc, …), 320x240 [SAR 1:1 …], …`).
fn stream_size(line: &str) -> Option<(u32, u32)> {
    line.split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|word| {
            let (w, h) = word.split_once('x')?;
            let parse = |s: &str| {
                (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<u32>().ok())
                    .flatten()
            };
            Some((parse(w)?, parse(h)?))
        })
        .next()
}

/// What ffmpeg said on stderr: the kept lines and the input's format.
#[derive(Debug, Default)]
struct Stderr {
    tail: VecDeque<(Level, String)>,
    input_format: Option<String>,
}

/// Reads ffmpeg's stderr to its end: learns the output's frame size (sent once on `size`) and
/// the input format from the info lines, keeps the last warnings and errors, scrubbed.
async fn read_stderr(
    stderr: ChildStderr,
    secrets: Secrets,
    kept: Arc<Mutex<Stderr>>,
    size: oneshot::Sender<(u32, u32)>,
) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    let mut size = Some(size);
    let mut in_output = false;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let raw = String::from_utf8_lossy(&buf);
        let (level, text) = split_level(raw.trim_end());
        if text.is_empty() {
            continue;
        }
        if level == Level::Info {
            if let Some(after) = text.strip_prefix("Input #0, ") {
                let format = after.split(',').next().unwrap_or("").trim().to_owned();
                lock(&kept).input_format = Some(format);
            } else if text.starts_with("Output #0") {
                in_output = true;
            } else if in_output
                && text.starts_with("Stream #")
                && text.contains("Video:")
                && let Some(s) = stream_size(&text)
                && let Some(tx) = size.take()
            {
                let _ = tx.send(s);
            }
            continue;
        }
        let text = secrets.scrub(&text);
        tracing::debug!(line = %text, "ffmpeg");
        let mut kept = lock(&kept);
        if kept.tail.len() == STDERR_LINES {
            kept.tail.pop_front();
        }
        kept.tail.push_back((level, text));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One running ffmpeg.
struct Process {
    child: Child,
    guard: GroupGuard,
    stdout: ChildStdout,
    size: oneshot::Receiver<(u32, u32)>,
    stderr: Arc<Mutex<Stderr>>,
    stderr_task: tokio::task::JoinHandle<()>,
}

/// Frames read from a source by one ffmpeg process: rgb24, at most `max_width` wide (even
/// sizes, the aspect ratio kept), `fps` a second.
///
/// The frame size is learned from ffmpeg itself: it runs at `-loglevel level+info` and the
/// size is read from the output stream's line (`Output #0 … Stream #0:0: Video: rawvideo …,
/// 320x240`) before the first frame. That is the robust choice: `ffprobe` first would open the
/// source twice (cameras limit their sessions, and a snapshot or a stream may change between
/// the two), and forcing the output size would distort or letterbox sources of another aspect
/// ratio. The level tags also sort the lines: info lines are only parsed, warnings and errors
/// are kept (the last 20, scrubbed of credentials) for the error's reason.
///
/// [`Capture::next_frame`] is cancel-safe: the bytes of a frame already read stay in the
/// capture, so it can sit in a `select!`.
pub struct Capture {
    source: SourceUrl,
    secrets: Secrets,
    fps: u32,
    max_width: u32,
    mode: Mode,
    process: Process,
    frame_size: Option<(u32, u32)>,
    buf: Vec<u8>,
    filled: usize,
    first_byte_at: Option<Instant>,
    decode_latency: Option<Duration>,
    /// Frames of the current ffmpeg process.
    frames_of_process: u64,
    seq: u64,
    ended: bool,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("url", &self.secrets.masked)
            .field("pid", &self.pid())
            .field("mode", &self.mode)
            .field("frame_size", &self.frame_size)
            .field("seq", &self.seq)
            .finish()
    }
}

impl Capture {
    /// Starts ffmpeg on the source (it must run inside a Tokio runtime). Fails at once on a bad
    /// URL or when ffmpeg is missing; a source that cannot be reached fails at
    /// [`Capture::next_frame`], with ffmpeg's reason.
    pub fn start(url: &str, fps: u32, max_width: u32) -> Result<Capture, CaptureError> {
        let source = SourceUrl::parse(url).map_err(|e| CaptureError::Source(e.message))?;
        let secrets = Secrets::of(&source);
        let fps = fps.clamp(1, 60);
        let max_width = (max_width.max(16)) & !1;
        let process = spawn(&source, &secrets, Mode::Stream, fps, max_width)?;
        tracing::debug!(url = %secrets.masked, fps, max_width, "capture started");
        Ok(Capture {
            source,
            secrets,
            fps,
            max_width,
            mode: Mode::Stream,
            process,
            frame_size: None,
            buf: Vec::new(),
            filled: 0,
            first_byte_at: None,
            decode_latency: None,
            frames_of_process: 0,
            seq: 0,
            ended: false,
        })
    }

    /// The source, credentials masked.
    pub fn masked_url(&self) -> &str {
        &self.secrets.masked
    }

    /// ffmpeg's process id (and its group's), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.child.id()
    }

    /// The frames' size, once ffmpeg said it.
    pub fn frame_size(&self) -> Option<(u32, u32)> {
        self.frame_size
    }

    /// How long the last frame took to decode: from its first bytes on ffmpeg's pipe until the
    /// whole frame was read and made a [`Frame`]. Not from the moment it was asked for: the
    /// pipeline asks as soon as the previous frame is in, so that would mostly measure the wait
    /// for the source's next frame (1/fps), not the cost of reading one.
    pub fn decode_latency(&self) -> Option<Duration> {
        self.decode_latency
    }

    /// The next frame; `None` at the end of the stream (ffmpeg ended cleanly). An error has
    /// ffmpeg's reason, credentials masked. Cancel-safe.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let (width, height) = match self.frame_size {
                Some(size) => size,
                None => match (&mut self.process.size).await {
                    Ok((w, h)) => {
                        self.frame_size = Some((w, h));
                        self.buf = vec![0; w as usize * h as usize * 3];
                        self.filled = 0;
                        (w, h)
                    }
                    // stderr ended before ffmpeg wrote anything: it failed, or ended.
                    Err(_) => match self.end_of_process().await? {
                        Some(()) => continue,
                        None => return Ok(None),
                    },
                },
            };
            let n = self
                .process
                .stdout
                .read(&mut self.buf[self.filled..])
                .await
                .map_err(|e| CaptureError::Failed(format!("reading ffmpeg's output: {e}")))?;
            if n == 0 {
                match self.end_of_process().await? {
                    Some(()) => continue,
                    None => return Ok(None),
                }
            }
            if self.filled == 0 {
                self.first_byte_at = Some(Instant::now());
            }
            self.filled += n;
            if self.filled < self.buf.len() {
                continue;
            }
            let rgb = std::mem::replace(&mut self.buf, vec![0; self.filled]);
            self.filled = 0;
            let frame = Frame {
                width,
                height,
                rgb,
                seq: self.seq,
                at: Utc::now(),
            };
            self.decode_latency = self.first_byte_at.take().map(|t| t.elapsed());
            self.seq += 1;
            self.frames_of_process += 1;
            return Ok(Some(frame));
        }
    }

    /// ffmpeg closed its output: the end (`Ok(None)`), a failure, or a snapshot URL read as a
    /// stream, reopened as snapshots (`Ok(Some(()))`: read on).
    async fn end_of_process(&mut self) -> Result<Option<()>, CaptureError> {
        let status = tokio::time::timeout(Duration::from_secs(5), self.process.child.wait()).await;
        // The stderr reader ends with the process (bounded: a stray child may hold the pipe).
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.process.stderr_task).await;
        let clean = matches!(&status, Ok(Ok(s)) if s.success()) && self.filled == 0;
        let input_format = lock(&self.process.stderr).input_format.clone();
        let single_image = input_format
            .as_deref()
            .is_some_and(|f| f.ends_with("_pipe") || f == "image2");
        if clean
            && self.mode == Mode::Stream
            && matches!(self.source.scheme(), "http" | "https")
            && self.frames_of_process <= 1
            && single_image
        {
            tracing::info!(url = %self.secrets.masked, fps = self.fps, "the source serves one picture a request: reading it as snapshots");
            self.process = spawn(
                &self.source,
                &self.secrets,
                Mode::Snapshot,
                self.fps,
                self.max_width,
            )?;
            self.mode = Mode::Snapshot;
            self.frame_size = None;
            self.frames_of_process = 0;
            return Ok(Some(()));
        }
        self.ended = true;
        if clean {
            return Ok(None);
        }
        let exit = match status {
            Ok(Ok(s)) => match s.code() {
                Some(code) => format!("ffmpeg exited with status {code}"),
                None => format!(
                    "ffmpeg ended by signal {}",
                    crate::process::code_of(s) - 128
                ),
            },
            Ok(Err(e)) => format!("ffmpeg could not be waited for: {e}"),
            Err(_) => "ffmpeg closed its output but did not exit".to_owned(),
        };
        let exit = if self.filled > 0 {
            format!("{exit} in the middle of a frame")
        } else {
            exit
        };
        Err(CaptureError::Failed(self.reason(&exit)))
    }

    /// ffmpeg's last errors (or its last warning), after what ended it.
    fn reason(&self, exit: &str) -> String {
        let kept = lock(&self.process.stderr);
        let errors: Vec<&str> = kept
            .tail
            .iter()
            .filter(|(l, _)| *l == Level::Error)
            .map(|(_, t)| t.as_str())
            .collect();
        let said: Vec<&str> = if errors.is_empty() {
            kept.tail
                .back()
                .map(|(_, t)| t.as_str())
                .into_iter()
                .collect()
        } else {
            errors[errors.len().saturating_sub(3)..].to_vec()
        };
        let reason = if said.is_empty() {
            exit.to_owned()
        } else {
            format!("{exit}: {}", said.join("; "))
        };
        let reason = self.secrets.scrub(&reason);
        if reason.chars().count() > MAX_REASON_CHARS {
            let cut: String = reason.chars().take(MAX_REASON_CHARS).collect();
            format!("{cut}…")
        } else {
            reason
        }
    }

    /// The last lines ffmpeg wrote on stderr (warnings and errors, credentials scrubbed).
    pub fn stderr_tail(&self) -> Vec<String> {
        lock(&self.process.stderr)
            .tail
            .iter()
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Ends ffmpeg (its whole group): SIGTERM, SIGKILL after a second, and waits for it, so
    /// no zombie is left. Dropping a capture kills the group too, without the wait.
    pub async fn stop(self) {
        let Process {
            mut child,
            guard,
            stderr_task,
            ..
        } = self.process;
        crate::process::stop(&mut child, guard, Duration::from_secs(1)).await;
        stderr_task.abort();
    }
}

fn spawn(
    source: &SourceUrl,
    secrets: &Secrets,
    mode: Mode,
    fps: u32,
    max_width: u32,
) -> Result<Process, CaptureError> {
    let mut command = clean_command("ffmpeg");
    command
        .args([
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "level+info",
        ])
        .args(input_args(source, mode, fps)?)
        .args(["-an", "-sn", "-dn", "-vf"])
        .arg(format!(
            "fps=fps={fps},scale=w='trunc(min(iw,{max_width})/2)*2':h=-2:flags=area,format=rgb24"
        ))
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| CaptureError::Spawn(secrets.scrub(&e.to_string())))?;
    let guard = GroupGuard::of(&child);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(CaptureError::Spawn("ffmpeg's pipes are missing".into()));
    };
    let kept = Arc::new(Mutex::new(Stderr::default()));
    let (tx, rx) = oneshot::channel();
    let stderr_task = tokio::spawn(read_stderr(stderr, secrets.clone(), kept.clone(), tx));
    Ok(Process {
        child,
        guard,
        stdout,
        size: rx,
        stderr: kept,
        stderr_task,
    })
}

/// A latency distribution over the last one to two minutes, in microseconds: two histograms,
/// the current minute and the one before, rotated each minute; a snapshot adds them, so it
/// never reports from an empty window just after a rotation.
#[derive(Debug)]
struct Window {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    since: Instant,
}

const WINDOW: Duration = Duration::from_secs(60);

impl Window {
    fn new() -> Self {
        Self {
            current: latency_histogram(),
            previous: latency_histogram(),
            since: Instant::now(),
        }
    }

    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.since);
        if age < WINDOW {
            return;
        }
        if age < 2 * WINDOW {
            std::mem::swap(&mut self.previous, &mut self.current);
        } else {
            self.previous.reset();
        }
        self.current.reset();
        self.since = now;
    }

    fn record(&mut self, latency: Duration) {
        self.rotate(Instant::now());
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.current.saturating_record(us.max(1));
    }

    /// p50 and p99, if anything was recorded in the window.
    fn quantiles(&mut self) -> (Option<u64>, Option<u64>) {
        self.rotate(Instant::now());
        let mut all = self.previous.clone();
        // Same bounds: adding cannot fail.
        let _ = all.add(&self.current);
        if all.is_empty() {
            return (None, None);
        }
        (
            Some(all.value_at_quantile(0.5)),
            Some(all.value_at_quantile(0.99)),
        )
    }
}

/// 1 µs to 60 s, two significant figures (a few kilobytes).
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds")
}

/// What a camera's pipeline measures; shared with whoever reports it, cheap to update
/// (counters are atomics, the rest one short lock).
///
/// - decode latency: from the first bytes of a frame on ffmpeg's pipe until the whole frame is
///   read and made a [`Frame`] ([`Capture::decode_latency`]);
/// - detection latency: all the detectors on one frame;
/// - both over the last one to two minutes (p50, p99, microseconds);
/// - fps: frames processed over the last 5 seconds.
#[derive(Debug)]
pub struct Telemetry {
    started_at: DateTime<Utc>,
    started: Instant,
    frames_processed: AtomicU64,
    frames_dropped: AtomicU64,
    thumbnails_encoded: AtomicU64,
    inner: Mutex<TelemetryInner>,
}

#[derive(Debug)]
struct TelemetryInner {
    recent: VecDeque<Instant>,
    last_frame_at: Option<DateTime<Utc>>,
    decode: Window,
    detection: Window,
    last_error: Option<(String, DateTime<Utc>)>,
}

/// How far back fps is measured.
const FPS_WINDOW: Duration = Duration::from_secs(5);

/// A [`Telemetry`] at one moment: plain numbers, `None` for what is not known yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelemetrySnapshot {
    /// Frames the detectors ran on.
    pub frames_processed: u64,
    /// Frames dropped because the previous one was still being processed.
    pub frames_dropped: u64,
    /// Thumbnails encoded (none while nobody watches).
    pub thumbnails_encoded: u64,
    /// Frames processed a second over the last 5 seconds.
    pub fps: Option<f64>,
    /// When the last frame was read.
    pub last_frame_at: Option<DateTime<Utc>>,
    /// Decode latency, median, µs.
    pub decode_p50_us: Option<u64>,
    /// Decode latency, 99th percentile, µs.
    pub decode_p99_us: Option<u64>,
    /// Detection latency, median, µs.
    pub detection_p50_us: Option<u64>,
    /// Detection latency, 99th percentile, µs.
    pub detection_p99_us: Option<u64>,
    /// When the pipeline started.
    pub started_at: DateTime<Utc>,
    /// Seconds since then.
    pub uptime_secs: u64,
    /// The last failure's reason (credentials masked).
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Empty, started now.
    pub fn new() -> Self {
        Self {
            started_at: Utc::now(),
            started: Instant::now(),
            frames_processed: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            thumbnails_encoded: AtomicU64::new(0),
            inner: Mutex::new(TelemetryInner {
                recent: VecDeque::new(),
                last_frame_at: None,
                decode: Window::new(),
                detection: Window::new(),
                last_error: None,
            }),
        }
    }

    /// A frame was read, in `latency`.
    pub fn frame_decoded(&self, at: DateTime<Utc>, latency: Option<Duration>) {
        let mut inner = lock(&self.inner);
        inner.last_frame_at = Some(at);
        if let Some(latency) = latency {
            inner.decode.record(latency);
        }
    }

    /// A frame went through the detectors, in `latency`.
    pub fn frame_processed(&self, latency: Duration) {
        self.frames_processed.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        inner.detection.record(latency);
        inner.recent.push_back(now);
        prune(&mut inner.recent, now);
    }

    /// A frame was dropped: the previous one was still being processed.
    pub fn frame_dropped(&self) {
        self.frames_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A thumbnail was encoded.
    pub fn thumbnail_encoded(&self) {
        self.thumbnails_encoded.fetch_add(1, Ordering::Relaxed);
    }

    /// The source failed.
    pub fn error(&self, reason: &str) {
        lock(&self.inner).last_error = Some((reason.to_owned(), Utc::now()));
    }

    /// The figures now.
    pub fn snapshot(&self) -> TelemetrySnapshot {
        let frames_processed = self.frames_processed.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        prune(&mut inner.recent, now);
        let fps = match (inner.recent.front(), inner.recent.back()) {
            (Some(first), Some(last)) if inner.recent.len() >= 2 && last > first => {
                Some((inner.recent.len() - 1) as f64 / (*last - *first).as_secs_f64())
            }
            _ if frames_processed > 0 && inner.recent.len() < 2 => Some(0.0),
            _ => None,
        };
        let (decode_p50_us, decode_p99_us) = inner.decode.quantiles();
        let (detection_p50_us, detection_p99_us) = inner.detection.quantiles();
        TelemetrySnapshot {
            frames_processed,
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            thumbnails_encoded: self.thumbnails_encoded.load(Ordering::Relaxed),
            fps,
            last_frame_at: inner.last_frame_at,
            decode_p50_us,
            decode_p99_us,
            detection_p50_us,
            detection_p99_us,
            started_at: self.started_at,
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            last_error: inner.last_error.as_ref().map(|(r, _)| r.clone()),
            last_error_at: inner.last_error.as_ref().map(|(_, at)| *at),
        }
    }
}

fn prune(recent: &mut VecDeque<Instant>, now: Instant) {
    while recent
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > FPS_WINDOW)
    {
        recent.pop_front();
    }
}

/// Where a camera's pipeline reports: the worker that runs it turns these into status events,
/// findings and live thumbnails.
#[async_trait]
pub trait PipelineSink: Send + Sync {
    /// An attempt to open the source begins (the first, and each retry).
    async fn connecting(&self);
    /// The attempt's first frame arrived.
    async fn active(&self, width: u32, height: u32, fps: u32);
    /// The source failed (or ended); the next attempt is in `retry_in`. The reason has its
    /// credentials masked.
    async fn failed(&self, reason: &str, retry_in: Duration);
    /// A detector found something; `snapshot_jpeg` is the frame, at most 640 wide.
    async fn finding(&self, frame: &Frame, finding: &Finding, snapshot_jpeg: Vec<u8>);
    /// Whether anybody watches the camera now (called often: keep it cheap).
    fn wants_thumbnail(&self) -> bool;
    /// A thumbnail, at most 320 wide.
    fn thumbnail(&self, jpeg: Vec<u8>);
}

/// Retries after a failure: `first`, doubling up to `max`; back to `first` after an attempt
/// that read frames for `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub first: Duration,
    /// The longest.
    pub max: Duration,
    /// How long an attempt must have run to start over from `first`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 60 s, reset after a good minute.
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// A camera's pipeline: its source, settings, detectors and where it reports; [`Pipeline::run`]
/// until stopped. [`run`] builds one with the defaults.
pub struct Pipeline {
    url: String,
    masked: String,
    settings: CaptureSettings,
    detectors: Vec<Box<dyn Detector>>,
    sink: Arc<dyn PipelineSink>,
    telemetry: Arc<Telemetry>,
    backoff: Backoff,
    max_width: u32,
    stall_timeout: Duration,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("url", &self.masked)
            .field("settings", &self.settings)
            .field(
                "detectors",
                &self.detectors.iter().map(|d| d.name()).collect::<Vec<_>>(),
            )
            .field("backoff", &self.backoff)
            .field("max_width", &self.max_width)
            .finish()
    }
}

/// How one attempt ended.
enum Attempt {
    Stopped,
    Failed {
        reason: String,
        /// How long frames came, if any did.
        active_for: Option<Duration>,
    },
}

/// What processing a frame gives back: the detectors, for the next frame.
type Processing = BoxFuture<'static, Vec<Box<dyn Detector>>>;

impl Pipeline {
    /// A pipeline with the default backoff, frames at most [`DEFAULT_MAX_WIDTH`] wide, and a
    /// source that sends no frame for 30 s counted as failed.
    pub fn new(
        url: &str,
        settings: CaptureSettings,
        detectors: Vec<Box<dyn Detector>>,
        sink: Arc<dyn PipelineSink>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let masked =
            SourceUrl::parse(url).map_or_else(|_| "(invalid URL)".to_owned(), |u| u.masked());
        Self {
            url: url.to_owned(),
            masked,
            settings,
            detectors,
            sink,
            telemetry,
            backoff: Backoff::default(),
            max_width: DEFAULT_MAX_WIDTH,
            stall_timeout: Duration::from_secs(30),
        }
    }

    /// Retries with this backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Reads frames at most this wide.
    pub fn with_max_width(mut self, max_width: u32) -> Self {
        self.max_width = max_width;
        self
    }

    /// Counts a source that sends no frame for this long (from the start of an attempt, or
    /// its last frame) as failed.
    pub fn with_stall_timeout(mut self, stall_timeout: Duration) -> Self {
        self.stall_timeout = stall_timeout;
        self
    }

    /// Runs until `stop` is cancelled: opens the source, reads frames, runs the detectors,
    /// sends findings and thumbnails; when the source fails or ends, reports it and retries
    /// after the backoff. ffmpeg is ended (and waited for) before it returns.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut delay = self.backoff.first;
        loop {
            if stop.is_cancelled() {
                return;
            }
            self.sink.connecting().await;
            let (reason, active_for) = match self.attempt(&stop).await {
                Attempt::Stopped => return,
                Attempt::Failed { reason, active_for } => (reason, active_for),
            };
            if active_for.is_some_and(|d| d >= self.backoff.reset_after) {
                delay = self.backoff.first;
            }
            self.telemetry.error(&reason);
            tracing::warn!(url = %self.masked, %reason, retry_in = ?delay, "camera source failed");
            self.sink.failed(&reason, delay).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay.saturating_mul(2)).min(self.backoff.max);
        }
    }

    /// One ffmpeg, from its start to its failure or the stop.
    async fn attempt(&mut self, stop: &CancellationToken) -> Attempt {
        for d in &mut self.detectors {
            d.reset();
        }
        let mut capture = match Capture::start(&self.url, self.settings.fps, self.max_width) {
            Ok(c) => c,
            Err(e) => {
                return Attempt::Failed {
                    reason: e.to_string(),
                    active_for: None,
                };
            }
        };
        let mut detectors = Some(std::mem::take(&mut self.detectors));
        let mut processing: Option<Processing> = None;
        let mut pending: Option<Frame> = None;
        let mut active_since: Option<Instant> = None;
        let mut last_frame = Instant::now();
        let mut next_thumbnail = Instant::now();
        let end = loop {
            tokio::select! {
                _ = stop.cancelled() => break None,
                _ = tokio::time::sleep_until(last_frame + self.stall_timeout) => {
                    break Some(format!("no frame for {} s", self.stall_timeout.as_secs_f64()));
                }
                detectors_back = async { processing.as_mut().expect("guarded").await }, if processing.is_some() => {
                    processing = None;
                    detectors = Some(detectors_back);
                    if let Some(frame) = pending.take() {
                        processing = Some(self.process(frame, &mut detectors, &mut next_thumbnail));
                    }
                }
                frame = capture.next_frame() => match frame {
                    Ok(Some(frame)) => {
                        last_frame = Instant::now();
                        self.telemetry.frame_decoded(frame.at, capture.decode_latency());
                        if active_since.is_none() {
                            active_since = Some(last_frame);
                            tracing::info!(url = %self.masked, width = frame.width, height = frame.height, "camera active");
                            self.sink.active(frame.width, frame.height, self.settings.fps).await;
                        }
                        if processing.is_some() {
                            if pending.replace(frame).is_some() {
                                self.telemetry.frame_dropped();
                            }
                        } else {
                            processing = Some(self.process(frame, &mut detectors, &mut next_thumbnail));
                        }
                    }
                    Ok(None) => break Some("the source ended".to_owned()),
                    Err(e) => break Some(e.to_string()),
                },
            }
        };
        let active_for = active_since.map(|t| t.elapsed());
        capture.stop().await;
        let Some(reason) = end else {
            // Stopped: the frame in flight is let go (its blocking work ends on its own).
            return Attempt::Stopped;
        };
        if pending.take().is_some() {
            self.telemetry.frame_dropped();
        }
        if let Some(p) = processing.take() {
            detectors = Some(p.await);
        }
        self.detectors = detectors.unwrap_or_default();
        Attempt::Failed { reason, active_for }
    }

    /// Processing one frame: the detectors and the JPEGs on a blocking thread
    /// (`spawn_blocking`, not `block_in_place`: it works on a current-thread runtime too, and
    /// the frame loop keeps reading, and dropping, meanwhile), then the sink.
    fn process(
        &self,
        frame: Frame,
        detectors: &mut Option<Vec<Box<dyn Detector>>>,
        next_thumbnail: &mut Instant,
    ) -> Processing {
        let mut detectors = detectors.take().unwrap_or_default();
        let now = Instant::now();
        // Asking the sink only when a thumbnail is due keeps even that cheap call rare.
        let thumbnail = self.settings.thumbnail_fps > 0
            && now >= *next_thumbnail
            && self.sink.wants_thumbnail();
        if thumbnail {
            // On the schedule, not from this frame: frames arrive on their own beat, and
            // counting from each would stretch every gap by up to a frame (0.9/s instead of
            // 1/s at 5 fps). After a pause (nobody watched), from now: no burst.
            let interval = Duration::from_secs(1) / self.settings.thumbnail_fps;
            let scheduled = *next_thumbnail + interval;
            *next_thumbnail = if scheduled <= now {
                now + interval
            } else {
                scheduled
            };
        }
        let sink = self.sink.clone();
        let telemetry = self.telemetry.clone();
        Box::pin(async move {
            let work = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let findings: Vec<Finding> = detectors
                    .iter_mut()
                    .flat_map(|d| d.detect(&frame))
                    .collect();
                let detection = started.elapsed();
                let snapshot = (!findings.is_empty())
                    .then(|| encode_jpeg(&frame, SNAPSHOT_WIDTH, SNAPSHOT_QUALITY));
                let thumbnail =
                    thumbnail.then(|| encode_jpeg(&frame, THUMBNAIL_WIDTH, THUMBNAIL_QUALITY));
                (detectors, frame, findings, detection, snapshot, thumbnail)
            });
            let (detectors, frame, findings, detection, snapshot, thumbnail) = match work.await {
                Ok(done) => done,
                // A detector panicked: a bug, not a camera's failure.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => return Vec::new(),
            };
            telemetry.frame_processed(detection);
            if thumbnail.is_some() {
                telemetry.thumbnail_encoded();
            }
            let snapshot = snapshot.unwrap_or_default();
            for finding in &findings {
                sink.finding(&frame, finding, snapshot.clone()).await;
            }
            if let Some(jpeg) = thumbnail.filter(|j| !j.is_empty()) {
                sink.thumbnail(jpeg);
            }
            detectors
        })
    }
}

/// Runs a camera's pipeline with the defaults ([`Pipeline::new`]) until `stop` is cancelled.
pub async fn run(
    url: &str,
    capture: CaptureSettings,
    detectors: Vec<Box<dyn Detector>>,
    sink: Arc<dyn PipelineSink>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    Pipeline::new(url, capture, detectors, sink, telemetry)
        .run(stop)
        .await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use atelier_domain::surveillance::camera::MotionSettings;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::surveillance::vision::MotionDetector;
    use crate::surveillance::vision::tests::frame_with_square;

    /// The longest any test waits for ffmpeg to do something: a bound, never a pace.
    const PATIENCE: Duration = Duration::from_secs(60);

    #[derive(Debug, Clone, PartialEq)]
    enum Event {
        Connecting,
        Active(u32, u32, u32),
        Failed(String, Duration),
        Finding(Finding, Vec<u8>),
        Thumbnail(Vec<u8>),
    }

    /// A sink that forwards what it is told, and says whether anybody watches.
    struct Recorder {
        events: mpsc::UnboundedSender<Event>,
        watching: std::sync::atomic::AtomicBool,
        /// How many times it was asked whether anybody watches.
        asked: tokio::sync::watch::Sender<usize>,
    }

    impl Recorder {
        fn new(watching: bool) -> (Arc<Self>, mpsc::UnboundedReceiver<Event>) {
            let (tx, rx) = mpsc::unbounded_channel();
            let sink = Arc::new(Self {
                events: tx,
                watching: watching.into(),
                asked: tokio::sync::watch::Sender::new(0),
            });
            (sink, rx)
        }
    }

    #[async_trait]
    impl PipelineSink for Recorder {
        async fn connecting(&self) {
            let _ = self.events.send(Event::Connecting);
        }
        async fn active(&self, width: u32, height: u32, fps: u32) {
            let _ = self.events.send(Event::Active(width, height, fps));
        }
        async fn failed(&self, reason: &str, retry_in: Duration) {
            let _ = self.events.send(Event::Failed(reason.to_owned(), retry_in));
        }
        async fn finding(&self, _frame: &Frame, finding: &Finding, snapshot_jpeg: Vec<u8>) {
            let _ = self
                .events
                .send(Event::Finding(finding.clone(), snapshot_jpeg));
        }
        fn wants_thumbnail(&self) -> bool {
            self.asked.send_modify(|n| *n += 1);
            self.watching.load(Ordering::Relaxed)
        }
        fn thumbnail(&self, jpeg: Vec<u8>) {
            let _ = self.events.send(Event::Thumbnail(jpeg));
        }
    }

    async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        tokio::time::timeout(PATIENCE, events.recv())
            .await
            .expect("an event within the patience")
            .expect("the pipeline is running")
    }

    /// Starts a pipeline with small backoffs on a task; its stop token and handle.
    fn start(
        url: &str,
        settings: CaptureSettings,
        detectors: Vec<Box<dyn Detector>>,
        sink: Arc<Recorder>,
        telemetry: Arc<Telemetry>,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let pipeline =
            Pipeline::new(url, settings, detectors, sink, telemetry).with_backoff(Backoff {
                first: Duration::from_millis(10),
                max: Duration::from_millis(40),
                reset_after: Duration::from_secs(60),
            });
        let handle = tokio::spawn(pipeline.run(stop.clone()));
        (stop, handle)
    }

    fn settings(fps: u32, thumbnail_fps: u32) -> CaptureSettings {
        CaptureSettings { fps, thumbnail_fps }
    }

    fn process_exists(pid: u32) -> bool {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    /// The pid of our ffmpeg child whose arguments contain `marker`.
    fn ffmpeg_child_with(marker: &str) -> Option<u32> {
        let me = std::process::id().to_string();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
                let cmdline = String::from_utf8_lossy(&cmdline);
                (ppid == me && cmdline.starts_with("ffmpeg") && cmdline.contains(marker))
                    .then_some(pid)
            })
    }

    #[test]
    fn ffmpeg_input_maps_each_scheme_and_refuses_unknown_patterns_and_bad_params() {
        let rtsp = ffmpeg_input("rtsp://127.0.0.1:8554/stream1").unwrap();
        assert_eq!(
            rtsp,
            [
                "-rtsp_transport",
                "tcp",
                "-timeout",
                SOCKET_TIMEOUT_US,
                "-i",
                "rtsp://127.0.0.1:8554/stream1"
            ]
        );
        let http = ffmpeg_input("http://127.0.0.1:8080/video.mjpg").unwrap();
        assert_eq!(http.last().unwrap(), "http://127.0.0.1:8080/video.mjpg");
        assert!(http.contains(&"-rw_timeout".to_owned()));
        let snap = snapshot_input("http://127.0.0.1:8080/snap.jpg", 2).unwrap();
        assert!(snap.windows(2).any(|w| w == ["-f", "image2"]));
        assert!(snap.windows(2).any(|w| w == ["-framerate", "2"]));
        assert!(snapshot_input("rtsp://127.0.0.1/x", 2).is_err());

        let motion = ffmpeg_input("synthetic://motion?size=320x240&rate=10").unwrap();
        assert_eq!(&motion[..4], ["-re", "-f", "lavfi", "-i"]);
        assert!(
            motion[4].starts_with("color=c=black:size=320x240:rate=10[bg];"),
            "{}",
            motion[4]
        );
        assert!(motion[4].contains("overlay=x='mod(t*"), "{}", motion[4]);
        for pattern in SYNTHETIC_PATTERNS {
            let args = ffmpeg_input(&format!("synthetic://{pattern}")).unwrap();
            assert!(
                args[4].contains("size=640x360") && args[4].contains("rate=5"),
                "{args:?}"
            );
        }
        assert_eq!(
            ffmpeg_input("synthetic://color?color=%23ff0000&size=64x48").unwrap()[4],
            "color=c=#ff0000:size=64x48:rate=5"
        );

        for (bad, says) in [
            ("synthetic://mandelbrot", "unknown synthetic pattern"),
            ("synthetic://testsrc?size=big", "size must be"),
            ("synthetic://testsrc?size=8x8", "size must be"),
            ("synthetic://testsrc?size=99999x240", "size must be"),
            ("synthetic://testsrc?rate=0", "rate must be"),
            ("synthetic://testsrc?rate=5.5", "rate must be"),
            ("synthetic://testsrc?speed=3", "unknown parameter"),
            ("synthetic://testsrc?color=red", "unknown parameter"),
            ("synthetic://color?color=red;evil", "color must be"),
            ("synthetic://u:p@testsrc", "no credentials"),
            ("ftp://127.0.0.1/x", "must use"),
        ] {
            match ffmpeg_input(bad) {
                Err(CaptureError::Source(why)) => assert!(why.contains(says), "{bad}: {why}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn stderr_lines_lose_their_level_tag_and_addresses_and_sizes_are_read_from_stream_lines() {
        assert_eq!(
            split_level("[tcp @ 0x55fe40067880] [error] Connection refused"),
            (Level::Error, "[tcp] Connection refused".to_owned())
        );
        assert_eq!(split_level("[info] Output #0, rawvideo").0, Level::Info);
        assert_eq!(
            stream_size(
                "Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24(pc, gbr/unknown/unknown, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31"
            ),
            Some((320, 240))
        );
        assert_eq!(stream_size("Stream #0:0: Audio: aac"), None);
    }

    #[tokio::test]
    async fn a_testsrc_capture_yields_frames_of_its_size_with_the_right_byte_length() {
        let mut capture =
            Capture::start("synthetic://testsrc?size=320x240&rate=5", 5, 640).unwrap();
        for seq in 0..3 {
            let frame = tokio::time::timeout(PATIENCE, capture.next_frame())
                .await
                .expect("a frame within the patience")
                .unwrap()
                .expect("the stream goes on");
            assert_eq!((frame.width, frame.height, frame.seq), (320, 240, seq));
            assert_eq!(frame.rgb.len(), 320 * 240 * 3);
        }
        assert_eq!(capture.frame_size(), Some((320, 240)));
        assert!(capture.decode_latency().is_some());
        capture.stop().await;

        // Wider than the limit: scaled down, the aspect ratio kept, even sizes.
        let mut wide = Capture::start("synthetic://testsrc2?size=1280x720&rate=5", 5, 333).unwrap();
        let frame = tokio::time::timeout(PATIENCE, wide.next_frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((frame.width, frame.height), (332, 186));
        assert_eq!(frame.rgb.len(), 332 * 186 * 3);
        wide.stop().await;
    }

    /// A tiny HTTP server on 127.0.0.1: `/stream.mjpg` an endless MJPEG stream, anything else
    /// one JPEG per request. Its address and its request count.
    async fn camera_server() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let jpeg = Arc::new(encode_jpeg(
            &frame_with_square(320, 240, Some((50, 50, 60)), 0, Utc::now()),
            320,
            80,
        ));
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let jpeg = jpeg.clone();
                let hits = counted.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    hits.fetch_add(1, Ordering::Relaxed);
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split_whitespace().nth(1).unwrap_or("/");
                    if path.starts_with("/stream") {
                        let header = "HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n";
                        if socket.write_all(header.as_bytes()).await.is_err() {
                            return;
                        }
                        // Until the reader hangs up (TCP paces us).
                        loop {
                            let part = format!(
                                "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                                jpeg.len()
                            );
                            if socket.write_all(part.as_bytes()).await.is_err()
                                || socket.write_all(&jpeg).await.is_err()
                                || socket.write_all(b"\r\n").await.is_err()
                            {
                                return;
                            }
                        }
                    } else {
                        let header = format!(
                            "HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                            jpeg.len()
                        );
                        let _ = socket.write_all(header.as_bytes()).await;
                        let _ = socket.write_all(&jpeg).await;
                        let _ = socket.shutdown().await;
                    }
                });
            }
        });
        (address, hits)
    }

    async fn three_frames(url: &str) -> Vec<Frame> {
        let mut capture = Capture::start(url, 5, 640).unwrap();
        let mut frames = Vec::new();
        while frames.len() < 3 {
            let frame = tokio::time::timeout(PATIENCE, capture.next_frame())
                .await
                .expect("a frame within the patience")
                .unwrap_or_else(|e| panic!("{e}: {:?}", capture.stderr_tail()))
                .expect("the source goes on");
            frames.push(frame);
        }
        capture.stop().await;
        frames
    }

    #[tokio::test]
    async fn an_mjpeg_stream_over_http_yields_frames() {
        let (address, hits) = camera_server().await;
        for frame in three_frames(&format!("{address}/stream.mjpg")).await {
            assert_eq!(
                (frame.width, frame.height, frame.rgb.len()),
                (320, 240, 320 * 240 * 3)
            );
        }
        assert_eq!(
            hits.load(Ordering::Relaxed),
            1,
            "one connection for a stream"
        );
    }

    #[tokio::test]
    async fn a_url_serving_one_jpeg_is_read_again_as_snapshots() {
        let (address, hits) = camera_server().await;
        for frame in three_frames(&format!("{address}/snapshot.jpg?channel=1")).await {
            assert_eq!(
                (frame.width, frame.height, frame.rgb.len()),
                (320, 240, 320 * 240 * 3)
            );
        }
        assert!(hits.load(Ordering::Relaxed) >= 3, "a request per picture");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn synthetic_motion_through_run_yields_a_finding_with_a_plausible_bbox() {
        let (sink, mut events) = Recorder::new(false);
        let telemetry = Arc::new(Telemetry::new());
        let motion = MotionDetector::from(MotionSettings::default());
        let (stop, handle) = start(
            "synthetic://motion?size=320x240&rate=10",
            settings(10, 1),
            vec![Box::new(motion)],
            sink,
            telemetry.clone(),
        );
        assert_eq!(next_event(&mut events).await, Event::Connecting);
        assert_eq!(next_event(&mut events).await, Event::Active(320, 240, 10));
        let (finding, jpeg) = loop {
            match next_event(&mut events).await {
                Event::Finding(f, jpeg) => break (f, jpeg),
                Event::Failed(reason, _) => panic!("{reason}"),
                _ => {}
            }
        };
        assert_eq!(finding.kind, "motion");
        assert!((0.0..=1.0).contains(&finding.confidence));
        // The square is 60 pixels high, from y = 90 to 150 (0.375 to 0.625 of 240).
        let [x, y, w, h] = finding.bbox;
        assert!(x >= 0.0 && w > 0.0 && x + w <= 1.0, "{:?}", finding.bbox);
        assert!((0.3..=0.4).contains(&y), "{:?}", finding.bbox);
        assert!((0.6..=0.7).contains(&(y + h)), "{:?}", finding.bbox);
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let picture = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((picture.width(), picture.height()), (320, 240));

        let figures = telemetry.snapshot();
        assert!(figures.frames_processed >= 2, "{figures:?}");
        assert!(figures.decode_p50_us.is_some() && figures.detection_p99_us.is_some());
        assert!(figures.last_frame_at.is_some());
        assert_eq!(figures.thumbnails_encoded, 0, "nobody watches");
        stop.cancel();
        tokio::time::timeout(PATIENCE, handle)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_source_goes_connecting_then_failed_with_a_reason_and_retries() {
        let (sink, mut events) = Recorder::new(false);
        let telemetry = Arc::new(Telemetry::new());
        let (stop, handle) = start(
            "rtsp://127.0.0.1:1/x",
            settings(5, 0),
            Vec::new(),
            sink,
            telemetry.clone(),
        );
        let mut waits = Vec::new();
        for _ in 0..4 {
            assert_eq!(next_event(&mut events).await, Event::Connecting);
            match next_event(&mut events).await {
                Event::Failed(reason, retry_in) => {
                    assert!(reason.starts_with("ffmpeg exited with status"), "{reason}");
                    assert!(reason.contains("127.0.0.1:1"), "{reason}");
                    waits.push(retry_in.as_millis());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, [10, 20, 40, 40], "doubling to the maximum");
        assert!(telemetry.snapshot().last_error.is_some());
        stop.cancel();
        tokio::time::timeout(PATIENCE, handle)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_url_with_credentials_never_shows_them() {
        let url = "rtsp://admin:s3cr%40t@127.0.0.1:1/x";
        let leaks = |text: &str| text.contains("s3cr") || text.contains("admin");

        let mut capture = Capture::start(url, 5, 640).unwrap();
        assert!(!leaks(&format!("{capture:?}")));
        let error = tokio::time::timeout(PATIENCE, capture.next_frame())
            .await
            .unwrap()
            .unwrap_err();
        let reason = error.to_string();
        assert!(reason.contains("rtsp://***@127.0.0.1:1/x"), "{reason}");
        assert!(!leaks(&reason), "{reason}");
        assert!(!capture.stderr_tail().is_empty());
        for line in capture.stderr_tail() {
            assert!(!leaks(&line), "{line}");
        }
        capture.stop().await;

        let (sink, mut events) = Recorder::new(false);
        let pipeline = Pipeline::new(
            url,
            settings(5, 0),
            Vec::new(),
            sink.clone(),
            Arc::new(Telemetry::new()),
        );
        assert!(!leaks(&format!("{pipeline:?}")));
        let (stop, handle) = start(
            url,
            settings(5, 0),
            Vec::new(),
            sink,
            Arc::new(Telemetry::new()),
        );
        assert_eq!(next_event(&mut events).await, Event::Connecting);
        match next_event(&mut events).await {
            Event::Failed(reason, _) => assert!(!leaks(&reason), "{reason}"),
            other => panic!("{other:?}"),
        }
        stop.cancel();
        tokio::time::timeout(PATIENCE, handle)
            .await
            .unwrap()
            .unwrap();

        // Scrubbing: the URL, the user information, the password plain and decoded.
        let secrets = Secrets::of(&SourceUrl::parse(url).unwrap());
        let scrubbed = secrets.scrub(&format!("{url} admin:s3cr%40t s3cr@t s3cr%40t"));
        assert!(!leaks(&scrubbed), "{scrubbed}");
    }

    #[tokio::test]
    async fn stop_ends_the_ffmpeg_process() {
        // A size no other test uses, to find this test's ffmpeg among the children.
        let url = "synthetic://testsrc?size=322x242&rate=5";
        let (sink, mut events) = Recorder::new(false);
        let (stop, handle) = start(
            url,
            settings(5, 0),
            Vec::new(),
            sink,
            Arc::new(Telemetry::new()),
        );
        assert_eq!(next_event(&mut events).await, Event::Connecting);
        assert!(matches!(
            next_event(&mut events).await,
            Event::Active(322, 242, 5)
        ));
        let pid =
            ffmpeg_child_with("size=322x242").expect("ffmpeg runs while the camera is active");
        stop.cancel();
        tokio::time::timeout(PATIENCE, handle)
            .await
            .unwrap()
            .unwrap();
        assert!(!process_exists(pid), "ffmpeg {pid} is gone, reaped too");

        // The same for a capture on its own.
        let mut capture = Capture::start(url, 5, 640).unwrap();
        let _ = tokio::time::timeout(PATIENCE, capture.next_frame())
            .await
            .unwrap()
            .unwrap();
        let pid = capture.pid().unwrap();
        capture.stop().await;
        assert!(!process_exists(pid));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_thumbnail_is_encoded_while_nobody_watches() {
        let (sink, mut events) = Recorder::new(false);
        let telemetry = Arc::new(Telemetry::new());
        let (stop, handle) = start(
            "synthetic://testsrc?size=640x480&rate=10",
            settings(10, 5),
            Vec::new(),
            sink.clone(),
            telemetry.clone(),
        );
        assert_eq!(next_event(&mut events).await, Event::Connecting);
        assert!(matches!(next_event(&mut events).await, Event::Active(..)));
        tokio::time::timeout(PATIENCE, sink.asked.subscribe().wait_for(|n| *n >= 3))
            .await
            .expect("the pipeline asks whether anybody watches")
            .unwrap();
        assert_eq!(telemetry.snapshot().thumbnails_encoded, 0);
        assert!(events.try_recv().is_err(), "no thumbnail");

        sink.watching.store(true, Ordering::Relaxed);
        let jpeg = loop {
            if let Event::Thumbnail(jpeg) = next_event(&mut events).await {
                break jpeg;
            }
        };
        let picture = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((picture.width(), picture.height()), (320, 240));
        assert!(telemetry.snapshot().thumbnails_encoded >= 1);
        stop.cancel();
        tokio::time::timeout(PATIENCE, handle)
            .await
            .unwrap()
            .unwrap();
    }

    /// A detector that takes its time, and says when it is called.
    struct Slow(mpsc::UnboundedSender<()>);

    impl Detector for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn detect(&mut self, _frame: &Frame) -> Vec<Finding> {
            let _ = self.0.send(());
            // Work that outlasts several frames (10 a second).
            std::thread::sleep(Duration::from_millis(500));
            Vec::new()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_that_arrive_during_processing_are_dropped_and_counted() {
        let (sink, _events) = Recorder::new(false);
        let telemetry = Arc::new(Telemetry::new());
        let (called, mut calls) = mpsc::unbounded_channel();
        let (stop, handle) = start(
            "synthetic://testsrc?size=160x120&rate=10",
            settings(10, 0),
            vec![Box::new(Slow(called))],
            sink,
            telemetry.clone(),
        );
        for _ in 0..4 {
            tokio::time::timeout(PATIENCE, calls.recv())
                .await
                .unwrap()
                .unwrap();
        }
        let figures = telemetry.snapshot();
        assert!(figures.frames_processed >= 3, "{figures:?}");
        assert!(figures.frames_dropped >= 1, "{figures:?}");
        stop.cancel();
        tokio::time::timeout(PATIENCE, handle)
            .await
            .unwrap()
            .unwrap();
    }
}
