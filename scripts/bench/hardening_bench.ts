/**
 * What one user's hostile input costs everyone else, against the `agent` function run as its
 * own process (as an isolate would be):
 *
 * - The heavy calculator expression (`heavyExpression`: within every documented limit, it
 *   once burned seconds of CPU) sent through a model's tool call while a second user streams
 *   an answer from the same worker: how long until its refusal reaches the client (from the
 *   `tool_call` frame to the `tool_result` frame), and the longest gap between two of the
 *   second user's tokens while it ran.
 * - Twenty 8 MiB frames, one per socket, all at once: Deno buffers a message whole before the
 *   agent can refuse it, so each costs its size until the garbage collector runs. The worker's
 *   RSS (from /proc) before, at its peak, and how long it takes to come back within 20 MB.
 *
 * The LLM fixture runs in this process; the agent in its own, with its Edge Runtime limits off
 * (a latency run must not be cut by the CPU limit; the refusal is what keeps it short).
 */
import type { ServerFrame } from "../../supabase/functions/_shared/agent_protocol.ts";
import { createUsers } from "../../supabase/tests/support/database.ts";
import { heavyExpression } from "../../supabase/tests/support/heavy_expression.ts";
import { fixtureArg, startLlmFixture } from "../standin/llm_fixture.ts";
import { PLAN_LIMITS } from "../standin/runtime_limits.ts";
import { generateSigningKey, issueAccessToken } from "../standin/signing_keys.ts";
import { type AgentWorker, ISSUER, startAgentWorker } from "./agent_bench.ts";
import type { BenchContext, BenchResult } from "./types.ts";

const REFUSAL_TARGET_MS = 50;
const GAP_TARGET_MS = 100;
/** The streaming user's tokens come this far apart from the fixture. */
const TOKEN_DELAY_MS = 20;
const FRAME_BYTES = 8 * 2 ** 20;
const FRAME_COUNT = 20;
const RSS_MARGIN_BYTES = 20 * 1e6;
const RSS_WINDOW_MS = 5_000;
const WAIT_MS = 60_000;
const HOSTED_MEMORY_BYTES = PLAN_LIMITS.free.memoryBytes;

export async function hardeningBench(ctx: BenchContext): Promise<BenchResult[]> {
  const rounds = ctx.smoke ? 1 : 5;
  const key = await generateSigningKey();
  // Per round: the caller of the heavy expression and the streaming bystander; then the
  // senders of the large frames and one to warm up.
  const users = await createUsers(ctx.sql, 2 * rounds + FRAME_COUNT + 1, "hardening-bench");
  await ctx.sql`insert into public.models (id, prompt_usd_per_token, completion_usd_per_token)
                values ('bench-model', 0, 0) on conflict (id) do nothing`;
  const tokens = await Promise.all(
    // createUsers signs each in with a session whose id is the user's.
    users.map((id) =>
      issueAccessToken(key, { userId: id, sessionId: id, issuer: ISSUER, expiresIn: 3600 })
    ),
  );
  const fixture = await startLlmFixture({ port: 0 });
  try {
    // The heap capped as the Edge Runtime caps it: when V8 collects is what the RSS row measures.
    const worker = await startAgentWorker(ctx, key, fixture.url, HOSTED_MEMORY_BYTES);
    try {
      const results = [await heavyExpressionUnderStream(worker, tokens.slice(0, 2 * rounds))];
      results.push(await largeFrames(worker, tokens.slice(2 * rounds)));
      return results;
    } finally {
      await worker.stop();
    }
  } finally {
    await fixture.close();
  }
}

async function heavyExpressionUnderStream(
  worker: AgentWorker,
  tokens: string[],
): Promise<BenchResult> {
  const refusals: number[] = [];
  const gaps: number[] = [];
  const codes = new Set<string>();
  // A warm worker first: the first chat compiles code paths and fills pools.
  const warm = await Client.open(worker.url, tokens[0]);
  await warm.chat("[[fixture:tokens count=3 delay=1]] warm up");
  warm.close();
  for (let round = 0; round < tokens.length / 2; round++) {
    const caller = await Client.open(worker.url, tokens[2 * round]);
    const bystander = await Client.open(worker.url, tokens[2 * round + 1]);
    const streaming = bystander.chat(
      `[[fixture:tokens count=${Math.round(2_000 / TOKEN_DELAY_MS)} delay=${TOKEN_DELAY_MS}]]`,
    );
    await bystander.firstToken;
    const args = fixtureArg(JSON.stringify({ expression: heavyExpression() }));
    const heavy = await caller.chat(`[[fixture:tool_call tool=calculator args=${args}]]`);
    const stream = await streaming;
    caller.close();
    bystander.close();
    const call = heavy.frames.find((f) => f.type === "tool_call");
    const result = heavy.frames.find((f) => f.type === "tool_result");
    if (!call || !result || result.type !== "tool_result") {
      throw new Error(`the heavy expression's turn had no tool result: ${heavy.error}`);
    }
    codes.add((result.result as { code?: string }).code ?? "ok");
    const callAt = heavy.times[heavy.frames.indexOf(call)];
    const resultAt = heavy.times[heavy.frames.indexOf(result)];
    refusals.push(resultAt - callAt);
    // The bystander's longest wait for a token while the expression was in the worker.
    const arrivals = stream.frames
      .map((frame, i) => frame.type === "token" ? stream.times[i] : undefined)
      .filter((t): t is number => t !== undefined);
    let gap = 0;
    for (let i = 1; i < arrivals.length; i++) {
      if (arrivals[i] >= callAt && arrivals[i - 1] <= resultAt) {
        gap = Math.max(gap, arrivals[i] - arrivals[i - 1]);
      }
    }
    gaps.push(gap);
  }
  const slowest = Math.max(...refusals);
  const widest = Math.max(...gaps);
  const refused = codes.size === 1 && !codes.has("ok");
  return {
    name: "agent: heavy calculator expression refused, while another user streams",
    value: slowest,
    unit: "ms",
    target: `< ${REFUSAL_TARGET_MS} ms, other stream's gap <= ${GAP_TARGET_MS} ms`,
    pass: refused && slowest < REFUSAL_TARGET_MS && widest <= GAP_TARGET_MS,
    detail: `slowest of ${refusals.length} (tool_call → tool_result ${
      refusals.map((ms) => ms.toFixed(1)).join(", ")
    } ms, answered ${[...codes].join(", ")}); the other stream's longest gap meanwhile ${
      widest.toFixed(1)
    } ms (its tokens come ${TOKEN_DELAY_MS} ms apart)`,
  };
}

async function largeFrames(worker: AgentWorker, tokens: string[]): Promise<BenchResult> {
  const warm = await Client.open(worker.url, tokens[0]);
  warm.close();
  await sleep(1_000);
  const baseline = await worker.rssBytes();
  const frame = "x".repeat(FRAME_BYTES);
  const senders = await Promise.all(
    tokens.slice(1, 1 + FRAME_COUNT).map((token) => Client.open(worker.url, token)),
  );
  let peak = baseline;
  const sampling = (async () => {
    while (senders.some((sender) => sender.open)) {
      peak = Math.max(peak, await worker.rssBytes());
      await sleep(20);
    }
  })();
  for (const sender of senders) sender.send(frame);
  const closes = await Promise.all(senders.map((sender) => sender.closed));
  await sampling;
  const sent = performance.now();
  let backAfterMs: number | undefined;
  let last = await worker.rssBytes();
  peak = Math.max(peak, last);
  while (performance.now() - sent < RSS_WINDOW_MS) {
    last = await worker.rssBytes();
    if (last <= baseline + RSS_MARGIN_BYTES) {
      backAfterMs = performance.now() - sent;
      break;
    }
    await sleep(100);
  }
  const closeCodes = [...new Set(closes)].join(", ");
  return {
    name: `agent: RSS after ${FRAME_COUNT} × ${FRAME_BYTES / 2 ** 20} MiB frames`,
    value: (last - baseline) / 1e6,
    unit: "MB over baseline",
    target: `<= ${RSS_MARGIN_BYTES / 1e6} MB within ${RSS_WINDOW_MS / 1000} s`,
    pass: backAfterMs !== undefined && closeCodes === "1009",
    detail: `baseline ${mb(baseline)} MB, peak ${mb(peak)} MB, ${
      backAfterMs === undefined
        ? `still ${mb(last)} MB after ${
          RSS_WINDOW_MS / 1000
        } s (V8 has not run a full collection; ` +
          "function code cannot ask for one, docs/agent.md)"
        : `back within ${RSS_MARGIN_BYTES / 1e6} MB after ${Math.round(backAfterMs)} ms`
    }; sockets closed with ${closeCodes}`,
  };
}

function mb(bytes: number): string {
  return (bytes / 1e6).toFixed(1);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface ChatRun {
  frames: ServerFrame[];
  /** When each frame arrived (ms, `performance.now()`). */
  times: number[];
  error?: string;
}

/** A benchmark's agent socket: one chat at a time, every frame kept with its arrival time. */
class Client {
  #onFrame: (frame: ServerFrame, now: number) => void = () => {};
  #firstToken: () => void = () => {};
  readonly firstToken = new Promise<void>((resolve) => this.#firstToken = resolve);
  readonly closed: Promise<number>;
  open = true;

  private constructor(readonly socket: WebSocket) {
    this.closed = new Promise((resolve) => {
      socket.addEventListener("close", (event) => {
        this.open = false;
        resolve(event.code);
      });
    });
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data) as ServerFrame;
      if (frame.type === "token") this.#firstToken();
      this.#onFrame(frame, performance.now());
    };
  }

  static open(url: string, token: string): Promise<Client> {
    const socket = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } } as never);
    const client = new Client(socket);
    return new Promise((resolve, reject) => {
      client.#onFrame = (frame) => {
        if (frame.type === "ready") resolve(client);
      };
      client.closed.then((code) => reject(new Error(`closed ${code} before ready`)));
    });
  }

  chat(content: string): Promise<ChatRun> {
    return new Promise((resolve) => {
      const run: ChatRun = { frames: [], times: [] };
      const timer = setTimeout(() => resolve({ ...run, error: "timed out" }), WAIT_MS);
      this.#onFrame = (frame, now) => {
        run.frames.push(frame);
        run.times.push(now);
        if (frame.type === "complete" || frame.type === "error") {
          clearTimeout(timer);
          resolve(frame.type === "error" ? { ...run, error: frame.code } : run);
        }
      };
      this.send(JSON.stringify({ type: "chat", id: crypto.randomUUID(), content }));
    });
  }

  send(data: string): void {
    this.socket.send(data);
  }

  close(): void {
    this.socket.close();
  }
}
