//! WebRTC for lumacast: answering viewers' offers, packetizing H.264 once and fanning the
//! same RTP payloads out to every viewer, and a small receiving client used by tests and
//! the latency probe.
//!
//! This is the only crate of the workspace that names webrtc-rs (`webrtc`, `rtc`) types;
//! everything it exports is plain Rust, tokio or `bytes`.
//!
//! Invariants:
//! - an access unit is packetized once ([`Packetizer`]), whatever the number of viewers;
//!   viewers share the payload `Bytes` and only write their own RTP headers;
//! - the fan-out is a bounded `tokio::sync::broadcast` of [`MediaFrame`]s: a viewer that
//!   falls behind loses frames (it is then resynchronised on the next keyframe, which it
//!   requests), it never delays the encoder or the other viewers;
//! - a viewer's first frame is a keyframe: it asks for one when it connects and skips
//!   everything before it;
//! - every wait has a bound: ICE gathering, connecting, and the whole session lifetime is
//!   tied to the detector's frame bus.

mod bus;
pub mod bwe;
mod client;
mod error;
mod interceptor;
pub mod ladder;
pub mod meta;
mod mux;
mod nack;
mod netif;
pub mod offer;
pub mod pacing;
mod packetize;
mod runtime;
mod tcpmux;
mod viewer;
pub mod wire;

pub use bus::{FrameBus, KeyframeRequest, MAX_RENDITIONS};
pub use bwe::{EstimateSnapshot, LinkEstimator};
pub use client::ClientOptions;
pub use client::ClientStats;
pub use client::{ClientEvent, ReceivedFrame, ViewerClient};
pub use error::RtcError;
pub use ladder::{ladder, Rendition, RenditionChooser};
pub use mux::{MuxStats, UdpMux};
pub use netif::interface_addrs;
pub use offer::{analyze_offer, H264Choice};
pub use packetize::{MediaFrame, Packetizer, RTP_MTU};
pub use runtime::UDP_BUFFER_BYTES;
pub use tcpmux::IceTcpMux;
pub use viewer::{
    abs_capture_time, answer_offer, offer_publish, IceParams, IceRestarted, LinkStats,
    PlayoutDelay, PublishOffer, PublishSession, RtcConfig, ViewerRegistry, ViewerSession,
    ViewerSnapshot, ABS_CAPTURE_TIME_URI, PLAYOUT_DELAY_URI,
};

/// The H.264 profiles we can answer, in order of preference. Our encoder produces
/// constrained baseline, which every H.264 decoder accepts.
pub const PREFERRED_PROFILES: &[&str] = &["42e01f", "42001f"];
