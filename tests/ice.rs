//! ICE configuration as users of real networks need it: trickled candidates through
//! ImSwitch's endpoint, TURN credentials handed to WHEP players, public (NAT 1:1) addresses.

mod common;

use common::{http_with, real_offer, TestServer, Viewer};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_ice_candidate_takes_trickled_candidates_for_a_session() {
    let server = TestServer::start(&[]).await;
    let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
    let id = viewer.answer["viewer_id"].as_u64().unwrap();
    let path = "/LiveViewController/webrtc_ice_candidate";
    let cand = "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host";
    let (st, r) = server
        .post(
            path,
            &json!({"viewer_id": id, "candidate": cand}).to_string(),
        )
        .await;
    assert_eq!((st, r["added"].as_u64()), (200, Some(1)), "{r}");
    // the browser's RTCIceCandidate JSON, and the end-of-candidates marker
    let obj = json!({"viewer_id": id, "candidate": {"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0}});
    let (st, r) = server.post(path, &obj.to_string()).await;
    assert_eq!((st, r["added"].as_u64()), (200, Some(1)), "{r}");
    let (st, r) = server
        .post(path, &json!({"viewer_id": id, "candidate": ""}).to_string())
        .await;
    assert_eq!((st, r["added"].as_u64()), (200, Some(0)), "{r}");
    for (body, status) in [
        (json!({"candidate": cand}), 400),
        (json!({"viewer_id": 999_999, "candidate": cand}), 404),
        (
            json!({"viewer_id": id, "candidate": "candidate:broken"}),
            400,
        ),
        (json!({"viewer_id": id, "candidate": 5}), 400),
    ] {
        let (st, e) = server.post(path, &body.to_string()).await;
        assert_eq!(st, status, "{body}: {e}");
        assert_eq!(e["status"], "error");
    }
    assert!(viewer.decode_frames(3, Duration::from_secs(10)).await.len() >= 3);
    viewer.client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_players_get_turn_servers_with_their_credentials() {
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| {
        c.ice_servers = vec![
            "stun:stun.example.org:3478".into(),
            "turn:turn.example.org:3478?transport=udp".into(),
        ];
        c.ice_username = Some("lab".into());
        c.ice_credential = Some("pa55".into());
    })
    .await;
    let (st, h, _) = http_with(server.addr, "OPTIONS", "/whep/synthetic", &[], None).await;
    assert_eq!(st, 204);
    let links: Vec<&str> = h.lines().filter(|l| l.starts_with("link:")).collect();
    assert_eq!(links.len(), 2, "{h}");
    assert!(links
        .iter()
        .any(|l| l.contains("<stun:stun.example.org:3478>") && !l.contains("credential")));
    assert!(links
        .iter()
        .any(|l| l.contains("<turn:turn.example.org:3478?transport=udp>")
            && l.contains("username=\"lab\"")
            && l.contains("credential=\"pa55\"")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_ip_is_advertised_instead_of_the_host_address() {
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| {
        c.public_ips = vec!["203.0.113.7".into()];
    })
    .await;
    let body = json!({"sdp": real_offer().await, "type": "offer"}).to_string();
    let (st, a) = server.post("/LiveViewController/webrtc_offer", &body).await;
    assert_eq!(st, 200, "{a}");
    let sdp = a["sdp"].as_str().unwrap();
    let candidates: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    let public: Vec<&&str> = candidates
        .iter()
        .filter(|c| c.contains(" 203.0.113.7 "))
        .collect();
    let local: Vec<&&str> = candidates
        .iter()
        .filter(|c| c.contains(" 127.0.0.1 "))
        .collect();
    assert!(
        !public.is_empty() && public.len() == local.len(),
        "{candidates:?}"
    );
    // same port as the local socket: the NAT maps public:port to it
    for (p, l) in public.iter().zip(&local) {
        assert_eq!(p.split_whitespace().nth(5), l.split_whitespace().nth(5));
    }
    // a viewer on this machine still connects through the local candidate
    let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
    assert!(viewer.decode_frames(3, Duration::from_secs(10)).await.len() >= 3);
    viewer.client.close().await;
    server.stop().await;
}
