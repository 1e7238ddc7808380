//! The live-view page in a real browser: Debian's Chromium, driven by playwright-core,
//! opens the page served by the binary, which starts the stream by itself; the
//! `<video>` must play at 1280 wide with decoded frames rising. Then the server is
//! restarted on the same port and the page must reconnect by itself.
//!
//! Needs `chromium` and `npm ci --prefix tests/browser` (the README's test command,
//! `scripts/test.sh`, installs both).

mod common;

use common::TestServer;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_page_and_reconnects_after_a_server_restart() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/live_view.mjs");
    assert!(
        std::path::Path::new(&format!(
            "{root}/tests/browser/node_modules/playwright-core"
        ))
        .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (scripts/test.sh does)"
    );
    let server = TestServer::start(&[]).await;
    let addr = server.addr;
    let url = format!("http://{addr}/");
    let shot = format!("{root}/target/browser-live-view.png");
    let mut child = tokio::process::Command::new("node")
        .args([&script, &url, "1280", &shot, "--restart"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut transcript = String::new();
    let mut server = Some(server);
    let result = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            println!("{line}");
            transcript.push_str(&line);
            transcript.push('\n');
            if line == "RESTART_NOW" {
                server.take().unwrap().stop().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                server = Some(TestServer::start_on(&addr.to_string(), &[]).await);
                stdin.write_all(b"restarted\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
        }
    })
    .await;
    assert!(result.is_ok(), "browser check timed out:\n{transcript}");
    let status = child.wait().await.unwrap();
    assert!(status.success(), "browser check failed:\n{transcript}");
    assert!(transcript.contains("\"width\":1280"), "{transcript}");
    assert!(transcript.contains("reconnectMs"), "{transcript}");
    assert!(transcript.contains("PASS"));
    if let Some(s) = server {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_and_drives_the_controls_on_a_server_that_needs_a_token() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/live_view.mjs");
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| {
        c.auth_token = Some("s3cret".into());
    })
    .await;
    // Without the token the API refuses; the page takes it from ?token= and sends it.
    let (st, _) = server.get("/api/detectors").await;
    assert_eq!(st, 401);
    let url = format!("http://{}/?token=s3cret", server.addr);
    let shot = format!("{root}/target/browser-live-view-token.png");
    let transcript = run_check(&script, &[&url, "1280", &shot]).await;
    assert!(transcript.contains("\"controls\":\"ok\""), "{transcript}");
    assert!(transcript.contains("PASS"), "{transcript}");
    server.stop().await;
}

/// The page over HTTPS from the real binary with `--tls-self-signed`: Chromium (told to
/// accept the certificate, as a user who compared the fingerprint and clicked through
/// the warning) loads it, the page's API calls and its offer go over TLS, and the video
/// plays with the controls working, as over plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_page_over_https_with_a_self_signed_certificate() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/live_view.mjs");
    let (_child, addr, printed) = common::spawn_binary_https(&["--tls-self-signed"]).await;
    assert!(
        printed.iter().any(|l| l.contains("SHA-256 fingerprint")),
        "{printed:?}"
    );
    let url = format!("https://{addr}/");
    let shot = format!("{root}/target/browser-live-view-https.png");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("node")
            .args([&script, &url, "1280", &shot])
            .env("LUMACAST_IGNORE_CERT_ERRORS", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("live_view.mjs finishes within 90 s")
    .expect("node runs");
    let transcript =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "live_view.mjs failed:\n{transcript}");
    assert!(transcript.contains("\"width\":1280"), "{transcript}");
    assert!(transcript.contains("\"controls\":\"ok\""), "{transcript}");
    assert!(transcript.contains("PASS"), "{transcript}");
}

/// A standard WHEP player (the npm package `@eyevinn/webrtc-player`) on a page of another
/// origin plays the synthetic detector through lumacast in single-port mode: CORS
/// preflight, `201` + `Location`, the answer, media through one UDP port, and `DELETE`
/// when the player stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_whep_player_plays_through_the_single_udp_port() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/whep_player.mjs");
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| c.udp_port = Some(port)).await;
    let url = format!("http://{}", server.addr);
    let shot = format!("{root}/target/browser-whep-player.png");
    let transcript = run_check(&script, &[&url, "synthetic", &shot]).await;
    assert!(transcript.contains("\"width\":1280"), "{transcript}");
    assert!(transcript.contains("PASS"), "{transcript}");
    let (_, stats) = server.get("/api/stats").await;
    let mux = &stats["udp_mux"];
    assert_eq!(mux["local_addr"], format!("127.0.0.1:{port}"), "{mux}");
    assert!(mux["datagrams_out"].as_u64().unwrap() > 100, "{mux}");
    assert_eq!(
        mux["connections"], 0,
        "the player's DELETE freed its route: {mux}"
    );
    server.stop().await;
}

/// Runs a browser check script with node (at most 90 s) and returns its stdout and
/// stderr; fails the test if it does not exit successfully.
async fn run_check(script: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("node")
            .arg(script)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} did not finish within 90 s"))
    .expect("node runs");
    let transcript =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{transcript}");
    transcript
}

/// Units and the grid: the single view of a detector with `pixel_um` draws a scale bar of
/// a round length about a fifth of the picture wide, in the placement's scale (a ROI of
/// half the width halves the µm per screen pixel), and the readout shows µm; `?grid=1`
/// plays both detectors at once, each tile its own peer connection decoding frames, the
/// scale bar only on the tile whose pixel size is known. Screenshots:
/// `target/browser-units-scalebar.png`, `target/browser-units-grid.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_draws_the_scale_bar_and_plays_two_detectors_in_the_grid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/units_grid.mjs");
    let server = TestServer::start(&[
        "scope=synthetic,width=640,height=480,pixel_um=6.5",
        "side=synthetic,width=480,height=360",
    ])
    .await;
    let url = format!("http://{}/", server.addr);
    let shots = format!("{root}/target/browser-units");
    let transcript = run_check(&script, &[&url, "scope", "side", &shots]).await;
    assert!(transcript.contains("\"scale_bar\""), "{transcript}");
    assert!(transcript.contains("\"grid\""), "{transcript}");
    assert!(transcript.contains("PASS"), "{transcript}");
    server.stop().await;
}

/// Debian's Chromium behind a real 2 Mb/s link (a network namespace, a veth pair, a `tbf`
/// cap on server → viewer; see `tests/common/netlab.rs`) plays the server's own page for
/// 20 s: at 1280x720 and 4 Mb/s the stream does not fit, so the server must follow the
/// browser's transport-cc feedback down the ladder. Generous thresholds (tight numbers
/// are for `scripts/bench-browser-links.sh`): at least 20 frames decoded a second after a
/// 3 s warmup, no gap between shown frames of 2.5 s or more (a failed upward trial costs
/// up to about 1.5 s; before adaptation Chromium showed 8 frames in 20 s), and a second's worth of
/// frames shown smaller than 1280x720.
///
/// Needs root, iproute2 and nftables; without them it prints
/// `SKIPPED (network namespaces unavailable: ...)` and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_behind_a_2_mbps_link_keeps_playing() {
    use common::netlab::lab_or_skip;

    const SECONDS: u64 = 20;
    const MIN_FPS: f64 = 20.0;
    const MAX_GAP_MS: f64 = 1000.0;
    const FULL: &str = "1280x720";

    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/real_link.mjs");
    assert!(
        std::path::Path::new(&format!(
            "{root}/tests/browser/node_modules/playwright-core"
        ))
        .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (scripts/test.sh does)"
    );
    // Lab 31: apart from tests/real_links.rs' labs, so both may run at once.
    let Some(lab) = lab_or_skip(31) else { return };
    lab.cap(2000);
    let (_server, server) = common::spawn_binary_at(
        &format!("{}:0", lab.root_ip),
        &format!("{}:0,127.0.0.1:0", lab.root_ip),
        &[],
    )
    .await;
    let url = format!("http://{}/", server.addr);
    let shot = format!("{root}/target/browser-real-link-2mbps.png");
    let (j, transcript) = real_link_in_lab(&lab, &script, &url, SECONDS, &shot).await;
    let f = |key: &str| j[key].as_f64().unwrap_or(f64::NAN);
    let summary = format!(
        "fps after warmup {:.1}, longest gap {:.0} ms at {} s, latency p50/p99 stripe {}/{} ms rtp {}/{} ms, \
         NACKs {}, PLIs {}, freezes {}, peer connections {}, received {} kbit/s, sizes {}, size changes {}, server link {}",
        f("fps_after_warmup"),
        f("max_gap_ms_after_warmup"),
        j["max_gap_at_s"],
        j["latency_stripe_after_warmup"]["p50_ms"],
        j["latency_stripe_after_warmup"]["p99_ms"],
        j["latency_rtp_after_warmup"]["p50_ms"],
        j["latency_rtp_after_warmup"]["p99_ms"],
        j["nack_count"],
        j["pli_count"],
        j["freeze_count"],
        j["peer_connections"],
        j["received_kbps_after_warmup"],
        j["sizes"],
        j["size_changes"],
        j["server_link_at_end"],
    );
    eprintln!("2 Mb/s Chromium: {summary}");
    eprintln!("{}", lab.cap_stats());
    assert!(
        f("fps_after_warmup") >= MIN_FPS,
        "fewer than {MIN_FPS} frames decoded a second after the warmup: {summary}\n{transcript}"
    );
    assert!(
        f("max_gap_ms_after_warmup") < MAX_GAP_MS,
        "the picture stood still for {MAX_GAP_MS} ms or more: {summary}\n{transcript}"
    );
    let smaller: u64 = j["sizes"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(size, _)| size.as_str() != FULL)
        .map(|(_, n)| n.as_u64().unwrap_or(0))
        .sum();
    assert!(
        smaller >= 30,
        "the server did not adapt: fewer than 30 frames shown below {FULL}: {summary}\n{transcript}"
    );
    // Chromium offers RTX: retransmissions and padding probes go on its repair stream.
    let link = &j["server_link_at_end"];
    assert_eq!(
        link["rtx"],
        serde_json::Value::Bool(true),
        "RTX was not negotiated with Chromium: {summary}"
    );
    assert!(
        link["padding_packets"].as_u64().unwrap_or(0) > 0,
        "the capped Chromium viewer was never probed with padding: {summary}"
    );
}

/// ICE over TCP (RFC 6544): headless Chromium in a network namespace whose link to the
/// server drops every UDP packet (nftables, both ways) plays the page through the
/// server's passive TCP candidate. The server runs in single-port mode and with
/// `--public-ip` set to its own lab address, so the TCP candidate is shown to survive
/// both rewrites of the answer. Asserts: the selected pair is TCP, at least 20 frames
/// decoded a second after a 3 s warmup; prints the time from the offer to the first frame.
///
/// Needs root, iproute2 and nftables; without them it prints
/// `SKIPPED (network namespaces unavailable: ...)` and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_on_a_network_that_drops_udp_plays_over_ice_tcp() {
    chromium_plays_over_ice_tcp(33, false).await;
}

/// The same with `--ice-tcp-port`: the answer's passive candidate is the one shared TCP
/// port, and the connection is routed to the viewer's own listener (lab 34).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_on_a_network_that_drops_udp_plays_through_the_shared_ice_tcp_port() {
    chromium_plays_over_ice_tcp(34, true).await;
}

async fn chromium_plays_over_ice_tcp(lab_index: u8, shared_port: bool) {
    use common::netlab::lab_or_skip;

    const SECONDS: u64 = 10;
    const MIN_FPS: f64 = 20.0;

    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/real_link.mjs");
    assert!(
        std::path::Path::new(&format!(
            "{root}/tests/browser/node_modules/playwright-core"
        ))
        .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (scripts/test.sh does)"
    );
    // Labs 33 and 34: apart from the other labs, so they may run at once.
    let Some(mut lab) = lab_or_skip(lab_index) else {
        return;
    };
    lab.drop_udp();
    let udp_port = {
        let s = std::net::UdpSocket::bind(format!("{}:0", lab.root_ip)).unwrap();
        s.local_addr().unwrap().port()
    };
    let tcp_port = {
        let s = std::net::TcpListener::bind(format!("{}:0", lab.root_ip)).unwrap();
        s.local_addr().unwrap().port()
    };
    let mut args = vec![
        "--udp-port".to_string(),
        udp_port.to_string(),
        "--public-ip".to_string(),
        lab.root_ip.to_string(),
    ];
    if shared_port {
        args.extend(["--ice-tcp-port".to_string(), tcp_port.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_server, server) = common::spawn_binary_at(
        &format!("{}:0", lab.root_ip),
        &format!("{}:0,127.0.0.1:0", lab.root_ip),
        &args,
    )
    .await;
    let url = format!("http://{}/", server.addr);
    let shot = format!("{root}/target/browser-ice-tcp-{lab_index}.png");
    let (j, transcript) = real_link_in_lab(&lab, &script, &url, SECONDS, &shot).await;
    let f = |key: &str| j[key].as_f64().unwrap_or(f64::NAN);
    let summary = format!(
        "selected pair {}, offer -> first frame {} ms, answer -> first frame {} ms, \
         fps after warmup {:.1}, longest gap {:.0} ms, latency p50/p99 stripe {}/{} ms, \
         peer connections {}, received {} kbit/s",
        j["selected_pair"],
        j["offer_to_first_frame_ms"],
        j["first_frame_ms"],
        f("fps_after_warmup"),
        f("max_gap_ms_after_warmup"),
        j["latency_stripe_after_warmup"]["p50_ms"],
        j["latency_stripe_after_warmup"]["p99_ms"],
        j["peer_connections"],
        j["received_kbps_after_warmup"],
    );
    eprintln!("ICE-TCP Chromium (shared port: {shared_port}): {summary}");
    eprintln!("{}", lab.nft_stats());
    assert_eq!(
        j["selected_pair"]["protocol"], "tcp",
        "the selected candidate pair is not TCP: {summary}\n{transcript}"
    );
    assert_eq!(
        j["selected_pair"]["remote_tcp_type"], "passive",
        "the server's candidate is not passive TCP: {summary}\n{transcript}"
    );
    if shared_port {
        assert_eq!(
            j["selected_pair"]["remote_address"],
            format!("{}:{tcp_port}", lab.root_ip),
            "not through the shared ICE-TCP port: {summary}\n{transcript}"
        );
    }
    assert!(
        f("fps_after_warmup") >= MIN_FPS,
        "fewer than {MIN_FPS} frames decoded a second after the warmup: {summary}\n{transcript}"
    );
    // The target is 2 s from the offer; a loaded test machine gets room (the figure is
    // printed above and in the report).
    assert!(
        f("offer_to_first_frame_ms") < 5000.0,
        "the first frame came more than 5 s after the offer: {summary}\n{transcript}"
    );
}

/// Runs tests/browser/real_link.mjs (headless Chromium on the page at `url`) inside the
/// lab's namespace for `seconds`; returns its JSON line and a transcript for failures.
async fn real_link_in_lab(
    lab: &common::netlab::NetLab,
    script: &str,
    url: &str,
    seconds: u64,
    shot: &str,
) -> (serde_json::Value, String) {
    use serde_json::Value;
    use std::os::unix::process::CommandExt;
    let mut cmd = lab.exec("node");
    cmd.args([script, url, &seconds.to_string(), shot, "--warmup", "3"])
        .process_group(0);
    let child = tokio::process::Command::from(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs in the namespace");
    let _group = Group(child.id().expect("the viewer's pid"));
    let out = tokio::time::timeout(Duration::from_secs(seconds + 60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("real_link.mjs did not finish within {} s", seconds + 60))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let transcript = format!(
        "{stdout}\n{stderr}\n{}\n{}",
        lab.nft_stats(),
        lab.cap_stats()
    );
    assert!(out.status.success(), "real_link.mjs failed:\n{transcript}");
    let j: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON line from real_link.mjs:\n{transcript}"));
    (j, transcript)
}

/// A viewer whose network lets through only the web server and a TURN server (coturn,
/// started here) plays: Chromium gets the TURN settings from the page
/// (`/api/ice-servers`), and its selected pair is a relay candidate over UDP (lab 35).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reachable_only_through_turn_plays_over_a_udp_relay() {
    chromium_plays_through_turn(35, "udp").await;
}

/// The same with UDP to the TURN server blocked too: the relay is reached over TCP
/// (`turn:…?transport=tcp`, lab 36).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reachable_only_through_turn_plays_over_a_tcp_relay() {
    chromium_plays_through_turn(36, "tcp").await;
}

async fn chromium_plays_through_turn(lab_index: u8, transport: &str) {
    use common::netlab::lab_or_skip;
    use common::turn::{Turn, PASSWORD, USER};

    const SECONDS: u64 = 8;
    const MIN_FPS: f64 = 20.0;
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/real_link.mjs");
    assert!(
        std::path::Path::new(&format!(
            "{root}/tests/browser/node_modules/playwright-core"
        ))
        .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let Some(mut lab) = lab_or_skip(lab_index) else {
        return;
    };
    let turn = Turn::start(lab.root_ip.into());
    let [udp_url, tcp_url] = turn.urls();
    let http_port = {
        let s = std::net::TcpListener::bind(format!("{}:0", lab.root_ip)).unwrap();
        s.local_addr().unwrap().port()
    };
    // Only HTTP and TURN get through: the media must be relayed.
    match transport {
        "udp" => lab.allow_only(&[http_port], &[turn.port]),
        _ => lab.allow_only(&[http_port, turn.port], &[]),
    }
    let servers = format!("{udp_url},{tcp_url}");
    let (_server, server) = common::spawn_binary_at(
        &format!("{}:{http_port}", lab.root_ip),
        &format!("{}:0,127.0.0.1:0", lab.root_ip),
        &[
            "--ice-server",
            &servers,
            "--ice-username",
            USER,
            "--ice-credential",
            PASSWORD,
        ],
    )
    .await;
    // The page's source of TURN settings, and WHEP's.
    let (status, ice) = common::http(server.addr, "GET", "/api/ice-servers", None).await;
    assert_eq!(status, 200, "{ice}");
    assert_eq!(ice["ice_servers"][0]["urls"][0], udp_url.as_str(), "{ice}");
    assert_eq!(ice["ice_servers"][1]["username"], USER, "{ice}");
    assert_eq!(ice["ice_servers"][1]["credential"], PASSWORD, "{ice}");
    let url = format!("http://{}/", server.addr);
    let shot = format!("{root}/target/browser-turn-{transport}.png");
    let (j, transcript) = real_link_in_lab(&lab, &script, &url, SECONDS, &shot).await;
    let transcript = format!("{transcript}\ncoturn:\n{}", turn.log_tail());
    let fps = j["fps_after_warmup"].as_f64().unwrap_or(f64::NAN);
    let summary = format!(
        "selected pair {}, offer -> first frame {} ms, fps after warmup {fps:.1}, latency p50/p99 stripe {}/{} ms",
        j["selected_pair"],
        j["offer_to_first_frame_ms"],
        j["latency_stripe_after_warmup"]["p50_ms"],
        j["latency_stripe_after_warmup"]["p99_ms"],
    );
    eprintln!("TURN ({transport}) Chromium: {summary}");
    assert_eq!(
        j["selected_pair"]["local_type"], "relay",
        "the browser's selected candidate is not a TURN relay: {summary}\n{transcript}"
    );
    assert_eq!(
        j["selected_pair"]["local_relay_protocol"], transport,
        "the relay is not reached over {transport}: {summary}\n{transcript}"
    );
    assert!(
        fps >= MIN_FPS,
        "fewer than {MIN_FPS} frames decoded a second through TURN: {summary}\n{transcript}"
    );
}

/// A viewer whose network changes under it (its address moves to another subnet, the old
/// one is gone) gets video again on the same session: the page restarts ICE
/// (`/api/sessions/{id}/ice-restart`) instead of making a new offer (lab 37).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_whose_address_changes_gets_video_again_through_an_ice_restart() {
    use common::netlab::lab_or_skip;
    use std::os::unix::process::CommandExt;
    use tokio::io::AsyncBufReadExt;

    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/ice_restart.mjs");
    assert!(
        std::path::Path::new(&format!(
            "{root}/tests/browser/node_modules/playwright-core"
        ))
        .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let Some(lab) = lab_or_skip(37) else {
        return;
    };
    let (_server, server) = common::spawn_binary_at(
        &format!("{}:0", lab.root_ip),
        &format!("{}:0,127.0.0.1:0", lab.root_ip),
        &["--ice-tcp", "off"],
    )
    .await;
    let url = format!("http://{}/", server.addr);
    let shot = format!("{root}/target/browser-ice-restart.png");
    let mut cmd = lab.exec("node");
    cmd.args([script.as_str(), &url, "12", &shot])
        .process_group(0);
    let mut child = tokio::process::Command::from(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs in the namespace");
    let _group = Group(child.id().expect("pid"));
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let playing = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.trim() == "PLAYING" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(playing, "the page did not play before the network change");
    let (_, before) = common::http(server.addr, "GET", "/api/sessions", None).await;
    let new_ip = lab.move_viewer();
    eprintln!("viewer moved to {new_ip}");
    let mut out = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            out.push_str(&l);
            out.push('\n');
        }
    })
    .await;
    assert!(read.is_ok(), "ice_restart.mjs did not finish");
    let status = child.wait().await.expect("node");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(status.success(), "ice_restart.mjs failed:\n{out}\n{stderr}");
    let j: serde_json::Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON from ice_restart.mjs:\n{out}\n{stderr}"));
    eprintln!("ICE restart after a network change: {j}");
    let (_, after) = common::http(server.addr, "GET", "/api/sessions", None).await;
    assert!(
        j["ice_restarts"]
            .as_array()
            .is_some_and(|r| !r.is_empty() && !r[0]["answered"].is_null()),
        "the page did not restart ICE: {j}"
    );
    assert_eq!(
        j["peer_connections"], 1,
        "the page made a new peer connection: {j}"
    );
    assert!(
        j["frames_after"].as_u64().unwrap_or(0) >= 60,
        "too few frames after the restart: {j}"
    );
    assert_eq!(after["count"], 1, "{after}");
    assert_eq!(
        after["sessions"][0]["id"], before["sessions"][0]["id"],
        "the same session before and after: {before} / {after}"
    );
    assert_eq!(
        after["sessions"][0]["remote_address"], before["sessions"][0]["remote_address"],
        "(the HTTP peer is recorded at the offer)"
    );
}

/// Kills a viewer's whole process group (node and the Chromium it started) however the
/// test ends: a Chromium left in a namespace would keep it alive.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}
