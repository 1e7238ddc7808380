//! Load program: opens N loopback viewers (webrtc-rs peers that receive but do not decode)
//! on a running server and reports, step by step, the fps each viewer gets and the
//! server's CPU use (from its `/api/stats` "process" block), so the cost of one more
//! viewer can be read off.
//!
//! Run: cargo run --release --example load -- http://127.0.0.1:8080 [--detector NAME] [--steps 1,10,25,50] [--seconds 10] [--twcc]
//!
//! `--janus 'http://HOST:PORT/janus?room=N[&display=NAME]'` opens the viewers through a
//! Janus VideoRoom instead (the library's `JanusSubscription`; the publisher named
//! `display`, else the room's first): the server is then only asked for its CPU time, and
//! `--janus-pid PID` adds Janus's CPU (from /proc/PID/stat). The viewers gather on
//! `--bind IP`, or else on the address of Janus's host candidates (Janus on this machine).
//! A step of 0 viewers measures the CPU with none.
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

/// A process's CPU seconds so far (utime + stime from /proc/PID/stat).
fn proc_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // after "(comm)": state is field 3, utime and stime are fields 14 and 15
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Where viewers come from: `--janus` (room, feed, gathering address).
struct JanusTarget {
    base: String,
    room: lumacast::publish::JanusRoom,
    feed: lumacast::publish::janus::JanusFeed,
    bind: Option<std::net::IpAddr>,
}

fn janus_target(url: &str, bind: Option<std::net::IpAddr>) -> anyhow::Result<JanusTarget> {
    use lumacast::publish::janus::JanusFeed;
    let parsed = reqwest::Url::parse(url)?;
    let mut room = None;
    let mut feed = JanusFeed::First;
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "room" => room = Some(v.parse()?),
            "display" => feed = JanusFeed::Display(v.into_owned()),
            "feed" => feed = JanusFeed::Id(v.parse()?),
            other => bail!("--janus: unknown parameter {other:?} (room, display, feed)"),
        }
    }
    let mut base = parsed.clone();
    base.set_query(None);
    Ok(JanusTarget {
        base: base.to_string(),
        room: lumacast::publish::JanusRoom {
            room: room.context("--janus: no room")?,
            display: None,
            pin: None,
            api_secret: None,
        },
        feed,
        bind,
    })
}

/// Connects one viewer through Janus; its task counts received frames into `counter`.
/// The subscription (its session, kept alive) is returned to be closed at the end.
async fn open_janus_viewer(
    janus: &JanusTarget,
    counter: Arc<AtomicU64>,
    twcc: bool,
) -> anyhow::Result<(
    tokio::task::JoinHandle<()>,
    lumacast::publish::janus::JanusSubscription,
)> {
    use lumacast::publish::janus::JanusSubscription;
    let mut sub = JanusSubscription::join(
        &reqwest::Client::new(),
        &janus.base,
        &janus.room,
        &janus.feed,
        Duration::from_secs(10),
    )
    .await?;
    let ip = janus
        .bind
        .or_else(|| sub.local_ice_ip())
        .context("Janus offers no candidate on this machine: give --bind IP")?;
    let opts = ClientOptions {
        udp_addrs: vec![std::net::SocketAddr::new(ip, 0).to_string()],
        transport_cc: twcc,
        ..Default::default()
    };
    let (mut client, answer) = ViewerClient::answering(&sub.offer_sdp, opts).await?;
    sub.start(&answer).await?;
    let task = tokio::spawn(async move {
        while let Some(ev) = client.next_event(Duration::from_secs(3600)).await {
            match ev {
                ClientEvent::Frame(_) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                ClientEvent::Closed => break,
                _ => {}
            }
        }
    });
    Ok((task, sub))
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
    // The server: the first http… argument that is not `--janus`'s value.
    let url = args
        .iter()
        .enumerate()
        .find(|(i, a)| a.starts_with("http") && (*i == 0 || args[i - 1] != "--janus"))
        .map(|(_, a)| a)
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
    let janus = opt("--janus")
        .map(|j| {
            let bind = opt("--bind").map(|b| b.parse()).transpose()?;
            janus_target(&j, bind)
        })
        .transpose()?;
    let janus_pid: Option<u32> = opt("--janus-pid").map(|p| p.parse()).transpose()?;
    let steps: Vec<usize> = opt("--steps")
        .unwrap_or_else(|| "1,10,25,50".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;

    match &janus {
        Some(j) => println!(
            "lumacast load: {url}, viewers through Janus {} room {}, {seconds} s per step, \
             viewers receive without decoding",
            j.base, j.room.room
        ),
        None => {
            println!("lumacast load: {url}, {seconds} s per step, viewers receive without decoding")
        }
    }
    println!(
        "{:>8} | {:>22} | {:>12} | {:>16}{}",
        "viewers",
        "fps per viewer min/avg",
        "server CPU %",
        "CPU % per viewer",
        if janus_pid.is_some() {
            " | Janus CPU %"
        } else {
            ""
        }
    );
    let mut counters: Vec<Arc<AtomicU64>> = Vec::new();
    let mut tasks = Vec::new();
    let mut subs = Vec::new();
    let mut base: Option<(usize, f64)> = None;
    for &n in &steps {
        while counters.len() < n {
            let c = Arc::new(AtomicU64::new(0));
            tasks.push(match &janus {
                Some(j) => {
                    let (task, sub) = open_janus_viewer(j, c.clone(), twcc).await?;
                    subs.push(sub);
                    task
                }
                None => open_viewer(&url, &detector, c.clone(), twcc).await?,
            });
            counters.push(c);
        }
        // settle: connections up, keyframes through
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let cpu0 = server_cpu(&url).await?;
        let janus0 = janus_pid.map(proc_cpu).transpose()?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = (server_cpu(&url).await? - cpu0) / elapsed * 100.0;
        let janus_cpu = match (janus_pid, janus0) {
            (Some(pid), Some(c0)) => {
                format!(" | {:>10.1}%", (proc_cpu(pid)? - c0) / elapsed * 100.0)
            }
            _ => String::new(),
        };
        let fps: Vec<f64> = counters
            .iter()
            .zip(&before)
            .map(|(c, b)| (c.load(Ordering::Relaxed) - b) as f64 / elapsed)
            .collect();
        let (min, avg) = if fps.is_empty() {
            (0.0, 0.0)
        } else {
            (
                fps.iter().cloned().fold(f64::INFINITY, f64::min),
                fps.iter().sum::<f64>() / fps.len() as f64,
            )
        };
        let per = match base {
            Some((n0, c0)) if n > n0 => format!("{:.2}", (cpu - c0) / (n - n0) as f64),
            _ => "-".into(),
        };
        println!("{n:>8} | {min:>10.1} / {avg:>9.1} | {cpu:>11.1}% | {per:>16}{janus_cpu}");
        if base.is_none() {
            base = Some((n, cpu));
        }
    }
    for t in tasks {
        t.abort();
    }
    // Through Janus: leave and destroy every session.
    for sub in subs {
        sub.close().await;
    }
    Ok(())
}
