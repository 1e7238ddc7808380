//! Header extensions we fill in for viewers that negotiate them: playout delay on every
//! packet, the capture time on each frame's first packet.

/// The playout-delay header extension: the receiver's render delay bounds, per frame.
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
/// The absolute-capture-time header extension: when the frame was captured (NTP time).
pub const ABS_CAPTURE_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Bounds on how long a viewer's browser may hold a frame before rendering it, sent in
/// the playout-delay RTP header extension to viewers that offer it (Chromium does).
/// `0, 0` asks for each frame to be rendered as soon as it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutDelay {
    /// Milliseconds, in steps of 10, at most 40 950.
    pub min_ms: u16,
    pub max_ms: u16,
}

impl PlayoutDelay {
    /// The extension's 3 bytes: two 12-bit values in units of 10 ms.
    pub fn payload(self) -> [u8; 3] {
        let min = (self.min_ms / 10).min(0xfff);
        let max = (self.max_ms / 10).min(0xfff).max(min);
        [
            (min >> 4) as u8,
            (((min & 0xf) << 4) | (max >> 8)) as u8,
            (max & 0xff) as u8,
        ]
    }
}

/// The absolute-capture-time extension's 8 bytes: the capture time as a 64-bit NTP
/// timestamp (UQ32.32 seconds since 1900).
pub fn abs_capture_time(captured_us: u64) -> [u8; 8] {
    const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;
    let secs = captured_us / 1_000_000 + NTP_UNIX_OFFSET_S;
    let frac = ((captured_us % 1_000_000) << 32) / 1_000_000;
    (((secs & 0xffff_ffff) << 32) | frac).to_be_bytes()
}

/// The id our answer gave `uri` (`a=extmap:<id>[/direction] <uri>`).
pub(super) fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.trim_end().strip_prefix("a=extmap:")?;
        let (id, u) = rest.split_once(' ')?;
        let u = u.split_whitespace().next()?;
        (u == uri).then_some(())?;
        id.split('/').next()?.parse().ok()
    })
}

/// Header extensions this viewer negotiated that we fill in: their ids in the answer.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SendExtensions {
    pub(super) playout_delay: Option<(u8, [u8; 3])>,
    pub(super) abs_capture_time: Option<u8>,
}

#[cfg(test)]
mod extension_tests {
    use super::*;

    #[test]
    fn header_extension_payloads() {
        let d = |min_ms, max_ms| PlayoutDelay { min_ms, max_ms }.payload();
        assert_eq!(d(0, 0), [0, 0, 0]);
        // 100 ms = 10 units, 1 s = 100 units: 0x00a, 0x064.
        assert_eq!(d(100, 1000), [0x00, 0xa0, 0x64]);
        assert_eq!(d(40_950, 40_950), [0xff, 0xff, 0xff]);
        // 2026-12-07 00:00:00.5 UTC as NTP: seconds since 1900, then half a second.
        let t = abs_capture_time(1796601600 * 1_000_000 + 500_000);
        assert_eq!(t, [0xee, 0xc0, 0x75, 0x80, 0x80, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn extension_ids_are_read_from_the_answer() {
        let sdp = "v=0\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:5/sendonly http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n";
        assert_eq!(extmap_id(sdp, PLAYOUT_DELAY_URI), Some(5));
        assert_eq!(extmap_id(sdp, ABS_CAPTURE_TIME_URI), None);
    }
}
