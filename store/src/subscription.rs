//! The catch-up-then-live subscription, shared by every adapter.
//!
//! An adapter provides two things: `read_all` (the log as the database has it) and a bounded
//! broadcast of [`LiveBatch`]es published by one tailer per process, each batch covering a
//! contiguous range of the log. A subscription reads the log from its own position until it is
//! caught up, then follows the broadcast; when it sees a gap (a batch starting after its position)
//! or falls behind (the broadcast lagged), it goes back to reading the log. Backend errors are
//! retried with a backoff from the last position delivered, so a lost connection costs nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};

use crate::{
    EventStore, Filter, Position, RecordedEvent, SubscribeFrom, Subscription, SubscriptionMessage,
};

/// How many events one read of the log examines during catch-up.
pub const PAGE_SIZE: usize = 1000;

/// How many messages a subscription buffers for a slow consumer before it waits.
const BUFFER: usize = 256;

/// A contiguous range of the log, published live by an adapter's tailer: every event after
/// `after` up to and including `events.last()`.
#[derive(Debug)]
pub struct LiveBatch {
    /// The position the range starts after.
    pub after: Position,
    /// The events, in log order (never empty).
    pub events: Vec<Arc<RecordedEvent>>,
}

/// What an adapter gives the shared subscription.
pub(crate) trait Source: EventStore + Clone {
    /// A receiver of the live broadcast, subscribed now.
    fn live(&self) -> broadcast::Receiver<Arc<LiveBatch>>;
}

/// Starts a subscription task and returns its stream.
pub(crate) fn subscribe<S: Source>(source: S, from: SubscribeFrom, filter: Filter) -> Subscription {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(run(source, from, filter, tx));
    Box::pin(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<SubscriptionMessage>,
) -> impl futures::Stream<Item = SubscriptionMessage> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

struct Cursor {
    tx: mpsc::Sender<SubscriptionMessage>,
    filter: Filter,
    /// Every event up to here has been examined.
    pos: Position,
    /// Events examined and not delivered since the last message.
    skipped: usize,
}

/// The consumer is gone.
struct Closed;

impl Cursor {
    async fn deliver(&mut self, event: Arc<RecordedEvent>) -> Result<(), Closed> {
        self.pos = event.position;
        self.skipped = 0;
        self.tx
            .send(SubscriptionMessage::Event(event))
            .await
            .map_err(|_| Closed)
    }

    fn skip(&mut self, position: Position) {
        self.pos = position;
        self.skipped += 1;
    }

    /// Tells the consumer how far it has come when many events were passed over (or `force`
    /// and any were), so sparse subscriptions can checkpoint.
    async fn checkpoint(&mut self, force: bool) -> Result<(), Closed> {
        if self.skipped >= PAGE_SIZE || (force && self.skipped > 0) {
            self.skipped = 0;
            self.tx
                .send(SubscriptionMessage::Checkpoint(self.pos))
                .await
                .map_err(|_| Closed)?;
        }
        Ok(())
    }
}

async fn run<S: Source>(
    source: S,
    from: SubscribeFrom,
    filter: Filter,
    tx: mpsc::Sender<SubscriptionMessage>,
) {
    let mut backoff = Backoff::default();
    let start = match from {
        SubscribeFrom::Start => Position::START,
        SubscribeFrom::After(p) => p,
        SubscribeFrom::End => loop {
            match source.head().await {
                Ok(head) => break head.unwrap_or(Position::START),
                Err(e) => {
                    warn!(error = %e, "subscription: reading the head failed; retrying");
                    if tx.is_closed() {
                        return;
                    }
                    backoff.wait().await;
                }
            }
        },
    };
    let mut cursor = Cursor {
        tx,
        filter,
        pos: start,
        skipped: 0,
    };
    let _ = follow(&source, &mut cursor, &mut backoff).await;
}

async fn follow<S: Source>(
    source: &S,
    cursor: &mut Cursor,
    backoff: &mut Backoff,
) -> Result<(), Closed> {
    loop {
        // Subscribe before the last read of the log, so nothing published after it is missed.
        let mut live = source.live();
        catch_up(source, cursor, backoff).await?;
        loop {
            let batch = tokio::select! {
                _ = cursor.tx.closed() => return Err(Closed),
                batch = live.recv() => batch,
            };
            match batch {
                Ok(batch) => {
                    if batch.after > cursor.pos {
                        debug!(after = %batch.after, pos = %cursor.pos, "subscription: gap; catching up");
                        break;
                    }
                    for event in &batch.events {
                        if event.position <= cursor.pos {
                            continue;
                        }
                        if cursor
                            .filter
                            .matches(event.stream.as_str(), &event.event_type)
                        {
                            cursor.deliver(event.clone()).await?;
                        } else {
                            cursor.skip(event.position);
                        }
                    }
                    cursor.checkpoint(false).await?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    debug!(
                        missed = n,
                        "subscription: fell behind the live feed; catching up"
                    );
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Closed),
            }
        }
    }
}

async fn catch_up<S: Source>(
    source: &S,
    cursor: &mut Cursor,
    backoff: &mut Backoff,
) -> Result<(), Closed> {
    loop {
        match source.read_all(cursor.pos, PAGE_SIZE, &cursor.filter).await {
            Ok(slice) => {
                backoff.reset();
                let matched = slice.events.len();
                for event in slice.events {
                    cursor.deliver(Arc::new(event)).await?;
                }
                if slice.next > cursor.pos {
                    cursor.pos = slice.next;
                    cursor.skipped += slice.scanned.saturating_sub(matched).max(1);
                }
                let caught_up = slice.scanned < PAGE_SIZE;
                cursor.checkpoint(caught_up).await?;
                if caught_up {
                    return Ok(());
                }
            }
            Err(e) => {
                warn!(error = %e, pos = %cursor.pos, "subscription: reading the log failed; retrying");
                if cursor.tx.is_closed() {
                    return Err(Closed);
                }
                backoff.wait().await;
            }
        }
    }
}

/// Exponential backoff from 20 ms to 2 s.
#[derive(Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(crate) async fn wait(&mut self) {
        let ms = 20u64.saturating_mul(1 << self.attempt.min(7)).min(2000);
        self.attempt += 1;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}
