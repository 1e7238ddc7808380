//! Shared scenario plumbing: a real server on 127.0.0.1:0, a minimal HTTP client, and a
//! real WebRTC viewer that decodes what it receives.
#![allow(dead_code)]

pub mod janus;
pub mod netlab;
pub mod turn;

use lumacast::Config;
use lumacast_encode::Decoder;
use lumacast_frame::stripe::{self, StripeReading};
use lumacast_rtc::{ClientEvent, ViewerClient};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

pub struct TestServer {
    pub addr: SocketAddr,
    /// The server's shared state (`None` for a server attached from elsewhere).
    pub state: Option<lumacast::AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts `lumacast::run` with the defaults plus `detectors` (if any).
    pub async fn start(detectors: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", detectors).await
    }

    /// Like [`TestServer::start`] on a given address (to restart on the same port).
    pub async fn start_on(addr: &str, detectors: &[&str]) -> Self {
        Self::start_with(addr, detectors, |_| {}).await
    }

    /// Like [`TestServer::start_on`], with a chance to change the configuration.
    pub async fn start_with(
        addr: &str,
        detectors: &[&str],
        change: impl FnOnce(&mut Config),
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut config = Config::default_for_tests();
        config.detectors = detectors.iter().map(|s| s.to_string()).collect();
        change(&mut config);
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let state = lumacast::App::new(&config).expect("valid test configuration");
        let task = tokio::spawn(lumacast::serve(state.clone(), listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            state: Some(state),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A handle on a server running elsewhere (e.g. the real binary); `stop` does nothing.
    pub fn attach(addr: SocketAddr) -> Self {
        TestServer {
            addr,
            state: None,
            shutdown: None,
            task: None,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("server stops within 10 s")
                .expect("server task")
                .expect("server result");
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        http(self.addr, "GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        http(self.addr, "POST", path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &str) -> (u16, Value) {
        http(self.addr, "PATCH", path, Some(body)).await
    }
}

/// One HTTP/1.1 request on a fresh connection; returns status and JSON body (Null if not JSON).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, text) = http_raw(addr, method, path, body.map(str::as_bytes)).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> (u16, String) {
    let (status, _, body) = http_with(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
    )
    .await;
    (status, String::from_utf8_lossy(&body).to_string())
}

/// One request returning the raw answer: status, lower-cased header block, body bytes
/// (for binary bodies such as snapshots; chunked bodies are de-chunked).
pub async fn http_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> (u16, String, Vec<u8>) {
    http_with(
        addr,
        method,
        path,
        &[("Content-Type", "application/octet-stream")],
        body,
    )
    .await
}

/// Like [`http_bytes`] with the given request headers.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or(b"");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // A server that refuses a body early (413) may close before reading it all.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    // A reset after the answer (the server dropped an unread body) keeps what was read.
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("HTTP response within 20 s");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let headers = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status: u16 = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut rest = &buf[split + 4..];
    let body = if headers.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 2 + n + 2..];
        }
        out
    } else {
        rest.to_vec()
    };
    (status, headers, body)
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A decoded frame as a viewer saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub stripe: Option<StripeReading>,
    pub width: u32,
    pub height: u32,
    pub decoded_at: Instant,
    pub decoded_us: u64,
    pub first_packet_at: Instant,
    pub first_packet_us: u64,
    /// Mean luma below the stripe (rows 64..), and mean chroma over the same rows.
    pub mean_y: f64,
    pub mean_u: f64,
    pub mean_v: f64,
}

fn mean(v: &[u8]) -> f64 {
    v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64
}

/// A connected viewer that decodes.
pub struct Viewer {
    pub client: ViewerClient,
    pub decoder: Decoder,
    pub posted_at: Instant,
    pub connected_at: Option<Instant>,
    pub answer: Value,
}

impl Viewer {
    /// Offers (profiles as given), POSTs to webrtc_offer with `detector`, applies the answer.
    pub async fn join(server: &TestServer, detector: Option<&str>, profiles: &[&str]) -> Viewer {
        let client = ViewerClient::new(profiles).await.expect("client peer");
        let mut body = serde_json::json!({"sdp": client.offer_sdp(), "type": "offer"});
        if let Some(d) = detector {
            body["detectorName"] = d.into();
        }
        let posted_at = Instant::now();
        let (status, answer) = server
            .post("/LiveViewController/webrtc_offer", &body.to_string())
            .await;
        assert_eq!(status, 200, "webrtc_offer answered {answer}");
        assert_eq!(answer["status"], "success");
        assert_eq!(answer["type"], "answer");
        let sdp = answer["sdp"].as_str().expect("answer sdp").to_string();
        assert!(sdp.contains("a=candidate"), "answer carries our candidates");
        client.accept_answer(sdp).await.expect("answer accepted");
        Viewer {
            client,
            decoder: Decoder::new().expect("decoder"),
            posted_at,
            connected_at: None,
            answer,
        }
    }

    /// Joins through WHEP (`POST /whep/{detector}` with `application/sdp`); returns the
    /// viewer and the response's header block (lower-cased).
    pub async fn join_whep(server: &TestServer, detector: &str) -> (Viewer, String) {
        let client = ViewerClient::new(&["42e01f"]).await.expect("client peer");
        let posted_at = Instant::now();
        let (status, headers, body) = http_with(
            server.addr,
            "POST",
            &format!("/whep/{detector}"),
            &[("Content-Type", "application/sdp")],
            Some(client.offer_sdp().as_bytes()),
        )
        .await;
        let sdp = String::from_utf8(body).unwrap();
        assert_eq!(status, 201, "{headers}\n{sdp}");
        client.accept_answer(sdp).await.expect("answer accepted");
        let viewer = Viewer {
            client,
            decoder: Decoder::new().expect("decoder"),
            posted_at,
            connected_at: None,
            answer: Value::Null,
        };
        (viewer, headers)
    }

    /// Decodes until a picture satisfies `pred` (returned) or `timeout` passes (`None`).
    pub async fn frame_where(
        &mut self,
        pred: impl Fn(&Seen) -> bool,
        timeout: Duration,
    ) -> Option<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Some(f) = self.decode_frames(1, left).await.pop() {
                if pred(&f) {
                    return Some(f);
                }
            }
        }
    }

    /// Receives and decodes until `n` pictures were decoded or `timeout` passes.
    pub async fn decode_frames(&mut self, n: usize, timeout: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.client.next_event(left).await {
                Some(ClientEvent::Connected(t)) => self.connected_at = Some(t),
                Some(ClientEvent::Frame(f)) => {
                    let first_packet_us = now_us() - f.first_packet_at.elapsed().as_micros() as u64;
                    let decoded = self.decoder.decode(&f.access_unit);
                    if std::env::var_os("LUMACAST_TEST_TRACE").is_some() {
                        eprintln!(
                            "frame ts={} packets={} lost={} bytes={} -> {:?}",
                            f.rtp_timestamp,
                            f.packets,
                            f.lost_before,
                            f.access_unit.len(),
                            decoded.as_ref().map(|d| d.is_some())
                        );
                    }
                    // Not silent: shown with a failing test's output (the assertions on
                    // frames decoded are what fail).
                    if f.lost_before > 0 {
                        eprintln!(
                            "test viewer: {} packets lost before the frame at RTP {}",
                            f.lost_before, f.rtp_timestamp
                        );
                    }
                    if let Err(e) = &decoded {
                        eprintln!(
                            "test viewer: decode error on a {}-byte access unit at RTP {}: {e}",
                            f.access_unit.len(),
                            f.rtp_timestamp
                        );
                    }
                    if let Ok(Some(pic)) = decoded {
                        let (w, h) = (pic.width as usize, pic.height as usize);
                        let top = 64.min(h / 2);
                        out.push(Seen {
                            mean_y: mean(&pic.y[top * w..h * w]),
                            mean_u: mean(&pic.u[(top / 2) * w.div_ceil(2)..]),
                            mean_v: mean(&pic.v[(top / 2) * w.div_ceil(2)..]),
                            stripe: stripe::read_luma(
                                &pic.y,
                                pic.width as usize,
                                pic.width,
                                pic.height,
                            ),
                            width: pic.width,
                            height: pic.height,
                            decoded_at: Instant::now(),
                            decoded_us: now_us(),
                            first_packet_at: f.first_packet_at,
                            first_packet_us,
                        });
                    }
                }
                Some(ClientEvent::Closed) => break,
                None => break,
            }
        }
        out
    }
}

/// A fully gathered offer from a real webrtc-rs peer (then discarded).
pub async fn real_offer() -> String {
    let c = ViewerClient::new(&["42e01f"]).await.unwrap();
    let sdp = c.offer_sdp().to_string();
    c.close().await;
    sdp
}

/// Starts the real `lumacast` binary on 127.0.0.1 with `args` and waits for it to announce
/// its address. Its stdout (the log) is drained in the background, or the server would
/// block once the pipe is full. The child is killed when dropped.
pub async fn spawn_binary(args: &[&str]) -> (tokio::process::Child, TestServer) {
    spawn_binary_at("127.0.0.1:0", "127.0.0.1:0", args).await
}

/// Like [`spawn_binary`], listening on `listen` and gathering ICE on `ice_addrs`
/// (comma-separated, as `--ice-addr` takes them).
pub async fn spawn_binary_at(
    listen: &str,
    ice_addrs: &str,
    args: &[&str],
) -> (tokio::process::Child, TestServer) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lumacast"))
        .args(["--listen", listen, "--ice-addr", ice_addrs])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary starts");
    // "lumacast serving the live view on http://ADDR/"
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the server announces its address")
        .unwrap()
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, TestServer::attach(addr))
}

/// Starts the real `lumacast` binary with `args` (which make it serve HTTPS: `--tls-cert`
/// and `--tls-key`, or `--tls-self-signed`) on 127.0.0.1 and waits for
/// "lumacast serving the live view on https://ADDR/". Returns the child (killed when
/// dropped), the address, and every line printed before that one (the certificate's
/// fingerprint).
pub async fn spawn_binary_https(args: &[&str]) -> (tokio::process::Child, SocketAddr, Vec<String>) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lumacast"))
        .args(["--listen", "127.0.0.1:0", "--ice-addr", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before = Vec::new();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("the server exited; it printed {before:?}"));
            if let Some(rest) = line.strip_prefix("lumacast serving the live view on ") {
                let addr: SocketAddr = rest
                    .strip_prefix("https://")
                    .and_then(|s| s.trim_end_matches('/').parse().ok())
                    .unwrap_or_else(|| panic!("no https address in {line:?}"));
                return addr;
            }
            before.push(line);
        }
    })
    .await
    .expect("the server announces its address");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr, before)
}
