//! The in-memory adapter, for tests of everything above the store.
//!
//! It keeps the PostgreSQL adapter's model, not just its answers: every append is a transaction
//! with an id taken from a counter, its events are positioned `(transaction id, sequence)`, and
//! `$all` is readable only below the oldest transaction still open. Tests can hold an append open
//! on purpose ([`MemoryEventStore::begin_append`]) and make reads and appends fail
//! ([`MemoryEventStore::fail_next_reads`], [`MemoryEventStore::fail_next_appends`],
//! [`MemoryEventStore::lose_next_append_acks`]), so the contract suite exercises the same out-of-order
//! and lost-connection cases on both adapters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Notify, broadcast};

use crate::subscription::{self, LiveBatch, Source};
use crate::{
    AllSlice, AppendResult, Direction, EventData, EventStore, ExpectedRevision, Filter, Position,
    ReadStream, RecordedEvent, StoreError, StreamFrom, StreamMetadata, StreamName, SubscribeFrom,
    Subscription, expectation_holds, validate_batch,
};

/// An event store in memory. Cloning it shares the same store.
#[derive(Clone)]
pub struct MemoryEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    live: broadcast::Sender<Arc<LiveBatch>>,
    /// Signalled when a held append ends and releases its stream.
    released: Notify,
    failing_reads: AtomicUsize,
    failing_stream_reads: AtomicUsize,
    failing_appends: AtomicUsize,
    lost_acks: AtomicUsize,
    folds: crate::FoldCache,
}

struct State {
    next_xid: u64,
    next_prepare: u64,
    running: BTreeSet<u64>,
    log: BTreeMap<Position, Arc<RecordedEvent>>,
    published: Position,
    streams: HashMap<String, MemStream>,
}

#[derive(Default)]
struct MemStream {
    /// Revision of the last event ever written, deleted or not.
    last: Option<u64>,
    last_commit: u64,
    deleted: bool,
    tombstoned: bool,
    meta: StreamMetadata,
    /// Indexed by revision.
    events: Vec<Arc<RecordedEvent>>,
    /// The held append that has this stream locked.
    locked_by: Option<u64>,
}

impl MemStream {
    /// The revision expectations are checked against: none once soft-deleted.
    fn apparent(&self) -> Option<u64> {
        if self.deleted { None } else { self.last }
    }

    fn visible_from(&self) -> u64 {
        let mut lo = self.meta.truncate_before.unwrap_or(0);
        if let (Some(max), Some(last)) = (self.meta.max_count, self.last) {
            lo = lo.max((last + 1).saturating_sub(max));
        }
        lo
    }
}

enum Prepared {
    Retry(AppendResult),
    Write(Vec<RecordedEvent>),
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    next_xid: 3,
                    next_prepare: 1,
                    running: BTreeSet::new(),
                    log: BTreeMap::new(),
                    published: Position::START,
                    streams: HashMap::new(),
                }),
                live,
                released: Notify::new(),
                failing_reads: AtomicUsize::new(0),
                failing_stream_reads: AtomicUsize::new(0),
                failing_appends: AtomicUsize::new(0),
                lost_acks: AtomicUsize::new(0),
                folds: crate::FoldCache::default(),
            }),
        }
    }

    /// The next `n` reads of `$all` (and of the head) fail as a lost connection would.
    pub fn fail_next_reads(&self, n: usize) {
        self.inner.failing_reads.store(n, Ordering::SeqCst);
    }

    /// The next `n` reads of streams fail as a lost connection would.
    pub fn fail_next_stream_reads(&self, n: usize) {
        self.inner.failing_stream_reads.store(n, Ordering::SeqCst);
    }

    /// The next `n` appends fail as a connection lost before the commit would: nothing is
    /// written.
    pub fn fail_next_appends(&self, n: usize) {
        self.inner.failing_appends.store(n, Ordering::SeqCst);
    }

    /// The next `n` appends commit, then fail as a connection lost before the answer arrived
    /// would: written, but the writer does not know it.
    pub fn lose_next_append_acks(&self, n: usize) {
        self.inner.lost_acks.store(n, Ordering::SeqCst);
    }

    /// Starts an append and holds its transaction open until [`HeldAppend::commit`] (or
    /// rollback on drop): its events take their place in `$all` now but are invisible, and hold
    /// back every later event, until then. For tests.
    pub async fn begin_append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<HeldAppend, StoreError> {
        validate_batch(&events)?;
        let mut st = self.lock_stream(stream).await;
        let xid = st.begin();
        match st.prepare(stream, expected, events, xid) {
            Ok(Prepared::Write(events)) => {
                st.streams
                    .get_mut(stream.as_str())
                    .expect("prepared streams exist")
                    .locked_by = Some(xid);
                let last = events.last().expect("batches are not empty");
                let result = AppendResult {
                    next_expected_revision: last.revision,
                    position: last.position,
                };
                Ok(HeldAppend {
                    store: self.clone(),
                    xid,
                    stream: stream.clone(),
                    events: Some(events),
                    result,
                })
            }
            Ok(Prepared::Retry(_)) => {
                st.end(xid);
                drop(st);
                Err(StoreError::Backend(
                    "begin_append is for new events, not retries".into(),
                ))
            }
            Err(e) => {
                st.end(xid);
                self.publish(&mut st);
                Err(e)
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the state once no held append has `stream` locked.
    async fn lock_stream(&self, stream: &StreamName) -> MutexGuard<'_, State> {
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let st = self.state();
                let locked = st
                    .streams
                    .get(stream.as_str())
                    .is_some_and(|s| s.locked_by.is_some());
                if !locked {
                    return st;
                }
            }
            released.await;
        }
    }

    fn publish(&self, st: &mut State) {
        let watermark = st.watermark();
        let events: Vec<_> = st
            .log
            .range((Bound::Excluded(st.published), Bound::Unbounded))
            .take_while(|(p, _)| p.commit < watermark)
            .map(|(_, e)| e.clone())
            .collect();
        if let Some(last) = events.last() {
            let after = st.published;
            st.published = last.position;
            // No receiver is not an error: nobody is subscribed.
            let _ = self.inner.live.send(Arc::new(LiveBatch { after, events }));
        }
    }

    fn check_reads(&self) -> Result<(), StoreError> {
        if take_one(&self.inner.failing_reads) {
            return Err(StoreError::backend(crate::ConnectionLost));
        }
        Ok(())
    }
}

/// Takes one from a counter of injected failures, if it is not at zero.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl State {
    fn begin(&mut self) -> u64 {
        let xid = self.next_xid;
        self.next_xid += 1;
        self.running.insert(xid);
        xid
    }

    fn end(&mut self, xid: u64) {
        self.running.remove(&xid);
    }

    fn watermark(&self) -> u64 {
        self.running.first().copied().unwrap_or(self.next_xid)
    }

    fn prepare(
        &mut self,
        name: &StreamName,
        expected: ExpectedRevision,
        events: Vec<EventData>,
        xid: u64,
    ) -> Result<Prepared, StoreError> {
        let stream = self.streams.entry(name.as_str().to_owned()).or_default();
        if stream.tombstoned {
            return Err(StoreError::StreamDeleted {
                stream: name.clone(),
            });
        }
        debug_assert!(stream.last_commit < xid, "appends run in transaction order");
        let actual = stream.apparent();
        let wrong = || StoreError::WrongExpectedRevision {
            stream: name.clone(),
            expected,
            actual,
        };
        // Idempotency, by KurrentDB's rules: the same ids at the same place are a retry.
        let found: Vec<_> = stream
            .events
            .iter()
            .filter(|e| events.iter().any(|n| n.event_id == e.event_id))
            .collect();
        if !found.is_empty() {
            let first = found[0].revision;
            let same_batch =
                found.len() == events.len()
                    && found.iter().zip(&events).enumerate().all(|(i, (f, n))| {
                        f.event_id == n.event_id && f.revision == first + i as u64
                    });
            let same_place = match expected {
                ExpectedRevision::Any | ExpectedRevision::StreamExists => true,
                ExpectedRevision::NoStream => first == stream.meta.truncate_before.unwrap_or(0),
                ExpectedRevision::Exact(n) => first == n + 1,
            };
            if same_batch && same_place {
                let last = found.last().expect("not empty");
                return Ok(Prepared::Retry(AppendResult {
                    next_expected_revision: last.revision,
                    position: last.position,
                }));
            }
            return Err(wrong());
        }
        if !expectation_holds(expected, actual) {
            return Err(wrong());
        }
        let first = stream.last.map_or(0, |r| r + 1);
        let created = Utc::now();
        let mut out = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let prepare = self.next_prepare;
            self.next_prepare += 1;
            out.push(RecordedEvent {
                event_id: e.event_id,
                event_type: e.event_type,
                data: e.data.into(),
                metadata: e.metadata.into(),
                stream: name.clone(),
                revision: first + i as u64,
                position: Position::new(xid, prepare),
                created,
            });
        }
        Ok(Prepared::Write(out))
    }

    fn commit(&mut self, xid: u64, events: Vec<RecordedEvent>) -> AppendResult {
        let last = events.last().expect("batches are not empty");
        let result = AppendResult {
            next_expected_revision: last.revision,
            position: last.position,
        };
        let stream = self
            .streams
            .get_mut(last.stream.as_str())
            .expect("prepared streams exist");
        stream.last = Some(last.revision);
        stream.last_commit = xid;
        stream.deleted = false;
        for e in events {
            let e = Arc::new(e);
            stream.events.push(e.clone());
            self.log.insert(e.position, e);
        }
        self.end(xid);
        result
    }

    fn stream(&self, name: &StreamName) -> Result<Option<&MemStream>, StoreError> {
        match self.streams.get(name.as_str()) {
            Some(s) if s.tombstoned => Err(StoreError::StreamDeleted {
                stream: name.clone(),
            }),
            other => Ok(other),
        }
    }
}

/// An append whose transaction is held open (see [`MemoryEventStore::begin_append`]).
pub struct HeldAppend {
    store: MemoryEventStore,
    xid: u64,
    stream: StreamName,
    events: Option<Vec<RecordedEvent>>,
    result: AppendResult,
}

impl HeldAppend {
    /// Where the events will be once committed.
    pub fn result(&self) -> AppendResult {
        self.result
    }

    /// Commits the held append.
    pub fn commit(mut self) -> AppendResult {
        let events = self.events.take().expect("committed once");
        let store = self.store.clone();
        let mut st = store.state();
        let result = st.commit(self.xid, events);
        self.release(&mut st);
        store.publish(&mut st);
        drop(st);
        store.inner.folds.written(&self.stream);
        result
    }

    fn release(&self, st: &mut State) {
        if let Some(s) = st.streams.get_mut(self.stream.as_str()) {
            s.locked_by = None;
        }
        st.end(self.xid);
        self.store.inner.released.notify_waiters();
    }
}

impl Drop for HeldAppend {
    fn drop(&mut self) {
        if self.events.take().is_some() {
            let store = self.store.clone();
            let mut st = store.state();
            self.release(&mut st);
            store.publish(&mut st);
        }
    }
}

impl Source for MemoryEventStore {
    fn live(&self) -> broadcast::Receiver<Arc<LiveBatch>> {
        self.inner.live.subscribe()
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        validate_batch(&events)?;
        if take_one(&self.inner.failing_appends) {
            return Err(StoreError::backend(crate::ConnectionLost));
        }
        let mut st = self.lock_stream(stream).await;
        let xid = st.begin();
        let result = match st.prepare(stream, expected, events, xid) {
            Ok(Prepared::Write(events)) => Ok(st.commit(xid, events)),
            Ok(Prepared::Retry(r)) => {
                st.end(xid);
                Ok(r)
            }
            Err(e) => {
                st.end(xid);
                Err(e)
            }
        };
        self.publish(&mut st);
        drop(st);
        if result.is_ok() {
            self.inner.folds.written(stream);
        }
        if result.is_ok() && take_one(&self.inner.lost_acks) {
            return Err(StoreError::backend(crate::ConnectionLost));
        }
        result
    }

    async fn read_stream(
        &self,
        name: &StreamName,
        read: ReadStream,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if take_one(&self.inner.failing_stream_reads) {
            return Err(StoreError::backend(crate::ConnectionLost));
        }
        let st = self.state();
        let Some(stream) = st.stream(name)? else {
            return Ok(Vec::new());
        };
        let Some(last) = stream.last else {
            return Ok(Vec::new());
        };
        let lo = stream.visible_from();
        let now = Utc::now();
        let fresh = |e: &&Arc<RecordedEvent>| match stream.meta.max_age {
            Some(age) => {
                (now - e.created).num_microseconds().unwrap_or(i64::MAX) < age as i64 * 1_000_000
            }
            None => true,
        };
        let out: Vec<RecordedEvent> = match read.direction {
            Direction::Forward => {
                let from = match read.from {
                    StreamFrom::Start => 0,
                    StreamFrom::End => last,
                    StreamFrom::Revision(r) => r,
                }
                .max(lo);
                stream
                    .events
                    .iter()
                    .skip(usize::try_from(from).unwrap_or(usize::MAX))
                    .filter(fresh)
                    .take(read.max)
                    .map(|e| (**e).clone())
                    .collect()
            }
            Direction::Backward => {
                let from = match read.from {
                    StreamFrom::Start => 0,
                    StreamFrom::End => last,
                    StreamFrom::Revision(r) => r.min(last),
                };
                if from < lo {
                    return Ok(Vec::new());
                }
                stream.events[lo as usize..=from as usize]
                    .iter()
                    .rev()
                    .filter(fresh)
                    .take(read.max)
                    .map(|e| (**e).clone())
                    .collect()
            }
        };
        Ok(out)
    }

    async fn read_all(
        &self,
        after: Position,
        max: usize,
        filter: &Filter,
    ) -> Result<AllSlice, StoreError> {
        self.check_reads()?;
        let st = self.state();
        let watermark = st.watermark();
        let mut slice = AllSlice {
            next: after,
            ..AllSlice::default()
        };
        for (pos, e) in st
            .log
            .range((Bound::Excluded(after), Bound::Unbounded))
            .take_while(|(p, _)| p.commit < watermark)
            .take(max)
        {
            slice.scanned += 1;
            slice.next = *pos;
            if filter.matches(e.stream.as_str(), &e.event_type) {
                slice.events.push((**e).clone());
            }
        }
        Ok(slice)
    }

    async fn head(&self) -> Result<Option<Position>, StoreError> {
        self.check_reads()?;
        let st = self.state();
        let watermark = st.watermark();
        Ok(st.log.keys().rev().find(|p| p.commit < watermark).copied())
    }

    fn subscribe_all(&self, from: SubscribeFrom, filter: Filter) -> Subscription {
        subscription::subscribe(self.clone(), from, filter)
    }

    async fn stream_metadata(&self, name: &StreamName) -> Result<StreamMetadata, StoreError> {
        let st = self.state();
        Ok(st.stream(name)?.map(|s| s.meta).unwrap_or_default())
    }

    async fn set_stream_metadata(
        &self,
        name: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), StoreError> {
        let mut st = self.lock_stream(name).await;
        st.stream(name)?;
        st.streams.entry(name.as_str().to_owned()).or_default().meta = metadata;
        drop(st);
        self.inner.folds.written(name);
        Ok(())
    }

    async fn delete_stream(
        &self,
        name: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), StoreError> {
        self.remove(name, expected, false).await?;
        self.inner.folds.written(name);
        Ok(())
    }

    async fn tombstone_stream(
        &self,
        name: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), StoreError> {
        self.remove(name, expected, true).await?;
        self.inner.folds.written(name);
        Ok(())
    }

    fn folds(&self) -> Option<&crate::FoldCache> {
        Some(&self.inner.folds)
    }
}

impl MemoryEventStore {
    async fn remove(
        &self,
        name: &StreamName,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<(), StoreError> {
        let mut st = self.lock_stream(name).await;
        st.stream(name)?;
        let stream = st.streams.entry(name.as_str().to_owned()).or_default();
        let actual = stream.apparent();
        if !expectation_holds(expected, actual) {
            return Err(StoreError::WrongExpectedRevision {
                stream: name.clone(),
                expected,
                actual,
            });
        }
        stream.deleted = true;
        stream.tombstoned |= tombstone;
        stream.meta.truncate_before = Some(stream.last.map_or(0, |r| r + 1));
        Ok(())
    }
}
