//! ImSwitch's web frontend (openUC2/ImSwitch `frontend/src`) against lumacast: every
//! LiveViewController call it makes for the webrtc protocol, in the exact shape it sends
//! (base `/imswitch/api`, axios bodies, query parameters), and the answer fields it
//! reads. docs/IMSWITCH.md lists each call with its test here.

mod common;

use common::{http_raw, TestServer, Viewer};
use lumacast_encode::Decoder;
use lumacast_rtc::ViewerClient;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The frontend's `createAxiosInstance` base.
const BASE: &str = "/imswitch/api";
const DET: &str = "det=synthetic,width=640,height=480,bits=12,fps=15";
const TWO: &str = "two=synthetic,width=320,height=240,bits=8,fps=15";

fn at(path: &str) -> String {
    format!("{BASE}{path}")
}

/// Our own view of a detector's parameters (the clean API, not the ImSwitch one).
async fn ours(server: &TestServer, det: &str) -> Value {
    let (st, p) = server.get(&format!("/api/detectors/{det}/params")).await;
    assert_eq!(st, 200, "{p}");
    p["params"].clone()
}

async fn running(server: &TestServer, det: &str) -> bool {
    let (_, d) = server.get("/api/detectors").await;
    d["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == det)
        .unwrap_or_else(|| panic!("{det} in {d}"))["running"]
        == true
}

/// `apiViewControllerGetLiveViewActive`: `GET /LiveViewController/getLiveViewActive`,
/// polled every 5 s, must be a bare boolean (the older `/ViewController/` path too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_live_view_active_is_a_bare_boolean_under_both_bases() {
    let server = TestServer::start(&[DET]).await;
    let paths = [
        at("/LiveViewController/getLiveViewActive"),
        at("/ViewController/getLiveViewActive"),
        "/LiveViewController/getLiveViewActive".to_string(),
        "/ViewController/getLiveViewActive".to_string(),
    ];
    for p in &paths {
        let (st, text) = http_raw(server.addr, "GET", p, None).await;
        assert_eq!((st, text.as_str()), (200, "false"), "{p}");
    }
    let (st, j) = server
        .post(
            &at("/LiveViewController/startLiveView?protocol=webrtc"),
            "null",
        )
        .await;
    assert_eq!(st, 200, "{j}");
    for p in &paths {
        let (st, text) = http_raw(server.addr, "GET", p, None).await;
        assert_eq!((st, text.as_str()), (200, "true"), "{p}");
    }
    let (st, _) = server.get(&at("/LiveViewController/stopLiveView")).await;
    assert_eq!(st, 200);
    let (_, text) = http_raw(server.addr, "GET", &paths[0], None).await;
    assert_eq!(text, "false");
    server.stop().await;
}

/// `apiLiveViewControllerStartLiveView(null, 'webrtc')`: axios posts the body `null`
/// (no saved parameters) with `?protocol=webrtc`; also `(name, 'webrtc', null, true)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_live_view_with_a_null_body_starts_with_defaults() {
    let server = TestServer::start(&[DET, TWO]).await;
    let (st, j) = server
        .post(
            &at("/LiveViewController/startLiveView?protocol=webrtc"),
            "null",
        )
        .await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(j["status"], "success");
    assert_eq!(j["detector"], "det");
    assert_eq!(j["protocol"], "webrtc");
    // ImSwitch's names, which the frontend saves per detector
    let p = &j["params"];
    assert_eq!(p["protocol"], "webrtc", "{p}");
    assert_eq!(p["detector_name"], "det");
    assert_eq!(p["subsampling_factor"], 1);
    assert_eq!(p["throttle_ms"], 0);
    assert_eq!(p["crop_size"], 0);
    // ours beside them
    assert_eq!(p["binning"], 1);
    assert_eq!(p["max_width"], Value::Null);
    assert!(running(&server, "det").await);

    let (st, j) = server
        .post(
            &at("/LiveViewController/startLiveView?detectorName=two&protocol=webrtc&force=true"),
            "null",
        )
        .await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(
        (j["status"].as_str(), j["detector"].as_str()),
        (Some("success"), Some("two"))
    );
    assert_eq!(j["ignored"], json!([]), "force is understood: {j}");
    assert!(running(&server, "two").await);
    // again: already running, still a 200 with the parameters
    let (st, j) = server
        .post(
            &at("/LiveViewController/startLiveView?detectorName=two&protocol=webrtc"),
            "null",
        )
        .await;
    assert_eq!((st, j["status"].as_str()), (200, Some("already_running")));
    assert_eq!(j["params"]["detector_name"], "two");
    // a protocol we do not serve is a 400 and starts nothing
    server
        .get(&at("/LiveViewController/stopLiveView?detectorName=two"))
        .await;
    let (st, e) = server
        .post(
            &at("/LiveViewController/startLiveView?detectorName=two&protocol=jpeg"),
            "null",
        )
        .await;
    assert_eq!((st, e["status"].as_str()), (400, Some("error")), "{e}");
    assert!(!running(&server, "two").await);
    server.stop().await;
}

/// `apiLiveViewControllerStartLiveView(name, 'webrtc', params)`: the parameters are the
/// whole body, flat, in ImSwitch's names; applied before the stream starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_live_view_with_flat_imswitch_params_applies_them() {
    let server = TestServer::start(&[DET]).await;
    let body = json!({"max_width": 320, "throttle_ms": 50, "subsampling_factor": 2,
                      "crop_size": 400, "stun_servers": [], "turn_servers": []});
    let (st, j) = server
        .post(
            &at("/LiveViewController/startLiveView?detectorName=det&protocol=webrtc"),
            &body.to_string(),
        )
        .await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(j["status"], "success");
    let p = &j["params"];
    assert_eq!(p["max_width"], 320, "{p}");
    assert_eq!(p["throttle_ms"], 50);
    assert_eq!(p["subsampling_factor"], 2);
    assert_eq!(p["crop_size"], 400);
    assert_eq!(j["ignored"], json!(["stun_servers", "turn_servers"]));
    assert_eq!(
        j["applied"],
        json!([
            "crop_size",
            "max_width",
            "subsampling_factor",
            "throttle_ms"
        ])
    );
    let o = ours(&server, "det").await;
    assert_eq!(o["max_width"], 320);
    assert_eq!(o["max_fps"], 20.0);
    assert_eq!(o["binning"], 2);
    assert_eq!(
        o["roi"],
        json!({"x": 120, "y": 40, "width": 400, "height": 400})
    );

    // The frontend saves `params` per detector and sends them back unchanged when the
    // tab is switched back (LiveView.js): they must be accepted and change nothing.
    let saved = j["params"].clone();
    server.get(&at("/LiveViewController/stopLiveView")).await;
    let (st, again) = server
        .post(
            &at("/LiveViewController/startLiveView?detectorName=det&protocol=webrtc"),
            &saved.to_string(),
        )
        .await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["params"], saved);
    assert_eq!(again["ignored"], json!(["detector_name"]));
    assert_eq!(ours(&server, "det").await, o);
    server.stop().await;
}

/// A bad value in startLiveView's flat body is a 400 naming the field; nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_live_view_with_a_bad_flat_param_is_a_400_and_starts_nothing() {
    let server = TestServer::start(&[DET]).await;
    let before = ours(&server, "det").await;
    for (body, field) in [
        (json!({"max_width": -640}), "max_width"),
        (json!({"throttle_ms": -5}), "throttle_ms"),
        (json!({"subsampling_factor": 100}), "subsampling_factor"),
        (json!({"crop_size": 5000}), "crop_size"),
    ] {
        let (st, e) = server
            .post(
                &at("/LiveViewController/startLiveView?protocol=webrtc"),
                &body.to_string(),
            )
            .await;
        assert_eq!(st, 400, "{body} → {e}");
        assert_eq!(e["status"], "error");
        assert_eq!(e["field"], field, "{e}");
        assert!(e["message"].as_str().unwrap().contains(field), "{e}");
    }
    assert!(!running(&server, "det").await);
    assert_eq!(ours(&server, "det").await, before);
    server.stop().await;
}

/// `apiLiveViewControllerSetStreamParameters('webrtc', params)`: `?protocol=webrtc`, the
/// parameters as the whole body, as StreamControlOverlay's Submit builds them for webrtc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_stream_parameters_with_the_whole_body_applies_them_live() {
    let server = TestServer::start(&[DET, TWO]).await;
    server
        .post(
            &at("/LiveViewController/startLiveView?detectorName=det&protocol=webrtc"),
            "null",
        )
        .await;
    let body =
        json!({"max_width": 320, "throttle_ms": 100, "subsampling_factor": 1, "crop_size": 0});
    let (st, j) = server
        .post(
            &at("/LiveViewController/setStreamParameters?protocol=webrtc"),
            &body.to_string(),
        )
        .await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(j["status"], "success");
    assert_eq!(j["protocol"], "webrtc");
    assert_eq!(j["params"]["max_width"], 320);
    assert_eq!(j["params"]["throttle_ms"], 100);
    assert_eq!(j["ignored"], json!([]));
    assert_eq!(
        j["applied"],
        json!([
            "crop_size",
            "max_width",
            "subsampling_factor",
            "throttle_ms"
        ])
    );
    assert_eq!(j["updated_detectors"], json!(["det"]));
    // every detector (ImSwitch sets protocol-wide parameters), the running one live
    for det in ["det", "two"] {
        let o = ours(&server, det).await;
        assert_eq!(o["max_width"], 320, "{det}: {o}");
        assert_eq!(o["max_fps"], 10.0, "{det}: {o}");
    }
    let (_, stats) = server.get("/api/detectors/det/params").await;
    assert_eq!(stats["output_size"], json!([320, 240]), "{stats}");
    server.stop().await;
}

/// Keys with no meaning here (ImSwitch's own webrtc example) are answered in `ignored`,
/// never a silent success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_stream_parameters_lists_unknown_keys_in_ignored() {
    let server = TestServer::start(&[DET]).await;
    let before = ours(&server, "det").await;
    let body = json!({"ice_servers": [{"urls": ["stun:stun.l.google.com:19302"]}],
                      "media_constraints": {"video": true, "audio": true}});
    let (st, j) = server
        .post(
            &at("/LiveViewController/setStreamParameters?protocol=webrtc"),
            &body.to_string(),
        )
        .await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(j["ignored"], json!(["ice_servers", "media_constraints"]));
    assert_eq!(j["applied"], json!([]));
    assert_eq!(ours(&server, "det").await, before);
    // mixed: the known one is applied, the other reported
    let (st, j) = server
        .post(
            &at("/LiveViewController/setStreamParameters?protocol=webrtc"),
            r#"{"max_width": 480, "jpeg_quality": 80}"#,
        )
        .await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(j["ignored"], json!(["jpeg_quality"]));
    assert_eq!(j["applied"], json!(["max_width"]));
    assert_eq!(ours(&server, "det").await["max_width"], 480);
    server.stop().await;
}

/// A bad value is a 400 naming the field and changes nothing; so are an empty body and
/// a protocol this server does not stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_stream_parameters_with_a_bad_value_is_a_400_naming_the_field() {
    let server = TestServer::start(&[DET]).await;
    let before = ours(&server, "det").await;
    let path = at("/LiveViewController/setStreamParameters?protocol=webrtc");
    for (body, field) in [
        (r#"{"max_width": -640}"#, Some("max_width")),
        (
            r#"{"max_width": 640, "throttle_ms": "fast"}"#,
            Some("throttle_ms"),
        ),
        (r#"{"subsampling_factor": 0.5}"#, Some("subsampling_factor")),
        (r#"{"crop_size": 4096}"#, Some("crop_size")),
        ("{}", None),
        ("null", None),
        ("[1]", None),
    ] {
        let (st, e) = server.post(&path, body).await;
        assert_eq!(
            (st, e["status"].as_str()),
            (400, Some("error")),
            "{body} → {e}"
        );
        if let Some(f) = field {
            assert_eq!(e["field"], f, "{body} → {e}");
        }
    }
    let (st, e) = server
        .post(
            &at("/LiveViewController/setStreamParameters?protocol=jpeg"),
            r#"{"jpeg_quality": 80}"#,
        )
        .await;
    assert_eq!(st, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("webrtc"), "{e}");
    assert_eq!(ours(&server, "det").await, before, "nothing changed");
    server.stop().await;
}

/// `apiLiveViewControllerGetStreamParameters()`: StreamControlOverlay reads
/// `protocols.webrtc.{max_width, throttle_ms, subsampling_factor, crop_size, is_active}`,
/// `current_protocol` and `per_detector`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_stream_parameters_has_the_shape_the_frontend_reads() {
    let server = TestServer::start(&[DET, TWO]).await;
    let path = at("/LiveViewController/getStreamParameters");
    let (st, g) = server.get(&path).await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["current_protocol"], Value::Null, "nothing streams: {g}");
    assert_eq!(g["current_active_protocols"], json!({}));
    assert_eq!(g["total_active_streams"], 0);
    assert_eq!(g["protocols"]["webrtc"]["is_active"], false);

    server
        .post(
            &at("/LiveViewController/setStreamParameters?protocol=webrtc"),
            r#"{"max_width": 320, "throttle_ms": 40, "crop_size": 200}"#,
        )
        .await;
    server
        .post(
            &at("/LiveViewController/startLiveView?detectorName=two&protocol=webrtc"),
            "null",
        )
        .await;
    let (st, g) = server.get(&path).await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["status"], "success");
    assert_eq!(g["current_protocol"], "webrtc");
    assert_eq!(g["current_active_protocols"], json!({"two": "webrtc"}));
    assert_eq!(g["total_active_streams"], 1);
    let w = &g["protocols"]["webrtc"];
    assert_eq!(w["is_active"], true, "{w}");
    assert_eq!(w["active_detectors"], json!(["two"]));
    assert_eq!(
        w["detector_name"], "two",
        "the running detector's parameters"
    );
    assert_eq!(w["max_width"], 320);
    assert_eq!(w["throttle_ms"], 40);
    assert_eq!(w["subsampling_factor"], 1);
    assert_eq!(w["crop_size"], 200);
    for det in ["det", "two"] {
        let d = &g["per_detector"][det];
        assert_eq!(d["protocol"], "webrtc", "{g}");
        assert_eq!(d["detector_name"], det);
        assert_eq!(d["max_width"], 320);
    }
    // ours beside them
    assert_eq!(g["params"]["max_fps"], 25.0);
    assert_eq!(g["active_detectors"], json!(["two"]));
    assert_eq!(g["detectors"]["det"]["roi"]["width"], 200);
    // the protocol-specific form and the old base
    let (st, g2) = server
        .get("/LiveViewController/getStreamParameters?protocol=webrtc&detectorName=det")
        .await;
    assert_eq!(st, 200, "{g2}");
    assert_eq!(g2["params"]["detector_name"], "det");
    assert_eq!(g2["protocols"]["webrtc"]["crop_size"], 200);
    server.stop().await;
}

/// `apiLiveViewControllerSetDetectorStreamParameters(name, {protocol, ...params})`:
/// `?detectorName=`, the protocol inside the body; one detector only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_detector_stream_parameters_applies_to_that_detector_only() {
    let server = TestServer::start(&[DET, TWO]).await;
    let path = at("/LiveViewController/setDetectorStreamParameters?detectorName=two");
    let body = json!({"protocol": "webrtc", "max_width": 160, "throttle_ms": 100,
                      "subsampling_factor": 2, "crop_size": 0});
    let (st, j) = server.post(&path, &body.to_string()).await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(j["status"], "success");
    assert_eq!(j["detector"], "two");
    assert_eq!(j["restarted"], false);
    assert_eq!(j["updated_live"], false);
    assert_eq!(j["ignored"], json!([]));
    assert_eq!(j["params"]["max_width"], 160);
    assert_eq!(j["params"]["subsampling_factor"], 2);
    let o = ours(&server, "two").await;
    assert_eq!(
        (o["max_width"].as_u64(), o["binning"].as_u64()),
        (Some(160), Some(2))
    );
    assert_eq!(
        ours(&server, "det").await["max_width"],
        Value::Null,
        "only two"
    );

    // running: applied live
    server
        .post(
            &at("/LiveViewController/startLiveView?detectorName=two&protocol=webrtc"),
            "null",
        )
        .await;
    let (st, j) = server
        .post(
            &path,
            r#"{"protocol": "webrtc", "max_width": 320, "subsampling_factor": 1}"#,
        )
        .await;
    assert_eq!((st, j["updated_live"].as_bool()), (200, Some(true)), "{j}");
    assert_eq!(ours(&server, "two").await["max_width"], 320);

    for (p, body, status) in [
        (
            path.as_str(),
            r#"{"protocol": "webrtc", "max_width": -640}"#,
            400,
        ),
        (
            path.as_str(),
            r#"{"protocol": "mjpeg", "jpeg_quality": 80}"#,
            400,
        ),
        (path.as_str(), r#"{"protocol": "webrtc"}"#, 400),
        (
            "/imswitch/api/LiveViewController/setDetectorStreamParameters",
            r#"{"protocol": "webrtc", "max_width": 640}"#,
            400,
        ),
        (
            "/imswitch/api/LiveViewController/setDetectorStreamParameters?detectorName=nope",
            r#"{"protocol": "webrtc", "max_width": 640}"#,
            404,
        ),
    ] {
        let (st, e) = server.post(p, body).await;
        assert_eq!(
            (st, e["status"].as_str()),
            (status, Some("error")),
            "{p} {body} → {e}"
        );
    }
    assert_eq!(ours(&server, "two").await["max_width"], 320, "unchanged");
    server.stop().await;
}

/// `apiLiveViewControllerGetLongExposureInfo()`: the frontend auto-starts the stream
/// only when `isLongExposure` is false. This server has no long-exposure limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_long_exposure_info_says_no_limit_here() {
    let server = TestServer::start(&[DET, TWO]).await;
    let (st, j) = server
        .get(&at("/LiveViewController/getLongExposureInfo"))
        .await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(j["isLongExposure"], false);
    assert_eq!(j["supported"], false);
    assert_eq!(j["detector"], "det");
    assert_eq!(j["exposureMs"], Value::Null);
    let (_, j) = server
        .get(&at(
            "/LiveViewController/getLongExposureInfo?detectorName=two",
        ))
        .await;
    assert_eq!(j["detector"], "two");
    let (st, e) = server
        .get(&at(
            "/LiveViewController/getLongExposureInfo?detectorName=nope",
        ))
        .await;
    assert_eq!((st, e["status"].as_str()), (404, Some("error")));
    server.stop().await;
}

/// LiveView.js: `fetch(`${host}:${port}/imswitch/api/SettingsController/getDetectorNames`)`
/// must give an array of names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_detector_names_is_the_detector_list_under_both_bases() {
    let server = TestServer::start(&[DET, TWO]).await;
    for p in [
        at("/SettingsController/getDetectorNames"),
        "/SettingsController/getDetectorNames".to_string(),
    ] {
        let (st, j) = server.get(&p).await;
        assert_eq!((st, j), (200, json!(["det", "two"])), "{p}");
    }
    server.stop().await;
}

/// `MJPEGViewer`'s `<img src=".../mjpeg_stream?startStream=true&detectorName=..">`:
/// a `multipart/x-mixed-replace` stream of JPEGs under both bases (tests/mjpeg.rs
/// decodes them); the stopped detector is started, as ImSwitch does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_stream_is_multipart_jpeg_under_both_bases() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(&[DET]).await;
    for p in [
        at("/LiveViewController/mjpeg_stream?startStream=true&detectorName=det"),
        "/LiveViewController/mjpeg_stream?startStream=true&detectorName=det".to_string(),
    ] {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let req = format!("GET {p} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&buf).contains("Content-Type: image/jpeg") {
            assert!(Instant::now() < deadline, "{p}: no JPEG part in 10 s");
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(
                n > 0,
                "{p}: closed early: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{p}: {head}");
        assert!(
            head.contains("content-type: multipart/x-mixed-replace; boundary="),
            "{p}: {head}"
        );
    }
    assert!(running(&server, "det").await, "the detector was started");
    server.stop().await;
}

/// `apiLiveViewControllerStopLiveView()` (GET, no parameters: the first running one) and
/// `apiLiveViewControllerGetActiveStreams()` (LiveView.js reads `active_streams[0].detector`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_live_view_and_get_active_streams_under_the_imswitch_base() {
    let server = TestServer::start(&[DET, TWO]).await;
    let (_, j) = server
        .get(&at("/LiveViewController/getActiveStreams"))
        .await;
    assert_eq!(j["active_streams"], json!([]));
    server
        .post(
            &at("/LiveViewController/startLiveView?detectorName=two&protocol=webrtc"),
            "null",
        )
        .await;
    let (st, j) = server
        .get(&at("/LiveViewController/getActiveStreams"))
        .await;
    assert_eq!(st, 200);
    assert_eq!(j["active_streams"][0]["detector"], "two", "{j}");
    assert_eq!(j["active_streams"][0]["protocol"], "webrtc");
    let (st, j) = server.get(&at("/LiveViewController/stopLiveView")).await;
    assert_eq!(st, 200);
    assert_eq!(
        (j["status"].as_str(), j["detector"].as_str()),
        (Some("success"), Some("two"))
    );
    let (_, j) = server.get(&at("/LiveViewController/stopLiveView")).await;
    assert_eq!(j["status"], "not_running");
    assert!(!running(&server, "two").await);
    server.stop().await;
}

/// WebRTCViewer.jsx: `fetch(`${baseUrl}/LiveViewController/webrtc_offer`)` with
/// `{sdp, sdp_type, detectorName, params: {throttle_ms, subsampling_factor, max_width}}`;
/// reads `status`, `sdp` and `type`. The answer plays and the parameters are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_offer_from_the_frontend_plays_under_the_imswitch_base() {
    let server = TestServer::start(&[DET]).await;
    let client = ViewerClient::new(&["42e01f"]).await.expect("client peer");
    let payload = json!({
        "sdp": client.offer_sdp(),
        "sdp_type": "offer",
        "detectorName": "det",
        "params": {"throttle_ms": 33, "subsampling_factor": 1, "max_width": 320},
    });
    let posted_at = Instant::now();
    let (st, answer) = server
        .post(
            &at("/LiveViewController/webrtc_offer"),
            &payload.to_string(),
        )
        .await;
    assert_eq!(st, 200, "{answer}");
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["type"], "answer");
    let sdp = answer["sdp"].as_str().unwrap().to_string();
    client.accept_answer(sdp).await.expect("answer accepted");
    let mut viewer = Viewer {
        client,
        decoder: Decoder::new().expect("decoder"),
        posted_at,
        connected_at: None,
        answer,
    };
    let seen = viewer.decode_frames(3, Duration::from_secs(15)).await;
    assert!(seen.len() >= 3, "decoded {} pictures", seen.len());
    let last = seen.last().unwrap();
    assert_eq!((last.width, last.height), (320, 240), "max_width applied");
    let o = ours(&server, "det").await;
    assert_eq!(o["max_width"], 320, "{o}");
    let (_, text) = http_raw(
        server.addr,
        "GET",
        &at("/LiveViewController/getLiveViewActive"),
        None,
    )
    .await;
    assert_eq!(text, "true");
    viewer.client.close().await;
    server.stop().await;
}
