//! Publishing into a Janus VideoRoom through Janus's HTTP API (Janus 1.x has no WHIP):
//! create a session, attach `janus.plugin.videoroom`, `join` the room as a publisher,
//! `publish` with our offer (the answer comes back as an event), then long-poll the
//! session's events (a hang-up or a lost Janus ends the session at once) and send a
//! keepalive every 25 s (Janus drops sessions idle for 60 s). `destroy` on stop.

use super::target::{JanusRoom, REQUEST_TIMEOUT};
use super::PublishError;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

const PLUGIN: &str = "janus.plugin.videoroom";
/// Janus answers a long poll after 30 s without events; a bit more than that.
const POLL_TIMEOUT: Duration = Duration::from_secs(40);
const KEEPALIVE: Duration = Duration::from_secs(25);
/// How long `join` and `publish` may take to be answered with their event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events waiting to be looked at, at most (the rest are dropped: we only need to know
/// about hang-ups, which end the session anyway).
const EVENT_QUEUE: usize = 64;

/// A Janus session with our publisher handle in a room.
pub struct JanusSession {
    client: reqwest::Client,
    base: String,
    session: u64,
    handle: u64,
    api_secret: Option<String>,
    /// Our publisher id in the room (Janus's `id` in `joined`).
    pub publisher_id: u64,
    events: mpsc::Receiver<Value>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for JanusSession {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn transaction() -> String {
    format!("lc{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// `{"janus":"error","error":{"code":N,"reason":"…"}}` → an error.
fn janus_error(v: &Value) -> Option<PublishError> {
    (v["janus"] == "error").then(|| PublishError::Janus {
        code: v["error"]["code"].as_i64().unwrap_or(0),
        reason: v["error"]["reason"].as_str().unwrap_or("?").to_string(),
    })
}

/// A VideoRoom error inside a plugin event (`error_code`, `error`).
fn plugin_error(v: &Value) -> Option<PublishError> {
    let data = &v["plugindata"]["data"];
    data.get("error_code").map(|code| PublishError::Janus {
        code: code.as_i64().unwrap_or(0),
        reason: data["error"].as_str().unwrap_or("?").to_string(),
    })
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    mut body: Value,
    api_secret: &Option<String>,
) -> Result<Value, PublishError> {
    if let Some(s) = api_secret {
        body["apisecret"] = json!(s);
    }
    let resp = client
        .post(url)
        .json(&body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| PublishError::http("Janus API", e))?;
    if !resp.status().is_success() {
        return Err(PublishError::Refused {
            status: resp.status().as_u16(),
            body: super::short_body(resp).await,
        });
    }
    let body = super::read_bounded(resp, super::MAX_ANSWER).await?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| PublishError::Protocol(format!("Janus API answer: {e}")))?;
    match janus_error(&v) {
        Some(e) => Err(e),
        None => Ok(v),
    }
}

impl JanusSession {
    /// Creates the session, joins `room` as a publisher named `display`, publishes
    /// `offer_sdp`; returns the session and Janus's answer.
    pub async fn open(
        client: &reqwest::Client,
        base: &str,
        room: &JanusRoom,
        display: &str,
        offer_sdp: &str,
    ) -> Result<(JanusSession, String), PublishError> {
        let mut s = Self::create(client, base, room.api_secret.clone()).await?;
        match s.join_and_publish(room, display, offer_sdp).await {
            Ok(answer) => Ok((s, answer)),
            Err(e) => {
                s.close().await;
                Err(e)
            }
        }
    }

    fn session_url(&self) -> String {
        format!("{}/{}", self.base, self.session)
    }

    async fn join_and_publish(
        &mut self,
        room: &JanusRoom,
        display: &str,
        offer_sdp: &str,
    ) -> Result<String, PublishError> {
        self.attach().await?;
        let mut join = json!({
            "request": "join",
            "ptype": "publisher",
            "room": room.room,
            "display": display,
        });
        if let Some(pin) = &room.pin {
            join["pin"] = json!(pin);
        }
        let joined = self.message(join, None).await?;
        if joined["plugindata"]["data"]["videoroom"] != "joined" {
            return Err(PublishError::Protocol(format!(
                "Janus join: unexpected {joined}"
            )));
        }
        self.publisher_id = joined["plugindata"]["data"]["id"].as_u64().unwrap_or(0);
        let published = self
            .message(
                json!({"request": "publish", "display": display}),
                Some(json!({"type": "offer", "sdp": offer_sdp})),
            )
            .await?;
        let answer = published["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| {
                PublishError::Protocol(format!("Janus publish: no answer in {published}"))
            })?
            .to_string();
        // Our offer carries all our candidates: tell Janus there are no more.
        let _ = post(
            &self.client,
            &self.handle_url(),
            json!({"janus": "trickle", "transaction": transaction(), "candidate": {"completed": true}}),
            &self.api_secret,
        )
        .await;
        info!(
            session = self.session,
            publisher = self.publisher_id,
            "published into the Janus room"
        );
        Ok(answer)
    }

    fn handle_url(&self) -> String {
        format!("{}/{}/{}", self.base, self.session, self.handle)
    }

    /// Sends a VideoRoom request and waits for its event (same transaction).
    async fn message(&mut self, body: Value, jsep: Option<Value>) -> Result<Value, PublishError> {
        let t = transaction();
        let mut msg = json!({"janus": "message", "transaction": t, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let ack = post(&self.client, &self.handle_url(), msg, &self.api_secret).await?;
        // A synchronous answer comes back at once; otherwise an ack, then the event.
        if ack["janus"] == "success" {
            return match plugin_error(&ack) {
                Some(e) => Err(e),
                None => Ok(ack),
            };
        }
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| {
                    PublishError::Protocol(format!(
                        "Janus did not answer {body} within {EVENT_TIMEOUT:?}",
                        body = msg_kind(&ack)
                    ))
                })?
                .ok_or_else(|| PublishError::Protocol("Janus's event stream ended".into()))?;
            if let Some(e) = janus_error(&ev) {
                return Err(e);
            }
            if ev["transaction"] == t.as_str() && ev["janus"] == "event" {
                return match plugin_error(&ev) {
                    Some(e) => Err(e),
                    None => Ok(ev),
                };
            }
            if let Some(end) = ending(&ev, self.publisher_id) {
                return Err(end);
            }
            debug!(event = %ev["janus"], "Janus event while waiting");
        }
    }

    /// Resolves when Janus ends the session (hang-up, room gone, Janus gone).
    pub async fn ended(&mut self) -> PublishError {
        loop {
            let Some(ev) = self.events.recv().await else {
                return PublishError::Protocol("Janus's event stream ended".into());
            };
            if let Some(e) = janus_error(&ev) {
                return e;
            }
            if let Some(e) = ending(&ev, self.publisher_id) {
                return e;
            }
            match ev["janus"].as_str() {
                Some("webrtcup") => debug!("Janus: PeerConnection up"),
                Some("media") => debug!(receiving = %ev["receiving"], "Janus: media"),
                Some("slowlink") => {
                    info!(uplink = %ev["uplink"], lost = %ev["lost"], "Janus reports a slow link")
                }
                _ => debug!(event = %ev, "Janus event"),
            }
        }
    }

    /// Leaves the room and destroys the session (bounded); failures are only logged.
    pub async fn close(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if self.handle != 0 {
            let _ = post(
                &self.client,
                &self.handle_url(),
                json!({"janus": "message", "transaction": transaction(), "body": {"request": "leave"}}),
                &self.api_secret,
            )
            .await;
        }
        match post(
            &self.client,
            &self.session_url(),
            json!({"janus": "destroy", "transaction": transaction()}),
            &self.api_secret,
        )
        .await
        {
            Ok(_) => debug!(session = self.session, "Janus session destroyed"),
            Err(e) => debug!(error = %e, "destroying the Janus session"),
        }
    }
}

fn msg_kind(v: &Value) -> String {
    v["janus"].as_str().unwrap_or("a request").to_string()
}

/// Whether an event ends our publishing: a hang-up, our handle detached, the room
/// destroyed, or we were kicked or unpublished.
fn ending(ev: &Value, publisher_id: u64) -> Option<PublishError> {
    match ev["janus"].as_str() {
        Some("hangup") => {
            return Some(PublishError::Ended(format!(
                "Janus hung up: {}",
                ev["reason"].as_str().unwrap_or("no reason given")
            )))
        }
        Some("detached") => return Some(PublishError::Ended("Janus detached our handle".into())),
        Some("lumacast-poll-failed") => {
            return Some(PublishError::Ended(format!(
                "lost Janus: {}",
                ev["reason"].as_str().unwrap_or("?")
            )))
        }
        _ => {}
    }
    let data = &ev["plugindata"]["data"];
    if data["videoroom"] == "destroyed" {
        return Some(PublishError::Ended("the Janus room was destroyed".into()));
    }
    if publisher_id != 0 {
        for key in ["kicked", "unpublished", "leaving"] {
            if data[key].as_u64() == Some(publisher_id) {
                return Some(PublishError::Ended(format!("Janus: we were {key}")));
            }
        }
    }
    None
}

/// Long-polls the session's events into `tx`; on failure sends a
/// `lumacast-poll-failed` event and stops.
async fn poll_events(
    client: reqwest::Client,
    url: String,
    api_secret: Option<String>,
    tx: mpsc::Sender<Value>,
) {
    let mut url = format!("{url}?maxev=10");
    if let Some(s) = &api_secret {
        url.push_str("&apisecret=");
        url.push_str(&urlencode(s));
    }
    loop {
        let got = async {
            let resp = client
                .get(&url)
                .timeout(POLL_TIMEOUT)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("long poll answered {}", resp.status()));
            }
            let body = super::read_bounded(resp, super::MAX_ANSWER)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
        }
        .await;
        let events = match got {
            Ok(Value::Array(a)) => a,
            Ok(v) => vec![v],
            Err(e) => {
                warn!(error = %e, "Janus long poll failed");
                let _ = tx
                    .send(json!({"janus": "lumacast-poll-failed", "reason": e}))
                    .await;
                return;
            }
        };
        for ev in events {
            if ev["janus"] == "keepalive" {
                continue;
            }
            let fatal = janus_error(&ev).is_some();
            if tx.try_send(ev).is_err() {
                debug!("Janus event dropped: the queue is full");
            }
            if fatal {
                // No such session (Janus restarted): nothing more will come.
                return;
            }
        }
    }
}

async fn keepalive(client: reqwest::Client, url: String, api_secret: Option<String>) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = post(
            &client,
            &url,
            json!({"janus": "keepalive", "transaction": transaction()}),
            &api_secret,
        )
        .await
        {
            debug!(error = %e, "Janus keepalive failed");
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_that_end_publishing() {
        assert!(ending(&json!({"janus": "hangup", "reason": "DTLS alert"}), 7).is_some());
        assert!(ending(&json!({"janus": "webrtcup"}), 7).is_none());
        let kicked =
            json!({"janus": "event", "plugindata": {"data": {"videoroom": "event", "kicked": 7}}});
        assert!(ending(&kicked, 7).is_some());
        let other_left =
            json!({"janus": "event", "plugindata": {"data": {"videoroom": "event", "leaving": 8}}});
        assert!(ending(&other_left, 7).is_none());
        let destroyed = json!({"janus": "event", "plugindata": {"data": {"videoroom": "destroyed", "room": 1}}});
        assert!(ending(&destroyed, 7).is_some());
    }

    #[test]
    fn janus_errors_are_read() {
        let e = janus_error(
            &json!({"janus": "error", "error": {"code": 458, "reason": "No such session 1"}}),
        )
        .unwrap();
        assert!(e.to_string().contains("458"), "{e}");
        let e = plugin_error(&json!({"plugindata": {"data": {"videoroom": "event", "error_code": 426, "error": "No such room (1)"}}}))
            .unwrap();
        assert!(e.to_string().contains("No such room"), "{e}");
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
    }
}

// ---- Subscribing: a viewer of a room's publisher through Janus ----

/// Which publisher of a room a [`JanusSubscription`] receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JanusFeed {
    /// The publisher with this id.
    Id(u64),
    /// The (first) publisher with this display name.
    Display(String),
    /// The room's first publisher.
    First,
}

/// A VideoRoom subscription through Janus's HTTP API, the signalling only: `join`
/// creates a session, attaches `janus.plugin.videoroom`, joins `room` as a subscriber to
/// one feed (Janus 1.x multistream, `streams: [{feed}]`) and returns with Janus's offer
/// ([`JanusSubscription::offer_sdp`]); the caller answers it with its own peer (e.g.
/// `lumacast_rtc::ViewerClient::answering`) and hands the answer to
/// [`JanusSubscription::start`]. The session's events are long-polled and a keepalive goes
/// out every 25 s (Janus drops sessions idle for 60 s) until [`JanusSubscription::close`]
/// (`leave`, then `destroy`) or drop.
pub struct JanusSubscription {
    session: JanusSession,
    /// The publisher subscribed to.
    pub feed: u64,
    /// Janus's offer.
    pub offer_sdp: String,
    /// The `streams` of Janus's `attached` event (feed, mid, codec, ...).
    pub streams: Value,
}

impl JanusSubscription {
    /// Subscribes to `feed` in `room.room` (with `room.pin` and `room.api_secret` when
    /// set; `room.display` is not used: name the publisher with [`JanusFeed::Display`]).
    /// A feed given by display name, or the first one, is looked up with
    /// `listparticipants` (publishers whose PeerConnection is up, or remote publishers),
    /// waiting up to `wait` for one to appear. Returns once Janus's offer is here.
    pub async fn join(
        client: &reqwest::Client,
        base: &str,
        room: &JanusRoom,
        feed: &JanusFeed,
        wait: Duration,
    ) -> Result<JanusSubscription, PublishError> {
        let mut session = JanusSession::create(client, base, room.api_secret.clone()).await?;
        match Self::subscribe(&mut session, room, feed, wait).await {
            Ok((feed, offer_sdp, streams)) => Ok(JanusSubscription {
                session,
                feed,
                offer_sdp,
                streams,
            }),
            Err(e) => {
                session.close().await;
                Err(e)
            }
        }
    }

    async fn subscribe(
        s: &mut JanusSession,
        room: &JanusRoom,
        feed: &JanusFeed,
        wait: Duration,
    ) -> Result<(u64, String, Value), PublishError> {
        s.attach().await?;
        let feed = match feed {
            JanusFeed::Id(id) => *id,
            JanusFeed::Display(_) | JanusFeed::First => {
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    let list = s.publishers(room).await?;
                    let found = list.iter().find(|(_, d)| match feed {
                        JanusFeed::Display(name) => d == name,
                        _ => true,
                    });
                    if let Some((id, _)) = found {
                        break *id;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(PublishError::Protocol(format!(
                            "no publisher {feed:?} in Janus room {} within {wait:?} (there are {list:?})",
                            room.room
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let mut join = json!({
            "request": "join",
            "ptype": "subscriber",
            "room": room.room,
            "streams": [{"feed": feed}],
        });
        if let Some(pin) = &room.pin {
            join["pin"] = json!(pin);
        }
        let joined = s.message(join, None).await?;
        let offer = joined["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| {
                PublishError::Protocol(format!("Janus subscriber join: no offer in {joined}"))
            })?
            .to_string();
        Ok((feed, offer, joined["plugindata"]["data"]["streams"].clone()))
    }

    /// Sends `start` with our answer, waits for Janus's `started`, then tells Janus our
    /// candidates are complete (the answer carries them all; without it Janus keeps
    /// waiting for more before it gives up on a failed ICE).
    pub async fn start(&mut self, answer_sdp: &str) -> Result<(), PublishError> {
        let s = &mut self.session;
        let started = s
            .message(
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer_sdp})),
            )
            .await?;
        if started["plugindata"]["data"]["started"] != "ok" {
            return Err(PublishError::Protocol(format!(
                "Janus start: unexpected {started}"
            )));
        }
        post(
            &s.client,
            &s.handle_url(),
            json!({"janus": "trickle", "transaction": transaction(), "candidate": {"completed": true}}),
            &s.api_secret,
        )
        .await?;
        info!(
            session = s.session,
            feed = self.feed,
            "subscribed through the Janus room"
        );
        Ok(())
    }

    /// Janus's session id (e.g. to find it in Janus's log).
    pub fn session_id(&self) -> u64 {
        self.session.session
    }

    /// The first host candidate address of Janus's offer that this machine can bind a
    /// UDP socket on: when Janus runs here, where our peer must gather (libnice does not
    /// pair a loopback candidate with its own non-loopback ones).
    pub fn local_ice_ip(&self) -> Option<std::net::IpAddr> {
        self.offer_sdp
            .lines()
            .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
            .filter(|c| c.contains(" typ host"))
            .filter_map(|c| {
                c.split_whitespace()
                    .nth(4)?
                    .parse::<std::net::IpAddr>()
                    .ok()
            })
            .find(|ip| std::net::UdpSocket::bind((*ip, 0)).is_ok())
    }

    /// Resolves when Janus ends the session (hang-up, room destroyed, Janus gone).
    pub async fn ended(&mut self) -> PublishError {
        self.session.ended().await
    }

    /// Leaves and destroys the session (bounded); failures are only logged.
    pub async fn close(self) {
        self.session.close().await
    }
}

impl JanusSession {
    /// A session with its event poller and keepalive, no handle yet.
    async fn create(
        client: &reqwest::Client,
        base: &str,
        api_secret: Option<String>,
    ) -> Result<JanusSession, PublishError> {
        let base = base.trim_end_matches('/').to_string();
        let created = post(
            client,
            &base,
            json!({"janus": "create", "transaction": transaction()}),
            &api_secret,
        )
        .await?;
        let session = created["data"]["id"].as_u64().ok_or_else(|| {
            PublishError::Protocol(format!("Janus create: no session id in {created}"))
        })?;
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let mut s = JanusSession {
            client: client.clone(),
            base,
            session,
            handle: 0,
            api_secret,
            publisher_id: 0,
            events,
            tasks: Vec::new(),
        };
        s.tasks.push(tokio::spawn(
            poll_events(client.clone(), s.session_url(), s.api_secret.clone(), tx)
                .in_current_span(),
        ));
        s.tasks.push(tokio::spawn(
            keepalive(client.clone(), s.session_url(), s.api_secret.clone()).in_current_span(),
        ));
        Ok(s)
    }

    /// Attaches the VideoRoom plugin.
    async fn attach(&mut self) -> Result<(), PublishError> {
        let attached = post(
            &self.client,
            &self.session_url(),
            json!({"janus": "attach", "plugin": PLUGIN, "transaction": transaction()}),
            &self.api_secret,
        )
        .await?;
        self.handle = attached["data"]["id"].as_u64().ok_or_else(|| {
            PublishError::Protocol(format!("Janus attach: no handle id in {attached}"))
        })?;
        Ok(())
    }

    /// The room's publishers (id, display name): participants whose PeerConnection is up,
    /// and remote publishers.
    async fn publishers(&mut self, room: &JanusRoom) -> Result<Vec<(u64, String)>, PublishError> {
        let listed = self
            .message(
                json!({"request": "listparticipants", "room": room.room}),
                None,
            )
            .await?;
        Ok(listed["plugindata"]["data"]["participants"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|p| p["publisher"] == true || p["remote"] == true)
            .filter_map(|p| {
                Some((
                    p["id"].as_u64()?,
                    p["display"].as_str().unwrap_or("").to_string(),
                ))
            })
            .collect())
    }
}
