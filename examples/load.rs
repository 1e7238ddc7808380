//! Load program: opens N loopback viewers (webrtc-rs peers that receive but do not decode)
//! on a running server and reports, step by step, the fps each viewer gets and the
//! server's CPU use (from its `/api/stats` "process" block), so the cost of one more
//! viewer can be read off.
//!
//! Run: cargo run --release --example load -- http://127.0.0.1:8080 [--detector NAME] [--steps 1,10,25,50] [--seconds 10] [--twcc]
//!
//! Run the server as its own process (`cargo run --release`) so that its CPU is not
//! mixed with the viewers'. Both share this machine's cores, which caps what it can show.

use anyhow::{bail, Context};
use lumacast_rtc::{ClientEvent, ClientOptions, ViewerClient};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(url: &str, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let host = url
        .strip_prefix("http://")
        .context("only http:// URLs")?
        .trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").context("malformed answer")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("chunked") {
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
    Ok((status, body))
}

/// The server's CPU seconds so far.
async fn server_cpu(url: &str) -> anyhow::Result<f64> {
    let (st, body) = http(url, "GET", "/api/stats?window_s=1", "").await?;
    if st != 200 {
        bail!("stats answered {st}: {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    v["process"]["cpu_seconds"]
        .as_f64()
        .context("the server reports no process CPU time")
}

/// Connects one viewer; its task counts received frames into `counter`.
async fn open_viewer(
    url: &str,
    detector: &Option<String>,
    counter: Arc<AtomicU64>,
    twcc: bool,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // With `--twcc` each viewer sends transport-wide feedback, as browsers do, so the
    // server runs its link estimator for every one of them.
    let mut client = ViewerClient::with_options(
        &["42e01f"],
        ClientOptions {
            transport_cc: twcc,
            ..Default::default()
        },
    )
    .await?;
    let mut body = serde_json::json!({"sdp": client.offer_sdp(), "type": "offer"});
    if let Some(d) = detector {
        body["detectorName"] = d.clone().into();
    }
    let (st, answer) = http(
        url,
        "POST",
        "/LiveViewController/webrtc_offer",
        &body.to_string(),
    )
    .await?;
    if st != 200 {
        bail!("offer answered {st}: {answer}");
    }
    let v: serde_json::Value = serde_json::from_str(&answer)?;
    client
        .accept_answer(v["sdp"].as_str().context("no sdp")?.to_string())
        .await?;
    Ok(tokio::spawn(async move {
        while let Some(ev) = client.next_event(Duration::from_secs(3600)).await {
            match ev {
                ClientEvent::Frame(_) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                ClientEvent::Closed => break,
                _ => {}
            }
        }
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
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
    let detector = opt("--detector");
    let twcc = args.iter().any(|a| a == "--twcc");
    let seconds: f64 = opt("--seconds").map_or(Ok(10.0), |s| s.parse())?;
    let steps: Vec<usize> = opt("--steps")
        .unwrap_or_else(|| "1,10,25,50".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;

    println!("lumacast load: {url}, {seconds} s per step, viewers receive without decoding");
    println!(
        "{:>8} | {:>22} | {:>12} | {:>16}",
        "viewers", "fps per viewer min/avg", "server CPU %", "CPU % per viewer"
    );
    let mut counters: Vec<Arc<AtomicU64>> = Vec::new();
    let mut tasks = Vec::new();
    let mut base: Option<(usize, f64)> = None;
    for &n in &steps {
        while counters.len() < n {
            let c = Arc::new(AtomicU64::new(0));
            tasks.push(open_viewer(&url, &detector, c.clone(), twcc).await?);
            counters.push(c);
        }
        // settle: connections up, keyframes through
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let cpu0 = server_cpu(&url).await?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = (server_cpu(&url).await? - cpu0) / elapsed * 100.0;
        let fps: Vec<f64> = counters
            .iter()
            .zip(&before)
            .map(|(c, b)| (c.load(Ordering::Relaxed) - b) as f64 / elapsed)
            .collect();
        let min = fps.iter().cloned().fold(f64::INFINITY, f64::min);
        let avg = fps.iter().sum::<f64>() / fps.len() as f64;
        let per = match base {
            Some((n0, c0)) if n > n0 => format!("{:.2}", (cpu - c0) / (n - n0) as f64),
            _ => "-".into(),
        };
        println!("{n:>8} | {min:>10.1} / {avg:>9.1} | {cpu:>11.1}% | {per:>16}");
        if base.is_none() {
            base = Some((n, cpu));
        }
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}
