#!/usr/bin/env bash
# Viewers behind real shaped links: the release server in the root namespace, the
# release probe (NACK with RTX and transport-wide feedback on, as a browser) in a network namespace
# behind a veth pair whose server -> viewer direction is capped (tbf) or lossy (nftables).
# One line per scenario and viewer: fps, longest gap between decoded pictures, capture ->
# decoded latency p50/p99 (from the stripe, and from the RTP clock for every picture), the
# decoded sizes; all after a warmup.
#
#   sudo scripts/bench-links.sh                 # every scenario, 20 s each
#   sudo scripts/bench-links.sh cap2000 loss2   # some of them
#   SECONDS_PER_RUN=30 WARMUP=5 SERVER_ARGS="--keyint 120" sudo -E scripts/bench-links.sh
#
# Scenarios: cap2000 cap1000 cap500 (tbf caps in kbit/s, 20 kB burst, 100 ms queue),
# lift2000 (2 Mb/s lifted after 10 s, a 30 s run), loss2 (2 % random UDP loss, no cap),
# mixed1000 (a 1 Mb/s viewer and a loopback viewer at once), cpu3 (the server's CPU with
# one loopback viewer, then with three viewers on the three renditions: loopback, a
# second namespace capped at 2 Mb/s, this one at 1 Mb/s).
# Each scenario gets a fresh server. The JSON of every probe is kept in
# target/bench-links/<date>/. Needs root, iproute2, nftables and python3. No netem in
# this kernel: no added delay (see /work/shared/notes/networks.md).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN="${SECONDS_PER_RUN:-20}"
WARMUP="${WARMUP:-3}"
SERVER_ARGS="${SERVER_ARGS:-}"
LAB="${LAB:-200}"                    # third octet of the lab's /30
ALL=(cap2000 cap1000 cap500 lift2000 loss2 mixed1000 cpu3)
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=("${ALL[@]}"); fi

[ "$(id -u)" -eq 0 ] || { echo "bench-links: needs root (network namespaces)" >&2; exit 1; }
for tool in ip tc nft python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench-links: $tool missing (apt-get install iproute2 nftables python3)" >&2; exit 1; }
done

echo "==> cargo build --release"
cargo build --release --quiet --bin lumacast --bin lumacast-probe
SERVER="$PWD/target/release/lumacast"
PROBE="$PWD/target/release/lumacast-probe"
OUT="target/bench-links/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

# The lab: the same recipe as tests/common/netlab.rs.
NS="lcb$$"; ROOT_IF="lcrb$$"; NS_IF="lcnb$$"; TABLE="lcb$$"
ROOT_IP="10.77.$LAB.1"; NS_IP="10.77.$LAB.2"
# A second lab (cpu3 only): its own namespace and veth in the next /30.
NS2="lcc$$"; ROOT_IF2="lcrc$$"; NS_IF2="lcnc$$"
ROOT_IP2="10.77.$LAB.5"; NS_IP2="10.77.$LAB.6"
SERVER_PID=""; LIFT_PID=""; TMP="$(mktemp -d)"

cleanup() {
  set +e
  [ -n "$LIFT_PID" ] && kill "$LIFT_PID" 2>/dev/null
  stop_server
  nft delete table inet "$TABLE" 2>/dev/null
  ip link del "$ROOT_IF" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  ip link del "$ROOT_IF2" 2>/dev/null
  ip netns del "$NS2" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ip -o addr show to "$ROOT_IP/30" | grep -q .; then
  echo "bench-links: 10.77.$LAB.0/30 is in use here (set LAB=N for another /30)" >&2; exit 1
fi
ip netns add "$NS"
ip link add "$ROOT_IF" type veth peer name "$NS_IF" netns "$NS"
ip addr add "$ROOT_IP/30" dev "$ROOT_IF"
ip link set "$ROOT_IF" up
ip netns exec "$NS" ip addr add "$NS_IP/30" dev "$NS_IF"
ip netns exec "$NS" ip link set "$NS_IF" up
ip netns exec "$NS" ip link set lo up
# Without a default route webrtc-rs cannot join the mDNS group (ENODEV).
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

second_lab() {
  ip netns add "$NS2"
  ip link add "$ROOT_IF2" type veth peer name "$NS_IF2" netns "$NS2"
  ip addr add "$ROOT_IP2/30" dev "$ROOT_IF2"
  ip link set "$ROOT_IF2" up
  ip netns exec "$NS2" ip addr add "$NS_IP2/30" dev "$NS_IF2"
  ip netns exec "$NS2" ip link set "$NS_IF2" up
  ip netns exec "$NS2" ip link set lo up
  ip netns exec "$NS2" ip route add default via "$ROOT_IP2"
}

# The server's CPU time (s) from /api/stats.
cpu_s() {
  python3 -c "import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1] + '/api/stats'))['process']['cpu_seconds'])" "$URL"
}

start_server() {
  # shellcheck disable=SC2086
  "$SERVER" --listen "$ROOT_IP:0" --ice-addr "$ROOT_IP:0,$ROOT_IP2:0,127.0.0.1:0" $SERVER_ARGS \
    >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    URL="$(grep -o 'http://[0-9.:]*' "$TMP/server.log" | head -1 || true)"
    [ -n "$URL" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench-links: the server did not start:" >&2; cat "$TMP/server.log" >&2; exit 1
}
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
  fi
}

# probe WHERE(ns|lo) NAME [seconds]: runs the probe, its JSON into $OUT/NAME.json
probe() {
  local where="$1" name="$2" secs="${3:-$SECONDS_PER_RUN}"
  local args=("$URL" --rtx --twcc --json --warmup "$WARMUP" --seconds "$secs")
  if [ "$where" = ns ]; then
    ip netns exec "$NS" "$PROBE" "${args[@]}" --bind "$NS_IP" >"$OUT/$name.json" 2>"$OUT/$name.err" || true
  else
    "$PROBE" "${args[@]}" --bind 127.0.0.1 >"$OUT/$name.json" 2>"$OUT/$name.err" || true
  fi
}

# One line from a probe's JSON.
report() {
  python3 - "$1" "$OUT/$1.json" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
try:
    j = json.loads(open(path).read().strip().splitlines()[-1])
except Exception:
    print(f"{name:<14} no result (see {path[:-5]}.err)")
    sys.exit()
def ms(x):
    return "-" if x is None else f"{x:.0f}"
s, r = j.get("latency_after_warmup", {}), j.get("latency_rtp_after_warmup", {})
sizes = " ".join(f"{k}:{v}" for k, v in j.get("sizes_after_warmup", {}).items()) or "none"
print(f"{name:<14} fps {j['fps_after_warmup']:5.1f}  gap {j['max_gap_ms_after_warmup']:6.0f} ms  "
      f"stripe p50/p99 {ms(s.get('p50_ms'))}/{ms(s.get('p99_ms'))} ms  "
      f"rtp p50/p99 {ms(r.get('p50_ms'))}/{ms(r.get('p99_ms'))} ms  "
      f"rx {ms(j.get('received_kbps_after_warmup'))} kb/s  "
      f"lost/recovered {j.get('packets_lost', '-')}/{j.get('packets_recovered', '-')}  sizes {sizes}")
EOF
}

echo "==> $SECONDS_PER_RUN s per scenario, figures after ${WARMUP} s; JSON in $OUT"
for scenario in "${SCENARIOS[@]}"; do
  unshape
  start_server
  case "$scenario" in
    cap2000) cap 2000; probe ns cap2000; report cap2000 ;;
    cap1000) cap 1000; probe ns cap1000; report cap1000 ;;
    cap500)  cap 500;  probe ns cap500;  report cap500 ;;
    lift2000)
      cap 2000
      ( sleep 10; tc qdisc del dev "$ROOT_IF" root 2>/dev/null ) &
      LIFT_PID=$!
      probe ns lift2000 30
      wait "$LIFT_PID" 2>/dev/null || true; LIFT_PID=""
      report lift2000
      # the last 5 s, where the link is long lifted
      python3 - "$OUT/lift2000.json" <<'EOF'
import json, sys
try:
    j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception:
    sys.exit()
last = j["sizes_per_second"][-5:]
sizes = {}
for sec in last:
    for k, v in sec.items():
        sizes[k] = sizes.get(k, 0) + v
print(f"{'  last 5 s':<14} fps {sum(sizes.values()) / max(len(last), 1):5.1f}  sizes "
      + (" ".join(f"{k}:{v}" for k, v in sizes.items()) or "none"))
per = j["sizes_per_second"]
back = next((i for i in range(10, len(per)) if per[i].get("1280x720", 0) >= 25), None)
print(f"{'  full again':<14} " + (f"{back - 10} s after the lift (second {back} of the run)" if back is not None else "not within the run"))
EOF
      ;;
    loss2) loss 2; probe ns loss2; report loss2 ;;
    mixed1000)
      cap 1000
      probe ns mixed1000-ns & p1=$!
      probe lo mixed1000-lo & p2=$!
      wait "$p1" "$p2" || true
      report mixed1000-ns
      report mixed1000-lo
      ;;
    cpu3)
      # One loopback viewer (one full-size encode), then three viewers that settle on
      # the three renditions; the server's CPU over the same 12 s window of each.
      second_lab
      cap 1000
      tc qdisc replace dev "$ROOT_IF2" root tbf rate 2000kbit burst 20kb latency 100ms
      probe lo cpu3-one 20 & p1=$!
      sleep 6; a=$(cpu_s); sleep 12; b=$(cpu_s)
      wait "$p1" || true
      one=$(python3 -c "print(f'{100 * ($b - $a) / 12:.1f}')")
      probe lo cpu3-lo 20 & p1=$!
      probe ns cpu3-1000 20 & p2=$!
      ip netns exec "$NS2" "$PROBE" "$URL" --rtx --twcc --json --warmup "$WARMUP" --seconds 20 \
        --bind "$NS_IP2" >"$OUT/cpu3-2000.json" 2>"$OUT/cpu3-2000.err" & p3=$!
      sleep 6; a=$(cpu_s); sleep 12; b=$(cpu_s)
      wait "$p1" "$p2" "$p3" || true
      three=$(python3 -c "print(f'{100 * ($b - $a) / 12:.1f}')")
      curl -s "$URL/api/stats" | python3 -c "import json,sys; d=json.load(sys.stdin)['detectors'][0]; print('renditions', [(r['width'], r['height'], r['frames_encoded']) for r in d['renditions']])" 2>/dev/null || true
      report cpu3-lo; report cpu3-2000; report cpu3-1000
      echo "cpu3           server CPU: one viewer ${one} % of a core; three renditions ${three} %"
      ;;
    *) echo "bench-links: unknown scenario $scenario (known: ${ALL[*]})" >&2 ;;
  esac
  stop_server
done
