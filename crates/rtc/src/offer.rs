//! Pure analysis of a remote offer: is it SDP, does it want video, which H.264 can we answer.
//! No sockets, no state: tested on golden SDPs.

use crate::RtcError;
use std::io::Cursor;

/// Offers larger than this are refused before parsing (a browser's offer is a few KB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// The H.264 format chosen from an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Choice {
    /// The offerer's payload type for it (we answer with the same number).
    pub payload_type: u8,
    /// `profile-level-id` as offered, lower-case hex (e.g. `42e01f`).
    pub profile_level_id: String,
    /// The fmtp line we register and answer with.
    pub fmtp: String,
    /// The offerer's RTX (RFC 4588) payload type for this format (`apt=` it), if offered.
    pub rtx_payload_type: Option<u8>,
}

/// Checks that `sdp` parses, has a video m-section, and picks the H.264 format to answer:
/// packetization-mode=1, preferring the profiles in [`crate::PREFERRED_PROFILES`], then
/// any other constrained-baseline/baseline (`42xxxx`), then any H.264.
pub fn analyze_offer(sdp: &str) -> Result<H264Choice, RtcError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(RtcError::BadSdp(format!(
            "offer is {} bytes, the limit is {MAX_SDP_BYTES}",
            sdp.len()
        )));
    }
    if !sdp.starts_with("v=0") {
        return Err(RtcError::BadSdp("it does not start with \"v=0\"".into()));
    }
    let mut reader = Cursor::new(sdp.as_bytes());
    rtc::sdp::description::session::SessionDescription::unmarshal(&mut reader)
        .map_err(|e| RtcError::BadSdp(e.to_string()))?;

    // Walk the m-sections textually: the parsed form loses nothing we need, but this keeps
    // the fmtp handling obvious and independent of the parser's codec map.
    let mut in_video = false;
    let mut saw_video = false;
    let mut rtpmap: Vec<(u8, String)> = Vec::new();
    let mut fmtp: Vec<(u8, String)> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ");
            if in_video {
                // port 0 means a rejected/disabled section
                saw_video |= !m.starts_with("video 0 ");
            }
            continue;
        }
        if !in_video {
            continue;
        }
        if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            if let Some((pt, codec)) = rest.split_once(' ') {
                if let Ok(pt) = pt.parse::<u8>() {
                    rtpmap.push((pt, codec.to_string()));
                }
            }
        } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
            if let Some((pt, params)) = rest.split_once(' ') {
                if let Ok(pt) = pt.parse::<u8>() {
                    fmtp.push((pt, params.to_string()));
                }
            }
        }
    }
    if !saw_video {
        return Err(RtcError::NoVideo);
    }

    let mut candidates: Vec<(u8, H264Choice)> = Vec::new();
    for (pt, codec) in &rtpmap {
        let name = codec.split('/').next().unwrap_or("");
        if !name.eq_ignore_ascii_case("H264") {
            continue;
        }
        let params = fmtp
            .iter()
            .find(|(p, _)| p == pt)
            .map(|(_, s)| s.as_str())
            .unwrap_or("");
        let mut mode = "0";
        let mut profile = String::from("42001f"); // RFC 6184 default
        for kv in params.split(';') {
            let (k, v) = kv.trim().split_once('=').unwrap_or((kv.trim(), ""));
            match k {
                "packetization-mode" => mode = v,
                "profile-level-id" => profile = v.to_ascii_lowercase(),
                _ => {}
            }
        }
        if mode != "1" || profile.len() != 6 {
            continue;
        }
        let rank = match crate::PREFERRED_PROFILES.iter().position(|p| *p == profile) {
            Some(i) => i as u8,
            None if profile.starts_with("42") => 10,
            None => 20,
        };
        candidates.push((
            rank,
            H264Choice {
                payload_type: *pt,
                fmtp: format!(
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                ),
                profile_level_id: profile,
                rtx_payload_type: rtpmap.iter().find_map(|(rtx, codec)| {
                    let is_rtx = codec
                        .split('/')
                        .next()
                        .is_some_and(|n| n.eq_ignore_ascii_case("rtx"));
                    let apt = format!("apt={pt}");
                    let repairs = fmtp.iter().any(|(p, params)| {
                        p == rtx && params.split(';').any(|kv| kv.trim() == apt)
                    });
                    (is_rtx && repairs).then_some(*rtx)
                }),
            },
        ));
    }
    candidates.sort_by_key(|(rank, c)| (*rank, c.payload_type));
    match candidates.into_iter().next() {
        Some((_, choice)) => Ok(choice),
        None => {
            let offered: Vec<String> = rtpmap.iter().map(|(pt, c)| format!("{pt} {c}")).collect();
            Err(RtcError::NoH264(if offered.is_empty() {
                "nothing".into()
            } else {
                offered.join(", ")
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(video: &str) -> String {
        format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n{video}")
    }

    const CHROME_VIDEO: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96 102 103 127\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\na=rtpmap:103 H264/90000\r\na=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\na=rtpmap:127 H264/90000\r\na=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn prefers_constrained_baseline_mode_1() {
        let c = analyze_offer(&offer(CHROME_VIDEO)).unwrap();
        assert_eq!(c.payload_type, 127);
        assert_eq!(c.profile_level_id, "42e01f");
    }

    #[test]
    fn finds_the_rtx_format_of_the_chosen_one() {
        let v = format!(
            "{CHROME_VIDEO}a=rtpmap:104 rtx/90000\r\na=fmtp:104 apt=103\r\na=rtpmap:125 rtx/90000\r\na=fmtp:125 apt=127\r\n"
        );
        let c = analyze_offer(&offer(&v)).unwrap();
        assert_eq!((c.payload_type, c.rtx_payload_type), (127, Some(125)));
        assert_eq!(
            analyze_offer(&offer(CHROME_VIDEO))
                .unwrap()
                .rtx_payload_type,
            None
        );
    }

    #[test]
    fn takes_42001f_when_that_is_all() {
        let v = "m=video 9 UDP/TLS/RTP/SAVPF 103\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:103 H264/90000\r\na=fmtp:103 packetization-mode=1;profile-level-id=42001F\r\n";
        let c = analyze_offer(&offer(v)).unwrap();
        assert_eq!(
            (c.payload_type, c.profile_level_id.as_str()),
            (103, "42001f")
        );
    }

    #[test]
    fn rejects_garbage_and_audio_only_and_vp8_only() {
        assert!(matches!(analyze_offer("hello"), Err(RtcError::BadSdp(_))));
        let audio = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(matches!(
            analyze_offer(&offer(audio)),
            Err(RtcError::NoVideo)
        ));
        let vp8 = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n";
        match analyze_offer(&offer(vp8)) {
            Err(RtcError::NoH264(s)) => assert!(s.contains("VP8")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_huge_offers_before_parsing() {
        let big = format!("v=0\r\n{}", "a=x\r\n".repeat(20_000));
        assert!(matches!(analyze_offer(&big), Err(RtcError::BadSdp(_))));
    }
}
