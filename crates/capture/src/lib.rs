//! Frame sources (a synthetic detector, file replay, frames pushed by other software and,
//! optionally, a local camera) and the plumbing that moves their frames to the encoder.
//!
//! Each source runs on its own OS thread ([`spawn_capture`]) because sources block
//! (pacing sleeps, camera driver reads) and must not stall the async runtime. Frames go
//! through a latest-wins slot ([`queue::latest_queue`]): a live view wants the newest
//! picture, never a backlog, so a slow consumer causes counted drops instead of latency.
//!
//! Sources: [`synthetic`] (generated pattern), [`replay`] (TIFF stacks or PNG folders
//! played in a loop), [`push`] (frames sent by other software, with its wire format) and
//! [`camera`]. Invariants: `seq` increases from frame to frame of a source; a source
//! that waits for outside input returns [`CaptureError::NoFrameYet`] at least every
//! [`PUSH_POLL_INTERVAL`], so stopping a detector never waits for a client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use lumacast_frame::{Frame, FrameError, PixelFormat};

pub mod camera;
mod pace;
pub mod push;
pub mod queue;
pub mod replay;
pub mod synthetic;

pub use camera::{list_cameras, CameraInfo, CameraSource};
pub use push::{
    parse_push_frame, push_channel, PushHandle, PushHeader, PushSource, MAX_PUSH_BYTES,
    MAX_PUSH_SIDE, PUSH_HEADER_LEN, PUSH_MAGIC, PUSH_POLL_INTERVAL, PUSH_VERSION,
};
pub use queue::{latest_queue, FrameReceiver, FrameSender, RecvError, TryRecvError};
pub use replay::{ReplaySource, REPLAY_MEMORY_LIMIT};
pub use synthetic::{SyntheticConfig, SyntheticSource};

/// Why a source could not be opened or could not deliver a frame.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The binary was built without the `camera` feature (nokhwa needs libclang to build,
    /// so it is opt-in).
    #[error(
        "camera support is not compiled in: rebuild with `cargo build --release --features camera` (needs libclang-dev)"
    )]
    CameraFeatureDisabled,
    /// The camera backend failed: no such device, permission denied, unsupported format,
    /// device unplugged, ...
    #[error("camera error: {0}")]
    Camera(String),
    /// A source was configured with values it cannot honour.
    #[error("invalid source configuration: {0}")]
    InvalidConfig(String),
    /// A produced frame was inconsistent (a bug in the source).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame pushed by other software (see [`push`]) is malformed or too large; the
    /// message says exactly what is wrong, for the client.
    #[error("bad pushed frame: {0}")]
    BadPushFrame(String),
    /// The replay file or folder cannot be used (see [`replay`]).
    #[error("cannot replay {path}: {message}")]
    Replay {
        /// The file or folder at fault (the page or image inside it is in `message`).
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The source has ended normally and will produce no more frames: every
    /// [`PushHandle`] was closed or dropped. Also returned by [`PushHandle::push`] once
    /// the detector has stopped. [`spawn_capture`] ends quietly (info level) on it.
    #[error("the frame source has ended (closed, or its detector was stopped)")]
    Ended,
    /// Not a failure: no frame arrived within `waited`. Sources that wait for frames from
    /// outside ([`PushSource`]) return it periodically so that [`spawn_capture`] can check
    /// its stop flag; it simply calls [`FrameSource::next_frame`] again.
    #[error("no frame arrived within {waited:?}")]
    NoFrameYet {
        /// How long the source waited.
        waited: Duration,
    },
}

/// What a source produces, for logs and for configuring the encoder up front.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// Source type, e.g. "synthetic", "camera", "replay" or "push".
    pub kind: &'static str,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Pixel format of every frame.
    pub format: PixelFormat,
    /// Nominal frame rate.
    pub fps: f64,
}

/// A detector: something that yields frames at its own pace.
///
/// `Send` so it can be moved onto its capture thread.
pub trait FrameSource: Send {
    /// Static description of the frames this source produces.
    fn describe(&self) -> SourceInfo;

    /// Blocks until the next frame is due, then returns it with `seq` and capture time
    /// set. An error ends the capture loop of [`spawn_capture`], except
    /// [`CaptureError::NoFrameYet`] (the loop re-checks its stop flag and calls again);
    /// [`CaptureError::Ended`] ends it as a normal end of stream.
    fn next_frame(&mut self) -> Result<Frame, CaptureError>;
}

/// Runs `source` on a thread named `cap-{name}`, pushing every frame into `tx`.
///
/// The loop ends when `stop` is set (checked between frames, so it takes at most one
/// frame period, or one [`CaptureError::NoFrameYet`] wait for sources fed from outside),
/// when the source ends ([`CaptureError::Ended`], logged at info) or fails (any other
/// error, logged), or when the receiving side of `tx` is gone (nobody would ever see the
/// frames). Dropping `tx` at the end wakes the receiver with [`RecvError::Disconnected`].
/// Frame drops caused by a slow consumer are logged once and then only counted
/// ([`FrameSender::dropped`]), to avoid log floods.
pub fn spawn_capture(
    name: String,
    mut source: Box<dyn FrameSource>,
    tx: FrameSender,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    // Interior NULs would make the spawn panic; the name is only cosmetic.
    let thread_name = format!("cap-{name}").replace('\0', "?");
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let span = tracing::info_span!("capture", detector = %name);
            let _enter = span.enter();
            let info = source.describe();
            tracing::info!(
                kind = info.kind,
                width = info.width,
                height = info.height,
                format = info.format.name(),
                fps = info.fps,
                "capture started"
            );
            let mut frames = 0u64;
            let mut drop_logged = false;
            while !stop.load(Ordering::Relaxed) {
                match source.next_frame() {
                    Ok(frame) => {
                        frames += 1;
                        if tx.is_closed() {
                            tracing::info!("frame consumer is gone; stopping capture");
                            break;
                        }
                        if tx.push(frame) && !drop_logged {
                            drop_logged = true;
                            tracing::warn!(
                                "consumer is slower than the detector: older frames are dropped \
                             (logged once, then only counted)"
                            );
                        }
                    }
                    Err(CaptureError::NoFrameYet { .. }) => {}
                    Err(CaptureError::Ended) => {
                        tracing::info!("source ended");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "capture failed; stopping");
                        tx.fail(e.to_string());
                        break;
                    }
                }
            }
            tracing::info!(frames, dropped = tx.dropped(), "capture stopped");
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fast_source() -> Box<dyn FrameSource> {
        Box::new(
            SyntheticSource::new(SyntheticConfig {
                width: 64,
                height: 32,
                fps: 200.0,
                bit_depth: 12,
            })
            .unwrap(),
        )
    }

    #[test]
    fn capture_thread_delivers_and_stops() {
        let (tx, rx) = latest_queue();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn_capture("test".into(), fast_source(), tx, stop.clone()).unwrap();
        assert_eq!(handle.thread().name(), Some("cap-test"));
        let mut last = None;
        for _ in 0..3 {
            let f = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            if let Some(prev) = last {
                assert!(f.seq > prev);
            }
            last = Some(f.seq);
        }
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        // The sender died with the thread: after any last frame, the receiver is told.
        let _ = rx.try_recv();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(1)).unwrap_err(),
            RecvError::Disconnected
        );
    }

    #[test]
    fn capture_thread_stops_when_receiver_is_gone() {
        let (tx, rx) = latest_queue();
        drop(rx);
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn_capture("orphan".into(), fast_source(), tx, stop).unwrap();
        handle.join().unwrap();
    }

    struct Failing;
    impl FrameSource for Failing {
        fn describe(&self) -> SourceInfo {
            SourceInfo {
                kind: "failing",
                width: 16,
                height: 16,
                format: PixelFormat::Mono8,
                fps: 1.0,
            }
        }
        fn next_frame(&mut self) -> Result<Frame, CaptureError> {
            Err(CaptureError::Camera("unplugged".into()))
        }
    }

    #[test]
    fn capture_thread_stops_on_error() {
        let (tx, rx) = latest_queue();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn_capture("bad".into(), Box::new(Failing), tx, stop).unwrap();
        handle.join().unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(1)).unwrap_err(),
            RecvError::Disconnected
        );
        assert_eq!(rx.failure().as_deref(), Some("camera error: unplugged"));
    }

    #[test]
    fn disabled_camera_message() {
        let msg = CaptureError::CameraFeatureDisabled.to_string();
        assert_eq!(
            msg,
            "camera support is not compiled in: rebuild with `cargo build --release --features camera` (needs libclang-dev)"
        );
    }
}
