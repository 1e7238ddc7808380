#!/usr/bin/env bash
# Publishing into Janus (issue 18): a private Janus 1.x (VideoRoom + HTTP only, the
# configuration of tests/common/janus.rs) and one release lumacast (synthetic 1280x720 at
# 30 fps) that publishes into it through `POST /api/publish`. One line per measurement:
#
#   latency  capture -> decoded p50/p99 at a probe subscribed through Janus and at a probe
#            viewing lumacast directly, alternating (ROUNDS x SECONDS_PER_RUN each, after
#            a WARMUP); the publish target stays up throughout (one encode for both).
#   cpu      lumacast's CPU (utime+stime of /proc/PID/stat over SECONDS_PER_RUN, % of one
#            core): nothing watching / one local probe (which decodes, on the same cores) /
#            one local viewer that does not decode (examples/load.rs, 1 viewer) / one
#            publish target into Janus and no local viewer, alternating (ROUNDS rounds);
#            the target is added and removed at run time (POST /api/publish, DELETE
#            /api/publish/{id}); the order rotates from round to round. Also the CPU of
#            lumacast's threads by kind (encoder, capture, network = tokio workers) and the
#            frames it encoded per second.
#   fanout   VIEWERS webrtc-rs subscribers through Janus (examples/load.rs --janus):
#            lumacast's and Janus's CPU with none and with VIEWERS.
#   restart  Janus killed (SIGKILL) and started again on the same port with the same
#            configuration: time until a new subscriber decodes video (RESTARTS times).
#
#   scripts/bench-janus.sh
#   SECONDS_PER_RUN=20 ROUNDS=5 VIEWERS=20 scripts/bench-janus.sh
#   PARTS="cpu restart" scripts/bench-janus.sh       # some of latency cpu fanout restart
#
# Janus (libnice) does no ICE on loopback: it is pinned to the machine's first
# non-loopback IPv4 address (or LUMACAST_JANUS_ICE_IP), and lumacast and the probes gather
# there too. Needs janus (Debian's 1.1.2: apt-get install janus), curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN="${SECONDS_PER_RUN:-15}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-3}"
VIEWERS="${VIEWERS:-50}"
RESTARTS="${RESTARTS:-3}"
PARTS="${PARTS:-latency cpu fanout restart}"   # which measurements, in this order
ROOM=1234
DETECTOR='synthetic=synthetic,width=1280,height=720'

for tool in janus curl python3 ip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench-janus: $tool missing" >&2; exit 1; }
done
JANUS_LIB=""
for d in /usr/lib/x86_64-linux-gnu/janus /usr/lib/aarch64-linux-gnu/janus /usr/lib/janus /usr/local/lib/janus; do
  [ -e "$d/plugins/libjanus_videoroom.so" ] && { JANUS_LIB="$d"; break; }
done
[ -n "$JANUS_LIB" ] || { echo "bench-janus: no libjanus_videoroom.so (apt-get install janus)" >&2; exit 1; }
ICE_IP="${LUMACAST_JANUS_ICE_IP:-$(ip -4 -o addr show up | awk '$2 != "lo" { split($4, a, "/"); print a[1]; exit }')}"
[ -n "$ICE_IP" ] || { echo "bench-janus: no non-loopback IPv4 address (set LUMACAST_JANUS_ICE_IP)" >&2; exit 1; }

echo "==> cargo build --release"
cargo build --release --quiet --bin lumacast --bin lumacast-probe --example load
SERVER="$PWD/target/release/lumacast"
PROBE="$PWD/target/release/lumacast-probe"
LOAD="$PWD/target/release/examples/load"
OUT="target/bench-janus/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
TMP="$(mktemp -d)"
JDIR="$TMP/janus"
SERVER_PID=""; JANUS_PID=""; PROBE_PID=""; LOAD_PID=""

stop_pid() {
  if [ -n "$1" ]; then kill "$1" 2>/dev/null && wait "$1" 2>/dev/null; fi
  return 0
}
cleanup() {
  set +e
  stop_pid "$PROBE_PID"; stop_pid "$LOAD_PID"; stop_pid "$SERVER_PID"
  if [ -n "$JANUS_PID" ]; then kill -9 "$JANUS_PID" 2>/dev/null; wait "$JANUS_PID" 2>/dev/null; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "machine  $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -r), $(janus --version 2>/dev/null | head -1)"
echo "setup    lumacast --detector '$DETECTOR' (30 fps), Janus ICE on $ICE_IP, ${SECONDS_PER_RUN} s per run after ${WARMUP} s, $ROUNDS rounds; JSON in $OUT"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
# CPU seconds (utime + stime) of a process
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
# CPU seconds of a process's threads by kind: "encoder capture network other" (lumacast's
# thread names: enc-DETECTOR, cap-DETECTOR, tokio-rt-worker)
cpu_threads() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(cat "$t/comm" 2>/dev/null)" "$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "$t/stat" 2>/dev/null)"
  done | awk -v hz="$(getconf CLK_TCK)" '
    /^enc-/ { e += $2; next } /^cap-/ { c += $2; next } /^tokio-rt-worker/ { n += $2; next } { o += $2 }
    END { printf "%.2f %.2f %.2f %.2f\n", e / hz, c / hz, n / hz, o / hz }'
}
# % of one core between two cpu_s readings over $3 seconds
pct() { python3 -c "import sys; print(f'{100 * (float(sys.argv[2]) - float(sys.argv[1])) / float(sys.argv[3]):.1f}')" "$1" "$2" "$3"; }

# ---- Janus: the configuration of tests/common/janus.rs (200 RTP ports: 50+ peers) ----
JPORT="$(free_port)"
JANUS_URL="http://127.0.0.1:$JPORT/janus"
mkdir -p "$JDIR"/{plugins,transports,events,loggers}
ln -s "$JANUS_LIB/plugins/libjanus_videoroom.so" "$JDIR/plugins/"
ln -s "$JANUS_LIB/transports/libjanus_http.so" "$JDIR/transports/"
RTP_LO=$((20000 + (JPORT % 100) * 200)); RTP_HI=$((RTP_LO + 199))
cat >"$JDIR/janus.jcfg" <<EOF
general: {
  configs_folder = "$JDIR"
  plugins_folder = "$JDIR/plugins"
  transports_folder = "$JDIR/transports"
  events_folder = "$JDIR/events"
  loggers_folder = "$JDIR/loggers"
  debug_level = 3
  debug_colors = false
  session_timeout = 60
}
media: {
  ipv6 = false
  rtp_port_range = "$RTP_LO-$RTP_HI"
}
nat: {
  # libnice never gathers loopback: pin ICE to one non-loopback address.
  ice_enforce_list = "$ICE_IP"
  nice_debug = false
  ignore_mdns = true
}
events: { broadcast = false }
EOF
cat >"$JDIR/janus.transport.http.jcfg" <<EOF
general: {
  json = "compact"
  base_path = "/janus"
  http = true
  port = $JPORT
  ip = "127.0.0.1"
  https = false
}
admin: { admin_http = false }
EOF
cat >"$JDIR/janus.plugin.videoroom.jcfg" <<EOF
general: { }
room-$ROOM: {
  description = "lumacast bench room $ROOM"
  publishers = 6
  bitrate = 0
  fir_freq = 0
  videocodec = "h264"
  audiocodec = "opus"
}
EOF

janus_answers() {
  curl -s -m 2 -X POST -d '{"janus":"create","transaction":"bench"}' "$JANUS_URL" 2>/dev/null | grep -q '"success"'
}
start_janus() {
  janus -F "$JDIR" >>"$JDIR/janus.log" 2>&1 &
  JANUS_PID=$!
  for _ in $(seq 200); do
    janus_answers && return 0
    kill -0 "$JANUS_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench-janus: Janus did not start:" >&2; tail -20 "$JDIR/janus.log" >&2; exit 1
}
kill_janus() {
  kill -9 "$JANUS_PID" 2>/dev/null || true
  wait "$JANUS_PID" 2>/dev/null || true
  JANUS_PID=""
}

start_janus
"$SERVER" --listen 127.0.0.1:0 --ice-addr "127.0.0.1:0,$ICE_IP:0" --detector "$DETECTOR" \
  --max-offers-per-sec 100 >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
URL=""
for _ in $(seq 100); do
  URL="$(grep -o 'http://[0-9.:]*' "$OUT/server.log" | head -1 || true)"
  [ -n "$URL" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$URL" ] || { echo "bench-janus: lumacast did not start:" >&2; cat "$OUT/server.log" >&2; exit 1; }
PUBLISH_URL="janus+$JANUS_URL?room=$ROOM&display=scope"

# publish_add: POST /api/publish, waits until publishing; sets TARGET_ID
publish_add() {
  local answer
  answer="$(curl -s -m 10 -w '\n%{http_code}' -X POST -H 'content-type: application/json' \
    -d "{\"url\": \"$PUBLISH_URL\"}" "$URL/api/publish")"
  [ "$(tail -1 <<<"$answer")" = 201 ] || { echo "bench-janus: POST /api/publish: $answer" >&2; exit 1; }
  TARGET_ID="$(head -1 <<<"$answer" | python3 -c 'import json, sys; print(json.load(sys.stdin)["target"]["id"])')"
  for _ in $(seq 100); do
    curl -s "$URL/api/publish" | grep -q '"publishing"' && return 0
    sleep 0.1
  done
  echo "bench-janus: the target is not publishing:" >&2; curl -s "$URL/api/publish" >&2; exit 1
}
publish_del() {
  local st
  st="$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X DELETE "$URL/api/publish/$TARGET_ID")"
  case "$st" in 2*) ;; *) echo "bench-janus: DELETE /api/publish/$TARGET_ID answered $st" >&2; exit 1 ;; esac
}

# probe NAME direct|janus [seconds] [warmup]: the release probe, its JSON into $OUT/NAME.json
probe() {
  local name="$1" how="$2" secs="${3:-$((SECONDS_PER_RUN + WARMUP))}" warm="${4:-$WARMUP}"
  local args=(--rtx --twcc --json --warmup "$warm" --seconds "$secs" --bind "$ICE_IP")
  if [ "$how" = janus ]; then
    args+=(--janus "$JANUS_URL?room=$ROOM&display=scope" --wait-publisher 20)
  else
    args+=("$URL")
  fi
  "$PROBE" "${args[@]}" >"$OUT/$name.json" 2>"$OUT/$name.err" || true
}
report() {
  python3 - "$1" "$OUT/$1.json" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
try:
    j = json.loads(open(path).read().strip().splitlines()[-1])
except Exception:
    print(f"latency  {name:<12} no result (see {path[:-5]}.err)")
    sys.exit()
def ms(x):
    return "-" if x is None else f"{x:.1f}"
s, r = j["latency_after_warmup"], j["latency_rtp_after_warmup"]
print(f"latency  {name:<12} stripe p50 {ms(s['p50_ms'])} ms p99 {ms(s['p99_ms'])} ms  "
      f"rtp p50 {ms(r.get('p50_ms'))} p99 {ms(r.get('p99_ms'))} ms  fps {j['fps_after_warmup']:.1f}  "
      f"gap {j['max_gap_ms_after_warmup']:.0f} ms  first frame {ms(j['first_frame_ms'])} ms  "
      f"lost/recovered {j['packets_lost']}/{j['packets_recovered']}  rx {ms(j['received_kbps_after_warmup'])} kb/s")
EOF
}

# frames lumacast encoded so far (the full-size lane of the detector)
encoded() { curl -s "$URL/api/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["detectors"][0].get("frames_encoded", 0))'; }
part() { [[ " $PARTS " == *" $1 "* ]]; }

# ---- 1. latency: through Janus vs direct, alternating ----
if part latency; then
publish_add
sleep 2
for r in $(seq "$ROUNDS"); do
  probe "janus-$r" janus; report "janus-$r"
  probe "direct-$r" direct; report "direct-$r"
done
python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def get(name):
    try:
        j = json.loads(open(f"{out}/{name}.json").read().strip().splitlines()[-1])
        return j["latency_after_warmup"]["p50_ms"], j["latency_after_warmup"]["p99_ms"]
    except Exception:
        return None, None
for q, i in (("p50", 0), ("p99", 1)):
    jv = [get(f"janus-{r}")[i] for r in range(1, rounds + 1)]
    dv = [get(f"direct-{r}")[i] for r in range(1, rounds + 1)]
    jv, dv = [x for x in jv if x is not None], [x for x in dv if x is not None]
    if jv and dv:
        jm, dm = statistics.median(jv), statistics.median(dv)
        print(f"latency  median of {q}: through Janus {jm:.1f} ms, direct {dm:.1f} ms: {jm - dm:+.1f} ms")
EOF
publish_del
sleep 3
fi

# ---- 2. lumacast's CPU: idle / one local probe / one publish target, alternating ----
if part cpu; then
SETTLE=4
CPU_LINE=""; CPU_PCT=""; CPU_NET=""
measure_cpu() {  # sets CPU_PCT, CPU_NET and CPU_LINE over SECONDS_PER_RUN
  local a b e0 e1 j0 j1 t0 t1
  e0="$(encoded)"; j0="$(cpu_s "$JANUS_PID")"; t0="$(cpu_threads "$SERVER_PID")"; a="$(cpu_s "$SERVER_PID")"
  sleep "$SECONDS_PER_RUN"
  b="$(cpu_s "$SERVER_PID")"; t1="$(cpu_threads "$SERVER_PID")"; j1="$(cpu_s "$JANUS_PID")"; e1="$(encoded)"
  CPU_PCT="$(pct "$a" "$b" "$SECONDS_PER_RUN")"
  CPU_NET="$(pct "$(cut -d' ' -f3 <<<"$t0")" "$(cut -d' ' -f3 <<<"$t1")" "$SECONDS_PER_RUN")"
  # by thread kind (a thread that ended inside the window took its time along: "-")
  CPU_LINE="lumacast $CPU_PCT % of a core ($(python3 -c "
import sys
a, b, s = [float(x) for x in sys.argv[1].split()], [float(x) for x in sys.argv[2].split()], float(sys.argv[3])
print(', '.join(f'{k} ' + (f'{100 * (y - x) / s:.1f}' if y >= x else '-') for k, x, y in zip(('encoder', 'capture', 'network', 'other'), a, b)))
" "$t0" "$t1" "$SECONDS_PER_RUN")), $(python3 -c "print(f'{max($e1 - $e0, 0) / $SECONDS_PER_RUN:.1f}')") frames encoded/s, Janus $(pct "$j0" "$j1" "$SECONDS_PER_RUN") %"
}
declare -A CPU NET
# cpu_phase KIND ROUND: one measurement with nothing / probe / quiet / publish
cpu_phase() {
  local kind="$1" r="$2" label
  case "$kind" in
    nothing) label="nothing watching           " ;;
    probe)
      label="one local probe (decodes)  "
      "$PROBE" "$URL" --bind "$ICE_IP" --rtx --twcc --json --seconds $((SETTLE + SECONDS_PER_RUN + 2)) \
        >"$OUT/cpu-local-$r.json" 2>"$OUT/cpu-local-$r.err" &
      PROBE_PID=$! ;;
    quiet)
      label="one viewer, not decoding   "
      "$LOAD" "$URL" --twcc --steps 1 --seconds $((SETTLE + SECONDS_PER_RUN)) >"$OUT/cpu-quiet-$r.txt" 2>&1 &
      LOAD_PID=$! ;;
    publish) label="one publish target         "; publish_add ;;
  esac
  sleep "$SETTLE"
  measure_cpu
  CPU[$kind]+=" $CPU_PCT"; NET[$kind]+=" $CPU_NET"
  echo "cpu      round $r  $label $CPU_LINE"
  case "$kind" in
    probe) wait "$PROBE_PID" || true; PROBE_PID="" ;;
    quiet) wait "$LOAD_PID" || true; LOAD_PID="" ;;
    publish) curl -s "$URL/api/publish" >"$OUT/cpu-publish-$r.json"; publish_del ;;
  esac
  sleep 2
}
KINDS=(nothing probe quiet publish)
for r in $(seq "$ROUNDS"); do
  # the order rotates from round to round (no phase always follows the same one)
  for i in 0 1 2 3; do cpu_phase "${KINDS[$(((i + r - 1) % 4))]}" "$r"; done
done
python3 - "${CPU[nothing]}" "${CPU[probe]}" "${CPU[quiet]}" "${CPU[publish]}" \
  "${NET[nothing]}" "${NET[probe]}" "${NET[quiet]}" "${NET[publish]}" <<'EOF'
import statistics, sys
med = [statistics.median(float(x) for x in a.split()) for a in sys.argv[1:]]
print(f"cpu      median: nothing {med[0]:.1f} %, one local probe {med[1]:.1f} %, "
      f"one viewer not decoding {med[2]:.1f} %, one publish target {med[3]:.1f} %")
print(f"cpu      median of the network threads (tokio-rt-worker): nothing {med[4]:.1f} %, one local probe "
      f"{med[5]:.1f} %, one viewer not decoding {med[6]:.1f} %, one publish target {med[7]:.1f} %")
EOF
fi

# ---- 3. VIEWERS subscribers through Janus ----
if part fanout; then
publish_add
sleep 3
"$LOAD" "$URL" --janus "$JANUS_URL?room=$ROOM&display=scope" --bind "$ICE_IP" \
  --janus-pid "$JANUS_PID" --steps "0,$VIEWERS" --seconds "$SECONDS_PER_RUN" >"$OUT/fanout.txt" 2>"$OUT/fanout.err" &
LOAD_PID=$!
wait "$LOAD_PID" || { echo "fanout   load failed: $(tail -3 "$OUT/fanout.err")"; }
LOAD_PID=""
sed 's/^/fanout   /' "$OUT/fanout.txt"
publish_del
sleep 3
fi

# ---- 4. Janus restarted: time until a new subscriber decodes again ----
# More than 10 s between restarts: lumacast's backoff resets after a 10 s session.
if part restart; then
publish_add
for r in $(seq "$RESTARTS"); do
  sleep 12
  t0="$(now_ms)"
  kill_janus
  start_janus
  t_up="$(now_ms)"
  probe "restart-$r" janus 4 0
  python3 - "$OUT/restart-$r.json" "$t0" "$t_up" "$r" <<'EOF'
import json, sys
path, t0, t_up, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
try:
    j = json.loads(open(path).read().strip().splitlines()[-1])
    first = j["janus"]["first_frame_unix_ms"]
    sub = j["janus"]["subscribed_unix_ms"]
    print(f"restart  {r}  video decoded again {(first - t0) / 1000:.2f} s after the kill "
          f"(Janus answering after {(t_up - t0) / 1000:.2f} s, subscribed after {(sub - t0) / 1000:.2f} s, "
          f"first frame {j['first_frame_ms']:.0f} ms after the join)")
except Exception as e:
    print(f"restart  {r}  no video ({e}; see {path[:-5]}.err)")
EOF
done
curl -s "$URL/api/publish" >"$OUT/publish-after-restarts.json" || true
publish_del
fi

cp "$JDIR/janus.log" "$OUT/janus.log" 2>/dev/null || true
echo "==> done; processes left: lumacast $SERVER_PID and Janus $JANUS_PID are stopped on exit"
