//! Viewer sessions, admission limits and hostile requests, on a real server.

mod common;

use common::{http_raw, http_with, real_offer, TestServer, Viewer};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_with_their_numbers_and_can_be_ended() {
    let server = TestServer::start(&[]).await;
    let mut a = Viewer::join(&server, None, &["42e01f"]).await;
    let (mut b, _) = Viewer::join_whep(&server, "synthetic").await;
    assert!(a.decode_frames(5, Duration::from_secs(10)).await.len() >= 5);
    assert!(b.decode_frames(5, Duration::from_secs(10)).await.len() >= 5);
    let (st, s) = server.get("/api/sessions").await;
    assert_eq!(st, 200);
    assert_eq!(s["count"], 2, "{s}");
    for v in s["sessions"].as_array().unwrap() {
        assert_eq!(v["detector"], "synthetic");
        assert_eq!(v["state"], "connected", "{v}");
        assert!(
            v["remote_address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{v}"
        );
        assert!(v["frames_sent"].as_u64().unwrap() >= 5, "{v}");
        assert!(v["bytes_sent"].as_u64().unwrap() > 10_000, "{v}");
        assert!(
            v["since_unix_ms"].as_u64().unwrap() > 1_700_000_000_000,
            "{v}"
        );
        assert_eq!(v["frames_dropped_slow"], 0, "{v}");
    }
    let id = s["sessions"][0]["id"].as_u64().unwrap();
    let (st, r) = http_raw(server.addr, "DELETE", &format!("/api/sessions/{id}"), None).await;
    assert_eq!(st, 200, "{r}");
    let mut left = 2;
    for _ in 0..50 {
        let (_, s) = server.get("/api/sessions").await;
        left = s["count"].as_u64().unwrap();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 1, "the ended session is gone");
    let (st, _) = http_raw(server.addr, "DELETE", &format!("/api/sessions/{id}"), None).await;
    assert_eq!(st, 404);
    let (st, _) = http_raw(server.addr, "DELETE", "/api/sessions/abc", None).await;
    assert_eq!(st, 400);
    // the other one still plays
    assert!(b.decode_frames(5, Duration::from_secs(10)).await.len() >= 5);
    a.client.close().await;
    b.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_limits_answer_503_with_retry_after_and_offer_floods_429() {
    let server = TestServer::start_with(
        "127.0.0.1:0",
        &[
            "one=synthetic,width=640,height=480",
            "two=synthetic,width=640,height=480",
        ],
        |c| {
            c.max_viewers = 1;
            c.max_viewers_total = 2;
            c.max_offers_per_sec = 0.0;
        },
    )
    .await;
    let body = |det: &str, sdp: &str| {
        json!({"sdp": sdp, "type": "offer", "detectorName": det}).to_string()
    };
    let path = "/LiveViewController/webrtc_offer";
    let (st, _) = server.post(path, &body("one", &real_offer().await)).await;
    assert_eq!(st, 200);
    // the detector's limit
    let (st, h, b) = http_with(
        server.addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(body("one", &real_offer().await).as_bytes()),
    )
    .await;
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&b));
    assert!(h.contains("retry-after: 5"), "{h}");
    let (st, _) = server.post(path, &body("two", &real_offer().await)).await;
    assert_eq!(st, 200);
    server.stop().await;

    // the total limit: one viewer in all
    let server = TestServer::start_with(
        "127.0.0.1:0",
        &[
            "one=synthetic,width=640,height=480",
            "two=synthetic,width=640,height=480",
        ],
        |c| c.max_viewers_total = 1,
    )
    .await;
    let (st, _) = server.post(path, &body("one", &real_offer().await)).await;
    assert_eq!(st, 200);
    let (st, e) = server.post(path, &body("two", &real_offer().await)).await;
    assert_eq!(st, 503, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("maximum of 1 viewers"),
        "{e}"
    );
    server.stop().await;

    // offers per client and second: a burst of 2 at 1/s, then 429
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| c.max_offers_per_sec = 1.0).await;
    let mut statuses = vec![];
    let mut retry = String::new();
    for _ in 0..4 {
        let (st, h, _) = http_with(
            server.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(
                json!({"sdp": real_offer().await, "type": "offer"})
                    .to_string()
                    .as_bytes(),
            ),
        )
        .await;
        if st == 429 {
            retry = h;
        }
        statuses.push(st);
    }
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    assert!(retry.contains("retry-after: 1"), "{retry}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_and_the_server_keeps_serving() {
    let server = TestServer::start(&[]).await;
    let addr = server.addr;
    let offer_path = "/LiveViewController/webrtc_offer";
    // deeply nested JSON
    let deep = "[".repeat(100_000);
    let (st, _) = http_raw(addr, "POST", offer_path, Some(deep.as_bytes())).await;
    assert_eq!(st, 400);
    let deep_obj = format!("{{\"sdp\": {}}}", "[".repeat(10_000));
    let (st, _) = http_raw(addr, "POST", offer_path, Some(deep_obj.as_bytes())).await;
    assert_eq!(st, 400);
    // an SDP of thousands of lines (inside and beyond the SDP size limit)
    let mut long_sdp = String::from("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    for i in 0..5000 {
        long_sdp.push_str(&format!("a=x-junk:{i}\r\n"));
    }
    let body = json!({"sdp": long_sdp, "type": "offer"}).to_string();
    let (st, e) = server.post(offer_path, &body).await;
    assert!((400..500).contains(&st), "{st} {e}");
    for _ in 0..2000 {
        long_sdp.push_str("a=x-more-junk-to-pass-64-kilobytes\r\n");
    }
    let body = json!({"sdp": long_sdp, "type": "offer"}).to_string();
    let (st, e) = server.post(offer_path, &body).await;
    assert!((400..500).contains(&st), "{st} {e}");
    let (st, h, _) = http_with(
        addr,
        "POST",
        "/whep/synthetic",
        &[("Content-Type", "application/sdp")],
        Some(long_sdp.as_bytes()),
    )
    .await;
    assert!((400..500).contains(&st), "{st} {h}");
    // wrong methods, unknown paths, invalid UTF-8 in a PATCH, a huge PATCH
    for (method, path) in [
        ("PUT", offer_path),
        ("DELETE", "/api/detectors"),
        ("POST", "/api/stats"),
        ("GET", "/api/sessions/1"),
    ] {
        let (st, body) = http_raw(addr, method, path, None).await;
        assert_eq!(st, 405, "{method} {path}");
        let e: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(e["status"], "error");
    }
    let (st, body) = http_raw(addr, "GET", "/no/such/thing", None).await;
    assert_eq!(st, 404);
    assert!(body.contains("no such endpoint"), "{body}");
    let (st, body) = http_raw(addr, "POST", offer_path, Some(&[b' '; 300_000])).await;
    assert_eq!(st, 413);
    let e: serde_json::Value = serde_json::from_str(&body).expect("a JSON 413");
    assert!(
        e["message"].as_str().unwrap().contains("Payload Too Large"),
        "{e}"
    );
    let (st, _) = http_raw(
        addr,
        "PATCH",
        "/api/detectors/synthetic/params",
        Some(&[0xc3, 0x28, 0xff]),
    )
    .await;
    assert_eq!(st, 400);
    let huge = vec![b'x'; 4 * 1024 * 1024];
    let (st, _) = http_raw(
        addr,
        "PATCH",
        "/api/detectors/synthetic/params",
        Some(&huge),
    )
    .await;
    assert_eq!(st, 413);
    let (st, _, _) = http_with(
        addr,
        "POST",
        "/whep/synthetic",
        &[("Content-Type", "application/sdp")],
        Some(&huge),
    )
    .await;
    assert_eq!(st, 413);
    // still serving, nothing started, nobody counted
    let (st, d) = server.get("/api/detectors").await;
    assert_eq!(st, 200);
    assert_eq!(d["detectors"][0]["running"], false, "{d}");
    let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
    assert!(viewer.decode_frames(3, Duration::from_secs(10)).await.len() >= 3);
    viewer.client.close().await;
    server.stop().await;
}

/// A detector that fails mid-stream (a camera unplugged): the source is real synthetic
/// frames that stop with the error a camera gives. Its viewers are closed at once and
/// the failure is shown; the next offer restarts the detector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_detector_closes_its_viewers_and_the_next_offer_restarts_it() {
    use lumacast_capture::{
        CaptureError, FrameSource, SourceInfo, SyntheticConfig, SyntheticSource,
    };
    use lumacast_frame::Frame;
    use std::time::Instant;

    struct Unplugged {
        inner: SyntheticSource,
        until: Instant,
    }
    impl FrameSource for Unplugged {
        fn describe(&self) -> SourceInfo {
            self.inner.describe()
        }
        fn next_frame(&mut self) -> Result<Frame, CaptureError> {
            if Instant::now() >= self.until {
                return Err(CaptureError::Camera("device unplugged".into()));
            }
            self.inner.next_frame()
        }
    }

    let server = TestServer::start(&[]).await;
    let state = server.state.clone().unwrap();
    let source = Unplugged {
        inner: SyntheticSource::new(SyntheticConfig {
            width: 640,
            height: 480,
            fps: 30.0,
            bit_depth: 12,
        })
        .unwrap(),
        until: Instant::now() + Duration::from_secs(3),
    };
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        s.detectors
            .start_with_source("synthetic", Box::new(source))
            .map(|_| ())
    })
    .await
    .unwrap()
    .unwrap();
    let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
    assert!(viewer.decode_frames(5, Duration::from_secs(10)).await.len() >= 5);
    assert_eq!(server.get("/api/sessions").await.1["count"], 1);

    // The source fails: the session ends promptly (no 15 s wait on a dead stream).
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (_, s) = server.get("/api/sessions").await;
        if s["count"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "viewer still listed: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, d) = server.get("/api/detectors").await;
    let det = &d["detectors"][0];
    assert_eq!(det["running"], false, "{d}");
    assert!(
        det["error"]
            .as_str()
            .unwrap_or("")
            .contains("device unplugged"),
        "{d}"
    );
    viewer.client.close().await;

    // The next viewer restarts the detector (its configured source) and plays.
    let mut again = Viewer::join(&server, None, &["42e01f"]).await;
    assert!(again.decode_frames(5, Duration::from_secs(10)).await.len() >= 5);
    let (_, d) = server.get("/api/detectors").await;
    assert_eq!(d["detectors"][0]["running"], true, "{d}");
    assert!(d["detectors"][0].get("error").is_none(), "{d}");
    again.client.close().await;
    server.stop().await;
}
