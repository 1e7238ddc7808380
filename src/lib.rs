//! lumacast: live detector frames to web browsers over WebRTC.
//!
//! The data path, once: capture thread → bounded latest-wins queue → encoder thread
//! (convert, encode, packetize once) → frame bus → one task per viewer → network.
//! See `docs/ARCHITECTURE.md`.

pub mod config;
pub mod detector;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod params;
pub mod pipeline;
pub mod procinfo;
pub mod publish;
pub mod tls;

pub use config::Config;
pub use http::router;

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What every handler shares.
pub struct App {
    pub detectors: detector::Detectors,
    pub rtc: lumacast_rtc::RtcConfig,
    /// Renders `/metrics`; `None` if another metrics recorder owns the process.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Offers per client IP and second.
    pub offers: limits::OfferLimiter,
    /// Most viewers of all detectors together.
    pub max_viewers_total: usize,
    /// Bearer token / JWT requirements (none by default).
    pub auth: http::AuthConfig,
    /// Origins allowed by CORS (`*` = any).
    pub cors_origins: Vec<String>,
    /// Turns true when the server starts its graceful shutdown: responses that never end
    /// by themselves (MJPEG) end on it, so the shutdown does not wait for their readers.
    pub shutting_down: tokio::sync::watch::Sender<bool>,
    /// Where detectors are published to (WHIP, Janus), with their supervisors.
    pub publish: publish::Publishers,
}

pub type AppState = Arc<App>;

impl App {
    /// Offers per second and client the server accepts.
    pub fn offers_rate(&self) -> f64 {
        self.offers.rate()
    }

    /// Builds the shared state. With `--udp-port` it binds the single-port socket, so it
    /// must run inside the tokio runtime then.
    pub fn new(config: &Config) -> Result<AppState, String> {
        let mut rtc = config.rtc();
        rtc.udp_addrs = config.ice_udp_addrs()?;
        if let Some(port) = config.udp_port {
            rtc.mux = Some(bind_mux(&rtc.udp_addrs, port)?);
        }
        if let (Some(port), true) = (config.ice_tcp_port, config.ice_tcp) {
            rtc.tcp_mux = Some(bind_tcp_mux(&rtc.udp_addrs, port)?);
        }
        let publish = publish::Publishers::new(config.publish_targets()?);
        let detectors = detector::Detectors::new(config.detector_specs()?);
        for t in publish.configured() {
            detectors
                .resolve(t.detector.as_deref())
                .map_err(|e| format!("--publish {}: {e}", t.shown()))?;
        }
        Ok(Arc::new(App {
            publish,
            detectors,
            rtc,
            metrics: metrics::install(),
            offers: limits::OfferLimiter::new(config.max_offers_per_sec),
            max_viewers_total: config.max_viewers_total,
            auth: http::AuthConfig {
                token: config.auth_token.clone().filter(|t| !t.is_empty()),
                jwt_secret: config.jwt_secret.clone().filter(|t| !t.is_empty()),
            },
            cors_origins: config.cors_origins.clone(),
            shutting_down: tokio::sync::watch::Sender::new(false),
        }))
    }
}

/// Binds the shared ICE-TCP port (`--ice-tcp-port`) on the same IP as [`bind_mux`].
fn bind_tcp_mux(udp_addrs: &[String], port: u16) -> Result<lumacast_rtc::IceTcpMux, String> {
    let ip = mux_ip(udp_addrs);
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("the shared ICE-TCP port (--ice-tcp-port) needs the tokio runtime".into());
    }
    lumacast_rtc::IceTcpMux::bind(std::net::SocketAddr::new(ip, port))
        .map_err(|e| format!("cannot bind the ICE-TCP port {ip}:{port} (--ice-tcp-port): {e}"))
}

/// The one IP all of `udp_addrs` name, or `0.0.0.0` when they name several or a wildcard.
fn mux_ip(udp_addrs: &[String]) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let ips: Vec<IpAddr> = udp_addrs
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .collect();
    match ips.split_first() {
        Some((first, rest))
            if !first.is_unspecified()
                && rest.iter().all(|ip| ip == first)
                && ips.len() == udp_addrs.len() =>
        {
            *first
        }
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// Binds the single-port socket: on the one IP all of `udp_addrs` name, or on every
/// interface (`0.0.0.0`) when they name several or a wildcard.
fn bind_mux(udp_addrs: &[String], port: u16) -> Result<lumacast_rtc::UdpMux, String> {
    let ip = mux_ip(udp_addrs);
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("single-port mode (--udp-port) needs the tokio runtime".into());
    }
    lumacast_rtc::UdpMux::bind(std::net::SocketAddr::new(ip, port))
        .map_err(|e| format!("cannot bind the single UDP port {ip}:{port} (--udp-port): {e}"))
}

/// Serves `config` on `listener` until `shutdown` resolves, then closes viewers and
/// stops detectors. With `tls` (see [`tls::from_config`]) it speaks HTTPS only.
pub async fn run(
    config: Config,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = App::new(&config).map_err(anyhow::Error::msg)?;
    match tls {
        Some(tls) => serve_tls(state, listener, tls, shutdown).await,
        None => serve(state, listener, shutdown).await,
    }
}

/// [`run`] over plain HTTP with state built by the caller (who keeps a handle on it).
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (app, housekeeping) = start(&state);
    // Connect info: the offer limit and the sessions API know each client's address.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(announced(&state, shutdown))
    .await?;
    finish(state, housekeeping).await
}

/// [`serve`] over HTTPS: every connection is a TLS connection with `tls`.
pub async fn serve_tls(
    state: AppState,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let (app, housekeeping) = start(&state);
    // `tap_io` keeps the peer address as connect info (as for plain TCP), and small API
    // answers go out at once instead of waiting for Nagle.
    let listener = tls::TlsListener::new(listener, tls).tap_io(|io| {
        let _ = io.get_ref().0.set_nodelay(true);
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(announced(&state, shutdown))
    .await?;
    finish(state, housekeeping).await
}

/// `shutdown`, and once it resolves [`App::shutting_down`] turns true.
fn announced(
    state: &AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let state = state.clone();
    async move {
        shutdown.await;
        state.shutting_down.send_replace(true);
    }
}

/// The router, and the housekeeping task that returns freed memory to the OS every
/// 10 s (see procinfo).
fn start(state: &AppState) -> (axum::Router, tokio::task::JoinHandle<()>) {
    if !lumacast_encode::build_info().assembly {
        tracing::warn!("{}", lumacast_encode::build_info().note);
    }
    let app = router(state.clone());
    state.publish.start_configured(state);
    let housekeeping = tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(procinfo::release_free_memory).await;
        }
    });
    (app, housekeeping)
}

/// After the server stopped: housekeeping ends, detectors stop.
async fn finish(state: AppState, housekeeping: tokio::task::JoinHandle<()>) -> anyhow::Result<()> {
    housekeeping.abort();
    // Publish targets close their sessions on their servers (bounded) before the
    // detectors stop.
    state.publish.stop_all().await;
    // A viewer's task closes its peer connection when closed; half a second for them.
    tokio::task::spawn_blocking(move || {
        state
            .detectors
            .stop_all(std::time::Duration::from_millis(500))
    })
    .await?;
    Ok(())
}
