//! Publishing over WHIP (RFC 9725): lumacast POSTs its offer to a WHIP endpoint, follows
//! `201 Created` + `Location`, sends the bearer token, retries when the endpoint fails,
//! answers the endpoint's PLI with a keyframe, and DELETEs its resource when the target
//! is removed. The endpoint here is a small axum server in the test whose peer is a real
//! webrtc-rs receiver (`ViewerClient::answering`) that decodes what arrives.
//! Also the `/api/publish` errors.

mod common;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use common::{http, now_us, TestServer, Viewer};
use lumacast_encode::Decoder;
use lumacast_rtc::{ClientOptions, ViewerClient};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the test WHIP endpoint saw and does.
#[derive(Clone)]
struct Endpoint {
    /// POSTs answered 500 before the endpoint starts accepting.
    fail_first: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
    /// (path, Authorization) of every request.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    deleted: Arc<Mutex<Vec<String>>>,
    clients: mpsc::Sender<ViewerClient>,
}

async fn whip_post(
    State(ep): State<Endpoint>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let n = ep.posts.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    ep.seen
        .lock()
        .unwrap()
        .push((format!("POST /whip/{room}"), auth.clone()));
    if auth != "Bearer s3cret" {
        return (StatusCode::UNAUTHORIZED, "no token").into_response();
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/sdp") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/sdp please").into_response();
    }
    if ep.fail_first.load(Ordering::SeqCst) > n {
        return (StatusCode::INTERNAL_SERVER_ERROR, "endpoint warming up").into_response();
    }
    let opts = ClientOptions {
        nack: true,
        rtx: true,
        transport_cc: true,
        ..Default::default()
    };
    let (client, answer) = match ViewerClient::answering(&body, opts).await {
        Ok(x) => x,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let _ = ep.clients.send(client).await;
    (
        StatusCode::CREATED,
        [
            ("content-type", "application/sdp".to_string()),
            // relative, as RFC 9725 allows
            ("location", format!("resource/{n}")),
        ],
        answer,
    )
        .into_response()
}

async fn whip_delete(State(ep): State<Endpoint>, Path(id): Path<String>) -> StatusCode {
    ep.deleted.lock().unwrap().push(id);
    StatusCode::OK
}

/// Starts the endpoint; returns its address, its record and where its peers arrive.
async fn endpoint(fail_first: usize) -> (SocketAddr, Endpoint, mpsc::Receiver<ViewerClient>) {
    let (tx, rx) = mpsc::channel(8);
    let ep = Endpoint {
        fail_first: Arc::new(AtomicUsize::new(fail_first)),
        posts: Arc::default(),
        seen: Arc::default(),
        deleted: Arc::default(),
        clients: tx,
    };
    let app = axum::Router::new()
        .route("/whip/{room}", post(whip_post))
        .route("/whip/resource/{id}", delete(whip_delete))
        .with_state(ep.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, ep, rx)
}

fn receiver(client: ViewerClient) -> Viewer {
    Viewer {
        client,
        decoder: Decoder::new().expect("decoder"),
        posted_at: Instant::now(),
        connected_at: None,
        answer: serde_json::Value::Null,
    }
}

#[tokio::test]
async fn whip_publishing_retries_sends_the_token_answers_pli_and_deletes_its_resource() {
    let (addr, ep, mut peers) = endpoint(2).await;
    let url = format!("http://{addr}/whip/room1");
    let server = TestServer::start_with("127.0.0.1:0", &[], |c| {
        c.publish = vec![url];
        c.publish_token = Some("s3cret".into());
    })
    .await;
    // Two refusals, then a session: the backoff (250 ms, 500 ms) retries without help.
    let client = tokio::time::timeout(Duration::from_secs(10), peers.recv())
        .await
        .expect("the endpoint got an offer it accepted")
        .unwrap();
    assert_eq!(ep.posts.load(Ordering::SeqCst), 3);
    assert!(ep
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|(_, a)| a == "Bearer s3cret"));
    let mut viewer = receiver(client);
    let seen = viewer.decode_frames(30, Duration::from_secs(10)).await;
    assert!(seen.len() >= 30, "decoded {} frames over WHIP", seen.len());
    let stripes: Vec<_> = seen.iter().filter_map(|s| s.stripe).collect();
    assert_eq!(stripes.len(), seen.len());
    assert!(stripes.windows(2).all(|w| w[1].seq > w[0].seq));
    assert!(now_us().saturating_sub(stripes.last().unwrap().t_us) < 2_000_000);

    let (_, list) = http(server.addr, "GET", "/api/publish", None).await;
    let t = &list["targets"][0];
    assert_eq!(t["protocol"], "whip", "{list}");
    assert_eq!(t["state"], "publishing", "{list}");
    assert_eq!(t["attempts"], 3, "{list}");
    assert_eq!(t["sessions"], 1, "{list}");
    assert_eq!(
        t["resource"],
        format!("http://{addr}/whip/resource/2"),
        "{list}"
    );
    assert!(
        t["last_error"].as_str().unwrap().contains("500"),
        "the refusals are reported: {list}"
    );

    // The endpoint's PLI → a keyframe, counted.
    let before = t["keyframe_requests"].as_u64().unwrap();
    viewer.client.send_pli().await.expect("PLI sent");
    let key = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match viewer.client.next_event(Duration::from_secs(5)).await {
                Some(lumacast_rtc::ClientEvent::Frame(f)) if f.keyframe => return f,
                Some(_) => continue,
                None => panic!("no frame"),
            }
        }
    })
    .await
    .expect("a keyframe after our PLI");
    assert!(key.keyframe);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, list) = http(server.addr, "GET", "/api/publish", None).await;
        if list["targets"][0]["keyframe_requests"].as_u64().unwrap() > before {
            break;
        }
        assert!(Instant::now() < deadline, "PLI not counted: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Removing the target deletes the WHIP resource.
    let id = t["id"].as_u64().unwrap();
    let (status, body) = http(server.addr, "DELETE", &format!("/api/publish/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(*ep.deleted.lock().unwrap(), vec!["2".to_string()]);
    let (_, list) = http(server.addr, "GET", "/api/publish", None).await;
    assert_eq!(list["targets"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn publish_targets_are_added_at_runtime_and_bad_ones_get_clear_errors() {
    let (addr, ep, mut peers) = endpoint(0).await;
    let server = TestServer::start(&[]).await;
    let mut viewer = Viewer::join(&server, None, &["42e01f"]).await;
    for (body, status, needle) in [
        ("{\"url\": \"ftp://x/y\"}", 400, "scheme"),
        ("{\"url\": \"janus+http://h/janus\"}", 400, "no room"),
        ("{\"url\": 5}", 400, "must be a string"),
        ("{}", 400, "\"url\" is required"),
        ("[1]", 400, "JSON object"),
        ("not json", 400, ""),
        (
            "{\"url\": \"http://127.0.0.1:9/whip\", \"detector\": \"nope\"}",
            404,
            "nope",
        ),
    ] {
        let (s, v) = http(server.addr, "POST", "/api/publish", Some(body)).await;
        assert_eq!(s, status, "{body} → {v}");
        assert_eq!(v["status"], "error", "{body} → {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body} → {v}"
        );
    }
    let (s, v) = http(server.addr, "DELETE", "/api/publish/999", None).await;
    assert_eq!(s, 404, "{v}");
    // None of that disturbed the viewer, and nothing was added.
    assert!(viewer.decode_frames(20, Duration::from_secs(5)).await.len() >= 20);
    let (_, list) = http(server.addr, "GET", "/api/publish", None).await;
    assert_eq!(list["targets"], json!([]));

    // A good one starts at once (with a token of its own).
    let body = json!({"url": format!("http://{addr}/whip/live"), "token": "s3cret"}).to_string();
    let (s, v) = http(server.addr, "POST", "/api/publish", Some(&body)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["target"]["detector"], "synthetic", "{v}");
    let client = tokio::time::timeout(Duration::from_secs(10), peers.recv())
        .await
        .expect("published")
        .unwrap();
    let mut r = receiver(client);
    assert!(r.decode_frames(10, Duration::from_secs(10)).await.len() >= 10);
    assert_eq!(ep.seen.lock().unwrap()[0].0, "POST /whip/live");
    server.stop().await;
    // The server's shutdown deleted the resource.
    assert_eq!(*ep.deleted.lock().unwrap(), vec!["0".to_string()]);
}
