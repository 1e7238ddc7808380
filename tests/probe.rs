//! The latency probe, as a user runs it: the `lumacast-probe` binary pointed at a server.

mod common;

use common::TestServer;
use serde_json::Value;
use std::time::Duration;

async fn run_probe(args: &[&str]) -> (bool, Value, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lumacast-probe"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("probe finishes")
    .expect("probe runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (out.status.success(), json, format!("{stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_measures_latency_fps_and_time_to_first_frame_from_the_stripe() {
    let server = TestServer::start(&["cam=synthetic,width=640,height=480,fps=30"]).await;
    let url = format!("http://{}", server.addr);
    let (ok, r, log) = run_probe(&[&url, "--detector", "cam", "--seconds", "3", "--json"]).await;
    assert!(ok, "{log}");
    assert_eq!(r["detector"], "cam", "{log}");
    let frames = r["frames"].as_u64().unwrap();
    assert!(frames >= 45, "3 s at 30 fps gave {frames} frames: {log}");
    assert_eq!(r["frames_without_stripe"], 0, "{log}");
    let fps = r["fps"].as_f64().unwrap();
    assert!((20.0..=35.0).contains(&fps), "{log}");
    let p50 = r["latency_ms"]["p50"].as_f64().unwrap();
    let p99 = r["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && p99 < 1000.0, "{log}");
    let connected = r["connected_ms"].as_f64().unwrap();
    let first = r["first_frame_ms"].as_f64().unwrap();
    assert!(
        connected > 0.0 && first >= connected && first < 5000.0,
        "{log}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_fails_clearly_when_the_server_refuses() {
    let server = TestServer::start(&[]).await;
    let url = format!("http://{}", server.addr);
    let (ok, _, log) = run_probe(&[&url, "--detector", "nope", "--seconds", "1", "--json"]).await;
    assert!(!ok, "{log}");
    assert!(log.contains("HTTP 404"), "{log}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_speaks_whep_too() {
    let server = TestServer::start(&["cam=synthetic,width=640,height=480,fps=30"]).await;
    let url = format!("http://{}/whep/cam", server.addr);
    let (ok, r, log) = run_probe(&[&url, "--whep", "--seconds", "2", "--json"]).await;
    assert!(ok, "{log}");
    assert!(r["frames"].as_u64().unwrap() >= 30, "{log}");
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() < 1000.0, "{log}");
    assert!(r["first_frame_ms"].as_f64().unwrap() > 0.0, "{log}");
    // a WHEP endpoint that does not exist: a clear failure
    let bad = format!("http://{}/whep/nope", server.addr);
    let (ok, _, log) = run_probe(&[&bad, "--whep", "--seconds", "1", "--json"]).await;
    assert!(!ok && log.contains("HTTP 404"), "{log}");
    server.stop().await;
}
