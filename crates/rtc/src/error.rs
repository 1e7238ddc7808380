/// Errors of the WebRTC layer. The HTTP edge maps them to status codes:
/// `BadSdp` → 400, `NoVideo`/`NoH264` → 422, `TooManyViewers` → 503, the rest → 500.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("the offer is not valid SDP: {0}")]
    BadSdp(String),
    #[error("the offer has no video section to answer")]
    NoVideo,
    #[error("the offer's video section has no H.264 with packetization-mode=1 (offered: {0})")]
    NoH264(String),
    #[error("the offer cannot be answered: {0}")]
    Unanswerable(String),
    #[error("too many viewers: the limit of {0} is reached")]
    TooManyViewers(usize),
    #[error("the frame source is stopped")]
    SourceStopped,
    #[error("no viewer session {0}")]
    NoSession(u64),
    /// A trickle-ICE fragment that restarts ICE (new ufrag/pwd): not supported.
    #[error("ICE restarts are not supported: the fragment carries a new ice-ufrag")]
    IceRestart,
    /// A trickle-ICE fragment without usable candidates or with a malformed one.
    #[error("bad trickle-ICE fragment: {0}")]
    BadFragment(String),
    /// A WebRTC setting that cannot work (unknown interface, port in use).
    #[error("WebRTC configuration: {0}")]
    Config(String),
    #[error("WebRTC {context}: {message}")]
    WebRtc {
        context: &'static str,
        message: String,
    },
}

impl RtcError {
    pub(crate) fn webrtc(context: &'static str, err: impl std::fmt::Display) -> Self {
        RtcError::WebRtc {
            context,
            message: err.to_string(),
        }
    }
}
