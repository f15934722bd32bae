//! The vocabulary of the event store port: names, revisions, positions, events, filters, errors.

use std::fmt;
use std::str::FromStr;

use crate::Payload;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest stream name accepted, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 255;
/// Longest event type accepted, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 255;
/// Largest event accepted: its data and metadata serialized as JSON, in bytes.
pub const MAX_EVENT_SIZE: usize = 1024 * 1024;

/// The name of a stream, such as `project-0190…`. Parsed once: an instance is always valid.
///
/// A name is 1 to 255 bytes long, holds no control characters and does not start with `$`,
/// which is reserved for the store's own streams (`$all`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamName(String);

impl StreamName {
    /// Parses a stream name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidInput> {
        let name = name.into();
        if name.is_empty() {
            return Err(InvalidInput::EmptyStreamName);
        }
        if name.len() > MAX_STREAM_NAME_LEN {
            return Err(InvalidInput::StreamNameTooLong { len: name.len() });
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidInput::ControlCharacter { field: "stream" });
        }
        if name.starts_with('$') {
            return Err(InvalidInput::ReservedStreamName { name });
        }
        Ok(Self(name))
    }

    /// A name read back from the store, which only ever holds valid names.
    pub(crate) fn from_store(name: String) -> Self {
        Self(name)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The category: the part before the first `-` (the whole name when there is none).
    pub fn category(&self) -> &str {
        category_of(&self.0)
    }
}

pub(crate) fn category_of(name: &str) -> &str {
    name.split('-').next().unwrap_or(name)
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl FromStr for StreamName {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for StreamName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// What the writer believes about the stream's current revision when it appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "revision")]
pub enum ExpectedRevision {
    /// No check.
    Any,
    /// The stream has no events (it was never written, or it was soft-deleted).
    NoStream,
    /// The stream exists, at any revision.
    StreamExists,
    /// The stream's last event has exactly this revision.
    Exact(u64),
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("stream exists"),
            Self::Exact(r) => write!(f, "revision {r}"),
        }
    }
}

/// A place in the global log (`$all`), totally ordered: first by `commit`, then by `prepare`.
///
/// In PostgreSQL `commit` is the appending transaction's id and `prepare` a sequence number, as in
/// KurrentDB. The text form `"{commit}-{prepare}"` (decimal) is stable, and safe in URLs, headers
/// and SSE `id:` fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Orders transactions.
    pub commit: u64,
    /// Orders events within a transaction.
    pub prepare: u64,
}

impl Position {
    /// Before every event: reading or subscribing after it starts from the beginning.
    pub const START: Position = Position {
        commit: 0,
        prepare: 0,
    };

    /// Builds a position.
    pub const fn new(commit: u64, prepare: u64) -> Self {
        Self { commit, prepare }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.commit, self.prepare)
    }
}

/// A text that is not a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid position {0:?}: expected \"<commit>-<prepare>\" with two decimal numbers")]
pub struct ParsePositionError(pub String);

impl FromStr for Position {
    type Err = ParsePositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError(s.to_owned());
        let (c, p) = s.split_once('-').ok_or_else(err)?;
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(c) || !digits(p) {
            return Err(err());
        }
        Ok(Position {
            commit: c.parse().map_err(|_| err())?,
            prepare: p.parse().map_err(|_| err())?,
        })
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An event to append.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// Identifies the event; appending the same ids again at the same place is idempotent.
    pub event_id: Uuid,
    /// The event's type, such as `ProjectCreated`.
    pub event_type: String,
    /// The payload: a JSON object.
    pub data: serde_json::Value,
    /// Who, why, and on behalf of which organization: a JSON object.
    pub metadata: serde_json::Value,
}

impl EventData {
    /// A new event with a fresh (v7) id and empty metadata.
    pub fn new(event_type: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            data,
            metadata: serde_json::Value::Object(Default::default()),
        }
    }

    /// Sets the event id (for idempotent retries).
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as the store recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// The payload, decoded when first looked into.
    pub data: Payload,
    /// The metadata, decoded when first looked into.
    pub metadata: Payload,
    /// The stream it belongs to.
    pub stream: StreamName,
    /// Its revision in that stream, from 0.
    pub revision: u64,
    /// Its place in `$all`.
    pub position: Position,
    /// When it was recorded.
    pub created: DateTime<Utc>,
}

/// What an append returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The revision of the last event appended: the expected revision of the next append.
    pub next_expected_revision: u64,
    /// The position of the last event appended.
    pub position: Position,
}

/// Where a stream read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFrom {
    /// The first event.
    Start,
    /// The last event (useful backwards).
    End,
    /// This revision, inclusive.
    Revision(u64),
}

/// Reading direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Ascending revisions.
    Forward,
    /// Descending revisions.
    Backward,
}

/// How to read a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStream {
    /// Where to start.
    pub from: StreamFrom,
    /// Which way to go.
    pub direction: Direction,
    /// At most this many events.
    pub max: usize,
}

impl ReadStream {
    /// The whole stream, forwards.
    pub fn forward() -> Self {
        Self {
            from: StreamFrom::Start,
            direction: Direction::Forward,
            max: usize::MAX,
        }
    }

    /// The whole stream, backwards from its last event.
    pub fn backward() -> Self {
        Self {
            from: StreamFrom::End,
            direction: Direction::Backward,
            max: usize::MAX,
        }
    }

    /// Starts at `from`.
    pub fn from(mut self, from: StreamFrom) -> Self {
        self.from = from;
        self
    }

    /// Reads at most `max` events.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }
}

/// Which events of `$all` a read or subscription wants. Prefixes are plain text (no wildcards).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Filter {
    /// Every event.
    #[default]
    All,
    /// Events whose stream name starts with one of these.
    StreamPrefix(Vec<String>),
    /// Events whose type starts with one of these.
    EventTypePrefix(Vec<String>),
    /// Events whose stream's category (the part before the first `-`) is one of these.
    Category(Vec<String>),
}

impl Filter {
    /// Whether an event of this stream and type passes the filter.
    pub fn matches(&self, stream: &str, event_type: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::StreamPrefix(p) => p.iter().any(|p| stream.starts_with(p.as_str())),
            Filter::EventTypePrefix(p) => p.iter().any(|p| event_type.starts_with(p.as_str())),
            Filter::Category(c) => {
                let cat = category_of(stream);
                c.iter().any(|c| c == cat)
            }
        }
    }
}

/// A page of `$all`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AllSlice {
    /// The events that passed the filter, in log order.
    pub events: Vec<RecordedEvent>,
    /// How many events of the log were examined (matching or not).
    pub scanned: usize,
    /// The position of the last event examined, or the `after` position when none was: reading
    /// again after it continues without skipping or repeating anything, even with a filter.
    pub next: Position,
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeFrom {
    /// The first event of the log.
    Start,
    /// Just after the last event recorded when the subscription starts.
    End,
    /// Just after this position (a checkpoint).
    After(Position),
}

/// What a subscription delivers.
#[derive(Clone, Debug, PartialEq)]
pub enum SubscriptionMessage {
    /// An event that passed the filter.
    Event(std::sync::Arc<RecordedEvent>),
    /// Every event up to this position has been examined; none of those not yet delivered passed
    /// the filter. Saving it as a checkpoint lets a sparse subscription restart without rescanning.
    Checkpoint(Position),
}

/// A stream's retention settings, enforced on stream reads. `$all` keeps every event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMetadata {
    /// Events older than this many seconds are no longer read.
    pub max_age: Option<u64>,
    /// Only the last this many events are read.
    pub max_count: Option<u64>,
    /// Events with a lower revision are no longer read.
    pub truncate_before: Option<u64>,
}

/// Input the store refuses. Nothing is written when an append carries any of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// The stream name is empty.
    #[error("the stream name is empty")]
    EmptyStreamName,
    /// The stream name is longer than 255 bytes.
    #[error("the stream name is {len} bytes long; at most {MAX_STREAM_NAME_LEN} are allowed")]
    StreamNameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The stream name starts with `$`.
    #[error("the stream name {name:?} starts with '$', which is reserved")]
    ReservedStreamName {
        /// The name given.
        name: String,
    },
    /// A control character in a name or type.
    #[error("the {field} contains a control character")]
    ControlCharacter {
        /// Which field.
        field: &'static str,
    },
    /// An append with no events.
    #[error("an append needs at least one event")]
    EmptyBatch,
    /// The event type is empty.
    #[error("event {index}: the event type is empty")]
    EmptyEventType {
        /// The event's index in the batch.
        index: usize,
    },
    /// The event type is longer than 255 bytes.
    #[error("event {index}: the event type is longer than {MAX_EVENT_TYPE_LEN} bytes")]
    EventTypeTooLong {
        /// The event's index in the batch.
        index: usize,
    },
    /// The event's data is not a JSON object.
    #[error("event {index}: the data must be a JSON object")]
    DataNotObject {
        /// The event's index in the batch.
        index: usize,
    },
    /// The event's metadata is not a JSON object.
    #[error("event {index}: the metadata must be a JSON object")]
    MetadataNotObject {
        /// The event's index in the batch.
        index: usize,
    },
    /// The event is larger than 1 MiB.
    #[error("event {index} is {size} bytes; at most {MAX_EVENT_SIZE} are allowed")]
    EventTooLarge {
        /// The event's index in the batch.
        index: usize,
        /// Its data and metadata, serialized, in bytes.
        size: usize,
    },
    /// Two events of one batch share an id.
    #[error("event id {event_id} appears twice in the batch")]
    DuplicateEventId {
        /// The repeated id.
        event_id: Uuid,
    },
}

/// The store's errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream is not where the writer expected it. `actual` is the revision of its last event,
    /// `None` when it has none (never written, or soft-deleted).
    #[error("stream {stream}: expected {expected}, but the stream is at {}", display_actual(.actual))]
    WrongExpectedRevision {
        /// The stream.
        stream: StreamName,
        /// What the writer expected.
        expected: ExpectedRevision,
        /// Where the stream really is.
        actual: Option<u64>,
    },
    /// The stream was tombstoned: it can never be read or written again.
    #[error("stream {stream} is deleted")]
    StreamDeleted {
        /// The stream.
        stream: StreamName,
    },
    /// The input was refused; nothing was written.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The backend failed (connection lost, database error…).
    #[error("event store backend failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn display_actual(actual: &Option<u64>) -> String {
    match actual {
        Some(r) => format!("revision {r}"),
        None => "no stream".to_owned(),
    }
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }

    /// Whether the backend could not be reached or the connection broke (see
    /// [`connection_lost`]): the operation may or may not have taken effect, and trying again
    /// later may succeed.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Self::Backend(e) => connection_lost(e.as_ref()),
            _ => false,
        }
    }
}

/// A lost connection to the event store's backend, for adapters that have no error of their
/// own for it (the in-memory adapter's injected failures).
#[derive(Debug, Clone, Copy, Default, thiserror::Error)]
#[error("the connection to the event store was lost")]
pub struct ConnectionLost;

/// Whether `e`, or an error it was caused by, is a database that cannot be reached now: a
/// refused, reset or timed-out connection, a pool with no connection to give, a server shutting
/// down or not accepting connections (SQLSTATE classes 08 and 57P, 53300, 55000). Not a refused query,
/// a broken constraint or a bug: those fail the same way when tried again.
pub fn connection_lost(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<ConnectionLost>() {
            return true;
        }
        if let Some(e) = e.downcast_ref::<sqlx::Error>()
            && sqlx_connection_lost(e)
        {
            return true;
        }
        if let Some(e) = e.downcast_ref::<std::io::Error>()
            && io_connection_lost(e)
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn sqlx_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => io_connection_lost(io),
        sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exceptions; 57P: the server shuts down, crashed or cannot take
        // connections now; 53300: too many connections; 55000 at connect: the database does
        // not accept connections (`ALLOW_CONNECTIONS false`, being dropped). Atelier's queries
        // raise 55000 nowhere else (it is also an undefined `currval`).
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300" || code == "55000"
        }),
        _ => false,
    }
}

fn io_connection_lost(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | UnexpectedEof
            | TimedOut
            | AddrNotAvailable
            | HostUnreachable
            | NetworkUnreachable
    )
}

/// Checks a batch before anything is written. Both adapters call it first.
pub fn validate_batch(events: &[EventData]) -> Result<(), InvalidInput> {
    if events.is_empty() {
        return Err(InvalidInput::EmptyBatch);
    }
    let mut ids = std::collections::HashSet::with_capacity(events.len());
    for (index, e) in events.iter().enumerate() {
        if e.event_type.is_empty() {
            return Err(InvalidInput::EmptyEventType { index });
        }
        if e.event_type.len() > MAX_EVENT_TYPE_LEN {
            return Err(InvalidInput::EventTypeTooLong { index });
        }
        if e.event_type.chars().any(char::is_control) {
            return Err(InvalidInput::ControlCharacter {
                field: "event type",
            });
        }
        if !e.data.is_object() {
            return Err(InvalidInput::DataNotObject { index });
        }
        if !e.metadata.is_object() {
            return Err(InvalidInput::MetadataNotObject { index });
        }
        let size = json_size(&e.data) + json_size(&e.metadata);
        if size > MAX_EVENT_SIZE {
            return Err(InvalidInput::EventTooLarge { index, size });
        }
        if !ids.insert(e.event_id) {
            return Err(InvalidInput::DuplicateEventId {
                event_id: e.event_id,
            });
        }
    }
    Ok(())
}

fn json_size(v: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    // Writing a Value into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_round_trips_through_its_text_form() {
        let p = Position::new(7421, 93);
        assert_eq!(p.to_string(), "7421-93");
        assert_eq!("7421-93".parse::<Position>().unwrap(), p);
        for bad in ["", "1", "1-", "-1", "a-1", "1-2-3", "+1-2", "1 -2"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn positions_order_by_commit_then_prepare() {
        assert!(Position::new(1, 9) < Position::new(2, 0));
        assert!(Position::new(2, 0) < Position::new(2, 1));
        assert!(Position::START < Position::new(1, 0));
    }

    #[test]
    fn stream_names_refuse_what_the_store_cannot_hold() {
        assert_eq!(StreamName::new(""), Err(InvalidInput::EmptyStreamName));
        assert_eq!(
            StreamName::new("x".repeat(256)),
            Err(InvalidInput::StreamNameTooLong { len: 256 })
        );
        assert!(StreamName::new("x".repeat(255)).is_ok());
        assert!(matches!(
            StreamName::new("a\nb"),
            Err(InvalidInput::ControlCharacter { .. })
        ));
        assert!(matches!(
            StreamName::new("$all"),
            Err(InvalidInput::ReservedStreamName { .. })
        ));
        assert_eq!(
            StreamName::new("project-1-2").unwrap().category(),
            "project"
        );
    }

    #[test]
    fn filters_match_prefixes_and_categories() {
        let f = Filter::Category(vec!["project".into()]);
        assert!(f.matches("project-1", "X"));
        assert!(!f.matches("projects-1", "X"));
        let f = Filter::StreamPrefix(vec!["proj%".into()]);
        assert!(!f.matches("project-1", "X"), "prefixes are not patterns");
        let f = Filter::EventTypePrefix(vec!["Build".into()]);
        assert!(f.matches("x", "BuildStarted"));
    }

    #[test]
    fn a_batch_with_bad_events_is_refused() {
        let ok = EventData::new("T", serde_json::json!({}));
        assert_eq!(validate_batch(&[]), Err(InvalidInput::EmptyBatch));
        assert!(validate_batch(std::slice::from_ref(&ok)).is_ok());
        let e = EventData::new("", serde_json::json!({}));
        assert_eq!(
            validate_batch(&[e]),
            Err(InvalidInput::EmptyEventType { index: 0 })
        );
        let e = EventData::new("T", serde_json::json!([1]));
        assert_eq!(
            validate_batch(&[ok.clone(), e]),
            Err(InvalidInput::DataNotObject { index: 1 })
        );
        let big = EventData::new("T", serde_json::json!({ "x": "y".repeat(MAX_EVENT_SIZE) }));
        assert!(matches!(
            validate_batch(&[big]),
            Err(InvalidInput::EventTooLarge { index: 0, .. })
        ));
        assert!(matches!(
            validate_batch(&[ok.clone(), ok]),
            Err(InvalidInput::DuplicateEventId { .. })
        ));
    }
}

#[cfg(test)]
mod connection_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the user failed")]
    struct Wrapper(#[source] sqlx::Error);

    #[test]
    fn a_lost_connection_is_recognized_through_the_errors_that_wrap_it() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(StoreError::backend(sqlx::Error::Io(refused)).is_connection_lost());
        assert!(StoreError::backend(sqlx::Error::PoolTimedOut).is_connection_lost());
        assert!(connection_lost(&Wrapper(sqlx::Error::PoolClosed)));
        assert!(StoreError::backend(ConnectionLost).is_connection_lost());
    }

    #[test]
    fn a_refused_query_or_a_bug_is_not_a_lost_connection() {
        assert!(!StoreError::backend(sqlx::Error::RowNotFound).is_connection_lost());
        assert!(!connection_lost(&Wrapper(sqlx::Error::ColumnNotFound(
            "x".into()
        ))));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!connection_lost(&denied));
        let conflict = StoreError::StreamDeleted {
            stream: StreamName::new("a-1").unwrap(),
        };
        assert!(!conflict.is_connection_lost());
    }
}
