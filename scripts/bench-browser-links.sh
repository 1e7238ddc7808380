#!/usr/bin/env bash
# Headless Chromium behind real shaped links: the release server in the root namespace,
# Debian's Chromium (tests/browser/real_link.mjs, playing the server's own page) in a
# network namespace behind a veth pair whose server -> viewer direction is capped (tbf)
# or lossy (nftables). One line per scenario: decoded fps, longest gap between presented
# frames, capture -> display latency p50/p99 (from the stripe at full size, and from the
# RTP clock for every frame), NACKs/PLIs, jitter buffer per frame, the sizes shown; all
# after a warmup. The browser counterpart of scripts/bench-links.sh.
#
#   sudo scripts/bench-browser-links.sh                  # every scenario, 20 s each
#   sudo scripts/bench-browser-links.sh cap2000 lift2000 # some of them
#   SECONDS_PER_RUN=30 WARMUP=5 SERVER_ARGS="--keyint 120" sudo -E scripts/bench-browser-links.sh
#
# Scenarios: cap2000 cap1000 cap500 (tbf caps in kbit/s, 20 kB burst, 100 ms queue),
# uncapped, lift2000 (2 Mb/s lifted after 10 s, 25 s run), loss2 (2 % random UDP loss,
# no cap), direct / turnudp / turntcp (a real coturn on the server's address: the server
# gets it as --ice-server; direct lets everything through, turnudp lets only HTTP and UDP to
# the TURN port through, turntcp only HTTP and TCP to it, so the browser plays over a
# relay; compare them interleaved: `direct turnudp turntcp direct turnudp turntcp`).
# Each scenario gets a fresh server. The JSON line and a screenshot of the page
# at the end of each run are kept in target/bench-browser-links/<date>/. Needs root,
# iproute2, nftables, python3, /usr/bin/chromium (CHROMIUM overrides) and
# `npm ci --prefix tests/browser`. No netem in this kernel: no added delay (see
# /work/shared/notes/networks.md).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN="${SECONDS_PER_RUN:-20}"
LIFT_SECONDS="${LIFT_SECONDS:-25}"
WARMUP="${WARMUP:-3}"
SERVER_ARGS="${SERVER_ARGS:-}"
LAB="${LAB:-201}"                    # third octet of the lab's /30
ALL=(cap2000 cap1000 cap500 uncapped lift2000 loss2 direct turnudp turntcp)
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=("${ALL[@]}"); fi

[ "$(id -u)" -eq 0 ] || { echo "bench-browser-links: needs root (network namespaces)" >&2; exit 1; }
for tool in ip tc nft python3 node; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench-browser-links: $tool missing (apt-get install iproute2 nftables python3 nodejs)" >&2; exit 1; }
done
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "bench-browser-links: ${CHROMIUM:-/usr/bin/chromium} missing (apt-get install chromium)" >&2; exit 1; }
[ -d tests/browser/node_modules/playwright-core ] || { echo "bench-browser-links: run npm ci --prefix tests/browser" >&2; exit 1; }

echo "==> cargo build --release"
cargo build --release --quiet --bin lumacast
SERVER="$PWD/target/release/lumacast"
VIEWER="$PWD/tests/browser/real_link.mjs"
OUT="target/bench-browser-links/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

# The lab: the same recipe as tests/common/netlab.rs.
NS="lcc$$"; ROOT_IF="lcrc$$"; NS_IF="lcnc$$"; TABLE="lcc$$"
ROOT_IP="10.77.$LAB.1"; NS_IP="10.77.$LAB.2"
SERVER_PID=""; LIFT_PID=""; TURN_PID=""; TMP="$(mktemp -d)"
TURN_PORT="${TURN_PORT:-3479}"; TURN_USER=lumacast; TURN_PASS=bench-secret

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
  fi
}
cleanup() {
  set +e
  [ -n "$LIFT_PID" ] && kill "$LIFT_PID" 2>/dev/null
  stop_server
  [ -n "$TURN_PID" ] && kill "$TURN_PID" 2>/dev/null && wait "$TURN_PID" 2>/dev/null
  nft delete table inet "$TABLE" 2>/dev/null
  ip link del "$ROOT_IF" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ip -o addr show to "$ROOT_IP/30" | grep -q .; then
  echo "bench-browser-links: 10.77.$LAB.0/30 is in use here (set LAB=N for another /30)" >&2; exit 1
fi
ip netns add "$NS"
ip link add "$ROOT_IF" type veth peer name "$NS_IF" netns "$NS"
ip addr add "$ROOT_IP/30" dev "$ROOT_IF"
ip link set "$ROOT_IF" up
ip netns exec "$NS" ip addr add "$NS_IP/30" dev "$NS_IF"
ip netns exec "$NS" ip link set "$NS_IF" up
ip netns exec "$NS" ip link set lo up
# As any viewer's machine has one (mDNS and Chromium's candidate gathering want it).
ip netns exec "$NS" ip route add default via "$ROOT_IP"

cap()   { tc qdisc replace dev "$ROOT_IF" root tbf rate "${1}kbit" burst 20kb latency 100ms; }
uncap() { tc qdisc del dev "$ROOT_IF" root 2>/dev/null || true; }
loss() {
  nft -f - <<EOF
add table inet $TABLE
add chain inet $TABLE out { type filter hook output priority 0; policy accept; }
flush chain inet $TABLE out
add rule inet $TABLE out oifname "$ROOT_IF" meta l4proto udp numgen random mod 100 < $1 drop
EOF
}
unshape() { uncap; nft delete table inet "$TABLE" 2>/dev/null || true; }
# only TCP_PORTS UDP_PORTS: nothing but these ports of the server's address gets through
# between the namespace and the server (as tests/common/netlab.rs allow_only).
only() {
  nft -f - <<EOF
add table inet $TABLE
add chain inet $TABLE only_in { type filter hook input priority 0; policy accept; }
add chain inet $TABLE only_out { type filter hook output priority 0; policy accept; }
add rule inet $TABLE only_in iifname "$ROOT_IF" tcp dport { $1 } accept
add rule inet $TABLE only_in iifname "$ROOT_IF" udp dport { $2 } accept
add rule inet $TABLE only_in iifname "$ROOT_IF" drop
add rule inet $TABLE only_out oifname "$ROOT_IF" tcp sport { $1 } accept
add rule inet $TABLE only_out oifname "$ROOT_IF" udp sport { $2 } accept
add rule inet $TABLE only_out oifname "$ROOT_IF" drop
EOF
}
start_turn() {
  [ -n "$TURN_PID" ] && return 0
  command -v turnserver >/dev/null 2>&1 || { echo "bench-browser-links: turnserver missing (apt-get install coturn)" >&2; exit 1; }
  turnserver -n --listening-ip "$ROOT_IP" --listening-port "$TURN_PORT" --relay-ip "$ROOT_IP" \
    --min-port 49000 --max-port 49199 --lt-cred-mech --user "$TURN_USER:$TURN_PASS" --realm bench \
    --no-tls --no-dtls --no-cli --allow-loopback-peers --no-rfc5780 --simple-log \
    --log-file "$TMP/turn.log" >/dev/null 2>&1 &
  TURN_PID=$!
  sleep 0.5
}
TURN_ARGS="--ice-server turn:$ROOT_IP:$TURN_PORT?transport=udp,turn:$ROOT_IP:$TURN_PORT?transport=tcp --ice-username $TURN_USER --ice-credential $TURN_PASS"

start_server() {
  # shellcheck disable=SC2086
  "$SERVER" --listen "$ROOT_IP:0" --ice-addr "$ROOT_IP:0,127.0.0.1:0" $SERVER_ARGS ${1:-} \
    >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    URL="$(grep -o 'http://[0-9.:]*' "$TMP/server.log" | head -1 || true)"
    [ -n "$URL" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench-browser-links: the server did not start:" >&2; cat "$TMP/server.log" >&2; exit 1
}

# viewer NAME [seconds]: Chromium in the namespace; its JSON into $OUT/NAME.json
viewer() {
  local name="$1" secs="${2:-$SECONDS_PER_RUN}"
  ip netns exec "$NS" node "$VIEWER" "$URL/" "$secs" "$OUT/$name.png" --warmup "$WARMUP" \
    >"$OUT/$name.json" 2>"$OUT/$name.err" || true
}

# One line from a viewer's JSON (and, with a second argument, the sizes of its last N s).
report() {
  python3 - "$1" "$OUT/$1.json" "${2:-0}" <<'EOF'
import json, sys
name, path, last = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    j = json.loads(open(path).read().strip().splitlines()[-1])
except Exception:
    print(f"{name:<10} no result (see {path[:-5]}.err)")
    sys.exit()
def ms(x):
    return "-" if x is None else f"{x:.0f}"
s, r = j["latency_stripe_after_warmup"], j["latency_rtp_after_warmup"]
sizes = " ".join(f"{k}:{v}" for k, v in j["sizes_after_warmup"].items()) or "none"
print(f"{name:<10} fps {j['fps_after_warmup'] or 0:5.1f}  gap {j['max_gap_ms_after_warmup']:6.0f} ms  "
      f"stripe p50/p99 {ms(s['p50_ms'])}/{ms(s['p99_ms'])} ms  rtp p50/p99 {ms(r['p50_ms'])}/{ms(r['p99_ms'])} ms  "
      f"jb {ms(j['jitter_buffer_ms_per_frame_after_warmup'])} ms  rx {ms(j['received_kbps_after_warmup'])} kb/s  "
      f"nack {j['nack_count']} pli {j['pli_count']} freezes {j['freeze_count']}  sizes {sizes}  "
      f"pair {(j.get('selected_pair') or {}).get('local_type')}/{(j.get('selected_pair') or {}).get('local_relay_protocol')}")
if last:
    tail = j["per_second"][-last:]
    agg = {}
    for sec in tail:
        for k, v in sec["sizes"].items():
            agg[k] = agg.get(k, 0) + v
    print(f"{'  last ' + str(last) + ' s':<10} fps {sum(agg.values()) / max(len(tail), 1):5.1f}  sizes "
          + (" ".join(f"{k}:{v}" for k, v in agg.items()) or "none"))
EOF
}

echo "==> $SECONDS_PER_RUN s per scenario (lift2000: $LIFT_SECONDS s), figures after ${WARMUP} s; JSON and screenshots in $OUT"
for scenario in "${SCENARIOS[@]}"; do
  unshape
  case "$scenario" in
    direct|turnudp|turntcp) start_turn; start_server "$TURN_ARGS" ;;
    *) start_server ;;
  esac
  HTTP_PORT="${URL##*:}"
  case "$scenario" in
    direct) viewer direct; report direct ;;
    turnudp) only "$HTTP_PORT" "$TURN_PORT"; viewer turnudp; report turnudp ;;
    turntcp) only "$HTTP_PORT, $TURN_PORT" "0"; viewer turntcp; report turntcp ;;
    cap2000) cap 2000; viewer cap2000; report cap2000 ;;
    cap1000) cap 1000; viewer cap1000; report cap1000 ;;
    cap500)  cap 500;  viewer cap500;  report cap500 ;;
    uncapped) viewer uncapped; report uncapped ;;
    lift2000)
      cap 2000
      ( sleep 10; tc qdisc del dev "$ROOT_IF" root 2>/dev/null ) &
      LIFT_PID=$!
      viewer lift2000 "$LIFT_SECONDS"
      wait "$LIFT_PID" 2>/dev/null || true; LIFT_PID=""
      report lift2000 5
      ;;
    loss2) loss 2; viewer loss2; report loss2 ;;
    *) echo "bench-browser-links: unknown scenario $scenario (known: ${ALL[*]})" >&2 ;;
  esac
  stop_server
done
