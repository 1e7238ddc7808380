//! Trickle ICE, proven: the viewer's offer goes without candidates, its real candidates
//! follow (JSON API `webrtc_ice_candidate`, by GET and POST; WHEP `PATCH`), and it connects and decodes.
//!
//! So that only the trickled candidates can make the connection, the viewer is also given
//! the answer *without* the server's candidates: it cannot send a connectivity check of
//! its own, so the server must check the candidates it was trickled (the viewer then
//! learns the server's address from those checks). Without the trickle nothing connects,
//! which the first test also shows.

mod common;

use common::{http_with, TestServer, Viewer};
use lumacast_encode::Decoder;
use lumacast_rtc::ViewerClient;
use serde_json::json;
use std::time::{Duration, Instant};

/// An SDP without its candidates, and those candidates (`candidate:...` attribute values).
fn split_candidates(sdp: &str) -> (String, Vec<String>) {
    let mut rest = String::new();
    let mut cands = Vec::new();
    for line in sdp.split_inclusive("\r\n") {
        let l = line.trim_end();
        if let Some(c) = l.strip_prefix("a=") {
            if c.starts_with("candidate:") {
                cands.push(c.to_string());
                continue;
            }
            if c == "end-of-candidates" {
                continue;
            }
        }
        rest.push_str(line);
    }
    (rest, cands)
}

fn viewer(client: ViewerClient) -> Viewer {
    Viewer {
        client,
        decoder: Decoder::new().expect("decoder"),
        posted_at: Instant::now(),
        connected_at: None,
        answer: serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_trickled_through_the_json_api_connect_the_viewer() {
    let server = TestServer::start(&[]).await;
    let path = "/LiveViewController/webrtc_ice_candidate";

    // Control: the same set-up without the trickle does not connect.
    let client = ViewerClient::new(&["42e01f"]).await.expect("client");
    let (offer, cands) = split_candidates(client.offer_sdp());
    assert!(!cands.is_empty() && !offer.contains("a=candidate"));
    let (st, a) = server
        .post(
            "/LiveViewController/webrtc_offer",
            &json!({"sdp": offer, "type": "offer"}).to_string(),
        )
        .await;
    assert_eq!(st, 200, "{a}");
    let (answer, server_cands) = split_candidates(a["sdp"].as_str().unwrap());
    assert!(!server_cands.is_empty());
    client.accept_answer(answer).await.expect("answer");
    let mut silent = viewer(client);
    assert!(
        silent
            .decode_frames(1, Duration::from_secs(3))
            .await
            .is_empty(),
        "connected without any candidate of the viewer: the test would prove nothing"
    );
    silent.client.close().await;

    // Now with the candidates trickled, one request each, then end-of-candidates.
    let client = ViewerClient::new(&["42e01f"]).await.expect("client");
    let (offer, cands) = split_candidates(client.offer_sdp());
    let (st, a) = server
        .post(
            "/LiveViewController/webrtc_offer",
            &json!({"sdp": offer, "type": "offer"}).to_string(),
        )
        .await;
    assert_eq!(st, 200, "{a}");
    let id = a["viewer_id"].as_u64().expect("viewer_id");
    let (answer, _) = split_candidates(a["sdp"].as_str().unwrap());
    client.accept_answer(answer).await.expect("answer");
    // The first by GET with query parameters (ImSwitch's other form), the rest by POST.
    for (i, c) in cands.iter().enumerate() {
        let (st, r) = if i == 0 {
            let q: String = c
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            server
                .get(&format!("{path}?viewer_id={id}&candidate={q}"))
                .await
        } else {
            let body = json!({"viewer_id": id, "candidate": {"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0}});
            server.post(path, &body.to_string()).await
        };
        assert_eq!((st, r["added"].as_u64()), (200, Some(1)), "{c}: {r}");
    }
    let (st, _) = server
        .post(path, &json!({"viewer_id": id, "candidate": ""}).to_string())
        .await;
    assert_eq!(st, 200);
    let mut v = viewer(client);
    let seen = v.decode_frames(5, Duration::from_secs(15)).await;
    assert!(
        seen.len() >= 5,
        "decoded {} frames after the trickle",
        seen.len()
    );
    v.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_trickled_by_whep_patch_connect_the_viewer() {
    let server = TestServer::start(&[]).await;
    let client = ViewerClient::new(&["42e01f"]).await.expect("client");
    let (offer, cands) = split_candidates(client.offer_sdp());
    let (st, headers, body) = http_with(
        server.addr,
        "POST",
        "/whep/synthetic",
        &[("Content-Type", "application/sdp")],
        Some(offer.as_bytes()),
    )
    .await;
    assert_eq!(st, 201, "{headers}");
    let header = |name: &str| {
        headers
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {headers}"))
            .trim()
            .to_string()
    };
    let (location, etag) = (header("location"), header("etag"));
    let (answer, _) = split_candidates(&String::from_utf8(body).unwrap());
    client.accept_answer(answer).await.expect("answer");
    let attr = |name: &str| {
        offer
            .lines()
            .find_map(|l| l.strip_prefix(&format!("a={name}:")))
            .unwrap()
            .trim()
            .to_string()
    };
    // RFC 8840 fragment: the session's credentials, the media section, the candidates.
    let mut frag = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{}\r\n",
        attr("ice-ufrag"),
        attr("ice-pwd"),
        attr("mid")
    );
    for c in &cands {
        frag.push_str(&format!("a={c}\r\n"));
    }
    frag.push_str("a=end-of-candidates\r\n");
    let (st, h, _) = http_with(
        server.addr,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/trickle-ice-sdpfrag"),
            ("If-Match", &etag),
        ],
        Some(frag.as_bytes()),
    )
    .await;
    assert_eq!(st, 204, "{h}");
    let mut v = viewer(client);
    let seen = v.decode_frames(5, Duration::from_secs(15)).await;
    assert!(
        seen.len() >= 5,
        "decoded {} frames after the PATCH",
        seen.len()
    );
    v.client.close().await;
    server.stop().await;
}
