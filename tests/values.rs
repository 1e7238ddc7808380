//! Raw values where the scientist points (`GET /api/detectors/{name}/values`): frames
//! with known pixels are pushed into a push detector and read back exactly, as a pixel,
//! a line profile and a rectangle, in detector coordinates whatever the ROI and binning.

mod common;

use common::{http_bytes, TestServer};
use lumacast_capture::PushHeader;
use lumacast_frame::PixelFormat;
use serde_json::{json, Value};
use std::time::Duration;

const W: u32 = 64;
const H: u32 = 48;
/// Capture time of pushed frame 0, µs since the UNIX epoch.
const T0: u64 = 1_700_000_000_000_000;

/// The known value of detector pixel (x, y) in the pushed Mono16 frames.
fn known(x: u32, y: u32) -> u32 {
    x * 1000 + y
}

fn body(
    format: PixelFormat,
    width: u32,
    height: u32,
    seq: u64,
    px: impl Fn(u32, u32) -> Vec<u8>,
) -> Vec<u8> {
    let header = PushHeader {
        width,
        height,
        format,
        frame_number: Some(seq),
        timestamp_us: Some(T0 + seq),
    };
    let mut b = header.encode().to_vec();
    for y in 0..height {
        for x in 0..width {
            b.extend(px(x, y));
        }
    }
    b
}

fn mono16(seq: u64) -> Vec<u8> {
    body(PixelFormat::Mono16 { bit_depth: 16 }, W, H, seq, |x, y| {
        (known(x, y) as u16).to_le_bytes().to_vec()
    })
}

/// Pushes `frame` and waits until the values endpoint answers from it (the capture time
/// in its header is `T0 + seq`; the answer's `seq` is the detector's own count).
async fn push_and_wait(server: &TestServer, det: &str, frame: &[u8], seq: u64) {
    let path = format!("/api/detectors/{det}/frames");
    let (st, _, b) = http_bytes(server.addr, "POST", &path, Some(frame)).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let mut last = Value::Null;
    for _ in 0..100 {
        let (st, v) = server
            .get(&format!("/api/detectors/{det}/values?x=0&y=0"))
            .await;
        if st == 200 && v["captured_at_us"] == T0 + seq {
            return;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("frame {seq} of {det} never became the newest: {last}");
}

async fn values(server: &TestServer, query: &str) -> (u16, Value) {
    server
        .get(&format!("/api/detectors/ext/values?{query}"))
        .await
}

/// Point, line and rectangle read back the pushed values exactly, also with a ROI,
/// binning and a size limit in force (the coordinates stay detector pixels), and the
/// parameters report where the shown picture sits in the frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_a_pushed_mono16_frame_read_back_exactly() {
    let server = TestServer::start(&["ext=push,width=64,height=48,bits=16,fps=30"]).await;
    push_and_wait(&server, "ext", &mono16(7), 7).await;

    let mut seq = 7;
    for geometry in [
        json!({}),
        json!({"roi": {"x": 16, "y": 8, "width": 32, "height": 32}, "binning": 2}),
        json!({"roi": null, "binning": 1, "max_width": 32}),
    ] {
        let (st, v) = server
            .patch("/api/detectors/ext/params", &geometry.to_string())
            .await;
        assert_eq!(st, 200, "{v}");
        seq += 1;
        push_and_wait(&server, "ext", &mono16(seq), seq).await;

        let (st, v) = values(&server, "x=5&y=3").await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["kind"], "point");
        assert_eq!(v["value"], known(5, 3), "{geometry}: {v}");
        assert!(v["seq"].is_u64(), "{v}");
        assert_eq!(v["captured_at_us"], T0 + seq);
        assert_eq!(v["frame"]["width"], W);
        assert_eq!(v["frame"]["pixel_format"], "mono16");
        let (_, v) = values(&server, &format!("x={}&y={}", W - 1, H - 1)).await;
        assert_eq!(v["value"], known(W - 1, H - 1));

        // a horizontal line, a diagonal one backwards (Bresenham, both ends included)
        let (st, v) = values(&server, "x0=2&y0=10&x1=6&y1=10").await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["method"], "bresenham");
        assert_eq!(v["count"], 5);
        let want: Vec<u32> = (2..=6).map(|x| known(x, 10)).collect();
        assert_eq!(v["values"], json!(want));
        let (_, v) = values(&server, "x0=9&y0=9&x1=6&y1=6").await;
        let want: Vec<u32> = (6..=9).rev().map(|i| known(i, i)).collect();
        assert_eq!(v["values"], json!(want), "{v}");

        // a rectangle: x 10..=13, y 20..=22
        let (st, v) = values(&server, "rect=10,20,4,3").await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["count"], 12);
        assert_eq!(v["min"], known(10, 20));
        assert_eq!(v["max"], known(13, 22));
        let mean = (10..14)
            .flat_map(|x| (20..23).map(move |y| known(x, y) as f64))
            .sum::<f64>()
            / 12.0;
        assert!((v["mean"].as_f64().unwrap() - mean).abs() < 1e-9, "{v}");
    }

    // where the shown picture sits: ROI origin and one box factor
    let (_, v) = server
        .patch(
            "/api/detectors/ext/params",
            r#"{"roi": {"x": 16, "y": 8, "width": 32, "height": 32}, "binning": 2, "max_width": null}"#,
        )
        .await;
    assert_eq!(
        v["placement"],
        json!({"x0": 16, "y0": 8, "factor": 2, "width": 16, "height": 16,
               "frame_width": W, "frame_height": H}),
        "{v}"
    );
    server.stop().await;
}

/// Every bad request is a 400 naming its parameter; an unknown detector a 404; a
/// detector without a frame a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_outside_the_frame_or_malformed_are_400s() {
    let server = TestServer::start(&[
        "ext=push,width=64,height=48,bits=16,fps=30",
        "idle=push,width=64,height=48,bits=16,fps=30",
        "wide=push,width=4200,height=16,bits=8,fps=30",
    ])
    .await;
    let (st, v) = server.get("/api/detectors/nope/values?x=1&y=1").await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = server.get("/api/detectors/idle/values?x=1&y=1").await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["status"], "error");

    push_and_wait(&server, "ext", &mono16(1), 1).await;
    for (query, needle) in [
        ("x=64&y=0", "\"x\" = 64 is outside the frame"),
        ("x=0&y=48", "\"y\" = 48 is outside the frame"),
        ("x=-1&y=0", "\"x\" = -1 is outside the frame"),
        ("x=abc&y=0", "\"x\" must be an integer"),
        ("x=1", "\"y\" is missing"),
        ("", "say where"),
        ("x=1&y=1&rect=0,0,2,2", "ask for one thing"),
        ("x=1&y=1&z=3", "unknown parameter \"z\""),
        ("x0=0&y0=0&x1=70&y1=0", "\"x1\" = 70 is outside the frame"),
        ("x0=0&y0=0&x1=5", "\"y1\" is missing"),
        ("rect=0,0,65,1", "\"rect\" 65x1 at (0, 0) does not fit"),
        ("rect=60,40,5,5", "does not fit"),
        ("rect=64,0,1,1", "\"rect\" = 64 is outside the frame"),
        ("rect=0,0,0,4", "\"rect\" must be x,y,w,h"),
        ("rect=1,2,3", "\"rect\" must be x,y,w,h"),
    ] {
        let (st, v) = values(&server, query).await;
        assert_eq!(st, 400, "{query}: {v}");
        assert_eq!(v["status"], "error", "{v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains(needle), "{query}: {m}");
    }

    // a line over 4096 samples is refused; 4096 is fine
    let wide = body(PixelFormat::Mono8, 4200, 16, 3, |x, _| {
        vec![(x % 251) as u8]
    });
    push_and_wait(&server, "wide", &wide, 3).await;
    let (st, v) = server
        .get("/api/detectors/wide/values?x0=0&y0=0&x1=4096&y1=0")
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("4097 samples"),
        "{v}"
    );
    let (st, v) = server
        .get("/api/detectors/wide/values?x0=0&y0=5&x1=4095&y1=5")
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["count"], 4096);
    assert_eq!(v["values"][300], 300 % 251);
    server.stop().await;
}

/// RGB sources give `[r, g, b]`, and rectangle statistics per channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_an_rgb_frame_are_triples() {
    let server = TestServer::start(&["rgb=push,width=32,height=32,fps=30"]).await;
    let frame = body(PixelFormat::Rgb8, 32, 32, 5, |x, y| {
        vec![x as u8, y as u8, (x + y) as u8]
    });
    push_and_wait(&server, "rgb", &frame, 5).await;
    let (st, v) = server.get("/api/detectors/rgb/values?x=3&y=4").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["value"], json!([3, 4, 7]));
    assert_eq!(v["frame"]["pixel_format"], "rgb8");
    let (_, v) = server
        .get("/api/detectors/rgb/values?x0=0&y0=1&x1=2&y1=1")
        .await;
    assert_eq!(v["values"], json!([[0, 1, 1], [1, 1, 2], [2, 1, 3]]));
    let (st, v) = server.get("/api/detectors/rgb/values?rect=0,0,2,2").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["min"], json!([0, 0, 0]));
    assert_eq!(v["max"], json!([1, 1, 2]));
    assert_eq!(v["mean"], json!([0.5, 0.5, 1.0]));
    server.stop().await;
}
