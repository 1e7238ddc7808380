//! A real Janus (1.x, e.g. Debian's `janus` 1.1.2) for tests: a private instance with only
//! the VideoRoom plugin and the HTTP transport, and a WebRTC subscriber that goes through
//! the VideoRoom's real subscriber flow (Janus offers, our [`ViewerClient::answering`]
//! answers).
//!
//! ICE between Janus and webrtc-rs on one machine: Janus (libnice) never gathers loopback
//! candidates. libnice lists the machine's addresses without the loopback interface, and
//! Janus's `ice_enforce_list` only filters that list: with `ice_enforce_list = "lo"` or
//! `"127.0.0.1"` nothing matches, and Janus then falls back to every address it found
//! (192.0.2.2 and two IPv6 ones on the machine this was written on). So Janus is pinned,
//! deterministically, to one non-loopback IPv4 address of the machine
//! (`ice_enforce_list = "ADDR"`, `ipv6 = false`): the first IPv4 address of a non-loopback
//! interface, or `LUMACAST_JANUS_ICE_IP` when set ([`janus_ice_ip`]).
//!
//! Our webrtc-rs peers must then gather on that same address, not on 127.0.0.1 (the
//! [`ClientOptions`] default): UDP between 127.0.0.1 and 192.0.2.2 does flow on Linux, but
//! ICE between a 127.0.0.1 candidate and Janus's 192.0.2.2 one never succeeds (libnice does
//! not pair a loopback remote candidate with a non-loopback local one; checked: "ICE failed
//! for component 1"). [`JanusSubscriber::join`] therefore replaces loopback `udp_addrs` by
//! `ADDR:0`; a publisher must do the same (`udp_addrs: vec![format!("{}:0",
//! janus.ice_ip())]`). A machine without any non-loopback IPv4 address cannot run these
//! tests: [`Janus::start`] says so.
#![allow(dead_code)]

use super::Viewer;
use lumacast::publish::janus::{JanusFeed, JanusSubscription};
use lumacast::publish::JanusRoom;
use lumacast_encode::Decoder;
use lumacast_rtc::{ClientOptions, ViewerClient};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long Janus gets to answer its HTTP API after being started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the plugins of a packaged Janus are (Debian multiarch first).
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/janus",
    "/usr/lib/aarch64-linux-gnu/janus",
    "/usr/lib/janus",
    "/usr/local/lib/janus",
    "/opt/janus/lib/janus",
];

static TRANSACTIONS: AtomicU64 = AtomicU64::new(1);

fn transaction() -> String {
    format!("t{}", TRANSACTIONS.fetch_add(1, Ordering::Relaxed))
}

/// The `janus` binary: `LUMACAST_JANUS_BIN`, or `janus` on the `PATH`.
fn janus_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("LUMACAST_JANUS_BIN") {
        return PathBuf::from(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("janus"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Janus is not installed: the Janus tests need the `janus` binary (1.x) with its \
                 VideoRoom plugin and HTTP transport. Install it with `apt-get install janus` \
                 (or point LUMACAST_JANUS_BIN at it)."
            )
        })
}

/// The folder holding Janus's `plugins/` and `transports/`: `LUMACAST_JANUS_LIB`, or the
/// first of [`LIB_DIRS`] with the VideoRoom plugin.
fn janus_lib_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LUMACAST_JANUS_LIB") {
        return PathBuf::from(dir);
    }
    LIB_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("plugins/libjanus_videoroom.so").exists())
        .unwrap_or_else(|| {
            panic!(
                "Janus's VideoRoom plugin (libjanus_videoroom.so) is in none of {LIB_DIRS:?}: \
                 `apt-get install janus`, or set LUMACAST_JANUS_LIB to the folder holding \
                 plugins/ and transports/"
            )
        })
}

/// The address Janus gathers ICE candidates on: `LUMACAST_JANUS_ICE_IP`, or the first IPv4
/// address of a non-loopback interface (see the module documentation).
pub fn janus_ice_ip() -> IpAddr {
    if let Ok(ip) = std::env::var("LUMACAST_JANUS_ICE_IP") {
        return ip
            .parse()
            .unwrap_or_else(|e| panic!("LUMACAST_JANUS_ICE_IP={ip:?}: {e}"));
    }
    // `ip -4 -o addr show`: "2: eth0    inet 192.0.2.2/24 brd ... scope global eth0 ..."
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "up"])
        .output()
        .expect("`ip` (iproute2) lists the machine's addresses");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let ifname = f.nth(1)?;
            let addr = f.skip_while(|w| *w != "inet").nth(1)?;
            let ip: Ipv4Addr = addr.split('/').next()?.parse().ok()?;
            (ifname != "lo" && !ip.is_loopback() && !ip.is_link_local()).then_some(ip)
        })
        .map(IpAddr::V4)
        .next()
        .unwrap_or_else(|| {
            panic!(
                "Janus cannot do ICE on loopback (libnice skips it) and this machine has no \
                 non-loopback IPv4 address ({text:?}); set LUMACAST_JANUS_ICE_IP to one"
            )
        })
}

/// A free TCP port on 127.0.0.1 (free when asked; Janus binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port()
}

/// The last `lines` lines of a file (for failure messages).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// POSTs a Janus API request (a transaction is added) and returns the JSON answer.
async fn post(http: &reqwest::Client, url: &str, mut body: Value) -> Result<Value, String> {
    body["transaction"] = transaction().into();
    let res = http
        .post(url)
        .json(&body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("POST {url} {body}: {e}"))?;
    res.json::<Value>()
        .await
        .map_err(|e| format!("POST {url} {body}: not JSON: {e}"))
}

/// The `error` of a Janus answer or plugin answer, if it is one.
fn janus_error(v: &Value) -> Option<String> {
    if v["janus"] == "error" {
        return Some(format!(
            "Janus error {}: {}",
            v["error"]["code"], v["error"]["reason"]
        ));
    }
    let data = &v["plugindata"]["data"];
    data.get("error")
        .map(|e| format!("VideoRoom error {}: {}", data["error_code"], e))
}

/// A Janus API session with one VideoRoom handle.
struct Handle {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/janus`
    base: String,
    session: u64,
    handle: u64,
}

impl Handle {
    async fn open(base: &str) -> Result<Handle, String> {
        let http = reqwest::Client::new();
        let v = post(&http, base, json!({"janus": "create"})).await?;
        let session = v["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("Janus did not create a session: {v}"))?;
        let v = post(
            &http,
            &format!("{base}/{session}"),
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
        )
        .await?;
        let handle = v["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("Janus did not attach the VideoRoom plugin: {v}"))?;
        Ok(Handle {
            http,
            base: base.to_string(),
            session,
            handle,
        })
    }

    fn session_url(&self) -> String {
        format!("{}/{}", self.base, self.session)
    }

    fn handle_url(&self) -> String {
        format!("{}/{}/{}", self.base, self.session, self.handle)
    }

    /// A plugin message; returns Janus's answer as it is (`success` with `plugindata` for
    /// synchronous requests, `ack` for asynchronous ones, whose outcome comes as an event).
    async fn message(&self, body: Value, jsep: Option<Value>) -> Result<Value, String> {
        let mut req = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            req["jsep"] = jsep;
        }
        let v = post(&self.http, &self.handle_url(), req).await?;
        match janus_error(&v) {
            Some(e) => Err(e),
            None => Ok(v),
        }
    }

    /// A synchronous VideoRoom request: its `plugindata.data`.
    async fn request(&self, body: Value) -> Result<Value, String> {
        let v = self.message(body.clone(), None).await?;
        if v["janus"] != "success" {
            return Err(format!("VideoRoom request {body} answered {v}"));
        }
        Ok(v["plugindata"]["data"].clone())
    }

    /// Detaches the handle and destroys the session (errors ignored: Janus may be gone).
    async fn close(&self) {
        let _ = post(&self.http, &self.handle_url(), json!({"janus": "detach"})).await;
        let _ = post(&self.http, &self.session_url(), json!({"janus": "destroy"})).await;
    }
}

/// A private Janus process. Killed (and waited for) when dropped; its temporary folder is
/// removed then, unless the test is failing (then its path and the log's tail are printed).
pub struct Janus {
    dir: PathBuf,
    port: u16,
    ice_ip: IpAddr,
    rooms: Vec<u64>,
    child: Option<Child>,
}

impl Janus {
    /// Starts a Janus with no rooms (make them with [`Janus::create_room`]).
    pub async fn start() -> Janus {
        Self::start_with_rooms(&[]).await
    }

    /// Starts a Janus whose configuration file has the H.264 rooms `rooms`: these exist
    /// from the start and again after [`Janus::restart`] (rooms made with
    /// [`Janus::create_room`] do not survive a restart).
    pub async fn start_with_rooms(rooms: &[u64]) -> Janus {
        let bin = janus_binary();
        let lib = janus_lib_dir();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "lumacast-janus-{}-{port}-{}",
            std::process::id(),
            super::now_us()
        ));
        let mut janus = Janus {
            dir,
            port,
            ice_ip: janus_ice_ip(),
            rooms: rooms.to_vec(),
            child: None,
        };
        janus.write_config(&lib);
        janus.spawn(&bin).await;
        janus
    }

    /// `http://127.0.0.1:PORT/janus`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/janus", self.port)
    }

    /// The address Janus's ICE candidates are on (see the module documentation).
    pub fn ice_ip(&self) -> IpAddr {
        self.ice_ip
    }

    /// Where a webrtc-rs peer talking to this Janus must gather (`ClientOptions::udp_addrs`
    /// or a publisher's equivalent): `ICE_IP:0` (see the module documentation).
    pub fn peer_udp_addr(&self) -> String {
        format!("{}:0", self.ice_ip)
    }

    /// Janus's log (stdout and stderr of every run).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("janus.log")
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), 40)
    }

    /// The Janus process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The RTP/ICE port range, derived from the HTTP port so that parallel instances
    /// (tests run in parallel) do not share ports: 40 ports in 20000..60000.
    fn rtp_port_range(&self) -> (u16, u16) {
        let base = 20_000 + (self.port % 1000) * 40;
        (base, base + 39)
    }

    fn write_config(&self, lib: &Path) {
        let d = &self.dir;
        for sub in ["plugins", "transports", "events", "loggers"] {
            std::fs::create_dir_all(d.join(sub)).expect("Janus temporary folder");
        }
        // Only what the tests need is loaded: Janus loads every .so of these folders.
        for (sub, so) in [
            ("plugins", "libjanus_videoroom.so"),
            ("transports", "libjanus_http.so"),
        ] {
            let target = lib.join(sub).join(so);
            assert!(target.exists(), "{} is missing", target.display());
            std::os::unix::fs::symlink(&target, d.join(sub).join(so))
                .expect("link to a Janus plugin");
        }
        let (lo, hi) = self.rtp_port_range();
        let janus = format!(
            r#"general: {{
  configs_folder = "{d}"
  plugins_folder = "{d}/plugins"
  transports_folder = "{d}/transports"
  events_folder = "{d}/events"
  loggers_folder = "{d}/loggers"
  debug_level = 3
  debug_colors = false
  session_timeout = 60
}}
media: {{
  ipv6 = false
  rtp_port_range = "{lo}-{hi}"
}}
nat: {{
  # libnice never gathers loopback: pin ICE to one non-loopback address (see janus.rs).
  ice_enforce_list = "{ip}"
  nice_debug = false
  ignore_mdns = true
}}
events: {{ broadcast = false }}
"#,
            d = d.display(),
            ip = self.ice_ip,
        );
        let http = format!(
            r#"general: {{
  json = "compact"
  base_path = "/janus"
  http = true
  port = {port}
  ip = "127.0.0.1"
  https = false
}}
admin: {{ admin_http = false }}
"#,
            port = self.port
        );
        let mut videoroom = String::from("general: { }\n");
        for room in &self.rooms {
            videoroom.push_str(&format!(
                "room-{room}: {{\n  description = \"lumacast test room {room}\"\n  \
                 publishers = 6\n  bitrate = 0\n  fir_freq = 0\n  videocodec = \"h264\"\n  \
                 audiocodec = \"opus\"\n}}\n"
            ));
        }
        for (name, text) in [
            ("janus.jcfg", janus),
            ("janus.transport.http.jcfg", http),
            ("janus.plugin.videoroom.jcfg", videoroom),
        ] {
            std::fs::write(d.join(name), text).expect("Janus configuration");
        }
    }

    async fn spawn(&mut self, bin: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("Janus log file");
        let child = Command::new(bin)
            .arg("-F")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): `apt-get install janus`",
                    bin.display()
                )
            });
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "Janus exited at start ({status}); log {}:\n{}",
                    self.log_path().display(),
                    self.log_tail()
                );
            }
            let last = match post(&http, &self.url(), json!({"janus": "create"})).await {
                Ok(v) if v["janus"] == "success" => {
                    if let Some(id) = v["data"]["id"].as_u64() {
                        let url = format!("{}/{id}", self.url());
                        let _ = post(&http, &url, json!({"janus": "destroy"})).await;
                    }
                    return;
                }
                Ok(v) => v.to_string(),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                panic!(
                    "Janus did not answer POST {} {{\"janus\":\"create\"}} within {START_TIMEOUT:?} \
                     (last: {last}); log {}:\n{}",
                    self.url(),
                    self.log_path().display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills Janus (SIGKILL, by its process id) and waits for it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops Janus and starts it again on the same HTTP port, with the same configuration
    /// (rooms of the configuration file are back; sessions, API-made rooms and
    /// publishers are gone).
    pub async fn restart(&mut self) {
        self.kill();
        let bin = janus_binary();
        self.spawn(&bin).await;
    }

    /// A VideoRoom request through a fresh session (destroyed afterwards): the
    /// `plugindata.data` of a synchronous request (`create`, `listparticipants`,
    /// `add_remote_publisher`, ...), or the error.
    pub async fn videoroom(&self, body: Value) -> Result<Value, String> {
        let h = Handle::open(&self.url()).await?;
        let r = h.request(body).await;
        h.close().await;
        r
    }

    /// Creates an H.264 room through the API (gone after a restart; see
    /// [`Janus::start_with_rooms`]).
    pub async fn create_room(&self, room: u64) {
        let v = self
            .videoroom(json!({
                "request": "create",
                "room": room,
                "description": format!("lumacast test room {room}"),
                "videocodec": "h264",
                "audiocodec": "opus",
                "publishers": 6,
                "bitrate": 0,
                "permanent": false,
            }))
            .await
            .unwrap_or_else(|e| panic!("Janus did not create room {room}: {e}"));
        assert_eq!(v["videoroom"], "created", "creating room {room}: {v}");
    }

    /// The room's publishers: (id, display name, "" when none). A publisher is a
    /// participant whose PeerConnection is up (`"publisher": true`), or a remote publisher
    /// (`"remote": true`, see `add_remote_publisher`).
    pub async fn publishers(&self, room: u64) -> Vec<(u64, String)> {
        let v = self
            .videoroom(json!({"request": "listparticipants", "room": room}))
            .await
            .unwrap_or_else(|e| panic!("listparticipants in room {room}: {e}"));
        v["participants"]
            .as_array()
            .unwrap_or_else(|| panic!("listparticipants in room {room} answered {v}"))
            .iter()
            .filter(|p| p["publisher"] == true || p["remote"] == true)
            .filter_map(|p| {
                Some((
                    p["id"].as_u64()?,
                    p["display"].as_str().unwrap_or("").to_string(),
                ))
            })
            .collect()
    }

    /// Waits (bounded) until `room` has a publisher `pred` accepts; returns its id.
    pub async fn wait_for_publisher(
        &self,
        room: u64,
        timeout: Duration,
        pred: impl Fn(u64, &str) -> bool,
    ) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let list = self.publishers(room).await;
            if let Some((id, _)) = list.iter().find(|(id, d)| pred(*id, d)) {
                return *id;
            }
            if Instant::now() > deadline {
                panic!(
                    "no matching publisher in Janus room {room} within {timeout:?} (there are \
                     {list:?}); Janus log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "Janus log ({}), last lines:\n{}",
                self.log_path().display(),
                self.log_tail()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A VideoRoom subscription through Janus's HTTP API (the library's
/// [`JanusSubscription`]), received by a [`ViewerClient`] answering Janus's offer. Its
/// session is kept alive (the library's keepalive) until [`JanusSubscriber::leave`] or drop.
pub struct JanusSubscriber {
    /// The receiving peer, wrapped with a decoder: `viewer.decode_frames(...)`,
    /// `viewer.frame_where(...)` and `viewer.client` as with a lumacast viewer.
    pub viewer: Viewer,
    /// Janus's offer and our answer, as exchanged.
    pub offer_sdp: String,
    pub answer_sdp: String,
    /// The `attached` event's `streams` (feed, mid, codec, ...).
    pub streams: Value,
    /// `None` once left.
    subscription: Option<JanusSubscription>,
    session: u64,
}

impl JanusSubscriber {
    /// Subscribes to publisher `feed` in `room` (Janus 1.x multistream `join`), answers the
    /// offer with [`ViewerClient::answering`] (with `opts`), and sends `start` with the
    /// answer; returns once Janus confirmed (`started`). Every wait is bounded (10 s).
    /// Loopback `opts.udp_addrs` (the default) are replaced by [`janus_ice_ip`]`:0`, the only
    /// address ICE with Janus works on (see the module documentation).
    /// Errors name the step and Janus's reason (e.g. "No such feed").
    pub async fn join(
        janus_url: &str,
        room: u64,
        feed: u64,
        opts: ClientOptions,
    ) -> Result<JanusSubscriber, String> {
        let mut opts = opts;
        if opts.udp_addrs.iter().all(|a| {
            a.parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback())
        }) {
            opts.udp_addrs = vec![format!("{}:0", janus_ice_ip())];
        }
        let spec = JanusRoom {
            room,
            display: None,
            pin: None,
            api_secret: None,
        };
        let mut sub = JanusSubscription::join(
            &reqwest::Client::new(),
            janus_url,
            &spec,
            &JanusFeed::Id(feed),
            Duration::ZERO,
        )
        .await
        .map_err(|e| format!("subscribing to feed {feed} in room {room}: {e}"))?;
        let offer_sdp = sub.offer_sdp.clone();
        let posted_at = Instant::now();
        let answered = match ViewerClient::answering(&offer_sdp, opts).await {
            Ok(a) => a,
            Err(e) => {
                sub.close().await;
                return Err(format!("answering Janus's offer: {e}\n{offer_sdp}"));
            }
        };
        let (client, answer_sdp) = answered;
        if let Err(e) = sub.start(&answer_sdp).await {
            client.close().await;
            sub.close().await;
            return Err(format!("start: {e}"));
        }
        let viewer = Viewer {
            client,
            decoder: Decoder::new().expect("decoder"),
            posted_at,
            connected_at: None,
            answer: Value::Null,
        };
        Ok(JanusSubscriber {
            viewer,
            offer_sdp,
            answer_sdp,
            streams: sub.streams.clone(),
            session: sub.session_id(),
            subscription: Some(sub),
        })
    }

    /// The receiving peer.
    pub fn client(&self) -> &ViewerClient {
        &self.viewer.client
    }

    /// Janus's session id (e.g. to find it in the log).
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Closes the peer, leaves and destroys the session.
    pub async fn leave(mut self) {
        self.viewer.client.close().await;
        if let Some(sub) = self.subscription.take() {
            sub.close().await;
        }
    }
}
