//! Packetize once: an Annex-B access unit becomes RTP payloads that every viewer shares.

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use std::time::Instant;

/// RTP payload size limit: leaves room for RTP/SRTP/UDP/IP headers inside a 1280-byte path
/// MTU (the IPv6 minimum), so nothing is fragmented on the way.
pub const RTP_MTU: usize = 1200;

/// One encoded frame, ready for any number of viewers.
#[derive(Debug, Clone)]
pub struct MediaFrame {
    /// Detector sequence number of the frame this came from.
    pub seq: u64,
    /// RTP timestamp (90 kHz) relative to the detector's start; viewers add their own offset.
    pub rtp_ts: u32,
    /// True when this is an IDR access unit carrying SPS and PPS.
    pub keyframe: bool,
    /// RTP payloads in order; the last one gets the marker bit.
    pub payloads: Vec<Bytes>,
    /// When the frame left the detector (monotonic clock).
    pub captured: Instant,
    /// Capture time in microseconds since the UNIX epoch (what the stripe says).
    pub captured_us: u64,
    /// When the encoder finished this access unit.
    pub encoded: Instant,
    /// The ladder step this frame belongs to (0 = full size).
    pub rendition: usize,
}

impl MediaFrame {
    /// Total payload bytes of this frame.
    pub fn bytes(&self) -> usize {
        self.payloads.iter().map(Bytes::len).sum()
    }
}

/// H.264 RTP packetizer (RFC 6184, packetization-mode 1: single NAL, STAP-A, FU-A).
#[derive(Debug, Default)]
pub struct Packetizer {
    payloader: H264Payloader,
}

impl Packetizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Splits an Annex-B access unit into RTP payloads of at most [`RTP_MTU`] bytes.
    pub fn packetize(&mut self, access_unit: Bytes) -> Vec<Bytes> {
        // The payloader only fails on an empty MTU, which RTP_MTU is not.
        self.payloader
            .payload(RTP_MTU, &access_unit)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_nal_is_fragmented_and_sps_pps_aggregated() {
        let mut au = vec![
            0, 0, 0, 1, 0x67, 1, 2, 3, 0, 0, 0, 1, 0x68, 4, 5, 0, 0, 0, 1, 0x65,
        ];
        au.extend(std::iter::repeat_n(0x11u8, 5000));
        let payloads = Packetizer::new().packetize(Bytes::from(au));
        assert!(payloads.len() >= 5);
        assert!(payloads.iter().all(|p| p.len() <= RTP_MTU));
        // first payload: STAP-A (24) with SPS+PPS, or FU-A (28) start of the IDR
        assert_eq!(payloads[0][0] & 0x1f, 24);
        assert_eq!(payloads[1][0] & 0x1f, 28);
    }
}
