//! Bad input gets its documented status and a JSON message, and changes nothing else.

mod common;

use common::{http_raw, real_offer, TestServer, Viewer};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_error_and_a_good_client_still_connects() {
    let server = TestServer::start(&[]).await;
    let offer = real_offer().await;
    let path = "/LiveViewController/webrtc_offer";

    let audio_only = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n";
    let vp8_only = offer
        .lines()
        .filter(|l| !l.contains("H264") && !l.starts_with("a=fmtp"))
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "not valid JSON"),
        ("[1,2]".into(), 400, "JSON object"),
        (r#"{"type":"offer"}"#.into(), 400, "missing \"sdp\""),
        (
            r#"{"sdp":"garbage","type":"offer"}"#.into(),
            400,
            "not valid SDP",
        ),
        (
            r#"{"sdp":42,"type":"offer"}"#.into(),
            400,
            "must be a string",
        ),
        (
            serde_json::json!({"sdp": offer, "type": "answer"}).to_string(),
            400,
            "must be \"offer\"",
        ),
        (
            serde_json::json!({"sdp": audio_only, "type": "offer"}).to_string(),
            422,
            "no video",
        ),
        (
            serde_json::json!({"sdp": vp8_only, "sdp_type": "offer"}).to_string(),
            422,
            "H.264",
        ),
        (
            serde_json::json!({"sdp": offer, "type": "offer", "detectorName": "nope"}).to_string(),
            404,
            "unknown detector",
        ),
    ];
    for (body, status, needle) in cases {
        let (st, json) = server.post(path, &body).await;
        assert_eq!(st, status, "{body:.80} → {json}");
        assert_eq!(json["status"], "error", "{json}");
        let msg = json["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "message {msg:?} should mention {needle:?}"
        );
    }
    // invalid UTF-8 and oversized bodies
    let (st, _) = http_raw(server.addr, "POST", path, Some(&[0xff, 0xfe, 0x00])).await;
    assert_eq!(st, 400);
    let huge = vec![b' '; 1024 * 1024];
    let (st, _) = http_raw(server.addr, "POST", path, Some(&huge)).await;
    assert_eq!(st, 413);
    let (st, json) = server
        .post(
            "/LiveViewController/startLiveView",
            r#"{"detectorName":"nope"}"#,
        )
        .await;
    assert_eq!((st, json["status"].as_str()), (404, Some("error")));
    let (st, _) = server
        .post(
            "/LiveViewController/startLiveView",
            r#"{"protocol":"jpeg"}"#,
        )
        .await;
    assert_eq!(st, 400);

    // none of that started the detector
    let (_, det) = server.get("/api/detectors").await;
    assert_eq!(det["detectors"][0]["running"], false, "{det}");

    // a good client still gets video
    let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
    let seen = viewer.decode_frames(3, Duration::from_secs(10)).await;
    assert!(seen.len() >= 3);
    viewer.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_is_idempotent_and_stop_reports_not_running() {
    let server = TestServer::start(&[
        "a=synthetic,width=640,height=480",
        "b=synthetic,width=320,height=240,bits=8",
    ])
    .await;
    let (st, j) = server
        .post(
            "/LiveViewController/startLiveView?detectorName=b&protocol=webrtc",
            "",
        )
        .await;
    assert_eq!(
        (st, j["status"].as_str(), j["detector"].as_str()),
        (200, Some("success"), Some("b"))
    );
    let (_, j) = server
        .post(
            "/LiveViewController/startLiveView",
            r#"{"detectorName":"b"}"#,
        )
        .await;
    assert_eq!(j["status"], "already_running");
    let (_, det) = server.get("/api/detectors").await;
    assert_eq!(det["detectors"][0]["running"], false);
    assert_eq!(det["detectors"][1]["running"], true);
    assert_eq!(det["detectors"][1]["width"], 320);
    let (_, j) = server.get("/LiveViewController/getActiveStreams").await;
    assert_eq!(j["active_streams"][0]["detector"], "b");
    let (_, j) = server.get("/LiveViewController/stopLiveView").await;
    assert_eq!(
        (j["status"].as_str(), j["detector"].as_str()),
        (Some("success"), Some("b"))
    );
    let (_, j) = server
        .post(
            "/LiveViewController/stopLiveView",
            r#"{"detectorName":"a"}"#,
        )
        .await;
    assert_eq!(j["status"], "not_running");
    let (_, h) = server.get("/health").await;
    assert_eq!(h["status"], "ok");
    assert!(h["features"]["camera"]["available"].is_boolean());
    assert!(h["features"]["encoder_assembly"]["available"].is_boolean());
    // The test command installs nasm: /health must report the assembly in (see
    // crates/encode/tests/roundtrip.rs for the opt-out).
    if cfg!(target_arch = "x86_64") && std::env::var_os("LUMACAST_ALLOW_NO_ASM").is_none() {
        assert_eq!(h["features"]["encoder_assembly"]["available"], true, "{h}");
    }
    server.stop().await;
}

#[cfg(not(feature = "camera"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_without_the_feature_is_a_503_naming_the_feature() {
    let server = TestServer::start(&["synthetic=synthetic", "cam=camera,index=0"]).await;
    let (st, j) = server
        .post(
            "/LiveViewController/startLiveView",
            r#"{"detectorName":"cam"}"#,
        )
        .await;
    assert_eq!(st, 503, "{j}");
    assert!(
        j["message"].as_str().unwrap().contains("--features camera"),
        "{j}"
    );
    // the server keeps serving
    let (st, _) = server
        .post(
            "/LiveViewController/startLiveView",
            r#"{"detectorName":"synthetic"}"#,
        )
        .await;
    assert_eq!(st, 200);
    server.stop().await;
}
