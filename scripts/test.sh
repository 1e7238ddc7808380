#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what it needs (nasm for
# openh264's assembly, Debian's Chromium for the browser test, playwright-core from npm),
# then formatting, lints, docs and every test. Run from anywhere: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nasm >/dev/null 2>&1 || need_apt+=(nasm)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# nokhwa (the `camera` feature) runs bindgen, which needs libclang.
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
# The Python push client example is run against the real endpoint (Debian's python3).
/usr/bin/python3 -c "import numpy" >/dev/null 2>&1 || need_apt+=(python3 python3-numpy)
# The Python package (python/) is pip-installed into a virtual environment by its test.
/usr/bin/python3 -c "import setuptools, pip" >/dev/null 2>&1 || need_apt+=(python3-pip python3-setuptools)
/usr/bin/python3 -c "import ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
# tests/real_links.rs shapes real links: network namespaces, veth, tc (iproute2), nftables.
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
# tests/janus.rs publishes into a real Janus (Debian's janus, 1.1.x).
command -v janus >/dev/null 2>&1 || need_apt+=(janus)
# tests/browser.rs relays a viewer through a real TURN server (Debian's coturn).
command -v turnserver >/dev/null 2>&1 || need_apt+=(coturn)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# openh264 built before nasm was installed stays slow: rebuild it once in that case.
for out in target/*/build/openh264-sys2-*/output; do
  if [ -f "$out" ] && grep -q "Failed to compile NASM" "$out"; then
    echo "==> openh264 was built without nasm: rebuilding it"
    cargo clean -p openh264-sys2
    break
  fi
done

echo "==> npm packages for the browser test"
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

# What this machine cannot prove: tests that need it pass without running their check, so
# say so here, visibly, once (and again in the closing lines).
warnings=()
grep -qw avx2 /proc/cpuinfo || warnings+=("no AVX2 on this CPU: the AVX2 kernel equality tests (crates/frame) check nothing here")
grep -qw avx512bw /proc/cpuinfo || warnings+=("no AVX-512 (avx512bw) on this CPU: the AVX-512 kernel equality tests (crates/frame) check nothing here")
probe_ns="lctestprobe$$"
if [ "$(id -u)" -ne 0 ]; then
  warnings+=("not root: the shaped-link tests (tests/real_links.rs, the 2 Mb/s Chromium test) are SKIPPED")
elif ip netns add "$probe_ns" 2>/dev/null; then
  ip netns del "$probe_ns" 2>/dev/null || true
else
  warnings+=("network namespaces not allowed here: the shaped-link tests (tests/real_links.rs, the 2 Mb/s Chromium test) are SKIPPED")
fi
if ! ip -o -4 addr show scope global 2>/dev/null | grep -q .; then
  warnings+=("no non-loopback IPv4 address: the --public-ip and single-port routing tests (tests/ice.rs) have only loopback to check")
fi
for w in "${warnings[@]}"; do echo "WARNING: $w"; done

echo "==> cargo fmt"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "==> cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Scenario tests stream 720p video in real time with real peers; on 2 cores they run
# one at a time so that none starves another.
cargo test --workspace --lib --bins --tests --examples -- --test-threads=1 2>&1 | tee -a "$log"
cargo test --workspace --doc 2>&1 | tee -a "$log"
echo "==> the camera feature (nokhwa, V4L2): builds, lints, fails clearly without a device"
cargo clippy -p lumacast-capture --all-targets --features camera -- -D warnings
cargo test -p lumacast-capture --features camera 2>&1 | tee -a "$log"

# One closing line for the whole run (pipefail above already failed on any red test).
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "summary: ${passed} passed, ${failed} failed"
for w in "${warnings[@]}"; do echo "WARNING: $w"; done
