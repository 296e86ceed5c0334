/**
 * MCP `tools/call` throughput and latency of our `mcp` function against the reference server
 * `@modelcontextprotocol/server-everything` (Streamable HTTP, its `echo` tool), in the same
 * run, at 1 and 32 concurrent clients. Target: ours ≥ 1.0× the reference's throughput.
 *
 * Each server runs in its own process, so neither shares a CPU thread with the load generator
 * (the SDK clients here). Ours is the real thing per call: ES256 JWT verified against a JWKS,
 * the caller's grants read as him (RLS), the calculator run, one usage_metrics row written,
 * a new MCP Server and transport per request (stateless). The reference keeps a session per
 * client, in memory, and does no auth and no database work.
 *
 * Run as `deno run -A scripts/bench/mcp_bench.ts --serve` it is the child serving our
 * function (env: SUPABASE_DB_URL, MCP_DB_POOL_SIZE, SUPABASE_JWKS, SUPABASE_URL; prints
 * {"port":n}).
 */
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { tokenVerifierFromEnv } from "../../supabase/functions/_shared/auth.ts";
import { connect } from "../../supabase/functions/_shared/db/client.ts";
import { POOL_SIZES, poolSizeFromEnv } from "../../supabase/functions/_shared/db/config.ts";
import { createMcpApp } from "../../supabase/functions/_shared/mcp/app.ts";
import { createToolRegistry } from "../../supabase/functions/_shared/tools/registry.ts";
import { createUser, liftRequestLimits } from "../../supabase/tests/support/database.ts";
import { freePort } from "../standin/postgres.ts";
import { generateSigningKey, issueAccessToken, jwksOf } from "../standin/signing_keys.ts";
import { PROJECT_ROOT } from "../standin/supabase_cli.ts";
import { type LatencySummary, measure } from "./stats.ts";
import type { BenchContext, BenchResult } from "./types.ts";

const REFERENCE_PACKAGE = "@modelcontextprotocol/server-everything";
const REFERENCE_VERSION = "2026.8.31";
const SUPABASE_URL = "http://127.0.0.1:54321";
const CONCURRENCY = [1, 32];

interface Target {
  name: string;
  url: URL;
  headers: Record<string, string>;
  tool: string;
  args: Record<string, unknown>;
  stop(): Promise<void>;
}

export async function mcpBench(ctx: BenchContext): Promise<BenchResult[]> {
  const calls = (concurrency: number) =>
    ctx.smoke ? 8 * concurrency : concurrency === 1 ? 2_000 : 20_000;
  const warmup = ctx.smoke ? 4 : 200;

  const ours = await startOurs(ctx);
  let reference: Target | undefined;
  try {
    reference = await startReference();
    const results: BenchResult[] = [];
    const summaries = new Map<string, LatencySummary>();
    for (const concurrency of CONCURRENCY) {
      // Alternate the two at each level so neither gets a warmer machine.
      for (const target of [ours, reference]) {
        const summary = await run(target, concurrency, calls(concurrency), warmup);
        summaries.set(`${target.name}/${concurrency}`, summary);
        results.push({
          name: `MCP tools/call ${target.tool}, ${target.name}, ${concurrency} concurrent`,
          value: summary.perSecond,
          unit: "calls/s",
          detail: `p50 ${summary.p50.toFixed(2)} ms, p99 ${summary.p99.toFixed(2)} ms, ` +
            `${summary.count} calls`,
        });
      }
      const ratio = summaries.get(`${ours.name}/${concurrency}`)!.perSecond /
        summaries.get(`${reference.name}/${concurrency}`)!.perSecond;
      results.push({
        name: `MCP throughput, ours / reference, ${concurrency} concurrent`,
        value: ratio,
        unit: "×",
        target: ">= 1.0",
        pass: ratio >= 1.0,
      });
    }
    return results;
  } finally {
    await ours.stop();
    await reference?.stop();
  }
}

/** `concurrency` connected clients, each used by one worker, calling the tool `total` times. */
async function run(
  target: Target,
  concurrency: number,
  total: number,
  warmup: number,
): Promise<LatencySummary> {
  const clients = await Promise.all(
    Array.from({ length: concurrency }, () => connectClient(target)),
  );
  try {
    const callOnce = async (client: Client) => {
      const result = await client.callTool({ name: target.tool, arguments: target.args });
      if (result.isError) throw new Error(`${target.name}: ${JSON.stringify(result.content)}`);
    };
    await Promise.all(clients.map(async (client: Client) => {
      for (let i = 0; i < Math.ceil(warmup / concurrency); i++) await callOnce(client);
    }));
    const idle = [...clients];
    return await measure(total, concurrency, async () => {
      const client = idle.pop()!;
      try {
        await callOnce(client);
      } finally {
        idle.push(client);
      }
    });
  } finally {
    await Promise.all(clients.map((client: Client) => client.close()));
  }
}

async function connectClient(target: Target): Promise<Client> {
  const client = new Client({ name: "mcp-bench", version: "1.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(target.url, { requestInit: { headers: target.headers } }),
  );
  return client;
}

/** Our function in a child process, with a real user, a real ES256 token and its JWKS. */
async function startOurs(ctx: BenchContext): Promise<Target> {
  const key = await generateSigningKey();
  const user = await createUser(ctx.sql, "mcp-bench");
  // The benchmark measures the server, not the caller's quota.
  await liftRequestLimits(ctx.sql, user.id);
  const token = await issueAccessToken(key, {
    userId: user.id,
    email: user.email,
    issuer: `${SUPABASE_URL}/auth/v1`,
    expiresIn: 6 * 3600,
  });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--serve"],
    cwd: PROJECT_ROOT,
    env: {
      SUPABASE_DB_URL: ctx.databaseUrl,
      MCP_DB_POOL_SIZE: String(ctx.pools.mcp),
      SUPABASE_JWKS: JSON.stringify(jwksOf(key)),
      SUPABASE_URL,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const port = await firstMatch(child.stdout, /\{"port":(\d+)\}/);
  return {
    name: "ours",
    url: new URL(`http://127.0.0.1:${port}/mcp`),
    headers: { Authorization: `Bearer ${token}` },
    tool: "calculator",
    args: { expression: "(1 + 2) * 3 / 4" },
    stop: () => stopChild(child),
  };
}

/** The reference server, installed once under .data/ with npm and run with node directly. */
async function startReference(): Promise<Target> {
  const prefix = join(PROJECT_ROOT, ".data", "bench", `server-everything-${REFERENCE_VERSION}`);
  const entry = join(prefix, "node_modules", ...REFERENCE_PACKAGE.split("/"), "dist", "index.js");
  if (!(await exists(entry))) {
    const install = await new Deno.Command("npm", {
      args: [
        "install",
        "--prefix",
        prefix,
        "--no-audit",
        "--no-fund",
        "--no-save",
        `${REFERENCE_PACKAGE}@${REFERENCE_VERSION}`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).output();
    if (!install.success) throw new Error(`npm install ${REFERENCE_PACKAGE} failed`);
  }
  const port = freePort();
  const child = new Deno.Command("node", {
    args: [entry, "streamableHttp"],
    env: { PORT: String(port) },
    stdin: "null",
    // It logs a line per request; reading it would only slow it down.
    stdout: "null",
    stderr: "piped",
  }).spawn();
  await firstMatch(child.stderr, /listening on port (\d+)/);
  return {
    name: `reference (${REFERENCE_PACKAGE}@${REFERENCE_VERSION})`,
    url: new URL(`http://127.0.0.1:${port}/mcp`),
    headers: {},
    tool: "echo",
    args: { message: "hello" },
    stop: () => stopChild(child),
  };
}

/** Reads `stream` until `pattern` matches, then drains the rest in the background. */
async function firstMatch(stream: ReadableStream<Uint8Array>, pattern: RegExp): Promise<string> {
  const lines = stream.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (true) {
    const { done, value } = await lines.read();
    if (done) throw new Error(`the server exited before saying ${pattern}; it said:\n${seen}`);
    seen += value;
    const match = seen.match(pattern);
    if (match) {
      // Keep reading so a chatty child never blocks on a full pipe.
      (async () => {
        while (!(await lines.read()).done) { /* discard */ }
      })();
      return match[1];
    }
  }
}

async function stopChild(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch (error) {
    // Already gone is fine; anything else is not.
    if (!(error instanceof TypeError)) throw error;
  }
  await child.status;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

if (import.meta.main && Deno.args.includes("--serve")) {
  const databaseUrl = Deno.env.get("SUPABASE_DB_URL");
  const supabaseUrl = Deno.env.get("SUPABASE_URL");
  if (!databaseUrl || !supabaseUrl) throw new Error("SUPABASE_DB_URL and SUPABASE_URL are needed");
  const app = createMcpApp({
    sql: connect(databaseUrl, { max: poolSizeFromEnv(POOL_SIZES.mcp) }),
    verifier: tokenVerifierFromEnv(),
    tools: createToolRegistry({ workflow: {} }),
  });
  Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => console.log(JSON.stringify({ port })),
  }, app.fetch);
}
