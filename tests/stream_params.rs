//! Runtime stream parameters, snapshots, histograms, pushed frames and file replay,
//! end to end: real server, real WebRTC viewer, real H.264 decoded back to pixels.

mod common;

use common::{http_bytes, now_us, TestServer, Viewer};
use lumacast_capture::PushHeader;
use lumacast_frame::{stripe, Frame, PixelFormat};
use serde_json::{json, Value};
use std::time::Duration;

const DET: &str = "det=synthetic,width=1280,height=720,bits=12,fps=30";

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_are_read_patched_and_every_bad_value_is_a_400_naming_the_field() {
    let server = TestServer::start(&[DET]).await;
    let (st, v) = server.get("/api/detectors/det/params").await;
    assert_eq!(st, 200, "{v}");
    let defaults = v["params"].clone();
    assert_eq!(defaults["window_mode"], "full");
    assert_eq!(defaults["colormap"], "gray");
    assert_eq!(defaults["gamma"], 1.0);
    assert_eq!(v["source"]["max_value"], 4095);

    let (st, v) = server
        .patch(
            "/api/detectors/det/params",
            r#"{"colormap": "viridis", "gamma": 0.5, "window_min": 100, "window_max": 3000}"#,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let p = v["params"].clone();
    assert_eq!(
        (
            p["colormap"].as_str(),
            p["window_mode"].as_str(),
            p["window_min"].as_u64(),
            p["window_max"].as_u64()
        ),
        (Some("viridis"), Some("manual"), Some(100), Some(3000))
    );
    for (body, field) in [
        (json!({"window_min": 3000, "window_max": 100}), "window_min"),
        (json!({"window_max": 5000}), "window_max"),
        (json!({"colormap": "rainbow"}), "colormap"),
        (json!({"gamma": -1}), "gamma"),
        (json!({"max_width": -3}), "max_width"),
        (json!({"binning": 0}), "binning"),
        (
            json!({"roi": {"x": 1000, "y": 0, "width": 500, "height": 100}}),
            "roi",
        ),
        (
            json!({"roi": {"x": 0, "y": 0, "width": -5, "height": 100}}),
            "roi.width",
        ),
        (json!({"max_fps": 0.01}), "max_fps"),
        (json!({"bitrate": "fast"}), "bitrate"),
        (json!({"keyint": 100000}), "keyint"),
        (json!({"window_mode": "bright"}), "window_mode"),
        (json!({"no_such_thing": 1}), "no_such_thing"),
    ] {
        let (st, e) = server
            .patch("/api/detectors/det/params", &body.to_string())
            .await;
        assert_eq!(st, 400, "{body}: {e}");
        assert_eq!(e["status"], "error");
        assert!(
            e["field"].as_str().unwrap().starts_with(field),
            "{body}: {e}"
        );
        assert!(e["message"].as_str().unwrap().contains(field), "{e}");
    }
    // nothing of the refused requests stuck
    let (_, v) = server.get("/api/detectors/det/params").await;
    assert_eq!(v["params"], p);
    // malformed bodies and unknown detectors
    let (st, _) = server.patch("/api/detectors/det/params", "{not json").await;
    assert_eq!(st, 400);
    let (st, _) = server.patch("/api/detectors/det/params", "[1, 2]").await;
    assert_eq!(st, 400);
    let (st, e) = server.get("/api/detectors/nope/params").await;
    assert_eq!((st, e["status"].as_str()), (404, Some("error")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contrast_change_shows_within_two_frames_without_reconnecting() {
    let server = TestServer::start(&[DET]).await;
    let mut viewer = Viewer::join(&server, Some("det"), &["42e01f"]).await;
    let before = viewer.decode_frames(15, Duration::from_secs(10)).await;
    assert!(before.len() >= 15);
    let base = mean(before[5..].iter().map(|f| f.mean_y));
    // A quarter of the 12-bit range as the window: the picture gets much brighter.
    let sent_us = now_us();
    let (st, v) = server
        .patch(
            "/api/detectors/det/params",
            r#"{"window_min": 0, "window_max": 1023}"#,
        )
        .await;
    let patched_us = now_us();
    assert_eq!(st, 200, "{v}");
    let after = viewer.decode_frames(12, Duration::from_secs(5)).await;
    assert!(after.len() >= 12, "the viewer kept receiving");
    let changed = |f: &common::Seen| f.mean_y > base + 30.0;
    // Every frame captured after the PATCH answered shows the new window...
    for f in &after {
        let s = f
            .stripe
            .expect("the stripe stays readable with a narrower window");
        if s.t_us > patched_us {
            assert!(
                changed(f),
                "frame {} captured after the change: mean {} vs {base}",
                s.seq,
                f.mean_y
            );
        }
    }
    // ...only the few frames captured while the PATCH was on its way show the old one (2 on
    // a quiet machine; the bound is for one under load: how many depends on how long the
    // HTTP round trip takes, a speed, not the behaviour)...
    let stale = after
        .iter()
        .filter(|f| f.stripe.is_some_and(|s| s.t_us > sent_us) && !changed(f))
        .count();
    assert!(
        stale <= 6,
        "{stale} frames captured after the PATCH showed the old window"
    );
    // ...and once the new window shows, it stays.
    let first = after.iter().position(changed).expect("the change showed");
    assert!(after[first..].iter().all(changed));

    // Inverted gray: dark becomes bright. Viridis: chroma leaves neutral.
    let (st, _) = server
        .patch(
            "/api/detectors/det/params",
            r#"{"colormap": "inverted", "window_mode": "full"}"#,
        )
        .await;
    assert_eq!(st, 200);
    // Frames captured before the PATCH may still be on their way (more of them on a loaded
    // machine): wait up to 5 s for the change, then check the frame that shows it.
    let inverted = |f: &common::Seen| (f.mean_y - (255.0 - base)).abs() < 20.0;
    let inv = viewer.frame_where(inverted, Duration::from_secs(5)).await;
    assert!(inv.is_some(), "no inverted frame (normal mean {base})");
    let (st, _) = server
        .patch("/api/detectors/det/params", r#"{"colormap": "viridis"}"#)
        .await;
    assert_eq!(st, 200);
    let coloured = |f: &common::Seen| (f.mean_u - 128.0).abs() + (f.mean_v - 128.0).abs() > 15.0;
    let vir = viewer.frame_where(coloured, Duration::from_secs(5)).await;
    assert!(vir.is_some(), "no frame with viridis colour");
    assert!(
        before.iter().all(|f| (f.mean_u - 128.0).abs() < 2.0),
        "gray has none"
    );
    viewer.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_changes_reinitialize_the_encoder_and_the_viewer_keeps_decoding() {
    let server = TestServer::start(&[DET]).await;
    let mut viewer = Viewer::join(&server, Some("det"), &["42e01f"]).await;
    let first = viewer.decode_frames(5, Duration::from_secs(10)).await;
    assert_eq!((first[0].width, first[0].height), (1280, 720));

    for (patch, (w, h)) in [
        (r#"{"max_width": 640}"#, (640, 360)),
        // A region of interest at the origin keeps the stripe whole: proof of the crop.
        (
            r#"{"max_width": null, "roi": {"x": 0, "y": 0, "width": 800, "height": 600}}"#,
            (800, 600),
        ),
        (r#"{"binning": 2}"#, (400, 300)),
        (r#"{"roi": null, "binning": 1}"#, (1280, 720)),
    ] {
        let (st, v) = server.patch("/api/detectors/det/params", patch).await;
        assert_eq!(st, 200, "{patch}: {v}");
        assert_eq!(v["output_size"], json!([w, h]), "{v}");
        // Frames of the old size captured before the PATCH may still be on their way.
        let sized = |f: &common::Seen| (f.width, f.height) == (w, h);
        let last = viewer.frame_where(sized, Duration::from_secs(5)).await;
        let last = last.unwrap_or_else(|| panic!("{patch}: no {w}x{h} frame within 5 s"));
        if w >= 512 {
            assert!(last.stripe.is_some(), "{patch}: stripe readable");
        }
    }
    // One connection all along.
    let (_, stats) = server.get("/api/stats").await;
    assert_eq!(
        stats["detectors"][0]["viewers"].as_array().unwrap().len(),
        1
    );
    viewer.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fps_bitrate_and_keyframe_interval_apply_to_the_running_stream() {
    let server = TestServer::start(&[DET]).await;
    let mut viewer = Viewer::join(&server, Some("det"), &["42e01f"]).await;
    viewer.decode_frames(10, Duration::from_secs(10)).await;
    let (st, v) = server
        .patch(
            "/api/detectors/det/params",
            r#"{"max_fps": 10, "bitrate": 500000, "keyint": 10}"#,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // settle, then measure over 3 s
    viewer.decode_frames(1000, Duration::from_secs(2)).await;
    let t0 = std::time::Instant::now();
    let seen = viewer.decode_frames(1000, Duration::from_secs(3)).await;
    let fps = seen.len() as f64 / t0.elapsed().as_secs_f64();
    // Throttled to about 10 (not the detector's 30); the lower bound leaves room for a
    // loaded machine.
    assert!(
        (5.0..=12.0).contains(&fps),
        "viewer fps {fps} with max_fps 10"
    );
    let (_, s) = server.get("/api/stats?window_s=3").await;
    let d = &s["detectors"][0];
    let fps_out = d["fps_out"].as_f64().unwrap();
    assert!((5.0..=12.0).contains(&fps_out), "{d}");
    assert!(
        d["fps_in"].as_f64().unwrap() > 15.0,
        "the detector still runs faster than the stream (30 fps): {d}"
    );
    let bitrate = d["bitrate_bps"].as_f64().unwrap();
    assert!(
        bitrate < 1_000_000.0,
        "bitrate {bitrate} with a 500 kb/s target"
    );
    // every 10th frame at 10 fps: about 3 IDRs in 3 s
    let kf = d["keyframes_in_window"].as_u64().unwrap();
    assert!((1..=6).contains(&kf), "{kf} keyframes in 3 s: {d}");
    viewer.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imswitch_set_and_get_stream_parameters_map_their_names() {
    let server = TestServer::start(&[DET, "two=synthetic,width=640,height=480"]).await;
    // startLiveView with params applies them before starting; a bad one starts nothing
    let (st, e) = server
        .post(
            "/LiveViewController/startLiveView",
            r#"{"detectorName": "two", "params": {"crop_size": 5000}}"#,
        )
        .await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["field"], "crop_size");
    let (_, det) = server.get("/api/detectors").await;
    assert_eq!(det["detectors"][1]["running"], false);

    let (st, r) = server
        .post(
            "/LiveViewController/setStreamParameters",
            r#"{"protocol": "webrtc", "detectorName": "det",
                "params": {"max_width": 640, "throttle_ms": 50, "subsampling_factor": 1,
                           "crop_size": 600, "jpeg_quality": 80, "stun_servers": []}}"#,
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["status"], "success");
    assert_eq!(r["params"]["max_width"], 640);
    assert_eq!(r["params"]["max_fps"], 20.0);
    assert_eq!(
        r["params"]["roi"],
        json!({"x": 340, "y": 60, "width": 600, "height": 600})
    );
    assert_eq!(r["ignored"], json!(["jpeg_quality", "stun_servers"]));

    let (st, g) = server
        .get("/LiveViewController/getStreamParameters?protocol=webrtc&detectorName=det")
        .await;
    assert_eq!(st, 200);
    assert_eq!(g["params"]["max_width"], 640);
    assert_eq!(
        g["detectors"]["two"]["max_width"],
        Value::Null,
        "only det changed"
    );
    // without a detector name: all detectors, all or nothing
    let (st, e) = server
        .post(
            "/LiveViewController/setStreamParameters",
            r#"{"params": {"crop_size": 700}}"#,
        )
        .await;
    assert_eq!(st, 400, "700 fits det but not the 640x480 one: {e}");
    let (_, g) = server.get("/LiveViewController/getStreamParameters").await;
    assert_eq!(g["detectors"]["det"]["roi"]["width"], 600, "unchanged");
    let (st, e) = server
        .post(
            "/LiveViewController/setStreamParameters",
            r#"{"protocol": "mjpeg", "params": {}}"#,
        )
        .await;
    assert_eq!(st, 400, "{e}");
    server.stop().await;
}

/// A Mono16 frame with a known gradient and the stripe, as a push client would send it.
fn push_body(width: u32, height: u32, seq: u32) -> (Vec<u8>, Vec<u8>) {
    let mut data = Vec::with_capacity((width * height * 2) as usize);
    for y in 0..height {
        for x in 0..width {
            let v = ((x * 7 + y * 3 + seq * 11) % 4000) as u16;
            data.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut frame = Frame::new(
        width,
        height,
        PixelFormat::Mono16 { bit_depth: 12 },
        u64::from(seq),
        data,
    )
    .unwrap();
    let t_us = now_us();
    stripe::write(&mut frame, t_us, seq);
    let header = PushHeader {
        width,
        height,
        format: frame.format,
        frame_number: Some(u64::from(seq)),
        timestamp_us: Some(t_us),
    };
    let mut body = header.encode().to_vec();
    body.extend_from_slice(&frame.data);
    (body, frame.data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_frames_reach_viewers_and_bad_frames_are_refused() {
    let server = TestServer::start(&["ext=push,width=640,height=480,bits=12,fps=30", DET]).await;
    let addr = server.addr;
    // the first frame starts the push detector
    let (body, _) = push_body(640, 480, 0);
    let (st, _, answer) = http_bytes(addr, "POST", "/api/detectors/ext/frames", Some(&body)).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&answer));
    let mut viewer = Viewer::join(&server, Some("ext"), &["42e01f"]).await;
    let pusher = tokio::spawn(async move {
        let mut last = Vec::new();
        for seq in 1..=60u32 {
            let (body, data) = push_body(640, 480, seq);
            let (st, _, b) =
                http_bytes(addr, "POST", "/api/detectors/ext/frames", Some(&body)).await;
            assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
            last = data;
            tokio::time::sleep(Duration::from_millis(33)).await;
        }
        last
    });
    let seen = viewer.decode_frames(30, Duration::from_secs(10)).await;
    let last_pushed = pusher.await.unwrap();
    assert!(seen.len() >= 30, "{} frames", seen.len());
    let seqs: Vec<u32> = seen
        .iter()
        .filter_map(|f| f.stripe.map(|s| s.seq))
        .collect();
    assert!(
        seqs.len() >= 28 && seqs.windows(2).all(|w| w[1] > w[0]),
        "{seqs:?}"
    );
    for f in &seen {
        let s = f.stripe.unwrap();
        let latency_ms = (f.decoded_us - s.t_us) as f64 / 1000.0;
        assert!((0.0..500.0).contains(&latency_ms), "{latency_ms} ms");
    }

    // the raw snapshot is the last pushed frame, bit for bit
    let (st, headers, png) = http_bytes(addr, "GET", "/api/detectors/ext/snapshot", None).await;
    assert_eq!(st, 200);
    assert!(headers.contains("content-type: image/png"), "{headers}");
    let img = image::load_from_memory(&png).unwrap().into_luma16();
    assert_eq!(img.dimensions(), (640, 480));
    let raw: Vec<u8> = img.as_raw().iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(raw == last_pushed, "the snapshot is lossless");

    // bad frames: clear 400s, and the stream goes on
    let (good, _) = push_body(640, 480, 100);
    let mut short = good.clone();
    short.truncate(good.len() - 10);
    let mut unknown = good.clone();
    unknown[5] = 9;
    for (body, needle) in [
        (short, "pixel data"),
        (unknown, "unknown pixel format 9"),
        (b"hello".to_vec(), "shorter than"),
    ] {
        let (st, _, b) = http_bytes(addr, "POST", "/api/detectors/ext/frames", Some(&body)).await;
        let e: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(st, 400, "{e}");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");
    }
    let (st, _, _) = http_bytes(addr, "POST", "/api/detectors/det/frames", Some(&good)).await;
    assert_eq!(st, 409, "a synthetic detector takes no pushed frames");
    let (st, _, _) = http_bytes(addr, "POST", "/api/detectors/nope/frames", Some(&good)).await;
    assert_eq!(st, 404);
    // still streaming: a new frame arrives and decodes
    let (st, _, _) = http_bytes(addr, "POST", "/api/detectors/ext/frames", Some(&good)).await;
    assert_eq!(st, 200);
    let more = viewer.decode_frames(1, Duration::from_secs(5)).await;
    assert_eq!(more.len(), 1);
    viewer.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_histogram_of_a_running_detector() {
    let server = TestServer::start(&[DET]).await;
    let addr = server.addr;
    // not running yet: a clear 409
    let (st, _, b) = http_bytes(addr, "GET", "/api/detectors/det/snapshot", None).await;
    assert_eq!(st, 409, "{}", String::from_utf8_lossy(&b));
    let (st, _) = server
        .post(
            "/LiveViewController/startLiveView",
            r#"{"detectorName": "det"}"#,
        )
        .await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (st, h, tiff) =
        http_bytes(addr, "GET", "/api/detectors/det/snapshot?format=tiff", None).await;
    assert_eq!(st, 200);
    assert!(h.contains("image/tiff"));
    let img = image::load_from_memory(&tiff).unwrap().into_luma16();
    assert_eq!(img.dimensions(), (1280, 720));
    assert!(
        img.as_raw().iter().all(|&v| v <= 4095),
        "12-bit data kept as is"
    );
    // the stripe's white cells are raw full scale
    assert!(img.as_raw().contains(&4095));

    // the displayed picture with the saturation map: full-scale pixels are red
    let (st, _) = server
        .patch("/api/detectors/det/params", r#"{"colormap": "saturation"}"#)
        .await;
    assert_eq!(st, 200);
    let (st, _, png) = http_bytes(
        addr,
        "GET",
        "/api/detectors/det/snapshot?kind=display",
        None,
    )
    .await;
    assert_eq!(st, 200);
    let rgb = image::load_from_memory(&png).unwrap().into_rgb8();
    assert_eq!(rgb.dimensions(), (1280, 720));
    let red = rgb
        .pixels()
        .filter(|p| p[0] > 200 && p[1] < 80 && p[2] < 80)
        .count();
    assert!(red > 100, "{red} red pixels");

    let (st, hist) = server.get("/api/detectors/det/histogram?bins=64").await;
    assert_eq!(st, 200, "{hist}");
    assert_eq!(hist["bins"].as_array().unwrap().len(), 64);
    assert_eq!(hist["max_value"], 4095);
    assert!(hist["samples"].as_u64().unwrap() > 10_000);
    assert_eq!(hist["window"], json!([0, 4095]));
    let (lo, hi) = (
        hist["p0_1"].as_u64().unwrap(),
        hist["p99_9"].as_u64().unwrap(),
    );
    assert!(lo < hi, "{hist}");

    for bad in [
        "/api/detectors/det/snapshot?kind=movie",
        "/api/detectors/det/snapshot?format=gif",
        "/api/detectors/det/snapshot?kind=display&format=tiff",
        "/api/detectors/det/histogram?bins=1",
        "/api/detectors/det/histogram?bins=many",
    ] {
        let (st, e) = server.get(bad).await;
        assert_eq!(st, 400, "{bad}: {e}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_detector_plays_a_multi_page_tiff_in_a_loop() {
    let dir = std::env::temp_dir().join(format!("lumacast-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stack.tif");
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut tiff = tiff::encoder::TiffEncoder::new(file).unwrap();
        for level in [0u16, 32768, 65535] {
            let page = vec![level; 640 * 480];
            tiff.write_image::<tiff::encoder::colortype::Gray16>(640, 480, &page)
                .unwrap();
        }
    }
    let spec = format!("stack=replay,path={},fps=15", path.display());
    let server = TestServer::start(&[spec.as_str()]).await;
    let (_, d) = server.get("/api/detectors").await;
    assert_eq!(d["detectors"][0]["kind"], "replay");
    let mut viewer = Viewer::join(&server, Some("stack"), &["42e01f"]).await;
    let seen = viewer.decode_frames(12, Duration::from_secs(10)).await;
    assert!(seen.len() >= 12);
    assert_eq!((seen[0].width, seen[0].height), (640, 480));
    let levels: Vec<u8> = seen
        .iter()
        .map(|f| match f.mean_y {
            y if y < 30.0 => 0,
            y if y > 225.0 => 2,
            _ => 1,
        })
        .collect();
    // the three pages follow each other in order, over and over
    for w in levels.windows(2) {
        assert!(w[1] == (w[0] + 1) % 3 || w[1] == w[0], "{levels:?}");
    }
    assert!((0..3).all(|l| levels.contains(&l)), "{levels:?}");
    viewer.client.close().await;
    server.stop().await;

    // a missing file: the detector cannot start, with a message naming it
    let server = TestServer::start(&["gone=replay,path=/nonexistent/stack.tif"]).await;
    let (st, e) = server
        .post(
            "/LiveViewController/startLiveView",
            r#"{"detectorName": "gone"}"#,
        )
        .await;
    assert_eq!(st, 503, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/stack.tif"),
        "{e}"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_client_pushes_frames_to_the_real_endpoint() {
    // Debian's python3 with python3-numpy (scripts/test.sh installs both).
    let python = "/usr/bin/python3";
    let server = TestServer::start(&["ext=push,width=320,height=240,bits=12"]).await;
    let url = format!("http://{}", server.addr);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/push_frames.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(python)
            .args([
                script,
                "--url",
                &url,
                "--detector",
                "ext",
                "--width",
                "320",
                "--height",
                "240",
            ])
            .args(["--fps", "30", "--bits", "12", "--count", "30"])
            .output(),
    )
    .await
    .expect("the client finishes")
    .unwrap_or_else(|e| panic!("cannot run {python} (apt-get install python3-numpy): {e}"));
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    let (_, stats) = server.get("/api/stats").await;
    let d = &stats["detectors"][0];
    assert_eq!(d["running"], true, "{d}");
    assert!(d["frames_captured"].as_u64().unwrap() >= 25, "{d}\n{log}");
    let (_, p) = server.get("/api/detectors/ext/params").await;
    assert_eq!(p["source"]["pixel_format"], "mono16", "{p}");
    server.stop().await;
}

/// README: a viewer's offer may carry `params` (applied as the stream's parameters before
/// it is answered), and parameters survive a stop and restart of the detector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_in_the_offer_apply_and_survive_a_detector_restart() {
    let server = TestServer::start(&[DET]).await;
    let client = lumacast_rtc::ViewerClient::new(&["42e01f"]).await.unwrap();
    let body = serde_json::json!({
        "sdp": client.offer_sdp(), "type": "offer", "detectorName": "det",
        "params": {"max_width": 320, "colormap": "viridis"},
    });
    let (st, a) = server
        .post("/LiveViewController/webrtc_offer", &body.to_string())
        .await;
    assert_eq!(st, 200, "{a}");
    client
        .accept_answer(a["sdp"].as_str().unwrap().to_string())
        .await
        .unwrap();
    let mut viewer = Viewer {
        client,
        decoder: lumacast_encode::Decoder::new().unwrap(),
        posted_at: std::time::Instant::now(),
        connected_at: None,
        answer: a,
    };
    let seen = viewer.decode_frames(3, Duration::from_secs(10)).await;
    assert!(!seen.is_empty(), "the viewer decodes");
    assert_eq!(
        seen.last().unwrap().width,
        320,
        "max_width from the offer's params"
    );
    viewer.client.close().await;
    // Stop and start the detector: the parameters are still in force.
    let (st, v) = server
        .post("/LiveViewController/stopLiveView?detectorName=det", "")
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = server
        .post(
            "/LiveViewController/startLiveView?detectorName=det&protocol=webrtc",
            "null",
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, p) = server.get("/api/detectors/det/params").await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["params"]["max_width"], 320, "{p}");
    assert_eq!(p["params"]["colormap"], "viridis", "{p}");
    let mut again = Viewer::join(&server, Some("det"), &["42e01f"]).await;
    let seen = again.decode_frames(3, Duration::from_secs(10)).await;
    assert_eq!(seen.last().map(|f| f.width), Some(320), "after the restart");
    again.client.close().await;
    server.stop().await;
}
