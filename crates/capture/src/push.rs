//! Frames pushed by other software (Python SDKs, ImSwitch, Micro-Manager, ...).
//!
//! A "push" detector has no clock of its own: a client sends frames (the server exposes
//! `POST /api/detectors/{name}/frames` with an `application/octet-stream` body holding
//! exactly one frame), the HTTP layer parses each body with [`parse_push_frame`] and hands
//! the frame to a [`PushHandle`]; the detector's capture thread takes it from the paired
//! [`PushSource`]. Frames go out as they arrive: there is no pacing.
//!
//! # Wire format (version 1)
//!
//! One frame is a 32-byte header followed by the raw pixels. All integers are
//! little-endian.
//!
//! | bytes    | field        | meaning                                                      |
//! |----------|--------------|--------------------------------------------------------------|
//! | `0..4`   | magic        | `b"LMCF"`                                                    |
//! | `4`      | version      | `1`                                                          |
//! | `5`      | pixel format | `1` = mono8, `2` = mono16, `3` = rgb8                        |
//! | `6`      | bit depth    | mono16: significant bits `1..=16`, `0` means 16; mono8 and rgb8: `0` or `8` |
//! | `7`      | flags        | bit 0: timestamp present; bit 1: frame number present; other bits must be 0 |
//! | `8..12`  | width        | `u32`, pixels                                                |
//! | `12..16` | height       | `u32`, pixels                                                |
//! | `16..24` | frame number | `u64`; ignored (write 0) unless flag bit 1 is set            |
//! | `24..32` | timestamp    | `u64`, microseconds since the UNIX epoch; ignored (write 0) unless flag bit 0 is set |
//! | `32..`   | pixels       | exactly `width * height * bytes_per_pixel` bytes, row-major, no padding: mono8 1 byte, mono16 2 bytes (`u16` little-endian, value in the low `bit depth` bits), rgb8 3 bytes (R, G, B) |
//!
//! Limits: each side must be in `16..=`[`MAX_PUSH_SIDE`] (16 is the encoder's minimum;
//! the maximum is 16384) and the pixel data at most [`MAX_PUSH_BYTES`] (256 MiB). A
//! frame's size and format may differ from the detector's nominal ones and from frame to
//! frame (the encoder is re-initialised when the size changes).
//!
//! # Sequence numbers and capture time
//!
//! A frame keeps the client's frame number as its `seq` as long as numbers increase;
//! frames without a number (and numbers that do not increase, e.g. after the client
//! restarted) get the previous `seq + 1`, so `seq` always increases on a channel. The
//! client's timestamp, if present, becomes the capture time (`captured_at`); otherwise
//! the arrival time does. `captured_mono` is always the arrival instant (a client's wall
//! clock cannot be mapped onto this process's monotonic clock).
//!
//! # Hand-off and shutdown
//!
//! Handle and source share a one-frame mailbox: a frame that the capture thread has not
//! taken yet is replaced by a newer one and counted ([`PushHandle::frames_replaced`]), so
//! a fast pusher never builds a backlog. [`PushSource::next_frame`] waits at most
//! [`PUSH_POLL_INTERVAL`] and then returns [`CaptureError::NoFrameYet`], which lets
//! [`spawn_capture`](crate::spawn_capture) notice its stop flag even when no client is
//! pushing. Closing the channel ([`PushHandle::close`], or dropping every handle) ends the
//! source with [`CaptureError::Ended`] after any pending frame; once the source is gone
//! (the detector stopped), [`PushHandle::push`] fails with [`CaptureError::Ended`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use lumacast_frame::{Frame, PixelFormat, MIN_SIDE};

use crate::{CaptureError, FrameSource, SourceInfo};

/// Length of the header in front of every pushed frame.
pub const PUSH_HEADER_LEN: usize = 32;
/// First four bytes of every pushed frame.
pub const PUSH_MAGIC: [u8; 4] = *b"LMCF";
/// The wire format version this crate reads and writes.
pub const PUSH_VERSION: u8 = 1;
/// Largest accepted width and height of a pushed frame, in pixels.
pub const MAX_PUSH_SIDE: u32 = 16_384;
/// Largest accepted pixel data of a pushed frame, in bytes (256 MiB). The HTTP body may
/// be [`PUSH_HEADER_LEN`] bytes longer.
pub const MAX_PUSH_BYTES: usize = 256 << 20;
/// Longest time [`PushSource::next_frame`] waits before returning
/// [`CaptureError::NoFrameYet`]; bounds how long stopping a detector takes.
pub const PUSH_POLL_INTERVAL: Duration = Duration::from_millis(100);

const FLAG_TIMESTAMP: u8 = 1 << 0;
const FLAG_FRAME_NUMBER: u8 = 1 << 1;

const FORMAT_MONO8: u8 = 1;
const FORMAT_MONO16: u8 = 2;
const FORMAT_RGB8: u8 = 3;

/// The header of one pushed frame; see the [module docs](self) for the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushHeader {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Pixel layout; for Mono16 the bit depth travels in the header's bit-depth byte.
    pub format: PixelFormat,
    /// The client's frame number, if it sends one.
    pub frame_number: Option<u64>,
    /// The capture time in microseconds since the UNIX epoch, if the client sends one.
    pub timestamp_us: Option<u64>,
}

fn bad(message: impl Into<String>) -> CaptureError {
    CaptureError::BadPushFrame(message.into())
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl PushHeader {
    /// Serialises the header. Mono8 and Rgb8 write bit depth 8; the frame number and
    /// timestamp fields are 0 when absent. Does not validate (an invalid header, e.g. a
    /// zero width, is rejected by [`decode`](Self::decode) on the other side).
    pub fn encode(&self) -> [u8; PUSH_HEADER_LEN] {
        let (code, depth) = match self.format {
            PixelFormat::Mono8 => (FORMAT_MONO8, 8),
            PixelFormat::Mono16 { bit_depth } => (FORMAT_MONO16, bit_depth),
            PixelFormat::Rgb8 => (FORMAT_RGB8, 8),
        };
        let mut flags = 0;
        if self.timestamp_us.is_some() {
            flags |= FLAG_TIMESTAMP;
        }
        if self.frame_number.is_some() {
            flags |= FLAG_FRAME_NUMBER;
        }
        let mut h = [0u8; PUSH_HEADER_LEN];
        h[0..4].copy_from_slice(&PUSH_MAGIC);
        h[4] = PUSH_VERSION;
        h[5] = code;
        h[6] = depth;
        h[7] = flags;
        h[8..12].copy_from_slice(&self.width.to_le_bytes());
        h[12..16].copy_from_slice(&self.height.to_le_bytes());
        h[16..24].copy_from_slice(&self.frame_number.unwrap_or(0).to_le_bytes());
        h[24..32].copy_from_slice(&self.timestamp_us.unwrap_or(0).to_le_bytes());
        h
    }

    /// Parses and validates the header at the start of `bytes` (which may continue with
    /// the pixels; they are not looked at). Checks everything that does not need the
    /// pixels, including the size limits, so a server can reject a frame from its
    /// header alone.
    pub fn decode(bytes: &[u8]) -> Result<Self, CaptureError> {
        if bytes.len() < PUSH_HEADER_LEN {
            return Err(bad(format!(
                "body is {} bytes, shorter than the {PUSH_HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        let h = &bytes[..PUSH_HEADER_LEN];
        if h[0..4] != PUSH_MAGIC {
            return Err(bad(format!(
                "bad magic \"{}\" (expected \"LMCF\"): not a lumacast frame",
                h[0..4].escape_ascii()
            )));
        }
        if h[4] != PUSH_VERSION {
            return Err(bad(format!(
                "unsupported version {} (expected {PUSH_VERSION})",
                h[4]
            )));
        }
        let depth = h[6];
        let format = match h[5] {
            FORMAT_MONO8 | FORMAT_RGB8 => {
                let (format, name) = if h[5] == FORMAT_MONO8 {
                    (PixelFormat::Mono8, "mono8")
                } else {
                    (PixelFormat::Rgb8, "rgb8")
                };
                if depth != 0 && depth != 8 {
                    return Err(bad(format!(
                        "bit depth {depth} is invalid for {name} (expected 0 or 8)"
                    )));
                }
                format
            }
            FORMAT_MONO16 => match depth {
                0 => PixelFormat::Mono16 { bit_depth: 16 },
                1..=16 => PixelFormat::Mono16 { bit_depth: depth },
                _ => {
                    return Err(bad(format!(
                        "bit depth {depth} is invalid for mono16 (expected 1..=16, or 0 for 16)"
                    )))
                }
            },
            other => {
                return Err(bad(format!(
                    "unknown pixel format {other} (expected 1 = mono8, 2 = mono16, 3 = rgb8)"
                )))
            }
        };
        let flags = h[7];
        if flags & !(FLAG_TIMESTAMP | FLAG_FRAME_NUMBER) != 0 {
            return Err(bad(format!(
                "unknown flags 0x{flags:02x} (only bit 0 = timestamp and bit 1 = frame number \
                 are defined; other bits must be 0)"
            )));
        }
        let (width, height) = (le_u32(&h[8..12]), le_u32(&h[12..16]));
        if width == 0 || height == 0 {
            return Err(bad(format!(
                "width/height 0: frame size {width}x{height} is empty"
            )));
        }
        if width < MIN_SIDE || height < MIN_SIDE {
            return Err(bad(format!(
                "frame size {width}x{height} is below the {MIN_SIDE}x{MIN_SIDE} minimum"
            )));
        }
        if width > MAX_PUSH_SIDE || height > MAX_PUSH_SIDE {
            return Err(bad(format!(
                "frame larger than limit: {width}x{height} exceeds \
                 {MAX_PUSH_SIDE}x{MAX_PUSH_SIDE}"
            )));
        }
        let header = PushHeader {
            width,
            height,
            format,
            frame_number: (flags & FLAG_FRAME_NUMBER != 0).then(|| le_u64(&h[16..24])),
            timestamp_us: (flags & FLAG_TIMESTAMP != 0).then(|| le_u64(&h[24..32])),
        };
        let len = header.data_len();
        if len > MAX_PUSH_BYTES {
            return Err(bad(format!(
                "frame larger than limit: {width}x{height} {} = {len} bytes exceeds \
                 {MAX_PUSH_BYTES} bytes (256 MiB)",
                format.name()
            )));
        }
        Ok(header)
    }

    /// Number of pixel bytes that must follow the header.
    pub fn data_len(&self) -> usize {
        self.width as usize * self.height as usize * self.format.bytes_per_pixel()
    }
}

/// Parses one pushed frame (header and pixels), validating everything.
///
/// The frame's `seq` is the client's frame number, or 0 when it sent none (a
/// [`PushHandle`] then assigns one, see the [module docs](self)); `captured_at` is the
/// client's timestamp or now; `captured_mono` is now. Errors are
/// [`CaptureError::BadPushFrame`] with a message meant for the client.
pub fn parse_push_frame(body: &[u8]) -> Result<(PushHeader, Frame), CaptureError> {
    let header = PushHeader::decode(body)?;
    let data = &body[PUSH_HEADER_LEN..];
    let expected = header.data_len();
    if data.len() != expected {
        return Err(bad(format!(
            "pixel data is {} bytes but the header says {}x{} {} = {expected} bytes",
            data.len(),
            header.width,
            header.height,
            header.format.name()
        )));
    }
    let captured_at = match header.timestamp_us {
        None => SystemTime::now(),
        Some(us) => SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_micros(us))
            .ok_or_else(|| bad(format!("timestamp {us} µs is out of range")))?,
    };
    let mut frame = Frame::new(
        header.width,
        header.height,
        header.format,
        header.frame_number.unwrap_or(0),
        data.to_vec(),
    )?;
    frame.captured_at = captured_at;
    Ok((header, frame))
}

/// The one-frame mailbox between handles and source.
struct Mailbox {
    frame: Option<Frame>,
    /// `seq` of the last accepted frame, to keep `seq` increasing.
    last_seq: Option<u64>,
    /// Live [`PushHandle`]s; the source ends when this reaches 0.
    handles: usize,
    closed: bool,
    source_alive: bool,
}

struct Shared {
    mailbox: Mutex<Mailbox>,
    ready: Condvar,
    received: AtomicU64,
    replaced: AtomicU64,
    replace_logged: AtomicBool,
}

impl Shared {
    /// Every update of the mailbox is a handful of field stores that a panic cannot leave
    /// half done, so poisoning is ignored rather than propagated.
    fn lock(&self) -> MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates a connected source (for [`spawn_capture`](crate::spawn_capture)) and handle
/// (for whoever receives frames, e.g. the HTTP handler).
///
/// `info` is what [`FrameSource::describe`] reports (use kind `"push"`); it is nominal:
/// pushed frames may have another size or format.
pub fn push_channel(info: SourceInfo) -> (PushSource, PushHandle) {
    let shared = Arc::new(Shared {
        mailbox: Mutex::new(Mailbox {
            frame: None,
            last_seq: None,
            handles: 1,
            closed: false,
            source_alive: true,
        }),
        ready: Condvar::new(),
        received: AtomicU64::new(0),
        replaced: AtomicU64::new(0),
        replace_logged: AtomicBool::new(false),
    });
    (
        PushSource {
            shared: shared.clone(),
            info,
            poll: PUSH_POLL_INTERVAL,
        },
        PushHandle { shared },
    )
}

/// The receiving end of a push channel: a [`FrameSource`] that yields pushed frames as
/// they arrive. Dropping it makes every later [`PushHandle::push`] fail with
/// [`CaptureError::Ended`].
pub struct PushSource {
    shared: Arc<Shared>,
    info: SourceInfo,
    poll: Duration,
}

impl PushSource {
    /// Changes how long [`next_frame`](FrameSource::next_frame) waits before returning
    /// [`CaptureError::NoFrameYet`] (default [`PUSH_POLL_INTERVAL`]).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

impl std::fmt::Debug for PushSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSource")
            .field("info", &self.info)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl FrameSource for PushSource {
    fn describe(&self) -> SourceInfo {
        self.info.clone()
    }

    /// Returns the pushed frame as soon as there is one. Waits at most the poll interval,
    /// then returns [`CaptureError::NoFrameYet`]; returns [`CaptureError::Ended`] once the
    /// channel is closed (or every handle dropped) and no frame is pending.
    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        let deadline = Instant::now().checked_add(self.poll);
        let mut mailbox = self.shared.lock();
        loop {
            if let Some(frame) = mailbox.frame.take() {
                return Ok(frame);
            }
            if mailbox.closed || mailbox.handles == 0 {
                return Err(CaptureError::Ended);
            }
            mailbox = match deadline {
                None => self
                    .shared
                    .ready
                    .wait(mailbox)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(CaptureError::NoFrameYet { waited: self.poll });
                    }
                    self.shared
                        .ready
                        .wait_timeout(mailbox, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

impl Drop for PushSource {
    fn drop(&mut self) {
        let mut mailbox = self.shared.lock();
        mailbox.source_alive = false;
        let pending = mailbox.frame.take();
        drop(mailbox);
        // Possibly megabytes: freed outside the lock.
        drop(pending);
    }
}

/// The sending end of a push channel. Cheap to clone; every clone feeds the same source,
/// which ends when all clones are dropped or one of them calls [`close`](Self::close).
pub struct PushHandle {
    shared: Arc<Shared>,
}

impl PushHandle {
    /// Hands `frame` to the source without blocking (beyond a short lock), replacing a
    /// frame the source has not taken yet (counted in
    /// [`frames_replaced`](Self::frames_replaced)).
    ///
    /// Its `seq` is kept if it is above the previous frame's, otherwise set to the
    /// previous `seq + 1` (see the [module docs](self)). Fails with
    /// [`CaptureError::Ended`] after [`close`](Self::close) or once the source is gone.
    pub fn push(&self, mut frame: Frame) -> Result<(), CaptureError> {
        let mut mailbox = self.shared.lock();
        if mailbox.closed || !mailbox.source_alive {
            return Err(CaptureError::Ended);
        }
        if let Some(last) = mailbox.last_seq {
            if frame.seq <= last {
                frame.seq = last.saturating_add(1);
            }
        }
        mailbox.last_seq = Some(frame.seq);
        let old = mailbox.frame.replace(frame);
        drop(mailbox);
        self.shared.ready.notify_one();
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        if old.is_some() {
            self.shared.replaced.fetch_add(1, Ordering::Relaxed);
            if !self.shared.replace_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "frames are pushed faster than the capture thread takes them: unconsumed \
                     frames are replaced (logged once, then only counted)"
                );
            }
        }
        // `old` (megabytes) is freed outside the lock.
        drop(old);
        Ok(())
    }

    /// Frames accepted by [`push`](Self::push) on this channel (all clones), including
    /// those later replaced.
    pub fn frames_received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Accepted frames that were replaced by a newer one before the source took them.
    pub fn frames_replaced(&self) -> u64 {
        self.shared.replaced.load(Ordering::Relaxed)
    }

    /// Ends the channel for every clone: the source delivers a pending frame, then
    /// returns [`CaptureError::Ended`]; later pushes fail. Idempotent.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }

    /// Whether pushing is pointless: the channel was closed or the source is gone.
    pub fn is_closed(&self) -> bool {
        let mailbox = self.shared.lock();
        mailbox.closed || !mailbox.source_alive
    }
}

impl Clone for PushHandle {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        PushHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for PushHandle {
    fn drop(&mut self) {
        let mut mailbox = self.shared.lock();
        mailbox.handles -= 1;
        let last = mailbox.handles == 0;
        drop(mailbox);
        if last {
            self.shared.ready.notify_all();
        }
    }
}

impl std::fmt::Debug for PushHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushHandle")
            .field("frames_received", &self.frames_received())
            .field("frames_replaced", &self.frames_replaced())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{latest_queue, spawn_capture, RecvError};
    use std::sync::atomic::AtomicBool;

    fn header(width: u32, height: u32, format: PixelFormat) -> PushHeader {
        PushHeader {
            width,
            height,
            format,
            frame_number: None,
            timestamp_us: None,
        }
    }

    /// A complete body: `header` followed by `data`.
    fn body(header: &PushHeader, data: &[u8]) -> Vec<u8> {
        let mut b = header.encode().to_vec();
        b.extend_from_slice(data);
        b
    }

    /// A valid 16x16 mono8 body whose header bytes are then patched by `patch`.
    fn patched(patch: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut b = body(&header(16, 16, PixelFormat::Mono8), &[7; 256]);
        patch(&mut b);
        b
    }

    fn message(body: &[u8]) -> String {
        match parse_push_frame(body) {
            Err(CaptureError::BadPushFrame(msg)) => msg,
            other => panic!("expected BadPushFrame, got {other:?}"),
        }
    }

    fn info() -> SourceInfo {
        SourceInfo {
            kind: "push",
            width: 64,
            height: 48,
            format: PixelFormat::Mono16 { bit_depth: 12 },
            fps: 30.0,
        }
    }

    fn mono8(seq: u64) -> Frame {
        Frame::new(16, 16, PixelFormat::Mono8, seq, vec![seq as u8; 256]).unwrap()
    }

    #[test]
    fn header_encode_parse_round_trip_for_every_format_and_flag() {
        for format in [
            PixelFormat::Mono8,
            PixelFormat::Mono16 { bit_depth: 12 },
            PixelFormat::Mono16 { bit_depth: 16 },
            PixelFormat::Mono16 { bit_depth: 1 },
            PixelFormat::Rgb8,
        ] {
            for (frame_number, timestamp_us) in [
                (None, None),
                (Some(42), None),
                (None, Some(1_700_000_000_123_456)),
                (Some(u64::MAX), Some(0)),
            ] {
                let h = PushHeader {
                    width: 20,
                    height: 17,
                    format,
                    frame_number,
                    timestamp_us,
                };
                let data: Vec<u8> = (0..h.data_len()).map(|i| (i * 7) as u8).collect();
                let (parsed, frame) = parse_push_frame(&body(&h, &data)).unwrap();
                assert_eq!(parsed, h);
                assert_eq!(PushHeader::decode(&h.encode()).unwrap(), h);
                assert_eq!((frame.width, frame.height, frame.format), (20, 17, format));
                assert_eq!(frame.data, data);
                assert_eq!(frame.seq, frame_number.unwrap_or(0));
                if let Some(ts) = timestamp_us {
                    assert_eq!(frame.captured_us(), ts);
                }
            }
        }
    }

    #[test]
    fn header_layout_is_the_documented_one() {
        let h = PushHeader {
            width: 640,
            height: 480,
            format: PixelFormat::Mono16 { bit_depth: 12 },
            frame_number: Some(7),
            timestamp_us: Some(0x0102_0304_0506_0708),
        };
        let mut expected = Vec::new();
        expected.extend_from_slice(b"LMCF");
        expected.extend_from_slice(&[1, 2, 12, 0b11]);
        expected.extend_from_slice(&640u32.to_le_bytes());
        expected.extend_from_slice(&480u32.to_le_bytes());
        expected.extend_from_slice(&7u64.to_le_bytes());
        expected.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(h.encode().as_slice(), expected.as_slice());
    }

    /// Bodies written by `pack_frame` of `examples/push_frames.py` (the client others
    /// copy), so the Python encoder and this parser cannot drift apart.
    #[test]
    fn golden_bodies_from_the_python_client_parse() {
        let (h, f) =
            parse_push_frame(include_bytes!("../testdata/push_mono16_12bit_16x16.lmcf")).unwrap();
        assert_eq!(
            h,
            PushHeader {
                width: 16,
                height: 16,
                format: PixelFormat::Mono16 { bit_depth: 12 },
                frame_number: Some(41),
                timestamp_us: Some(1_700_000_000_123_456),
            }
        );
        assert_eq!((f.seq, f.captured_us()), (41, 1_700_000_000_123_456));
        let px: Vec<u16> = f
            .data
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(px[0], 4095);
        assert!(px[1..]
            .iter()
            .enumerate()
            .all(|(i, &v)| v == (i as u16 + 1) * 16 + 1));

        let (h, f) =
            parse_push_frame(include_bytes!("../testdata/push_rgb8_20x16_no_flags.lmcf")).unwrap();
        assert_eq!(h, header(20, 16, PixelFormat::Rgb8));
        assert!(f
            .data
            .iter()
            .enumerate()
            .all(|(i, &v)| v as usize == i % 251));

        let (h, f) =
            parse_push_frame(include_bytes!("../testdata/push_mono8_17x16_numbered.lmcf")).unwrap();
        assert_eq!((h.width, h.height, h.format), (17, 16, PixelFormat::Mono8));
        assert_eq!((h.frame_number, h.timestamp_us), (Some(7), None));
        assert!(f.data.iter().all(|&v| v == 200));
    }

    #[test]
    fn mono16_pixels_are_little_endian_and_depth_0_means_16() {
        let mut b = body(
            &header(16, 16, PixelFormat::Mono16 { bit_depth: 16 }),
            &[0; 512],
        );
        b[6] = 0;
        b[32] = 0x34;
        b[33] = 0x12;
        let (h, f) = parse_push_frame(&b).unwrap();
        assert_eq!(h.format, PixelFormat::Mono16 { bit_depth: 16 });
        assert_eq!(u16::from_le_bytes([f.data[0], f.data[1]]), 0x1234);
    }

    #[test]
    fn mono8_and_rgb8_accept_depth_0_and_8() {
        for (code, format, bpp) in [(1, PixelFormat::Mono8, 1), (3, PixelFormat::Rgb8, 3)] {
            for depth in [0, 8] {
                let mut b = body(&header(16, 16, format), &vec![1; 256 * bpp]);
                b[5] = code;
                b[6] = depth;
                assert_eq!(parse_push_frame(&b).unwrap().0.format, format);
            }
        }
    }

    #[test]
    fn missing_timestamp_means_arrival_time() {
        let before = SystemTime::now();
        let (_, f) = parse_push_frame(&patched(|_| {})).unwrap();
        assert!(f.captured_at >= before && f.captured_at <= SystemTime::now());
        assert_eq!(f.seq, 0);
    }

    #[test]
    fn error_short_body() {
        assert_eq!(
            message(&[0; 31]),
            "body is 31 bytes, shorter than the 32-byte header"
        );
        assert_eq!(
            message(&[]),
            "body is 0 bytes, shorter than the 32-byte header"
        );
    }

    #[test]
    fn error_bad_magic() {
        let msg = message(&patched(|b| b[0..4].copy_from_slice(b"GIF8")));
        assert_eq!(
            msg,
            "bad magic \"GIF8\" (expected \"LMCF\"): not a lumacast frame"
        );
        let msg = message(&patched(|b| b[0] = 0xff));
        assert!(msg.starts_with("bad magic \"\\xffMCF\""), "{msg}");
    }

    #[test]
    fn error_unsupported_version() {
        assert_eq!(
            message(&patched(|b| b[4] = 2)),
            "unsupported version 2 (expected 1)"
        );
    }

    #[test]
    fn error_unknown_pixel_format() {
        for code in [0, 4, 7, 255] {
            assert_eq!(
                message(&patched(|b| b[5] = code)),
                format!("unknown pixel format {code} (expected 1 = mono8, 2 = mono16, 3 = rgb8)")
            );
        }
    }

    #[test]
    fn error_bad_bit_depth() {
        assert_eq!(
            message(&patched(|b| b[6] = 12)),
            "bit depth 12 is invalid for mono8 (expected 0 or 8)"
        );
        assert_eq!(
            message(&patched(|b| {
                b[5] = 3;
                b[6] = 16;
            })),
            "bit depth 16 is invalid for rgb8 (expected 0 or 8)"
        );
        assert_eq!(
            message(&patched(|b| {
                b[5] = 2;
                b[6] = 17;
            })),
            "bit depth 17 is invalid for mono16 (expected 1..=16, or 0 for 16)"
        );
    }

    #[test]
    fn error_unknown_flags() {
        assert_eq!(
            message(&patched(|b| b[7] = 0b101)),
            "unknown flags 0x05 (only bit 0 = timestamp and bit 1 = frame number are defined; \
             other bits must be 0)"
        );
    }

    #[test]
    fn error_zero_size() {
        for (w, h) in [(0, 16), (16, 0), (0, 0)] {
            let b = body(&header(w, h, PixelFormat::Mono8), &[]);
            assert_eq!(
                message(&b),
                format!("width/height 0: frame size {w}x{h} is empty")
            );
        }
    }

    #[test]
    fn error_below_encoder_minimum() {
        let b = body(&header(8, 100, PixelFormat::Mono8), &[0; 800]);
        assert_eq!(message(&b), "frame size 8x100 is below the 16x16 minimum");
    }

    #[test]
    fn error_frame_larger_than_limit() {
        // Rejected from the header alone: no pixels are needed (or allocated).
        let b = body(&header(16_385, 16, PixelFormat::Mono8), &[]);
        assert_eq!(
            message(&b),
            "frame larger than limit: 16385x16 exceeds 16384x16384"
        );
        let b = body(
            &header(16_384, 16_384, PixelFormat::Mono16 { bit_depth: 16 }),
            &[],
        );
        assert_eq!(
            message(&b),
            "frame larger than limit: 16384x16384 mono16 = 536870912 bytes exceeds \
             268435456 bytes (256 MiB)"
        );
        // Exactly at the byte limit is fine as far as the header is concerned.
        let h = header(16_384, 16_384, PixelFormat::Mono8);
        assert_eq!(
            PushHeader::decode(&h.encode()).unwrap().data_len(),
            MAX_PUSH_BYTES
        );
    }

    #[test]
    fn error_pixel_data_length_mismatch() {
        let h = header(640, 480, PixelFormat::Mono16 { bit_depth: 12 });
        assert_eq!(
            message(&body(&h, &[0; 100])),
            "pixel data is 100 bytes but the header says 640x480 mono16 = 614400 bytes"
        );
        assert_eq!(
            message(&body(&h, &vec![0; 614_401])),
            "pixel data is 614401 bytes but the header says 640x480 mono16 = 614400 bytes"
        );
        assert_eq!(
            message(&h.encode()),
            "pixel data is 0 bytes but the header says 640x480 mono16 = 614400 bytes"
        );
    }

    #[test]
    fn error_messages_carry_the_prefix() {
        let e = parse_push_frame(&[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad pushed frame: body is 0 bytes, shorter than the 32-byte header"
        );
    }

    #[test]
    fn unconsumed_frame_is_replaced_and_counted() {
        let (mut source, handle) = push_channel(info());
        for seq in 0..5 {
            handle.push(mono8(seq)).unwrap();
        }
        assert_eq!(handle.frames_received(), 5);
        assert_eq!(handle.frames_replaced(), 4);
        assert_eq!(source.next_frame().unwrap().seq, 4);
        assert!(matches!(
            source.next_frame(),
            Err(CaptureError::NoFrameYet { .. })
        ));
    }

    #[test]
    fn seq_always_increases() {
        let (mut source, handle) = push_channel(info());
        // No frame numbers: a counter.
        let mut seqs = Vec::new();
        for _ in 0..3 {
            handle.push(mono8(0)).unwrap();
            seqs.push(source.next_frame().unwrap().seq);
        }
        assert_eq!(seqs, [0, 1, 2]);
        // Increasing client numbers are kept (gaps included)...
        handle.push(mono8(10)).unwrap();
        assert_eq!(source.next_frame().unwrap().seq, 10);
        handle.push(mono8(12)).unwrap();
        assert_eq!(source.next_frame().unwrap().seq, 12);
        // ...numbers that go back (client restarted) continue the sequence.
        handle.push(mono8(3)).unwrap();
        assert_eq!(source.next_frame().unwrap().seq, 13);
    }

    #[test]
    fn frames_may_differ_from_the_nominal_size() {
        let (mut source, handle) = push_channel(info());
        let h = header(100, 20, PixelFormat::Rgb8);
        let (_, frame) = parse_push_frame(&body(&h, &[9; 6000])).unwrap();
        handle.push(frame).unwrap();
        let f = source.next_frame().unwrap();
        assert_eq!((f.width, f.height, f.format), (100, 20, PixelFormat::Rgb8));
        assert_eq!(source.describe(), info());
    }

    #[test]
    fn next_frame_waits_for_a_push() {
        let (source, handle) = push_channel(info());
        let mut source = source.with_poll_interval(Duration::from_secs(10));
        let pusher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            handle.push(mono8(5)).unwrap();
            handle
        });
        let t0 = Instant::now();
        assert_eq!(source.next_frame().unwrap().seq, 5);
        assert!(
            t0.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t0.elapsed()
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let _handle = pusher.join().unwrap();

        let mut source = source.with_poll_interval(Duration::from_millis(20));
        let t0 = Instant::now();
        assert!(matches!(
            source.next_frame(),
            Err(CaptureError::NoFrameYet { waited }) if waited == Duration::from_millis(20)
        ));
        assert!(
            t0.elapsed() >= Duration::from_millis(15),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn close_delivers_the_pending_frame_then_ends() {
        let (mut source, handle) = push_channel(info());
        let other = handle.clone();
        handle.push(mono8(1)).unwrap();
        other.close();
        assert!(handle.is_closed());
        assert!(matches!(handle.push(mono8(2)), Err(CaptureError::Ended)));
        assert_eq!(source.next_frame().unwrap().seq, 1);
        assert!(matches!(source.next_frame(), Err(CaptureError::Ended)));
        assert!(matches!(source.next_frame(), Err(CaptureError::Ended)));
    }

    #[test]
    fn dropping_every_handle_ends_the_source() {
        let (mut source, handle) = push_channel(info());
        let clone = handle.clone();
        drop(handle);
        assert!(matches!(
            source.next_frame(),
            Err(CaptureError::NoFrameYet { .. })
        ));
        clone.push(mono8(3)).unwrap();
        drop(clone);
        assert_eq!(source.next_frame().unwrap().seq, 3);
        assert!(matches!(source.next_frame(), Err(CaptureError::Ended)));
    }

    #[test]
    fn push_fails_once_the_source_is_gone() {
        let (source, handle) = push_channel(info());
        assert!(!handle.is_closed());
        drop(source);
        assert!(handle.is_closed());
        assert!(matches!(handle.push(mono8(0)), Err(CaptureError::Ended)));
        assert_eq!(handle.frames_received(), 0);
    }

    #[test]
    fn delivers_through_capture_thread_and_stops_promptly_when_closed() {
        let (source, handle) = push_channel(info());
        let (tx, rx) = latest_queue();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn_capture("push".into(), Box::new(source), tx, stop).unwrap();
        let h = header(32, 16, PixelFormat::Mono16 { bit_depth: 12 });
        for n in 0..5u64 {
            let mut hn = h;
            hn.frame_number = Some(100 + n);
            let data: Vec<u8> = (0..h.data_len()).map(|i| (i as u64 + n) as u8).collect();
            let (_, frame) = parse_push_frame(&body(&hn, &data)).unwrap();
            handle.push(frame).unwrap();
            let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(got.seq, 100 + n);
            assert_eq!(got.data, data);
        }
        let t0 = Instant::now();
        handle.close();
        thread.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(1)).unwrap_err(),
            RecvError::Disconnected
        );
        // The detector is gone: the HTTP layer learns it from push().
        assert!(matches!(handle.push(mono8(0)), Err(CaptureError::Ended)));
    }

    #[test]
    fn capture_thread_stops_on_stop_flag_while_nobody_pushes() {
        let (source, handle) = push_channel(info());
        let (tx, rx) = latest_queue();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn_capture("idle".into(), Box::new(source), tx, stop.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        assert!(!thread.is_finished(), "NoFrameYet must not end the capture");
        let t0 = Instant::now();
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        // At most one poll interval (100 ms), with a generous margin for slow CI.
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(matches!(handle.push(mono8(0)), Err(CaptureError::Ended)));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(1)).unwrap_err(),
            RecvError::Disconnected
        );
    }
}
