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
    // Loopback plus every interface, as by default.
    let addrs = vec!["127.0.0.1:0".to_string(), "0.0.0.0:0".to_string()];
    let plain = TestServer::start_with("127.0.0.1:0", &[], |c| c.ice_addrs = addrs.clone()).await;
    let body = json!({"sdp": real_offer().await, "type": "offer"}).to_string();
    let (st, a) = plain.post("/LiveViewController/webrtc_offer", &body).await;
    assert_eq!(st, 200, "{a}");
    let host_interfaces = candidates(a["sdp"].as_str().unwrap())
        .iter()
        .filter(|c| !c.contains(" 127.0.0.1 "))
        .count();
    plain.stop().await;

    let server = TestServer::start_with("127.0.0.1:0", &[], |c| {
        c.ice_addrs = addrs.clone();
        c.public_ips = vec!["203.0.113.7".into()];
    })
    .await;
    let body = json!({"sdp": real_offer().await, "type": "offer"}).to_string();
    let (st, a) = server.post("/LiveViewController/webrtc_offer", &body).await;
    assert_eq!(st, 200, "{a}");
    let sdp = a["sdp"].as_str().unwrap();
    let all = candidates(sdp);
    let public: Vec<&String> = all.iter().filter(|c| c.contains(" 203.0.113.7 ")).collect();
    let local: Vec<&String> = all.iter().filter(|c| c.contains(" 127.0.0.1 ")).collect();
    // Every interface candidate is now on the public address; only loopback stays local.
    assert_eq!(public.len(), host_interfaces, "{all:?}");
    assert_eq!(public.len() + local.len(), all.len(), "{all:?}");
    assert!(
        !local.is_empty(),
        "loopback stays for viewers on this machine: {all:?}"
    );
    // a viewer on this machine still connects through the loopback candidate
    let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
    assert!(viewer.decode_frames(3, Duration::from_secs(10)).await.len() >= 3);
    viewer.client.close().await;
    server.stop().await;
}

/// Whether an `a=candidate:` line is a UDP one (its transport field).
fn udp_candidate(line: &str) -> bool {
    line.split_whitespace()
        .nth(2)
        .is_some_and(|t| t.eq_ignore_ascii_case("udp"))
}

/// ICE over TCP: every answer carries a passive TCP host candidate beside each UDP one,
/// on its own port with a listener behind it; `--ice-tcp off` leaves TCP out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_passive_tcp_candidates_unless_ice_tcp_is_off() {
    use clap::Parser;
    let on = lumacast::Config::parse_from(["lumacast"]);
    assert!(on.ice_tcp && on.rtc().ice_tcp, "on by default");
    let off = lumacast::Config::parse_from(["lumacast", "--ice-tcp", "off"]);
    assert!(!off.rtc().ice_tcp);
    assert!(lumacast::Config::try_parse_from(["lumacast", "--ice-tcp", "maybe"]).is_err());

    // --ice-tcp-port: the passive candidate carries the one shared port.
    let port = {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| c.ice_tcp_port = Some(port)).await;
    let body = json!({"sdp": real_offer().await, "type": "offer"}).to_string();
    let (st, a) = server.post("/LiveViewController/webrtc_offer", &body).await;
    assert_eq!(st, 200, "{a}");
    let all = candidates(a["sdp"].as_str().unwrap());
    assert!(
        all.iter()
            .any(|c| c.ends_with(&format!("127.0.0.1 {port} typ host tcptype passive"))),
        "{all:?}"
    );
    server.stop().await;

    for ice_tcp in [true, false] {
        let server = TestServer::start_with("127.0.0.1:0", &[], |c| c.ice_tcp = ice_tcp).await;
        let body = json!({"sdp": real_offer().await, "type": "offer"}).to_string();
        let (st, a) = server.post("/LiveViewController/webrtc_offer", &body).await;
        assert_eq!(st, 200, "{a}");
        let all = candidates(a["sdp"].as_str().unwrap());
        let tcp: Vec<&String> = all.iter().filter(|c| !udp_candidate(c)).collect();
        if ice_tcp {
            // webrtc-rs also lists active ones (port 9, RFC 6544) and component 2 copies.
            let passive: Vec<&&String> = tcp
                .iter()
                .filter(|c| c.split_whitespace().nth(1) == Some("1"))
                .filter(|c| c.ends_with("tcptype passive"))
                .collect();
            assert_eq!(passive.len(), 1, "{all:?}");
            let f: Vec<&str> = passive[0].split_whitespace().collect();
            assert_eq!(f[2].to_ascii_lowercase(), "tcp", "{all:?}");
            assert_eq!(f[4], "127.0.0.1", "{all:?}");
            // A real listener on that port.
            let addr = format!("127.0.0.1:{}", f[5]);
            assert!(std::net::TcpStream::connect(&addr).is_ok(), "{addr}");
        } else {
            assert!(tcp.is_empty(), "{all:?}");
        }
        // A UDP viewer plays either way.
        let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
        assert!(viewer.decode_frames(3, Duration::from_secs(10)).await.len() >= 3);
        viewer.client.close().await;
        server.stop().await;
    }
}

fn candidates(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_port_mode_carries_three_viewers_through_one_udp_port() {
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| c.udp_port = Some(port)).await;
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(Viewer::join(&server, None, &["42e01f"]).await);
    }
    for v in &viewers {
        let sdp = v.answer["sdp"].as_str().unwrap();
        let ports: Vec<&str> = sdp
            .lines()
            .filter(|l| l.starts_with("a=candidate") && udp_candidate(l))
            .filter_map(|l| l.split_whitespace().nth(5))
            .collect();
        assert!(!ports.is_empty(), "{sdp}");
        assert!(
            ports.iter().all(|p| *p == port.to_string()),
            "every UDP candidate on the single port {port}: {ports:?}"
        );
        // ICE-TCP (on by default) stays beside it: passive candidates on their own ports.
        assert!(
            sdp.contains(" tcp ") && sdp.contains("tcptype passive"),
            "{sdp}"
        );
    }
    // All three play at once.
    for v in &mut viewers {
        assert!(v.decode_frames(5, Duration::from_secs(10)).await.len() >= 5);
    }
    let (_, stats) = server.get("/api/stats").await;
    let mux = &stats["udp_mux"];
    assert_eq!(mux["local_addr"], format!("127.0.0.1:{port}"), "{mux}");
    assert_eq!(mux["connections"], 3, "{mux}");
    assert_eq!(mux["routes"], 3, "one source address per viewer: {mux}");
    assert!(mux["datagrams_in"].as_u64().unwrap() > 3, "{mux}");
    assert!(mux["datagrams_out"].as_u64().unwrap() > 15, "{mux}");
    let viewers_out = stats["detectors"][0]["viewers"].as_array().unwrap();
    assert_eq!(viewers_out.len(), 3, "{stats}");
    for v in viewers_out {
        assert!(v["packets_sent"].as_u64().unwrap() > 0, "{v}");
    }
    assert_eq!(mux["dropped_full"], 0, "{mux}");
    // Ending them frees their routes.
    for v in viewers {
        let id = v.answer["viewer_id"].as_u64().unwrap();
        let (st, _, _) = http_with(
            server.addr,
            "DELETE",
            &format!("/api/sessions/{id}"),
            &[],
            None,
        )
        .await;
        assert_eq!(st, 200);
        v.client.close().await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = server.get("/api/stats").await;
        if stats["udp_mux"]["connections"] == 0 && stats["udp_mux"]["routes"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "routes left after close: {}",
            stats["udp_mux"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_single_port_or_unknown_interface_is_a_clear_startup_error() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut c = lumacast::Config::default_for_tests();
    c.udp_port = Some(taken.local_addr().unwrap().port());
    let err = lumacast::App::new(&c).err().expect("port in use");
    assert!(err.contains("--udp-port"), "{err}");

    let mut c = lumacast::Config::default_for_tests();
    c.ice_interfaces = vec!["nosuchif0".into()];
    let err = lumacast::App::new(&c).err().expect("unknown interface");
    assert!(err.contains("nosuchif0") && err.contains("lo"), "{err}");

    let mut c = lumacast::Config::default_for_tests();
    c.ice_interfaces = vec!["lo".into()];
    assert_eq!(c.ice_udp_addrs().unwrap(), vec!["127.0.0.1:0".to_string()]);
}

/// With several local addresses (loopback and the machine's interfaces) every answer
/// candidate sits on the single port, and a viewer that checks each of them from one
/// address gets one route per candidate: the traffic of each pair reaches the socket of
/// its own candidate (routing by source address alone sent the loopback pair's DTLS to
/// another interface's socket, which cost a retransmission).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_port_mode_routes_each_candidate_of_a_viewer_to_its_own_socket() {
    let port = {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| {
        c.ice_addrs = vec!["127.0.0.1:0".into(), "0.0.0.0:0".into()];
        c.udp_port = Some(port);
    })
    .await;
    let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
    let sdp = viewer.answer["sdp"].as_str().unwrap().to_string();
    // The UDP ones (ICE-TCP's passive candidates have their own ports).
    let candidates: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate") && udp_candidate(l))
        .collect();
    assert!(
        candidates
            .iter()
            .all(|c| c.split_whitespace().nth(5) == Some(&port.to_string())),
        "{candidates:?}"
    );
    assert!(viewer.decode_frames(5, Duration::from_secs(10)).await.len() >= 5);
    let (_, stats) = server.get("/api/stats").await;
    let mux = &stats["udp_mux"];
    assert_eq!(mux["local_addr"], format!("0.0.0.0:{port}"), "{mux}");
    assert_eq!(mux["connections"], 1, "{mux}");
    // The test client has one address; it checks every candidate it can reach. Each
    // (its address, our candidate address) pair is its own route.
    let routes = mux["routes"].as_u64().unwrap() as usize;
    assert!(
        routes >= 1 && routes <= candidates.len(),
        "{routes} routes for {} candidates: {mux}",
        candidates.len()
    );
    if candidates.len() > 1 {
        assert!(routes > 1, "one route per checked candidate, got {mux}");
    }
    assert_eq!(mux["dropped_unknown"], 0, "{mux}");
    viewer.client.close().await;
    server.stop().await;
}
