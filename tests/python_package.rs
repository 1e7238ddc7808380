//! The Python package in `python/` (`import lumacast`) against the real server, run by
//! Debian's `/usr/bin/python3` with numpy (scripts/test.sh installs python3-numpy).
//!
//! `python/tests/check_pusher.py` does the checks from the Python side (known frames
//! pushed on one connection and read back through `/values`, bad frames refused with a
//! clear message, the server's JSON message in the exception, one reconnect after a
//! dropped connection, start/stop through `lumacast.Server`); these tests run it and
//! check again from the server's side.

mod common;

use common::TestServer;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";
const PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/tests/check_pusher.py");

/// The value `check_pusher.py`'s last frame has at (x, y) (its `mono16(29)`).
fn expected_value(x: u64, y: u64) -> u64 {
    (x * 7 + y * 13 + 29 * 101) % 4096
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> (Output, String) {
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} finishes within 180 s"))
        .unwrap_or_else(|e| panic!("cannot run {what} (apt-get install python3-numpy): {e}"));
    let log = format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, log)
}

/// Runs the check script with `python` against a fresh server; returns its summary.
async fn check_against_server(python: &Path, env_path: Option<&str>, cwd: &Path) -> Value {
    let server = TestServer::start(&["ext=push,width=64,height=48,bits=12"]).await;
    let url = format!("http://{}", server.addr);
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(CHECK).args([&url, "ext"]).current_dir(cwd);
    cmd.env_remove("PYTHONPATH");
    if let Some(p) = env_path {
        cmd.env("PYTHONPATH", p);
    }
    let (out, log) = run(cmd, "check_pusher.py").await;
    assert!(out.status.success(), "{log}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON summary ({e}): {log}"));

    // From the Python side: 30 frames on one connection, one more after the drop.
    assert_eq!(summary["frames_received"], 30, "{summary}");
    assert_eq!(summary["connections_opened"], 2, "{summary}");
    assert_eq!(summary["frames_pushed"], 34, "{summary}");
    let message = summary["server_message"].as_str().unwrap_or_default();
    assert!(message.contains("below the 16x16 minimum"), "{summary}");

    // From the server's side: the frames arrived and the newest one is the script's
    // last, pixel for pixel.
    // Every frame the server received was taken by the capture thread or replaced by a
    // newer one in its one-frame mailbox (a pusher faster than the capture thread).
    assert_eq!(summary["last_frames_received"], 34, "{summary}");
    let replaced = summary["last_frames_replaced"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, stats) = server.get("/api/stats").await;
        let d = &stats["detectors"][0];
        assert_eq!(d["running"], true, "{d}");
        let captured = d["frames_captured"].as_u64().unwrap_or(0);
        if captured + replaced == 34 {
            break;
        }
        assert!(
            captured + replaced < 34 && std::time::Instant::now() < deadline,
            "{replaced} frames replaced, {d}\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (x, y) in [(0, 0), (5, 9), (63, 47), (31, 20)] {
        let (status, v) = server
            .get(&format!("/api/detectors/ext/values?x={x}&y={y}"))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["seq"], 5000, "{v}");
        assert_eq!(v["frame"]["pixel_format"], "mono16", "{v}");
        assert_eq!(v["value"], expected_value(x, y), "({x}, {y}): {v}");
    }
    server.stop().await;
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_package_pushes_known_frames_over_one_connection() {
    let summary = check_against_server(
        Path::new(PYTHON),
        Some(PACKAGE),
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
    .await;
    let module = summary["module"].as_str().unwrap_or_default();
    assert!(
        module.starts_with(PACKAGE),
        "imported from the repository: {summary}"
    );
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lumacast-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let skip = name == "__pycache__" || name == "build" || {
            let n = name.to_string_lossy();
            n.ends_with(".egg-info")
        };
        if skip {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// `pip install` of the package into a virtual environment (no network: no
/// dependencies fetched, the system's setuptools builds it), then the same checks with
/// the environment's python from outside the repository. Needs Debian's python3-pip,
/// python3-setuptools and python3-venv (scripts/test.sh installs them); without them the
/// test fails and says what to install, never a silent pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_package_installs_with_pip_into_a_virtual_environment() {
    let probe = std::process::Command::new(PYTHON)
        .args(["-c", "import setuptools, pip, venv, numpy"])
        .output();
    assert!(
        probe.map(|o| o.status.success()).unwrap_or(false),
        "{PYTHON} lacks pip, setuptools, venv or numpy: apt-get install python3-pip \
         python3-setuptools python3-venv python3-numpy (scripts/test.sh does)"
    );
    let dir = scratch_dir("pip");
    // Build from a copy: setuptools writes build/ and *.egg-info beside the sources.
    let source = dir.join("src");
    copy_tree(Path::new(PACKAGE), &source);
    let venv = dir.join("venv");
    let mut cmd = tokio::process::Command::new(PYTHON);
    // System site packages for numpy (installed by apt, not fetched).
    cmd.args(["-m", "venv", "--system-site-packages", "--without-pip"])
        .arg(&venv);
    let (out, log) = run(cmd, "python3 -m venv").await;
    assert!(out.status.success(), "{log}");
    let python = venv.join("bin/python");
    let mut cmd = tokio::process::Command::new(&python);
    cmd.args(["-m", "pip", "install", "--no-deps", "--no-build-isolation"])
        .args(["--no-index", "--disable-pip-version-check", "--quiet"])
        .arg(&source)
        .current_dir(&dir)
        .env_remove("PYTHONPATH");
    let (out, log) = run(cmd, "pip install").await;
    assert!(out.status.success(), "{log}");

    let summary = check_against_server(&python, None, &dir).await;
    let module = summary["module"].as_str().unwrap_or_default();
    assert!(
        module.starts_with(venv.to_str().unwrap()),
        "imported from the virtual environment: {summary}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
