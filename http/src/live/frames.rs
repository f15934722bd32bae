//! Camera thumbnails for live clients (Sentinel's `frame_update`): not events of the log but
//! pictures, sent only to the WebSocket clients subscribed to that very camera
//! (`camera:<id>`, `camera_<id>`). The capture pipeline asks [`Frames::watched`] before it
//! encodes anything, so a camera nobody watches costs no encoding at all; each picture is
//! encoded (base64, JSON) once and shared by every watcher. A watcher whose small queue is full
//! misses that picture (the next one replaces it): thumbnails never grow a slow client's memory.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use bytestring::ByteString;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Thumbnails a watcher's queue holds; more are dropped for it.
pub const QUEUE: usize = 4;
/// Thumbnails sent to live clients.
pub const SENT: &str = "atelier_live_frames_total";
/// Thumbnails a slow client missed.
pub const DROPPED: &str = "atelier_live_frames_dropped_total";

type Watchers = HashMap<(Uuid, Uuid), Vec<(u64, mpsc::Sender<ByteString>)>>;

/// Who watches which camera.
#[derive(Default)]
pub struct Frames {
    watchers: Mutex<Watchers>,
    next: AtomicU64,
}

impl std::fmt::Debug for Frames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("cameras", &self.lock().len())
            .finish()
    }
}

impl Frames {
    fn lock(&self) -> MutexGuard<'_, Watchers> {
        self.watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A watcher for a client of `org`, watching no camera yet.
    pub fn watcher(self: &Arc<Self>, org: Uuid) -> FrameWatcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        FrameWatcher {
            frames: self.clone(),
            org,
            id: self.next.fetch_add(1, Ordering::Relaxed),
            tx,
            rx,
            cameras: BTreeSet::new(),
        }
    }

    /// Whether any client watches this camera now.
    pub fn watched(&self, org: Uuid, camera: Uuid) -> bool {
        self.lock().contains_key(&(org, camera))
    }

    /// Sends a JPEG thumbnail to the camera's watchers, as
    /// `{type:"frame_update", camera_id, data: <base64 JPEG>}`; how many it reached.
    pub fn publish(&self, org: Uuid, camera: Uuid, jpeg: &[u8]) -> usize {
        let senders: Vec<mpsc::Sender<ByteString>> = match self.lock().get(&(org, camera)) {
            Some(list) => list.iter().map(|(_, tx)| tx.clone()).collect(),
            None => return 0,
        };
        let message: ByteString = serde_json::json!({
            "type": "frame_update",
            "camera_id": camera,
            "data": base64::engine::general_purpose::STANDARD.encode(jpeg),
        })
        .to_string()
        .into();
        let mut sent = 0;
        for tx in senders {
            match tx.try_send(message.clone()) {
                Ok(()) => sent += 1,
                Err(mpsc::error::TrySendError::Full(_)) => metrics::counter!(DROPPED).increment(1),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        metrics::counter!(SENT).increment(sent as u64);
        sent
    }
}

/// A live client's thumbnails: the cameras it watches and its queue. Dropping it stops them.
pub struct FrameWatcher {
    frames: Arc<Frames>,
    org: Uuid,
    id: u64,
    tx: mpsc::Sender<ByteString>,
    rx: mpsc::Receiver<ByteString>,
    cameras: BTreeSet<Uuid>,
}

impl FrameWatcher {
    /// Watches exactly these cameras from now on.
    pub fn set(&mut self, cameras: BTreeSet<Uuid>) {
        if cameras == self.cameras {
            return;
        }
        let mut watchers = self.frames.lock();
        for gone in self.cameras.difference(&cameras) {
            if let Some(list) = watchers.get_mut(&(self.org, *gone)) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    watchers.remove(&(self.org, *gone));
                }
            }
        }
        for new in cameras.difference(&self.cameras) {
            watchers
                .entry((self.org, *new))
                .or_default()
                .push((self.id, self.tx.clone()));
        }
        drop(watchers);
        self.cameras = cameras;
    }

    /// The next thumbnail (waits while there is none).
    pub async fn recv(&mut self) -> ByteString {
        // The watcher holds a sender itself: the queue never closes while it lives.
        match self.rx.recv().await {
            Some(message) => message,
            None => std::future::pending().await,
        }
    }
}

impl Drop for FrameWatcher {
    fn drop(&mut self) {
        self.set(BTreeSet::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_watchers_of_a_camera_get_its_thumbnails_and_leaving_stops_them() {
        let frames = Arc::new(Frames::default());
        let (org, cam, other) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert!(!frames.watched(org, cam));
        assert_eq!(frames.publish(org, cam, b"\xff\xd8jpeg"), 0);
        let mut a = frames.watcher(org);
        a.set([cam].into());
        let mut b = frames.watcher(org);
        b.set([other].into());
        assert!(frames.watched(org, cam));
        assert!(
            !frames.watched(Uuid::from_u128(9), cam),
            "another organization"
        );
        assert_eq!(frames.publish(org, cam, b"\xff\xd8jpeg"), 1);
        let message: serde_json::Value = serde_json::from_str(&a.recv().await).unwrap();
        assert_eq!(message["type"], "frame_update");
        assert_eq!(message["camera_id"], cam.to_string());
        assert_eq!(message["data"], "/9hqcGVn");
        assert!(b.rx.is_empty());
        drop(a);
        assert!(!frames.watched(org, cam));
        b.set(BTreeSet::new());
        assert!(!frames.watched(org, other));
    }

    #[tokio::test]
    async fn a_slow_watcher_misses_thumbnails_instead_of_queueing_them() {
        let frames = Arc::new(Frames::default());
        let (org, cam) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut a = frames.watcher(org);
        a.set([cam].into());
        for _ in 0..QUEUE {
            assert_eq!(frames.publish(org, cam, b"x"), 1);
        }
        assert_eq!(frames.publish(org, cam, b"x"), 0, "full: dropped");
        assert_eq!(a.rx.len(), QUEUE);
    }
}
