//! MJPEG (`/api/detectors/{name}/mjpeg`, ImSwitch's `LiveViewController/mjpeg_stream`)
//! against a real server: multipart parts read off the wire, JPEGs decoded, the reader
//! limit, and the producer stopping when its last reader goes.

mod common;

use common::TestServer;
use serde_json::Value;
use std::time::{Duration, Instant};

const DET: &str = "det=synthetic,width=1280,height=720,bits=12,fps=30";
const SMALL: &str = "small=synthetic,width=320,height=240,bits=8,fps=15";

/// An open MJPEG response, read part by part.
struct Mjpeg {
    resp: reqwest::Response,
    buf: Vec<u8>,
    boundary: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// GETs `path`; returns the stream on a 200, else the status and JSON body.
async fn open(server: &TestServer, path: &str) -> Result<Mjpeg, (u16, Value, String)> {
    let resp = client()
        .get(format!("http://{}{path}", server.addr))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        return Err((status, body, retry));
    }
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    let boundary = ct
        .strip_prefix("multipart/x-mixed-replace; boundary=")
        .unwrap_or_else(|| panic!("content type {ct}"))
        .to_string();
    Ok(Mjpeg {
        resp,
        buf: Vec::new(),
        boundary,
    })
}

impl Mjpeg {
    /// The next part's JPEG bytes; `None` when the stream ended.
    async fn next(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.take_part() {
                return Some(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no MJPEG part within {timeout:?}");
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(c))) => self.buf.extend_from_slice(&c),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Err(_) => panic!("no MJPEG part within {timeout:?}"),
            }
        }
    }

    fn take_part(&mut self) -> Option<Vec<u8>> {
        let head_end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some(format!("--{}", self.boundary).as_str()));
        let mut len = None;
        let mut ct = None;
        for l in lines {
            let (k, v) = l.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = Some(v.trim().parse::<usize>().unwrap()),
                "content-type" => ct = Some(v.trim().to_string()),
                _ => {}
            }
        }
        assert_eq!(ct.as_deref(), Some("image/jpeg"), "{head}");
        let len = len.expect("Content-Length in every part");
        let start = head_end + 4;
        if self.buf.len() < start + len + 2 {
            return None;
        }
        let jpeg = self.buf[start..start + len].to_vec();
        assert_eq!(&self.buf[start + len..start + len + 2], b"\r\n");
        self.buf.drain(..start + len + 2);
        Some(jpeg)
    }
}

fn decode(jpeg: &[u8]) -> image::RgbImage {
    assert_eq!(&jpeg[..2], &[0xff, 0xd8], "a JPEG starts with SOI");
    image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .expect("a decodable JPEG")
        .to_rgb8()
}

/// The synthetic detector's timestamp stripe: the top-left 512x48 pixels.
fn stripe(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    for y in 0..48.min(img.height()) {
        for x in 0..512.min(img.width()) {
            out.extend_from_slice(&img.get_pixel(x, y).0);
        }
    }
    out
}

async fn mjpeg_stats(server: &TestServer, det: &str) -> Value {
    let (st, s) = server.get("/api/stats").await;
    assert_eq!(st, 200, "{s}");
    s["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["detector"] == det)
        .unwrap_or_else(|| panic!("{det} in {s}"))["mjpeg"]
        .clone()
}

async fn running(server: &TestServer, det: &str) -> bool {
    let (_, d) = server.get("/api/detectors").await;
    d["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == det)
        .unwrap()["running"]
        == true
}

/// Our own path: display-mapped JPEGs at the stream's size limit, changing over time,
/// at most `max_fps` of them; the stopped detector is started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_serves_changing_jpegs_of_the_displayed_picture() {
    let server = TestServer::start(&[DET]).await;
    let (st, p) = server
        .patch("/api/detectors/det/params", r#"{"max_width": 640}"#)
        .await;
    assert_eq!(st, 200, "{p}");
    assert!(!running(&server, "det").await);
    let mut s = open(&server, "/api/detectors/det/mjpeg").await.unwrap();
    assert!(
        running(&server, "det").await,
        "opening MJPEG starts the detector"
    );
    let mut stripes = Vec::new();
    for _ in 0..6 {
        let img = decode(&s.next(Duration::from_secs(10)).await.expect("a part"));
        assert_eq!((img.width(), img.height()), (640, 360), "max_width applies");
        stripes.push(stripe(&img));
    }
    stripes.dedup();
    assert!(
        stripes.len() >= 3,
        "the timestamp stripe changes from picture to picture ({} distinct of 6)",
        stripes.len()
    );
    let stats = mjpeg_stats(&server, "det").await;
    assert_eq!(stats["clients"], 1, "{stats}");
    assert_eq!(stats["producing"], true, "{stats}");
    assert!(stats["pictures_encoded"].as_u64().unwrap() >= 6, "{stats}");

    // The colour map shows too (then the JPEG is colour, else grey).
    let grey = decode(&s.next(Duration::from_secs(5)).await.unwrap());
    assert!(grey.pixels().all(|p| p.0[0].abs_diff(p.0[2]) <= 8), "grey");
    let (st, p) = server
        .patch("/api/detectors/det/params", r#"{"colormap": "viridis"}"#)
        .await;
    assert_eq!(st, 200, "{p}");
    let t0 = Instant::now();
    loop {
        let img = decode(&s.next(Duration::from_secs(5)).await.unwrap());
        if img
            .pixels()
            .filter(|p| p.0[0].abs_diff(p.0[2]) > 40)
            .count()
            > 1000
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "viridis shows");
    }

    // max_fps caps the rate (the detector delivers 30 fps).
    let (st, p) = server
        .patch("/api/detectors/det/params", r#"{"max_fps": 4}"#)
        .await;
    assert_eq!(st, 200, "{p}");
    s.next(Duration::from_secs(5)).await.unwrap();
    s.next(Duration::from_secs(5)).await.unwrap();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        s.next(Duration::from_secs(5)).await.unwrap();
        n += 1;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    assert!(rate <= 5.5, "{n} pictures in {:?}", t0.elapsed());
    drop(s);
    server.stop().await;
}

/// ImSwitch's `MJPEGViewer` `<img src=".../mjpeg_stream?startStream=true&detectorName=..">`
/// under `/imswitch/api` and the root; `startStream=false` stops nothing; stopping the
/// detector ends the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imswitch_mjpeg_stream_under_both_bases() {
    let server = TestServer::start(&[SMALL]).await;
    let q = "LiveViewController/mjpeg_stream?startStream=true&detectorName=small";
    let mut a = open(&server, &format!("/imswitch/api/{q}")).await.unwrap();
    let mut b = open(&server, &format!("/{q}")).await.unwrap();
    for s in [&mut a, &mut b] {
        for _ in 0..5 {
            let img = decode(&s.next(Duration::from_secs(10)).await.unwrap());
            assert_eq!((img.width(), img.height()), (320, 240));
        }
    }
    assert_eq!(mjpeg_stats(&server, "small").await["clients"], 2);
    // Without a name: the first detector.
    let mut c = open(&server, "/imswitch/api/LiveViewController/mjpeg_stream")
        .await
        .unwrap();
    c.next(Duration::from_secs(10)).await.unwrap();
    drop(c);

    let (st, v) = server
        .get("/imswitch/api/LiveViewController/mjpeg_stream?startStream=false&detectorName=small")
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("success")), "{v}");
    assert_eq!(v["started"], false, "{v}");
    assert!(
        running(&server, "small").await,
        "startStream=false stops nothing"
    );
    a.next(Duration::from_secs(5))
        .await
        .expect("still streaming");

    let (st, v) = server
        .get("/imswitch/api/LiveViewController/stopLiveView?detectorName=small")
        .await;
    assert_eq!(st, 200, "{v}");
    for s in [&mut a, &mut b] {
        let t0 = Instant::now();
        while s.next(Duration::from_secs(5)).await.is_some() {
            assert!(t0.elapsed() < Duration::from_secs(5), "the stream ends");
        }
    }
    server.stop().await;
}

/// At most 8 readers per detector (the 9th: 503 JSON with Retry-After); pictures are
/// encoded once for all of them; the producer stops when the last reader goes and starts
/// again for a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninth_reader_is_refused_and_the_producer_stops_when_all_leave() {
    let server = TestServer::start(&[SMALL]).await;
    let mut readers = Vec::new();
    for _ in 0..8 {
        let mut s = open(&server, "/api/detectors/small/mjpeg").await.unwrap();
        s.next(Duration::from_secs(10)).await.unwrap();
        readers.push(s);
    }
    let Err((st, e, retry)) = open(&server, "/api/detectors/small/mjpeg").await else {
        panic!("the 9th reader was accepted");
    };
    assert_eq!((st, e["status"].as_str()), (503, Some("error")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("MJPEG"), "{e}");
    assert!(retry.parse::<u32>().unwrap() > 0);
    let imswitch = open(
        &server,
        "/imswitch/api/LiveViewController/mjpeg_stream?startStream=true&detectorName=small",
    )
    .await;
    assert_eq!(
        imswitch.err().map(|e| e.0),
        Some(503),
        "the limit is per detector"
    );

    // Everyone reads for a second: one encode per picture, not one per reader.
    let before = mjpeg_stats(&server, "small").await["pictures_encoded"]
        .as_u64()
        .unwrap();
    let t0 = Instant::now();
    let mut parts = 0;
    while t0.elapsed() < Duration::from_secs(1) {
        for s in readers.iter_mut() {
            s.next(Duration::from_secs(5)).await.unwrap();
            parts += 1;
        }
    }
    let stats = mjpeg_stats(&server, "small").await;
    let encoded = stats["pictures_encoded"].as_u64().unwrap() - before;
    assert_eq!(stats["clients"], 8, "{stats}");
    assert!(parts >= 8 * 3, "{parts} parts read");
    assert!(
        encoded as f64 <= 15.0 * t0.elapsed().as_secs_f64() + 3.0,
        "{encoded} pictures encoded for {parts} parts sent"
    );

    drop(readers);
    let t0 = Instant::now();
    let stats = loop {
        let s = mjpeg_stats(&server, "small").await;
        if s["clients"] == 0 && s["producing"] == false {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the producer stops when every reader left: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stats["clients_refused"], 2, "{stats}");
    let stopped_at = stats["pictures_encoded"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stats = mjpeg_stats(&server, "small").await;
    assert_eq!(
        stats["pictures_encoded"].as_u64().unwrap(),
        stopped_at,
        "nothing is encoded without readers: {stats}"
    );
    assert!(
        running(&server, "small").await,
        "the detector keeps running"
    );

    // A new reader starts a new producer.
    let mut s = open(&server, "/api/detectors/small/mjpeg").await.unwrap();
    s.next(Duration::from_secs(10)).await.unwrap();
    let stats = mjpeg_stats(&server, "small").await;
    assert_eq!(stats["producers_started"], 2, "{stats}");
    drop(s);
    server.stop().await;
}

/// Unknown detectors are a 404 in JSON on both paths; a bad `startStream` is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_detector_is_a_404_json() {
    let server = TestServer::start(&[SMALL]).await;
    for p in [
        "/api/detectors/nope/mjpeg",
        "/LiveViewController/mjpeg_stream?startStream=true&detectorName=nope",
        "/imswitch/api/LiveViewController/mjpeg_stream?startStream=true&detectorName=nope",
        "/imswitch/api/LiveViewController/mjpeg_stream?startStream=false&detectorName=nope",
    ] {
        let (st, e) = server.get(p).await;
        assert_eq!((st, e["status"].as_str()), (404, Some("error")), "{p}: {e}");
        assert!(e["message"].as_str().unwrap().contains("nope"), "{e}");
    }
    let (st, e) = server
        .get("/LiveViewController/mjpeg_stream?startStream=maybe&detectorName=small")
        .await;
    assert_eq!(st, 400, "{e}");
    assert!(!running(&server, "small").await, "nothing started");
    server.stop().await;
}

/// The real binary stops within 2 s of SIGTERM while an MJPEG reader is connected (an
/// endless response would otherwise hold the graceful shutdown), and the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_mjpeg_streams_and_the_server_exits() {
    let (mut child, server) = common::spawn_binary(&["--detector", SMALL]).await;
    let mut s = open(&server, "/api/detectors/small/mjpeg").await.unwrap();
    s.next(Duration::from_secs(10)).await.unwrap();
    let pid = child.id().unwrap().to_string();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .expect("the server exits within 2 s of the signal")
        .unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    let t0 = Instant::now();
    while s.next(Duration::from_secs(3)).await.is_some() {
        assert!(t0.elapsed() < Duration::from_secs(3), "the stream ends");
    }
}
