//! A portable, checksummed archive of a whole log, and its export from and import into
//! PostgreSQL.
//!
//! The file is gzip-compressed JSON lines, read and written as a stream (never held in memory):
//!
//! 1. a header: `{"format":"atelier-event-archive","version":1,"exported_at":…,"source_head":…}`;
//! 2. one line per event, in log order (`"kind":"event"`): its stream, revision, id, type, the
//!    time it was recorded, its metadata and data, and its position in the source log (for
//!    reference only: an import gives every event a new position, in the same order);
//! 3. one line per stream (`"kind":"stream"`): its last revision, soft-deleted or tombstoned, its
//!    retention settings;
//! 4. a trailer (`"kind":"end"`): how many events and streams, and the SHA-256 (hex) of every
//!    byte before it (every line, newlines included).
//!
//! [`ArchiveReader`] refuses what is not such a file, a file cut short, a file changed after
//! export (the checksum), and a log that cannot be (a revision out of sequence, an event of a
//! stream without its stream line).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{BufRead, BufReader, Read, Write};

use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

use crate::postgres::{NOTIFY_CHANNEL, PgEventStore};
use crate::{
    EventData, InvalidInput, MAX_EVENT_SIZE, Position, StoreError, StreamName, validate_batch,
};

/// The header's `format`.
pub const FORMAT: &str = "atelier-event-archive";
/// The version of the format this code writes and reads.
pub const VERSION: u32 = 1;
/// The longest line read: an event's data and metadata are at most 1 MiB, and JSON escapes in
/// the file may make them longer than in the database.
const MAX_LINE: usize = 8 * MAX_EVENT_SIZE;
/// Events read from the database per query on export.
const EXPORT_PAGE: i64 = 1000;
/// Events (or streams) written per statement on import.
const IMPORT_BATCH: usize = 500;
/// Bytes of event data and metadata written per statement on import, at most (roughly).
const IMPORT_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The first line of an archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format's version ([`VERSION`]).
    pub version: u32,
    /// When the export started.
    pub exported_at: DateTime<Utc>,
    /// The position of the last event exported, in the source log (`None`: an empty log).
    pub source_head: Option<Position>,
}

/// An event as archived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchivedEvent {
    /// Its place in the source log (an import gives it a new one).
    pub position: Position,
    /// Its stream.
    pub stream: StreamName,
    /// Its revision in the stream.
    pub revision: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the source store recorded it.
    pub created: DateTime<Utc>,
    /// Its metadata (a JSON object).
    pub metadata: serde_json::Value,
    /// Its data (a JSON object).
    pub data: serde_json::Value,
}

/// A stream's state as archived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedStream {
    /// Its name.
    pub stream: StreamName,
    /// The revision of its last event, deleted or not (`None`: it never had one, only metadata
    /// or a deletion).
    pub revision: Option<u64>,
    /// Soft-deleted (reads empty, can be written again).
    pub deleted: bool,
    /// Tombstoned (can never be read or written again).
    pub tombstoned: bool,
    /// Retention: events older than this many seconds are not read.
    pub max_age: Option<u64>,
    /// Retention: only the last this many events are read.
    pub max_count: Option<u64>,
    /// Retention: events below this revision are not read.
    pub truncate_before: Option<u64>,
}

/// The last line of an archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    /// How many event lines.
    pub events: u64,
    /// How many stream lines.
    pub streams: u64,
    /// SHA-256 of every byte before the trailer line, lowercase hex.
    pub sha256: String,
}

/// One line after the header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Event(ArchivedEvent),
    Stream(ArchivedStream),
    End(Trailer),
}

/// What an archive holds, read from its trailer once the whole file was verified.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Its header.
    pub header: Header,
    /// Its trailer.
    pub trailer: Trailer,
}

/// Why an archive was refused, or could not be written or imported.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not an Atelier event archive (not gzip, or no header of ours).
    #[error("not an Atelier event archive: {0}")]
    NotAnArchive(String),
    /// The file ends early.
    #[error("the archive is truncated: {0}")]
    Truncated(String),
    /// A line is damaged or makes no sense.
    #[error("the archive is corrupt at line {line}: {reason}")]
    Corrupt {
        /// The line (from 1).
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The content does not match its checksum: it was changed after export.
    #[error(
        "the archive's checksum does not match its content: it was changed after export \
         (expected {expected}, found {found})"
    )]
    ChecksumMismatch {
        /// The trailer's checksum.
        expected: String,
        /// The content's.
        found: String,
    },
    /// An import into a store that already holds something.
    #[error(
        "the event store is not empty ({events} events, {streams} streams): an archive is \
         imported into an empty database only"
    )]
    NotEmpty {
        /// Events in the store.
        events: i64,
        /// Streams in the store.
        streams: i64,
    },
    /// Reading or writing the file failed.
    #[error("archive I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ArchiveError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::backend(e))
    }
}

/// Writes an archive, line by line, into `W` (compressed on the way).
pub struct ArchiveWriter<W: Write> {
    out: GzEncoder<W>,
    hash: Sha256,
    events: u64,
    streams: u64,
    buf: Vec<u8>,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts an archive with its header.
    pub fn new(out: W, header: &Header) -> std::io::Result<Self> {
        let mut w = Self {
            out: GzEncoder::new(out, Compression::default()),
            hash: Sha256::new(),
            events: 0,
            streams: 0,
            buf: Vec::with_capacity(4096),
        };
        w.line(header)?;
        Ok(w)
    }

    /// Writes an event (events come before streams, in log order).
    pub fn event(&mut self, event: ArchivedEvent) -> std::io::Result<()> {
        if self.streams > 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an event after the streams",
            ));
        }
        self.line(&Line::Event(event))?;
        self.events += 1;
        Ok(())
    }

    /// Writes a stream's state.
    pub fn stream(&mut self, stream: ArchivedStream) -> std::io::Result<()> {
        self.line(&Line::Stream(stream))?;
        self.streams += 1;
        Ok(())
    }

    /// Writes the trailer and finishes the compression; returns the output and the trailer.
    pub fn finish(mut self) -> std::io::Result<(W, Trailer)> {
        let trailer = Trailer {
            events: self.events,
            streams: self.streams,
            sha256: hex::encode(self.hash.clone().finalize()),
        };
        self.line(&Line::End(trailer.clone()))?;
        let mut out = self.out.finish()?;
        out.flush()?;
        Ok((out, trailer))
    }

    fn line(&mut self, value: &impl Serialize) -> std::io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, value)?;
        self.buf.push(b'\n');
        self.hash.update(&self.buf);
        self.out.write_all(&self.buf)
    }
}

/// One item of an archive, in file order.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// An event (all of them come first, in log order).
    Event(ArchivedEvent),
    /// A stream's state.
    Stream(ArchivedStream),
}

/// Reads and checks an archive as a stream. Every item it returns is well formed and in
/// sequence; the checksum, the counts and the end of the file are checked when the trailer is
/// reached, so only a reader that returned `Ok(None)` has verified the whole file.
pub struct ArchiveReader<R: Read> {
    input: BufReader<MultiGzDecoder<R>>,
    header: Header,
    hash: Sha256,
    line_no: u64,
    buf: Vec<u8>,
    events: u64,
    streams: u64,
    /// Each stream seen: the revision of its last event (-1: none yet), and whether its
    /// stream line was read.
    seen: HashMap<StreamName, (i64, bool)>,
    trailer: Option<Trailer>,
}

impl<R: Read> ArchiveReader<R> {
    /// Opens an archive: reads and checks its header.
    pub fn open(input: R) -> Result<Self, ArchiveError> {
        let mut r = Self {
            input: BufReader::with_capacity(64 * 1024, MultiGzDecoder::new(input)),
            header: Header {
                format: String::new(),
                version: 0,
                exported_at: DateTime::<Utc>::MIN_UTC,
                source_head: None,
            },
            hash: Sha256::new(),
            line_no: 0,
            buf: Vec::with_capacity(4096),
            events: 0,
            streams: 0,
            seen: HashMap::new(),
            trailer: None,
        };
        let first = r.read_line().map_err(|e| match e {
            ArchiveError::Truncated(_) => ArchiveError::NotAnArchive(
                "too short for gzip data, or no complete header line".to_owned(),
            ),
            ArchiveError::Corrupt { reason, .. } => ArchiveError::NotAnArchive(reason),
            other => other,
        })?;
        let Some(first) = first else {
            return Err(ArchiveError::NotAnArchive("the file is empty".to_owned()));
        };
        let header: Header = serde_json::from_slice(first)
            .map_err(|_| ArchiveError::NotAnArchive("the first line is not its header".into()))?;
        if header.format != FORMAT {
            return Err(ArchiveError::NotAnArchive(format!(
                "its format is {:?}",
                header.format
            )));
        }
        if header.version != VERSION {
            return Err(ArchiveError::NotAnArchive(format!(
                "version {} (this atelier reads version {VERSION})",
                header.version
            )));
        }
        r.hash.update(&r.buf);
        r.header = header;
        Ok(r)
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next item; `Ok(None)` once the trailer was read and the whole file verified.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Item>, ArchiveError> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        let line_no = self.line_no + 1;
        let corrupt = |reason: String| ArchiveError::Corrupt {
            line: line_no,
            reason,
        };
        let Some(raw) = self.read_line()? else {
            return Err(ArchiveError::Truncated(format!(
                "it ends after line {} without its trailer",
                self.line_no
            )));
        };
        let line: Line =
            serde_json::from_slice(raw).map_err(|e| corrupt(format!("not a valid line: {e}")))?;
        match line {
            Line::Event(e) => {
                if self.streams > 0 {
                    return Err(corrupt("an event after the stream lines".into()));
                }
                check_event(&e).map_err(|e| corrupt(e.to_string()))?;
                let revision = i64::try_from(e.revision)
                    .map_err(|_| corrupt("the revision is out of range".into()))?;
                let last = self.seen.entry(e.stream.clone()).or_insert((-1, false));
                if revision != last.0 + 1 {
                    return Err(corrupt(format!(
                        "{}@{} follows revision {} of its stream",
                        e.stream, e.revision, last.0
                    )));
                }
                last.0 = revision;
                self.hash.update(&self.buf);
                self.events += 1;
                Ok(Some(Item::Event(e)))
            }
            Line::Stream(s) => {
                let revision = s
                    .revision
                    .map_or(Ok(-1), i64::try_from)
                    .map_err(|_| corrupt("the revision is out of range".into()))?;
                match self.seen.entry(s.stream.clone()) {
                    Entry::Occupied(mut o) => {
                        let (last, listed) = o.get_mut();
                        if *listed {
                            return Err(corrupt(format!("stream {} is listed twice", s.stream)));
                        }
                        if *last != revision {
                            return Err(corrupt(format!(
                                "stream {} is said to end at {revision}, its events at {last}",
                                s.stream
                            )));
                        }
                        *listed = true;
                    }
                    Entry::Vacant(v) => {
                        if revision != -1 {
                            return Err(corrupt(format!(
                                "stream {} is said to end at {revision} but has no event",
                                s.stream
                            )));
                        }
                        v.insert((-1, true));
                    }
                }
                for v in [s.max_age, s.max_count, s.truncate_before]
                    .into_iter()
                    .flatten()
                {
                    if i64::try_from(v).is_err() {
                        return Err(corrupt("a retention setting is out of range".into()));
                    }
                }
                self.hash.update(&self.buf);
                self.streams += 1;
                Ok(Some(Item::Stream(s)))
            }
            Line::End(t) => {
                let found = hex::encode(self.hash.clone().finalize());
                if t.sha256 != found {
                    return Err(ArchiveError::ChecksumMismatch {
                        expected: t.sha256,
                        found,
                    });
                }
                if t.events != self.events || t.streams != self.streams {
                    return Err(corrupt(format!(
                        "the trailer counts {} events and {} streams, the file has {} and {}",
                        t.events, t.streams, self.events, self.streams
                    )));
                }
                if let Some((name, _)) = self.seen.iter().find(|(_, (_, listed))| !listed) {
                    return Err(corrupt(format!(
                        "stream {name} has events but no stream line"
                    )));
                }
                if self.read_line()?.is_some() {
                    return Err(ArchiveError::Corrupt {
                        line: self.line_no,
                        reason: "data after the trailer".into(),
                    });
                }
                self.trailer = Some(t);
                Ok(None)
            }
        }
    }

    /// The trailer, once [`ArchiveReader::next`] returned `Ok(None)`.
    pub fn summary(&self) -> Option<Summary> {
        self.trailer.clone().map(|trailer| Summary {
            header: self.header.clone(),
            trailer,
        })
    }

    /// Reads the next line into `buf` (newline included); its content without the newline.
    fn read_line(&mut self) -> Result<Option<&[u8]>, ArchiveError> {
        self.buf.clear();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
        let n = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(gzip_error)?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if self.buf.last() != Some(&b'\n') {
            if self.buf.len() > MAX_LINE {
                return Err(ArchiveError::Corrupt {
                    line: self.line_no,
                    reason: format!("a line longer than {MAX_LINE} bytes"),
                });
            }
            return Err(ArchiveError::Truncated(format!(
                "line {} is cut short",
                self.line_no
            )));
        }
        Ok(Some(&self.buf[..self.buf.len() - 1]))
    }
}

/// What a gzip error while reading means for the archive.
fn gzip_error(e: std::io::Error) -> ArchiveError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            ArchiveError::Truncated("the compressed data ends early".into())
        }
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
            let text = e.to_string();
            if text.contains("header") {
                ArchiveError::NotAnArchive(format!("not gzip data ({text})"))
            } else {
                ArchiveError::Corrupt {
                    line: 0,
                    reason: format!("the compressed data is damaged ({text})"),
                }
            }
        }
        _ => ArchiveError::Io(e),
    }
}

fn check_event(e: &ArchivedEvent) -> Result<(), InvalidInput> {
    // The store's own rules for an append (type, objects, size).
    validate_batch(&[EventData {
        event_id: e.event_id,
        event_type: e.event_type.clone(),
        data: e.data.clone(),
        metadata: e.metadata.clone(),
    }])
}

/// Reads the whole archive and checks it (format, sequence, counts, checksum, end of file)
/// without writing anything; its summary.
pub fn verify(input: impl Read) -> Result<Summary, ArchiveError> {
    let mut reader = ArchiveReader::open(input)?;
    while reader.next()?.is_some() {}
    Ok(reader
        .summary()
        .expect("a reader that returned None has read the trailer"))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgEventStore {
    /// Writes the whole log into `out` as an archive: every event in log order, then every
    /// stream's state, read in one snapshot (writers may go on meanwhile; what they write after
    /// the export started is not in it). `progress` is told how many events were written out of
    /// how many. Returns the output and the trailer.
    pub async fn export_archive<W: Write>(
        &self,
        out: W,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(W, Trailer), ArchiveError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&mut *tx)
            .await?;
        let total = u64::try_from(total).unwrap_or(0);
        let head: Option<(i64, i64)> = sqlx::query_as(
            "SELECT commit, prepare FROM events ORDER BY commit DESC, prepare DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let header = Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            exported_at: Utc::now(),
            source_head: head.map(|(c, p)| Position::new(c as u64, p as u64)),
        };
        let mut writer = ArchiveWriter::new(out, &header)?;
        progress(0, total);
        let mut after = (-1i64, -1i64);
        let mut done = 0u64;
        loop {
            let rows = sqlx::query(
                "SELECT commit, prepare, stream_name, revision, event_id, event_type, \
                 created_at, metadata, data FROM events WHERE (commit, prepare) > ($1, $2) \
                 ORDER BY commit, prepare LIMIT $3",
            )
            .bind(after.0)
            .bind(after.1)
            .bind(EXPORT_PAGE)
            .fetch_all(&mut *tx)
            .await?;
            let n = rows.len();
            for row in rows {
                let commit: i64 = row.try_get(0)?;
                let prepare: i64 = row.try_get(1)?;
                after = (commit, prepare);
                writer.event(ArchivedEvent {
                    position: Position::new(commit as u64, prepare as u64),
                    stream: StreamName::from_store(row.try_get(2)?),
                    revision: row.try_get::<i64, _>(3)? as u64,
                    event_id: row.try_get(4)?,
                    event_type: row.try_get(5)?,
                    created: row.try_get(6)?,
                    metadata: row.try_get(7)?,
                    data: row.try_get(8)?,
                })?;
                done += 1;
            }
            progress(done, total.max(done));
            if n < EXPORT_PAGE as usize {
                break;
            }
        }
        let mut after_id = 0i64;
        loop {
            type StreamRow = (
                i64,
                String,
                i64,
                bool,
                bool,
                Option<i64>,
                Option<i64>,
                Option<i64>,
            );
            let rows: Vec<StreamRow> = sqlx::query_as(
                "SELECT stream_id, stream_name, revision, deleted, tombstoned, max_age, \
                 max_count, truncate_before FROM event_streams WHERE stream_id > $1 \
                 ORDER BY stream_id LIMIT $2",
            )
            .bind(after_id)
            .bind(EXPORT_PAGE)
            .fetch_all(&mut *tx)
            .await?;
            let n = rows.len();
            for (id, name, revision, deleted, tombstoned, max_age, max_count, truncate_before) in
                rows
            {
                after_id = id;
                writer.stream(ArchivedStream {
                    stream: StreamName::from_store(name),
                    revision: u64::try_from(revision).ok(),
                    deleted,
                    tombstoned,
                    max_age: max_age.map(|v| v as u64),
                    max_count: max_count.map(|v| v as u64),
                    truncate_before: truncate_before.map(|v| v as u64),
                })?;
            }
            if n < EXPORT_PAGE as usize {
                break;
            }
        }
        tx.commit().await?;
        Ok(writer.finish()?)
    }

    /// How many events and streams the store holds (an import needs both at zero).
    pub async fn count_events_and_streams(&self) -> Result<(i64, i64), StoreError> {
        sqlx::query_as("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_streams)")
            .fetch_one(self.pool())
            .await
            .map_err(StoreError::backend)
    }

    /// Imports an archive into this store, which must be empty (no event, no stream): every
    /// event with its id, stream, revision, type, data, metadata and recorded time, in the
    /// archive's order, and every stream's state. Positions are new: this transaction's id and
    /// the sequence, in the same order. Everything is written in one transaction, committed
    /// only after the whole file was read and verified (see [`ArchiveReader`]): a refused
    /// file, a store that is not empty or any failure writes nothing. Callers that want to
    /// refuse a bad file before touching the database [`verify`] it first. `progress` is told
    /// how many events were written.
    pub async fn import_archive(
        &self,
        input: impl Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Summary, ArchiveError> {
        let mut reader = ArchiveReader::open(input)?;
        let mut tx = self.pool().begin().await?;
        // Writers wait until the import is done (or rolled back); readers do not.
        sqlx::query("LOCK TABLE event_streams, events IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let (events, streams): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_streams)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if events > 0 || streams > 0 {
            return Err(ArchiveError::NotEmpty { events, streams });
        }
        let mut batch = EventBatch::default();
        let mut stream_batch = StreamBatch::default();
        let mut written = 0u64;
        while let Some(item) = reader.next()? {
            match item {
                Item::Event(e) => {
                    batch.push(e);
                    if batch.full() {
                        written += batch.flush(&mut tx).await?;
                        progress(written);
                    }
                }
                Item::Stream(s) => {
                    written += batch.flush(&mut tx).await?;
                    stream_batch.push(s);
                    if stream_batch.names.len() >= IMPORT_BATCH {
                        stream_batch.flush(&mut tx).await?;
                    }
                }
            }
        }
        written += batch.flush(&mut tx).await?;
        stream_batch.flush(&mut tx).await?;
        progress(written);
        let summary = reader
            .summary()
            .expect("a reader that returned None has read the trailer");
        tx.commit().await?;
        // Servers on this database read the new log at once rather than at their next poll.
        let _ = sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(self.pool())
            .await;
        Ok(summary)
    }
}

/// Events waiting to be inserted, as columns.
#[derive(Default)]
struct EventBatch {
    streams: Vec<String>,
    revisions: Vec<i64>,
    ids: Vec<Uuid>,
    types: Vec<String>,
    /// Payloads as the JSON text the `json` columns keep.
    data: Vec<String>,
    metadata: Vec<String>,
    created: Vec<DateTime<Utc>>,
    bytes: usize,
}

impl EventBatch {
    fn push(&mut self, e: ArchivedEvent) {
        let (data, metadata) = (e.data.to_string(), e.metadata.to_string());
        self.bytes += data.len() + metadata.len();
        self.streams.push(e.stream.as_str().to_owned());
        self.revisions.push(to_i64(e.revision));
        self.ids.push(e.event_id);
        self.types.push(e.event_type);
        self.data.push(data);
        self.metadata.push(metadata);
        self.created.push(e.created);
    }

    fn full(&self) -> bool {
        self.ids.len() >= IMPORT_BATCH || self.bytes >= IMPORT_BATCH_BYTES
    }

    /// Inserts the events (creating the streams they are the first of) and empties the batch;
    /// how many were inserted.
    async fn flush(
        &mut self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> Result<u64, ArchiveError> {
        if self.ids.is_empty() {
            return Ok(0);
        }
        let mut new: Vec<&str> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (name, revision) in self.streams.iter().zip(&self.revisions) {
            if *revision == 0 && seen.insert(name.as_str()) {
                new.push(name);
            }
        }
        sqlx::query(
            "INSERT INTO event_streams (stream_name) \
             SELECT t.n FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i) ORDER BY t.i",
        )
        .bind(&new)
        .execute(&mut **tx)
        .await?;
        // The target list is evaluated after the sort (it calls a volatile function), so the
        // prepare numbers follow the archive's order, as `atelier_append` relies on too.
        let inserted = sqlx::query(
            "INSERT INTO events (commit, prepare, stream_id, stream_name, revision, event_id, \
                                 event_type, data, metadata, created_at) \
             SELECT pg_current_xact_id()::text::bigint, nextval('event_prepare_seq'), \
                    s.stream_id, t.n, t.r, t.id, t.ty, t.d, t.m, t.at \
               FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::json[], \
                           $6::json[], $7::timestamptz[]) \
                    WITH ORDINALITY AS t(n, r, id, ty, d, m, at, i) \
               JOIN event_streams s ON s.stream_name = t.n \
              ORDER BY t.i",
        )
        .bind(&self.streams)
        .bind(&self.revisions)
        .bind(&self.ids)
        .bind(&self.types)
        .bind(&self.data)
        .bind(&self.metadata)
        .bind(&self.created)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        let expected = self.ids.len() as u64;
        if inserted != expected {
            return Err(ArchiveError::Store(StoreError::Backend(
                format!("the import inserted {inserted} of {expected} events").into(),
            )));
        }
        *self = Self::default();
        Ok(inserted)
    }
}

/// Streams' states waiting to be written, as columns.
#[derive(Default)]
struct StreamBatch {
    names: Vec<String>,
    revisions: Vec<i64>,
    deleted: Vec<bool>,
    tombstoned: Vec<bool>,
    max_age: Vec<Option<i64>>,
    max_count: Vec<Option<i64>>,
    truncate_before: Vec<Option<i64>>,
}

impl StreamBatch {
    fn push(&mut self, s: ArchivedStream) {
        self.names.push(s.stream.as_str().to_owned());
        self.revisions.push(s.revision.map_or(-1, to_i64));
        self.deleted.push(s.deleted);
        self.tombstoned.push(s.tombstoned);
        self.max_age.push(s.max_age.map(to_i64));
        self.max_count.push(s.max_count.map(to_i64));
        self.truncate_before.push(s.truncate_before.map(to_i64));
    }

    /// Writes the streams' states (a stream with events already has its row: the import's
    /// transaction becomes its last appending one) and empties the batch.
    async fn flush(
        &mut self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> Result<(), ArchiveError> {
        if self.names.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO event_streams (stream_name, revision, last_commit, deleted, tombstoned, \
                                        max_age, max_count, truncate_before) \
             SELECT t.n, t.r, \
                    CASE WHEN t.r >= 0 THEN pg_current_xact_id()::text::bigint ELSE 0 END, \
                    t.d, t.tb, t.ma, t.mc, t.tr \
               FROM unnest($1::text[], $2::bigint[], $3::bool[], $4::bool[], $5::bigint[], \
                           $6::bigint[], $7::bigint[]) AS t(n, r, d, tb, ma, mc, tr) \
             ON CONFLICT (stream_name) DO UPDATE SET revision = excluded.revision, \
                last_commit = excluded.last_commit, deleted = excluded.deleted, \
                tombstoned = excluded.tombstoned, max_age = excluded.max_age, \
                max_count = excluded.max_count, truncate_before = excluded.truncate_before",
        )
        .bind(&self.names)
        .bind(&self.revisions)
        .bind(&self.deleted)
        .bind(&self.tombstoned)
        .bind(&self.max_age)
        .bind(&self.max_count)
        .bind(&self.truncate_before)
        .execute(&mut **tx)
        .await?;
        *self = Self::default();
        Ok(())
    }
}
