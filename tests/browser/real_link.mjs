// Headless Chromium as a viewer behind a real link: opens the live-view page served by
// lumacast (which starts the stream by itself), plays for SECONDS and prints one JSON
// line of what the browser saw. Usage:
//   node tests/browser/real_link.mjs http://HOST:PORT/ SECONDS [screenshot.png] [--warmup S] [--detector NAME] [--dump FILE]
// Run it inside a network namespace (`ip netns exec NS node ...`) behind a shaped veth to
// see what a browser on a slow link gets; tests/browser.rs and
// scripts/bench-browser-links.sh do. The clock starts when the server's answer to the
// offer arrives; the figures "after warmup" count from S seconds later (default 3).
// --dump writes every presented frame's record and every stats sample to FILE (JSON).
//
// Output (one JSON line on stdout; exit 0 once the run is complete, even when nothing was
// shown: judging is the caller's job; exit 1 only when the page could not be driven):
//   first_frame_ms              answer -> first presented frame
//   offer_to_first_frame_ms     the page's first offer sent -> first presented frame
//   selected_pair               the last connection's selected ICE pair at the end:
//                               protocol (udp/tcp), candidate types, tcpType, relayProtocol
//                               (how a relay candidate reaches its TURN server), remote address
//   fps_after_warmup            decoded frames per second (getStats framesDecoded)
//   presented_fps_after_warmup  frames handed to requestVideoFrameCallback per second
//   max_gap_ms_after_warmup     longest time between presented frames (rVFC), including
//                               the window's edges (a freeze at the end shows)
//   latency_stripe_after_warmup capture -> display from the timestamp stripe, only on
//                               frames at full size (the stripe is 512x48 source pixels)
//   latency_rtp_after_warmup    capture -> display for every frame: the rVFC rtpTimestamp
//                               (the server's 90 kHz capture clock + a per-viewer offset)
//                               calibrated on the frames whose stripe was read
//   capture_to_receive_rtp_after_warmup  capture -> last packet received (rVFC receiveTime)
//   nack_count, pli_count, fir_count, packets_lost, freeze_count, ...  (inbound-rtp)
//   jitter_buffer_ms_per_frame_after_warmup  delta jitterBufferDelay / delta emitted count
//   sizes, sizes_after_warmup   presented frames per videoWidth x videoHeight
//   size_changes                when the presented size changed, and the gap around it
//   per_second                  presented fps, sizes and the server's view of the link
//                               (estimate, rendition) for each second of the run
import { fail, launchChromium } from "./chromium.mjs";
import { writeFileSync } from "node:fs";

const args = process.argv.slice(2);
const positional = [];
const opts = { warmup: 3, detector: "", dump: "" };
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--warmup") opts.warmup = Number(args[++i]);
  else if (args[i] === "--detector") opts.detector = args[++i];
  else if (args[i] === "--dump") opts.dump = args[++i];
  else positional.push(args[i]);
}
const [baseUrl, secondsArg, screenshot = ""] = positional;
if (!baseUrl || !secondsArg) {
  fail("usage: real_link.mjs URL SECONDS [screenshot.png] [--warmup S] [--detector NAME]");
}
const seconds = Number(secondsArg);
const warmup = Math.min(opts.warmup, seconds);
const url = new URL(baseUrl);
if (!url.searchParams.has("autostart")) url.searchParams.set("autostart", "1");
if (opts.detector) url.searchParams.set("detector", opts.detector);

// The full size (the only one whose stripe is readable): the detector's own size.
let full = { width: 1280, height: 720 };
try {
  const res = await fetch(new URL("/api/detectors", url));
  const { detectors } = await res.json();
  const d = detectors.find((x) => x.name === opts.detector) || detectors[0];
  if (d) full = { width: d.width, height: d.height };
} catch (e) {
  console.error(`cannot read /api/detectors (${e.message}); assuming 1280x720`);
}

const browser = await launchChromium();
let exitCode = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") console.error(`[page] ${m.text()}`); });
  page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));

  // Before the page's own script: remember every peer connection it makes (it reconnects
  // by itself after a stall) and the moment and viewer id of each answer.
  await page.addInitScript(() => {
    const rl = (window.__rl = { pcs: [], answers: [], offers: [] });
    const Native = window.RTCPeerConnection;
    window.RTCPeerConnection = function (...a) {
      const pc = new Native(...a);
      rl.pcs.push({ pc, last: null, created: performance.now() });
      return pc;
    };
    window.RTCPeerConnection.prototype = Native.prototype;
    Object.setPrototypeOf(window.RTCPeerConnection, Native);
    const nativeFetch = window.fetch.bind(window);
    window.fetch = async (input, init) => {
      const path = typeof input === "string" ? input : input.url;
      if (path.includes("/webrtc_offer")) rl.offers.push(performance.now());
      const res = await nativeFetch(input, init);
      if (path.includes("/webrtc_offer") && res.ok) {
        res.clone().json().then((j) => rl.answers.push({ t: performance.now(), viewer_id: j.viewer_id }))
          .catch(() => {});
      }
      return res;
    };
  });

  await page.goto(url.toString());
  // The clock starts with the first answer (the page may take ~1.5 s to gather first).
  await page.waitForFunction(() => window.__rl.answers.length > 0, null, { timeout: 20000 })
    .catch(() => fail("the page got no answer to its offer within 20 s"));

  // Per-frame records (rVFC), per-second samples of getStats and of the server's
  // /api/sessions; all in the page, read once at the end.
  await page.evaluate(({ full }) => {
    const rl = window.__rl;
    rl.t0 = rl.answers[0].t;
    rl.frames = [];
    rl.samples = [];
    rl.link = [];
    const video = document.getElementById("video");
    const canvas = document.createElement("canvas");
    canvas.width = 512; canvas.height = 48;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    // Same reading as web/app.js and crates/frame/src/stripe.rs: centre of each 16x16 cell.
    const readStripe = () => {
      ctx.drawImage(video, 0, 0, 512, 48, 0, 0, 512, 48);
      const px = ctx.getImageData(0, 0, 512, 48).data;
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
      return Math.abs(Date.now() - tMs) < 60000 ? { tMs, seq: words[2] } : null;
    };
    const onFrame = (now, m) => {
      const isFull = m.width === full.width && m.height === full.height;
      const s = isFull ? readStripe() : null;
      rl.frames.push({
        t: (m.expectedDisplayTime || now) - rl.t0,
        shown: performance.timeOrigin + (m.expectedDisplayTime || now),
        received: m.receiveTime !== undefined ? performance.timeOrigin + m.receiveTime : null,
        w: m.width, h: m.height,
        rtp: m.rtpTimestamp,
        presented: m.presentedFrames,
        st: s ? s.tMs : null, seq: s ? s.seq : null,
      });
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);

    rl.sample = async () => {
      const t = performance.now() - rl.t0;
      for (const e of rl.pcs) {
        try {
          (await e.pc.getStats()).forEach((s) => {
            if (s.type === "inbound-rtp" && s.kind === "video") e.last = s;
          });
        } catch (_) { /* closed: keep its last stats */ }
      }
      const sum = (k) => rl.pcs.reduce((a, e) => a + ((e.last && e.last[k]) || 0), 0);
      const keys = [
        "framesDecoded", "framesReceived", "framesDropped", "keyFramesDecoded", "nackCount",
        "pliCount", "firCount", "packetsLost", "packetsReceived", "bytesReceived",
        "jitterBufferDelay", "jitterBufferTargetDelay", "jitterBufferMinimumDelay",
        "jitterBufferEmittedCount", "totalDecodeTime", "totalProcessingDelay",
        "totalAssemblyTime", "framesAssembledFromMultiplePackets", "freezeCount",
        "totalFreezesDuration", "pauseCount", "totalPausesDuration", "retransmittedPacketsReceived",
      ];
      const out = { t, pcs: rl.pcs.length };
      for (const k of keys) out[k] = sum(k);
      const cur = rl.pcs.length ? rl.pcs[rl.pcs.length - 1].last : null;
      out.frameWidth = cur ? cur.frameWidth : null;
      out.frameHeight = cur ? cur.frameHeight : null;
      out.decoder = cur ? cur.decoderImplementation : null;
      return out;
    };
    // The server's view of this viewer's link (the page's last answer names it).
    rl.pollLink = async () => {
      const id = rl.answers[rl.answers.length - 1].viewer_id;
      const t = performance.now() - rl.t0;
      try {
        const j = await (await fetch("/api/sessions")).json();
        const me = (j.sessions || []).find((x) => x.id === id);
        if (me && me.link) rl.link.push({ t, ...me.link });
      } catch (_) { /* the server is busy or gone: no sample */ }
    };
    rl.timer = setInterval(async () => {
      rl.samples.push(await rl.sample());
      rl.pollLink();
    }, 1000);
  }, { full });

  const t0 = await page.evaluate(() => window.__rl.t0);
  const waitUntil = async (s) => {
    const now = await page.evaluate(() => performance.now());
    const ms = t0 + s * 1000 - now;
    if (ms > 0) await page.waitForTimeout(ms);
  };
  await waitUntil(warmup);
  const atWarmup = await page.evaluate(() => window.__rl.sample());
  await waitUntil(seconds);
  const atEnd = await page.evaluate(() => window.__rl.sample());
  const rl = await page.evaluate(async () => {
    clearInterval(window.__rl.timer);
    const r = window.__rl;
    const video = document.getElementById("video");
    // The last connection's selected candidate pair: UDP or TCP, which candidate types.
    let selected = null;
    if (r.pcs.length) {
      const stats = await r.pcs[r.pcs.length - 1].pc.getStats();
      let pairId = null;
      stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
      const pair = pairId && stats.get(pairId);
      if (pair) {
        const local = stats.get(pair.localCandidateId) || {};
        const remote = stats.get(pair.remoteCandidateId) || {};
        selected = {
          protocol: local.protocol || null, local_type: local.candidateType || null,
          local_tcp_type: local.tcpType || null, local_relay_protocol: local.relayProtocol || null,
          remote_protocol: remote.protocol || null, remote_type: remote.candidateType || null,
          remote_tcp_type: remote.tcpType || null,
          remote_address: remote.address ? `${remote.address}:${remote.port}` : null,
        };
      }
    }
    return {
      selected, offer_t: r.offers.length ? r.offers[0] - r.t0 : null,
      frames: r.frames, samples: r.samples, link: r.link, answers: r.answers,
      pcs: r.pcs.length, state: r.pcs.length ? r.pcs[r.pcs.length - 1].pc.connectionState : "none",
      videoWidth: video.videoWidth, videoHeight: video.videoHeight,
    };
  });
  if (screenshot) await page.screenshot({ path: screenshot });
  if (opts.dump) writeFileSync(opts.dump, JSON.stringify(rl));
  console.log(JSON.stringify(summarise(rl, atWarmup, atEnd)));
} catch (e) {
  console.error(`FAIL: ${e.stack || e.message}`);
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);

function quantiles(v) {
  if (!v.length) return { p50_ms: null, p99_ms: null, min_ms: null, max_ms: null, samples: 0 };
  const s = [...v].sort((a, b) => a - b);
  const q = (p) => round(s[Math.round((s.length - 1) * p)]);
  return { p50_ms: q(0.5), p99_ms: q(0.99), min_ms: q(0), max_ms: q(1), samples: s.length };
}

function round(x, digits = 1) {
  if (x === null || x === undefined || !Number.isFinite(x)) return null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function summarise(rl, a, b) {
  const ms = seconds * 1000, wms = warmup * 1000;
  const frames = rl.frames.filter((f) => f.t <= ms);
  const inside = frames.filter((f) => f.t >= wms);
  const span = (b.t - a.t) / 1000;
  const d = (k) => b[k] - a[k];
  const perFrame = (k, n) => (n > 0 ? round((1000 * d(k)) / n, 2) : null);

  // Gaps between presented frames after the warmup, the window's edges included.
  const edges = [wms, ...inside.map((f) => f.t), ms];
  let maxGap = 0, maxGapAt = wms;
  for (let i = 1; i < edges.length; i++) {
    if (edges[i] - edges[i - 1] > maxGap) { maxGap = edges[i] - edges[i - 1]; maxGapAt = edges[i - 1]; }
  }
  // Frames presented without a callback of ours (the main thread was busy).
  let missedCallbacks = 0;
  for (let i = 1; i < frames.length; i++) {
    const step = frames[i].presented - frames[i - 1].presented;
    if (step > 1) missedCallbacks += step - 1;
  }

  // RTP timestamps: unwrap (32 bits, 90 kHz), then the offset to the wall clock is what the
  // frames with a readable stripe say (median), as lumacast-probe's latency_rtp does.
  let prev = null, e = 0;
  for (const f of frames) {
    if (f.rtp === undefined || f.rtp === null) { f.ext = null; continue; }
    if (prev !== null) e += ((f.rtp - prev) << 0); // int32 difference handles the wrap
    prev = f.rtp;
    f.ext = e;
  }
  const offsets = frames.filter((f) => f.st !== null && f.ext !== null).map((f) => f.st - f.ext / 90);
  // A frame whose stripe disagrees with that offset was not the one rVFC described (the
  // video moved on before drawImage): its stripe reading is left out of the stripe figures.
  let median = null;
  if (offsets.length) {
    const sorted = [...offsets].sort((x, y) => x - y);
    median = sorted[Math.floor(sorted.length / 2)];
  }
  let mismatched = 0;
  for (const f of frames) {
    if (f.st !== null && f.ext !== null && Math.abs(f.st - f.ext / 90 - median) > 5) {
      f.st = null;
      mismatched += 1;
    }
  }
  let latencyRtp = { p50_ms: null, p99_ms: null, samples: 0, error: "no frame with a readable stripe: nothing to calibrate the RTP clock on" };
  let toReceive = { p50_ms: null, p99_ms: null, samples: 0 };
  if (offsets.length) {
    const kept = offsets.filter((o) => Math.abs(o - median) <= 5).sort((x, y) => x - y);
    const offset = median;
    const captured = (f) => offset + f.ext / 90;
    const withRtp = inside.filter((f) => f.ext !== null);
    latencyRtp = {
      ...quantiles(withRtp.map((f) => f.shown - captured(f))),
      calibration_frames: offsets.length,
      // Spread of the frames kept (those the stripe and rVFC agree on).
      calibration_spread_ms: round(kept[kept.length - 1] - kept[0], 2),
      stripe_mismatched_frames: mismatched,
    };
    toReceive = quantiles(withRtp.filter((f) => f.received !== null).map((f) => f.received - captured(f)));
  }

  const count = (list) => {
    const out = {};
    for (const f of list) out[`${f.w}x${f.h}`] = (out[`${f.w}x${f.h}`] || 0) + 1;
    return out;
  };
  // Size changes and how long the picture stood still around each.
  const sizeChanges = [];
  for (let i = 1; i < frames.length; i++) {
    const p = frames[i - 1], f = frames[i];
    if (p.w !== f.w || p.h !== f.h) {
      sizeChanges.push({ t_s: round(f.t / 1000, 2), from: `${p.w}x${p.h}`, to: `${f.w}x${f.h}`, gap_ms: round(f.t - p.t, 0) });
    }
  }
  // Each second: presented frames, their sizes, the server's estimate and rendition.
  const perSecond = [];
  for (let s = 0; s < Math.ceil(seconds); s++) {
    const inS = frames.filter((f) => f.t >= s * 1000 && f.t < (s + 1) * 1000);
    const link = rl.link.filter((l) => l.t < (s + 1) * 1000).pop();
    perSecond.push({
      fps: inS.length,
      sizes: count(inS),
      estimate_kbps: link && link.estimate_bps !== undefined ? Math.round(link.estimate_bps / 1000) : null,
      rendition: link ? link.rendition : null,
      server_loss: link && link.loss !== undefined ? round(link.loss, 3) : null,
    });
  }
  const lastLink = rl.link.length ? rl.link[rl.link.length - 1] : null;

  return {
    seconds, warmup_s: warmup,
    first_frame_ms: frames.length ? round(frames[0].t, 0) : null,
    offer_to_first_frame_ms: frames.length && rl.offer_t !== null ? round(frames[0].t - rl.offer_t, 0) : null,
    selected_pair: rl.selected,
    state: rl.state, peer_connections: rl.pcs, answers: rl.answers.length,
    decoder: b.decoder,
    fps_after_warmup: span > 0 ? round(d("framesDecoded") / span, 2) : null,
    presented_fps_after_warmup: round(inside.length / ((ms - wms) / 1000), 2),
    max_gap_ms_after_warmup: round(maxGap, 0),
    max_gap_at_s: round(maxGapAt / 1000, 2),
    frames_decoded: b.framesDecoded,
    frames_presented: frames.length,
    frames_dropped: b.framesDropped,
    rvfc_missed_callbacks: missedCallbacks,
    keyframes_decoded: b.keyFramesDecoded,
    keyframes_decoded_after_warmup: d("keyFramesDecoded"),
    latency_stripe_after_warmup: quantiles(inside.filter((f) => f.st !== null).map((f) => f.shown - f.st)),
    latency_rtp_after_warmup: latencyRtp,
    capture_to_receive_rtp_after_warmup: toReceive,
    jitter_buffer_ms_per_frame_after_warmup: perFrame("jitterBufferDelay", d("jitterBufferEmittedCount")),
    jitter_buffer_target_ms_per_frame_after_warmup: perFrame("jitterBufferTargetDelay", d("jitterBufferEmittedCount")),
    jitter_buffer_minimum_ms_per_frame_after_warmup: perFrame("jitterBufferMinimumDelay", d("jitterBufferEmittedCount")),
    decode_ms_per_frame_after_warmup: perFrame("totalDecodeTime", d("framesDecoded")),
    processing_ms_per_frame_after_warmup: perFrame("totalProcessingDelay", d("framesDecoded")),
    nack_count: b.nackCount, nack_count_after_warmup: d("nackCount"),
    pli_count: b.pliCount, pli_count_after_warmup: d("pliCount"),
    fir_count: b.firCount,
    packets_received: b.packetsReceived,
    packets_lost: b.packetsLost,
    retransmitted_packets_received: b.retransmittedPacketsReceived,
    freeze_count: b.freezeCount, freezes_total_s: round(b.totalFreezesDuration, 2),
    freeze_count_after_warmup: d("freezeCount"),
    pause_count: b.pauseCount,
    received_kbps_after_warmup: span > 0 ? Math.round((8 * d("bytesReceived")) / span / 1000) : null,
    video_size_at_end: `${rl.videoWidth}x${rl.videoHeight}`,
    sizes: count(frames),
    sizes_after_warmup: count(inside),
    size_changes: sizeChanges,
    server_link_at_end: lastLink && {
      feedback: lastLink.feedback, estimate_kbps: lastLink.estimate_bps !== undefined ? Math.round(lastLink.estimate_bps / 1000) : null,
      loss: lastLink.loss, rendition: lastLink.rendition, size: `${lastLink.width}x${lastLink.height}`,
      rendition_switches: lastLink.rendition_switches,
      rtx: lastLink.rtx, padding_packets: lastLink.padding_packets, nack_resent: lastLink.nack_resent,
    },
    per_second: perSecond,
  };
}
