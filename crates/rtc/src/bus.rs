//! The fan-out from one detector's encoder to its viewers: one bounded broadcast per
//! rendition of the ladder, the ladder itself, and the keyframe requests flowing back.

use crate::ladder::Rendition;
use crate::MediaFrame;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Most renditions a ladder may have.
pub const MAX_RENDITIONS: usize = 4;

/// The fan-out from one detector's encoder to its viewers. Bounded: see [`FrameBus::CAPACITY`].
///
/// Rendition 0 is the full-size stream; the others are the smaller steps of the ladder,
/// each encoded once and only while someone is subscribed to it.
#[derive(Clone, Debug)]
pub struct FrameBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    txs: Vec<broadcast::Sender<Arc<MediaFrame>>>,
    ladder: Mutex<Vec<Rendition>>,
}

impl FrameBus {
    /// Frames held for a slow viewer before it starts losing them (about a quarter second
    /// at 30 fps): enough to ride out a scheduler hiccup, too little to build latency.
    pub const CAPACITY: usize = 8;

    pub fn new() -> Self {
        let txs = (0..MAX_RENDITIONS)
            .map(|_| broadcast::channel(Self::CAPACITY).0)
            .collect();
        FrameBus {
            inner: Arc::new(Inner {
                txs,
                ladder: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Publishes a full-size frame to every viewer on rendition 0; never blocks.
    /// Returns how many viewers it reached.
    pub fn publish(&self, frame: Arc<MediaFrame>) -> usize {
        self.publish_to(0, frame)
    }

    /// Publishes a frame of rendition `r`; never blocks.
    pub fn publish_to(&self, r: usize, frame: Arc<MediaFrame>) -> usize {
        self.inner
            .txs
            .get(r)
            .map_or(0, |tx| tx.send(frame).unwrap_or(0))
    }

    /// Subscriptions over all renditions (viewers connected or connecting).
    pub fn receivers(&self) -> usize {
        self.inner.txs.iter().map(|t| t.receiver_count()).sum()
    }

    /// Subscriptions to rendition `r`.
    pub fn receivers_of(&self, r: usize) -> usize {
        self.inner.txs.get(r).map_or(0, |t| t.receiver_count())
    }

    /// A new subscription to the full-size stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<MediaFrame>> {
        self.subscribe_to(0)
    }

    /// A new subscription to rendition `r` (clamped to the last one there is).
    pub fn subscribe_to(&self, r: usize) -> broadcast::Receiver<Arc<MediaFrame>> {
        self.inner.txs[r.min(MAX_RENDITIONS - 1)].subscribe()
    }

    /// The ladder the encoder currently produces, best first (empty before its first frame).
    pub fn ladder(&self) -> Vec<Rendition> {
        self.inner
            .ladder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Set by the encoder thread when the top size, bitrate or steps change.
    pub fn set_ladder(&self, ladder: Vec<Rendition>) {
        let mut l = ladder;
        l.truncate(MAX_RENDITIONS);
        *self.inner.ladder.lock().unwrap_or_else(|e| e.into_inner()) = l;
    }
}

impl Default for FrameBus {
    fn default() -> Self {
        Self::new()
    }
}

/// How a viewer asks the encoder for a keyframe of a rendition; the encoder side rate-limits.
#[derive(Clone)]
pub struct KeyframeRequest(Arc<dyn Fn(usize, &'static str) + Send + Sync>);

impl KeyframeRequest {
    /// `f(rendition, reason)`.
    pub fn new(f: impl Fn(usize, &'static str) + Send + Sync + 'static) -> Self {
        KeyframeRequest(Arc::new(f))
    }

    /// Asks for an IDR of the full-size rendition.
    pub fn request(&self, reason: &'static str) {
        (self.0)(0, reason)
    }

    /// Asks for an IDR of rendition `r`.
    pub fn request_for(&self, r: usize, reason: &'static str) {
        (self.0)(r, reason)
    }
}
