//! HTTPS: the real binary serves the page, the JSON API and WHEP over TLS with a
//! certificate from PEM files (`--tls-cert`, `--tls-key`) or one it makes
//! (`--tls-self-signed`); a client that trusts that certificate (as a root, or pinned by
//! the SHA-256 fingerprint the server prints) gets the page, JSON, and a WebRTC answer
//! whose video decodes. Plain HTTP to the TLS port fails; bad TLS options stop startup
//! with a message.

mod common;

use common::{spawn_binary_https, Viewer};
use lumacast_encode::Decoder;
use lumacast_rtc::ViewerClient;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A fresh directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lumacast-https-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A certificate for 127.0.0.1 and localhost, written as `cert.pem` and `key.pem` in
/// `dir`; returns the certificate's PEM.
fn write_cert(dir: &std::path::Path) -> String {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
            .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), signing_key.serialize_pem()).unwrap();
    cert.pem()
}

/// A client that trusts only the certificate in `root_pem`.
fn client_trusting(root_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .https_only(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Accepts exactly the server certificate with this SHA-256 fingerprint (what a user
/// does by comparing the fingerprint the server printed with the browser's), and checks
/// the handshake signatures as usual.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if lumacast::tls::fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client that accepts only the certificate with `fingerprint`.
fn client_pinning(fingerprint: &str) -> reqwest::Client {
    let provider = lumacast::tls::provider();
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: fingerprint.to_string(),
            provider,
        }))
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Decodes at least `n` pictures within 15 s.
async fn plays(client: ViewerClient, posted_at: Instant, n: usize) {
    let mut viewer = Viewer {
        client,
        decoder: Decoder::new().unwrap(),
        posted_at,
        connected_at: None,
        answer: Value::Null,
    };
    let seen = viewer.decode_frames(n, Duration::from_secs(15)).await;
    assert!(seen.len() >= n, "decoded only {} pictures", seen.len());
    assert_eq!((seen[0].width, seen[0].height), (640, 480));
    viewer.client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_json_api_and_webrtc_offer_over_https_with_a_certificate_from_files() {
    let dir = scratch("files");
    let root = write_cert(&dir);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (mut child, addr, printed) = spawn_binary_https(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--detector",
        "cam=synthetic,width=640,height=480",
    ])
    .await;
    assert!(
        printed.iter().any(|l| l.contains("SHA-256 fingerprint")),
        "{printed:?}"
    );
    let https = client_trusting(&root);
    let base = format!("https://{addr}");

    let page = https.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<video"), "{html}");

    let detectors: Value = https
        .get(format!("{base}/api/detectors"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detectors["detectors"][0]["name"], "cam", "{detectors}");

    // The JSON API's offer, as the page and ImSwitch send it.
    let client = ViewerClient::new(&["42e01f"]).await.unwrap();
    let body =
        serde_json::json!({"sdp": client.offer_sdp(), "type": "offer", "detectorName": "cam"});
    let posted_at = Instant::now();
    let answer = https
        .post(format!("{base}/LiveViewController/webrtc_offer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["type"], "answer", "{answer}");
    client
        .accept_answer(answer["sdp"].as_str().unwrap().to_string())
        .await
        .unwrap();
    plays(client, posted_at, 10).await;

    // Plain HTTP to the TLS port gets no answer, and a client that does not trust the
    // certificate is refused.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = plain
        .get(format!("http://{addr}/api/detectors"))
        .send()
        .await;
    assert!(err.is_err(), "plain HTTP was answered: {err:?}");
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let untrusting = client_trusting(&other.cert.pem());
    assert!(untrusting.get(format!("{base}/")).send().await.is_err());

    // Graceful shutdown is the same over TLS: a clean exit within 2 s of SIGTERM.
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .expect("the server exits within 2 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificate_is_pinned_by_its_printed_fingerprint_and_whep_plays() {
    let (_child, addr, printed) = spawn_binary_https(&[
        "--tls-self-signed",
        "--detector",
        "cam=synthetic,width=640,height=480",
    ])
    .await;
    // "lumacast self-signed TLS certificate for localhost, 127.0.0.1, ::1, HOST: SHA-256 fingerprint AB:..."
    let line = printed
        .iter()
        .find(|l| l.contains("self-signed TLS certificate for"))
        .unwrap_or_else(|| panic!("no certificate line in {printed:?}"));
    assert!(line.contains("localhost, 127.0.0.1, ::1"), "{line}");
    let fingerprint = line
        .rsplit("SHA-256 fingerprint ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(fingerprint.len(), 95, "{line}");
    let base = format!("https://{addr}");

    let wrong = client_pinning(&"00:".repeat(32)[..95]);
    assert!(
        wrong.get(format!("{base}/")).send().await.is_err(),
        "a different certificate was accepted"
    );
    let https = client_pinning(&fingerprint);
    let page = https.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let health = https
        .get(format!("{base}/api/detectors"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // WHEP over HTTPS: 201, a Location, the answer; then video.
    let client = ViewerClient::new(&["42e01f"]).await.unwrap();
    let posted_at = Instant::now();
    let answer = https
        .post(format!("{base}/whep/cam"))
        .header("Content-Type", "application/sdp")
        .body(client.offer_sdp().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let location = answer
        .headers()
        .get("location")
        .expect("a WHEP Location")
        .to_str()
        .unwrap()
        .to_string();
    let sdp = answer.text().await.unwrap();
    client.accept_answer(sdp).await.unwrap();
    plays(client, posted_at, 10).await;
    let url = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let gone = https.delete(url).send().await.unwrap();
    assert!(gone.status().is_success(), "{}", gone.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_options_stop_startup_with_a_message() {
    let dir = scratch("bad");
    write_cert(&dir);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
    let junk = dir.join("junk.pem");
    let junk = junk.to_str().unwrap();
    // A key of another certificate.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("other-key.pem"), other.signing_key.serialize_pem()).unwrap();
    let other_key = dir.join("other-key.pem");
    let other_key = other_key.to_str().unwrap();
    let missing = dir.join("missing.pem");
    let missing = missing.to_str().unwrap();

    // Arguments, environment, what stderr must say.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--tls-cert", cert],
            vec![],
            "--tls-cert needs --tls-key",
        ),
        (vec!["--tls-key", key], vec![], "--tls-key needs --tls-cert"),
        (
            vec!["--tls-self-signed"],
            vec![("LUMACAST_TLS_CERT", cert), ("LUMACAST_TLS_KEY", key)],
            "not both",
        ),
        (
            vec![],
            vec![("LUMACAST_TLS_CERT", cert)],
            "--tls-cert needs --tls-key",
        ),
        (
            vec!["--tls-cert", missing, "--tls-key", key],
            vec![],
            "cannot read --tls-cert",
        ),
        (
            vec!["--tls-cert", junk, "--tls-key", key],
            vec![],
            "no PEM certificate",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", junk],
            vec![],
            "no PEM private key",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", other_key],
            vec![],
            "do not go together",
        ),
    ];
    for (args, env, message) in cases {
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_lumacast"))
                .args(["--listen", "127.0.0.1:0", "--ice-addr", "127.0.0.1:0"])
                .args(&args)
                .envs(env.iter().copied())
                .env_remove("RUST_BACKTRACE")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{args:?} {env:?}: still running after 20 s"))
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} started:\n{stdout}");
        assert!(
            stderr.contains(message),
            "{args:?} {env:?}: no \"{message}\" in\n{stderr}"
        );
        assert!(!stdout.contains("serving"), "{args:?} {env:?}: {stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
