//! A live client's cursor, the same for WebSocket and SSE: its channels, where it is in the log,
//! and the switch from catching up (reading the log) to live (the hub's queue) with no gap and
//! no duplicate at the seam.
//!
//! Catching up reads pages of the log after the client's position; after each page it asks the
//! hub to register it, which the hub does only if it has not dispatched anything after what was
//! read (under the lock that dispatching takes). From then on the queue brings everything after
//! the hub's position, and anything at or before the last position sent is dropped. So every
//! event is sent once, in log order, whatever the hub did meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;

use atelier_store::{Filter, PAGE_SIZE, Position, StoreError};
use uuid::Uuid;

use super::channels::{Channel, Channels};
use super::feed::FeedEvent;
use super::hub::{Hub, Registration};

/// What the client gets next.
#[derive(Debug)]
pub enum Next {
    /// An event to send.
    Event(Arc<FeedEvent>),
    /// The client fell behind its queue and was cut off: it should resume after this position.
    Lagged(Position),
    /// The log could not be read while catching up.
    Failed(StoreError),
    /// The hub is gone (the server is stopping).
    Stopped,
}

/// Too many channels on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("at most {max} channels per connection")]
pub struct TooManyChannels {
    /// The limit.
    pub max: usize,
}

enum State {
    /// No channel yet: nothing to send.
    Idle,
    /// Reading the log.
    CatchingUp {
        /// Every event up to here has been read.
        read: Position,
        /// Read and not sent yet.
        buffer: VecDeque<Arc<FeedEvent>>,
    },
    /// Following the hub.
    Live(Registration),
}

/// A client's subscription to the live feed.
pub struct Session {
    hub: Hub,
    org: Uuid,
    channels: Channels,
    /// Every event up to here was sent or did not concern the client.
    last: Position,
    /// Where to start when the first channel comes.
    start_from: Option<Position>,
    state: State,
}

impl Session {
    /// A session of a client of `org`, with no channel yet.
    pub fn new(hub: Hub, org: Uuid) -> Self {
        Self {
            hub,
            org,
            channels: Channels::new(),
            last: Position::START,
            start_from: None,
            state: State::Idle,
        }
    }

    /// Its channels.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// Sets where the first subscription starts (a connection's `from_position` or SSE's
    /// `Last-Event-ID`), when no channel is there yet.
    pub fn start_after(&mut self, position: Option<Position>) {
        self.start_from = position;
    }

    /// Adds channels. With `from`, the whole connection goes back to that position: every event
    /// after it on any of its channels is sent again, in order. Without, the first channels start
    /// where [`Session::start_after`] said (or now), later ones from now.
    pub fn subscribe(
        &mut self,
        channels: Vec<Channel>,
        from: Option<Position>,
    ) -> Result<(), TooManyChannels> {
        let mut next = self.channels.clone();
        next.add(channels);
        let max = self.hub.settings().max_channels;
        if next.len() > max {
            return Err(TooManyChannels { max });
        }
        self.channels = next;
        match (&self.state, from) {
            (_, Some(from)) => self.restart(Some(from)),
            (State::Idle, None) => {
                if !self.channels.is_empty() {
                    let from = self.start_from.take();
                    self.restart(from);
                }
            }
            (_, None) => self.update_registration(),
        }
        Ok(())
    }

    /// Removes channels.
    pub fn unsubscribe(&mut self, channels: &[Channel]) {
        self.channels.remove(channels);
        self.update_registration();
    }

    fn update_registration(&self) {
        if let State::Live(registration) = &self.state {
            registration.set_channels(self.channels.clone());
        }
    }

    fn restart(&mut self, from: Option<Position>) {
        // Leave the hub first, so the old queue stops filling.
        self.state = State::Idle;
        match from {
            Some(from) => {
                self.last = from;
                self.state = State::CatchingUp {
                    read: from,
                    buffer: VecDeque::new(),
                };
            }
            None => {
                let registration = self.hub.register(self.org, self.channels.clone());
                self.last = registration.position;
                self.state = State::Live(registration);
            }
        }
    }

    /// Where the client is: every event up to here was sent or does not concern it (`None`
    /// before its first subscription). Following the hub, an empty queue means it is as far as
    /// the hub, which lets heartbeats carry a resumable position on quiet channels.
    pub fn position(&mut self) -> Option<Position> {
        match &self.state {
            State::Idle => None,
            State::CatchingUp { .. } => Some(self.last),
            State::Live(registration) => {
                let hub = self.hub.position();
                if registration.is_empty() && !registration.lagged() && hub > self.last {
                    self.last = hub;
                }
                Some(self.last)
            }
        }
    }

    /// What is next if it is there already (following the hub: its queue), without waiting.
    pub fn try_next(&mut self) -> Option<Next> {
        let State::Live(registration) = &mut self.state else {
            return None;
        };
        loop {
            if registration.lagged() {
                return Some(Next::Lagged(self.last));
            }
            match registration.try_recv() {
                Ok(event) => {
                    if event.position() <= self.last || !self.channels.matches(&event) {
                        continue;
                    }
                    self.last = event.position();
                    return Some(Next::Event(event));
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return None,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    return Some(if registration.lagged() {
                        Next::Lagged(self.last)
                    } else {
                        Next::Stopped
                    });
                }
            }
        }
    }

    /// The next thing to tell the client. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Next {
        loop {
            match &mut self.state {
                State::Idle => std::future::pending::<()>().await,
                State::CatchingUp { read, buffer } => {
                    if let Some(event) = buffer.pop_front() {
                        self.last = self.last.max(event.position());
                        return Next::Event(event);
                    }
                    self.last = self.last.max(*read);
                    // Read up to the hub: join it, unless it dispatched more meanwhile.
                    if let Some(registration) =
                        self.hub
                            .register_after(self.org, self.channels.clone(), *read)
                    {
                        self.state = State::Live(registration);
                        continue;
                    }
                    let slice = match self
                        .hub
                        .store()
                        .read_all(*read, PAGE_SIZE, &Filter::All)
                        .await
                    {
                        Ok(slice) => slice,
                        Err(e) => return Next::Failed(e),
                    };
                    for record in slice.events {
                        if let Some(event) = FeedEvent::new(Arc::new(record))
                            && event.org_id == Some(self.org)
                            && self.channels.matches(&event)
                        {
                            buffer.push_back(event);
                        }
                    }
                    if slice.next > *read {
                        *read = slice.next;
                    } else if slice.scanned == 0 {
                        // Nothing readable after `read`, yet the hub is further on: it only gets
                        // there through readable events, so it is the store's watermark moving.
                        // Give the writers a moment rather than spin.
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                }
                State::Live(registration) => {
                    if registration.lagged() {
                        return Next::Lagged(self.last);
                    }
                    match registration.recv().await {
                        Some(event) => {
                            // Sent while catching up, or queued before an unsubscribe.
                            if event.position() <= self.last || !self.channels.matches(&event) {
                                continue;
                            }
                            self.last = event.position();
                            return Next::Event(event);
                        }
                        None if registration.lagged() => return Next::Lagged(self.last),
                        None => return Next::Stopped,
                    }
                }
            }
        }
    }
}
