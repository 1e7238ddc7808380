//! Offers recorded from a real browser, and the fuzz seeds, through the real router.
//!
//! `tests/data/offers/chromium-*-{whep,page}.sdp` are what Debian's Chromium sends: a plain
//! receive-only video offer (any WHEP player) and our page's offer (abs-capture-time asked
//! for, the metadata data channel). Re-record them with
//! `node tests/browser/record_offers.mjs tests/data/offers` after a Chromium upgrade. Each
//! is answered, over the JSON API and WHEP, with what the README promises a browser gets:
//! H.264 constrained baseline in packetization mode 1, RTX, transport-wide feedback,
//! playout delay, and for the page the capture time and the data channel. (Playing them is
//! the browser tests' part: tests/browser.rs.) Firefox: Debian's `firefox-esr` cannot be
//! driven by playwright-core here, so no Firefox offer is recorded.
//!
//! The fuzz seeds (`fuzz/seeds/offer/`) are replayed as the fuzz target sends them: the raw
//! bytes as a JSON body, inside a JSON body, and as a WHEP body. None may answer 5xx, and
//! the server keeps serving.

mod common;

use common::{http_with, TestServer};
use serde_json::Value;
use std::path::PathBuf;

fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// The payload type the answer gives `name` (`a=rtpmap:PT name/...`).
fn rtpmap(sdp: &str, name: &str) -> Vec<u8> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, c)| {
            c.to_ascii_lowercase()
                .starts_with(&name.to_ascii_lowercase())
        })
        .filter_map(|(pt, _)| pt.parse().ok())
        .collect()
}

fn check_answer(name: &str, offer: &str, answer: &str) {
    let h264 = rtpmap(answer, "H264/");
    assert_eq!(
        h264.len(),
        1,
        "{name}: one H.264 format answered:\n{answer}"
    );
    let pt = h264[0];
    assert!(
        answer.contains(&format!("a=fmtp:{pt} "))
            && answer.contains("packetization-mode=1")
            && answer.contains("profile-level-id=42e01f"),
        "{name}: constrained baseline, mode 1:\n{answer}"
    );
    // RTX for that format, with its repair stream.
    let rtx = rtpmap(answer, "rtx/");
    assert!(
        rtx.iter()
            .any(|r| answer.contains(&format!("a=fmtp:{r} apt={pt}"))),
        "{name}: RTX for payload type {pt}:\n{answer}"
    );
    assert!(
        answer.contains("a=ssrc-group:FID "),
        "{name}: repair SSRC:\n{answer}"
    );
    for (uri, what) in [
        (
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "transport-wide sequence numbers",
        ),
        (
            "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
            "playout delay",
        ),
    ] {
        assert!(answer.contains(uri), "{name}: {what} negotiated:\n{answer}");
    }
    assert!(answer.contains("a=rtcp-fb:") && answer.contains(" transport-cc"));
    assert!(answer.contains(" nack\r\n") && answer.contains(" nack pli"));
    let abs = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";
    assert_eq!(
        answer.contains(abs),
        offer.contains(abs),
        "{name}: capture time negotiated exactly when offered"
    );
    assert_eq!(
        answer.contains("m=application "),
        offer.contains("m=application "),
        "{name}: the data channel answered exactly when offered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_recorded_from_chromium_are_answered_with_everything_promised() {
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| c.max_offers_per_sec = 0.0).await;
    let offers = files("tests/data/offers", ".sdp");
    assert!(
        offers
            .iter()
            .any(|p| p.to_string_lossy().contains("chromium")),
        "no recorded Chromium offer in tests/data/offers"
    );
    for path in &offers {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let offer = std::fs::read_to_string(path).unwrap();
        // The JSON API (ImSwitch's shape)...
        let body = serde_json::json!({"sdp": offer, "type": "offer"}).to_string();
        let (st, j) = server.post("/LiveViewController/webrtc_offer", &body).await;
        assert_eq!(st, 200, "{name}: {j}");
        check_answer(&name, &offer, j["sdp"].as_str().expect("an answer"));
        // ...and WHEP.
        let (st, headers, answer) = http_with(
            server.addr,
            "POST",
            "/whep/synthetic",
            &[("Content-Type", "application/sdp")],
            Some(offer.as_bytes()),
        )
        .await;
        assert_eq!(st, 201, "{name} over WHEP: {headers}");
        check_answer(&name, &offer, &String::from_utf8_lossy(&answer));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fuzz_seeds_get_no_5xx_and_the_server_keeps_serving() {
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| c.max_offers_per_sec = 0.0).await;
    let seeds = files("fuzz/seeds/offer", "");
    assert!(seeds.len() >= 3, "fuzz seeds missing: {seeds:?}");
    for path in &seeds {
        let data = std::fs::read(path).unwrap();
        let name = path.display();
        let wrapped = serde_json::json!({"sdp": String::from_utf8_lossy(&data), "type": "offer"})
            .to_string()
            .into_bytes();
        for (path, content_type, body) in [
            (
                "/LiveViewController/webrtc_offer",
                "application/json",
                &data,
            ),
            (
                "/LiveViewController/webrtc_offer",
                "application/json",
                &wrapped,
            ),
            ("/whep/synthetic", "application/sdp", &data),
        ] {
            let (st, headers, _) = http_with(
                server.addr,
                "POST",
                path,
                &[("Content-Type", content_type)],
                Some(body),
            )
            .await;
            assert!(
                st != 0 && st < 500 || (st == 503 && headers.contains("retry-after")),
                "seed {name} to {path}: {st} {headers}"
            );
        }
    }
    let (st, health) = server.get("/health").await;
    assert_eq!(st, 200, "{health}");
    let _: Value = health;
    server.stop().await;
}
