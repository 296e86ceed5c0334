/**
 * Cross-tab streaming: what each tab that watches someone else's turn receives while a
 * 1,000-token answer streams. One tab owns the turn (its socket sent the chat); each watching
 * tab does what the web app does: it subscribes to the session's `chat_history` rows through
 * Realtime (postgres_changes, all events, filtered by session) and follows the turn over its
 * own agent socket (`resume` from seq 0). Counted per watching tab from the owner's `start`
 * to the turn's `complete`: Realtime messages (per second of streaming) and their bytes (the
 * JSON of each change's record), against the answer's size; and the bytes of its agent
 * socket, for comparison. Targets: ≤ 2 Realtime messages/s and ≤ 3× the answer in bytes.
 *
 * The same run with the row's text rewritten on every flush (`textFlushIntervalMs` 0, as
 * before AGENT_TEXT_FLUSH_MS) shows what the change saves. In process: the
 * agent app, the Realtime stand-in and the LLM fixture (no Edge Runtime limits).
 */
import type { SupabaseClient } from "@supabase/supabase-js";
import {
  type ServerFrame,
  ServerFrameSchema,
} from "../../supabase/functions/_shared/agent_protocol.ts";
import { createAgentApp } from "../../supabase/functions/_shared/agent/app.ts";
import type { AgentConfig } from "../../supabase/functions/_shared/agent/config.ts";
import { createTokenVerifier } from "../../supabase/functions/_shared/auth.ts";
import { connect } from "../../supabase/functions/_shared/db/client.ts";
import { createToolRegistry } from "../../supabase/functions/_shared/tools/registry.ts";
import { createUser } from "../../supabase/tests/support/database.ts";
import {
  closeClient,
  ISSUER,
  realtimeClient,
  type RunningRealtime,
  startRealtime,
  subscribe,
} from "../../supabase/tests/support/realtime.ts";
import { startLlmFixture } from "../standin/llm_fixture.ts";
import { issueAccessToken, jwksOf } from "../standin/signing_keys.ts";
import type { BenchContext, BenchResult } from "./types.ts";

interface Scenario {
  label: string;
  config: Partial<AgentConfig>;
  tokens: number;
  tokenDelayMs: number;
  watchers: number;
}

interface TabCounts {
  realtimeMessages: number;
  realtimeBytes: number;
  socketBytes: number;
}

export async function crossTabBench(ctx: BenchContext): Promise<BenchResult[]> {
  const tokens = ctx.smoke ? 100 : 1000;
  const tokenDelayMs = ctx.smoke ? 5 : 20;
  const watchers = ctx.smoke ? 2 : 5;
  await ctx.sql`insert into public.models (id, prompt_usd_per_token, completion_usd_per_token)
                values ('fixture-model', 0, 0) on conflict (id) do nothing`;
  const realtime = await startRealtime(ctx.databaseUrl);
  const fixture = await startLlmFixture({ port: 0 });
  const results: BenchResult[] = [];
  try {
    const scenarios: Scenario[] = [
      { label: "now", config: {}, tokens, tokenDelayMs, watchers },
      {
        label: "text rewritten every flush (before)",
        config: { textFlushIntervalMs: 0 },
        tokens,
        tokenDelayMs,
        watchers,
      },
    ];
    for (const scenario of scenarios) {
      const { tabs, seconds, answerBytes } = await measure(ctx, realtime, fixture.url, scenario);
      const perSecond = Math.max(...tabs.map((t) => t.realtimeMessages)) / seconds;
      const ratio = Math.max(...tabs.map((t) => t.realtimeBytes)) / answerBytes;
      const socketRatio = Math.max(...tabs.map((t) => t.socketBytes)) / answerBytes;
      const targeted = scenario.label === "now";
      const detail = `${scenario.tokens} tokens over ${
        seconds.toFixed(1)
      } s, ${scenario.watchers} watching tabs, answer ${answerBytes} B; worst tab`;
      results.push({
        name: `cross-tab, ${scenario.label}: Realtime messages per watching tab`,
        value: perSecond,
        unit: "msg/s",
        target: targeted ? "<= 2" : undefined,
        pass: targeted ? perSecond <= 2 : undefined,
        detail,
      });
      results.push({
        name: `cross-tab, ${scenario.label}: Realtime bytes per watching tab`,
        value: ratio,
        unit: "× answer",
        target: targeted ? "<= 3" : undefined,
        pass: targeted ? ratio <= 3 : undefined,
        detail,
      });
      results.push({
        name: `cross-tab, ${scenario.label}: agent socket bytes per watching tab`,
        value: socketRatio,
        unit: "× answer",
        detail: `${detail} (frames: the text once, as token deltas)`,
      });
    }
  } finally {
    await fixture.close();
    await realtime.stop();
  }
  return results;
}

async function measure(
  ctx: BenchContext,
  realtime: RunningRealtime,
  llmUrl: string,
  scenario: Scenario,
): Promise<{ tabs: TabCounts[]; seconds: number; answerBytes: number }> {
  const pool = connect(ctx.databaseUrl, { max: ctx.pools.agent });
  const flushPool = connect(ctx.databaseUrl, { max: ctx.pools.agentFlush });
  const app = createAgentApp({
    sql: pool,
    flushSql: flushPool,
    verifier: createTokenVerifier({ jwks: jwksOf(realtime.key) }),
    llm: { baseUrl: llmUrl, model: "fixture-model", fallbackModels: [] },
    tools: createToolRegistry({ workflow: {} }),
    config: scenario.config,
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
  const agentUrl = `ws://127.0.0.1:${server.addr.port}/agent`;
  const user = await createUser(ctx.sql, "bench-tabs");
  // A socket per tab, the owner's included: more than the default limit of 3.
  await ctx.sql`insert into public.user_limits (user_id, max_connections)
                values (${user.id}, ${scenario.watchers + 1})
                on conflict (user_id) do update set max_connections = excluded.max_connections`;
  const token = await issueAccessToken(realtime.key, {
    userId: user.id,
    email: user.email,
    sessionId: user.sessionId,
    issuer: ISSUER,
  });
  const sockets: Tab[] = [];
  const clients: SupabaseClient[] = [];
  try {
    const owner = await Tab.open(agentUrl, token);
    sockets.push(owner);
    const chatId = crypto.randomUUID();
    owner.send({
      type: "chat",
      id: chatId,
      content: `[[fixture:slow count=${scenario.tokens} delay=${scenario.tokenDelayMs}]] go`,
    });
    const start = await owner.until((f) => f.type === "start");
    if (start.type !== "start") throw new Error("no start");
    const began = performance.now();
    const tabs: TabCounts[] = [];
    const ended: Promise<ServerFrame>[] = [];
    for (let i = 0; i < scenario.watchers; i++) {
      const counts: TabCounts = { realtimeMessages: 0, realtimeBytes: 0, socketBytes: 0 };
      tabs.push(counts);
      const client = await realtimeClient(realtime.url, { token });
      clients.push(client);
      await subscribe(
        client.channel(`tabs-${chatId}-${i}`).on(
          "postgres_changes",
          {
            event: "*",
            schema: "public",
            table: "chat_history",
            filter: `session_id=eq.${start.session_id}`,
          },
          (change) => {
            counts.realtimeMessages++;
            counts.realtimeBytes += JSON.stringify(change.new ?? {}).length +
              JSON.stringify(change.old ?? {}).length;
          },
        ),
      );
      const tab = await Tab.open(agentUrl, token, counts);
      sockets.push(tab);
      tab.send({ type: "resume", turn_id: start.turn_id, after_seq: 0 });
      ended.push(tab.until((f) => f.type === "complete" || f.type === "error"));
    }
    const last = await owner.until((f) => f.type === "complete" || f.type === "error");
    if (last.type !== "complete") throw new Error(`the turn ended with ${JSON.stringify(last)}`);
    await Promise.all(ended);
    const seconds = (performance.now() - began) / 1000;
    // The final rewrite (status complete, whole text) may land just after `complete`.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const [row] = await ctx.sql`select content from public.chat_history
                                where client_id = ${start.message_id}`;
    return { tabs, seconds, answerBytes: new TextEncoder().encode(row.content).length };
  } finally {
    for (const tab of sockets) tab.close();
    for (const client of clients) await closeClient(client);
    await app.close();
    await server.shutdown();
    await Promise.all([pool.end(), flushPool.end()]);
  }
}

/** An agent socket that keeps its frames and counts its bytes. */
class Tab {
  readonly #frames: ServerFrame[] = [];
  #wake: () => void = () => {};

  private constructor(readonly socket: WebSocket, counts?: TabCounts) {
    socket.onmessage = (event) => {
      const text = String(event.data);
      if (counts) counts.socketBytes += new TextEncoder().encode(text).length;
      this.#frames.push(ServerFrameSchema.parse(JSON.parse(text)));
      this.#wake();
    };
  }

  static async open(url: string, token: string, counts?: TabCounts): Promise<Tab> {
    const socket = new WebSocket(url, [`jwt-${token}`]);
    const tab = new Tab(socket, counts);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error("the agent socket failed"));
    });
    await tab.until((f) => f.type === "ready");
    return tab;
  }

  send(frame: unknown): void {
    this.socket.send(JSON.stringify(frame));
  }

  async until(match: (frame: ServerFrame) => boolean): Promise<ServerFrame> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const found = this.#frames.find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error("the expected frame did not come");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  close(): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.close(1000, "done");
  }
}
