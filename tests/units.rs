//! Units: a detector's pixel size in µm (`pixel_um`), from its configuration or the
//! stream parameter, shown by `/api/detectors` and the parameters, and turned into µm
//! coordinates and lengths by the raw-values answers; bad values refused by name.

mod common;

use common::{http_bytes, TestServer};
use lumacast_capture::PushHeader;
use lumacast_frame::PixelFormat;
use serde_json::{json, Value};
use std::time::Duration;

async fn pixel_um_listed(server: &TestServer, name: &str) -> Value {
    let (st, v) = server.get("/api/detectors").await;
    assert_eq!(st, 200, "{v}");
    v["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing: {v}"))["pixel_um"]
        .clone()
}

/// The detector option starts the parameter; PATCH changes and clears it; both
/// `/api/detectors` and the parameters show it, `null` when unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixel_size_comes_from_the_detector_option_and_the_stream_parameter() {
    let server = TestServer::start(&[
        "scope=synthetic,width=320,height=240,pixel_um=6.5",
        "plain=synthetic,width=320,height=240",
    ])
    .await;
    assert_eq!(pixel_um_listed(&server, "scope").await, json!(6.5));
    assert_eq!(pixel_um_listed(&server, "plain").await, Value::Null);
    let (_, v) = server.get("/api/detectors/scope/params").await;
    assert_eq!(v["params"]["pixel_um"], 6.5, "{v}");
    let (_, v) = server.get("/api/detectors/plain/params").await;
    assert!(v["params"]["pixel_um"].is_null(), "{v}");

    let (st, v) = server
        .patch("/api/detectors/plain/params", r#"{"pixel_um": 0.108}"#)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["params"]["pixel_um"], 0.108, "{v}");
    assert_eq!(pixel_um_listed(&server, "plain").await, json!(0.108));
    // with another change, and ImSwitch's spelling of the parameters reads it back too
    let (st, v) = server
        .patch(
            "/api/detectors/scope/params",
            r#"{"pixel_um": 3.45, "gamma": 0.5}"#,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["params"]["pixel_um"], 3.45);
    let (_, v) = server
        .get("/LiveViewController/getStreamParameters?detectorName=scope")
        .await;
    assert!(v.to_string().contains("\"pixel_um\":3.45"), "{v}");
    // null: unknown again
    let (st, v) = server
        .patch("/api/detectors/scope/params", r#"{"pixel_um": null}"#)
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(v["params"]["pixel_um"].is_null(), "{v}");
    assert_eq!(pixel_um_listed(&server, "scope").await, Value::Null);
    server.stop().await;
}

/// Zero, negative, too large, a string: 400 naming `pixel_um`, and nothing changes
/// (not even the other fields of the same request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pixel_size_is_a_400_naming_the_field_and_changes_nothing() {
    let server = TestServer::start(&["scope=synthetic,width=320,height=240,pixel_um=6.5"]).await;
    for bad in [
        r#"{"pixel_um": 0}"#,
        r#"{"pixel_um": -6.5}"#,
        r#"{"pixel_um": 1e7}"#,
        r#"{"pixel_um": "6.5"}"#,
        r#"{"pixel_um": true}"#,
        r#"{"pixel_um": 2.0, "gamma": 99}"#,
        r#"{"gamma": 0.5, "pixel_um": -1}"#,
    ] {
        let (st, v) = server.patch("/api/detectors/scope/params", bad).await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert_eq!(v["status"], "error", "{v}");
        assert!(
            v["field"] == "pixel_um" || v["field"] == "gamma",
            "{bad}: {v}"
        );
        if !bad.contains("gamma") {
            assert_eq!(v["field"], "pixel_um", "{bad}: {v}");
        }
    }
    let (_, v) = server.get("/api/detectors/scope/params").await;
    assert_eq!(v["params"]["pixel_um"], 6.5, "{v}");
    assert_eq!(v["params"]["gamma"], 1.0, "{v}");
    server.stop().await;
}

/// A bad `pixel_um` detector option stops the real binary at startup, saying what is
/// wrong.
#[tokio::test]
async fn a_bad_pixel_size_option_stops_startup_with_its_reason() {
    for (opt, says) in [
        ("a=synthetic,pixel_um=0", "outside"),
        ("a=push,pixel_um=-2", "outside"),
        ("a=synthetic,pixel_um=inf", "outside"),
        ("a=synthetic,pixel_um=six", "pixel_um=six"),
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_lumacast"))
                .args(["--listen", "127.0.0.1:0", "--detector", opt])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the binary exits")
        .expect("the binary runs");
        assert!(!out.status.success(), "{opt} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("detector \"a\"") && err.contains("pixel_um") && err.contains(says),
            "{opt}: {err}"
        );
    }
}

/// With a pixel size, the values answers give µm beside the pixels: a point's corner,
/// a line's length between its end pixels' centres, a rectangle's origin and sides;
/// without one they give none. ROI and binning do not change them (detector pixels).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_values_add_micrometres_when_the_pixel_size_is_known() {
    let server = TestServer::start(&["ext=push,width=64,height=48,bits=16,fps=30"]).await;
    let header = PushHeader {
        width: 64,
        height: 48,
        format: PixelFormat::Mono16 { bit_depth: 16 },
        frame_number: Some(1),
        timestamp_us: None,
    };
    let mut frame = header.encode().to_vec();
    frame.resize(frame.len() + 64 * 48 * 2, 7);
    let (st, _, b) = http_bytes(
        server.addr,
        "POST",
        "/api/detectors/ext/frames",
        Some(&frame),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let mut v = Value::Null;
    for _ in 0..100 {
        let (st, got) = server.get("/api/detectors/ext/values?x=3&y=4").await;
        v = got;
        if st == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(v["kind"], "point", "{v}");
    assert!(v["pixel_um"].is_null(), "{v}");
    assert!(v.get("x_um").is_none(), "{v}");

    let (st, p) = server
        .patch(
            "/api/detectors/ext/params",
            r#"{"pixel_um": 6.5, "roi": [8, 8, 32, 32], "binning": 2}"#,
        )
        .await;
    assert_eq!(st, 200, "{p}");
    let (_, v) = server.get("/api/detectors/ext/values?x=3&y=4").await;
    assert_eq!(v["pixel_um"], 6.5, "{v}");
    assert_eq!(v["x_um"], 19.5, "{v}");
    assert_eq!(v["y_um"], 26.0, "{v}");
    // a 3-4-5 line: 5 pixels between the end pixels' centres
    let (_, v) = server
        .get("/api/detectors/ext/values?x0=1&y0=1&x1=4&y1=5")
        .await;
    assert_eq!(v["kind"], "line", "{v}");
    assert_eq!(v["length_um"], 32.5, "{v}");
    let (_, v) = server.get("/api/detectors/ext/values?rect=10,20,4,3").await;
    assert_eq!(v["kind"], "rect", "{v}");
    assert_eq!(
        (&v["x_um"], &v["y_um"], &v["width_um"], &v["height_um"]),
        (&json!(65.0), &json!(130.0), &json!(26.0), &json!(19.5)),
        "{v}"
    );
    // no binary fractions: 0.1 µm x 3 is 0.3
    server
        .patch("/api/detectors/ext/params", r#"{"pixel_um": 0.1}"#)
        .await;
    let (_, v) = server.get("/api/detectors/ext/values?x=3&y=0").await;
    assert_eq!(v["x_um"], 0.3, "{v}");
    server.stop().await;
}
