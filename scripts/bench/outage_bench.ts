/**
 * How fast the HTTP surfaces say the database is gone: on the local stack (gateway, the
 * functions' workers under the Edge Runtime's paid-plan limits, its own Postgres), Postgres is
 * killed (SIGKILL, as a crash) and signed-in requests to `history` (`GET /sessions`) and `mcp`
 * (`tools/list`) are timed from the request to the 503 `db_unavailable` answer, one after the
 * other, until the database is started again. The first request after each crash is reported
 * apart: it is the one that finds the pool's connections dead. Target (issue 20): ≤ 100 ms.
 */
import { createClient } from "@supabase/supabase-js";
import { startStack } from "../standin/stack.ts";
import { percentile } from "./stats.ts";
import type { BenchContext, BenchResult } from "./types.ts";

const TARGET_MS = 100;
const RECOVERY_MS = 60_000;

interface Surface {
  name: string;
  request(): Promise<Response>;
}

export async function outageBench(ctx: BenchContext): Promise<BenchResult[]> {
  const cycles = ctx.smoke ? 1 : 3;
  const perCycle = ctx.smoke ? 3 : 20;
  const stack = await startStack({ ephemeral: true, log: () => {} });
  try {
    const supabase = createClient(stack.apiUrl, stack.publishableKey, {
      auth: { persistSession: false, autoRefreshToken: false },
    });
    const { data, error } = await supabase.auth.signInWithPassword({
      email: "alice@example.com",
      password: "password123",
    });
    if (error) throw new Error(`signing alice in: ${error.message}`);
    const auth = { Authorization: `Bearer ${data.session!.access_token}` };
    const surfaces: Surface[] = [
      {
        name: "history GET /sessions",
        request: () => fetch(`${stack.apiUrl}/functions/v1/history/sessions`, { headers: auth }),
      },
      {
        name: "mcp tools/list",
        request: () =>
          fetch(`${stack.apiUrl}/functions/v1/mcp`, {
            method: "POST",
            headers: {
              ...auth,
              "Content-Type": "application/json",
              Accept: "application/json, text/event-stream",
              "MCP-Protocol-Version": "2025-06-18",
            },
            body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
          }),
      },
    ];
    const first = new Map<string, number[]>(surfaces.map((s) => [s.name, []]));
    const rest = new Map<string, number[]>(surfaces.map((s) => [s.name, []]));
    for (let cycle = 0; cycle < cycles; cycle++) {
      for (const surface of surfaces) await expectStatus(surface, 200, RECOVERY_MS);
      await stack.crashDatabase();
      for (let i = 0; i < perCycle; i++) {
        for (const surface of surfaces) {
          const started = performance.now();
          const response = await surface.request();
          const body = await response.text();
          const elapsed = performance.now() - started;
          if (response.status !== 503 || !body.includes("db_unavailable")) {
            throw new Error(`${surface.name}: ${response.status} ${body.slice(0, 200)}`);
          }
          (i === 0 ? first : rest).get(surface.name)!.push(elapsed);
        }
      }
      await stack.restartDatabase();
    }
    for (const surface of surfaces) await expectStatus(surface, 200, RECOVERY_MS);
    return surfaces.flatMap((surface) => {
      const firsts = first.get(surface.name)!.sort((a, b) => a - b);
      const later = rest.get(surface.name)!.sort((a, b) => a - b);
      const all = [...firsts, ...later].sort((a, b) => a - b);
      const worst = all.at(-1)!;
      return [{
        name: `503 db_unavailable, ${surface.name}, p50`,
        value: percentile(all, 50),
        unit: "ms",
        detail: `${all.length} requests over ${cycles} crashes; p95 ${
          percentile(all, 95).toFixed(1)
        } ms, max ${worst.toFixed(1)} ms; first after each crash: ${
          firsts.map((ms) => ms.toFixed(1)).join(", ")
        } ms`,
        target: `≤ ${TARGET_MS} ms (max)`,
        pass: worst <= TARGET_MS,
      }];
    });
  } finally {
    await stack.stop();
  }
}

/** Polls until the surface answers `status` (the database back, its pools reconnected). */
async function expectStatus(surface: Surface, status: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const response = await surface.request();
    await response.body?.cancel();
    if (response.status === status) return;
    if (Date.now() > deadline) {
      throw new Error(`${surface.name}: still ${response.status} after ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
