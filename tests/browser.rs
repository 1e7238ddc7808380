//! The live-view page in a real browser: Debian's Chromium, driven by playwright-core,
//! opens the page served by the binary, which starts the stream by itself; the
//! `<video>` must play at 1280 wide with decoded frames rising.
//!
//! Needs `chromium` and `npm ci --prefix tests/browser` (the README's test command,
//! `scripts/test.sh`, installs both).

mod common;

use common::TestServer;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_live_view_page() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/live_view.mjs");
    assert!(
        std::path::Path::new(&format!(
            "{root}/tests/browser/node_modules/playwright-core"
        ))
        .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (scripts/test.sh does)"
    );
    let server = TestServer::start(&[]).await;
    let url = format!("http://{}/", server.addr);
    let shot = format!("{root}/target/browser-live-view.png");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args([&script, &url, "1280", &shot])
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "browser check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("PASS"));
    server.stop().await;
}
