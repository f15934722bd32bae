//! The hub: one subscription to `$all` for the whole server, fanned out to every live client.
//!
//! Each event is turned into its message once ([`FeedEvent`]); the hub then offers it to the
//! clients of the event's organization whose channels match, through each client's bounded
//! queue. A client whose queue is full is not waited for and never silently skipped: it is cut
//! off and flagged as lagged, and its session tells it where to resume.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use atelier_store::{EventStore, Filter, Position, SubscribeFrom, SubscriptionMessage};
use futures::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::LiveSettings;
use super::channels::Channels;
use super::feed::FeedEvent;

/// Live connections open now.
pub const CONNECTIONS: &str = "atelier_live_connections";
/// Messages offered to live clients.
pub const DELIVERED: &str = "atelier_live_messages_total";
/// Clients cut off because they fell behind.
pub const LAGGED: &str = "atelier_live_lagged_total";
/// The position the hub has dispatched up to.
pub const HUB_POSITION_COMMIT: &str = "atelier_live_hub_position_commit";

/// An event that may withdraw live clients' right to their feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// A session ended (logout, refresh-token reuse).
    Session(Uuid),
    /// An API key was revoked.
    Key(Uuid),
    /// A user was deactivated, changed password or lost superadmin rights.
    User(Uuid),
    /// An organization's members or roles changed, or it was deactivated or deleted.
    Organization(Uuid),
}

/// The latest revocation, numbered: a connection that sees the number jump by more than one
/// missed some and checks itself anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revocations {
    /// How many there were.
    pub seq: u64,
    /// The last one.
    pub last: Option<Revoked>,
}

/// What an event revokes, if anything: the first answer of the contexts that judge it
/// ([`crate::contexts::Context::revokes`]).
fn revoked_by(record: &atelier_store::RecordedEvent) -> Option<Revoked> {
    crate::contexts::ALL
        .iter()
        .find_map(|c| (c.revokes)(record))
}

/// The server's single fan-out of the log to live clients.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("position", &self.position())
            .field("connections", &self.connections())
            .finish()
    }
}

struct Inner {
    state: Mutex<State>,
    /// The dispatched position, for those who wait for it.
    dispatched: tokio::sync::watch::Sender<Position>,
    /// Set when the server stops: every live connection closes.
    closing: tokio::sync::watch::Sender<bool>,
    /// Revocations seen in the log: the connections they concern check their credentials.
    revocations: tokio::sync::watch::Sender<Revocations>,
    store: Arc<dyn EventStore>,
    settings: LiveSettings,
    connections: AtomicUsize,
    /// Camera thumbnails, beside the log.
    frames: Arc<super::frames::Frames>,
}

struct State {
    /// Every event up to here has been offered to the clients registered at the time.
    position: Position,
    clients: HashMap<Uuid, Vec<Slot>>,
    next_id: u64,
}

struct Slot {
    id: u64,
    channels: Channels,
    tx: mpsc::Sender<Arc<FeedEvent>>,
    lagged: Arc<AtomicBool>,
}

impl Hub {
    /// Starts the hub at the head of the log: it follows everything appended from now on.
    pub async fn start(
        store: Arc<dyn EventStore>,
        settings: LiveSettings,
    ) -> Result<Self, atelier_store::StoreError> {
        let head = store.head().await?.unwrap_or(Position::START);
        let hub = Hub {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    position: head,
                    clients: HashMap::new(),
                    next_id: 0,
                }),
                dispatched: tokio::sync::watch::Sender::new(head),
                closing: tokio::sync::watch::Sender::new(false),
                revocations: tokio::sync::watch::Sender::new(Revocations::default()),
                store: store.clone(),
                settings,
                connections: AtomicUsize::new(0),
                frames: Arc::default(),
            }),
        };
        let mut subscription = store.subscribe_all(SubscribeFrom::After(head), Filter::All);
        let weak = Arc::downgrade(&hub.inner);
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let hub = Hub { inner };
                let position = match message {
                    SubscriptionMessage::Event(record) => hub.dispatch(record),
                    SubscriptionMessage::Checkpoint(position) => hub.advance(position),
                };
                hub.inner.dispatched.send_replace(position);
            }
        });
        Ok(hub)
    }

    /// The store the hub follows (sessions catch up from it).
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// Camera thumbnails for the clients that watch them.
    pub fn frames(&self) -> &Arc<super::frames::Frames> {
        &self.inner.frames
    }

    /// The settings.
    pub fn settings(&self) -> &LiveSettings {
        &self.inner.settings
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How far the hub has dispatched.
    pub fn position(&self) -> Position {
        self.lock().position
    }

    /// Closes every live connection (with 1001, "going away"), for a prompt graceful stop.
    pub fn close_all(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Resolves once [`Hub::close_all`] was called.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.closing.subscribe();
        async move {
            // An error means the hub itself is gone: closing too.
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    /// Follows the revocations the hub sees in the log.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<Revocations> {
        self.inner.revocations.subscribe()
    }

    /// Waits until the hub has dispatched `position` (false: not within `timeout`).
    pub async fn wait_for(&self, position: Position, timeout: std::time::Duration) -> bool {
        let mut rx = self.inner.dispatched.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn advance(&self, position: Position) -> Position {
        let mut state = self.lock();
        if position > state.position {
            state.position = position;
        }
        state.position
    }

    #[tracing::instrument(name = "live.dispatch", level = "debug", skip_all, fields(position = %record.position))]
    fn dispatch(&self, record: Arc<atelier_store::RecordedEvent>) -> Position {
        let position = record.position;
        if let Some(revoked) = revoked_by(&record) {
            self.inner.revocations.send_modify(|r| {
                r.seq += 1;
                r.last = Some(revoked);
            });
        }
        let org = super::feed::org_of(&record);
        let mut state = self.lock();
        state.position = position;
        // Nobody of its organization listens: nothing to build.
        let Some(org) = org else { return position };
        let Some(slots) = state.clients.get_mut(&org) else {
            return position;
        };
        let Some(event) = FeedEvent::new(record) else {
            return position;
        };
        let mut delivered = 0u64;
        slots.retain(|slot| {
            if !slot.channels.matches(&event) {
                return true;
            }
            match slot.tx.try_send(event.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Dropping the sender ends the client's queue; the flag says why.
                    slot.lagged.store(true, Ordering::Release);
                    metrics::counter!(LAGGED).increment(1);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if slots.is_empty() {
            state.clients.remove(&org);
        }
        drop(state);
        metrics::counter!(DELIVERED).increment(delivered);
        metrics::gauge!(HUB_POSITION_COMMIT).set(position.commit as f64);
        position
    }

    /// Registers a client of `org` with these channels: from now on, every event the hub
    /// dispatches that matches goes to its queue. Its `position` is the hub's at that moment:
    /// every later event is after it.
    pub fn register(&self, org: Uuid, channels: Channels) -> Registration {
        self.register_unless_past(org, channels, None)
            .expect("a registration without a bound always succeeds")
    }

    /// Registers a client that has read the log up to `read`, if the hub has not dispatched
    /// anything after it: then every event after `read` reaches the client, from the log or from
    /// its queue. `None`: the hub is further on; read up to it first.
    pub fn register_after(
        &self,
        org: Uuid,
        channels: Channels,
        read: Position,
    ) -> Option<Registration> {
        self.register_unless_past(org, channels, Some(read))
    }

    fn register_unless_past(
        &self,
        org: Uuid,
        channels: Channels,
        read: Option<Position>,
    ) -> Option<Registration> {
        let (tx, rx) = mpsc::channel(self.inner.settings.queue.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let mut state = self.lock();
        if read.is_some_and(|read| state.position > read) {
            return None;
        }
        state.next_id += 1;
        let id = state.next_id;
        state.clients.entry(org).or_default().push(Slot {
            id,
            channels,
            tx,
            lagged: lagged.clone(),
        });
        Some(Registration {
            hub: self.clone(),
            org,
            id,
            rx,
            lagged,
            position: state.position,
        })
    }

    /// Takes a connection slot, if fewer than the maximum are open.
    pub fn connect(&self) -> Option<ConnectionGuard> {
        let max = self.inner.settings.max_connections;
        let taken = self
            .inner
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(n) => {
                metrics::gauge!(CONNECTIONS).set((n + 1) as f64);
                Some(ConnectionGuard { hub: self.clone() })
            }
            Err(_) => None,
        }
    }

    /// Live connections open now.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Acquire)
    }
}

/// One open live connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionGuard {
    hub: Hub,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let n = self.hub.inner.connections.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(CONNECTIONS).set(n.saturating_sub(1) as f64);
    }
}

/// A client's place in the hub; dropping it leaves.
pub struct Registration {
    hub: Hub,
    org: Uuid,
    id: u64,
    rx: mpsc::Receiver<Arc<FeedEvent>>,
    lagged: Arc<AtomicBool>,
    /// The hub's position when the client joined: it receives the matching events after it.
    pub position: Position,
}

impl Registration {
    /// The next event of its queue; `None` once it was cut off (see [`Registration::lagged`])
    /// or the hub stopped.
    pub async fn recv(&mut self) -> Option<Arc<FeedEvent>> {
        self.rx.recv().await
    }

    /// The next event of its queue, if one is there.
    pub fn try_recv(&mut self) -> Result<Arc<FeedEvent>, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    /// Whether the hub cut it off for falling behind.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }

    /// Whether nothing is waiting in its queue.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Replaces its channels.
    pub fn set_channels(&self, channels: Channels) {
        let mut state = self.hub.lock();
        if let Some(slot) = state
            .clients
            .get_mut(&self.org)
            .and_then(|slots| slots.iter_mut().find(|s| s.id == self.id))
        {
            slot.channels = channels;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        if let Some(slots) = state.clients.get_mut(&self.org) {
            slots.retain(|s| s.id != self.id);
            if slots.is_empty() {
                state.clients.remove(&self.org);
            }
        }
    }
}
