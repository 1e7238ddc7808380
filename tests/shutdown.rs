//! The real binary stops cleanly on SIGTERM/SIGINT: viewers closed, detectors stopped,
//! exit within 2 s.

mod common;

use common::{spawn_binary, Viewer};
use lumacast_rtc::ClientEvent;
use std::time::{Duration, Instant};

async fn signal_stops_the_server_within_two_seconds(signal: &str) {
    let (mut child, server) =
        spawn_binary(&["--detector", "cam=synthetic,width=640,height=480"]).await;
    let mut viewer = Viewer::join(&server, Some("cam"), &["42e01f"]).await;
    assert!(viewer.decode_frames(5, Duration::from_secs(10)).await.len() >= 5);

    let pid = child.id().unwrap().to_string();
    let t0 = Instant::now();
    let ok = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .expect("the server exits within 2 s of the signal")
        .unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    // The viewer is told, or at least gets no more video.
    let mut frames_after = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(ev) = viewer
        .client
        .next_event(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        match ev {
            ClientEvent::Frame(f) if f.first_packet_at > t0 + Duration::from_millis(500) => {
                frames_after += 1
            }
            ClientEvent::Closed => break,
            _ => {}
        }
    }
    assert_eq!(frames_after, 0, "no video after the shutdown");
    viewer.client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_viewers_and_exits_within_two_seconds() {
    signal_stops_the_server_within_two_seconds("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_closes_viewers_and_exits_within_two_seconds() {
    signal_stops_the_server_within_two_seconds("-INT").await;
}
