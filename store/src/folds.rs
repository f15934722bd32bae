//! What callers folded from streams, kept per store so that the next command on a stream need
//! not read it again.
//!
//! The cache is a guess, never a truth: a value is the fold of a stream up to a revision, and
//! the only thing a caller may take from it without asking the store is an append that the
//! store accepts at exactly that revision (`ExpectedRevision::Exact`). Any other outcome
//! (a conflict, a refusal, nothing to do) must be decided again on a fresh read. So a stale
//! value (another process appended) costs a round trip, never a wrong decision. The store
//! forgets a stream's value itself when it deletes the stream or changes its retention, since
//! those change what a fresh fold would be without moving the revision.
//!
//! Values are type-erased: a stream belongs to one aggregate, and a value of another type reads
//! as absent.

use std::any::Any;
use std::sync::{Arc, RwLock};

use quick_cache::sync::Cache;

use crate::StreamName;

/// Streams kept at most by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Told of each stream this store wrote (see [`FoldCache::on_written`]).
type Listener = Box<dyn Fn(&StreamName) + Send + Sync>;

/// Folded values by stream, bounded (least recently used streams go first).
pub struct FoldCache {
    values: Cache<StreamName, Arc<dyn Any + Send + Sync>>,
    listeners: RwLock<Vec<Listener>>,
}

impl std::fmt::Debug for FoldCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldCache")
            .field("len", &self.values.len())
            .field("capacity", &self.values.capacity())
            .field(
                "listeners",
                &self
                    .listeners
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len(),
            )
            .finish()
    }
}

impl Default for FoldCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl FoldCache {
    /// A cache of at most `capacity` streams.
    pub fn new(capacity: usize) -> Self {
        Self {
            values: Cache::new(capacity.max(1)),
            listeners: RwLock::new(Vec::new()),
        }
    }

    /// Calls `listener` each time this store has written to a stream (an append committed, a
    /// stream deleted, its retention changed), before the write's caller gets the answer: a
    /// cache of its own that a listener marks stale is never trusted by a request that starts
    /// after the write was acknowledged. Writes by other processes are not seen here.
    pub fn on_written(&self, listener: impl Fn(&StreamName) + Send + Sync + 'static) {
        self.listeners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(listener));
    }

    /// Called by the store after it wrote to `stream`: forgets its fold and tells the
    /// listeners.
    pub fn written(&self, stream: &StreamName) {
        self.forget(stream);
        for listener in self
            .listeners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            listener(stream);
        }
    }

    /// The value kept for `stream`, if it is a `T`.
    pub fn get<T: Any + Send + Sync>(&self, stream: &StreamName) -> Option<Arc<T>> {
        self.values
            .get(stream)
            .and_then(|v| Arc::downcast::<T>(v).ok())
    }

    /// Keeps `value` for `stream`, replacing what was there.
    pub fn insert<T: Any + Send + Sync>(&self, stream: &StreamName, value: Arc<T>) {
        self.values.insert(stream.clone(), value);
    }

    /// Forgets `stream`.
    pub fn forget(&self, stream: &StreamName) {
        self.values.remove(stream);
    }

    /// How many streams are kept.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(s: &str) -> StreamName {
        StreamName::new(s).unwrap()
    }

    #[test]
    fn a_value_reads_back_as_its_own_type_and_as_absent_as_another() {
        let cache = FoldCache::new(8);
        cache.insert(&stream("project-1"), Arc::new((7u64, "x".to_owned())));
        let got = cache.get::<(u64, String)>(&stream("project-1")).unwrap();
        assert_eq!(*got, (7, "x".to_owned()));
        assert!(cache.get::<u64>(&stream("project-1")).is_none());
        assert!(cache.get::<(u64, String)>(&stream("project-2")).is_none());
    }

    #[test]
    fn a_forgotten_stream_reads_as_absent() {
        let cache = FoldCache::new(8);
        cache.insert(&stream("project-1"), Arc::new(1u64));
        cache.forget(&stream("project-1"));
        assert!(cache.get::<u64>(&stream("project-1")).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn a_write_forgets_the_stream_and_tells_every_listener() {
        let cache = FoldCache::new(8);
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = heard.clone();
        cache.on_written(move |s| h.lock().unwrap().push(s.to_string()));
        cache.insert(&stream("project-1"), Arc::new(1u64));
        cache.written(&stream("project-1"));
        assert!(cache.get::<u64>(&stream("project-1")).is_none());
        assert_eq!(*heard.lock().unwrap(), ["project-1"]);
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity() {
        let cache = FoldCache::new(4);
        for i in 0..100 {
            cache.insert(&stream(&format!("project-{i}")), Arc::new(i));
        }
        assert!(cache.len() <= 4, "{} kept", cache.len());
    }
}
