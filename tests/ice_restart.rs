//! ICE restart (RFC 9725 section 4.4.1.2): a WHEP PATCH whose fragment carries new
//! `ice-ufrag`/`ice-pwd`, or `POST /api/sessions/{id}/ice-restart` with a restart offer,
//! restarts ICE on the existing session: same session id, same track, frames go on.

mod common;

use common::{http, http_with, TestServer, Viewer};
use lumacast_rtc::IceParams;
use std::time::Duration;

/// The viewer's answer with our new credentials and candidates (what a WHEP player
/// does with the PATCH answer's fragment).
fn answer_with(answer: &str, ours: &IceParams) -> String {
    let mut out = Vec::new();
    let mut media = 0;
    for l in answer.lines() {
        if l.starts_with("a=candidate:") || l == "a=end-of-candidates" {
            continue;
        }
        if l.starts_with("m=") {
            media += 1;
            if media == 2 {
                out.extend(ours.candidates.iter().map(|c| format!("a={c}")));
            }
        }
        if l.starts_with("a=ice-ufrag:") {
            out.push(format!("a=ice-ufrag:{}", ours.ufrag));
        } else if l.starts_with("a=ice-pwd:") {
            out.push(format!("a=ice-pwd:{}", ours.pwd));
        } else {
            out.push(l.to_string());
        }
    }
    if media < 2 {
        out.extend(ours.candidates.iter().map(|c| format!("a={c}")));
    }
    out.join("\r\n") + "\r\n"
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn a_whep_patch_with_new_credentials_restarts_ice_on_the_same_session() {
    let server = TestServer::start(&[]).await;
    let (mut viewer, headers) = Viewer::join_whep(&server, "synthetic").await;
    let location = header(&headers, "location").expect("Location").to_string();
    let etag0 = header(&headers, "etag").expect("ETag").to_string();
    let answer0 = {
        // The answer the viewer applied (the client keeps the remote description).
        let (_, s) = http(server.addr, "GET", "/api/sessions", None).await;
        assert_eq!(s["count"], 1);
        s["sessions"][0]["id"].as_u64().unwrap()
    };
    assert!(
        viewer
            .decode_frames(10, Duration::from_secs(10))
            .await
            .len()
            >= 10
    );

    let offer = viewer
        .client
        .restart_ice_offer()
        .await
        .expect("restart offer");
    let ours_before = IceParams::parse(viewer.client.offer_sdp()).unwrap();
    let theirs = IceParams::parse(&offer).unwrap();
    assert_ne!(
        theirs.ufrag, ours_before.ufrag,
        "the restart offer has new credentials"
    );
    let fragment = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n{}",
        theirs.ufrag,
        theirs.pwd,
        theirs
            .candidates
            .iter()
            .map(|c| format!("a={c}\r\n"))
            .collect::<String>()
    );
    let (status, h, body) = http_with(
        server.addr,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/trickle-ice-sdpfrag"),
            ("If-Match", &etag0),
        ],
        Some(fragment.as_bytes()),
    )
    .await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{h}\n{body}");
    assert_eq!(
        header(&h, "content-type"),
        Some("application/trickle-ice-sdpfrag")
    );
    let etag1 = header(&h, "etag").expect("a new ETag").to_string();
    assert_ne!(etag1, etag0);
    let ours = IceParams::parse(&body).expect("our new credentials in the fragment");
    assert!(!ours.candidates.is_empty(), "{body}");
    assert!(body.contains("a=end-of-candidates"), "{body}");

    // The viewer applies our new credentials to its answer; video goes on.
    let remote = viewer.client.remote_sdp().await.expect("the answer");
    assert_ne!(IceParams::parse(&remote).unwrap().ufrag, ours.ufrag);
    viewer
        .client
        .accept_answer(answer_with(&remote, &ours))
        .await
        .expect("restart answer applied");
    let after = viewer.decode_frames(30, Duration::from_secs(10)).await;
    assert!(
        after.len() >= 30,
        "decoded {} frames after the restart",
        after.len()
    );
    let (_, s) = http(server.addr, "GET", "/api/sessions", None).await;
    assert_eq!(s["count"], 1, "the same session: {s}");
    assert_eq!(s["sessions"][0]["id"], answer0);

    // The old ETag is stale now; an unknown session is 404; a restart without a pwd 400.
    let (status, _, _) = http_with(
        server.addr,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/trickle-ice-sdpfrag"),
            ("If-Match", &etag0),
        ],
        Some(fragment.as_bytes()),
    )
    .await;
    assert_eq!(status, 412);
    let (status, _, body) = http_with(
        server.addr,
        "PATCH",
        &location,
        &[("Content-Type", "application/trickle-ice-sdpfrag")],
        Some(b"a=ice-ufrag:abcdefgh\r\n"),
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    server.stop().await;
}

#[tokio::test]
async fn the_json_api_restarts_ice_with_a_whole_offer() {
    let server = TestServer::start(&[]).await;
    let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
    let id = viewer.answer["viewer_id"].as_u64().expect("viewer_id");
    assert!(
        viewer
            .decode_frames(10, Duration::from_secs(10))
            .await
            .len()
            >= 10
    );
    let offer = viewer.client.restart_ice_offer().await.unwrap();
    let body = serde_json::json!({"sdp": offer, "type": "offer"}).to_string();
    let (status, answer) = http(
        server.addr,
        "POST",
        &format!("/api/sessions/{id}/ice-restart"),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "answer");
    assert_eq!(answer["ice_restarts"], 1);
    let sdp = answer["sdp"].as_str().unwrap().to_string();
    assert_ne!(
        IceParams::parse(&sdp).unwrap().ufrag,
        IceParams::parse(viewer.answer["sdp"].as_str().unwrap())
            .unwrap()
            .ufrag
    );
    viewer.client.accept_answer(sdp).await.expect("applied");
    assert!(
        viewer
            .decode_frames(30, Duration::from_secs(10))
            .await
            .len()
            >= 30
    );
    let (_, s) = http(server.addr, "GET", "/api/sessions", None).await;
    assert_eq!(s["count"], 1, "{s}");

    for (path, body, want) in [
        (
            format!("/api/sessions/{id}/ice-restart"),
            "{}".to_string(),
            400,
        ),
        (
            format!("/api/sessions/{id}/ice-restart"),
            "{\"sdp\": \"v=0\"}".to_string(),
            400,
        ),
        (
            "/api/sessions/99999/ice-restart".to_string(),
            body.clone(),
            404,
        ),
    ] {
        let (status, v) = http(server.addr, "POST", &path, Some(&body)).await;
        assert_eq!(status, want, "{path} {body}: {v}");
        assert_eq!(v["status"], "error", "{v}");
    }
    // Still playing after the bad requests.
    assert!(viewer.decode_frames(10, Duration::from_secs(5)).await.len() >= 10);
    server.stop().await;
}
