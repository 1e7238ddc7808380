//! Latest-wins frame slot between a capture thread and its consumer.
//!
//! Capacity is exactly one frame: a live view must show the newest picture, so when the
//! consumer (encoder) falls behind, the unconsumed frame is replaced and counted as
//! dropped instead of queueing up latency and memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lumacast_frame::Frame;

/// Why [`FrameReceiver::recv_timeout`] returned without a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// No frame arrived in time; the sender is still alive.
    #[error("no frame within the timeout")]
    Timeout,
    /// The sender is gone and no frame is left: the capture has ended.
    #[error("the capture side has ended")]
    Disconnected,
}

/// Why [`FrameReceiver::try_recv`] returned without a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No frame is waiting right now; the sender is still alive.
    #[error("no frame waiting")]
    Empty,
    /// The sender is gone and no frame is left: the capture has ended.
    #[error("the capture side has ended")]
    Disconnected,
}

struct Slot {
    frame: Option<Frame>,
    sender_alive: bool,
    receiver_alive: bool,
    /// Why the capture ended, when it failed (set by the sender before it goes).
    failure: Option<String>,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    /// Locks the slot; a panic elsewhere cannot leave it inconsistent (every update is a
    /// single field store), so poisoning is ignored rather than propagated.
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates a connected sender/receiver pair around a single-frame slot.
pub fn latest_queue() -> (FrameSender, FrameReceiver) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            frame: None,
            sender_alive: true,
            receiver_alive: true,
            failure: None,
        }),
        ready: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    (
        FrameSender {
            shared: shared.clone(),
        },
        FrameReceiver { shared },
    )
}

/// Producer half, owned by the capture thread. Dropping it disconnects the receiver.
pub struct FrameSender {
    shared: Arc<Shared>,
}

impl FrameSender {
    /// Stores `frame` as the newest one without ever blocking (beyond a short lock).
    ///
    /// Returns `true` when an unconsumed older frame was replaced; that frame counts as
    /// dropped. When the receiver is gone the frame is discarded and `false` returned
    /// (see [`is_closed`](Self::is_closed) to stop producing).
    pub fn push(&self, frame: Frame) -> bool {
        let mut slot = self.shared.lock();
        if !slot.receiver_alive {
            return false;
        }
        let old = slot.frame.replace(frame);
        drop(slot);
        self.shared.ready.notify_one();
        // `old` (megabytes) is freed outside the lock.
        let replaced = old.is_some();
        if replaced {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        replaced
    }

    /// Number of frames replaced before the receiver took them.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Whether the receiver has been dropped (nobody will ever see pushed frames).
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiver_alive
    }

    /// Records why the capture failed; the receiver reads it with
    /// [`FrameReceiver::failure`] once it sees `Disconnected`.
    pub fn fail(&self, reason: String) {
        self.shared.lock().failure = Some(reason);
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        self.shared.lock().sender_alive = false;
        self.shared.ready.notify_all();
    }
}

/// Consumer half, owned by the encoder side. A frame already in the slot is still
/// delivered after the sender is gone; only then is `Disconnected` reported.
pub struct FrameReceiver {
    shared: Arc<Shared>,
}

impl FrameReceiver {
    /// Takes the waiting frame, if any, without blocking.
    pub fn try_recv(&self) -> Result<Frame, TryRecvError> {
        let mut slot = self.shared.lock();
        match slot.frame.take() {
            Some(frame) => Ok(frame),
            None if !slot.sender_alive => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Waits up to `timeout` for a frame. The timeout lets the consumer check its own
    /// shutdown signal periodically.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Frame, RecvError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut slot = self.shared.lock();
        loop {
            if let Some(frame) = slot.frame.take() {
                return Ok(frame);
            }
            if !slot.sender_alive {
                return Err(RecvError::Disconnected);
            }
            slot = match deadline {
                // Effectively infinite timeout.
                None => self
                    .shared
                    .ready
                    .wait(slot)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(RecvError::Timeout);
                    }
                    self.shared
                        .ready
                        .wait_timeout(slot, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Waits for a frame with no timeout; fails only with [`RecvError::Disconnected`].
    pub fn recv(&self) -> Result<Frame, RecvError> {
        self.recv_timeout(Duration::MAX)
    }

    /// Number of frames replaced before this receiver took them.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Why the capture failed, if it did ([`FrameSender::fail`]); `None` for a normal end.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failure.clone()
    }
}

impl Drop for FrameReceiver {
    fn drop(&mut self) {
        let mut slot = self.shared.lock();
        slot.receiver_alive = false;
        let pending = slot.frame.take();
        drop(slot);
        drop(pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumacast_frame::PixelFormat;

    fn frame(seq: u64) -> Frame {
        Frame::new(16, 16, PixelFormat::Mono8, seq, vec![0; 256]).unwrap()
    }

    #[test]
    fn newest_wins_and_drops_are_counted() {
        let (tx, rx) = latest_queue();
        assert!(!tx.push(frame(0)));
        assert!(tx.push(frame(1)));
        assert!(tx.push(frame(2)));
        assert_eq!(tx.dropped(), 2);
        assert_eq!(rx.dropped(), 2);
        assert_eq!(rx.try_recv().unwrap().seq, 2);
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(10)).unwrap_err(),
            RecvError::Timeout
        );
    }

    #[test]
    fn never_holds_more_than_one_frame() {
        let (tx, rx) = latest_queue();
        for seq in 0..1000 {
            tx.push(frame(seq));
        }
        assert_eq!(tx.dropped(), 999);
        assert_eq!(rx.try_recv().unwrap().seq, 999);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn blocked_receiver_gets_frame_and_disconnect() {
        let (tx, rx) = latest_queue();
        let consumer = std::thread::spawn(move || {
            let first = rx.recv_timeout(Duration::from_secs(10)).map(|f| f.seq);
            let second = rx.recv_timeout(Duration::from_secs(10)).map(|f| f.seq);
            (first, second)
        });
        std::thread::sleep(Duration::from_millis(20));
        tx.push(frame(5));
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        drop(tx);
        let (first, second) = consumer.join().unwrap();
        assert_eq!(first, Ok(5));
        assert_eq!(second, Err(RecvError::Disconnected));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn pending_frame_survives_sender_drop() {
        let (tx, rx) = latest_queue();
        tx.push(frame(1));
        drop(tx);
        assert_eq!(rx.recv().unwrap().seq, 1);
        assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Disconnected);
    }

    #[test]
    fn push_after_receiver_drop_is_ignored() {
        let (tx, rx) = latest_queue();
        drop(rx);
        assert!(tx.is_closed());
        assert!(!tx.push(frame(1)));
        assert!(!tx.push(frame(2)));
        assert_eq!(tx.dropped(), 0);
    }
}
