#!/usr/bin/env bash
# Glass-to-glass latency in headless Chromium on loopback, with and without the server's
# playout-delay RTP header extension: a plain WHEP viewer (tests/browser/latency.mjs, no
# jitterBufferTarget / playoutDelayHint) watches the release server started with
# `--playout-delay 0,0` (each frame rendered as soon as decoded) and then with
# `--playout-delay off` (not negotiated), for each picture size, ROUNDS times interleaved
# (round 1: size A 0,0, size A off, size B 0,0, size B off; round 2: the same ...), a fresh
# server for every run. One line per run, then the median over rounds of the p50 and p99
# capture -> display latency (from the timestamp stripe; to rVFC's expectedDisplayTime and
# to its presentationTime), frames rendered after the warmup and Chromium's per-frame
# jitter buffer / decode / processing delays, per (size, playout delay).
#
#   scripts/bench-browser-latency.sh
#   ROUNDS=5 SECONDS_PER_RUN=30 SIZES="1280x720 4096x4096" scripts/bench-browser-latency.sh
#   SERVER_ARGS="--keyint 120" scripts/bench-browser-latency.sh
#
# Env: ROUNDS (3), SECONDS_PER_RUN (20), WARMUP (3), SIZES (space-separated WxH of the
# synthetic detector; default "1280x720 2048x2048"), DELAYS (default "0,0 off"),
# SERVER_ARGS (extra server flags; default "--ladder off": every frame at full size, the
# only size whose stripe is readable, and no ramp up the ladder inside the window).
# The synthetic detector keeps its defaults otherwise (12-bit Mono16, 30 fps, gray map,
# full window, no binning: the stripe reads back). JSON of every run in
# target/bench-browser-latency/<date>/. No root needed; needs node, python3,
# /usr/bin/chromium (CHROMIUM overrides) and `npm ci --prefix tests/browser`.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-20}"
WARMUP="${WARMUP:-3}"
SIZES="${SIZES:-1280x720 2048x2048}"
DELAYS="${DELAYS:-0,0 off}"
SERVER_ARGS="${SERVER_ARGS:---ladder off}"

for tool in node python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench-browser-latency: $tool missing" >&2; exit 1; }
done
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "bench-browser-latency: ${CHROMIUM:-/usr/bin/chromium} missing (apt-get install chromium)" >&2; exit 1; }
[ -d tests/browser/node_modules/playwright-core ] || { echo "bench-browser-latency: run npm ci --prefix tests/browser" >&2; exit 1; }

echo "==> cargo build --release --bin lumacast"
cargo build --release --quiet --bin lumacast
TMP="$(mktemp -d)"
# A private copy: a rebuild by someone else during the bench does not swap the binary.
cp target/release/lumacast "$TMP/lumacast"
SERVER="$TMP/lumacast"
"$SERVER" --help | grep -q -- '--playout-delay' || { echo "bench-browser-latency: this lumacast has no --playout-delay" >&2; exit 1; }
VIEWER="$PWD/tests/browser/latency.mjs"
OUT="target/bench-browser-latency/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
SERVER_PID=""

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
  fi
  return 0
}
cleanup() {
  set +e
  stop_server
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server WxH DELAY: the release server on 127.0.0.1 (port 0: the kernel picks a
# free one, read back from its first line), one synthetic detector of that size.
start_server() {
  local w="${1%x*}" h="${1#*x}" delay="$2"
  # shellcheck disable=SC2086
  "$SERVER" --listen 127.0.0.1:0 --ice-addr 127.0.0.1:0 \
    --detector "synthetic=synthetic,width=$w,height=$h" --playout-delay "$delay" $SERVER_ARGS \
    >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    URL="$(grep -o 'http://[0-9.:]*' "$TMP/server.log" | head -1 || true)"
    [ -n "$URL" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench-browser-latency: the server did not start:" >&2; cat "$TMP/server.log" >&2; exit 1
}

# One line from a run's JSON.
report() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
try:
    j = json.loads(open(path).read().strip().splitlines()[-1])
except Exception:
    print(f"{name:<26} no result (see {path[:-5]}.err)")
    sys.exit()
def ms(x):
    return "-" if x is None else f"{x:.1f}"
p = j["per_frame_ms_after_warmup"]
pr, rx = j["latency_presented_after_warmup"], j["capture_to_receive_after_warmup"]
print(f"{name:<26} pd {'yes' if j['playout_delay_negotiated'] else 'no ':<3}  "
      f"p50/p99 {ms(j['p50_ms'])}/{ms(j['p99_ms'])} ms (presented {ms(pr['p50_ms'])}/{ms(pr['p99_ms'])}, "
      f"received {ms(rx['p50_ms'])}/{ms(rx['p99_ms'])})  rendered {j['frames_rendered_after_warmup']} "
      f"(presented {j['presented_frames_after_warmup']}, {j['fps_rendered_after_warmup']} fps)  "
      f"jb {ms(p['jitter_buffer'])} tgt {ms(p['jitter_buffer_target'])} dec {ms(p['decode'])} "
      f"proc {ms(p['processing'])} ms  dropped {j['frames_dropped_after_warmup']}  "
      f"rx {j['received_kbps_after_warmup']} kb/s")
EOF
}

echo "==> $ROUNDS rounds of: $SIZES x playout delay $DELAYS; $SECONDS_PER_RUN s per run, figures after $WARMUP s; server args: $SERVER_ARGS; JSON in $OUT"
for round in $(seq "$ROUNDS"); do
  for size in $SIZES; do
    for delay in $DELAYS; do
      name="r${round}-${size}-pd${delay/,/-}"
      start_server "$size" "$delay"
      node "$VIEWER" "$URL" "$SECONDS_PER_RUN" --warmup "$WARMUP" \
        >"$OUT/$name.json" 2>"$OUT/$name.err" || true
      stop_server
      report "$name" "$OUT/$name.json"
    done
  done
done

echo "==> median over $ROUNDS rounds of: capture -> rVFC expectedDisplayTime p50/p99 (stripe), capture -> rVFC"
echo "    presentationTime p50/p99, capture -> last packet received p50; frames rendered (rVFC callbacks)"
echo "    after the warmup; per frame: jitterBufferDelay, totalDecodeTime, totalProcessingDelay; framesDropped"
python3 - "$OUT" "$SIZES" "$DELAYS" <<'EOF'
import glob, json, os, statistics, sys
out, sizes, delays = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
def f(x, d=1):
    return "-" if x is None else f"{x:.{d}f}"
print(f"{'size':<10} {'playout':<8} {'neg':<4} {'runs':>4} {'p50 ms':>8} {'p99 ms':>8} {'pres p50':>8} {'pres p99':>8} "
      f"{'rx p50':>7} {'rendered':>9} {'fps':>6} "
      f"{'jb ms':>7} {'decode':>7} {'proc':>7} {'dropped':>8}")
summary = []
for size in sizes:
    for delay in delays:
        runs = []
        for path in sorted(glob.glob(os.path.join(out, f"r*-{size}-pd{delay.replace(',', '-')}.json"))):
            try:
                runs.append(json.loads(open(path).read().strip().splitlines()[-1]))
            except Exception:
                pass
        g = lambda k: med([r[k] for r in runs])
        pf = lambda k: med([r["per_frame_ms_after_warmup"][k] for r in runs])
        sub = lambda o, k: med([r[o][k] for r in runs])
        neg = {r["playout_delay_negotiated"] for r in runs}
        row = {
            "size": size, "playout_delay": delay, "runs": len(runs),
            "negotiated": sorted(neg), "p50_ms": g("p50_ms"), "p99_ms": g("p99_ms"),
            "presented_p50_ms": sub("latency_presented_after_warmup", "p50_ms"),
            "presented_p99_ms": sub("latency_presented_after_warmup", "p99_ms"),
            "receive_p50_ms": sub("capture_to_receive_after_warmup", "p50_ms"),
            "frames_rendered": g("frames_rendered_after_warmup"), "fps": g("fps_rendered_after_warmup"),
            "jitter_buffer_ms": pf("jitter_buffer"), "decode_ms": pf("decode"), "processing_ms": pf("processing"),
            "frames_dropped": g("frames_dropped_after_warmup"),
        }
        summary.append(row)
        negs = "/".join("yes" if x else "no" for x in sorted(neg)) or "-"
        print(f"{size:<10} {delay:<8} {negs:<4} {len(runs):>4} {f(row['p50_ms']):>8} {f(row['p99_ms']):>8} "
              f"{f(row['presented_p50_ms']):>8} {f(row['presented_p99_ms']):>8} {f(row['receive_p50_ms']):>7} "
              f"{f(row['frames_rendered'], 0):>9} {f(row['fps']):>6} {f(row['jitter_buffer_ms']):>7} "
              f"{f(row['decode_ms']):>7} {f(row['processing_ms']):>7} {f(row['frames_dropped'], 0):>8}")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
EOF
echo "==> $OUT/summary.json"
