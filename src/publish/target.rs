//! What a publish target is: `--publish [DETECTOR=]URL`, parsed and checked at startup.

use std::time::Duration;

/// How we talk to a publish target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// WHIP (RFC 9725): `POST` the offer to the URL, `DELETE` the `Location` to stop.
    Whip,
    /// Janus's VideoRoom through Janus's HTTP API (`janus+http://…` / `janus+https://…`).
    Janus(JanusRoom),
}

/// Where in Janus we publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanusRoom {
    pub room: u64,
    /// The publisher's display name in the room (default: the detector's name).
    pub display: Option<String>,
    /// The room's PIN, when it has one.
    pub pin: Option<String>,
    /// Janus's API secret (`api_secret` in janus.jcfg), when it has one.
    pub api_secret: Option<String>,
}

/// One place to publish a detector to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// The detector published (`None`: the first configured one).
    pub detector: Option<String>,
    /// The HTTP(S) URL we talk to: the WHIP endpoint, or Janus's API base (`…/janus`).
    pub url: String,
    pub protocol: Protocol,
    /// Bearer token sent with WHIP requests.
    pub token: Option<String>,
}

/// Longest time one signalling request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most publish targets a server has at once (from the command line and the API).
pub const MAX_TARGETS: usize = 16;
/// Longest accepted publish URL.
const MAX_URL: usize = 2048;

impl TargetSpec {
    /// Parses `[DETECTOR=]URL`: `http(s)://…` is a WHIP endpoint,
    /// `janus+http(s)://HOST:PORT/janus?room=N[&display=NAME][&pin=P][&secret=S]` a Janus
    /// VideoRoom. `token` is the WHIP bearer token.
    pub fn parse(spec: &str, token: Option<&str>) -> Result<Self, String> {
        let spec = spec.trim();
        if spec.len() > MAX_URL {
            return Err(format!("a publish URL is at most {MAX_URL} characters"));
        }
        // `NAME=URL`: the part before the first '=' is a detector name when it holds no
        // URL characters (a URL's own '=' come after its scheme's ':').
        let (detector, url) = match spec.split_once('=') {
            Some((name, rest))
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') =>
            {
                (Some(name.to_string()), rest)
            }
            _ => (None, spec),
        };
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("publish target \"{url}\" is not a URL: {e}"))?;
        if parsed.host_str().is_none() {
            return Err(format!("publish target \"{url}\" has no host"));
        }
        let token = token.filter(|t| !t.is_empty()).map(str::to_string);
        match parsed.scheme() {
            "http" | "https" => Ok(TargetSpec {
                detector,
                url: url.to_string(),
                protocol: Protocol::Whip,
                token,
            }),
            "janus+http" | "janus+https" => {
                let mut room = None;
                let (mut display, mut pin, mut api_secret) = (None, None, None);
                for (k, v) in parsed.query_pairs() {
                    match k.as_ref() {
                        "room" => {
                            room = Some(v.parse::<u64>().map_err(|_| {
                                format!("publish target \"{url}\": room must be a number, got \"{v}\"")
                            })?)
                        }
                        "display" => display = Some(v.into_owned()),
                        "pin" => pin = Some(v.into_owned()),
                        "secret" => api_secret = Some(v.into_owned()),
                        other => {
                            return Err(format!(
                                "publish target \"{url}\": unknown parameter \"{other}\" (room, display, pin, secret)"
                            ))
                        }
                    }
                }
                let room = room.ok_or_else(|| {
                    format!("publish target \"{url}\" names no room (…/janus?room=1234)")
                })?;
                let mut base = parsed.clone();
                base.set_query(None);
                let base = base.as_str().replacen("janus+", "", 1);
                Ok(TargetSpec {
                    detector,
                    url: base,
                    protocol: Protocol::Janus(JanusRoom {
                        room,
                        display,
                        pin,
                        api_secret,
                    }),
                    token,
                })
            }
            other => Err(format!(
                "publish target \"{url}\": scheme \"{other}\" is neither http(s) (WHIP) nor janus+http(s)"
            )),
        }
    }

    /// The target as logs and the API show it: no query (PINs, secrets), no user info.
    pub fn shown(&self) -> String {
        let mut u = match reqwest::Url::parse(&self.url) {
            Ok(u) => u,
            Err(_) => return "(unparsable URL)".into(),
        };
        u.set_query(None);
        let _ = u.set_username("");
        let _ = u.set_password(None);
        match &self.protocol {
            Protocol::Whip => u.to_string(),
            Protocol::Janus(j) => format!("janus+{u}?room={}", j.room),
        }
    }

    /// "whip" or "janus".
    pub fn protocol_name(&self) -> &'static str {
        match self.protocol {
            Protocol::Whip => "whip",
            Protocol::Janus(_) => "janus",
        }
    }
}

/// Time between attempts after a failure: 250 ms, doubling, at most 4 s (a restarted
/// server is published to again within a few seconds, a dead one is not hammered).
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(4);
    /// A session that lasted this long resets the backoff.
    pub const HEALTHY: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The wait before the next attempt, after a session that lasted `lasted` (zero when
    /// it never connected).
    pub fn after(&mut self, lasted: Duration) -> Duration {
        if lasted >= Self::HEALTHY {
            self.next = Self::FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whip_url_with_and_without_detector() {
        let t = TargetSpec::parse("https://sfu.example/whip/abc?x=1", Some("tok")).unwrap();
        assert_eq!(t.detector, None);
        assert_eq!(t.protocol, Protocol::Whip);
        assert_eq!(t.url, "https://sfu.example/whip/abc?x=1");
        assert_eq!(t.token.as_deref(), Some("tok"));
        assert_eq!(t.shown(), "https://sfu.example/whip/abc");
        let t = TargetSpec::parse("cam-2=http://127.0.0.1:9/whip", None).unwrap();
        assert_eq!(t.detector.as_deref(), Some("cam-2"));
        assert_eq!(t.url, "http://127.0.0.1:9/whip");
    }

    #[test]
    fn janus_url() {
        let t = TargetSpec::parse(
            "janus+http://10.0.0.5:8088/janus?room=1234&display=scope&pin=9&secret=s",
            None,
        )
        .unwrap();
        assert_eq!(t.url, "http://10.0.0.5:8088/janus");
        assert_eq!(
            t.protocol,
            Protocol::Janus(JanusRoom {
                room: 1234,
                display: Some("scope".into()),
                pin: Some("9".into()),
                api_secret: Some("s".into()),
            })
        );
        assert_eq!(t.shown(), "janus+http://10.0.0.5:8088/janus?room=1234");
        assert_eq!(t.protocol_name(), "janus");
    }

    #[test]
    fn bad_targets_say_why() {
        for (spec, needle) in [
            ("ftp://x/y", "scheme"),
            ("janus+http://h:1/janus", "no room"),
            ("janus+http://h:1/janus?room=x", "room must be a number"),
            (
                "janus+http://h:1/janus?room=1&colour=red",
                "unknown parameter",
            ),
            ("not a url", "not a URL"),
        ] {
            let e = TargetSpec::parse(spec, None).unwrap_err();
            assert!(e.contains(needle), "{spec}: {e}");
        }
        assert!(TargetSpec::parse(&format!("http://h/{}", "a".repeat(3000)), None).is_err());
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_after_a_healthy_session() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..7)
            .map(|_| b.after(Duration::ZERO).as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(b.after(Backoff::HEALTHY), Duration::from_millis(250));
        assert_eq!(b.after(Duration::from_secs(1)), Duration::from_millis(500));
    }
}
