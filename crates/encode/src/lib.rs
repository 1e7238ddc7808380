//! H.264 encoding for lumacast: a synchronous wrapper around openh264 (`openh264-sys2`, bundled
//! C++ built from source) tuned for the lowest frame-to-packet latency, plus a decoder for tests
//! and latency probes, and Annex-B helpers.
//!
//! # Stream properties
//!
//! Every [`Encoder`] produces constrained-baseline H.264 (`profile_idc` 66 with
//! constraint_set0/1 flags, i.e. profile-level-id `42c0xx`; level 3.1 up to 1280x720 at 30 fps,
//! openh264's choice for larger pictures), CAVLC, no B-frames, one reference frame, and:
//!
//! - one complete access unit per [`Encoder::encode`] call (no lookahead, no frame delay);
//! - bitrate rate control (`RC_BITRATE_MODE`) with frame skipping **off**, peak limit twice the
//!   target, QP 12..=51;
//! - IDR frames on the first frame, every [`EncoderConfig::keyframe_interval`] frames, and after
//!   [`Encoder::request_keyframe`]; each IDR access unit begins with SPS and PPS, whose ids never
//!   change (`CONSTANT_ID`), so any IDR is a valid entry point for a joining viewer;
//! - no SEI, no prefix NAL units, no scene-change I frames, no denoising or background detection;
//! - VUI with the sample range ([`EncoderConfig::full_range`], full by default, as
//!   `lumacast_frame` produces for monochrome data) and BT.601 colour description.
//!
//! Default sizes-dependent settings come from [`EncoderConfig::new`]; a frame whose size differs
//! from the configuration is rejected ([`EncodeError::SizeMismatch`]), re-create the encoder.
//!
//! Assembly: openh264 is 2.5-3x faster with its nasm-built SIMD code; [`build_info`] tells
//! whether the linked library has it (and how to fix it when not).

mod build_info;
mod config;
mod decoder;
mod encoder;
mod error;
mod nal;
mod trace;

pub use build_info::{build_info, BuildInfo};
pub use config::{
    default_bitrate_bps, Complexity, EncoderConfig, MAX_BITRATE_BPS, MAX_DIMENSION, MAX_FPS,
    MAX_MACROBLOCKS, MAX_SLICES, MAX_THREADS, MIN_BITRATE_BPS, MIN_DIMENSION, MIN_FPS,
};
pub use decoder::{DecodedPicture, Decoder};
pub use encoder::{EncodedFrame, Encoder, MAX_QP, MIN_QP};
pub use error::EncodeError;
pub use nal::{nal_type, split_nals, NAL_IDR, NAL_PPS, NAL_SEI, NAL_SLICE, NAL_SPS};
