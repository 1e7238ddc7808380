//! HTTPS: the page, the JSON API and WHEP over TLS (rustls with the `ring` crypto
//! provider) on the `--listen` address, with a certificate from PEM files
//! (`--tls-cert`, `--tls-key`) or one made at start (`--tls-self-signed`).
//!
//! The TCP listener hands accepted connections to [`TlsListener`], which runs each TLS
//! handshake in its own task (a slow or silent client holds up no one) and gives
//! `axum::serve` the finished streams, so serving, connect info and graceful shutdown
//! are the same as over plain HTTP.

use crate::config::{Config, TlsSource};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's TLS setup, ready to serve.
#[derive(Clone)]
pub struct Tls {
    pub server_config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), as browsers show it: `AB:CD:...`.
    pub fingerprint: String,
    /// The names and addresses a self-signed certificate was made for (empty for
    /// certificates from files).
    pub self_signed_for: Vec<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("fingerprint", &self.fingerprint)
            .field("self_signed_for", &self.self_signed_for)
            .finish_non_exhaustive()
    }
}

/// The crypto provider of every TLS config here: `ring` (chosen explicitly, not the
/// process default, so nothing depends on which provider another crate enabled).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS setup `config` asks for: `None` for plain HTTP (the default), or an error
/// that says which option is wrong.
pub fn from_config(config: &Config) -> Result<Option<Tls>, String> {
    let Some(source) = config.tls_source()? else {
        return Ok(None);
    };
    let (chain, key, self_signed_for) = match source {
        TlsSource::Files { cert, key } => {
            let (chain, key) = load_pem(&cert, &key)?;
            (chain, key, Vec::new())
        }
        TlsSource::SelfSigned => {
            let names = self_signed_names(config);
            let (cert, key) = self_signed(&names)?;
            (vec![cert], key, names)
        }
    };
    let fingerprint = fingerprint(&chain[0]);
    let server_config = server_config(chain, key)?;
    Ok(Some(Tls {
        server_config,
        fingerprint,
        self_signed_for,
    }))
}

/// A server config for HTTP/1.1 over TLS 1.2 or 1.3 with this certificate chain and key.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS certificate and key do not go together: {e}"))?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// Reads a certificate chain (leaf first) and a private key (PKCS#8, PKCS#1 or SEC1)
/// from PEM files.
pub fn load_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let read = |what: &str, p: &Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
    };
    let cert_pem = read("--tls-cert", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {}: invalid PEM: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            cert.display()
        ));
    }
    let key_pem = read("--tls-key", key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "--tls-key {}: no PEM private key (-----BEGIN PRIVATE KEY-----) in it",
            key.display()
        ),
        e => format!("--tls-key {}: invalid PEM: {e}", key.display()),
    })?;
    Ok((chain, key))
}

/// What `--tls-self-signed` makes its certificate for: localhost, 127.0.0.1, ::1, the
/// host name, the `--listen` address unless it is a wildcard, the addresses of the
/// `--ice-interface` interfaces (of every interface when there are none and the server
/// listens on a wildcard address; Linux), and `--public-ip`.
pub fn self_signed_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let mut add = |n: String| {
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    };
    if let Some(host) = gethostname::gethostname().to_str() {
        if is_dns_name(host) {
            add(host.to_string());
        }
    }
    let listen = config.listen.ip();
    if !listen.is_unspecified() {
        add(listen.to_string());
    }
    let interfaces = if !config.ice_interfaces.is_empty() {
        config.ice_interfaces.clone()
    } else if listen.is_unspecified() {
        interface_names()
    } else {
        Vec::new()
    };
    // An interface that vanished meanwhile only costs its names.
    for name in &interfaces {
        if let Ok(ips) = lumacast_rtc::interface_addrs(std::slice::from_ref(name)) {
            for ip in ips {
                add(ip.to_string());
            }
        }
    }
    for ip in &config.public_ips {
        if let Ok(ip) = ip.trim().parse::<IpAddr>() {
            add(ip.to_string());
        }
    }
    names
}

/// The network interfaces of this machine by name (Linux: `/sys/class/net`; elsewhere
/// none).
fn interface_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// A host name a certificate can carry (letters, digits, `-` and `.`).
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A self-signed certificate (ECDSA P-256, valid from a day ago for a year) for `names`
/// (host names and IP addresses), and its key.
pub fn self_signed(
    names: &[String],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let bad = |e: rcgen::Error| format!("cannot make a self-signed certificate: {e}");
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(bad)?;
    let host = names
        .iter()
        .find(|n| n.parse::<IpAddr>().is_err() && *n != "localhost");
    let cn = match host {
        Some(h) => format!("lumacast on {h} (self-signed)"),
        None => "lumacast (self-signed)".to_string(),
    };
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(24 * 3600)).into();
    params.not_after = (now + Duration::from_secs(365 * 24 * 3600)).into();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let cert = params.self_signed(&key).map_err(bad)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key))
}

/// SHA-256 of a DER certificate as upper-case hex pairs joined by `:`.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A TCP listener that yields connections after their TLS handshake. Handshakes run
/// concurrently (at most [`HANDSHAKE_TIMEOUT`] each); failed ones (plain HTTP sent to
/// the HTTPS port, an untrusting client) are dropped with a debug log line.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    // Cancel safe (axum races it with the shutdown signal): a TCP accept is, and a
    // finished handshake stays in the set until it is taken.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Some((tls, addr)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%addr, "TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    // As axum::serve does for plain TCP: out of file descriptors and the
                    // like pass; wait a moment instead of spinning.
                    Err(e) => {
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_colon_separated_upper_hex_sha256() {
        let f = fingerprint(b"abc");
        assert_eq!(f.len(), 32 * 3 - 1);
        assert!(f.starts_with("BA:78:16:BF:"), "{f}");
    }

    #[test]
    fn self_signed_certificates_serve() {
        let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        let (cert, key) = self_signed(&names).unwrap();
        assert!(server_config(vec![cert], key).is_ok());
    }

    #[test]
    fn host_names_are_checked() {
        assert!(is_dns_name("scope-pc.lab.example"));
        assert!(!is_dns_name("bad name"));
        assert!(!is_dns_name(""));
        assert!(!is_dns_name("a..b"));
    }
}
