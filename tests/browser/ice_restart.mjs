// Headless Chromium on the live-view page while its network changes under it: prints
// "PLAYING" once frames are shown, keeps playing for SECONDS more (the caller changes the
// viewer's address meanwhile), then one JSON line:
//   peer_connections   RTCPeerConnections the page made (1: the session survived)
//   ice_restarts       the page's ICE restarts: when (ms), why, when answered
//   restart_to_frame_ms  first ICE restart → the first frame presented after it
//   longest_gap_ms     longest time between presented frames
//   frames_after       frames presented after the last restart was answered
//   viewer_ids         the viewer ids the page was given (one: the same session)
// Usage: node tests/browser/ice_restart.mjs http://HOST:PORT/ SECONDS [screenshot.png]
import { fail, launchChromium } from "./chromium.mjs";

const [baseUrl, secondsArg, shot = ""] = process.argv.slice(2);
if (!baseUrl || !secondsArg) fail("usage: ice_restart.mjs URL SECONDS [screenshot.png]");
const url = new URL(baseUrl);
url.searchParams.set("autostart", "1");

const browser = await launchChromium();
try {
  const page = await browser.newPage();
  await page.addInitScript(() => {
    window.__pcs = 0;
    window.__viewerIds = [];
    const Orig = window.RTCPeerConnection;
    window.RTCPeerConnection = function (...a) { window.__pcs++; return new Orig(...a); };
    window.RTCPeerConnection.prototype = Orig.prototype;
    const origFetch = window.fetch;
    window.fetch = async (...a) => {
      const res = await origFetch(...a);
      if (String(a[0]).includes("webrtc_offer")) {
        res.clone().json().then((j) => { if (j.viewer_id) window.__viewerIds.push(j.viewer_id); }).catch(() => {});
      }
      return res;
    };
    window.__frames = [];
    const watch = () => {
      const v = document.querySelector("video");
      if (!v || !v.requestVideoFrameCallback) return setTimeout(watch, 50);
      const cb = () => { window.__frames.push(performance.now()); v.requestVideoFrameCallback(cb); };
      v.requestVideoFrameCallback(cb);
    };
    document.addEventListener("DOMContentLoaded", watch);
  });
  await page.goto(url.toString());
  await page.waitForFunction(() => window.__frames.length >= 30, null, { timeout: 20000 })
    .catch(() => fail("no video within 20 s"));
  console.log("PLAYING");
  await page.waitForTimeout(Number(secondsArg) * 1000);
  const r = await page.evaluate(() => ({
    frames: window.__frames,
    restarts: (window.lumacast && window.lumacast.iceRestarts) || [],
    pcs: window.__pcs,
    viewerIds: window.__viewerIds,
  }));
  if (shot) await page.screenshot({ path: shot });
  let gap = 0;
  for (let i = 1; i < r.frames.length; i++) gap = Math.max(gap, r.frames[i] - r.frames[i - 1]);
  const first = r.restarts[0];
  const last = r.restarts[r.restarts.length - 1];
  const firstAfter = first ? r.frames.find((t) => t > first.at) : undefined;
  console.log(JSON.stringify({
    peer_connections: r.pcs,
    viewer_ids: r.viewerIds,
    ice_restarts: r.restarts,
    restart_to_frame_ms: first && firstAfter !== undefined ? Math.round(firstAfter - first.at) : null,
    longest_gap_ms: Math.round(gap),
    frames_after: last && last.answered ? r.frames.filter((t) => t > last.answered).length : 0,
    frames: r.frames.length,
  }));
} finally {
  await browser.close();
}
