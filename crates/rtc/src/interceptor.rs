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
