/**
 * Debian's Chromium (`/usr/bin/chromium`) driven by playwright-core: never a downloaded
 * browser. Outside CI a machine without it skips the browser tests with a message; under
 * CI=true they run and fail, because CI must install it (.ci/run does).
 */
import { type Browser, chromium } from "playwright-core";

export const CHROMIUM_PATH = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

/** The flags this machine needs: no sandbox as root, and no calls home on a closed network. */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export function chromiumInstalled(): boolean {
  try {
    return Deno.statSync(CHROMIUM_PATH).isFile;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** True when browser tests must be skipped here (no Chromium, not CI), after saying why. */
export function skipBrowserTests(): boolean {
  if (chromiumInstalled()) return false;
  if (Deno.env.get("CI") === "true") return false;
  console.warn(
    `browser tests skipped: no Chromium at ${CHROMIUM_PATH} ` +
      "(apt-get install -y chromium, or set CHROMIUM_PATH); under CI=true they fail instead",
  );
  return true;
}

export async function launchChromium(): Promise<Browser> {
  if (!chromiumInstalled()) {
    throw new Error(
      `error[chromium_missing]: no Chromium at ${CHROMIUM_PATH}; install Debian's ` +
        "(apt-get install -y chromium) — .ci/run does this before the tests",
    );
  }
  return await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
}
