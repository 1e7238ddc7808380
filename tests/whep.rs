//! WHEP (draft-ietf-wish-whep, with the rules it shares with WHIP, RFC 9725) against a
//! real server and a real webrtc-rs player that decodes what it gets.

mod common;

use common::{http_with, TestServer, Viewer};
use std::time::Duration;

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::trim))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_post_creates_a_session_that_plays_and_delete_ends_it() {
    let server = TestServer::start(&[]).await;
    let (mut viewer, headers) = Viewer::join_whep(&server, "synthetic").await;
    assert_eq!(header(&headers, "content-type"), Some("application/sdp"));
    let location = header(&headers, "location").expect("Location").to_string();
    assert!(
        location.starts_with("/whep/synthetic/sessions/"),
        "{location}"
    );
    let etag = header(&headers, "etag").expect("ETag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(
        header(&headers, "accept-patch"),
        Some("application/trickle-ice-sdpfrag")
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    assert!(
        header(&headers, "access-control-expose-headers")
            .unwrap()
            .contains("location"),
        "header values are compared lower-cased"
    );

    let frames = viewer.decode_frames(10, Duration::from_secs(10)).await;
    assert!(frames.len() >= 10, "the WHEP player decodes");
    assert!(frames.iter().all(|f| f.stripe.is_some()));
    let (_, d) = server.get("/api/detectors").await;
    assert_eq!(d["detectors"][0]["viewers"], 1);

    // DELETE ends the session; the server lets go of the viewer.
    let (st, _, _) = http_with(server.addr, "DELETE", &location, &[], None).await;
    assert_eq!(st, 200);
    let mut gone = false;
    for _ in 0..50 {
        let (_, d) = server.get("/api/detectors").await;
        if d["detectors"][0]["viewers"] == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the deleted session is removed");
    let (st, _, _) = http_with(server.addr, "DELETE", &location, &[], None).await;
    assert_eq!(st, 404, "a deleted session is unknown");
    viewer.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_refuses_what_the_rules_refuse() {
    let server = TestServer::start(&[]).await;
    let addr = server.addr;
    let offer = common::real_offer().await;
    let sdp = [("Content-Type", "application/sdp")];
    // wrong content type
    let (st, h, _) = http_with(
        addr,
        "POST",
        "/whep/synthetic",
        &[("Content-Type", "application/json")],
        Some(offer.as_bytes()),
    )
    .await;
    assert_eq!(st, 415, "{h}");
    // unknown detector
    let (st, _, _) = http_with(addr, "POST", "/whep/nope", &sdp, Some(offer.as_bytes())).await;
    assert_eq!(st, 404);
    // not SDP, and SDP without video
    let (st, _, _) = http_with(addr, "POST", "/whep/synthetic", &sdp, Some(b"hello")).await;
    assert_eq!(st, 400);
    let audio_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
    let (st, _, _) = http_with(
        addr,
        "POST",
        "/whep/synthetic",
        &sdp,
        Some(audio_only.as_bytes()),
    )
    .await;
    assert_eq!(st, 422);
    // unknown session
    let (st, _, _) = http_with(addr, "DELETE", "/whep/synthetic/sessions/999999", &[], None).await;
    assert_eq!(st, 404);
    let frag = [("Content-Type", "application/trickle-ice-sdpfrag")];
    let (st, _, _) = http_with(
        addr,
        "PATCH",
        "/whep/synthetic/sessions/999999",
        &frag,
        Some(b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n"),
    )
    .await;
    assert_eq!(st, 404);
    // a wrong method on the endpoint
    let (st, _, _) = http_with(addr, "GET", "/whep/synthetic", &[], None).await;
    assert_eq!(st, 405);
    // nothing of this started a viewer, and a good player still gets in
    let (_, d) = server.get("/api/detectors").await;
    assert_eq!(d["detectors"][0]["viewers"], 0);
    let (mut viewer, _) = Viewer::join_whep(&server, "synthetic").await;
    assert!(!viewer
        .decode_frames(3, Duration::from_secs(10))
        .await
        .is_empty());
    viewer.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_patch_takes_trickled_candidates_and_refuses_bad_ice_restarts() {
    let server = TestServer::start(&[]).await;
    let addr = server.addr;
    let (mut viewer, headers) = Viewer::join_whep(&server, "synthetic").await;
    let location = header(&headers, "location").unwrap().to_string();
    let etag = header(&headers, "etag").unwrap().to_string();
    let ufrag = viewer
        .client
        .offer_sdp()
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim()
        .to_string();
    let frag_type = ("Content-Type", "application/trickle-ice-sdpfrag");
    let trickle = format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:unused\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
    );
    // a trickled candidate: 204
    let (st, h, _) = http_with(
        addr,
        "PATCH",
        &location,
        &[frag_type, ("If-Match", &etag)],
        Some(trickle.as_bytes()),
    )
    .await;
    assert_eq!(st, 204, "{h}");
    // wrong content type: 415; stale entity tag: 412
    let (st, _, _) = http_with(
        addr,
        "PATCH",
        &location,
        &[("Content-Type", "application/sdp")],
        Some(trickle.as_bytes()),
    )
    .await;
    assert_eq!(st, 415);
    let (st, _, _) = http_with(
        addr,
        "PATCH",
        &location,
        &[frag_type, ("If-Match", "\"something-else\"")],
        Some(trickle.as_bytes()),
    )
    .await;
    assert_eq!(st, 412);
    // an ICE restart whose password is too short (RFC 8445: 22 characters at least): 400,
    // nothing restarted (tests/ice_restart.rs restarts for real)
    let restart =
        "a=ice-ufrag:newufrag\r\na=ice-pwd:short\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
    let (st, _, _) = http_with(
        addr,
        "PATCH",
        &location,
        &[frag_type, ("If-Match", "*")],
        Some(restart.as_bytes()),
    )
    .await;
    assert_eq!(st, 400);
    // a malformed candidate line: 400
    let (st, _, _) = http_with(
        addr,
        "PATCH",
        &location,
        &[frag_type],
        Some(b"a=candidate:broken\r\n"),
    )
    .await;
    assert_eq!(st, 400);
    // the session is unharmed
    assert!(viewer.decode_frames(5, Duration::from_secs(10)).await.len() >= 5);
    viewer.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_options_answers_cors_preflight_and_lists_ice_servers() {
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| {
        c.ice_servers = vec!["stun:stun.example.org:3478".into()];
    })
    .await;
    let (st, h, _) = http_with(
        server.addr,
        "OPTIONS",
        "/whep/synthetic",
        &[
            ("Origin", "https://player.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    )
    .await;
    assert_eq!(st, 204, "{h}");
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
    assert!(header(&h, "access-control-allow-methods")
        .unwrap()
        .contains("post"));
    assert!(header(&h, "access-control-allow-headers")
        .unwrap()
        .contains("content-type"));
    assert_eq!(header(&h, "accept-post"), Some("application/sdp"));
    assert_eq!(
        header(&h, "link"),
        Some("<stun:stun.example.org:3478>; rel=\"ice-server\"")
    );
    server.stop().await;
}
