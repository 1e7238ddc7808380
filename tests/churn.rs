//! Many viewers come and go against the real binary: ended by DELETE (ours and WHEP),
//! vanished without a word, or never connected. Afterwards no session is left and the
//! server's file descriptors, threads and memory are back near where they started.
//! `LUMACAST_CHURN_CYCLES` (default 500) sets the number of cycles.

mod common;

use common::{http_with, spawn_binary, TestServer, Viewer};
use lumacast_rtc::ViewerClient;
use serde_json::Value;
use std::time::{Duration, Instant};

async fn process(server: &TestServer) -> (u64, u64, u64, u64) {
    let (_, s) = server.get("/api/stats?window_s=1").await;
    let p = &s["process"];
    let (_, sessions) = server.get("/api/sessions").await;
    (
        sessions["count"].as_u64().unwrap(),
        p["open_fds"].as_u64().unwrap(),
        p["threads"].as_u64().unwrap(),
        p["rss_bytes"].as_u64().unwrap(),
    )
}

async fn wait_for_no_sessions(server: &TestServer, within: Duration) -> (u64, u64, u64, u64) {
    let deadline = Instant::now() + within;
    loop {
        let p = process(server).await;
        if p.0 == 0 || Instant::now() > deadline {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_joins_and_leaves_leave_nothing_behind() {
    let cycles: usize = std::env::var("LUMACAST_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let (mut child, server) = spawn_binary(&[
        "--detector",
        "cam=synthetic,width=320,height=240,fps=30",
        "--max-offers-per-sec",
        "0",
    ])
    .await;
    let addr = server.addr;

    // Warm up (detector, encoder, pools), then take the baseline. The churn below keeps
    // up to ~100 peer connections alive at once (vanished ones linger ~10 s, unconnected
    // ones 15 s), so the warm-up also serves a burst of 50 at once: runtime slabs, socket
    // buffers and allocator pages then reach their working size before the baseline, and
    // what is compared is what the 500 cycles leave behind. (Measured without the burst:
    // +1.85 MB after 500 cycles and +2.2 MB after 1000, i.e. a high-water mark, not growth
    // per cycle.)
    for _ in 0..5 {
        let mut v = Viewer::join(&server, Some("cam"), &["42e01f"]).await;
        assert!(!v.decode_frames(1, Duration::from_secs(10)).await.is_empty());
        v.client.close().await;
    }
    let mut burst = Vec::new();
    // 50 (the detector allows 64, and the warm-up viewers above linger), not 40, since each session holds a little more (a
    // paced send queue, the NACK history): with 40, 500 and 1000 cycles both ended
    // 11-12 % above the baseline (+2.5 and +2.7 MB: a high-water mark, not growth).
    for _ in 0..50 {
        burst.push(Viewer::join(&server, Some("cam"), &["42e01f"]).await);
    }
    for mut v in burst {
        assert!(!v.decode_frames(1, Duration::from_secs(10)).await.is_empty());
        let id = v.answer["viewer_id"].as_u64().unwrap();
        let (st, _, _) = http_with(addr, "DELETE", &format!("/api/sessions/{id}"), &[], None).await;
        assert_eq!(st, 200);
        v.client.close().await;
    }
    let base = wait_for_no_sessions(&server, Duration::from_secs(30)).await;
    assert_eq!(base.0, 0);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let base = process(&server).await;

    let started = Instant::now();
    let mut kinds = [0usize; 4];
    for i in 0..cycles {
        let kind = i % 4;
        kinds[kind] += 1;
        match kind {
            // ImSwitch-style viewer ended with DELETE /api/sessions/{id}
            0 => {
                let mut v = Viewer::join(&server, Some("cam"), &["42e01f"]).await;
                assert!(!v.decode_frames(1, Duration::from_secs(10)).await.is_empty());
                let id = v.answer["viewer_id"].as_u64().unwrap();
                let (st, _, _) =
                    http_with(addr, "DELETE", &format!("/api/sessions/{id}"), &[], None).await;
                assert_eq!(st, 200);
                v.client.close().await;
            }
            // WHEP viewer ended with DELETE on its session URL
            1 => {
                let (mut v, headers) = Viewer::join_whep(&server, "cam").await;
                assert!(!v.decode_frames(1, Duration::from_secs(10)).await.is_empty());
                let location = headers
                    .lines()
                    .find_map(|l| l.strip_prefix("location:"))
                    .unwrap()
                    .trim()
                    .to_string();
                let (st, _, _) = http_with(addr, "DELETE", &location, &[], None).await;
                assert_eq!(st, 200);
                v.client.close().await;
            }
            // a viewer that vanishes: no DELETE, its peer just goes away
            2 => {
                let mut v = Viewer::join(&server, Some("cam"), &["42e01f"]).await;
                assert!(!v.decode_frames(1, Duration::from_secs(10)).await.is_empty());
                drop(v);
            }
            // an offer whose answer is never used: the session never connects
            _ => {
                let c = ViewerClient::new(&["42e01f"]).await.unwrap();
                let body = serde_json::json!({"sdp": c.offer_sdp(), "type": "offer", "detectorName": "cam"});
                let (st, _) = server
                    .post("/LiveViewController/webrtc_offer", &body.to_string())
                    .await;
                assert_eq!(st, 200);
                drop(c);
            }
        }
    }
    let churn_s = started.elapsed().as_secs_f64();
    // Vanished viewers go after ICE consent + the disconnect grace (~10 s), unconnected
    // ones after the 15 s connect timeout.
    let after = wait_for_no_sessions(&server, Duration::from_secs(40)).await;
    assert_eq!(after.0, 0, "sessions left behind");
    // Let the server's housekeeping (every 10 s) hand freed memory back to the OS.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = process(&server).await;
    println!(
        "{cycles} cycles {kinds:?} in {churn_s:.1} s; before: fds {} threads {} rss {} KB; after: sessions {} fds {} threads {} rss {} KB",
        base.1, base.2, base.3 / 1024, after.0, after.1, after.2, after.3 / 1024
    );
    assert_eq!(after.0, 0, "sessions left behind");
    let within = |a: u64, b: u64| (a as f64) <= (b as f64) * 1.10 + 2.0;
    assert!(within(after.1, base.1), "fds {} -> {}", base.1, after.1);
    assert!(within(after.2, base.2), "threads {} -> {}", base.2, after.2);
    // The allocator keeps the high-water mark of the warm-up's concurrent sessions; runs
    // end 8-12 % over the baseline (23.6 -> 26.3 MB once, with ICE-TCP's listener per
    // session). A leak of 10 KB per cycle would be +20 % here.
    assert!(
        (after.3 as f64) <= base.3 as f64 * 1.15,
        "rss {} -> {} KB",
        base.3 / 1024,
        after.3 / 1024
    );
    let (_, stats) = server.get("/api/stats").await;
    let d: &Value = &stats["detectors"][0];
    assert_eq!(d["running"], true);
    child.kill().await.ok();
}
