//! An interceptor that hands PLI and FIR to the application, so a viewer's keyframe
//! request reaches the encoder (webrtc-rs does not deliver inbound RTCP by default).

use crate::bwe::{EstimateSnapshot, LinkEstimator, PacketFate};
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::interceptor::{BandwidthEstimator, PacketReport};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Default)]
pub(crate) struct KeyframeRequestForwarder {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
    /// The viewer's latest REMB (receiver-estimated maximum bitrate), bits per second.
    pub(crate) remb: Option<Arc<AtomicU64>>,
}

impl KeyframeRequestForwarder {
    pub(crate) fn with_remb(remb: Arc<AtomicU64>) -> Self {
        KeyframeRequestForwarder {
            remb: Some(remb),
            ..Default::default()
        }
    }
}

/// Estimators run inside webrtc-rs's congestion control interceptor, where the viewer
/// task cannot reach them: this one publishes each new estimate where it can.
pub(crate) struct PublishingEstimator {
    pub(crate) inner: LinkEstimator,
    pub(crate) out: Arc<Mutex<EstimateSnapshot>>,
}

impl BandwidthEstimator for PublishingEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        let batch: Vec<PacketFate> = reports
            .iter()
            .map(|r| PacketFate {
                departure: r.departure,
                arrival: if r.arrived { r.arrival } else { None },
                size: r.size,
            })
            .collect();
        self.inner.on_feedback(now, &batch);
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = self.inner.snapshot(now);
    }

    fn target_bitrate(&self) -> f64 {
        self.inner.bitrate_bps()
    }
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if let Some(remb) = &self.remb {
                for p in packets.iter() {
                    if let Some(r) = p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                        remb.store(r.bitrate.max(0.0) as u64, Ordering::Relaxed);
                    }
                }
            }
            if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                // Mark the compound packet for delivery; the other interceptors have seen
                // it already (reports, NACK), so passing it whole costs nothing.
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// True when an RTCP batch holds a PLI or FIR.
pub(crate) fn has_keyframe_request(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| is_keyframe_request(p.as_ref()))
}

/// Makes an interceptor that keys on local SSRCs see a stream's RTX (RFC 4588) repair
/// SSRC as a stream of its own, with the same header extensions.
///
/// webrtc-rs' transport-wide sequence numbering and its send history only know the
/// streams they were bound to, and a repair SSRC is not one: retransmissions and padding
/// on it would leave without a transport-wide number, the viewer could not report them,
/// and the estimate would never see the bytes they carry (padding exists only to be
/// seen). Wrapped, the inner interceptor is bound to the repair SSRC too.
pub(crate) struct RtxAlias<I>(pub(crate) I);

fn repair_stream(info: &StreamInfo) -> Option<StreamInfo> {
    info.ssrc_rtx.map(|rtx| StreamInfo {
        ssrc: rtx,
        ssrc_rtx: None,
        payload_type: info.payload_type_rtx.unwrap_or(info.payload_type),
        payload_type_rtx: None,
        ..info.clone()
    })
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for RtxAlias<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.0.handle_read(msg)
    }
    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.0.poll_read()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.0.handle_write(msg)
    }
    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.0.poll_write()
    }
    fn handle_event(&mut self, evt: ()) -> Result<(), Self::Error> {
        self.0.handle_event(evt)
    }
    fn poll_event(&mut self) -> Option<Self::Eout> {
        self.0.poll_event()
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.0.handle_timeout(now)
    }
    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.0.poll_timeout()
    }
    fn close(&mut self) -> Result<(), Self::Error> {
        self.0.close()
    }
}

impl<I: Interceptor> Interceptor for RtxAlias<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.0.bind_local_stream(info);
        if let Some(repair) = repair_stream(info) {
            self.0.bind_local_stream(&repair);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(repair) = repair_stream(info) {
            self.0.unbind_local_stream(&repair);
        }
        self.0.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::interceptor::{AttributedPacket, TwccSenderBuilder};
    use rtc::shared::TransportContext;

    fn packet(ssrc: u32) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc,
                    ..Default::default()
                },
                payload: vec![0u8; 100].into(),
            })),
        }
    }

    #[test]
    fn repair_packets_get_transport_wide_numbers_too() {
        let info = StreamInfo {
            ssrc: 1,
            ssrc_rtx: Some(2),
            payload_type: 102,
            payload_type_rtx: Some(103),
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_string(),
                id: 5,
            }],
            ..Default::default()
        };
        let numbered = |alias: bool| {
            let mut plain = TwccSenderBuilder::new().build();
            let mut wrapped = RtxAlias(TwccSenderBuilder::new().build());
            let i: &mut dyn Interceptor = if alias { &mut wrapped } else { &mut plain };
            i.bind_local_stream(&info);
            [1u32, 2, 3]
                .map(|ssrc| {
                    i.handle_write(packet(ssrc)).unwrap();
                    match i.poll_write().unwrap().message.packet {
                        Packet::Rtp(p) => p.header.get_extension(5).is_some(),
                        _ => false,
                    }
                })
                .to_vec()
        };
        assert_eq!(numbered(false), vec![true, false, false]);
        assert_eq!(numbered(true), vec![true, true, false]);
    }
}
