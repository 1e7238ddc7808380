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
    // Checked before binding: a bad TLS option stops startup with its message.
    let tls = lumacast::tls::from_config(&config).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let scheme = match &tls {
        Some(tls) => {
            let fp = &tls.fingerprint;
            if tls.self_signed_for.is_empty() {
                println!("lumacast TLS certificate SHA-256 fingerprint {fp}");
                tracing::info!(fingerprint = %fp, "TLS certificate");
            } else {
                let names = tls.self_signed_for.join(", ");
                println!(
                    "lumacast self-signed TLS certificate for {names}: SHA-256 fingerprint {fp}"
                );
                tracing::info!(fingerprint = %fp, %names, "self-signed TLS certificate");
            }
            "https"
        }
        None => "http",
    };
    println!("lumacast serving the live view on {scheme}://{addr}/");
    tracing::info!(%addr, scheme, "listening");
    lumacast::run(
        config,
        listener,
        tls.map(|t| t.server_config),
        shutdown_signal(),
    )
    .await
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
