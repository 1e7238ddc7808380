// Records the offers Debian's Chromium makes, for tests/golden_offers.rs: a plain
// receive-only video offer (what a WHEP player sends) and our page's offer (video with
// abs-capture-time asked for, and the metadata data channel). Fully gathered on
// loopback only. Usage: node tests/browser/record_offers.mjs OUT_DIR
import { writeFileSync } from "node:fs";
import { fail, launchChromium } from "./chromium.mjs";

const out = process.argv[2] || fail("usage: record_offers.mjs OUT_DIR");
const browser = await launchChromium();
try {
  const page = await browser.newPage();
  const offers = await page.evaluate(async () => {
    const gathered = async (pc) => {
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
        setTimeout(resolve, 3000);
      });
      return pc.localDescription.sdp;
    };
    const whep = new RTCPeerConnection();
    whep.addTransceiver("video", { direction: "recvonly" });
    const page = new RTCPeerConnection();
    const t = page.addTransceiver("video", { direction: "recvonly" });
    t.setHeaderExtensionsToNegotiate(t.getHeaderExtensionsToNegotiate().map((e) =>
      (e.uri.endsWith("/abs-capture-time") ? { ...e, direction: "sendrecv" } : e)));
    page.createDataChannel("lumacast-meta");
    return { whep: await gathered(whep), page: await gathered(page), ua: navigator.userAgent };
  });
  const version = (offers.ua.match(/Chrome\/(\d+)/) || [])[1] || "unknown";
  writeFileSync(`${out}/chromium-${version}-whep.sdp`, offers.whep);
  writeFileSync(`${out}/chromium-${version}-page.sdp`, offers.page);
  console.log(JSON.stringify({ version, files: [`chromium-${version}-whep.sdp`, `chromium-${version}-page.sdp`] }));
} finally {
  await browser.close();
}
