//! Output logs over HTTP, for every context that keeps one ([`OutputLog`]: builds, deployments):
//! a page of lines from an offset, or the lines followed live as server-sent events until their
//! owner settles (`follow=true`, resumable with `Last-Event-ID`).

use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use atelier_commands::output::{LogLine, OutputLog};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::problem::{ApiError, FieldError};

/// Most log lines one read returns.
pub const MAX_LOG_LIMIT: i64 = 5_000;
/// How often a followed log is re-read when no wake-up arrives (a writer in another process).
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// How often a quiet followed log sends a comment, so proxies keep the connection.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Log parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// The first line to read, from 0 (a followed log also takes `Last-Event-ID`).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// Most lines to return, 1 to 5000 (default 1000); not used when following.
    #[param(minimum = 1, maximum = 5000)]
    pub limit: Option<i64>,
    /// `true`: stream the lines as server-sent events until the build or deployment settles.
    pub follow: Option<bool>,
    /// Wait until the resource is visible at this `Atelier-Position` first.
    pub min_position: Option<String>,
}

/// The lines a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first line.
    pub offset: i64,
    /// Most lines.
    pub limit: i64,
    /// Whether to follow.
    pub follow: bool,
}

impl LogParams {
    /// The window asked for (`offset`, else the line after `Last-Event-ID`), validated.
    pub fn window(&self, req: &HttpRequest) -> Result<Window, ApiError> {
        let mut errors = Vec::new();
        let last_event_id = req
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        let offset = self
            .offset
            .or(last_event_id.map(|seq| seq + 1))
            .unwrap_or(0);
        if offset < 0 {
            errors.push(FieldError {
                field: "offset".into(),
                message: "must be 0 or more".into(),
            });
        }
        let limit = self.limit.unwrap_or(1000);
        if !(1..=MAX_LOG_LIMIT).contains(&limit) {
            errors.push(FieldError {
                field: "limit".into(),
                message: format!("must be from 1 to {MAX_LOG_LIMIT}"),
            });
        }
        crate::pagination::validate(errors)?;
        Ok(Window {
            offset,
            limit,
            follow: self.follow.unwrap_or(false),
        })
    }
}

/// One server-sent event of a followed log (`follow=true`), as its fields are sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogEvent {
    /// `log` (one line), then `end` (the owner settled).
    pub event: String,
    /// The line's number (`log` events): a reconnect sends it back as `Last-Event-ID`.
    pub id: Option<String>,
    /// JSON: the line (`{seq, stream, line, at}`), or the end (`{status, …, next_offset}`).
    pub data: String,
}

/// A page of log lines.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogPage {
    /// The lines.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<LogLine>,
    /// Where to read next.
    pub next_offset: i64,
    /// Whether the owner has settled (with `next_offset` at the end, nothing more will come
    /// until it changes again).
    pub finished: bool,
}

/// Reads a page of lines.
pub async fn page(
    logs: &OutputLog,
    org_id: Uuid,
    owner: Uuid,
    window: Window,
    finished: bool,
) -> Result<LogPage, ApiError> {
    let lines = logs
        .read(org_id, owner, window.offset, window.limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let next_offset = lines.last().map_or(window.offset, |l| l.seq + 1);
    Ok(LogPage {
        data: lines,
        next_offset,
        finished,
    })
}

/// Where a log's owner stands, as a follower reports it: what to tell (its status and the like)
/// and whether it has settled. Every line is written before the owner's settling is recorded,
/// so after a settled state one more read finds them all.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerState {
    /// What the end (or a change) says: `{status, …}`.
    pub value: serde_json::Value,
    /// Whether nothing more will be written until the owner changes again.
    pub settled: bool,
}

/// Reads the owner's state; `None` while it cannot be read (not visible yet, or an error).
pub type Probe = Box<dyn FnMut() -> BoxFuture<'static, Option<OwnerState>> + Send>;

/// Streams a log as server-sent events from `offset` until `probe` says the owner settled:
/// `log` events (`id:` the line's number), then one `end`. With `states` named, each change of
/// the owner's state before the end is sent too, as an event of that name (an operation's
/// `progress`).
pub fn follow(
    logs: OutputLog,
    org_id: Uuid,
    owner: Uuid,
    offset: i64,
    probe: Probe,
    states: Option<&'static str>,
) -> HttpResponse {
    let follower = Follower::new(logs, org_id, owner, offset, probe);
    let stream = futures::stream::unfold(follower, move |mut f| async move {
        loop {
            let chunk = match f.next().await? {
                Followed::Lines(lines) => lines.iter().map(sse_line).collect(),
                Followed::State(state) => match states {
                    Some(name) => format!("event: {name}\ndata: {state}\n\n"),
                    None => continue,
                },
                Followed::End(end) => format!("event: end\ndata: {end}\n\n"),
                Followed::Quiet => ": keep-alive\n\n".to_owned(),
                Followed::Failed => {
                    "event: error\ndata: {\"message\":\"reading the log failed\"}\n\n".to_owned()
                }
            };
            return Some((Ok::<_, actix_web::Error>(Bytes::from(chunk)), f));
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream)
}

fn sse_line(line: &LogLine) -> String {
    let data = serde_json::to_string(line).unwrap_or_default();
    format!("id: {}\nevent: log\ndata: {data}\n\n", line.seq)
}

/// What a followed log gives next.
#[derive(Debug)]
pub enum Followed {
    /// New lines, in order.
    Lines(Vec<LogLine>),
    /// The owner moved without settling (its state's value changed).
    State(serde_json::Value),
    /// The owner settled and every line was given: its state, with `next_offset`. Last.
    End(serde_json::Value),
    /// Nothing happened for a while (time for a keep-alive).
    Quiet,
    /// The log could not be read. Last.
    Failed,
}

/// Follows an owner's log: its lines as they are written, its state's changes, its end.
pub struct Follower {
    logs: OutputLog,
    org_id: Uuid,
    owner: Uuid,
    next: i64,
    grown: tokio::sync::broadcast::Receiver<Uuid>,
    probe: Probe,
    last_state: Option<serde_json::Value>,
    ended: bool,
}

impl Follower {
    /// Follows `owner`'s log from line `offset`.
    pub fn new(logs: OutputLog, org_id: Uuid, owner: Uuid, offset: i64, probe: Probe) -> Self {
        Self {
            grown: logs.subscribe(),
            logs,
            org_id,
            owner,
            next: offset,
            probe,
            last_state: None,
            ended: false,
        }
    }

    /// The next line to be read.
    pub fn next_offset(&self) -> i64 {
        self.next
    }

    async fn read(&mut self) -> Result<Option<Vec<LogLine>>, sqlx::Error> {
        let lines = self
            .logs
            .read(self.org_id, self.owner, self.next, 500)
            .await?;
        if lines.is_empty() {
            return Ok(None);
        }
        self.next = lines.last().map_or(self.next, |l| l.seq + 1);
        Ok(Some(lines))
    }

    /// What comes next; `None` after the end (or a failure).
    pub async fn next(&mut self) -> Option<Followed> {
        if self.ended {
            return None;
        }
        let quiet_until = tokio::time::Instant::now() + HEARTBEAT;
        loop {
            match self.read().await {
                Ok(Some(lines)) => return Some(Followed::Lines(lines)),
                Ok(None) => {}
                Err(e) => {
                    self.ended = true;
                    tracing::warn!(error = %e, "reading a followed log failed");
                    return Some(Followed::Failed);
                }
            }
            if let Some(state) = (self.probe)().await {
                if state.settled {
                    if let Ok(Some(lines)) = self.read().await {
                        return Some(Followed::Lines(lines));
                    }
                    self.ended = true;
                    let mut end = state.value;
                    if let Some(o) = end.as_object_mut() {
                        o.insert("next_offset".into(), self.next.into());
                    }
                    return Some(Followed::End(end));
                }
                if self.last_state.as_ref() != Some(&state.value) {
                    self.last_state = Some(state.value.clone());
                    return Some(Followed::State(state.value));
                }
            }
            let wait = tokio::time::sleep_until(
                quiet_until.min(tokio::time::Instant::now() + FOLLOW_POLL),
            );
            tokio::select! {
                _ = wait => {}
                _ = self.wait_for_growth() => {}
            }
            if tokio::time::Instant::now() >= quiet_until {
                return Some(Followed::Quiet);
            }
        }
    }

    async fn wait_for_growth(&mut self) {
        loop {
            match self.grown.recv().await {
                Ok(id) if id == self.owner => return,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}
