//! The offer path, as the HTTP API receives it: the same bytes as a JSON body of
//! `webrtc_offer`, as the `sdp` string inside a well-formed JSON body, and as a WHEP
//! `application/sdp` body, through the real router. Nothing may panic and nothing may
//! answer 5xx. Run: cargo +nightly fuzz run offer -- -max_total_time=600
#![no_main]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tower::ServiceExt;

struct Harness {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut config = lumacast::Config::default_for_tests();
        // Fuzz inputs come fast from one "client": no offer rate limit here.
        config.max_offers_per_sec = 0.0;
        let state = rt.block_on(async { lumacast::App::new(&config).unwrap() });
        Harness {
            app: lumacast::router(state),
            rt,
        }
    })
}

/// The answer's status; a viewer limit (503 with `Retry-After`, reached when many fuzzed
/// offers are valid and their sessions wait to connect) counts as a 4xx-like refusal.
fn call(h: &Harness, method: &str, uri: &str, content_type: &str, body: Vec<u8>) -> StatusCode {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let r = h.rt.block_on(h.app.clone().oneshot(req)).unwrap();
    if r.status() == StatusCode::SERVICE_UNAVAILABLE && r.headers().contains_key("retry-after") {
        return StatusCode::TOO_MANY_REQUESTS;
    }
    r.status()
}

fuzz_target!(|data: &[u8]| {
    // The SDP analysis on its own.
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = lumacast_rtc::analyze_offer(s);
    }
    let h = harness();
    let path = "/LiveViewController/webrtc_offer";
    let st = call(h, "POST", path, "application/json", data.to_vec());
    assert!(!st.is_server_error(), "raw body: {st}");
    let sdp = String::from_utf8_lossy(data);
    let body = serde_json::json!({"sdp": sdp, "type": "offer"}).to_string();
    let st = call(h, "POST", path, "application/json", body.into_bytes());
    assert!(!st.is_server_error(), "sdp in JSON: {st}");
    let st = call(
        h,
        "POST",
        "/whep/synthetic",
        "application/sdp",
        data.to_vec(),
    );
    assert!(!st.is_server_error(), "WHEP: {st}");
});
