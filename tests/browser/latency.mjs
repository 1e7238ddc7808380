// Glass-to-glass latency of a plain WHEP viewer in headless Chromium: a minimal page on
// the server's origin makes an RTCPeerConnection with one recvonly video transceiver,
// POSTs its offer to /whep/{detector}, plays the stream in a <video> and sets NO
// jitterBufferTarget / playoutDelayHint (as any WHEP player), so whatever playout delay
// the browser applies is its own choice or the server's (the playout-delay RTP header
// extension, when the answer negotiates it). Usage:
//   node tests/browser/latency.mjs http://HOST:PORT SECONDS [--warmup S] [--detector NAME] [--dump FILE] [--read videoframe|canvas]
// The clock starts when the WHEP answer arrives; figures "after warmup" count from S
// seconds later (default 3). --detector defaults to the server's first detector.
//
// Latency is capture -> display: the capture time the synthetic detector writes into the
// timestamp stripe (/work/shared/specs/timestamp-stripe.md), read back from each frame
// requestVideoFrameCallback reports, against that callback's expectedDisplayTime (the
// same reading and clock conversion as tests/browser/real_link.mjs). Only full-size frames
// carry a readable stripe; the RTP-clock figure covers every frame (calibrated on the
// striped ones). --read videoframe (default) reads the stripe's luma straight from the
// frame (WebCodecs VideoFrame.copyTo of the 512x48 rectangle: no colour conversion of the
// whole frame, cheap even at 2048x2048), falling back to the canvas when the frame is not
// YUV in memory; --read canvas uses drawImage + getImageData as real_link.mjs does.
//
// Output: one JSON line on stdout (exit 0 when the run completed, even when nothing was
// shown; exit 1 only when the page could not be driven):
//   latency_after_warmup          capture -> expected display, stripe: p50/p99/min/max ms
//   latency_presented_after_warmup capture -> rVFC presentationTime (frame handed to the
//                                 compositor), stripe. In headless Chromium (no display,
//                                 synthetic 60 Hz frames) expectedDisplayTime sits on that
//                                 grid: with playout delay 0,0 it is often 1-2 intervals
//                                 after presentationTime (varies per run), without it they
//                                 agree; it can also fall a few ms before presentationTime.
//                                 Both are given
//   clock_skew_ms                 Date.now() - (timeOrigin + performance.now()) at the end
//   latency_rtp_after_warmup      capture -> expected display for every frame (RTP clock)
//   capture_to_receive_after_warmup capture -> last packet received (rVFC receiveTime)
//   frames_rendered_after_warmup  rVFC callbacks after the warmup (+ presentedFrames delta)
//   fps_rendered_after_warmup, fps_decoded_after_warmup
//   per_frame_ms_after_warmup     getStats inbound-rtp deltas per frame: jitter_buffer
//                                 (jitterBufferDelay / jitterBufferEmittedCount), its
//                                 target and minimum, decode (totalDecodeTime /
//                                 framesDecoded), processing (totalProcessingDelay /
//                                 framesDecoded), assembly
//   frames_dropped(_after_warmup) inbound-rtp framesDropped
//   stripe_read_ms_after_warmup   time spent reading the stripe in the callback
//   playout_delay_offered / _negotiated  whether the offer / answer SDP carry the
//                                 playout-delay header extension (and its extmap line)
import { fail, launchChromium } from "./chromium.mjs";
import { writeFileSync } from "node:fs";

const args = process.argv.slice(2);
const positional = [];
const opts = { warmup: 3, detector: "", dump: "", read: "videoframe" };
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--warmup") opts.warmup = Number(args[++i]);
  else if (args[i] === "--detector") opts.detector = args[++i];
  else if (args[i] === "--dump") opts.dump = args[++i];
  else if (args[i] === "--read") opts.read = args[++i];
  else positional.push(args[i]);
}
const [baseArg, secondsArg] = positional;
if (!baseArg || !secondsArg) {
  fail("usage: latency.mjs URL SECONDS [--warmup S] [--detector NAME] [--dump FILE] [--read videoframe|canvas]");
}
const base = new URL(baseArg).origin;
const seconds = Number(secondsArg);
const warmup = Math.min(opts.warmup, seconds);

// Which detector, and its full size (the only one whose stripe is readable).
let detector = opts.detector || "synthetic";
let full = { width: 1280, height: 720 };
try {
  const res = await fetch(`${base}/api/detectors`);
  const { detectors } = await res.json();
  const d = detectors.find((x) => x.name === opts.detector) || detectors[0];
  if (d) { detector = d.name; full = { width: d.width, height: d.height }; }
} catch (e) {
  console.error(`cannot read /api/detectors (${e.message}); assuming ${detector} at 1280x720`);
}

// A bare page on the server's origin (so fetch to /whep is same-origin): playwright
// answers this one path itself, the server never sees it.
const pagePath = `${base}/__latency_bench__`;
const html = `<!doctype html><html><head><meta charset="utf-8"><title>latency</title>
<style>body{margin:0;background:#000} video{display:block;max-width:100vw;max-height:100vh}</style></head>
<body><video id="video" autoplay muted playsinline></video></body></html>`;

const browser = await launchChromium();
let exitCode = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") console.error(`[page] ${m.text()}`); });
  page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
  await page.route(pagePath, (route) => route.fulfill({ status: 200, contentType: "text/html", body: html }));
  await page.goto(pagePath);

  // Connect: recvonly video, the whole offer gathered (loopback: quick), POST, answer.
  const conn = await page.evaluate(async ({ detector }) => {
    const bench = (window.__bench = { frames: [] });
    const video = document.getElementById("video");
    const pc = new RTCPeerConnection();
    bench.pc = pc;
    const tr = pc.addTransceiver("video", { direction: "recvonly" });
    bench.receiver = tr.receiver;
    pc.ontrack = (e) => {
      video.srcObject = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
      video.play().catch(() => {});
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const t = setTimeout(resolve, 3000);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
      });
    });
    const offer = pc.localDescription.sdp;
    const res = await fetch(`/whep/${encodeURIComponent(detector)}`, {
      method: "POST", headers: { "content-type": "application/sdp" }, body: offer,
    });
    const answer = await res.text();
    if (res.status !== 201) return { error: `POST /whep/${detector}: ${res.status} ${answer.slice(0, 300)}` };
    bench.t0 = performance.now();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    const hints = {
      jitterBufferTarget: tr.receiver.jitterBufferTarget === undefined ? "unsupported" : tr.receiver.jitterBufferTarget,
      playoutDelayHint: tr.receiver.playoutDelayHint === undefined ? "unsupported" : tr.receiver.playoutDelayHint,
    };
    const extmap = (sdp) => sdp.split(/\r?\n/).filter((l) => l.startsWith("a=extmap:") && l.includes("playout-delay"));
    return { offerExt: extmap(offer), answerExt: extmap(answer), hints, location: res.headers.get("location") };
  }, { detector });
  if (conn.error) fail(conn.error);

  // Per-frame records (rVFC) with the stripe read from the frame; getStats on demand.
  await page.evaluate(({ full, readMode }) => {
    const bench = window.__bench;
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
    // The cheap way: the luma plane of the frame itself (WebCodecs VideoFrame from the
    // <video>, copyTo of the stripe's rectangle only; the software decoder's frames are in
    // memory). drawImage converts the whole frame to RGB first (~9 ms at 1280x720, ~40 ms
    // at 2048x2048 on this machine's CPU without a GPU), which takes the main thread from
    // rVFC and the CPU from the decoder.
    const words = (luma) => {
      const w = [0, 0, 0];
      for (let row = 0; row < 3; row++) {
        let word = 0;
        for (let c = 0; c < 32; c++) word = word * 2 + (luma(16 * c + 8, 16 * row + 8) >= 128 ? 1 : 0);
        w[row] = word;
      }
      const tMs = (w[0] * 4294967296 + w[1]) / 1000;
      return Math.abs(Date.now() - tMs) < 60000 ? { tMs, seq: w[2] } : null;
    };
    const YUV = new Set(["I420", "I420A", "I422", "I444", "NV12"]);
    const readPlane = async (vf) => {
      const rect = { x: 0, y: 0, width: 512, height: 48 };
      const buf = new Uint8Array(vf.allocationSize({ rect }));
      const layout = await vf.copyTo(buf, { rect });
      const { offset, stride } = layout[0];
      return words((x, y) => buf[offset + y * stride + x]);
    };
    bench.readMethod = { videoframe: 0, canvas: 0 };
    const onFrame = (now, m) => {
      const isFull = m.width === full.width && m.height === full.height;
      const shownRel = m.expectedDisplayTime || now;
      const rec = {
        t: shownRel - bench.t0,
        shown: performance.timeOrigin + shownRel,
        presentedAt: m.presentationTime !== undefined ? performance.timeOrigin + m.presentationTime : null,
        received: m.receiveTime !== undefined ? performance.timeOrigin + m.receiveTime : null,
        w: m.width, h: m.height,
        rtp: m.rtpTimestamp,
        presented: m.presentedFrames,
        st: null, seq: null, readMs: null,
      };
      bench.frames.push(rec);
      if (isFull) {
        const r0 = performance.now();
        let vf = null;
        if (readMode === "videoframe" && typeof VideoFrame === "function") {
          try { vf = new VideoFrame(video); } catch (_) { vf = null; }
          if (vf && !YUV.has(vf.format)) { vf.close(); vf = null; }
        }
        if (vf) {
          bench.readMethod.videoframe += 1;
          readPlane(vf).then((s) => {
            if (s) { rec.st = s.tMs; rec.seq = s.seq; }
          }).catch(() => {}).finally(() => { vf.close(); rec.readMs = performance.now() - r0; });
        } else {
          bench.readMethod.canvas += 1;
          const s = readStripe();
          if (s) { rec.st = s.tMs; rec.seq = s.seq; }
          rec.readMs = performance.now() - r0;
        }
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);

    bench.sample = async () => {
      const t = performance.now() - bench.t0;
      let last = null;
      (await bench.pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") last = s;
      });
      const keys = [
        "framesDecoded", "framesReceived", "framesDropped", "keyFramesDecoded", "nackCount",
        "pliCount", "firCount", "packetsLost", "packetsReceived", "bytesReceived",
        "jitterBufferDelay", "jitterBufferTargetDelay", "jitterBufferMinimumDelay",
        "jitterBufferEmittedCount", "totalDecodeTime", "totalProcessingDelay",
        "totalAssemblyTime", "framesAssembledFromMultiplePackets", "freezeCount",
        "totalFreezesDuration", "pauseCount", "totalPausesDuration",
      ];
      const out = { t, has: {} };
      for (const k of keys) {
        out.has[k] = !!last && last[k] !== undefined;
        out[k] = (last && last[k]) || 0;
      }
      out.frameWidth = last ? last.frameWidth : null;
      out.frameHeight = last ? last.frameHeight : null;
      out.decoder = last ? last.decoderImplementation : null;
      out.presentedFrames = bench.frames.length ? bench.frames[bench.frames.length - 1].presented : 0;
      out.callbacks = bench.frames.length;
      return out;
    };
  }, { full, readMode: opts.read });

  const t0 = await page.evaluate(() => window.__bench.t0);
  const waitUntil = async (s) => {
    const now = await page.evaluate(() => performance.now());
    const ms = t0 + s * 1000 - now;
    if (ms > 0) await page.waitForTimeout(ms);
  };
  await waitUntil(warmup);
  const atWarmup = await page.evaluate(() => window.__bench.sample());
  await waitUntil(seconds);
  const atEnd = await page.evaluate(() => window.__bench.sample());
  await page.waitForTimeout(300); // the last stripe reads (asynchronous) complete
  const run = await page.evaluate(() => {
    const b = window.__bench;
    const video = document.getElementById("video");
    const q = video.getVideoPlaybackQuality();
    return {
      frames: b.frames, state: b.pc.connectionState, readMethod: b.readMethod,
      videoWidth: video.videoWidth, videoHeight: video.videoHeight,
      quality: { total: q.totalVideoFrames, dropped: q.droppedVideoFrames },
      // The stripe is on the system clock; rVFC times are performance.timeOrigin + a
      // monotonic clock: how far apart the two are now.
      clockSkewMs: Date.now() - (performance.timeOrigin + performance.now()),
    };
  });
  if (opts.dump) writeFileSync(opts.dump, JSON.stringify({ conn, atWarmup, atEnd, ...run }));
  console.log(JSON.stringify(summarise(conn, run, atWarmup, atEnd)));
} catch (e) {
  console.error(`FAIL: ${e.stack || e.message}`);
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);

function quantiles(v) {
  if (!v.length) return { p50_ms: null, p99_ms: null, min_ms: null, max_ms: null, mean_ms: null, samples: 0 };
  const s = [...v].sort((a, b) => a - b);
  const q = (p) => round(s[Math.round((s.length - 1) * p)]);
  return { p50_ms: q(0.5), p99_ms: q(0.99), min_ms: q(0), max_ms: q(1), mean_ms: round(s.reduce((a, x) => a + x, 0) / s.length), samples: s.length };
}

function round(x, digits = 1) {
  if (x === null || x === undefined || !Number.isFinite(x)) return null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function summarise(conn, run, a, b) {
  const ms = seconds * 1000, wms = warmup * 1000;
  const frames = run.frames.filter((f) => f.t <= ms);
  const inside = frames.filter((f) => f.t >= wms);
  const span = (b.t - a.t) / 1000;
  const d = (k) => b[k] - a[k];
  const perFrame = (k, n) => (b.has[k] && n > 0 ? round((1000 * d(k)) / n, 2) : null);

  // RTP timestamps: unwrap (32 bits, 90 kHz); the offset to the wall clock is the median
  // of what the frames with a readable stripe say (as real_link.mjs does). A striped frame
  // disagreeing with it by > 5 ms was not the frame rVFC described (the video moved on
  // before drawImage): its stripe reading is left out.
  let prev = null, e = 0;
  for (const f of frames) {
    if (f.rtp === undefined || f.rtp === null) { f.ext = null; continue; }
    if (prev !== null) e += ((f.rtp - prev) << 0);
    prev = f.rtp;
    f.ext = e;
  }
  const offsets = frames.filter((f) => f.st !== null && f.ext !== null).map((f) => f.st - f.ext / 90);
  let offset = null, mismatched = 0;
  if (offsets.length) {
    const sorted = [...offsets].sort((x, y) => x - y);
    offset = sorted[Math.floor(sorted.length / 2)];
    for (const f of frames) {
      if (f.st !== null && f.ext !== null && Math.abs(f.st - f.ext / 90 - offset) > 5) { f.st = null; mismatched += 1; }
    }
  }
  const striped = inside.filter((f) => f.st !== null);
  const captured = (f) => offset + f.ext / 90;
  const withRtp = offset === null ? [] : inside.filter((f) => f.ext !== null);

  // Gaps between rendered frames after the warmup (window edges included).
  const edges = [wms, ...inside.map((f) => f.t), ms];
  let maxGap = 0;
  for (let i = 1; i < edges.length; i++) maxGap = Math.max(maxGap, edges[i] - edges[i - 1]);
  // Sequence numbers skipped between consecutive striped frames (not shown at all).
  let seqSkipped = 0;
  for (let i = 1; i < striped.length; i++) {
    const step = striped[i].seq - striped[i - 1].seq;
    if (step > 1) seqSkipped += step - 1;
  }
  const sizes = {};
  for (const f of inside) sizes[`${f.w}x${f.h}`] = (sizes[`${f.w}x${f.h}`] || 0) + 1;
  const lat = quantiles(striped.map((f) => f.shown - f.st));

  return {
    detector, full_size: `${full.width}x${full.height}`, seconds, warmup_s: warmup,
    playout_delay_offered: conn.offerExt.length > 0,
    playout_delay_negotiated: conn.answerExt.length > 0,
    playout_delay_extmap: conn.answerExt[0] || null,
    receiver_hints: conn.hints,
    state: run.state, decoder: b.decoder,
    clock_skew_ms: round(run.clockSkewMs, 2),
    first_frame_ms: frames.length ? round(frames[0].t, 0) : null,
    p50_ms: lat.p50_ms, p99_ms: lat.p99_ms,
    latency_after_warmup: lat,
    latency_presented_after_warmup: quantiles(striped.filter((f) => f.presentedAt !== null).map((f) => f.presentedAt - f.st)),
    latency_rtp_after_warmup: { ...quantiles(withRtp.map((f) => f.shown - captured(f))), stripe_mismatched_frames: mismatched },
    capture_to_receive_after_warmup: quantiles(withRtp.filter((f) => f.received !== null).map((f) => f.received - captured(f))),
    frames_rendered_after_warmup: inside.length,
    presented_frames_after_warmup: b.presentedFrames - a.presentedFrames,
    fps_rendered_after_warmup: round(inside.length / ((ms - wms) / 1000), 2),
    fps_decoded_after_warmup: span > 0 ? round(d("framesDecoded") / span, 2) : null,
    frames_received_after_warmup: d("framesReceived"),
    frames_decoded_after_warmup: d("framesDecoded"),
    frames_dropped: b.framesDropped,
    frames_dropped_after_warmup: d("framesDropped"),
    video_quality_dropped: run.quality.dropped,
    stripe_seq_skipped_after_warmup: seqSkipped,
    max_gap_ms_after_warmup: round(maxGap, 0),
    // The cost of reading the stripe in each callback (drawImage + getImageData), which
    // can make rVFC miss frames at large sizes: presented_frames counts those too.
    stripe_read_method: run.readMethod,
    stripe_read_ms_after_warmup: quantiles(inside.filter((f) => f.readMs !== null).map((f) => f.readMs)),
    per_frame_ms_after_warmup: {
      jitter_buffer: perFrame("jitterBufferDelay", d("jitterBufferEmittedCount")),
      jitter_buffer_target: perFrame("jitterBufferTargetDelay", d("jitterBufferEmittedCount")),
      jitter_buffer_minimum: perFrame("jitterBufferMinimumDelay", d("jitterBufferEmittedCount")),
      decode: perFrame("totalDecodeTime", d("framesDecoded")),
      processing: perFrame("totalProcessingDelay", d("framesDecoded")),
      assembly: perFrame("totalAssemblyTime", d("framesAssembledFromMultiplePackets")),
    },
    nack_count: b.nackCount, pli_count: b.pliCount, packets_lost: b.packetsLost,
    freeze_count: b.freezeCount, freeze_count_after_warmup: d("freezeCount"),
    received_kbps_after_warmup: span > 0 ? Math.round((8 * d("bytesReceived")) / span / 1000) : null,
    sizes_after_warmup: sizes,
    video_size_at_end: `${run.videoWidth}x${run.videoHeight}`,
  };
}
