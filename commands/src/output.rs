//! Output logs: lines a process printed (a build's, a deployment's), in a table per context (not
//! events: output is not a fact, and it can be large), numbered from 0 per owner (a build, a
//! deployment). Writers batch lines; readers page by sequence number and are told when an
//! owner's log grows.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

/// The longest line kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// The most lines kept per owner; what comes after is counted, not stored.
pub const MAX_LINES: i64 = 100_000;
/// The most lines written in one statement.
const BATCH: usize = 500;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
    /// The runner itself (what it runs, how it ended).
    System,
}

impl LogStream {
    fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
        }
    }
}

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LogLine {
    /// Its number, from 0.
    pub seq: i64,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    /// The text, without its line break.
    pub line: String,
    /// When it was read.
    pub at: DateTime<Utc>,
}

/// A log table: its name and the column naming each line's owner. Both are the code's
/// constants, never input: they are written into the SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTable {
    /// The table (`build_logs`).
    pub table: &'static str,
    /// Its owner column (`build_id`).
    pub owner: &'static str,
}

struct Statements {
    read: String,
    next: String,
    insert: String,
    delete: String,
}

/// A log table, and a signal when an owner's log grows (in this process; readers in other
/// processes poll).
#[derive(Clone)]
pub struct OutputLog {
    pool: PgPool,
    grown: broadcast::Sender<Uuid>,
    sql: std::sync::Arc<Statements>,
}

impl std::fmt::Debug for OutputLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputLog").finish_non_exhaustive()
    }
}

impl OutputLog {
    /// The log in this table of this database.
    pub fn new(pool: PgPool, table: LogTable) -> Self {
        let LogTable { table, owner } = table;
        let sql = Statements {
            read: format!(
                "SELECT seq, stream, line, at FROM {table} \
                 WHERE {owner} = $1 AND org_id = $2 AND seq >= $3 ORDER BY seq LIMIT $4"
            ),
            next: format!(
                "SELECT coalesce(max(seq) + 1, 0) FROM {table} WHERE {owner} = $1 AND org_id = $2"
            ),
            insert: format!(
                "INSERT INTO {table} ({owner}, org_id, seq, stream, line, at) \
                 SELECT $1, $2, * FROM UNNEST($3::bigint[], $4::text[], $5::text[], \
                 $6::timestamptz[]) ON CONFLICT ({owner}, seq) DO NOTHING"
            ),
            delete: format!("DELETE FROM {table} WHERE {owner} = $1 AND org_id = $2"),
        };
        Self {
            pool,
            grown: broadcast::channel(1024).0,
            sql: std::sync::Arc::new(sql),
        }
    }

    /// Tells whose logs grew. A receiver that lags should simply read again.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.grown.subscribe()
    }

    /// Up to `limit` lines of an owner of `org_id`, from line `offset`.
    pub async fn read(
        &self,
        org_id: Uuid,
        owner: Uuid,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<LogLine>, sqlx::Error> {
        sqlx::query_as::<_, LogLine>(sqlx::AssertSqlSafe(self.sql.read.as_str()))
            .bind(owner)
            .bind(org_id)
            .bind(offset)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// The last `limit` lines of an owner of `org_id`, in order.
    pub async fn tail(
        &self,
        org_id: Uuid,
        owner: Uuid,
        limit: i64,
    ) -> Result<Vec<LogLine>, sqlx::Error> {
        let next = self.next_seq(org_id, owner).await?;
        self.read(org_id, owner, (next - limit).max(0), limit).await
    }

    /// The number of the next line of an owner (0 when it has none).
    async fn next_seq(&self, org_id: Uuid, owner: Uuid) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(self.sql.next.as_str()))
            .bind(owner)
            .bind(org_id)
            .fetch_one(&self.pool)
            .await
    }

    async fn insert(
        &self,
        org_id: Uuid,
        owner: Uuid,
        first: i64,
        lines: &[(LogStream, String, DateTime<Utc>)],
    ) -> Result<(), sqlx::Error> {
        let seqs: Vec<i64> = (first..first + lines.len() as i64).collect();
        let streams: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
        let texts: Vec<&str> = lines.iter().map(|l| l.1.as_str()).collect();
        let ats: Vec<DateTime<Utc>> = lines.iter().map(|l| l.2).collect();
        sqlx::query(sqlx::AssertSqlSafe(self.sql.insert.as_str()))
            .bind(owner)
            .bind(org_id)
            .bind(&seqs)
            .bind(&streams)
            .bind(&texts)
            .bind(&ats)
            .execute(&self.pool)
            .await?;
        let _ = self.grown.send(owner);
        Ok(())
    }

    /// Forgets an owner's lines.
    pub async fn delete(&self, org_id: Uuid, owner: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(self.sql.delete.as_str()))
            .bind(owner)
            .bind(org_id)
            .execute(&self.pool)
            .await?;
        let _ = self.grown.send(owner);
        Ok(())
    }

    /// A writer for one owner's log, continuing after the lines it already has (a restarted
    /// runner appends to what the crashed one wrote).
    pub async fn writer(&self, org_id: Uuid, owner: Uuid) -> Result<LogSink, sqlx::Error> {
        let next = self.next_seq(org_id, owner).await?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(LogStream, String, DateTime<Utc>)>();
        let logs = self.clone();
        let task = tokio::spawn(async move {
            let mut next = next;
            let mut dropped = 0i64;
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(line) => batch.push(line),
                        Err(_) => break,
                    }
                }
                let room = (MAX_LINES - next).max(0) as usize;
                if batch.len() > room {
                    dropped += (batch.len() - room) as i64;
                    batch.truncate(room);
                }
                if !batch.is_empty() {
                    if let Err(e) = logs.insert(org_id, owner, next, &batch).await {
                        tracing::warn!(%owner, error = %e, "could not store log lines");
                    } else {
                        next += batch.len() as i64;
                    }
                    batch.clear();
                }
            }
            if dropped > 0 {
                let note = format!("log truncated: {dropped} more lines were not kept");
                let line = [(LogStream::System, note, now())];
                // The last line may go past MAX_LINES: it says what is missing.
                if let Err(e) = logs.insert(org_id, owner, next, &line).await {
                    tracing::warn!(%owner, error = %e, "could not store log lines");
                }
            }
        });
        Ok(LogSink {
            handle: LogHandle {
                tx: Some(tx),
                redact: Arc::from(Vec::new()),
            },
            task: Some(task),
        })
    }
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Cuts a line to [`MAX_LINE_BYTES`] at a character boundary, and drops a trailing `\r`.
fn clean(mut line: String) -> String {
    if line.ends_with('\r') {
        line.pop();
    }
    if line.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

/// Where a running process writes its lines; [`LogSink::close`] waits until they are stored.
pub struct LogSink {
    handle: LogHandle,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LogSink {
    /// Adds a line.
    pub fn line(&self, stream: LogStream, text: impl Into<String>) {
        self.handle.line(stream, text);
    }

    /// A sender that other tasks can write through.
    pub fn handle(&self) -> LogHandle {
        self.handle.clone()
    }

    /// Stores every line written so far, then stops.
    pub async fn close(mut self) {
        self.handle.tx.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A clonable way to write to a [`LogSink`] (it stops when the sink closes and every handle is
/// dropped).
#[derive(Clone)]
pub struct LogHandle {
    tx: Option<mpsc::UnboundedSender<(LogStream, String, DateTime<Utc>)>>,
    /// Values masked in every line (secrets a process may print).
    redact: Arc<[String]>,
}

/// What a masked value reads as.
pub const MASKED: &str = "********";
/// Values shorter than this are not masked (masking every `a` would ruin a log, not save one).
pub const MIN_MASKED_LEN: usize = 4;

impl LogHandle {
    /// A handle whose lines go nowhere (where no log could be opened).
    pub fn discard() -> Self {
        Self {
            tx: None,
            redact: Arc::from(Vec::new()),
        }
    }

    /// The same log, with these values masked in every line written through the handle (and
    /// its clones): a process's output cannot leak a secret it was given.
    pub fn redacting(&self, values: impl IntoIterator<Item = String>) -> Self {
        let mut redact: Vec<String> = self.redact.iter().cloned().collect();
        redact.extend(values.into_iter().filter(|v| v.len() >= MIN_MASKED_LEN));
        // Longest first, so that a value containing another is masked whole.
        redact.sort_by_key(|v| std::cmp::Reverse(v.len()));
        redact.dedup();
        Self {
            tx: self.tx.clone(),
            redact: Arc::from(redact),
        }
    }

    /// Adds a line.
    pub fn line(&self, stream: LogStream, text: impl Into<String>) {
        if let Some(tx) = &self.tx {
            let mut text = text.into();
            for value in self.redact.iter() {
                if text.contains(value.as_str()) {
                    text = text.replace(value.as_str(), MASKED);
                }
            }
            let _ = tx.send((stream, clean(text), now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redacting_handle_masks_its_values_in_every_line_and_leaves_short_ones() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let plain = LogHandle {
            tx: Some(tx),
            redact: Arc::from(Vec::new()),
        };
        let log = plain.redacting([
            "hunter2".to_owned(),
            "hunter2-long".to_owned(),
            "ab".to_owned(),
        ]);
        log.clone()
            .line(LogStream::Stdout, "token=hunter2-long, again hunter2, ab");
        plain.line(LogStream::Stdout, "hunter2");
        assert_eq!(
            rx.try_recv().unwrap().1,
            "token=********, again ********, ab"
        );
        assert_eq!(rx.try_recv().unwrap().1, "hunter2");
    }

    #[test]
    fn long_lines_are_cut_at_a_character_boundary_and_lose_their_carriage_return() {
        assert_eq!(clean("abc\r".into()), "abc");
        let long = "é".repeat(MAX_LINE_BYTES);
        let cut = clean(long);
        assert!(cut.len() <= MAX_LINE_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
