//! Atelier's event store: the port every other layer writes to and reads from, and its adapters.
//!
//! The port mirrors KurrentDB: streams with optimistic concurrency ([`ExpectedRevision`]), a
//! global log (`$all`) totally ordered by [`Position`], reads in both directions, filtered reads
//! and catch-up subscriptions that switch to live without a gap, stream metadata (max age, max
//! count, truncate-before), soft delete and tombstones. The adapters are [`postgres::PgEventStore`]
//! (the default, on PostgreSQL) and [`memory::MemoryEventStore`] (for tests of the layers above);
//! both pass the same contract suite (`store/tests/contract.rs`). This crate carries JSON and
//! knows nothing of the domain.

pub mod archive;
pub mod folds;
pub mod memory;
mod payload;
pub mod postgres;
mod subscription;
pub mod testing;
mod types;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub use folds::FoldCache;
pub use payload::Payload;
pub use subscription::{LiveBatch, PAGE_SIZE};
pub use types::*;

/// A subscription: an endless, ordered stream of events (and checkpoints) that survives lost
/// connections. Dropping it ends it.
pub type Subscription = Pin<Box<dyn Stream<Item = SubscriptionMessage> + Send>>;

/// The event store port.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if the stream is at `expected`.
    ///
    /// Appends are idempotent by event id: the same batch appended again at the same place
    /// writes nothing and returns the first result; a batch that only partly matches events
    /// already in the stream is a [`StoreError::WrongExpectedRevision`].
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError>;

    /// Reads a stream. A stream that was never written (or was soft-deleted) reads as empty; a
    /// tombstoned one is [`StoreError::StreamDeleted`]. Retention metadata is applied.
    async fn read_stream(
        &self,
        stream: &StreamName,
        read: ReadStream,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads `$all` forwards, strictly after `after`, examining at most `max` events. Only
    /// events that can no longer be preceded by a later commit are returned.
    async fn read_all(
        &self,
        after: Position,
        max: usize,
        filter: &Filter,
    ) -> Result<AllSlice, StoreError>;

    /// The position of the last event readable in `$all`, if any.
    async fn head(&self) -> Result<Option<Position>, StoreError>;

    /// Subscribes to `$all`: catches up from the log, then follows live, as one ordered stream
    /// with no gap and no repetition, resuming by itself after lost connections.
    fn subscribe_all(&self, from: SubscribeFrom, filter: Filter) -> Subscription;

    /// The stream's retention settings.
    async fn stream_metadata(&self, stream: &StreamName) -> Result<StreamMetadata, StoreError>;

    /// Replaces the stream's retention settings.
    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), StoreError>;

    /// Soft-deletes a stream: it reads as empty and `NoStream` appends succeed again; revisions
    /// continue after the old ones. Its events stay in `$all`.
    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), StoreError>;

    /// Tombstones a stream: it can never be read or written again. Its events stay in `$all`.
    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), StoreError>;

    /// The folds callers keep of this store's streams ([`FoldCache`]), if it keeps any. The
    /// store forgets a stream there when it deletes it or changes its retention.
    fn folds(&self) -> Option<&FoldCache> {
        None
    }

    /// The revision of the last event appended to each stream, in order (`None`: never
    /// written), for callers that keep streams folded and only need to know whether they moved.
    /// Adapters that can answer for all the streams in one round trip should; this default
    /// reads each stream's last event.
    async fn last_revisions(&self, streams: &[StreamName]) -> Result<Vec<Option<u64>>, StoreError> {
        let mut out = Vec::with_capacity(streams.len());
        for stream in streams {
            let last = self
                .read_stream(stream, ReadStream::backward().max(1))
                .await?;
            out.push(last.first().map(|e| e.revision));
        }
        Ok(out)
    }
}

/// Whether a stream whose apparent last revision is `actual` satisfies `expected`.
pub(crate) fn expectation_holds(expected: ExpectedRevision, actual: Option<u64>) -> bool {
    match expected {
        ExpectedRevision::Any => true,
        ExpectedRevision::NoStream => actual.is_none(),
        ExpectedRevision::StreamExists => actual.is_some(),
        ExpectedRevision::Exact(n) => actual == Some(n),
    }
}
