/**
 * What the browser tests and the web benchmark run against: an ephemeral local stack (its
 * own Postgres, gateway and functions on free ports, so a running `deno task dev` is not
 * disturbed), the production build of the web app pointed at it, and Vite's preview server
 * serving that build.
 */
import { build, preview, type PreviewServer } from "vite";
import { freePort } from "../../scripts/standin/postgres.ts";
import type { JwtMode } from "../../scripts/standin/signing_keys.ts";
import { type RunningStack, startStack } from "../../scripts/standin/stack.ts";
import { webConfig } from "../vite.config.ts";

export interface WebStack {
  stack: RunningStack;
  /** The app's address, ending in `/`. */
  webUrl: string;
  /** Where the production build was written (a temp dir). */
  distDir: string;
  /** What the stack logged (for failure messages). */
  logs: string[];
  stop(): Promise<void>;
}

/** `jwt`: the kind of project the stack plays (see `deno task dev --jwt`); es256 by default. */
export async function startWebStack(options: { jwt?: JwtMode } = {}): Promise<WebStack> {
  const logs: string[] = [];
  const stack = await startStack({
    ephemeral: true,
    jwt: options.jwt,
    log: (line) => logs.push(line),
  });
  let server: PreviewServer | undefined;
  const distDir = await Deno.makeTempDir({ prefix: "supabase-agent-web-" });
  try {
    const options = {
      mode: "production" as const,
      supabaseUrl: stack.apiUrl,
      publishableKey: stack.publishableKey,
      outDir: distDir,
    };
    await build({ ...webConfig(options), logLevel: "error" });
    const port = freePort();
    server = await preview({
      ...webConfig(options),
      logLevel: "error",
      preview: { host: "127.0.0.1", port, strictPort: true },
    });
    const webUrl = server.resolvedUrls?.local[0] ?? `http://127.0.0.1:${port}/`;
    return {
      stack,
      webUrl,
      distDir,
      logs,
      async stop() {
        await server?.close();
        await stack.stop();
        await Deno.remove(distDir, { recursive: true });
      },
    };
  } catch (error) {
    await server?.close();
    await stack.stop();
    await Deno.remove(distDir, { recursive: true });
    throw error;
  }
}
