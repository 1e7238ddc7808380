// A standard WHEP player against lumacast: the npm package @eyevinn/webrtc-player
// (bundled for the browser with esbuild), in Debian's Chromium, on a page of another
// origin (so CORS preflight is exercised too). Usage:
//   node tests/browser/whep_player.mjs http://127.0.0.1:PORT DETECTOR [screenshot.png]
// Prints one JSON line with what the player got, then PASS; exits non-zero on failure.
import { fail, launchChromium } from "./chromium.mjs";
import * as esbuild from "esbuild";
import * as http from "node:http";

const server = process.argv[2].replace(/\/$/, "");
const detector = process.argv[3] || "synthetic";
const screenshot = process.argv[4] || "";

// The player is CommonJS with npm dependencies: bundle it into one script.
const bundle = await esbuild.build({
  stdin: {
    contents: "import { WebRTCPlayer } from '@eyevinn/webrtc-player'; window.WebRTCPlayer = WebRTCPlayer;",
    resolveDir: new URL(".", import.meta.url).pathname,
  },
  bundle: true,
  format: "iife",
  platform: "browser",
  write: false,
  logLevel: "silent",
}).catch((e) => fail(`bundling @eyevinn/webrtc-player: ${e.message}`));
const playerJs = bundle.outputFiles[0].text;

// The player's page comes from its own little web server: another origin than
// lumacast's, so the player's POST with application/sdp needs lumacast's CORS
// preflight answer, as on a real lab web page.
const html = `<!doctype html><html><head><meta charset="utf-8"><title>WHEP player</title>
<style>body{margin:0;background:#222} video{width:100%;height:auto}</style></head>
<body><video id="video" autoplay muted playsinline></video>
<script>${playerJs}</script>
<script>
  window.player = new WebRTCPlayer({
    video: document.getElementById("video"),
    type: "whep",
    iceServers: [],
    debug: true,
  });
  window.player.load(new URL(${JSON.stringify(`${server}/whep/${detector}`)}));
</script></body></html>`;
const pageServer = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/html" });
  res.end(html);
});
await new Promise((r) => pageServer.listen(0, "127.0.0.1", r));
const pageUrl = `http://localhost:${pageServer.address().port}/`;

const browser = await launchChromium();

async function sessions() {
  const r = await fetch(`${server}/api/sessions`);
  return (await r.json()).sessions;
}

try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => console.log(`[page] ${m.text()}`));
  const t0 = Date.now();
  await page.goto(pageUrl);
  await page.waitForFunction(() => {
    const v = document.getElementById("video");
    return v.videoWidth > 0 && v.currentTime > 0;
  }, null, { timeout: 20000 }).catch(() => fail("the WHEP player's video did not start within 20 s"));
  const firstFrameMs = Date.now() - t0;
  const stats = () => page.evaluate(async () => {
    const v = document.getElementById("video");
    const q = v.getVideoPlaybackQuality();
    return {
      width: v.videoWidth,
      height: v.videoHeight,
      frames: q.totalVideoFrames,
      state: window.player.peer.connectionState,
      resource: window.player.adapter.resource || null,
    };
  });
  const a = await stats();
  await page.waitForTimeout(2000);
  const b = await stats();
  const fps = (b.frames - a.frames) / 2;
  const live = await sessions();
  console.log(JSON.stringify({ firstFrameMs, ...b, fps, sessions: live.length }));
  if (screenshot) await page.screenshot({ path: screenshot });
  if (b.state !== "connected") fail(`connection state ${b.state}`);
  if (!(b.width > 0)) fail("no picture size");
  if (fps < 10) fail(`only ${fps} fps shown`);
  if (!b.resource || !b.resource.includes(`/whep/${detector}/sessions/`)) {
    fail(`the player did not get the session resource from Location: ${b.resource}`);
  }
  if (live.length !== 1) fail(`expected 1 server session, found ${live.length}`);
  // Stopping the player DELETEs its WHEP resource: the server ends the session.
  await page.evaluate(() => window.player.unload());
  const deadline = Date.now() + 5000;
  let left = await sessions();
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = await sessions();
  }
  if (left.length !== 0) fail(`the player's DELETE left ${left.length} session(s)`);
  console.log("PASS");
} finally {
  await browser.close();
  pageServer.close();
}
