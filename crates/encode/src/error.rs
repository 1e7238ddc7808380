//! Error type shared by the encoder and the decoder.

/// Everything that can go wrong while configuring, encoding or decoding.
///
/// Native failures carry the openh264 function name and its return code; size problems carry
/// both the expected and the offending sizes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The [`EncoderConfig`](crate::EncoderConfig) cannot be used (the message says which field
    /// and the accepted range).
    #[error("invalid encoder config: {0}")]
    InvalidConfig(String),

    /// The frame's dimensions differ from the encoder's; re-create the encoder for the new size.
    #[error(
        "frame is {frame_width}x{frame_height} but the encoder was configured for \
         {width}x{height}: re-create the encoder for the new size"
    )]
    SizeMismatch {
        /// Configured width.
        width: u32,
        /// Configured height.
        height: u32,
        /// Width of the offending frame.
        frame_width: u32,
        /// Height of the offending frame.
        frame_height: u32,
    },

    /// A plane of the frame is shorter than its dimensions require.
    #[error(
        "{plane} plane of a {width}x{height} I420 frame has {actual} bytes, expected at least {expected}"
    )]
    BadPlane {
        /// `"Y"`, `"U"` or `"V"`.
        plane: &'static str,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Minimum length for these dimensions.
        expected: usize,
        /// Actual length.
        actual: usize,
    },

    /// An openh264 call returned a failure code.
    #[error("openh264 {function} failed with code {code} ({width}x{height})")]
    Native {
        /// The openh264 function (vtable entry) that failed.
        function: &'static str,
        /// Its return code (`CM_RETURN` for the encoder, `DECODING_STATE` bits for the decoder).
        code: i64,
        /// Frame width involved (0 if unknown).
        width: u32,
        /// Frame height involved (0 if unknown).
        height: u32,
    },

    /// The openh264 decoder reported a bitstream problem.
    #[error("openh264 DecodeFrameNoDelay returned state {state:#x} ({description}) for {len} input bytes")]
    Decode {
        /// The raw `DECODING_STATE` bit set.
        state: i32,
        /// Human-readable names of the set bits.
        description: String,
        /// Length of the access unit handed to the decoder.
        len: usize,
    },

    /// The openh264 object returned a vtable without a function this wrapper needs.
    #[error("openh264 vtable entry {0} is missing")]
    MissingFunction(&'static str),
}
