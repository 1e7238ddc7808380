//! The per-frame metadata channel: a data channel a viewer may open (any label) on
//! which the server describes every frame it sends that viewer, and answers clock pings.
//!
//! Messages, one JSON object per text message:
//! - server → viewer, per frame, when its last packet is handed to the transport:
//!   `{"type":"frame","seq":N,"rtp_ts":T,"captured_us":C,"encode_us":E,"send_us":S,
//!   "keyframe":K,"bytes":B,"rendition":R,"width":W,"height":H}`: `seq` is the detector's
//!   frame number (gaps are frames this viewer never got), `rtp_ts` the RTP timestamp as
//!   this viewer receives it (what `requestVideoFrameCallback` reports as
//!   `rtpTimestamp`), `captured_us` the detector's capture time in µs since the UNIX
//!   epoch, `encode_us` capture → encoded, `send_us` capture → last packet handed over.
//! - viewer → server `{"type":"ping","t":X}` (any number X, e.g. the page's clock in ms);
//!   server → viewer `{"type":"pong","t":X,"server_us":U}` with the server's UNIX time in
//!   µs when it answered. The viewer's clock offset is `U/1000 - (t0 + t1)/2` from the
//!   ping with the shortest round trip.
//!
//! Bounded: the channel's send buffer is limited
//! (the viewer's peer connection is built with [`SEND_BUFFER_LIMIT`]); a message
//! that does not fit is dropped and counted, never queued.

use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most bytes waiting in a viewer's data channel send buffer (about 200 frame messages).
pub const SEND_BUFFER_LIMIT: usize = 64 * 1024;
/// Longest message a viewer may send us; longer ones are ignored.
pub const MAX_MESSAGE: usize = 1024;

/// What the server says of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    pub seq: u64,
    pub rtp_ts: u32,
    pub captured_us: u64,
    pub encode_us: u64,
    pub send_us: u64,
    pub keyframe: bool,
    pub bytes: u64,
    pub rendition: usize,
    pub width: u32,
    pub height: u32,
}

impl FrameMeta {
    /// The frame message.
    pub fn message(&self) -> String {
        json!({
            "type": "frame",
            "seq": self.seq,
            "rtp_ts": self.rtp_ts,
            "captured_us": self.captured_us,
            "encode_us": self.encode_us,
            "send_us": self.send_us,
            "keyframe": self.keyframe,
            "bytes": self.bytes,
            "rendition": self.rendition,
            "width": self.width,
            "height": self.height,
        })
        .to_string()
    }
}

/// The server's UNIX time in µs.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The answer to a viewer's message, if it is a ping: the pong, stamped `server_us`.
pub fn answer(message: &[u8], server_us: u64) -> Option<String> {
    if message.len() > MAX_MESSAGE {
        return None;
    }
    let v: Value = serde_json::from_slice(message).ok()?;
    if v.get("type")?.as_str()? != "ping" {
        return None;
    }
    let t = v.get("t")?.as_f64()?;
    Some(json!({"type": "pong", "t": t, "server_us": server_us}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_get_pongs_and_anything_else_nothing() {
        let pong = answer(br#"{"type":"ping","t":1234.5}"#, 42).unwrap();
        let v: Value = serde_json::from_str(&pong).unwrap();
        assert_eq!(v["type"], "pong");
        assert_eq!(v["t"], 1234.5);
        assert_eq!(v["server_us"], 42);
        assert_eq!(answer(b"hello", 1), None);
        assert_eq!(answer(br#"{"type":"frame"}"#, 1), None);
        assert_eq!(answer(br#"{"type":"ping"}"#, 1), None);
        let big = format!(
            r#"{{"type":"ping","t":1,"pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE)
        );
        assert_eq!(answer(big.as_bytes(), 1), None);
    }

    #[test]
    fn a_frame_message_names_every_field() {
        let m = FrameMeta {
            seq: 7,
            rtp_ts: 3_000_000_000,
            captured_us: 1_796_601_600_000_000,
            encode_us: 4_100,
            send_us: 5_000,
            keyframe: true,
            bytes: 98_765,
            rendition: 1,
            width: 640,
            height: 360,
        };
        let v: Value = serde_json::from_str(&m.message()).unwrap();
        assert_eq!(v["type"], "frame");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["rtp_ts"], 3_000_000_000u32);
        assert_eq!(v["captured_us"], 1_796_601_600_000_000u64);
        assert_eq!(v["keyframe"], true);
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(640), Some(360))
        );
        assert_eq!(v.as_object().unwrap().len(), 11);
    }
}
