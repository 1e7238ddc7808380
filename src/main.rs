use clap::Parser;
use lumacast::Config;
use tracing_subscriber::EnvFilter;

/// `RUST_LOG` when it is not set.
const DEFAULT_LOG_FILTER: &str =
    "info,webrtc=warn,rtc=warn,rtc_ice=error,rtc_dtls=error,rtc_mdns=error,rtc::peer_connection::handler=error";

fn main() -> anyhow::Result<()> {
    lumacast::procinfo::limit_allocator_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                // webrtc-rs warns on every healthy connection (DTLS server_name, ICE checks
                // answered before pairs exist, stray STUN): errors only from those targets,
                // so a warning in the log means something. Our viewer spans say why a
                // viewer failed.
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .init();
    let config = Config::parse();
    if config.list_cameras {
        match lumacast_capture::list_cameras() {
            Ok(cams) if cams.is_empty() => println!("no camera found on this machine"),
            Ok(cams) => {
                for c in cams {
                    println!("{c:?}");
                }
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    println!("lumacast serving the live view on http://{addr}/");
    tracing::info!(%addr, "listening");
    lumacast::run(config, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
