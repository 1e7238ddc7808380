//! Latency probe: connects to a running server as a WebRTC viewer, decodes the video,
//! reads the timestamp stripe (docs: shared spec "timestamp stripe v1") and prints
//! capture-to-decoded latency, fps, sequence gaps and time to first frame.
//!
//! Run: cargo run --release --bin lumacast-probe -- [http://127.0.0.1:8080] [--detector NAME] [--seconds 10] [--json] [--whep]
//!
//! `--whep` treats the URL as a WHEP endpoint (e.g. `http://127.0.0.1:8080/whep/synthetic`)
//! and offers there as `application/sdp` (any WHEP server that sends the stripe works).
//! `--json` prints one JSON object instead of the text report (for scripts and tests);
//! the exit status is non-zero when no frame could be decoded.
//!
//! Works against any server that answers `POST /LiveViewController/webrtc_offer` with
//! `{"sdp": ..., "type": "answer"}` and sends the stripe. Latency uses the wall clock of
//! this machine against the capture time in the pixels: run it on the server's machine
//! (or with synchronised clocks).

use anyhow::{bail, Context};
use lumacast_encode::Decoder;
use lumacast_frame::stripe;
use lumacast_rtc::{ClientEvent, ViewerClient};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// POST a JSON body over plain HTTP/1.1 and return the parsed JSON answer.
async fn post_json(url: &str, path: &str, body: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = post(url, path, "application/json", body).await?;
    if status != "200" {
        bail!("HTTP {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// POST `body` with `content_type` over plain HTTP/1.1; returns the status and body.
async fn post(
    url: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_end_matches('/');
    let full_path = if prefix.is_empty() {
        path.to_string()
    } else {
        format!("/{prefix}{path}")
    };
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    let req = format!(
        "POST {full_path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .context("no HTTP answer within 20 s")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    Ok((status.to_string(), body))
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .iter()
        .find(|a| a.starts_with("http"))
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let seconds: f64 = opt("--seconds").map_or(Ok(10.0), |s| s.parse())?;
    let detector = opt("--detector");
    let json_out = args.iter().any(|a| a == "--json");
    let whep = args.iter().any(|a| a == "--whep");

    let mut client = ViewerClient::new(&["42e01f", "42001f"]).await?;
    let mut body = serde_json::json!({"sdp": client.offer_sdp(), "type": "offer"});
    if let Some(d) = &detector {
        body["detectorName"] = d.clone().into();
    }
    let posted = Instant::now();
    let sdp = if whep {
        // Standard WHEP: the URL is the endpoint, the offer goes as application/sdp.
        let (status, answer) = post(&url, "", "application/sdp", client.offer_sdp()).await?;
        if status != "201" {
            bail!("HTTP {status}: {answer}");
        }
        answer
    } else {
        let answer = post_json(&url, "/LiveViewController/webrtc_offer", &body.to_string()).await?;
        answer["sdp"]
            .as_str()
            .context("the answer has no \"sdp\"")?
            .to_string()
    };
    let answered = posted.elapsed();
    client.accept_answer(sdp).await?;

    let mut decoder = Decoder::new()?;
    let mut latencies = Vec::new();
    let mut connected = None;
    let mut first_frame = None;
    let mut last_seq: Option<u32> = None;
    let (mut gaps, mut missing, mut frames, mut no_stripe, mut lost) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut first_t: Option<u64> = None;
    let mut last_t = 0u64;
    let started = Instant::now();
    // (seconds since start, latency ms) for the drift report; at most 30 fps x the run.
    let mut timed: Vec<(f64, f64)> = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        match client
            .next_event(end.saturating_duration_since(Instant::now()))
            .await
        {
            Some(ClientEvent::Connected(t)) => connected = Some(t - posted),
            Some(ClientEvent::Frame(f)) => {
                lost += u64::from(f.lost_before);
                let Ok(Some(pic)) = decoder.decode(&f.access_unit) else {
                    continue;
                };
                let decoded_us = now_us();
                frames += 1;
                first_frame.get_or_insert_with(|| posted.elapsed());
                match stripe::read_luma(&pic.y, pic.width as usize, pic.width, pic.height) {
                    Some(s) => {
                        let l = (decoded_us as f64 - s.t_us as f64) / 1000.0;
                        latencies.push(l);
                        timed.push((started.elapsed().as_secs_f64(), l));
                        if let Some(prev) = last_seq {
                            if s.seq > prev + 1 {
                                gaps += 1;
                                missing += u64::from(s.seq - prev - 1);
                            }
                        }
                        last_seq = Some(s.seq);
                        first_t.get_or_insert(s.t_us);
                        last_t = s.t_us;
                    }
                    None => no_stripe += 1,
                }
            }
            Some(ClientEvent::Closed) => {
                eprintln!("the server closed the connection");
                break;
            }
            None => break,
        }
    }
    client.close().await;

    let span = first_t.map_or(0.0, |t| (last_t.saturating_sub(t)) as f64 / 1e6);
    let fps = if span > 0.0 {
        (latencies.len().saturating_sub(1)) as f64 / span
    } else {
        0.0
    };
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    let n = latencies.len();
    let (p50, p90, p99) = (
        pct(&mut latencies, 0.5),
        pct(&mut latencies, 0.9),
        pct(&mut latencies, 0.99),
    );
    let drift = (seconds >= 120.0).then(|| {
        let total = started.elapsed().as_secs_f64();
        let mut first: Vec<f64> = timed.iter().filter(|t| t.0 < 60.0).map(|t| t.1).collect();
        let mut last: Vec<f64> = timed
            .iter()
            .filter(|t| t.0 >= total - 60.0)
            .map(|t| t.1)
            .collect();
        (pct(&mut first, 0.5), pct(&mut last, 0.5), total)
    });
    if json_out {
        let finite = |x: f64| if x.is_finite() { Some(x) } else { None };
        println!(
            "{}",
            serde_json::json!({
                "url": url,
                "detector": detector,
                "answer_ms": ms(Some(answered)),
                "connected_ms": ms(connected),
                "first_frame_ms": ms(first_frame),
                "frames": frames,
                "frames_without_stripe": no_stripe,
                "fps": fps,
                "sequence_gaps": gaps,
                "frames_missing": missing,
                "frames_discarded_after_loss": lost,
                "latency_ms": {"p50": finite(p50), "p90": finite(p90), "p99": finite(p99), "samples": n},
                "drift_ms": drift.map(|(a, b, _)| b - a),
            })
        );
    } else {
        print_report(
            &url,
            detector.as_deref(),
            answered,
            connected,
            first_frame,
            frames,
            no_stripe,
            fps,
            gaps,
            missing,
            lost,
            (p50, p90, p99, n),
            drift,
        );
    }
    if frames == 0 {
        bail!("no frame was decoded");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    url: &str,
    detector: Option<&str>,
    answered: Duration,
    connected: Option<Duration>,
    first_frame: Option<Duration>,
    frames: u64,
    no_stripe: u64,
    fps: f64,
    gaps: u64,
    missing: u64,
    lost: u64,
    (p50, p90, p99, n): (f64, f64, f64, usize),
    drift: Option<(f64, f64, f64)>,
) {
    println!(
        "server        {url} detector {}",
        detector.unwrap_or("(default)")
    );
    println!(
        "answer        {:.1} ms after the POST",
        answered.as_secs_f64() * 1000.0
    );
    let after = |d: Option<Duration>, what: &str| {
        d.map_or("never".into(), |d| {
            format!("{:.1} ms after the POST{what}", d.as_secs_f64() * 1000.0)
        })
    };
    println!("connected     {}", after(connected, ""));
    println!("first frame   {}", after(first_frame, " (decoded)"));
    println!("frames        {frames} decoded, {fps:.1} fps by the stripe clock, {no_stripe} without a stripe");
    println!("sequence gaps {gaps} ({missing} frames never shown), {lost} frames discarded after packet loss");
    println!(
        "latency       capture → decoded p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms ({n} frames)"
    );
    if let Some((a, b, total)) = drift {
        println!(
            "drift         p50 first minute {a:.2} ms, last minute {b:.2} ms: {:+.2} ms over {total:.0} s",
            b - a
        );
    }
}
