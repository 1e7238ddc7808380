//! Latency probe: connects to a running server as a WebRTC viewer, decodes the video,
//! reads the timestamp stripe (docs: shared spec "timestamp stripe v1") and prints
//! capture-to-decoded latency, fps, sequence gaps and time to first frame.
//!
//! Run: cargo run --release --bin lumacast-probe -- [http://127.0.0.1:8080] [--detector NAME] [--seconds 10] [--json] [--whep] [--janus URL]
//!     [--bind IP] [--nack] [--rtx] [--twcc] [--warmup 3]
//!
//! `--bind IP` gathers the ICE host candidate on that address (default 127.0.0.1; e.g. a
//! network namespace's veth address). `--nack` offers NACK (the client asks for lost
//! packets again and waits up to 300 ms for them), `--rtx` offers RFC 4588 RTX too, as
//! Chromium does (implies `--nack`: retransmissions and bandwidth probes may then come on
//! the server's RTX stream; the report counts them), `--twcc` offers transport-wide
//! congestion control feedback, as a browser does. `--warmup S` (default 3) starts the
//! "after warmup" figures S seconds after the answer was applied: fps, the longest gap
//! between decoded pictures (the window's edges count), capture → decoded latency from the
//! stripe (full-resolution pictures only) and from the RTP timestamp (every picture: the
//! server's RTP clock is its capture clock, calibrated here on the pictures with a stripe),
//! and the decoded picture sizes.
//!
//! `--whep` treats the URL as a WHEP endpoint (e.g. `http://127.0.0.1:8080/whep/synthetic`)
//! and offers there as `application/sdp` (any WHEP server that sends the stripe works).
//! `--janus 'http://HOST:PORT/janus?room=N[&feed=ID][&display=NAME][&pin=P][&secret=S]'`
//! subscribes through a Janus VideoRoom instead (Janus 1.x HTTP API: Janus offers, the
//! probe answers): the publisher `feed`, else the one named `display`, else the room's
//! first, waiting up to `--wait-publisher S` (default 10) for it to appear. The probe
//! gathers on `--bind IP`, or else on the address of Janus's host candidates when this
//! machine has it (Janus on this machine: libnice does not pair loopback). The report is
//! the same, the "answer" being Janus's `started`; `--json` adds a "janus" object (session,
//! feed, `first_frame_unix_ms`: the wall clock of the first decoded picture).
//!
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
use lumacast_rtc::{ClientEvent, ClientOptions, ClientStats, ViewerClient};
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

/// One decoded picture.
struct Decoded {
    /// Seconds since the measurement started (the answer was applied).
    t: f64,
    /// Wall clock when it was decoded (µs since the UNIX epoch).
    decoded_us: u64,
    width: u32,
    height: u32,
    rtp_ts: u32,
    /// The stripe, when readable (full resolution) and plausible.
    stripe: Option<stripe::StripeReading>,
}

/// A stripe read from a picture that is not at the stripe's own scale gives arbitrary bits;
/// a real capture time is within a minute of now.
fn plausible(s: &stripe::StripeReading, decoded_us: u64) -> bool {
    s.t_us <= decoded_us + 1_000_000 && decoded_us - s.t_us.min(decoded_us) < 60_000_000
}

/// p50/p99 of `v` in the JSON shape `{p50_ms, p99_ms, samples}`.
fn quantiles(mut v: Vec<f64>) -> serde_json::Value {
    let finite = |x: f64| if x.is_finite() { Some(x) } else { None };
    let n = v.len();
    serde_json::json!({
        "p50_ms": finite(pct(&mut v, 0.5)),
        "p99_ms": finite(pct(&mut v, 0.99)),
        // A clearly negative minimum would mean a broken clock calibration.
        "min_ms": finite(pct(&mut v, 0.0)),
        "samples": n,
    })
}

/// What the run after the warmup looked like.
struct AfterWarmup {
    fps: f64,
    max_gap_ms: f64,
    /// Capture → decoded from the stripe (full-resolution frames only).
    stripe_latency: Vec<f64>,
    /// Capture → decoded from the RTP timestamp, calibrated on the stripe (every frame);
    /// `None` when no frame with a stripe was decoded.
    rtp_latency: Option<Vec<f64>>,
    /// Calibration frames and the spread of their offsets (ms).
    calibration: (usize, f64),
    sizes: std::collections::BTreeMap<String, u64>,
}

/// The measurement window is `[warmup, end]` (seconds since the start). Gaps include the
/// window's edges: a viewer frozen at the end of the run shows that freeze.
fn after_warmup(frames: &[Decoded], warmup: f64, end: f64) -> AfterWarmup {
    let warmup = warmup.min(end);
    let inside: Vec<&Decoded> = frames.iter().filter(|f| f.t >= warmup).collect();
    let span = end - warmup;
    let fps = if span > 0.0 {
        inside.len() as f64 / span
    } else {
        0.0
    };
    let mut edges = vec![warmup];
    edges.extend(inside.iter().map(|f| f.t));
    edges.push(end);
    let max_gap_ms = edges
        .windows(2)
        .map(|w| (w[1] - w[0]) * 1000.0)
        .fold(0.0, f64::max);
    let stripe_latency = inside
        .iter()
        .filter_map(|f| {
            f.stripe
                .map(|s| (f.decoded_us as f64 - s.t_us as f64) / 1000.0)
        })
        .collect();
    // RTP timestamps are capture times on a 90 kHz clock plus a per-viewer offset:
    // unwrap them, then the offset to the wall clock is what the stripe frames say.
    let mut ext = Vec::with_capacity(frames.len());
    let mut prev: Option<(u32, i64)> = None;
    for f in frames {
        let e = match prev {
            Some((ts, e)) => e + i64::from(f.rtp_ts.wrapping_sub(ts) as i32),
            None => 0,
        };
        prev = Some((f.rtp_ts, e));
        ext.push(e);
    }
    let mut offsets: Vec<f64> = frames
        .iter()
        .zip(&ext)
        .filter_map(|(f, &e)| f.stripe.map(|s| s.t_us as f64 - e as f64 * 100.0 / 9.0))
        .collect();
    let spread = offsets.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        - offsets.iter().copied().fold(f64::INFINITY, f64::min);
    let points = offsets.len();
    let rtp_latency = (!offsets.is_empty()).then(|| {
        let offset = pct(&mut offsets, 0.5);
        frames
            .iter()
            .zip(&ext)
            .filter(|(f, _)| f.t >= warmup)
            .map(|(f, &e)| (f.decoded_us as f64 - (offset + e as f64 * 100.0 / 9.0)) / 1000.0)
            .collect()
    });
    let mut sizes = std::collections::BTreeMap::new();
    for f in &inside {
        *sizes
            .entry(format!("{}x{}", f.width, f.height))
            .or_insert(0) += 1;
    }
    AfterWarmup {
        fps,
        max_gap_ms,
        stripe_latency,
        rtp_latency,
        calibration: (points, if points > 0 { spread / 1000.0 } else { 0.0 }),
        sizes,
    }
}

/// Decoded frames per second of the run, and their sizes.
fn per_second(frames: &[Decoded], end: f64) -> Vec<(u64, std::collections::BTreeMap<String, u64>)> {
    let n = end.ceil().max(0.0) as usize;
    let mut out = vec![(0u64, std::collections::BTreeMap::new()); n];
    for f in frames {
        if let Some(slot) = out.get_mut(f.t as usize) {
            slot.0 += 1;
            *slot
                .1
                .entry(format!("{}x{}", f.width, f.height))
                .or_insert(0) += 1;
        }
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let janus = opt("--janus");
    // The server URL: the first http… argument that is not `--janus`'s value.
    let url = match &janus {
        Some(j) => j.clone(),
        None => args
            .iter()
            .find(|a| a.starts_with("http"))
            .cloned()
            .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
    };
    let wait_publisher: f64 = opt("--wait-publisher").map_or(Ok(10.0), |s| s.parse())?;
    let seconds: f64 = opt("--seconds").map_or(Ok(10.0), |s| s.parse())?;
    let warmup: f64 = opt("--warmup").map_or(Ok(3.0), |s| s.parse())?;
    let bind_opt: Option<std::net::IpAddr> = opt("--bind").map(|s| s.parse()).transpose()?;
    let bind = bind_opt.unwrap_or([127, 0, 0, 1].into());
    let detector = opt("--detector");
    let json_out = args.iter().any(|a| a == "--json");
    let whep = args.iter().any(|a| a == "--whep");
    let rtx = args.iter().any(|a| a == "--rtx");
    let options = ClientOptions {
        udp_addrs: vec![std::net::SocketAddr::new(bind, 0).to_string()],
        nack: rtx || args.iter().any(|a| a == "--nack"),
        transport_cc: args.iter().any(|a| a == "--twcc"),
        rtx,
    };

    if let Some(janus_url) = &janus {
        let (client, sub, posted, answered) =
            janus_subscribe(janus_url, bind_opt, options, wait_publisher).await?;
        let janus_info = serde_json::json!({
            "session": sub.session_id(),
            "feed": sub.feed,
            "subscribed_unix_ms": now_us() / 1000,
        });
        let measured = measure(
            client, posted, answered, seconds, warmup, &url, &detector, json_out, janus_info,
        )
        .await;
        sub.close().await;
        return measured;
    }
    let client = ViewerClient::with_options(&["42e01f", "42001f"], options).await?;
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
    measure(
        client,
        posted,
        answered,
        seconds,
        warmup,
        &url,
        &detector,
        json_out,
        serde_json::Value::Null,
    )
    .await
}

/// `--janus http://HOST:PORT/janus?room=N[&feed=ID][&display=NAME][&pin=P][&secret=S]`:
/// subscribes through Janus's VideoRoom (the feed `feed`, else the publisher named
/// `display`, else the room's first publisher, waiting up to `wait` seconds for it) and
/// answers Janus's offer. Gathers on `bind`, or else on the address of Janus's own host
/// candidates when this machine has it (Janus on this machine: libnice does not pair
/// loopback). Returns the client, the subscription, when the join was posted and how
/// long until Janus started sending.
async fn janus_subscribe(
    url: &str,
    bind: Option<std::net::IpAddr>,
    mut options: ClientOptions,
    wait: f64,
) -> anyhow::Result<(
    ViewerClient,
    lumacast::publish::janus::JanusSubscription,
    Instant,
    Duration,
)> {
    use lumacast::publish::janus::{JanusFeed, JanusSubscription};
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--janus {url}"))?;
    let mut room = lumacast::publish::JanusRoom {
        room: 0,
        display: None,
        pin: None,
        api_secret: None,
    };
    let mut feed = JanusFeed::First;
    let mut has_room = false;
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "room" => {
                room.room = v.parse().context("--janus: room must be a number")?;
                has_room = true;
            }
            "feed" => feed = JanusFeed::Id(v.parse().context("--janus: feed must be a number")?),
            "display" if !matches!(feed, JanusFeed::Id(_)) => {
                feed = JanusFeed::Display(v.into_owned())
            }
            "display" => {}
            "pin" => room.pin = Some(v.into_owned()),
            "secret" => room.api_secret = Some(v.into_owned()),
            other => {
                bail!("--janus: unknown parameter {other:?} (room, feed, display, pin, secret)")
            }
        }
    }
    if !has_room {
        bail!("--janus {url}: no room (…/janus?room=1234)");
    }
    let mut base = parsed.clone();
    base.set_query(None);
    let http = reqwest::Client::new();
    let posted = Instant::now();
    let mut sub = JanusSubscription::join(
        &http,
        base.as_str(),
        &room,
        &feed,
        Duration::from_secs_f64(wait),
    )
    .await
    .with_context(|| format!("subscribing to {feed:?} in Janus room {}", room.room))?;
    let ip = match bind.or_else(|| sub.local_ice_ip()) {
        Some(ip) => ip,
        None => {
            sub.close().await;
            bail!("Janus offers no candidate on this machine: give --bind IP");
        }
    };
    options.udp_addrs = vec![std::net::SocketAddr::new(ip, 0).to_string()];
    let (client, answer) = match ViewerClient::answering(&sub.offer_sdp, options).await {
        Ok(a) => a,
        Err(e) => {
            sub.close().await;
            bail!("answering Janus's offer: {e}");
        }
    };
    if let Err(e) = sub.start(&answer).await {
        client.close().await;
        sub.close().await;
        bail!("Janus start: {e}");
    }
    let answered = posted.elapsed();
    Ok((client, sub, posted, answered))
}

/// Receives and decodes for `seconds`, then prints the report (`janus`: extra fields of
/// the JSON report, `null` for none).
#[allow(clippy::too_many_arguments)]
async fn measure(
    mut client: ViewerClient,
    posted: Instant,
    answered: Duration,
    seconds: f64,
    warmup: f64,
    url: &str,
    detector: &Option<String>,
    json_out: bool,
    mut janus: serde_json::Value,
) -> anyhow::Result<()> {
    let mut first_frame_unix_ms = None;

    let mut decoder = Decoder::new()?;
    let mut latencies = Vec::new();
    let mut connected = None;
    let mut first_frame = None;
    let mut last_seq: Option<u32> = None;
    let (mut gaps, mut missing, mut frames, mut no_stripe, mut lost) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut keyframes, mut undecodable) = (0u64, 0u64);
    // The client's counters when the warmup ended, for the received bitrate after it.
    let mut at_warmup: Option<(Instant, ClientStats)> = None;
    let mut first_t: Option<u64> = None;
    let mut last_t = 0u64;
    let started = Instant::now();
    // (seconds since start, latency ms) for the drift report; at most 30 fps x the run.
    let mut timed: Vec<(f64, f64)> = Vec::new();
    // Every decoded picture (about 40 bytes each, 30 a second).
    let mut decoded: Vec<Decoded> = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        if at_warmup.is_none() && started.elapsed().as_secs_f64() >= warmup {
            at_warmup = Some((Instant::now(), client.stats()));
        }
        match client
            .next_event(end.saturating_duration_since(Instant::now()))
            .await
        {
            Some(ClientEvent::Connected(t)) => connected = Some(t - posted),
            Some(ClientEvent::Frame(f)) => {
                lost += u64::from(f.lost_before);
                keyframes += u64::from(f.keyframe);
                let Ok(Some(pic)) = decoder.decode(&f.access_unit) else {
                    undecodable += 1;
                    continue;
                };
                let decoded_us = now_us();
                frames += 1;
                first_frame.get_or_insert_with(|| posted.elapsed());
                first_frame_unix_ms.get_or_insert(decoded_us / 1000);
                let reading = stripe::read_luma(&pic.y, pic.width as usize, pic.width, pic.height)
                    .filter(|s| plausible(s, decoded_us));
                decoded.push(Decoded {
                    t: started.elapsed().as_secs_f64(),
                    decoded_us,
                    width: pic.width,
                    height: pic.height,
                    rtp_ts: f.rtp_timestamp,
                    stripe: reading,
                });
                match reading {
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
    let ran = started.elapsed().as_secs_f64().min(seconds);
    let stats = client.stats();
    let received_kbps = at_warmup.map(|(t, w)| {
        let secs = t.elapsed().as_secs_f64().max(1e-3);
        (stats.payload_bytes - w.payload_bytes) as f64 * 8.0 / secs / 1000.0
    });
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
    let after = after_warmup(&decoded, warmup, ran);
    let seconds_list = per_second(&decoded, ran);
    let mut sizes = std::collections::BTreeMap::new();
    for f in &decoded {
        *sizes
            .entry(format!("{}x{}", f.width, f.height))
            .or_insert(0u64) += 1;
    }
    if json_out {
        let finite = |x: f64| if x.is_finite() { Some(x) } else { None };
        let rtp_latency = match &after.rtp_latency {
            Some(v) => {
                let mut q = quantiles(v.clone());
                q["calibration_frames"] = after.calibration.0.into();
                q["calibration_spread_ms"] = after.calibration.1.into();
                q
            }
            None => serde_json::json!({
                "p50_ms": null, "p99_ms": null, "samples": 0,
                "error": "no frame with a readable stripe was decoded: nothing to calibrate the RTP clock on",
            }),
        };
        if janus.is_object() {
            janus["first_frame_unix_ms"] = first_frame_unix_ms.into();
        }
        let mut report = serde_json::json!({
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
                "seconds": ran,
                "warmup_s": warmup,
                "keyframes": keyframes,
                "undecodable_frames": undecodable,
                "padding_packets": stats.padding,
                "packets": stats.packets,
                "packets_lost": stats.packets_lost,
                "packets_recovered": stats.packets_recovered,
                "packets_late": stats.packets_late,
                "plis_sent": stats.plis,
                "rtx_packets": stats.rtx,
                "rtx_useful": stats.rtx_useful,
                "rtx_duplicates": stats.rtx_duplicates,
                "rtx_padding": stats.rtx_padding,
                "received_kbps_after_warmup": received_kbps,
                "fps_after_warmup": after.fps,
                "max_gap_ms_after_warmup": after.max_gap_ms,
                "latency_after_warmup": quantiles(after.stripe_latency.clone()),
                "latency_rtp_after_warmup": rtp_latency,
                "sizes": sizes,
                "sizes_after_warmup": after.sizes,
                "fps_per_second": seconds_list.iter().map(|s| s.0).collect::<Vec<_>>(),
                "sizes_per_second": seconds_list.iter().map(|s| &s.1).collect::<Vec<_>>(),
        });
        if !janus.is_null() {
            report["janus"] = janus;
        }
        println!("{report}");
    } else {
        print_report(
            url,
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
        print_after_warmup(&after, warmup, &sizes, &seconds_list);
        println!(
            "packets       {} received, {} lost, {} recovered (out of order in time), {} late, {} padding; {} PLIs sent",
            stats.packets, stats.packets_lost, stats.packets_recovered, stats.packets_late, stats.padding, stats.plis
        );
        println!(
            "rtx           {} received: {} useful (filled a gap), {} duplicates, {} padding only",
            stats.rtx, stats.rtx_useful, stats.rtx_duplicates, stats.rtx_padding
        );
        println!(
            "frames        {keyframes} keyframes, {undecodable} undecodable; received {} kbit/s after the warmup",
            received_kbps.map_or("-".into(), |k| format!("{k:.0}"))
        );
    }
    if frames == 0 {
        bail!("no frame was decoded");
    }
    Ok(())
}

fn print_after_warmup(
    after: &AfterWarmup,
    warmup: f64,
    sizes: &std::collections::BTreeMap<String, u64>,
    seconds: &[(u64, std::collections::BTreeMap<String, u64>)],
) {
    let q = |v: &[f64]| {
        let mut v = v.to_vec();
        let n = v.len();
        let (a, b) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
        format!("p50 {a:.1} ms, p99 {b:.1} ms ({n} frames)")
    };
    println!(
        "after {warmup} s     {:.1} fps, longest gap {:.0} ms, sizes {:?}",
        after.fps, after.max_gap_ms, after.sizes
    );
    println!("  stripe      {}", q(&after.stripe_latency));
    match &after.rtp_latency {
        Some(v) => println!(
            "  rtp clock   {} (calibrated on {} frames, spread {:.2} ms)",
            q(v),
            after.calibration.0,
            after.calibration.1
        ),
        None => println!("  rtp clock   no frame with a readable stripe: cannot calibrate"),
    }
    println!("sizes         {sizes:?}");
    let fps: Vec<String> = seconds.iter().map(|s| s.0.to_string()).collect();
    println!("fps/second    {}", fps.join(" "));
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
