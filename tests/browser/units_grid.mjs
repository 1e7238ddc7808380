// The scale bar and the grid view in Debian's Chromium. Usage:
//   node tests/browser/units_grid.mjs http://127.0.0.1:PORT/ SCALED UNSCALED [shot-prefix]
// SCALED is a detector with a pixel size (pixel_um), UNSCALED one without.
// 1. The single view of SCALED draws a scale bar of a round length (1, 2 or 5 × 10^n µm)
//    about a fifth of the picture wide, whose µm per screen pixel matches the picture's
//    placement; a ROI of half the width halves it; hovering shows µm in the readout.
// 2. ?grid=1 plays both (running) detectors at once: two tiles, each its own peer connection
//    decoding frames (getStats framesDecoded > 0) with its overlay; only SCALED's tile
//    has a scale bar.
import { fail, launchChromium } from "./chromium.mjs";

const [url, scaled, unscaled, shots] = process.argv.slice(2);
const browser = await launchChromium();
const round = (um) => {
  const m = um / Math.pow(10, Math.floor(Math.log10(um) + 1e-9));
  return [1, 2, 5].some((k) => Math.abs(m - k) < 1e-6);
};

try {
  // ── 1. the scale bar ──
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => console.log(`[page] ${m.text()}`));
  await page.goto(`${url}?detector=${scaled}`);
  await page.waitForFunction(() => {
    const v = document.getElementById("video");
    return v.videoWidth > 0 && v.currentTime > 0 && window.lumacast.scaleBar;
  }, null, { timeout: 30000 }).catch(() => fail("no video with a scale bar within 30 s"));
  const bar = async () => page.evaluate(() => {
    const el = document.getElementById("scalebar");
    const r = el.querySelector(".bar").getBoundingClientRect();
    const v = document.getElementById("video");
    return { ...window.lumacast.scaleBar, pixel_um: window.lumacast.params.pixel_um,
      shown: getComputedStyle(el).display, bar_px: r.width, text: el.textContent,
      video: [v.videoWidth, v.videoHeight] };
  });
  const a = await bar();
  console.log(JSON.stringify({ scale_bar: a }));
  if (a.shown !== "block") fail(`the scale bar is not shown: ${JSON.stringify(a)}`);
  if (!round(a.um)) fail(`${a.um} µm is not a round length`);
  const share = a.px / a.picture_px;
  if (!(share > 0.12 && share < 0.32)) fail(`the bar is ${share} of the picture, not about a fifth`);
  if (Math.abs(a.bar_px - a.px) > 1) fail(`the bar is drawn ${a.bar_px} px wide, not ${a.px}`);
  if (!a.text.includes(a.label) || !/µm|mm/.test(a.label)) fail(`label ${a.text}`);
  // The whole frame across the picture: µm per screen pixel = pixel_um × frame width / picture px.
  const expected = a.pixel_um * a.video[0] / a.picture_px;
  if (Math.abs(a.um_per_screen_px / expected - 1) > 0.01) {
    fail(`µm per screen pixel ${a.um_per_screen_px}, expected ${expected}`);
  }
  if (shots) await page.screenshot({ path: `${shots}-scalebar.png` });

  // Hovering shows the point in µm beside the pixels.
  const box = await page.locator("#video").boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.move(box.x + box.width / 2 + 3, box.y + box.height / 2 + 2);
  await page.waitForFunction(() => window.lumacast.pointer.last && window.lumacast.pointer.last.x_um !== undefined,
    null, { timeout: 10000 }).catch(() => fail("no point readout with µm"));
  const readout = await page.evaluate(() => document.getElementById("readoutText").textContent);
  console.log(JSON.stringify({ readout }));
  if (!/µm/.test(readout)) fail(`readout without µm: ${readout}`);

  // A ROI half the frame wide, shown in the same box: half the µm per screen pixel.
  const frameW = a.video[0], frameH = a.video[1];
  const patched = await page.evaluate(async ([w, h, name]) => {
    const r = await fetch(`/api/detectors/${name}/params`, {
      method: "PATCH", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ roi: [0, 0, w / 2, h / 2] }),
    });
    await window.lumacast.loadParams();
    return r.status;
  }, [frameW, frameH, scaled]);
  if (patched !== 200) fail(`PATCH roi: ${patched}`);
  await page.waitForFunction((w) => document.getElementById("video").videoWidth === w / 2 &&
    window.lumacast.scaleBar && window.lumacast.scaleBar.um_per_screen_px, frameW, { timeout: 15000 })
    .catch(() => fail("the ROI did not reach the video"));
  await page.waitForTimeout(700);
  const b = await bar();
  console.log(JSON.stringify({ scale_bar_roi: b }));
  if (Math.abs(b.um_per_screen_px / (a.um_per_screen_px / 2) - 1) > 0.01) {
    fail(`with a half-width ROI: ${b.um_per_screen_px} µm per screen pixel, expected ${a.um_per_screen_px / 2}`);
  }
  if (!round(b.um)) fail(`${b.um} µm is not a round length`);
  await page.evaluate(async (name) => {
    await fetch(`/api/detectors/${name}/params`, {
      method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ roi: null }),
    });
  }, scaled);
  // The grid shows the running detectors: start the other one too (as a user would).
  const started = await page.evaluate(async (name) => (await fetch("/LiveViewController/startLiveView", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ detectorName: name, protocol: "webrtc" }),
  })).status, unscaled);
  if (started !== 200) fail(`startLiveView ${unscaled}: ${started}`);
  await page.close();

  // ── 2. the grid ──
  const grid = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  grid.on("console", (m) => console.log(`[grid] ${m.text()}`));
  await grid.goto(`${url}?grid=1`);
  const tiles = async () => grid.evaluate(async () => Promise.all(window.lumacast.grid.map(async (t) => {
    let decoded = 0;
    if (t.pc) (await t.pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") decoded = s.framesDecoded; });
    return { name: t.name, decoded, width: t.video.videoWidth, state: t.pc ? t.pc.connectionState : null,
      overlay: t.ov.textContent, scale_bar: t.scaleBar };
  })));
  let seen = [];
  const until = Date.now() + 30000;
  for (;;) {
    seen = await tiles();
    if (seen.length === 2 && seen.every((t) => t.decoded > 5 && t.width > 0 && /fps/.test(t.overlay))) break;
    if (Date.now() > until) fail(`the grid did not play both detectors: ${JSON.stringify(seen)}`);
    await grid.waitForTimeout(500);
  }
  await grid.waitForTimeout(2500);   // overlays and scale bars refresh every second
  const first = seen;
  seen = await tiles();
  console.log(JSON.stringify({ grid: seen }));
  const names = seen.map((t) => t.name).sort();
  if (JSON.stringify(names) !== JSON.stringify([scaled, unscaled].sort())) fail(`tiles ${names}`);
  for (const t of seen) {
    const before = first.find((f) => f.name === t.name);
    if (!(t.decoded > before.decoded)) fail(`${t.name}: frames decoded did not rise`);
    if (t.state !== "connected") fail(`${t.name}: ${t.state}`);
    if (!/\d+x\d+/.test(t.overlay) || !/capture → display/.test(t.overlay)) fail(`${t.name} overlay: ${t.overlay}`);
  }
  const pcs = await grid.evaluate(() => new Set(window.lumacast.grid.map((t) => t.pc)).size);
  if (pcs !== 2) fail(`${pcs} peer connections for two tiles`);
  if (!seen.find((t) => t.name === scaled).scale_bar) fail("no scale bar on the scaled tile");
  if (seen.find((t) => t.name === unscaled).scale_bar) fail("a scale bar on the tile without a pixel size");
  if (shots) await grid.screenshot({ path: `${shots}-grid.png` });
  console.log("PASS");
} finally {
  await browser.close();
}
