//! The hub: one subscription to `$all` for the whole server, fanned out to every live client.
//!
//! Each event is turned into its message once ([`FeedEvent`]); the hub then offers it to the
//! clients of the event's organization whose channels match, through each client's bounded
//! queue. A client whose queue is full is not waited for and never silently skipped: it is cut
//! off and flagged as lagged, and its session tells it where to resume.
//!
//! The offering happens in *lanes*, one per runtime thread that holds clients (each actix-web
//! worker): the hub hands every position of the log to each lane once, and the lane, a task on
//! its clients' own thread, puts the message in their queues. Waking a task of one's own thread
//! is a push on a local queue; waking one of another thread is a system call. With the hub
//! offering directly, 1,000 subscribers cost 1,000 cross-thread wake-ups per event, made by the
//! hub's one thread; with lanes they cost one per worker, and the matching is spread over the
//! workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

use atelier_store::{EventStore, Filter, Position, SubscribeFrom, SubscriptionMessage};
use futures::StreamExt;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, watch};
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
    /// Where lanes of clients registered outside a single-threaded runtime run.
    runtime: Handle,
}

struct State {
    /// Every event up to here has been handed to the lanes that existed at the time.
    position: Position,
    /// How many clients each organization has: events of the others are not built.
    listening: HashMap<Uuid, usize>,
    lanes: Vec<Lane>,
    next_id: u64,
}

/// Which lane a client joins: its thread's, on a single-threaded runtime (an actix-web
/// worker); otherwise one shared lane (a multi-threaded runtime moves tasks between threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneKey {
    Thread(ThreadId),
    Shared,
}

/// The hub's end of a lane.
struct Lane {
    key: LaneKey,
    tx: mpsc::UnboundedSender<Dispatch>,
    shared: Arc<LaneShared>,
}

/// What the hub hands a lane: every position of the log, with the message when an
/// organization with clients is concerned.
#[derive(Clone)]
enum Dispatch {
    Event(Arc<FeedEvent>),
    Advance(Position),
}

/// A lane's clients, and how far it has offered the log to them.
struct LaneShared {
    clients: Mutex<HashMap<Uuid, Vec<Slot>>>,
    /// Every event up to here has been offered to this lane's clients.
    offered: watch::Sender<Position>,
}

impl LaneShared {
    fn clients(&self) -> MutexGuard<'_, HashMap<Uuid, Vec<Slot>>> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `event` in the queue of each client of its organization whose channels match;
    /// cuts off those whose queue is full. How many it reached.
    fn offer(clients: &mut HashMap<Uuid, Vec<Slot>>, event: &Arc<FeedEvent>) -> u64 {
        let Some(org) = event.org_id else { return 0 };
        let Some(slots) = clients.get_mut(&org) else {
            return 0;
        };
        let position = event.position();
        let mut delivered = 0u64;
        slots.retain(|slot| {
            // Before the client joined: it has it from the log already.
            if position <= slot.after || !slot.channels.matches(event) {
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
            clients.remove(&org);
        }
        delivered
    }
}

/// A lane's task: takes what the hub handed it, in order, and offers it to its clients.
async fn run_lane(shared: Arc<LaneShared>, mut rx: mpsc::UnboundedReceiver<Dispatch>) {
    let mut batch = Vec::with_capacity(LANE_BATCH);
    while rx.recv_many(&mut batch, LANE_BATCH).await > 0 {
        let mut delivered = 0u64;
        let mut last = None;
        {
            let mut clients = shared.clients();
            for message in batch.drain(..) {
                last = Some(match message {
                    Dispatch::Event(event) => {
                        delivered += LaneShared::offer(&mut clients, &event);
                        event.position()
                    }
                    Dispatch::Advance(position) => position,
                });
            }
        }
        metrics::counter!(DELIVERED).increment(delivered);
        if let Some(position) = last {
            shared.offered.send_replace(position);
        }
    }
}

/// Messages a lane takes from its channel at once.
const LANE_BATCH: usize = 64;

struct Slot {
    id: u64,
    channels: Channels,
    tx: mpsc::Sender<Arc<FeedEvent>>,
    lagged: Arc<AtomicBool>,
    /// The hub's position when it joined.
    after: Position,
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
                    listening: HashMap::new(),
                    lanes: Vec::new(),
                    next_id: 0,
                }),
                dispatched: tokio::sync::watch::Sender::new(head),
                closing: tokio::sync::watch::Sender::new(false),
                revocations: tokio::sync::watch::Sender::new(Revocations::default()),
                store: store.clone(),
                settings,
                connections: AtomicUsize::new(0),
                frames: Arc::default(),
                runtime: Handle::current(),
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
            .unwrap_or_else(PoisonError::into_inner)
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

    /// Waits until the hub has dispatched `position` and every lane has offered it to its
    /// clients (false: not within `timeout`).
    pub async fn wait_for(&self, position: Position, timeout: std::time::Duration) -> bool {
        let mut rx = self.inner.dispatched.subscribe();
        tokio::time::timeout(timeout, async {
            if rx.wait_for(|p| *p >= position).await.is_err() {
                return false;
            }
            // Every lane there now was handed `position`; a lane made later starts past it.
            let lanes: Vec<_> = self
                .lock()
                .lanes
                .iter()
                .map(|lane| lane.shared.offered.subscribe())
                .collect();
            for mut lane in lanes {
                // An error: the lane ended (its runtime stopped), and its clients with it.
                let _ = lane.wait_for(|p| *p >= position).await;
            }
            true
        })
        .await
        .unwrap_or(false)
    }

    fn advance(&self, position: Position) -> Position {
        let mut state = self.lock();
        if position > state.position {
            state.position = position;
            Self::hand(&mut state, &Dispatch::Advance(position));
        }
        state.position
    }

    /// Hands `message` to every lane; forgets the lanes whose task ended.
    fn hand(state: &mut State, message: &Dispatch) {
        state
            .lanes
            .retain(|lane| lane.tx.send(message.clone()).is_ok());
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
        // The message is built only when someone of the event's organization listens.
        let event = org
            .filter(|org| state.listening.contains_key(org))
            .and_then(|_| FeedEvent::new(record));
        let message = match event {
            Some(event) => Dispatch::Event(event),
            None => Dispatch::Advance(position),
        };
        Self::hand(&mut state, &message);
        drop(state);
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
        let key = match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::CurrentThread => {
                LaneKey::Thread(std::thread::current().id())
            }
            _ => LaneKey::Shared,
        };
        let mut state = self.lock();
        if read.is_some_and(|read| state.position > read) {
            return None;
        }
        state.next_id += 1;
        let id = state.next_id;
        let position = state.position;
        let lane = match state.lanes.iter().find(|lane| lane.key == key) {
            Some(lane) => lane.shared.clone(),
            None => {
                let shared = Arc::new(LaneShared {
                    clients: Mutex::default(),
                    offered: watch::Sender::new(position),
                });
                let (lane_tx, lane_rx) = mpsc::unbounded_channel();
                let task = run_lane(shared.clone(), lane_rx);
                match key {
                    // On this thread's runtime: the thread of the clients it serves.
                    LaneKey::Thread(_) => drop(tokio::spawn(task)),
                    LaneKey::Shared => drop(self.inner.runtime.spawn(task)),
                }
                state.lanes.push(Lane {
                    key,
                    tx: lane_tx,
                    shared: shared.clone(),
                });
                shared
            }
        };
        // Under the hub's lock: everything dispatched from now on reaches the lane after this.
        lane.clients().entry(org).or_default().push(Slot {
            id,
            channels,
            tx,
            lagged: lagged.clone(),
            after: position,
        });
        *state.listening.entry(org).or_default() += 1;
        Some(Registration {
            hub: self.clone(),
            lane,
            org,
            id,
            rx,
            lagged,
            position,
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

    /// How many lanes serve the clients (one per runtime thread that registered some).
    pub fn lanes(&self) -> usize {
        self.lock().lanes.len()
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
    lane: Arc<LaneShared>,
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

    /// How far the log has been offered to it: every matching event up to here is in its
    /// queue or was taken from it.
    pub fn offered(&self) -> Position {
        *self.lane.offered.borrow()
    }

    /// Replaces its channels.
    pub fn set_channels(&self, channels: Channels) {
        if let Some(slot) = self
            .lane
            .clients()
            .get_mut(&self.org)
            .and_then(|slots| slots.iter_mut().find(|s| s.id == self.id))
        {
            slot.channels = channels;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        {
            let mut clients = self.lane.clients();
            if let Some(slots) = clients.get_mut(&self.org) {
                slots.retain(|s| s.id != self.id);
                if slots.is_empty() {
                    clients.remove(&self.org);
                }
            }
        }
        let mut state = self.hub.lock();
        if let Some(n) = state.listening.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                state.listening.remove(&self.org);
            }
        }
    }
}
