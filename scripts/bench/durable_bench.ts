/**
 * Durable turns under load (docs/agent.md, "Durable turns"):
 *
 * - Recovery: sessions stream long answers from one agent worker (its own process), which is
 *   then killed with SIGKILL (no `beforeunload`). Each client reconnects to a second worker and
 *   sends `resume` with the last seq and epoch it has; the second worker adopts the turn once
 *   the dead one's lease lapses (`AGENT_LEASE_MS`, 1.5 s) and asks the LLM step again. Measured
 *   per session: from the kill to the next `token` on the client (p50, p99), and whether the
 *   turn completed.
 * - Churn: sessions stream answer after answer through workers that the local runtime's limits
 *   keep ending (worker_pool.ts: the wall clock shortened to 20 s, CPU soft 1 s / hard 2 s, so a
 *   busy worker is killed every few seconds without `beforeunload`), with the sweep called every
 *   2 s as the local stack does. A client whose socket closes reconnects to the current worker
 *   and resumes. Every turn must complete: any that ends otherwise is lost.
 *
 * The LLM fixture runs in this process. Worker processes are the function as the local runtime
 * runs it.
 */
import type { ServerFrame } from "../../supabase/functions/_shared/agent_protocol.ts";
import { createUsers } from "../../supabase/tests/support/database.ts";
import { startLlmFixture } from "../standin/llm_fixture.ts";
import { generateSigningKey, issueAccessToken } from "../standin/signing_keys.ts";
import { resolveLimits } from "../standin/runtime_limits.ts";
import { FunctionPool } from "../standin/worker_pool.ts";
import { agentWorkerEnv, ISSUER, startAgentWorker } from "./agent_bench.ts";
import { percentile } from "./stats.ts";
import type { BenchContext, BenchResult } from "./types.ts";

const RECOVERY_P50_TARGET_MS = 2_000;
const RECOVERY_P99_TARGET_MS = 5_000;
const WAIT_MS = 60_000;

/** `DURABLE_BENCH_*` override a level by hand (e.g. `DURABLE_BENCH_CHURN_SECONDS=60`). */
function setting(name: string, fallback: number): number {
  const value = Number(Deno.env.get(`DURABLE_BENCH_${name}`));
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

export async function durableBench(ctx: BenchContext): Promise<BenchResult[]> {
  const recoverySessions = setting("RECOVERY_SESSIONS", ctx.smoke ? 10 : 100);
  const churnSessions = setting("CHURN_SESSIONS", ctx.smoke ? 20 : 200);
  const churnMs = setting("CHURN_SECONDS", ctx.smoke ? 20 : 180) * 1000;
  const answerTokens = setting("ANSWER_TOKENS", 200);
  const key = await generateSigningKey();
  const users = await createUsers(ctx.sql, recoverySessions + churnSessions, "durable-bench");
  // A model that continues partial answers (as Anthropic's and many others behind OpenRouter
  // do): a takeover goes on from the stored text instead of asking the step again, so an
  // answer longer than a worker's life still finishes (docs/agent.md, "Continued answers").
  await ctx.sql`insert into public.models (id, prompt_usd_per_token, completion_usd_per_token,
                  continues_partial_answers)
                values ('bench-model', 0, 0, true)
                on conflict (id) do update set continues_partial_answers = true`;
  // No user runs out of quota or turns in a 3-minute run.
  await ctx.sql`update public.user_limits set bucket_capacity = 10000000,
                  bucket_tokens = 10000000, daily_token_cap = 100000000,
                  tool_call_capacity = 1000000
                where user_id = any(${users}::uuid[])`;
  const tokens = await Promise.all(
    users.map((id) =>
      issueAccessToken(key, { userId: id, sessionId: id, issuer: ISSUER, expiresIn: 3600 })
    ),
  );
  const fixture = await startLlmFixture({ port: 0 });
  try {
    return [
      ...await recovery(ctx, key, fixture.url, tokens.slice(0, recoverySessions)),
      await churn(ctx, key, fixture.url, tokens.slice(recoverySessions), churnMs, answerTokens),
    ];
  } finally {
    await fixture.close();
  }
}

async function recovery(
  ctx: BenchContext,
  key: Awaited<ReturnType<typeof generateSigningKey>>,
  llmUrl: string,
  tokens: string[],
): Promise<BenchResult[]> {
  const doomed = await startAgentWorker(ctx, key, llmUrl);
  const survivor = await startAgentWorker(ctx, key, llmUrl);
  try {
    // 400 tokens 25 ms apart: 10 s answers, streaming when the worker dies.
    const content = "[[fixture:tokens count=400 delay=25]] a long answer";
    const sessions = await Promise.all(tokens.map(async (token) => {
      const session = new Session(doomed.url, token);
      await session.open();
      session.chat(content);
      await session.until(() => session.tokens >= 20);
      return session;
    }));
    const killedAt = performance.now();
    await doomed.kill();
    const recovered = await Promise.all(sessions.map(async (session) => {
      await session.closed;
      const before = session.tokens;
      session.url = survivor.url;
      await session.open();
      session.resume();
      await session.until(() => session.tokens > before);
      const latency = performance.now() - killedAt;
      await session.until(() => session.ended !== undefined);
      session.close();
      return { latency, completed: session.ended === "complete" };
    }));
    const latencies = recovered.map((r) => r.latency).sort((a, b) => a - b);
    const completed = recovered.filter((r) => r.completed).length;
    const p50 = percentile(latencies, 50);
    const p99 = percentile(latencies, 99);
    const detail = `${tokens.length} sessions; ${completed}/${tokens.length} turns completed ` +
      `after the kill`;
    return [
      {
        name: `durable: worker killed -> next token, p50 (${tokens.length} sessions)`,
        value: round(p50),
        unit: "ms",
        target: `<= ${RECOVERY_P50_TARGET_MS}`,
        pass: p50 <= RECOVERY_P50_TARGET_MS && completed === tokens.length,
        detail,
      },
      {
        name: `durable: worker killed -> next token, p99 (${tokens.length} sessions)`,
        value: round(p99),
        unit: "ms",
        target: `<= ${RECOVERY_P99_TARGET_MS}`,
        pass: p99 <= RECOVERY_P99_TARGET_MS && completed === tokens.length,
        detail,
      },
    ];
  } finally {
    await doomed.stop().catch(() => {});
    await survivor.stop();
  }
}

async function churn(
  ctx: BenchContext,
  key: Awaited<ReturnType<typeof generateSigningKey>>,
  llmUrl: string,
  tokens: string[],
  durationMs: number,
  answerTokens: number,
): Promise<BenchResult> {
  const secret = crypto.randomUUID();
  const limits = resolveLimits({
    plan: "free",
    wallClockMs: 20_000,
    cpu: { softMs: 1_000, hardMs: 2_000 },
  });
  const pool = new FunctionPool({
    name: "agent",
    env: { ...agentWorkerEnv(ctx, key, llmUrl), AGENT_SWEEP_SECRET: secret },
    limits,
    // The workers' own complaints (a turn that could not be taken over, say), a few of them.
    log: (line) => {
      if (line.includes("agent:") && workerComplaints++ < 20) console.error(line);
    },
  });
  let workerComplaints = 0;
  await pool.start();
  const current = async () => {
    const origin = await pool.acquire();
    if (typeof origin !== "string") throw new Error(origin.unavailable);
    return origin;
  };
  const sweeper = setInterval(() => {
    current().then((origin) =>
      fetch(`${origin}/agent/sweep`, {
        method: "POST",
        headers: { Authorization: `Bearer ${secret}` },
      })
    ).then((response) => response.body?.cancel()).catch(() => {});
  }, 2_000);
  const deadline = performance.now() + durationMs;
  // Turns still open this long after the deadline count as lost: the run always ends.
  const giveUp = deadline + 60_000;
  const outcomes = new Map<string, number>();
  const unfinished: string[] = [];
  let reconnects = 0;
  const progress = setInterval(() => {
    console.error(
      `durable churn: ${JSON.stringify(Object.fromEntries(outcomes))}, ${reconnects} ` +
        `reconnects, workers killed ${pool.events.filter((e) => e.kind === "killed").length}`,
    );
  }, 15_000);
  try {
    await Promise.all(tokens.map(async (token, i) => {
      // Spread the starts over a few seconds, as users arrive.
      await new Promise((resolve) => setTimeout(resolve, (i * 3_000) / tokens.length));
      // A worker may die while a socket to it opens: try the current one again.
      const reopen = async (session: Session) => {
        for (;;) {
          session.url = `${(await current()).replace("http", "ws")}/agent`;
          try {
            return await session.open();
          } catch (error) {
            if (!(error instanceof Error) || performance.now() > giveUp) throw error;
            await new Promise((resolve) => setTimeout(resolve, 200));
          }
        }
      };
      while (performance.now() < deadline) {
        const session = new Session("", token);
        await reopen(session);
        session.chat(`[[fixture:tokens count=${answerTokens} delay=25]] stream on`);
        for (;;) {
          await Promise.race([session.closed, session.until(() => session.ended !== undefined)])
            .catch(() => {});
          if (session.ended !== undefined) break;
          if (performance.now() > giveUp) {
            session.ended = "unfinished";
            unfinished.push(session.chatId!);
            console.error(
              `unfinished ${session.turnId} lastSeq ${session.lastSeq} epoch ${session.epoch} tokens ${session.tokens}`,
            );
            break;
          }
          reconnects++;
          await reopen(session);
          session.resume();
        }
        outcomes.set(session.ended!, (outcomes.get(session.ended!) ?? 0) + 1);
        session.close();
      }
    }));
  } finally {
    clearInterval(sweeper);
    clearInterval(progress);
    await pool.kill();
  }
  // What the turns still open at the end look like in storage, for whoever reads the run.
  if (unfinished.length > 0) {
    const rows = await ctx.sql`
      select t.id, t.state, t.restarts, t.owner, t.epoch, t.recoveries, t.cancel_requested_at,
        t.parked_until, (select max(e.last_seq) from public.agent_turn_events e
                         where e.turn_id = t.id) as last_seq,
        (select i.lease_expires_at > now() from public.agent_isolates i
         where i.id = t.owner) as lease_live
      from public.chat_history h join public.agent_turns t on t.id = h.turn_id
      where h.client_id = any(${unfinished}::uuid[]) and h.role = 'user'`;
    console.error(
      `durable churn: ${unfinished.length} unfinished chats, their turns ${JSON.stringify(rows)}`,
    );
  }
  const killed = pool.events.filter((e) => e.kind === "killed").length;
  const unloaded = pool.events.filter((e) => e.kind === "unloading").length;
  const completed = outcomes.get("complete") ?? 0;
  const total = [...outcomes.values()].reduce((a, b) => a + b, 0);
  const lost = total - completed;
  return {
    name: `durable: turns lost while the runtime's limits end workers (${tokens.length} ` +
      `sessions, ${answerTokens}-token answers, ${Math.round(durationMs / 1000)} s)`,
    value: lost,
    unit: "turns",
    target: "0",
    pass: lost === 0 && completed > 0,
    detail: `${completed}/${total} turns completed; workers killed ${killed}, unloaded ` +
      `${unloaded}; ${reconnects} reconnects; endings ${
        JSON.stringify(Object.fromEntries(outcomes))
      }`,
  };
}

/** One user's socket that follows one turn across reconnects (resume with seq and epoch). */
class Session {
  socket: WebSocket | undefined;
  closed: Promise<void> = Promise.resolve();
  turnId: string | undefined;
  chatId: string | undefined;
  content = "";
  lastSeq = 0;
  epoch = 0;
  tokens = 0;
  ended: string | undefined;
  #wake: (() => void)[] = [];

  constructor(public url: string, readonly token: string) {}

  async open(): Promise<void> {
    const socket = new WebSocket(this.url, [`jwt-${this.token}`]);
    this.socket = socket;
    const ready = Promise.withResolvers<void>();
    const closed = Promise.withResolvers<void>();
    this.closed = closed.promise;
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data) as ServerFrame;
      if (frame.type === "ready") ready.resolve();
      this.#take(frame);
    };
    socket.onclose = () => {
      ready.reject(new Error(`closed before ready: ${this.url}`));
      closed.resolve();
      this.#notify();
    };
    socket.onerror = () => {};
    await ready.promise;
  }

  chat(content: string): void {
    this.chatId = crypto.randomUUID();
    this.content = content;
    this.#send({ type: "chat", id: this.chatId, content });
  }

  /** A socket that closed meanwhile drops the frame: its close starts the next attempt. */
  #send(frame: unknown): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  /** Follows the turn on: `resume` once it is known, else the chat again (idempotent by id). */
  resume(): void {
    if (this.turnId) {
      this.#send({
        type: "resume",
        turn_id: this.turnId,
        after_seq: this.lastSeq,
        epoch: this.epoch,
      });
    } else {
      this.#send({ type: "chat", id: this.chatId, content: this.content });
    }
  }

  close(): void {
    this.socket?.close();
  }

  async until(done: () => boolean): Promise<void> {
    const deadline = performance.now() + WAIT_MS;
    while (!done()) {
      if (performance.now() > deadline) throw new Error("durable bench: a session stalled");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1_000);
        this.#wake.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  #take(frame: ServerFrame): void {
    if (frame.type === "error" && frame.turn_id === undefined) {
      // A refused chat or resume (e.g. the socket raced a worker's end): try again later.
      if (frame.code !== "rate_limited") this.ended = `refused:${frame.code}`;
      return this.#notify();
    }
    if (!("turn_id" in frame) || !("seq" in frame) || frame.seq === undefined) return;
    if (frame.type === "start") this.turnId = frame.turn_id;
    if (frame.turn_id !== this.turnId) return;
    if (frame.type === "restart_step") {
      this.epoch = Math.max(this.epoch, frame.epoch);
      this.lastSeq = frame.seq;
    } else if (frame.seq > this.lastSeq) {
      this.lastSeq = frame.seq;
      if (frame.type === "token") this.tokens++;
      if (frame.type === "complete") this.ended = "complete";
      if (frame.type === "error") this.ended = frame.code;
    }
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = [];
    for (const resolve of wake) resolve();
  }
}

function round(ms: number): number {
  return Math.round(ms);
}
