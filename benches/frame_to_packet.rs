//! The whole path, measured: synthetic detector → encoder → webrtc-rs over loopback →
//! client peers in the same process.
//!
//! Run: `cargo bench --bench frame_to_packet -- [--sizes 1280x720,...] [--viewers 2] [--seconds 10]`
//!
//! Prints per size: fps each viewer received, frame-to-first-packet and frame-to-last-packet
//! (capture → RTP packet handed to the network, measured in the server for every frame
//! and viewer), capture → first packet *arriving* at viewer 0 (wall clock, from the
//! timestamp stripe of the decoded picture), the encode time and its share, and the
//! process CPU use.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{now_us, TestServer};
use lumacast_encode::Decoder;
use lumacast_frame::stripe;
use lumacast_rtc::{ClientEvent, ViewerClient};
use std::time::{Duration, Instant};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux)
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn pct(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--bench") && std::env::args().count() <= 2 {
        // `cargo bench` passes --bench; defaults apply.
    }
    let sizes = arg("--sizes", "640x480,1280x720,1920x1080,2048x2048");
    let viewers: usize = arg("--viewers", "2").parse().unwrap();
    let seconds: f64 = arg("--seconds", "10").parse().unwrap();
    let fps: f64 = arg("--fps", "30").parse().unwrap();
    // Decoding viewer 0's video (to read the stripe) costs a few ms of CPU per frame on
    // the same 2 cores as the encoder: off by default, `--decode 1` to measure arrival.
    let decode = arg("--decode", "0") == "1";
    println!(
        "lumacast frame_to_packet: {viewers} viewers, {seconds} s per size, Mono16 12-bit synthetic at {fps} fps, assembly={}",
        lumacast_encode::build_info().assembly
    );
    println!(
        "{:>10} | {:>13} | {:>17} | {:>17} | {:>17} | {:>14} | {:>6} | {:>6}",
        "size",
        "fps/viewer",
        "first pkt p50/p99",
        "last pkt p50/p99",
        "arrival p50/p99",
        "encode p50/p99",
        "enc %",
        "CPU %"
    );
    for size in sizes.split(',') {
        let (w, h) = size.split_once('x').expect("WxH");
        let det = format!("bench=synthetic,width={w},height={h},bits=12,fps={fps}");
        let server = TestServer::start(&[det.as_str()]).await;
        let mut clients = Vec::new();
        for _ in 0..viewers {
            let c = ViewerClient::new(&["42e01f"]).await.unwrap();
            let body = serde_json::json!({"sdp": c.offer_sdp(), "type": "offer"}).to_string();
            let (st, ans) = server.post("/LiveViewController/webrtc_offer", &body).await;
            assert_eq!(st, 200, "{ans}");
            c.accept_answer(ans["sdp"].as_str().unwrap().to_string())
                .await
                .unwrap();
            clients.push(c);
        }
        // warm-up: let the connections settle and the encoder reach steady state
        let warm = Instant::now() + Duration::from_secs(2);
        for c in clients.iter_mut() {
            while Instant::now() < warm {
                let left = warm.saturating_duration_since(Instant::now());
                if c.next_event(left).await.is_none() {
                    break;
                }
            }
        }
        eprintln!("[{size}] connected, measuring");
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs_f64(seconds);
        let mut first = clients.remove(0);
        // viewer 0 decodes (on a blocking thread) to read the stripe
        let (dtx, drx) = std::sync::mpsc::sync_channel::<(Vec<u8>, u64)>(64);
        let decoder = std::thread::spawn(move || {
            let mut dec = Decoder::new().unwrap();
            let mut lat = Vec::new();
            while let Ok((au, arrival_us)) = drx.recv() {
                if let Ok(Some(p)) = dec.decode(&au) {
                    if let Some(s) = stripe::read_luma(&p.y, p.width as usize, p.width, p.height) {
                        lat.push((arrival_us as f64 - s.t_us as f64) / 1000.0);
                    }
                }
            }
            lat
        });
        let counting = clients.into_iter().map(|mut c| {
            tokio::spawn(async move {
                let mut n = 0usize;
                while Instant::now() < end {
                    match c
                        .next_event(end.saturating_duration_since(Instant::now()))
                        .await
                    {
                        Some(ClientEvent::Frame(f)) if f.first_packet_at >= t0 => n += 1,
                        Some(_) => {}
                        None => break,
                    }
                }
                c.close().await;
                n
            })
        });
        let counting: Vec<_> = counting.collect();
        let mut n0 = 0usize;
        while Instant::now() < end {
            match first
                .next_event(end.saturating_duration_since(Instant::now()))
                .await
            {
                Some(ClientEvent::Frame(f)) if f.first_packet_at >= t0 => {
                    n0 += 1;
                    let arrival_us = now_us() - f.first_packet_at.elapsed().as_micros() as u64;
                    if decode {
                        let _ = dtx.try_send((f.access_unit.to_vec(), arrival_us));
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = (cpu_seconds() - cpu0) / elapsed * 100.0;
        eprintln!("[{size}] measured, collecting");
        let (_, stats) = server
            .get(&format!("/api/stats?window_s={}", seconds.min(60.0)))
            .await;
        eprintln!("[{size}] stats");
        first.close().await;
        drop(dtx);
        let arrival = decoder.join().unwrap();
        let mut counts = vec![n0];
        for c in counting {
            counts.push(c.await.unwrap());
        }
        eprintln!("[{size}] joined");
        let d = &stats["detectors"][0];
        let vs = d["viewers"].as_array().cloned().unwrap_or_default();
        let avg = |key: &str, q: &str| {
            let xs: Vec<f64> = vs.iter().filter_map(|v| v[key][q].as_f64()).collect();
            xs.iter().sum::<f64>() / xs.len().max(1) as f64
        };
        let fps_list: Vec<String> = counts
            .iter()
            .map(|n| format!("{:.1}", *n as f64 / elapsed))
            .collect();
        let enc50 = d["encode"]["p50_ms"].as_f64().unwrap_or(f64::NAN);
        let first50 = avg("frame_to_first_packet", "p50_ms");
        println!(
            "{:>10} | {:>13} | {:>7.2} / {:>7.2} | {:>7.2} / {:>7.2} | {:>7.2} / {:>7.2} | {:>6.2} / {:>5.2} | {:>5.0}% | {:>5.0}%",
            size,
            fps_list.join(" "),
            first50,
            avg("frame_to_first_packet", "p99_ms"),
            avg("frame_to_last_packet", "p50_ms"),
            avg("frame_to_last_packet", "p99_ms"),
            pct(arrival.clone(), 0.5),
            pct(arrival, 0.99),
            enc50,
            d["encode"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
            enc50 / first50 * 100.0,
            cpu,
        );
        server.stop().await;
    }
}
