// What the browser checks share: failing with a message, and launching Debian's
// Chromium (CHROMIUM overrides the path) headless with autoplay allowed.
import { chromium } from "playwright-core";

export function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

// playwright gives every launch a fresh temporary profile.
// LUMACAST_IGNORE_CERT_ERRORS=1 (opt-in, for a server with --tls-self-signed) makes
// Chromium accept any certificate, as a user who clicked through the warning.
export async function launchChromium() {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  const args = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ];
  if (process.env.LUMACAST_IGNORE_CERT_ERRORS === "1") args.push("--ignore-certificate-errors");
  return chromium.launch({
    executablePath,
    headless: true,
    args,
  }).catch((e) => fail(`cannot launch ${executablePath}: ${e.message}`));
}
