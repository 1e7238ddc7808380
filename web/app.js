// lumacast live view: one recvonly WebRTC connection per detector, non-trickle ICE,
// reconnects by itself when the server restarts or the connection fails.
"use strict";

const $ = (id) => document.getElementById(id);
const video = $("video"), overlay = $("overlay"), statusEl = $("status"), select = $("detector");

const GATHER_TIMEOUT_MS = 1500;   // send what was gathered after this
// The page asks for no STUN/TURN: only host candidates, which come together. Chromium
// declares gathering complete some 120 ms later; after this quiet time the offer goes.
const GATHER_QUIET_MS = 30;
const RETRY_MIN_MS = 500, RETRY_MAX_MS = 5000;
const STALL_MS = 4000;            // no new decoded frame this long: reconnect
// Grid mode (?grid=1): every running detector at once, one tile and one peer connection
// each (see "Several detectors at once" below); the single viewer does not start.
const GRID = !["", "0", null].includes(new URLSearchParams(location.search).get("grid"));

let pc = null;
let wanted = false;           // the user wants to watch
let retryMs = RETRY_MIN_MS;
let retryTimer = null;
let lastStats = null;
let sessionId = 0;
// This viewer's id on the server, and what the server last said of its link (estimate,
// loss, rendition), read from /api/sessions every other second.
let viewerId = 0, serverLink = null, lastLinkPoll = 0;
let lastProgress = 0;         // performance.now() when framesDecoded last rose

function setStatus(text, cls) {
  statusEl.textContent = text;
  statusEl.className = cls || "";
}

// Access token for servers started with --auth-token/--jwt-secret: from ?token=, else
// remembered from an earlier prompt. Sent as a bearer token on every API call.
let token = new URLSearchParams(location.search).get("token") || localStorage.getItem("lumacast-token") || "";

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

// fetch with the token; on 401 ask the user for one (once per call) and retry.
async function authFetch(path, opts) {
  opts = Object.assign({}, opts || {});
  let res = await fetch(path, Object.assign({}, opts, { headers: authHeaders(opts.headers) }));
  if (res.status === 401) {
    const t = window.prompt("This lumacast server needs an access token:", "");
    if (t) {
      token = t.trim();
      localStorage.setItem("lumacast-token", token);
      res = await fetch(path, Object.assign({}, opts, { headers: authHeaders(opts.headers) }));
    }
  }
  return res;
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const res = await authFetch(path, opts);
  let json = null;
  try { json = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) throw new Error((json && json.message) || `${res.status} ${res.statusText}`);
  return json;
}

// Milestones of the first connection, ms since navigation (window.lumacast.timeline).
const timeline = {};
function mark(name) { if (!(name in timeline)) timeline[name] = Math.round(performance.now()); }

async function loadDetectors() {
  const { detectors } = await api("/api/detectors");
  const current = select.value;
  select.innerHTML = "";
  for (const d of detectors) {
    const o = document.createElement("option");
    o.value = d.name;
    o.textContent = `${d.name} (${d.kind}, ${d.width}x${d.height})`;
    o.dataset.width = d.width;
    select.appendChild(o);
  }
  if (current && detectors.some((d) => d.name === current)) select.value = current;
  const params = new URLSearchParams(location.search);
  if (params.get("detector")) select.value = params.get("detector");
}

function waitForGathering(conn) {
  if (conn.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    let quiet = null;
    const done = () => {
      conn.removeEventListener("icegatheringstatechange", check);
      conn.removeEventListener("icecandidate", onCandidate);
      clearTimeout(quiet);
      resolve();
    };
    const check = () => { if (conn.iceGatheringState === "complete") done(); };
    const onCandidate = (ev) => {
      if (!ev.candidate) return done();
      clearTimeout(quiet);
      quiet = setTimeout(done, GATHER_QUIET_MS);
    };
    conn.addEventListener("icegatheringstatechange", check);
    conn.addEventListener("icecandidate", onCandidate);
    setTimeout(done, GATHER_TIMEOUT_MS);
  });
}

function closePeer() {
  if (pc) { try { pc.close(); } catch (_) { /* already closed */ } }
  pc = null;
  lastStats = null;
  lastBytes = { n: -1, t: 0 };
}

// ICE restart (same session, same peer connection): when the connection drops (the
// laptop changed networks, Wi-Fi roamed), the page asks for one before it falls back to
// a new offer. At most one per ICE_RESTART_EVERY_MS; a failed one falls back at once.
const ICE_RESTART_EVERY_MS = 8000;
const NO_BYTES_MS = 1500;
let lastBytes = { n: -1, t: 0 };
let iceRestartPending = false, lastIceRestart = -Infinity;

async function restartIce(conn, mySession, reason) {
  const now = performance.now();
  if (iceRestartPending || !viewerId || now - lastIceRestart < ICE_RESTART_EVERY_MS) return false;
  iceRestartPending = true;
  lastIceRestart = now;
  setStatus(`${reason}; restarting ICE…`, "warn");
  const record = { at: Math.round(now), reason, answered: null };
  window.lumacast.iceRestarts = (window.lumacast.iceRestarts || []).concat([record]);
  try {
    await conn.setLocalDescription(await conn.createOffer({ iceRestart: true }));
    await waitForGathering(conn);
    const answer = await api(`/api/sessions/${viewerId}/ice-restart`, {
      sdp: conn.localDescription.sdp, type: "offer",
    });
    if (mySession !== sessionId) return true;
    await conn.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    record.answered = Math.round(performance.now());
  } catch (e) {
    if (mySession === sessionId) { iceRestartPending = false; scheduleRetry(`ICE restart failed: ${e.message}`); }
  } finally {
    iceRestartPending = false;
  }
  return true;
}

function scheduleRetry(reason) {
  closePeer();
  if (!wanted || retryTimer) return;
  setStatus(`${reason}; retrying in ${(retryMs / 1000).toFixed(1)} s`, "warn");
  retryTimer = setTimeout(() => { retryTimer = null; connect(); }, retryMs);
  retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
}

// The server's STUN/TURN servers (`--ice-server`), asked for once, as soon as the page
// runs; each connection waits for them (a network that only TURN gets through needs them).
let iceServersReady = null;
function iceServers() {
  if (!iceServersReady) {
    // No token prompt from here (the detector list asks); a 401 asks again next time.
    iceServersReady = fetch("/api/ice-servers", { headers: authHeaders() })
      .then((r) => {
        if (r.ok) return r.json();
        iceServersReady = null;
        return { ice_servers: [] };
      })
      .then((j) => j.ice_servers || [])
      .catch(() => { iceServersReady = null; return []; });
  }
  return iceServersReady;
}
iceServers();

// `ready`: what must be done before the offer may go (the detector list, the start
// request); the offer and ICE gathering run meanwhile.
async function connect(ready) {
  closePeer();
  const mySession = ++sessionId;
  lastProgress = performance.now();
  setStatus("connecting…");
  try {
    const conn = newReceiver(video, await iceServers());
    if (mySession !== sessionId) { conn.close(); return; }
    pc = conn;
    openMetadataChannel(conn, () => mySession === sessionId, meta);
    conn.onconnectionstatechange = () => {
      if (mySession !== sessionId) return;
      const s = conn.connectionState;
      if (s === "connected") { mark("connected"); retryMs = RETRY_MIN_MS; setStatus("connected", "ok"); }
      else if (s === "closed") scheduleRetry("connection closed");
      else if (s === "failed" || s === "disconnected") {
        if (!iceRestartPending) {
          restartIce(conn, mySession, `connection ${s}`).then((tried) => {
            if (!tried && s === "failed" && mySession === sessionId) scheduleRetry("connection failed");
          });
        }
      }
    };
    const gathered = (async () => {
      await conn.setLocalDescription(await conn.createOffer());
      mark("offer");
      await waitForGathering(conn);
      mark("gathered");
    })();
    await Promise.all([gathered, ready]);
    if (!select.value) await loadDetectors();
    const answer = await api("/LiveViewController/webrtc_offer", {
      sdp: conn.localDescription.sdp, type: "offer", detectorName: select.value,
    });
    mark("answer");
    if (mySession !== sessionId) return;
    viewerId = answer.viewer_id || 0;
    serverLink = null;
    await conn.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  } catch (e) {
    if (mySession === sessionId) scheduleRetry(`error: ${e.message}`);
  }
}

// A peer connection (with these STUN/TURN servers) that receives one video track into
// `videoEl`: the single view and every grid tile make theirs here.
function newReceiver(videoEl, servers) {
  const conn = new RTCPeerConnection({ iceServers: servers });
  const transceiver = conn.addTransceiver("video", { direction: "recvonly" });
  // Chromium offers abs-capture-time only when asked: the server then stamps each
  // frame with its capture time, and getSynchronizationSources() reports it.
  try {
    if (transceiver.setHeaderExtensionsToNegotiate) {
      transceiver.setHeaderExtensionsToNegotiate(transceiver.getHeaderExtensionsToNegotiate().map((e) =>
        (e.uri.endsWith("/abs-capture-time") ? { ...e, direction: "sendrecv" } : e)));
    }
  } catch (_) { /* an older browser: the metadata channel still gives capture times */ }
  conn.ontrack = (ev) => {
    // Live view: ask the receiver not to buffer for smoothness (standard
    // jitterBufferTarget, and Chromium's older playoutDelayHint).
    try { ev.receiver.jitterBufferTarget = 0; } catch (_) { /* unsupported */ }
    try { ev.receiver.playoutDelayHint = 0; } catch (_) { /* unsupported */ }
    videoEl.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    videoEl.play().catch(() => {});
  };
  return conn;
}

// The inbound video statistics of `conn` (null when it has none yet), and the frame and
// bit rates since `last` (the numbers of an earlier look, with its time `t`).
async function inboundVideo(conn) {
  let inbound = null;
  const report = await conn.getStats();
  report.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") inbound = s; });
  return inbound;
}
function inboundRates(inbound, last, now) {
  if (!inbound || !last) return { fps: 0, kbps: 0 };
  const dt = (now - last.t) / 1000;
  return {
    fps: (inbound.framesDecoded - last.framesDecoded) / dt,
    kbps: (8 * (inbound.bytesReceived - last.bytesReceived)) / dt / 1000,
  };
}

// `listed`: resolves once the detector list is loaded (the page's first start).
async function start(listed) {
  wanted = true;
  retryMs = RETRY_MIN_MS;
  clearTimeout(retryTimer); retryTimer = null;
  const started = (async () => {
    await listed;
    await api("/LiveViewController/startLiveView", { detectorName: select.value, protocol: "webrtc" });
  })().catch(() => { /* webrtc_offer starts it too and reports the error */ });
  connect(started);
}

async function stop() {
  wanted = false;
  clearTimeout(retryTimer); retryTimer = null;
  sessionId++;
  closePeer();
  video.srcObject = null;
  try {
    await api(`/LiveViewController/stopLiveView?detectorName=${encodeURIComponent(select.value)}`);
    setStatus("stopped");
  } catch (e) { setStatus(`stop failed: ${e.message}`, "bad"); }
}

async function updateOverlay() {
  if (!pc) { overlay.textContent = wanted ? "connecting…" : "stopped — press Start"; return; }
  let inbound = null;
  try { inbound = await inboundVideo(pc); } catch (_) { return; }
  const now = performance.now();
  const { fps, kbps } = inboundRates(inbound, lastStats, now);
  if (inbound && (!lastStats || inbound.framesDecoded > lastStats.framesDecoded)) lastProgress = now;
  // The browser's own share, per frame since the last look: how long frames waited in
  // its jitter buffer, how long decoding took, and receive → decoded in all.
  let breakdown = null;
  if (inbound && lastStats && inbound.framesDecoded > lastStats.framesDecoded) {
    const per = (key, count) => {
      const dn = (inbound[count] || 0) - (lastStats[count] || 0);
      return dn > 0 ? (1000 * ((inbound[key] || 0) - (lastStats[key] || 0))) / dn : null;
    };
    breakdown = {
      jitter_buffer_ms: per("jitterBufferDelay", "jitterBufferEmittedCount"),
      decode_ms: per("totalDecodeTime", "framesDecoded"),
      processing_ms: per("totalProcessingDelay", "framesDecoded"),
    };
    window.lumacast.breakdown = breakdown;
  }
  if (inbound) {
    lastStats = { t: now };
    for (const k of ["framesDecoded", "bytesReceived", "jitterBufferDelay", "jitterBufferEmittedCount",
      "totalDecodeTime", "totalProcessingDelay"]) lastStats[k] = inbound[k] || 0;
  }
  // A server that restarted or vanished leaves the connection "connected" or
  // "disconnected" for a long time without video: treat a stall as a failure.
  // Nothing at all arriving (not even the bytes of a slow detector's frames) for
  // NO_BYTES_MS: the path is gone (a network change): restart ICE without waiting for
  // the stall.
  if (inbound && inbound.bytesReceived !== lastBytes.n) lastBytes = { n: inbound.bytesReceived, t: now };
  if (wanted && lastBytes.t && now - lastBytes.t > NO_BYTES_MS && !iceRestartPending) {
    lastBytes.t = now;
    restartIce(pc, sessionId, `nothing received for ${NO_BYTES_MS / 1000} s`);
  }
  if (wanted && lastProgress && now - lastProgress > STALL_MS && !iceRestartPending) {
    // An ICE restart first (once per ICE_RESTART_EVERY_MS), then a new offer.
    const conn = pc, reason = `no video for ${STALL_MS / 1000} s`;
    lastProgress = now;
    restartIce(conn, sessionId, reason).then((tried) => { if (!tried) scheduleRetry(reason); });
    return;
  }
  if (viewerId && now - lastLinkPoll > 2000) {
    lastLinkPoll = now;
    api("/api/sessions").then((j) => {
      const me = (j.sessions || []).find((x) => x.id === viewerId);
      serverLink = me ? me.link : null;
    }).catch(() => { serverLink = null; });
  }
  // The newest frame's capture time from the abs-capture-time extension (NTP ms), and
  // when Chromium played it out: a capture → playout age on the server's clock.
  let absCapture = null;
  try {
    const src = pc.getReceivers()[0].getSynchronizationSources()[0];
    if (src && src.captureTimestamp) {
      const capturedMs = src.captureTimestamp - 2208988800000 + (meta.offset === null ? 0 : -meta.offset);
      absCapture = { captured_ms: capturedMs, playout_age_ms: src.timestamp - capturedMs };
      window.lumacast.absCapture = absCapture;
    }
  } catch (_) { /* not supported */ }
  const l = serverLink;
  const w = video.videoWidth, h = video.videoHeight;
  overlay.textContent = [
    `detector   ${select.value}`,
    `state      ${pc.connectionState} (ICE ${pc.iceConnectionState})`,
    `resolution ${w && h ? `${w}x${h}` : "—"}`,
    `fps        ${fps.toFixed(1)}`,
    `bitrate    ${(kbps / 1000).toFixed(2)} Mb/s`,
    `decoded    ${inbound ? inbound.framesDecoded : 0}`,
    `dropped    ${inbound ? (inbound.framesDropped || 0) : 0}`,
    `lost pkts  ${inbound ? (inbound.packetsLost || 0) : 0}`,
    `link       ${l ? (l.feedback === "none" ? "no feedback (full size)"
      : `${(l.estimate_bps / 1e6).toFixed(2)} Mb/s (${l.feedback}), loss ${(100 * l.loss).toFixed(1)} %`) : "—"}`,
    `rendition  ${l ? `${l.rendition} (${l.width}x${l.height}), ${l.rendition_switches} switches` : "—"}`,
    `browser    ${breakdown ? ["jitter buffer", "decode", "processing"].map((n, i) => {
      const v = [breakdown.jitter_buffer_ms, breakdown.decode_ms, breakdown.processing_ms][i];
      return `${n} ${v === null ? "—" : v.toFixed(1)} ms`;
    }).join(" · ") + " per frame" : "—"}`,
    `missed     ${meta.frames ? `${meta.missed} of ${meta.frames + meta.missed} frames the detector made (metadata)` : "— (no metadata channel)"}`,
    `capture    ${absCapture ? `abs-capture-time: ${absCapture.playout_age_ms.toFixed(1)} ms capture → playout (newest frame)` : "— (no abs-capture-time from the browser)"}`,
    `clock      ${meta.offset === null ? "—" : `server ${meta.offset >= 0 ? "+" : ""}${meta.offset.toFixed(1)} ms (best ping ${meta.rtt.toFixed(1)} ms)`}`,
  ].join("\n");
}

// ── Live latency from the timestamp stripe ──────────────────────────────────────
// The synthetic detector writes its capture time (µs since the epoch) into the top-left
// 512x48 pixels of every frame (3 rows x 32 cells of 16x16). Reading it back from each
// presented frame gives capture → display latency with no help from the server (same
// machine, or synchronised clocks).
const stripeCanvas = document.createElement("canvas");
stripeCanvas.width = 512; stripeCanvas.height = 48;
const stripeCtx = stripeCanvas.getContext("2d", { willReadFrequently: true });
const latencySamples = [];   // capture → display, from the metadata channel (or the stripe)
const stripeSamples = [];    // the same from the stripe alone, a cross-check
const LATENCY_WINDOW = 150;

// ── The metadata channel ────────────────────────────────────────────────────────
// The server describes every frame it sends on a data channel we open (RTP timestamp,
// capture time, frame number...) and answers clock pings. Each presented frame's RTP
// timestamp (requestVideoFrameCallback) finds its capture time, for any detector and any
// picture. The server's clock offset: server time − the midpoint of our send and receive
// times, from the ping with the shortest round trip among the last 30 (pings every 250 ms
// for the first 2 s, then every 2 s).
function newMeta() {
  return { frames: 0, missed: 0, lastSeq: null, byRtp: new Map(), offset: null, rtt: Infinity, pings: [] };
}
const meta = newMeta();   // the single view's; each grid tile has its own
const META_FRAMES = 300, META_PINGS = 30;

// `alive()`: false once this connection is replaced (its pings stop); `m`: the state its
// messages fill in.
function openMetadataChannel(conn, alive, m) {
  const meta = m;
  Object.assign(meta, { frames: 0, missed: 0, lastSeq: null, offset: null, rtt: Infinity, pings: [] });
  meta.byRtp.clear();
  const dc = conn.createDataChannel("lumacast-meta");
  let timer = null, sent = 0;
  const ping = () => {
    if (dc.readyState !== "open" || !alive()) { clearTimeout(timer); return; }
    dc.send(JSON.stringify({ type: "ping", t: performance.timeOrigin + performance.now() }));
    sent++;
    timer = setTimeout(ping, sent < 8 ? 250 : 2000);
  };
  dc.onopen = ping;
  dc.onclose = () => clearTimeout(timer);
  dc.onmessage = (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch (_) { return; }
    if (m.type === "frame") {
      if (meta.lastSeq !== null && m.seq > meta.lastSeq + 1) meta.missed += m.seq - meta.lastSeq - 1;
      meta.lastSeq = m.seq;
      meta.frames++;
      meta.byRtp.set(m.rtp_ts, m);
      if (meta.byRtp.size > META_FRAMES) meta.byRtp.delete(meta.byRtp.keys().next().value);
    } else if (m.type === "pong") {
      const t1 = performance.timeOrigin + performance.now();
      meta.pings.push({ rtt: t1 - m.t, offset: m.server_us / 1000 - (m.t + t1) / 2 });
      if (meta.pings.length > META_PINGS) meta.pings.shift();
      const best = meta.pings.reduce((a, b) => (b.rtt < a.rtt ? b : a));
      meta.offset = best.offset; meta.rtt = best.rtt;
    }
  };
}

function readStripe() {
  const w = video.videoWidth, h = video.videoHeight;
  if (w < 512 || h < 48) return null;
  // A smaller rendition (a slow link) or a size limit scales the stripe: its cells no
  // longer sit where they are read, and garbage can look like a time.
  const opt = select.selectedOptions[0];
  if (opt && opt.dataset.width && Number(opt.dataset.width) !== w) return null;
  // Copy the stripe region 1:1 (source pixels 0..512 x 0..48).
  stripeCtx.drawImage(video, 0, 0, 512, 48, 0, 0, 512, 48);
  const px = stripeCtx.getImageData(0, 0, 512, 48).data;
  const words = [0, 0, 0];
  for (let row = 0; row < 3; row++) {
    let word = 0;
    for (let c = 0; c < 32; c++) {
      const i = ((16 * row + 8) * 512 + (16 * c + 8)) * 4;
      const luma = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
      word = word * 2 + (luma >= 128 ? 1 : 0);
    }
    words[row] = word;
  }
  const tMs = (words[0] * 4294967296 + words[1]) / 1000;
  // A frame without a stripe reads as garbage: accept only plausible times.
  if (!(Math.abs(Date.now() - tMs) < 60000)) return null;
  return { tMs, seq: words[2] };
}

function drawChart() {
  const c = $("chart"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  if (!latencySamples.length) return;
  const max = Math.max(50, ...latencySamples);
  ctx.strokeStyle = "#7d7"; ctx.beginPath();
  latencySamples.forEach((v, i) => {
    const x = (i / (LATENCY_WINDOW - 1)) * c.width, y = c.height - (v / max) * (c.height - 4) - 2;
    if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#aaa"; ctx.fillText(`${max.toFixed(0)} ms`, 2, 10);
}

function pushSample(list, v) {
  list.push(v);
  if (list.length > LATENCY_WINDOW) list.shift();
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

// Capture → display of a presented frame (requestVideoFrameCallback's `frame`), from what
// the metadata channel `m` said of it and the server's clock offset; null until both.
function captureToDisplay(m, frame) {
  const info = frame.rtpTimestamp !== undefined ? m.byRtp.get(frame.rtpTimestamp) : undefined;
  if (!info || m.offset === null) return null;
  // expectedDisplayTime is on the performance clock; map it to wall-clock ms.
  const shownMs = performance.timeOrigin + (frame.expectedDisplayTime || performance.now());
  // The server's capture time on our clock: minus the server's offset.
  return { latency: shownMs + m.offset - info.captured_us / 1000, info };
}

function onVideoFrame(_now, frame) {
  mark("first-frame");
  // expectedDisplayTime is on the performance clock; map it to wall-clock ms.
  const shownMs = performance.timeOrigin + (frame.expectedDisplayTime || performance.now());
  const s = readStripe();
  const seen = captureToDisplay(meta, frame);
  let stripe = null;
  if (s) stripe = { last: shownMs - s.tMs, p50: pushSample(stripeSamples, shownMs - s.tMs), seq: s.seq };
  const cross = stripe ? ` · stripe ${stripe.last.toFixed(1)} ms (p50 ${stripe.p50.toFixed(1)})` : "";
  if (seen) {
    const { latency, info } = seen;
    const p50 = pushSample(latencySamples, latency);
    $("latencyText").textContent = `capture → display ${latency.toFixed(1)} ms (p50 ${p50.toFixed(1)}) · frame #${info.seq}${cross}`;
    window.lumacast.latency = {
      last: latency, p50, seq: info.seq, samples: latencySamples.length, source: "metadata",
      stripe, clock_offset_ms: meta.offset, clock_rtt_ms: meta.rtt, frames_missed: meta.missed,
    };
  } else if (stripe) {
    const p50 = pushSample(latencySamples, stripe.last);
    $("latencyText").textContent = `capture → display ${stripe.last.toFixed(1)} ms (p50 ${p50.toFixed(1)}) · frame #${stripe.seq} (stripe)`;
    window.lumacast.latency = { last: stripe.last, p50, seq: stripe.seq, samples: latencySamples.length, source: "stripe", stripe };
  } else {
    $("latencyText").textContent = "capture → display: waiting for the metadata channel and the server's clock";
  }
  video.requestVideoFrameCallback(onVideoFrame);
}
if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
  video.requestVideoFrameCallback(onVideoFrame);
}
setInterval(drawChart, 500);


// ── Display and stream controls ─────────────────────────────────────────────────
// Every change is a PATCH of /api/detectors/{name}/params: the server maps the raw
// frame before encoding, so all viewers see it at once and nobody reconnects.
let params = null;          // parameters in force, as the server last reported them
let placement = null;       // where the shown picture sits in the detector frame
let maxValue = 4095;        // full scale of the detector's raw data
let patchTimer = null, pendingPatch = {};
const paramStatus = $("paramStatus");

function detectorPath(suffix) { return `/api/detectors/${encodeURIComponent(select.value)}/${suffix}`; }

function showParams(view) {
  params = view.params;
  placement = view.placement || null;
  if (window.lumacast) drawScaleBar();
  maxValue = (view.source && view.source.max_value) || maxValue;
  for (const id of ["wmin", "wmax"]) $(id).max = maxValue;
  const win = params.window_mode === "manual" ? [params.window_min, params.window_max]
    : (view.effective_window || [0, maxValue]);
  if (document.activeElement !== $("wmin")) { $("wmin").value = win[0]; $("wminN").value = win[0]; }
  if (document.activeElement !== $("wmax")) { $("wmax").value = win[1]; $("wmaxN").value = win[1]; }
  $("autoLive").checked = params.window_mode === "auto";
  $("gamma").value = Math.log10(params.gamma).toFixed(2);
  $("gammaV").textContent = params.gamma.toFixed(2);
  $("colormap").value = params.colormap;
  $("maxFps").value = params.max_fps ?? "";
  $("bitrate").value = params.bitrate ? (params.bitrate / 1e6).toFixed(1) : "";
  $("maxWidth").value = params.max_width ?? "";
  $("binning").value = String(params.binning);
  for (const [id, q] of [["snapRaw", ""], ["snapTiff", "?format=tiff"], ["snapDisplay", "?kind=display"]]) {
    // Links cannot carry headers: the token goes in the query.
    const tq = token ? `${q ? "&" : "?"}access_token=${encodeURIComponent(token)}` : "";
    $(id).href = detectorPath("snapshot") + q + tq;
  }
}

async function loadParams() {
  try { showParams(await api(detectorPath("params"))); } catch (e) { paramStatus.textContent = e.message; }
}

async function sendPatch(change) {
  Object.assign(pendingPatch, change);
  clearTimeout(patchTimer);
  // Coalesce slider moves: at most one request per 80 ms.
  patchTimer = setTimeout(async () => {
    const body = pendingPatch; pendingPatch = {};
    try {
      const res = await authFetch(detectorPath("params"), {
        method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const json = await res.json();
      if (!res.ok) { paramStatus.textContent = `✗ ${json.message}`; paramStatus.className = "bad"; loadParams(); return; }
      paramStatus.textContent = "✓ applied"; paramStatus.className = "ok";
      showParams(json);
    } catch (e) { paramStatus.textContent = `✗ ${e.message}`; paramStatus.className = "bad"; }
  }, 80);
}

function windowChanged(fromNumber) {
  let lo = Number(fromNumber ? $("wminN").value : $("wmin").value);
  let hi = Number(fromNumber ? $("wmaxN").value : $("wmax").value);
  if (lo >= hi) return;   // the server would refuse it: wait for a valid pair
  $("wmin").value = lo; $("wminN").value = lo; $("wmax").value = hi; $("wmaxN").value = hi;
  sendPatch({ window_mode: "manual", window_min: lo, window_max: hi });
}
$("wmin").oninput = () => windowChanged(false);
$("wmax").oninput = () => windowChanged(false);
$("wminN").onchange = () => windowChanged(true);
$("wmaxN").onchange = () => windowChanged(true);
$("autoOnce").onclick = async () => {
  try {
    const h = await api(detectorPath("histogram"));
    if (h.p99_9 > h.p0_1) sendPatch({ window_mode: "manual", window_min: h.p0_1, window_max: h.p99_9 });
  } catch (e) { paramStatus.textContent = e.message; }
};
$("autoLive").onchange = () => sendPatch({ window_mode: $("autoLive").checked ? "auto" : "full" });
$("fullRange").onclick = () => sendPatch({ window_mode: "full" });
$("gamma").oninput = () => {
  const g = Math.pow(10, Number($("gamma").value));
  $("gammaV").textContent = g.toFixed(2);
  sendPatch({ gamma: Number(g.toFixed(3)) });
};
$("colormap").onchange = () => sendPatch({ colormap: $("colormap").value });
$("maxFps").onchange = () => sendPatch({ max_fps: $("maxFps").value === "" ? null : Number($("maxFps").value) });
$("bitrate").onchange = () => sendPatch({ bitrate: $("bitrate").value === "" ? null : Math.round(Number($("bitrate").value) * 1e6) });
$("maxWidth").onchange = () => sendPatch({ max_width: $("maxWidth").value === "" ? null : Number($("maxWidth").value) });
$("binning").onchange = () => sendPatch({ binning: Number($("binning").value) });
$("toggleControls").onclick = () => $("controls").classList.toggle("hidden");

async function updateHistogram() {
  if (!wanted || $("controls").classList.contains("hidden")) return;
  let h;
  try { h = await api(detectorPath("histogram") + "?bins=128"); } catch (_) { return; }
  const c = $("histogram"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const logs = h.bins.map((n) => Math.log1p(n));
  const top = Math.max(1, ...logs);
  const bw = c.width / h.bins.length;
  ctx.fillStyle = "#6a8";
  logs.forEach((v, i) => { const hh = (v / top) * (c.height - 2); ctx.fillRect(i * bw, c.height - hh, Math.max(1, bw - 0.3), hh); });
  if (h.window) {
    const x = (v) => (v / (h.max_value + 1)) * c.width;
    ctx.fillStyle = "rgba(255,200,80,.15)";
    ctx.fillRect(x(h.window[0]), 0, x(h.window[1]) - x(h.window[0]), c.height);
    ctx.strokeStyle = "#fc6"; ctx.beginPath();
    for (const v of h.window) { ctx.moveTo(x(v) + .5, 0); ctx.lineTo(x(v) + .5, c.height); }
    ctx.stroke();
  }
  $("histInfo").textContent = `raw ${h.min}…${h.max} of ${h.max_value}` + (h.window ? ` · window ${h.window[0]}…${h.window[1]}` : "");
  window.lumacast.histogram = h;
}
setInterval(updateHistogram, 1000);

$("start").onclick = start;
$("stop").onclick = stop;
select.onchange = () => { loadParams(); if (wanted) connect(); };
setInterval(updateOverlay, 1000);

// ── Raw values where the scientist points ──────────────────────────────────────────
// Hover: the raw value under the cursor; shift-drag: a line profile; alt- or ctrl-drag:
// min / max / mean of a rectangle. All from GET /api/detectors/{name}/values on the
// newest raw frame, in detector pixels: the screen point is mapped onto the shown
// picture (object-fit: contain letterboxes it), then back through the placement the
// server reports with the parameters (ROI origin, binning times the size-limit factor).
// At most one request in flight; hover asks at most every 100 ms, the newest point wins.
const readout = $("readout"), readoutText = $("readoutText"), profileCanvas = $("profile");
const marks = $("marks");
const HOVER_MS = 100;
const pointer = { last: null, profile: null, rect: null, lastAt: 0, requests: 0 };
let valuesBusy = false, valuesNext = null, valuesTimer = null, lastValuesSent = 0;
let placementAskedAt = 0;
let drag = null;   // {kind: "line" | "rect", a: {cx, cy, x, y}, b: {...}}

// Screen point → detector pixel {x, y}, or null off the picture.
function toDetector(clientX, clientY) {
  const vw = video.videoWidth, vh = video.videoHeight;
  if (!vw || !vh || !placement) return null;
  const r = video.getBoundingClientRect();
  const scale = Math.min(r.width / vw, r.height / vh);
  const left = r.left + (r.width - vw * scale) / 2, top = r.top + (r.height - vh * scale) / 2;
  const px = (clientX - left) / scale, py = (clientY - top) / scale;   // picture pixels
  if (px < 0 || py < 0 || px >= vw || py >= vh) return null;
  // A lower rendition of the ladder is a scaled copy of the placement's picture.
  const ox = px * placement.width / vw, oy = py * placement.height / vh;
  const x = Math.min(placement.frame_width - 1, placement.x0 + Math.floor(ox * placement.factor));
  const y = Math.min(placement.frame_height - 1, placement.y0 + Math.floor(oy * placement.factor));
  return { x, y };
}

function fmt(v) {
  if (Array.isArray(v)) return `[${v.map(fmt).join(", ")}]`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

// A scale bar's length as people write it: "0.5 µm", "20 µm", "2 mm".
function fmtUm(um) {
  const n = (v) => String(Number(v.toPrecision(4)));
  return um >= 1000 ? `${n(um / 1000)} mm` : `${n(um)} µm`;
}
// A readout's µm (always µm, so that numbers compare): "2073.5".
function um6(v) { return String(Number(v.toPrecision(6))); }

// The round length (1, 2 or 5 × 10^n) nearest to `um` on a log scale.
function roundLength(um) {
  const p = Math.pow(10, Math.floor(Math.log10(um)));
  return [1, 2, 5, 10].map((k) => k * p).reduce((a, b) => (Math.abs(Math.log(b / um)) < Math.abs(Math.log(a / um)) ? b : a));
}

// Draws the scale bar `el` (a .scalebar beside `videoEl` in a positioned box) on
// the shown picture: a round length of about 1/5 of the picture's width, bottom left
// (above `above`, the single view's readout, when given).
// The screen → detector scale comes from the placement (ROI, binning × size limit, a
// lower rendition's scaling) and the letterboxing of object-fit: contain. Returns what
// it drew ({um, px, label, um_per_screen_px}), or null (hidden) without a pixel size.
function placeScaleBar(el, videoEl, place, pixelUm, above) {
  const vw = videoEl.videoWidth, vh = videoEl.videoHeight;
  const box = el.parentElement;   // positioned (#stage, a tile); offsetParent is null while hidden
  if (!pixelUm || !place || !vw || !vh || !box || !box.offsetParent) { el.style.display = "none"; return null; }
  const r = videoEl.getBoundingClientRect(), b = box.getBoundingClientRect();
  const scale = Math.min(r.width / vw, r.height / vh);   // screen px per video px
  if (!(scale > 0)) { el.style.display = "none"; return null; }
  // µm per screen pixel: video px → placement output px → detector px → µm.
  const umPerPx = pixelUm * place.factor * (place.width / vw) / scale;
  const picW = vw * scale, picH = vh * scale;
  const um = roundLength(umPerPx * picW / 5);
  const px = um / umPerPx;
  const left = r.left - b.left + (r.width - picW) / 2, top = r.top - b.top + (r.height - picH) / 2;
  let bottom = top + picH - 8;
  if (above && above.offsetParent) bottom = Math.min(bottom, above.getBoundingClientRect().top - b.top - 6);
  el.style.display = "block";
  el.style.width = `${px}px`;
  el.style.left = `${Math.max(8, left + 12)}px`;
  el.style.top = `${bottom - 26}px`;
  const label = fmtUm(um);
  el.firstElementChild.textContent = label;
  return { um, px, label, um_per_screen_px: umPerPx, picture_px: picW };
}

function askValues(query, kind) {
  valuesNext = { query, kind, askedAt: performance.now() };
  pumpValues();
}

async function pumpValues() {
  if (valuesBusy || !valuesNext) return;
  const wait = valuesNext.kind === "point" ? lastValuesSent + HOVER_MS - performance.now() : 0;
  if (wait > 0) { clearTimeout(valuesTimer); valuesTimer = setTimeout(pumpValues, wait); return; }
  const { query, kind, askedAt } = valuesNext;
  valuesNext = null; valuesBusy = true; lastValuesSent = performance.now(); pointer.requests++;
  try {
    const v = await api(detectorPath("values") + "?" + query);
    // The frame changed size (another detector setting): refresh the placement.
    if (placement && (v.frame.width !== placement.frame_width || v.frame.height !== placement.frame_height)) loadParams();
    showValues(v, kind);
    // Pointer moved → its raw value shown, in the page (window.lumacast.pointer.shownMs).
    if (kind === "point") pointer.shownMs = Math.round(performance.now() - askedAt);
  } catch (e) {
    readoutText.textContent = e.message;
  } finally {
    valuesBusy = false;
    pumpValues();
  }
}

function showValues(v, kind) {
  pointer.lastAt = performance.now();
  const unit = v.frame.pixel_format;
  if (kind === "point") {
    pointer.last = v;
    const at = v.x_um !== undefined ? ` (${um6(v.x_um)}, ${um6(v.y_um)} µm)` : "";
    readoutText.textContent = `x ${v.x}  y ${v.y}${at}  value ${fmt(v.value)} (${unit}, frame ${v.seq})`;
  } else if (kind === "line") {
    pointer.profile = v;
    drawProfile(v);
    readoutText.textContent = `line (${v.from}) → (${v.to}): ${v.count} px` +
      (v.length_um !== undefined ? `, ${um6(v.length_um)} µm long` : "");
  } else {
    pointer.rect = v;
    const r = v.rect;
    readoutText.textContent = `rect ${r.width}×${r.height} at (${r.x}, ${r.y}), ${v.count} px` +
      (v.width_um !== undefined ? ` = ${um6(v.width_um)} × ${um6(v.height_um)} µm` : "") + "\n" +
      `min ${fmt(v.min)}  max ${fmt(v.max)}  mean ${fmt(v.mean)}`;
  }
  readout.dataset.kind = kind;
}

function drawProfile(v) {
  const c = profileCanvas, ctx = c.getContext("2d");
  c.style.display = "block";
  ctx.clearRect(0, 0, c.width, c.height);
  const rgb = Array.isArray(v.values[0]);
  const series = rgb ? [0, 1, 2].map((i) => v.values.map((p) => p[i])) : [v.values];
  const all = series.flat();
  const lo = Math.min(...all), hi = Math.max(...all), span = Math.max(1, hi - lo);
  const colours = rgb ? ["#f66", "#6d6", "#69f"] : ["#fc6"];
  series.forEach((s, k) => {
    ctx.strokeStyle = colours[k]; ctx.beginPath();
    s.forEach((val, i) => {
      const x = s.length > 1 ? (i / (s.length - 1)) * (c.width - 1) : 0;
      const y = c.height - 12 - ((val - lo) / span) * (c.height - 16);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  });
  ctx.fillStyle = "#aaa"; ctx.font = "10px monospace";
  ctx.fillText(`${lo} … ${hi}`, 2, c.height - 2);
}

function drawMarks() {
  const r = marks.getBoundingClientRect();
  if (marks.width !== Math.round(r.width) || marks.height !== Math.round(r.height)) {
    marks.width = Math.round(r.width); marks.height = Math.round(r.height);
  }
  const ctx = marks.getContext("2d");
  ctx.clearRect(0, 0, marks.width, marks.height);
  if (!drag) return;
  const ax = drag.a.cx - r.left, ay = drag.a.cy - r.top, bx = drag.b.cx - r.left, by = drag.b.cy - r.top;
  ctx.strokeStyle = "#fc6"; ctx.lineWidth = 1.5; ctx.beginPath();
  if (drag.kind === "line") { ctx.moveTo(ax, ay); ctx.lineTo(bx, by); } else ctx.rect(ax, ay, bx - ax, by - ay);
  ctx.stroke();
}

function dragQuery(d) {
  const { a, b } = d;
  if (d.kind === "line") return `x0=${a.x}&y0=${a.y}&x1=${b.x}&y1=${b.y}`;
  const x = Math.min(a.x, b.x), y = Math.min(a.y, b.y);
  return `rect=${x},${y},${Math.abs(a.x - b.x) + 1},${Math.abs(a.y - b.y) + 1}`;
}

video.addEventListener("mousedown", (e) => {
  const kind = e.shiftKey ? "line" : (e.altKey || e.ctrlKey) ? "rect" : null;
  const p = toDetector(e.clientX, e.clientY);
  if (!kind || !p) return;
  e.preventDefault();
  drag = { kind, active: true, a: { cx: e.clientX, cy: e.clientY, ...p }, b: { cx: e.clientX, cy: e.clientY, ...p } };
  drawMarks();
});
window.addEventListener("mousemove", (e) => {
  if (drag && drag.active) {
    const p = toDetector(e.clientX, e.clientY);
    if (p) { drag.b = { cx: e.clientX, cy: e.clientY, ...p }; drawMarks(); }
    return;
  }
  if (e.target !== video || !wanted) return;
  // No placement yet (e.g. a push detector of unknown size before its first frame).
  if (!placement && performance.now() - placementAskedAt > 1000) { placementAskedAt = performance.now(); loadParams(); }
  const p = toDetector(e.clientX, e.clientY);
  if (p) askValues(`x=${p.x}&y=${p.y}`, "point");
});
window.addEventListener("mouseup", () => {
  if (!drag || !drag.active) return;
  drag.active = false;
  askValues(dragQuery(drag), drag.kind);
});
window.addEventListener("keydown", (e) => {
  if (e.key === "Escape") { drag = null; drawMarks(); profileCanvas.style.display = "none"; }
});
window.addEventListener("resize", () => { drag = null; drawMarks(); drawScaleBar(); });

// The single view's scale bar (when the detector's pixel_um is known).
function drawScaleBar() {
  window.lumacast.scaleBar = placeScaleBar($("scalebar"), video, placement, params && params.pixel_um, readout);
}
setInterval(drawScaleBar, 500);

// Expose a tiny hook for automated tests.
window.lumacast = { start, stop, loadParams, timeline, get pc() { return pc; }, get params() { return params; },
  pointer, toDetector };
mark("script");

(async () => {
  // The detector list and the first offer (with its ICE gathering) at once.
  const listed = (async () => {
    for (;;) {
      try { await loadDetectors(); mark("detectors"); return; }
      catch (e) { setStatus(`server unreachable: ${e.message}`, "bad"); await new Promise((r) => setTimeout(r, 1000)); }
    }
  })();
  const query = new URLSearchParams(location.search);
  if (!GRID && query.get("autostart") !== "0") start(listed);
  await listed;
  loadParams();
})();

// ── Several detectors at once (?grid=1) ─────────────────────────────────────────────
// One tile per running detector (every configured one when none runs yet; `&detectors=a,b`
// picks them), at most GRID_MAX; detectors that start later join. Each tile is a viewer
// of its own, made by the functions above: its own peer connection through the same
// webrtc_offer (with detectorName), its own metadata channel, the single view's overlay
// numbers (resolution, fps, bitrate, frames decoded, capture → display) and scale bar.
// A tile reconnects by itself (backoff, and on a stall) as the single view does.
const GRID_MAX = 16;
const tiles = [];

function addTile(name) {
  const el = document.createElement("div");
  el.className = "tile";
  el.innerHTML = '<video autoplay playsinline muted></video>' +
    '<div class="scalebar"><span></span><div class="bar"></div></div><div class="tov">connecting…</div>';
  $("grid").appendChild(el);
  const t = {
    name, el, video: el.querySelector("video"), ov: el.querySelector(".tov"), sb: el.querySelector(".scalebar"),
    pc: null, session: 0, meta: newMeta(), last: null, samples: [], latency: null, fps: 0, decoded: 0,
    state: "new", error: null, retryTimer: null, retryMs: RETRY_MIN_MS, lastProgress: 0,
    params: null, placement: null, scaleBar: null,
  };
  const onFrame = (_now, frame) => {
    const seen = captureToDisplay(t.meta, frame);
    if (seen) t.latency = { last: seen.latency, p50: pushSample(t.samples, seen.latency), seq: seen.info.seq };
    t.video.requestVideoFrameCallback(onFrame);
  };
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) t.video.requestVideoFrameCallback(onFrame);
  tiles.push(t);
  const cols = Math.ceil(Math.sqrt(tiles.length));
  $("grid").style.gridTemplateColumns = `repeat(${cols}, minmax(0, 1fr))`;
  $("grid").style.gridTemplateRows = `repeat(${Math.ceil(tiles.length / cols)}, minmax(0, 1fr))`;
  tileConnect(t);
  tileParams(t);
}

function tileRetry(t, reason) {
  t.session++;
  if (t.pc) { try { t.pc.close(); } catch (_) { /* already closed */ } }
  t.pc = null; t.last = null; t.error = reason; t.state = "retrying";
  clearTimeout(t.retryTimer);
  t.retryTimer = setTimeout(() => tileConnect(t), t.retryMs);
  t.retryMs = Math.min(t.retryMs * 2, RETRY_MAX_MS);
}

async function tileConnect(t) {
  const my = ++t.session;
  t.lastProgress = performance.now();
  try {
    const conn = newReceiver(t.video, await iceServers());
    if (my !== t.session) { conn.close(); return; }
    t.pc = conn; t.state = "connecting";
    openMetadataChannel(conn, () => my === t.session, t.meta);
    conn.onconnectionstatechange = () => {
      if (my !== t.session) return;
      t.state = conn.connectionState;
      if (t.state === "connected") { t.retryMs = RETRY_MIN_MS; t.error = null; }
      else if (t.state === "failed" || t.state === "closed") tileRetry(t, `connection ${t.state}`);
    };
    await conn.setLocalDescription(await conn.createOffer());
    await waitForGathering(conn);
    const answer = await api("/LiveViewController/webrtc_offer", {
      sdp: conn.localDescription.sdp, type: "offer", detectorName: t.name,
    });
    if (my !== t.session) return;
    await conn.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  } catch (e) {
    if (my === t.session) tileRetry(t, e.message);
  }
}

// The tile's placement and pixel size, for its scale bar.
async function tileParams(t) {
  try {
    const v = await api(`/api/detectors/${encodeURIComponent(t.name)}/params`);
    t.params = v.params; t.placement = v.placement || null;
  } catch (_) { /* next time */ }
}

async function updateTiles() {
  const now = performance.now();
  for (const t of tiles) {
    t.scaleBar = placeScaleBar(t.sb, t.video, t.placement, t.params && t.params.pixel_um);
    if (!t.pc) { t.ov.textContent = `${t.name}\n${t.error ? `retrying: ${t.error}` : "connecting…"}`; continue; }
    let inbound = null;
    try { inbound = await inboundVideo(t.pc); } catch (_) { continue; }
    const { fps, kbps } = inboundRates(inbound, t.last, now);
    if (inbound && (!t.last || inbound.framesDecoded > t.last.framesDecoded)) t.lastProgress = now;
    if (inbound) t.last = { t: now, framesDecoded: inbound.framesDecoded || 0, bytesReceived: inbound.bytesReceived || 0 };
    t.fps = fps; t.decoded = inbound ? inbound.framesDecoded : 0;
    if (now - t.lastProgress > STALL_MS) { tileRetry(t, `no video for ${STALL_MS / 1000} s`); continue; }
    const w = t.video.videoWidth, h = t.video.videoHeight;
    t.ov.textContent = [
      `${t.name}  (${t.state})`,
      `${w && h ? `${w}x${h}` : "—"}  ${fps.toFixed(1)} fps  ${(kbps / 1000).toFixed(2)} Mb/s`,
      `decoded ${t.decoded}  dropped ${inbound ? (inbound.framesDropped || 0) : 0}`,
      `capture → display ${t.latency ? `${t.latency.last.toFixed(1)} ms (p50 ${t.latency.p50.toFixed(1)})` : "—"}`,
    ].join("\n");
  }
}

async function startGrid() {
  document.body.classList.add("grid");
  $("gridToggle").textContent = "Single view";
  const want = (new URLSearchParams(location.search).get("detectors") || "").split(",").filter(Boolean);
  let detectors;
  for (;;) {
    try { ({ detectors } = await api("/api/detectors")); break; }
    catch (e) { setStatus(`server unreachable: ${e.message}`, "bad"); await new Promise((r) => setTimeout(r, 1000)); }
  }
  const running = detectors.filter((d) => d.running).map((d) => d.name);
  const names = want.length ? want : (running.length ? running : detectors.map((d) => d.name));
  names.slice(0, GRID_MAX).forEach(addTile);
  setStatus(`grid: ${tiles.length} detector${tiles.length === 1 ? "" : "s"}` +
    (names.length > GRID_MAX ? ` (the first ${GRID_MAX} of ${names.length})` : ""), "ok");
  setInterval(updateTiles, 1000);
  setInterval(async () => {
    tiles.forEach(tileParams);
    if (want.length || tiles.length >= GRID_MAX) return;
    try {
      const { detectors } = await api("/api/detectors");
      for (const d of detectors) {
        if (d.running && tiles.length < GRID_MAX && !tiles.some((t) => t.name === d.name)) addTile(d.name);
      }
    } catch (_) { /* next time */ }
  }, 5000);
}

$("gridToggle").onclick = () => {
  const q = new URLSearchParams(location.search);
  if (GRID) q.delete("grid"); else q.set("grid", "1");
  location.search = q.toString();
};
window.lumacast.grid = tiles;
if (GRID) startGrid();

// ---- Publishing (WHIP endpoints, Janus rooms): GET/POST /api/publish, DELETE /api/publish/{id}
const publishList = document.getElementById("publishList");
const publishStatus = document.getElementById("publishStatus");
const publishUrl = document.getElementById("publishUrl");

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function updatePublish() {
  let j;
  try { j = await api("/api/publish"); } catch (_) { return; }
  const targets = j.targets || [];
  window.lumacast.publish = targets;
  if (!targets.length) { publishList.innerHTML = '<span style="color:#999">not published anywhere</span>'; return; }
  publishList.innerHTML = targets.map((t) => {
    const cls = t.state === "publishing" ? "ok" : (t.last_error ? "bad" : "warn");
    const rate = t.state === "publishing" ? ` · ${(t.bitrate_bps / 1e6).toFixed(2)} Mb/s · ${t.fps} fps · ${t.keyframe_requests} key req` : "";
    const err = t.last_error && t.state !== "publishing" ? `<br><span class="bad">${escapeHtml(t.last_error)}</span>` : "";
    return `<div class="pub"><button data-id="${t.id}" title="stop publishing there">stop</button>` +
      `${escapeHtml(t.detector)} → ${escapeHtml(t.target)}<br><span class="${cls}">${escapeHtml(t.state)}</span>${rate}${err}</div>`;
  }).join("");
}

publishList.addEventListener("click", async (e) => {
  const id = e.target.dataset && e.target.dataset.id;
  if (!id) return;
  try {
    const res = await authFetch(`/api/publish/${id}`, { method: "DELETE" });
    const j = await res.json();
    publishStatus.textContent = res.ok ? "stopped" : j.message;
  } catch (err) { publishStatus.textContent = err.message; }
  updatePublish();
});

document.getElementById("publishAdd").addEventListener("click", async () => {
  const url = publishUrl.value.trim();
  if (!url) { publishStatus.textContent = "enter a WHIP URL or janus+http://…?room=N"; return; }
  try {
    const res = await authFetch("/api/publish", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ url, detector: select.value || undefined }),
    });
    const j = await res.json();
    publishStatus.textContent = res.ok ? "publishing…" : j.message;
    if (res.ok) publishUrl.value = "";
  } catch (err) { publishStatus.textContent = err.message; }
  updatePublish();
});

updatePublish();
setInterval(updatePublish, 2000);
