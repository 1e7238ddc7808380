//! Self-tests of the Janus harness (tests/common/janus.rs): a private Janus starts, makes
//! rooms, restarts, refuses a subscription to a missing feed clearly, and a subscriber
//! receives (and decodes) H.264 from a test-only publisher through Janus.
//!
//! The test-only publisher is a VideoRoom "remote publisher" (`add_remote_publisher`,
//! Janus ≥ 1.1): Janus takes plain RTP on a UDP port for it and offers it to subscribers
//! like any publisher. We feed it H.264 encoded here, with the timestamp stripe, so the
//! whole subscriber path (Janus's offer, our answer, ICE, DTLS-SRTP, reassembly, decoding)
//! runs without a WebRTC publisher.

mod common;

use common::janus::{Janus, JanusSubscriber};
use common::now_us;
use lumacast_encode::{Encoder, EncoderConfig};
use lumacast_frame::stripe;
use lumacast_frame::I420Frame;
use lumacast_rtc::{ClientOptions, Packetizer};
use serde_json::json;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn janus_starts_makes_rooms_and_lists_no_publishers() {
    let janus = Janus::start().await;
    assert!(
        janus.url().starts_with("http://127.0.0.1:"),
        "{}",
        janus.url()
    );
    assert!(janus.url().ends_with("/janus"));
    janus.create_room(1234).await;
    assert_eq!(janus.publishers(1234).await, vec![]);
    // a room that does not exist is an error, not an empty list
    let err = janus
        .videoroom(json!({"request": "listparticipants", "room": 4321}))
        .await
        .unwrap_err();
    assert!(err.contains("No such room"), "{err}");
    let pid = janus.pid().expect("running");
    let dir = janus.log_path().parent().unwrap().to_path_buf();
    assert!(alive(pid));
    drop(janus);
    assert!(!alive(pid), "Janus {pid} is gone once dropped");
    assert!(!dir.exists(), "{} removed", dir.display());
}

#[tokio::test]
async fn a_restarted_janus_serves_again_with_its_configured_rooms() {
    let mut janus = Janus::start_with_rooms(&[555]).await;
    let url = janus.url();
    janus.create_room(777).await;
    assert_eq!(janus.publishers(555).await, vec![]);
    assert_eq!(janus.publishers(777).await, vec![]);
    let before = janus.pid().unwrap();
    janus.restart().await;
    assert_ne!(janus.pid().unwrap(), before);
    assert!(!alive(before));
    assert_eq!(janus.url(), url, "same port after a restart");
    // the configuration file's room is back; the API-made one is gone
    assert_eq!(janus.publishers(555).await, vec![]);
    let err = janus
        .videoroom(json!({"request": "listparticipants", "room": 777}))
        .await
        .unwrap_err();
    assert!(err.contains("No such room"), "{err}");
}

#[tokio::test]
async fn subscribing_to_a_missing_feed_fails_clearly() {
    let janus = Janus::start_with_rooms(&[1234]).await;
    let err =
        match JanusSubscriber::join(&janus.url(), 1234, 424242, ClientOptions::default()).await {
            Ok(_) => panic!("subscribed to a feed that does not exist"),
            Err(e) => e,
        };
    assert!(
        err.contains("No such feed") && err.contains("424242"),
        "{err}"
    );
    // and to a missing room
    let err = match JanusSubscriber::join(&janus.url(), 999, 1, ClientOptions::default()).await {
        Ok(_) => panic!("subscribed in a room that does not exist"),
        Err(e) => e,
    };
    assert!(err.contains("No such room"), "{err}");
}

/// Janus's remote publishers take RTP on one port and tell streams apart by SSRC:
/// 1000 + 10 * mindex (+ substream), see `REMOTE_PUBLISHER_BASE_SSRC` in janus_videoroom.c.
const REMOTE_SSRC: u32 = 1000;
/// Janus's payload type for H.264 (what it offers subscribers of a remote publisher).
const JANUS_H264_PT: u8 = 107;

/// Sends 640x480 H.264 at 30 fps (an IDR every second, the stripe carrying the capture
/// time and frame number) as plain RTP to `dest`, until `stop`.
fn publish_rtp(dest: std::net::SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let (w, h) = (640u32, 480u32);
        let mut enc = Encoder::new(EncoderConfig {
            keyframe_interval: 30,
            threads: 1,
            slices: 1,
            ..EncoderConfig::new(w, h)
        })
        .expect("encoder");
        let mut packetizer = Packetizer::new();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = std::time::Instant::now();
        let mut seq: u16 = 0;
        let mut frame_no = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let t_us = now_us();
            let mut pic = I420Frame {
                width: w,
                height: h,
                y: vec![60; (w * h) as usize],
                u: vec![128; (w * h / 4) as usize],
                v: vec![128; (w * h / 4) as usize],
                seq: u64::from(frame_no),
                captured_us: t_us,
            };
            // the stripe: 3 rows of 32 cells of 16x16, one bit each, MSB first
            for (r, word) in stripe::words(t_us, frame_no).iter().enumerate() {
                for c in 0..stripe::COLUMNS as usize {
                    let bit = (word >> (31 - c)) & 1 == 1;
                    let cell = stripe::CELL as usize;
                    for y in r * cell..(r + 1) * cell {
                        let row = &mut pic.y[y * w as usize..];
                        row[c * cell..(c + 1) * cell].fill(if bit { 255 } else { 0 });
                    }
                }
            }
            let elapsed = start.elapsed();
            let out = enc
                .encode(&pic, elapsed.as_millis() as i64)
                .expect("encode");
            let rtp_ts = (elapsed.as_micros() as u64 * 9 / 100) as u32;
            let payloads = packetizer.packetize(out.data);
            let n = payloads.len();
            for (i, p) in payloads.into_iter().enumerate() {
                let mut pkt = Vec::with_capacity(12 + p.len());
                pkt.push(0x80);
                pkt.push(JANUS_H264_PT | if i + 1 == n { 0x80 } else { 0 });
                pkt.extend_from_slice(&seq.to_be_bytes());
                pkt.extend_from_slice(&rtp_ts.to_be_bytes());
                pkt.extend_from_slice(&REMOTE_SSRC.to_be_bytes());
                pkt.extend_from_slice(&p);
                let _ = sock.send_to(&pkt, dest);
                seq = seq.wrapping_add(1);
            }
            frame_no += 1;
            let next = Duration::from_micros(u64::from(frame_no) * 1_000_000 / 30);
            if let Some(wait) = next.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        frame_no
    })
}

#[tokio::test]
async fn a_subscriber_decodes_a_publishers_frames_through_janus() {
    let janus = Janus::start_with_rooms(&[1234]).await;
    let feed = 9001;
    let v = janus
        .videoroom(json!({
            "request": "add_remote_publisher",
            "room": 1234,
            "id": feed,
            "display": "test publisher",
            "iface": "127.0.0.1",
            "streams": [{"type": "video", "mindex": 0, "mid": "0", "codec": "h264"}],
        }))
        .await
        .unwrap_or_else(|e| panic!("add_remote_publisher: {e}\n{}", janus.log_tail()));
    let port = v["port"].as_u64().expect("RTP port") as u16;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_rtp(([127, 0, 0, 1], port).into(), stop.clone());
    // A remote publisher joins the room asynchronously (Janus's remote publisher thread).
    janus
        .wait_for_publisher(1234, Duration::from_secs(5), |id, _| id == feed)
        .await;
    // Loopback `udp_addrs` (the default) are moved to Janus's ICE address by `join`:
    // libnice does not pair 127.0.0.1 with it.
    let opts = ClientOptions {
        nack: true,
        rtx: true,
        transport_cc: true,
        ..Default::default()
    };
    let mut sub = JanusSubscriber::join(&janus.url(), 1234, feed, opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", janus.log_tail()));
    assert_eq!(sub.streams[0]["feed_id"], feed, "{}", sub.streams);
    assert!(sub.offer_sdp.contains("H264/90000"), "{}", sub.offer_sdp);
    assert!(sub.answer_sdp.contains("a=recvonly"), "{}", sub.answer_sdp);
    let ice = format!(" {} ", janus.ice_ip());
    assert!(sub.offer_sdp.contains(&ice), "{}", sub.offer_sdp);
    assert!(sub.answer_sdp.contains(&ice), "{}", sub.answer_sdp);
    let seen = sub.viewer.decode_frames(30, Duration::from_secs(15)).await;
    let stats = sub.client().stats();
    stop.store(true, Ordering::Relaxed);
    let sent = tokio::task::spawn_blocking(move || publisher.join().unwrap())
        .await
        .unwrap();
    assert!(
        seen.len() >= 30,
        "decoded {} frames of {sent} sent through Janus (connected: {:?}, stats {stats:?}); \
         Janus log:\n{}",
        seen.len(),
        sub.viewer.connected_at,
        janus.log_tail()
    );
    assert!(sub.viewer.connected_at.is_some());
    assert_eq!((seen[0].width, seen[0].height), (640, 480));
    // the stripe came through: increasing frame numbers, recent capture times
    let stripes: Vec<_> = seen.iter().filter_map(|s| s.stripe).collect();
    assert_eq!(stripes.len(), seen.len());
    assert!(
        stripes.windows(2).all(|w| w[1].seq > w[0].seq),
        "{stripes:?}"
    );
    let age_us = now_us().saturating_sub(stripes.last().unwrap().t_us);
    assert!(age_us < 5_000_000, "last frame captured {age_us} us ago");
    sub.leave().await;
}

// ---- lumacast publishing into Janus (src/publish) ----

use common::{http, TestServer, Viewer};
use std::time::Instant;

/// A server with the synthetic detector at 1280x720 publishing to each of `urls`; ICE
/// also gathers on Janus's address (libnice does not pair loopback).
async fn publishing_server(janus: &Janus, urls: &[String]) -> TestServer {
    let urls = urls.to_vec();
    let ice = janus.peer_udp_addr();
    TestServer::start_with(
        "127.0.0.1:0",
        &["synthetic=synthetic,width=1280,height=720"],
        move |c| {
            c.ice_addrs = vec!["127.0.0.1:0".into(), ice];
            c.publish = urls;
        },
    )
    .await
}

fn janus_url(janus: &Janus, room: u64) -> String {
    format!("janus+{}?room={room}&display=scope", janus.url())
}

/// The publish targets as `/api/stats` shows them.
async fn targets(server: &TestServer) -> Vec<serde_json::Value> {
    let (status, stats) = http(server.addr, "GET", "/api/stats", None).await;
    assert_eq!(status, 200, "{stats}");
    stats["publish"].as_array().cloned().unwrap_or_default()
}

async fn wait_state(server: &TestServer, state: &str, timeout: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let t = targets(server).await;
        if !t.is_empty() && t.iter().all(|t| t["state"] == state) {
            return t;
        }
        assert!(Instant::now() < deadline, "targets not all {state}: {t:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subscribes to the publisher named "scope" in `room` and decodes `n` frames.
async fn watch_through(janus: &Janus, room: u64, n: usize) -> Vec<common::Seen> {
    let feed = janus
        .wait_for_publisher(room, Duration::from_secs(10), |_, d| d == "scope")
        .await;
    let opts = ClientOptions {
        nack: true,
        rtx: true,
        transport_cc: true,
        ..Default::default()
    };
    let mut sub = JanusSubscriber::join(&janus.url(), room, feed, opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", janus.log_tail()));
    let seen = sub.viewer.decode_frames(n, Duration::from_secs(15)).await;
    assert!(
        seen.len() >= n,
        "decoded {} of {n} frames through Janus (stats {:?}); Janus log:\n{}",
        seen.len(),
        sub.client().stats(),
        janus.log_tail()
    );
    sub.leave().await;
    seen
}

fn assert_live_stripes(seen: &[common::Seen]) {
    assert_eq!((seen[0].width, seen[0].height), (1280, 720));
    let stripes: Vec<_> = seen.iter().filter_map(|s| s.stripe).collect();
    assert_eq!(stripes.len(), seen.len(), "every frame carries the stripe");
    assert!(
        stripes.windows(2).all(|w| w[1].seq > w[0].seq),
        "{stripes:?}"
    );
    let age_us = now_us().saturating_sub(stripes.last().unwrap().t_us);
    assert!(age_us < 2_000_000, "last frame captured {age_us} us ago");
}

#[tokio::test]
async fn lumacast_publishes_into_janus_and_its_viewers_decode_our_frames() {
    let janus = Janus::start_with_rooms(&[1234]).await;
    let server = publishing_server(&janus, &[janus_url(&janus, 1234)]).await;
    let t = wait_state(&server, "publishing", Duration::from_secs(10)).await;
    assert_eq!(t[0]["protocol"], "janus");
    assert_eq!(t[0]["detector"], "synthetic");
    assert_eq!(t[0]["target"], format!("janus+{}?room=1234", janus.url()));
    let seen = watch_through(&janus, 1234, 30).await;
    assert_live_stripes(&seen);
    // what the server reports: the rate, the subscriber's keyframe request, no error
    let t = targets(&server).await;
    assert_eq!(t[0]["state"], "publishing", "{t:#?}");
    assert!(t[0]["bitrate_bps"].as_f64().unwrap() > 100_000.0, "{t:#?}");
    assert!(t[0]["frames_sent"].as_u64().unwrap() >= 30, "{t:#?}");
    assert!(
        t[0]["keyframe_requests"].as_u64().unwrap() >= 1,
        "Janus asks for a keyframe for a new subscriber: {t:#?}"
    );
    assert_eq!(t[0]["sessions"], 1);
    assert_eq!(t[0]["link"]["rtx"], true, "Janus negotiates RTX: {t:#?}");
    assert_eq!(t[0]["link"]["feedback"], "transport-cc", "{t:#?}");
    let (_, page) = common::http_raw(server.addr, "GET", "/api/publish", None).await;
    assert!(page.contains("\"publishing\""), "{page}");
    let (_, metrics) = common::http_raw(server.addr, "GET", "/metrics", None).await;
    // The recorder is process-wide: other tests' targets are listed too.
    let label = format!("target=\"janus+{}?room=1234\"", janus.url());
    let up = metrics
        .lines()
        .find(|l| l.starts_with("lumacast_publish_up{") && l.contains(&label))
        .unwrap_or_else(|| panic!("no lumacast_publish_up with {label} in\n{metrics}"));
    assert!(up.ends_with(" 1"), "{up}");
    assert!(
        metrics.contains("lumacast_publish_keyframe_requests_total{"),
        "{metrics}"
    );
    // Stopping the server leaves the room: no publisher left behind in Janus.
    server.stop().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !janus.publishers(1234).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "our publisher is still in the room"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_restarted_janus_is_published_to_again_within_seconds() {
    let mut janus = Janus::start_with_rooms(&[1234]).await;
    let server = publishing_server(&janus, &[janus_url(&janus, 1234)]).await;
    wait_state(&server, "publishing", Duration::from_secs(10)).await;
    watch_through(&janus, 1234, 10).await;
    let restarted = Instant::now();
    janus.restart().await;
    // Video at Janus's viewers again: our publisher is back in the room and decodes.
    janus
        .wait_for_publisher(1234, Duration::from_secs(10), |_, d| d == "scope")
        .await;
    let seen = watch_through(&janus, 1234, 10).await;
    let took = restarted.elapsed();
    eprintln!("Janus restarted: video at its viewers again after {took:?}");
    assert_live_stripes(&seen);
    // The figure is 5 s (see docs/benchmarks.md); here bounded with room for a
    // loaded machine.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let t = targets(&server).await;
    assert_eq!(t[0]["sessions"], 2, "{t:#?}");
    assert!(
        t[0]["last_error"].as_str().is_some(),
        "the lost session is reported: {t:#?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn two_janus_are_fed_from_one_encode_and_local_viewers_are_undisturbed_by_a_failing_target() {
    let (a, b) = (
        Janus::start_with_rooms(&[1]).await,
        Janus::start_with_rooms(&[2]).await,
    );
    // A third target whose server is not there (a closed port) keeps failing.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("janus+http://127.0.0.1:{port}/janus?room=3&display=scope")
    };
    let server = publishing_server(&a, &[janus_url(&a, 1), janus_url(&b, 2), dead]).await;
    let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
    let (sa, sb) = tokio::join!(watch_through(&a, 1, 30), watch_through(&b, 2, 30));
    assert_live_stripes(&sa);
    assert_live_stripes(&sb);
    let local = viewer.decode_frames(60, Duration::from_secs(10)).await;
    assert!(
        local.len() >= 60,
        "the local viewer decoded {}",
        local.len()
    );
    let t = targets(&server).await;
    assert_eq!(t.len(), 3);
    assert_eq!(
        (t[0]["state"].as_str(), t[1]["state"].as_str()),
        (Some("publishing"), Some("publishing")),
        "{t:#?}"
    );
    assert!(t[2]["attempts"].as_u64().unwrap() >= 2, "{t:#?}");
    assert_ne!(t[2]["state"], "publishing");
    let err = t[2]["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("Janus API"),
        "the failing target says why: {err}"
    );
    // One encode for everyone: the full-size lane encoded each frame taken once.
    let (_, stats) = http(server.addr, "GET", "/api/stats", None).await;
    let d = &stats["detectors"][0];
    let (taken, encoded) = (
        d["frames_in"].as_u64().unwrap(),
        d["frames_encoded"].as_u64().unwrap(),
    );
    assert!(
        encoded <= taken + 2,
        "encoded {encoded} of {taken} taken: not encoded per target"
    );
    server.stop().await;
}
