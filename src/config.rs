//! Command line and environment configuration. Every option is documented here and in
//! `docs/CONFIGURATION.md`.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// lumacast: live detector frames to web browsers over WebRTC.
#[derive(Debug, Clone, Parser)]
#[command(name = "lumacast", version, about)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(long, env = "LUMACAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A detector to offer, as `NAME=KIND[,key=value...]`. KIND is `synthetic`,
    /// `camera`, `replay` or `push`. Keys: width, height, fps, bits (synthetic, push:
    /// 8..16), index (camera), path (replay), bitrate (bit/s), keyint (frames), ladder (`1/2/4` or `off`),
    /// pixel_um (µm per detector pixel: scale bar, lengths in µm). Repeat for several detectors; the first is
    /// the default. Default: `synthetic=synthetic`.
    #[arg(long = "detector", env = "LUMACAST_DETECTORS", value_delimiter = ';')]
    pub detectors: Vec<String>,

    /// Default H.264 bitrate in bit/s for detectors without their own (0: from the size).
    #[arg(long, env = "LUMACAST_BITRATE", default_value_t = 0)]
    pub bitrate: u32,

    /// Default frame rate of synthetic detectors.
    #[arg(long, env = "LUMACAST_FPS", default_value_t = 30.0)]
    pub fps: f64,

    /// Default rendition ladder: size divisors, best first (`1,2,4`: full, half and quarter
    /// size, each encoded once while a viewer is on it), or `off` (everyone gets the full
    /// size). A detector's `ladder=1/2/4` overrides it; the `ladder` stream parameter
    /// changes it at run time.
    #[arg(long, env = "LUMACAST_LADDER", default_value = "1,2,4")]
    pub ladder: String,

    /// Default keyframe interval in frames (0: only on request).
    #[arg(long, env = "LUMACAST_KEYINT", default_value_t = 60)]
    pub keyint: u32,

    /// Local UDP addresses for WebRTC (ICE host candidates). Include 127.0.0.1 for
    /// same-machine viewers; 0.0.0.0:0 adds every other interface.
    #[arg(
        long = "ice-addr",
        env = "LUMACAST_ICE_ADDRS",
        value_delimiter = ',',
        default_value = "127.0.0.1:0,0.0.0.0:0"
    )]
    pub ice_addrs: Vec<String>,

    /// Gather host candidates on these network interfaces (by name, e.g. `eth0`) instead of
    /// every interface; loopback stays included for viewers on this machine. Replaces the
    /// interface part of `--ice-addr`.
    #[arg(
        long = "ice-interface",
        env = "LUMACAST_ICE_INTERFACES",
        value_delimiter = ','
    )]
    pub ice_interfaces: Vec<String>,

    /// Single-port mode: carry every viewer's media (ICE, DTLS, SRTP) on this one UDP
    /// port, for firewalls and Docker (`-p PORT:PORT/udp`). Off by default (one
    /// ephemeral port per viewer).
    #[arg(long, env = "LUMACAST_UDP_PORT")]
    pub udp_port: Option<u16>,

    /// ICE over TCP (RFC 6544): `on` (the default) also offers each viewer a passive TCP
    /// host candidate, so a browser on a network that drops UDP still plays; `off` for
    /// UDP only. Each viewer's TCP listener takes its own ephemeral port on the ICE
    /// addresses (webrtc-rs binds one per peer connection; it does not go through
    /// `--udp-port`), unless `--ice-tcp-port` puts them behind one port.
    #[arg(
        long,
        env = "LUMACAST_ICE_TCP",
        default_value = "on",
        value_name = "on|off",
        action = clap::ArgAction::Set,
        value_parser = parse_on_off
    )]
    pub ice_tcp: bool,

    /// With `--ice-tcp on`: every viewer's ICE-TCP connection on this one TCP port
    /// (firewalls, Docker `-p PORT:PORT`), routed to the viewer by its ICE username.
    /// Off by default (one ephemeral TCP port per viewer).
    #[arg(long, env = "LUMACAST_ICE_TCP_PORT")]
    pub ice_tcp_port: Option<u16>,

    /// STUN/TURN server URLs (none by default: nothing outside is contacted).
    #[arg(
        long = "ice-server",
        env = "LUMACAST_ICE_SERVERS",
        value_delimiter = ','
    )]
    pub ice_servers: Vec<String>,

    /// Username for the TURN servers among `--ice-server`.
    #[arg(long, env = "LUMACAST_ICE_USERNAME")]
    pub ice_username: Option<String>,

    /// Credential (password) for the TURN servers among `--ice-server`.
    #[arg(long, env = "LUMACAST_ICE_CREDENTIAL")]
    pub ice_credential: Option<String>,

    /// Longest wait, in milliseconds, for our own ICE gathering (STUN/TURN) before the
    /// answer goes out with the candidates found so far.
    #[arg(long, env = "LUMACAST_ICE_GATHER_TIMEOUT_MS", default_value_t = 1000)]
    pub ice_gather_timeout_ms: u64,

    /// Public IP addresses to advertise instead of the host's (NAT 1:1: a cloud VM's
    /// public address, a Docker host's address), comma-separated.
    #[arg(long = "public-ip", env = "LUMACAST_PUBLIC_IPS", value_delimiter = ',')]
    pub public_ips: Vec<String>,

    /// Playout delay asked of viewers whose browser offers the playout-delay RTP header
    /// extension (Chromium does): `MIN,MAX` in milliseconds (steps of 10), or `off` to
    /// not negotiate it. `0,0` (the default) has each frame rendered as soon as it is
    /// decoded, whatever the viewer's page asks.
    #[arg(
        long,
        env = "LUMACAST_PLAYOUT_DELAY",
        default_value = "0,0",
        value_parser = parse_playout_delay
    )]
    pub playout_delay: PlayoutDelayArg,

    /// Most viewers per detector.
    #[arg(long, env = "LUMACAST_MAX_VIEWERS", default_value_t = 64)]
    pub max_viewers: usize,

    /// Most viewers of all detectors together.
    #[arg(long, env = "LUMACAST_MAX_VIEWERS_TOTAL", default_value_t = 256)]
    pub max_viewers_total: usize,

    /// Offers (webrtc_offer, WHEP) accepted per client IP address and second, with bursts
    /// of twice that; more get 429. 0 disables the limit.
    #[arg(long, env = "LUMACAST_MAX_OFFERS_PER_SEC", default_value_t = 10.0)]
    pub max_offers_per_sec: f64,

    /// Require `Authorization: Bearer TOKEN` (or `?access_token=TOKEN`) on every API,
    /// WHEP and metrics route; `/health` and the page's static files stay open.
    #[arg(long, env = "LUMACAST_AUTH_TOKEN")]
    pub auth_token: Option<String>,

    /// Also accept HS256 JSON Web Tokens signed with this secret; they must carry an
    /// `exp` (expiry, seconds since the epoch) in the future.
    #[arg(long, env = "LUMACAST_JWT_SECRET")]
    pub jwt_secret: Option<String>,

    /// Origins allowed to call the API from other web pages (CORS), comma-separated;
    /// `*` allows every origin.
    #[arg(
        long = "cors-origin",
        env = "LUMACAST_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_origins: Vec<String>,

    /// Serve the page, the JSON API and WHEP over HTTPS (TLS) with this certificate
    /// chain (PEM, leaf first) instead of plain HTTP. Needs `--tls-key`.
    #[arg(long, env = "LUMACAST_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "LUMACAST_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Serve over HTTPS with a certificate made at start for this host's names and
    /// addresses (localhost, 127.0.0.1, ::1, the host name, the listen address, the
    /// interfaces' addresses); its SHA-256 fingerprint is printed. Not with `--tls-cert`.
    #[arg(
        long,
        env = "LUMACAST_TLS_SELF_SIGNED",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub tls_self_signed: bool,

    /// Publish a detector into a media server as well (repeatable; `;` between several in
    /// the environment): `[DETECTOR=]URL`, where `http(s)://…` is a WHIP endpoint
    /// (RFC 9725) and `janus+http(s)://HOST:PORT/janus?room=N[&display=NAME][&pin=P]
    /// [&secret=API_SECRET]` a Janus VideoRoom. Without `DETECTOR=`, the first detector.
    /// The same encoded frames as the local viewers; retried with backoff when the
    /// server goes away. See docs/PUBLISHING.md.
    #[arg(
        long = "publish",
        env = "LUMACAST_PUBLISH",
        value_delimiter = ';',
        value_name = "[DETECTOR=]URL"
    )]
    pub publish: Vec<String>,

    /// Bearer token sent with WHIP requests of `--publish` targets.
    #[arg(long, env = "LUMACAST_PUBLISH_TOKEN")]
    pub publish_token: Option<String>,

    /// List the cameras of this machine and exit.
    #[arg(long)]
    pub list_cameras: bool,
}

impl Config {
    /// The configuration with every default, as `cargo run` gets it (for tests).
    pub fn default_for_tests() -> Self {
        let mut c = Config::parse_from(["lumacast"]);
        c.listen = "127.0.0.1:0".parse().expect("valid literal address");
        c.ice_addrs = vec!["127.0.0.1:0".into()];
        c
    }

    /// The local addresses ICE gathers on: `--ice-addr`, or with `--ice-interface`
    /// loopback plus the named interfaces' addresses.
    pub fn ice_udp_addrs(&self) -> Result<Vec<String>, String> {
        if self.ice_interfaces.is_empty() {
            return Ok(self.ice_addrs.clone());
        }
        let ips = lumacast_rtc::interface_addrs(&self.ice_interfaces).map_err(|e| e.to_string())?;
        let mut addrs = vec!["127.0.0.1:0".to_string()];
        for ip in ips.iter().filter(|ip| !ip.is_loopback()) {
            addrs.push(std::net::SocketAddr::new(*ip, 0).to_string());
        }
        Ok(addrs)
    }

    /// The `--publish` targets, checked.
    pub fn publish_targets(&self) -> Result<Vec<crate::publish::TargetSpec>, String> {
        if self.publish.len() > crate::publish::MAX_TARGETS {
            return Err(format!(
                "at most {} --publish targets",
                crate::publish::MAX_TARGETS
            ));
        }
        self.publish
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                crate::publish::TargetSpec::parse(s, self.publish_token.as_deref())
                    .map_err(|e| format!("--publish: {e}"))
            })
            .collect()
    }

    /// WebRTC settings (without the single-port socket, which [`crate::App::new`] binds).
    pub fn rtc(&self) -> lumacast_rtc::RtcConfig {
        lumacast_rtc::RtcConfig {
            udp_addrs: self.ice_addrs.clone(),
            ice_servers: self.ice_servers.clone(),
            ice_username: self.ice_username.clone(),
            ice_credential: self.ice_credential.clone(),
            public_ips: self.public_ips.clone(),
            max_viewers: self.max_viewers,
            gather_timeout: Duration::from_millis(self.ice_gather_timeout_ms.clamp(10, 10_000)),
            playout_delay: self.playout_delay.0,
            ice_tcp: self.ice_tcp,
            ..Default::default()
        }
    }
}

/// `on` or `off` (also `true`/`false`, `1`/`0`, `yes`/`no`).
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        other => Err(format!("expected on or off, not {other:?}")),
    }
}

/// Where the HTTPS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `--tls-cert` and `--tls-key`.
    Files { cert: PathBuf, key: PathBuf },
    /// `--tls-self-signed`.
    SelfSigned,
}

impl Config {
    /// The TLS options checked together: `None` for plain HTTP, or an error naming
    /// the combination that cannot work.
    pub fn tls_source(&self) -> Result<Option<TlsSource>, String> {
        match (&self.tls_cert, &self.tls_key, self.tls_self_signed) {
            (None, None, false) => Ok(None),
            (None, None, true) => Ok(Some(TlsSource::SelfSigned)),
            (Some(_), _, true) | (_, Some(_), true) => Err(
                "--tls-self-signed makes its own certificate: give either it or --tls-cert and --tls-key, not both"
                    .into(),
            ),
            (Some(_), None, false) => {
                Err("--tls-cert needs --tls-key (the certificate's private key, PEM)".into())
            }
            (None, Some(_), false) => {
                Err("--tls-key needs --tls-cert (the certificate chain, PEM)".into())
            }
            (Some(cert), Some(key), false) => Ok(Some(TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            })),
        }
    }
}

/// `--playout-delay`: the delay bounds, or `None` for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutDelayArg(pub Option<lumacast_rtc::PlayoutDelay>);

/// Parses `--playout-delay`: `MIN,MAX` milliseconds (multiples of 10, at most 40950,
/// MIN ≤ MAX) or `off`.
pub fn parse_playout_delay(s: &str) -> Result<PlayoutDelayArg, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(PlayoutDelayArg(None));
    }
    let (min, max) = s
        .split_once(',')
        .ok_or_else(|| format!("playout delay \"{s}\": want MIN,MAX in milliseconds, or off"))?;
    let ms = |v: &str| -> Result<u16, String> {
        let v: u16 = v.trim().parse().map_err(|_| {
            format!("playout delay \"{s}\": \"{v}\" is not a number of milliseconds")
        })?;
        if !v.is_multiple_of(10) || v > 40_950 {
            return Err(format!(
                "playout delay \"{s}\": {v} ms is not a multiple of 10 up to 40950"
            ));
        }
        Ok(v)
    };
    let (min_ms, max_ms) = (ms(min)?, ms(max)?);
    if min_ms > max_ms {
        return Err(format!("playout delay \"{s}\": MIN is above MAX"));
    }
    Ok(PlayoutDelayArg(Some(lumacast_rtc::PlayoutDelay {
        min_ms,
        max_ms,
    })))
}

/// What kind of frame source a detector is.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    Synthetic {
        width: u32,
        height: u32,
        fps: f64,
        bits: u8,
    },
    Camera {
        index: u32,
        width: u32,
        height: u32,
        fps: f64,
    },
    /// A multi-page TIFF or a folder of PNG images played in a loop.
    Replay { path: std::path::PathBuf, fps: f64 },
    /// Frames pushed by other software to `POST /api/detectors/{name}/frames`. The size
    /// and depth are nominal (for validating parameters before the first frame); frames
    /// may differ.
    Push {
        width: u32,
        height: u32,
        bits: u8,
        fps: f64,
    },
}

/// One configured detector.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSpec {
    pub name: String,
    pub kind: SourceKind,
    /// bit/s; 0 = chosen from the frame size.
    pub bitrate: u32,
    pub keyint: u32,
    /// The rendition ladder as size divisors (`[1]`: off).
    pub ladder: Vec<u32>,
    /// µm per detector pixel, when known (the `pixel_um` stream parameter starts with it).
    pub pixel_um: Option<f64>,
}

/// A ladder from the command line: `1,2,4`, `1/2/4` (inside a detector's options), `on`
/// or `off`; validated as the `ladder` stream parameter is.
pub fn parse_ladder(s: &str) -> Result<Vec<u32>, String> {
    let v = match s.trim() {
        "off" | "false" => serde_json::Value::Bool(false),
        "on" | "true" => serde_json::Value::Bool(true),
        list => serde_json::Value::Array(
            list.split([',', '/'])
                .map(|d| {
                    d.trim()
                        .parse::<u64>()
                        .map(serde_json::Value::from)
                        .map_err(|e| format!("ladder \"{s}\": {e}"))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    crate::params::ladder_from_json(&v).map_err(|e| format!("ladder \"{s}\": {}", e.message))
}

impl DetectorSpec {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SourceKind::Synthetic { .. } => "synthetic",
            SourceKind::Camera { .. } => "camera",
            SourceKind::Replay { .. } => "replay",
            SourceKind::Push { .. } => "push",
        }
    }

    /// The configured frame rate.
    pub fn nominal_fps(&self) -> f64 {
        match &self.kind {
            SourceKind::Synthetic { fps, .. }
            | SourceKind::Camera { fps, .. }
            | SourceKind::Replay { fps, .. }
            | SourceKind::Push { fps, .. } => *fps,
        }
    }

    /// The shape of this detector's frames as configured (replay files are only read
    /// when the detector starts: until then their size is unknown, reported as 0x0).
    pub fn nominal_shape(&self) -> crate::params::SourceShape {
        use lumacast_frame::PixelFormat;
        let mono = |bits: u8| {
            if bits <= 8 {
                PixelFormat::Mono8
            } else {
                PixelFormat::Mono16 { bit_depth: bits }
            }
        };
        let (width, height, format) = match &self.kind {
            SourceKind::Synthetic {
                width,
                height,
                bits,
                ..
            }
            | SourceKind::Push {
                width,
                height,
                bits,
                ..
            } => (*width, *height, mono(*bits)),
            SourceKind::Camera { width, height, .. } => (*width, *height, PixelFormat::Rgb8),
            SourceKind::Replay { .. } => (0, 0, PixelFormat::Mono16 { bit_depth: 16 }),
        };
        crate::params::SourceShape {
            width,
            height,
            format,
        }
    }

    /// Parses `NAME=KIND[,key=value...]`.
    pub fn parse(s: &str, defaults: &Config) -> Result<Self, String> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("detector \"{s}\": expected NAME=KIND[,key=value...]"))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "detector name \"{name}\" must be letters, digits, '_' or '-'"
            ));
        }
        let mut parts = rest.split(',');
        let kind = parts.next().unwrap_or("").trim();
        let mut width = None;
        let mut height = None;
        let mut fps = defaults.fps;
        let mut bits = 12u8;
        let mut index = 0u32;
        let mut bitrate = defaults.bitrate;
        let mut keyint = defaults.keyint;
        let mut ladder = parse_ladder(&defaults.ladder)?;
        let mut path = None;
        let mut pixel_um = None;
        for kv in parts {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("detector \"{name}\": \"{kv}\" is not key=value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("detector \"{name}\": {k}={v}: {e}");
            match k.trim() {
                "width" => width = Some(v.parse::<u32>().map_err(|e| bad(&e))?),
                "height" => height = Some(v.parse::<u32>().map_err(|e| bad(&e))?),
                "fps" => fps = v.parse::<f64>().map_err(|e| bad(&e))?,
                "bits" => bits = v.parse::<u8>().map_err(|e| bad(&e))?,
                "index" => index = v.parse::<u32>().map_err(|e| bad(&e))?,
                "bitrate" => bitrate = v.parse::<u32>().map_err(|e| bad(&e))?,
                "keyint" => keyint = v.parse::<u32>().map_err(|e| bad(&e))?,
                "ladder" => ladder = parse_ladder(v).map_err(|e| bad(&e))?,
                "path" => path = Some(std::path::PathBuf::from(v.trim())),
                "pixel_um" => {
                    let um = v.trim().parse::<f64>().map_err(|e| bad(&e))?;
                    pixel_um = Some(
                        crate::params::check_pixel_um("pixel_um", um)
                            .map_err(|e| bad(&e.message))?,
                    );
                }
                other => return Err(format!("detector \"{name}\": unknown key \"{other}\"")),
            }
        }
        if !(fps > 0.0 && fps <= 240.0) {
            return Err(format!("detector \"{name}\": fps must be in (0, 240]"));
        }
        let kind = match kind {
            "synthetic" => {
                if !(8..=16).contains(&bits) {
                    return Err(format!("detector \"{name}\": bits must be 8..=16"));
                }
                let (w, h) = (width.unwrap_or(1280), height.unwrap_or(720));
                if !(16..=8192).contains(&w) || !(16..=8192).contains(&h) {
                    return Err(format!(
                        "detector \"{name}\": {w}x{h} is outside 16..=8192 per side"
                    ));
                }
                SourceKind::Synthetic {
                    width: w,
                    height: h,
                    fps,
                    bits,
                }
            }
            "camera" => SourceKind::Camera {
                index,
                width: width.unwrap_or(1280),
                height: height.unwrap_or(720),
                fps,
            },
            "replay" => SourceKind::Replay {
                path: path.ok_or_else(|| {
                    format!("detector \"{name}\": replay needs path=FILE.tif or path=FOLDER")
                })?,
                fps,
            },
            "push" => {
                if !(8..=16).contains(&bits) {
                    return Err(format!("detector \"{name}\": bits must be 8..=16"));
                }
                SourceKind::Push {
                    width: width.unwrap_or(1280),
                    height: height.unwrap_or(720),
                    bits,
                    fps,
                }
            }
            other => {
                return Err(format!(
                "detector \"{name}\": unknown kind \"{other}\" (synthetic, camera, replay or push)"
            ))
            }
        };
        Ok(DetectorSpec {
            name: name.to_string(),
            kind,
            bitrate,
            keyint,
            ladder,
            pixel_um,
        })
    }
}

impl Config {
    /// The detectors to offer; the default synthetic one when none is given.
    pub fn detector_specs(&self) -> Result<Vec<DetectorSpec>, String> {
        let raw: Vec<&str> = if self.detectors.is_empty() {
            vec!["synthetic=synthetic"]
        } else {
            self.detectors.iter().map(String::as_str).collect()
        };
        let mut specs: Vec<DetectorSpec> = Vec::new();
        for s in raw {
            let spec = DetectorSpec::parse(s, self)?;
            if specs.iter().any(|d| d.name == spec.name) {
                return Err(format!("detector \"{}\" is configured twice", spec.name));
            }
            specs.push(spec);
        }
        Ok(specs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_one_synthetic_720p_12bit_30fps() {
        let c = Config::parse_from(["lumacast"]);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        let specs = c.detector_specs().unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(
            specs[0].kind,
            SourceKind::Synthetic {
                width: 1280,
                height: 720,
                fps: 30.0,
                bits: 12
            }
        );
    }

    #[test]
    fn playout_delays_from_the_command_line() {
        use lumacast_rtc::PlayoutDelay;
        let d = |min_ms, max_ms| Ok(PlayoutDelayArg(Some(PlayoutDelay { min_ms, max_ms })));
        assert_eq!(parse_playout_delay("0,0"), d(0, 0));
        assert_eq!(parse_playout_delay(" 0, 100 "), d(0, 100));
        assert_eq!(parse_playout_delay("off"), Ok(PlayoutDelayArg(None)));
        for bad in ["", "5,10", "20,10", "0", "a,b", "0,50000"] {
            assert!(parse_playout_delay(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Config::default_for_tests().rtc().playout_delay,
            Some(PlayoutDelay {
                min_ms: 0,
                max_ms: 0
            })
        );
    }

    #[test]
    fn tls_options_go_together_or_not_at_all() {
        let tls = |args: &[&str]| {
            Config::parse_from(std::iter::once("lumacast").chain(args.iter().copied())).tls_source()
        };
        assert_eq!(tls(&[]), Ok(None));
        assert_eq!(tls(&["--tls-self-signed"]), Ok(Some(TlsSource::SelfSigned)));
        assert_eq!(
            tls(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]),
            Ok(Some(TlsSource::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }))
        );
        let err = tls(&["--tls-cert", "c.pem"]).unwrap_err();
        assert!(err.contains("--tls-key"), "{err}");
        let err = tls(&["--tls-key", "k.pem"]).unwrap_err();
        assert!(err.contains("--tls-cert"), "{err}");
        let err = tls(&["--tls-cert", "c", "--tls-key", "k", "--tls-self-signed"]).unwrap_err();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn ladders_from_the_command_line() {
        assert_eq!(parse_ladder("1,2,4"), Ok(vec![1, 2, 4]));
        assert_eq!(parse_ladder("1/3"), Ok(vec![1, 3]));
        assert_eq!(parse_ladder("off"), Ok(vec![1]));
        assert_eq!(parse_ladder("on"), Ok(vec![1, 2, 4]));
        for bad in ["2,4", "1,1", "1,x", "", "1,2,4,8,16"] {
            assert!(parse_ladder(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_several_and_rejects_bad_ones() {
        let c = Config::parse_from([
            "lumacast",
            "--detector",
            "a=synthetic,width=640,height=480,fps=15,bits=16",
            "--detector",
            "cam=camera,index=1",
        ]);
        let specs = c.detector_specs().unwrap();
        assert_eq!(specs[0].name, "a");
        assert_eq!(specs[1].kind_name(), "camera");
        assert_eq!(specs[0].pixel_um, None);
        let s = DetectorSpec::parse("ext=push,pixel_um=6.5", &c).unwrap();
        assert_eq!(s.pixel_um, Some(6.5));
        for bad in [
            "x",
            "a=foo",
            "a=synthetic,bits=20",
            "a=synthetic,width=8",
            "a b=synthetic",
            "a=synthetic,zoom=2",
            "a=synthetic,pixel_um=0",
            "a=synthetic,pixel_um=-1",
            "a=synthetic,pixel_um=nan",
            "a=synthetic,pixel_um=inf",
            "a=synthetic,pixel_um=2e6",
            "a=synthetic,pixel_um=six",
        ] {
            assert!(DetectorSpec::parse(bad, &c).is_err(), "{bad}");
        }
    }
}
