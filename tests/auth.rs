//! Bearer-token access control and CORS on a real server.

mod common;

use base64::Engine;
use common::{http_with, real_offer, TestServer};
use std::time::{SystemTime, UNIX_EPOCH};

fn jwt(secret: &[u8], exp: u64) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let p = b64.encode(format!(r#"{{"sub":"operator","exp":{exp}}}"#));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let s = b64.encode(ring::hmac::sign(&key, format!("{h}.{p}").as_bytes()).as_ref());
    format!("{h}.{p}.{s}")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_nothing_but_health_and_the_page_answers() {
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| {
        c.auth_token = Some("s3cret".into());
        c.jwt_secret = Some("jwt-key".into());
    })
    .await;
    let addr = server.addr;
    // open: health and the page's static files
    for path in ["/health", "/", "/app.js"] {
        let (st, _, _) = http_with(addr, "GET", path, &[], None).await;
        assert_eq!(st, 200, "{path}");
    }
    let offer = serde_json::json!({"sdp": real_offer().await, "type": "offer"}).to_string();
    let json = ("Content-Type", "application/json");
    // closed: every API, WHEP and metrics route, with no, a wrong, or an expired token
    let expired = format!("Bearer {}", jwt(b"jwt-key", now() - 10));
    let forged = format!("Bearer {}", jwt(b"other-key", now() + 600));
    for auth in [
        None,
        Some("Bearer nope"),
        Some(expired.as_str()),
        Some(forged.as_str()),
    ] {
        for (method, path, body) in [
            ("GET", "/api/detectors", None),
            ("GET", "/api/stats", None),
            ("GET", "/api/sessions", None),
            ("GET", "/metrics", None),
            ("POST", "/LiveViewController/startLiveView", Some("{}")),
            (
                "POST",
                "/LiveViewController/webrtc_offer",
                Some(offer.as_str()),
            ),
            (
                "PATCH",
                "/api/detectors/synthetic/params",
                Some(r#"{"gamma": 2}"#),
            ),
            ("POST", "/whep/synthetic", Some(offer.as_str())),
        ] {
            let mut headers = vec![json];
            if let Some(a) = auth {
                headers.push(("Authorization", a));
            }
            let (st, h, b) = http_with(addr, method, path, &headers, body.map(str::as_bytes)).await;
            assert_eq!(st, 401, "{method} {path} with {auth:?}");
            assert!(h.contains("www-authenticate: bearer"), "{h}");
            let e: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(e["status"], "error");
        }
    }
    // nothing started, nothing changed
    let token = ("Authorization", "Bearer s3cret");
    let (st, _, b) = http_with(addr, "GET", "/api/detectors", &[token], None).await;
    assert_eq!(st, 200);
    let d: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(d["detectors"][0]["running"], false, "{d}");
    let (_, _, b) = http_with(
        addr,
        "GET",
        "/api/detectors/synthetic/params",
        &[token],
        None,
    )
    .await;
    let p: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(p["params"]["gamma"], 1.0);

    // the static token, a valid JWT, and the query form all work
    let good_jwt = format!("Bearer {}", jwt(b"jwt-key", now() + 600));
    let (st, _, _) = http_with(
        addr,
        "POST",
        "/LiveViewController/startLiveView",
        &[json, ("Authorization", &good_jwt)],
        Some(b"{}"),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, _) = http_with(addr, "GET", "/metrics?access_token=s3cret", &[], None).await;
    assert_eq!(st, 200);
    let (st, h, _) = http_with(
        addr,
        "POST",
        "/whep/synthetic",
        &[("Content-Type", "application/sdp"), token],
        Some(real_offer().await.as_bytes()),
    )
    .await;
    assert_eq!(st, 201, "{h}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_the_configured_origins() {
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| {
        c.cors_origins = vec!["https://lab.example".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        [
            ("Origin", origin),
            ("Access-Control-Request-Method", "PATCH"),
            ("Access-Control-Request-Headers", "content-type"),
        ]
    };
    let (st, h, _) = http_with(
        server.addr,
        "OPTIONS",
        "/api/detectors/synthetic/params",
        &preflight("https://lab.example"),
        None,
    )
    .await;
    assert_eq!(st, 204, "{h}");
    assert!(
        h.contains("access-control-allow-origin: https://lab.example"),
        "{h}"
    );
    assert!(h.contains("access-control-allow-methods:"), "{h}");
    let (_, h, _) = http_with(
        server.addr,
        "OPTIONS",
        "/api/detectors/synthetic/params",
        &preflight("https://evil.example"),
        None,
    )
    .await;
    assert!(!h.contains("access-control-allow-origin"), "{h}");
    let (st, h, _) = http_with(
        server.addr,
        "GET",
        "/api/detectors",
        &[("Origin", "https://lab.example")],
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert!(
        h.contains("access-control-allow-origin: https://lab.example"),
        "{h}"
    );
    server.stop().await;

    // the default: any origin
    let server = TestServer::start(&[]).await;
    let (_, h, _) = http_with(
        server.addr,
        "GET",
        "/api/detectors",
        &[("Origin", "https://anywhere.example")],
        None,
    )
    .await;
    assert!(h.contains("access-control-allow-origin: *"), "{h}");
    server.stop().await;
}

/// Every route of the README's API table (and each LiveViewController route again under
/// `/imswitch/api`), by every method it lists, answers 401 without a token: the table
/// is read from the README, so a route added there is checked here. Open by design:
/// `/health`, the page `/`, and CORS preflights (`OPTIONS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_the_readme_lists_needs_a_token() {
    const METHODS: [&str; 5] = ["GET", "POST", "PATCH", "DELETE", "OPTIONS"];
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("## HTTP API")
        .nth(1)
        .and_then(|s| s.split("\n\n```").next())
        .expect("the README's API table");
    let mut routes: Vec<(String, String)> = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cell = row
            .split(" | ")
            .next()
            .unwrap()
            .trim_start_matches("| ")
            .replace('`', "");
        let words: Vec<&str> = cell.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        for pair in words.windows(2) {
            let methods: Vec<&str> = pair[0].split('/').collect();
            if !methods.iter().all(|m| METHODS.contains(m)) || !pair[1].starts_with('/') {
                continue;
            }
            let path = pair[1]
                .split('?')
                .next()
                .unwrap()
                .replace("{name}", "synthetic")
                .replace("{detector}", "synthetic")
                .replace("{id}", "1");
            for m in methods {
                routes.push((m.to_string(), path.clone()));
                if path.starts_with("/LiveViewController/") {
                    routes.push((m.to_string(), format!("/imswitch/api{path}")));
                }
            }
        }
    }
    assert!(
        routes.len() >= 30,
        "read too few routes from the README: {routes:?}"
    );
    // The row on ImSwitch's frontend names its extra calls in prose.
    for (m, p) in [
        ("GET", "/LiveViewController/getLiveViewActive"),
        ("GET", "/ViewController/getLiveViewActive"),
        ("POST", "/LiveViewController/setDetectorStreamParameters"),
        ("GET", "/LiveViewController/getLongExposureInfo"),
        ("GET", "/SettingsController/getDetectorNames"),
    ] {
        routes.push((m.to_string(), p.to_string()));
        routes.push((m.to_string(), format!("/imswitch/api{p}")));
    }
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| {
        c.auth_token = Some("s3cret".into());
    })
    .await;
    let mut checked = 0;
    for (method, path) in &routes {
        if path == "/health" || path == "/" || method == "OPTIONS" {
            continue;
        }
        let (st, h, body) = http_with(
            server.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            Some(b"{}"),
        )
        .await;
        assert_eq!(
            st,
            401,
            "{method} {path} without a token: {h}\n{}",
            String::from_utf8_lossy(&body)
        );
        checked += 1;
    }
    assert!(checked >= 30, "{checked} routes checked");
    // And with the token, the same request is let through (whatever the route says then).
    let (st, _, _) = http_with(
        server.addr,
        "GET",
        "/api/detectors",
        &[("Authorization", "Bearer s3cret")],
        None,
    )
    .await;
    assert_eq!(st, 200);
    server.stop().await;
}
