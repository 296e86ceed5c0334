/**
 * The `agent` function under load, run as its own process (as an isolate would be):
 *
 * - Latency the agent adds per token. The LLM fixture runs in an "upstream" process and notes
 *   when each token leaves it. In the same run, at each concurrency, clients first read the
 *   fixture's SSE directly, then the same streams go through the agent to WebSocket clients.
 *   Each session streams answer after answer, the sessions' starts spread over one answer's
 *   duration: turns start and end all the time, as in a steady state of many users (see
 *   `Schedule`).
 *   Per token: arrival at the client minus departure from the fixture (wall-clock
 *   milliseconds with microsecond precision; the two processes' clock offset is the same for
 *   both paths and cancels). The agent's cost is the difference of the two distributions'
 *   p50 and p99.
 * - The same streams through a bare relay: a process that only fetches the SSE and forwards
 *   each token as a WebSocket frame (no auth, no Postgres, no turn logic). What it adds is
 *   the price of one more process hop on this machine at that load; what the agent adds
 *   beyond it is its own work.
 * - 1,000 concurrent streaming sessions (1,000 users, one connection each): errors.
 * - Memory per idle connection: the worker's RSS (from /proc) as idle sockets are added.
 *
 * Four processes share this machine's cores: the clients (this process), the upstream, the
 * agent and Postgres (which, on Supabase, runs elsewhere). The direct baseline pays the same
 * fixture and client costs, so the difference is what the agent path adds, contention
 * included. The CPU per token of the agent and of the relay (from /proc) show where that time
 * goes. On a virtual machine the hypervisor may take the cores away ("steal", also from
 * /proc): a path with more process hops suffers more from it, so the results name the steal
 * of the direct and the agent phases, and a run under heavy steal says more about the host
 * than about the agent.
 *
 * `deno run -A scripts/bench/agent_bench.ts --upstream` runs the upstream process alone.
 */
import { join } from "node:path";
import type { ServerFrame } from "../../supabase/functions/_shared/agent_protocol.ts";
import { ChunkReader } from "../../supabase/functions/_shared/sse.ts";
import { heapLimitFlags } from "../standin/function_workers.ts";
import { startLlmFixture } from "../standin/llm_fixture.ts";
import { freePort } from "../standin/postgres.ts";
import {
  generateSigningKey,
  issueAccessToken,
  jwksOf,
  type SigningKey,
} from "../standin/signing_keys.ts";
import { PROJECT_ROOT } from "../standin/supabase_cli.ts";
import { createUsers } from "../../supabase/tests/support/database.ts";
import { percentile } from "./stats.ts";
import { PLAN_LIMITS } from "../standin/runtime_limits.ts";
import type { BenchContext, BenchResult } from "./types.ts";

export const ISSUER = "http://127.0.0.1:54321/auth/v1";
/**
 * Every streamed answer: `tokens` SSE chunks (`AGENT_BENCH_TOKENS`, 100: an answer of a few
 * hundred words) `delayMs` apart (`AGENT_BENCH_TOKEN_DELAY_MS`, 50). Shorter answers mean more
 * turns starting and ending per second for the same number of streaming sessions.
 */
interface StreamShape {
  tokens: number;
  delayMs: number;
}
const ADDED_P50_TARGET_MS = 1;
const ADDED_P99_TARGET_MS = 10;
const IDLE_BYTES_TARGET = 64 * 1024;
const MIN_IDLE_FOR_TARGET = 500;
const WAIT_MS = 120_000;
/** USER_HZ of /proc/<pid>/stat: 100 on Linux. */
const CLOCK_TICKS_PER_SECOND = 100;
const UPSTREAM_FLAG = "--upstream";
const RELAY_FLAG = "--relay";

/** Wall-clock milliseconds, comparable across processes of this machine. */
function clock(): number {
  return performance.timeOrigin + performance.now();
}

export async function agentBench(ctx: BenchContext): Promise<BenchResult[]> {
  // AGENT_BENCH_LEVELS=100 AGENT_BENCH_IDLE=20: one level by hand (profiling, tuning).
  const levels = Deno.env.get("AGENT_BENCH_LEVELS")?.split(",").map(Number) ??
    (ctx.smoke ? [1, 10] : [1, 100, 1000]);
  const idleConnections = Number(Deno.env.get("AGENT_BENCH_IDLE") ?? (ctx.smoke ? 20 : 1000));
  const userCount = Math.max(levels.at(-1)!, idleConnections);
  const shape: StreamShape = {
    tokens: Number(Deno.env.get("AGENT_BENCH_TOKENS") ?? (ctx.smoke ? 30 : 100)),
    delayMs: Number(Deno.env.get("AGENT_BENCH_TOKEN_DELAY_MS") ?? 50),
  };
  const results: BenchResult[] = [];

  const key = await generateSigningKey();
  const users = await createUsers(ctx.sql, userCount, "agent-bench");
  // The agent refuses models its catalogue does not offer: offer the fixture's, for free.
  await ctx.sql`insert into public.models (id, prompt_usd_per_token, completion_usd_per_token)
                values ('bench-model', 0, 0) on conflict (id) do nothing`;
  const tokens = await Promise.all(
    // createUsers signs each in with a session whose id is the user's.
    users.map((id) =>
      issueAccessToken(key, { userId: id, sessionId: id, issuer: ISSUER, expiresIn: 7200 })
    ),
  );
  const upstream = await startUpstream();
  const relay = await startRelay(upstream.url);
  try {
    const worker = await startAgentWorker(ctx, key, `${upstream.url}/v1`);
    try {
      const [warm] = await openAgentSessions(worker.url, tokens.slice(0, 1));
      await warm.chat("bench-warmup-1x0-0", shape); // JIT and pools warm
      warm.close();
      for (const sessions of levels) {
        // Rounds alternate direct, relay and agent runs, so all see the same background load.
        const rounds = ctx.smoke || sessions === 1 ? 1 : sessions <= 100 ? 2 : 1;
        const schedule: Schedule = {
          sessions,
          streamMs: shape.tokens * shape.delayMs,
          measuredChats: ctx.smoke || sessions > 100 ? 1 : sessions === 1 ? 5 : 2,
          // A smoke run only proves the paths work, and one session has no others to wait for.
          rampChats: ctx.smoke || sessions === 1 ? 0 : 1,
        };
        const directRuns: SessionRun[] = [];
        const relayRuns: SessionRun[] = [];
        const agentRuns: SessionRun[] = [];
        let cpuSeconds = 0;
        let relayCpuSeconds = 0;
        let wallSeconds = 0;
        const machine = { agent: noCpu(), direct: noCpu() };
        const problemsBefore = worker.log.problems;
        for (let round = 0; round < rounds; round++) {
          const tag = `${sessions}x${round}`;
          const directBefore = await machineCpu();
          directRuns.push(
            ...await runLevel(
              schedule,
              (i, chat) => directSession(upstream.url, `bench-direct-${tag}x${chat}-${i}`, shape),
            ),
          );
          addCpu(machine.direct, directBefore, await machineCpu());
          const relayed = await openAgentSessions(relay.url, tokens.slice(0, sessions));
          const relayCpuBefore = await relay.cpuSeconds();
          relayRuns.push(
            ...await runLevel(
              schedule,
              (i, chat) => relayed[i].chat(`bench-relay-${tag}x${chat}-${i}`, shape),
            ),
          );
          relayCpuSeconds += await relay.cpuSeconds() - relayCpuBefore;
          for (const client of relayed) client.close();
          const clients = await openAgentSessions(worker.url, tokens.slice(0, sessions));
          const cpuBefore = await worker.cpuSeconds();
          const agentBefore = await machineCpu();
          const started = performance.now();
          agentRuns.push(
            ...await runLevel(
              schedule,
              (i, chat) => clients[i].chat(`bench-agent-${tag}x${chat}-${i}`, shape),
            ),
          );
          cpuSeconds += await worker.cpuSeconds() - cpuBefore;
          addCpu(machine.agent, agentBefore, await machineCpu());
          wallSeconds += (performance.now() - started) / 1000;
          for (const client of clients) client.close();
        }
        const direct = latencies(directRuns, await upstream.emitted(`bench-direct-${sessions}x`));
        const agent = latencies(agentRuns, await upstream.emitted(`bench-agent-${sessions}x`));
        const relayed = latencies(relayRuns, await upstream.emitted(`bench-relay-${sessions}x`));
        // What the agent logged as failed counts as errors too, retried or not.
        const logged = worker.log.problems - problemsBefore;
        for (let i = 0; i < logged; i++) agent.errors.push(`agent log: ${worker.log.first}`);
        const streams = sessions * rounds * chatsPerSession(schedule);
        results.push(
          ...levelResults(
            sessions,
            rounds,
            sessions * rounds * schedule.measuredChats,
            shape.tokens,
            direct,
            relayed,
            agent,
            {
              agentProcess: cpuSeconds / wallSeconds,
              machine,
              agentPerToken: cpuSeconds / (streams * shape.tokens),
              relayPerToken: relayCpuSeconds / (streams * shape.tokens),
            },
          ),
        );
      }
    } finally {
      await worker.stop();
    }

    const idleWorker = await startAgentWorker(ctx, key, `${upstream.url}/v1`);
    try {
      results.push(
        await idleMemory(idleWorker, tokens.slice(0, idleConnections)),
      );
    } finally {
      await idleWorker.stop();
    }
  } finally {
    await relay.stop();
    await upstream.stop();
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// The upstream process: the LLM fixture, noting when each token leaves

const MARKER = /bench-[a-z]+-[0-9x]+-\d+/;
/** One content delta of an SSE chunk. */
const TOKEN_PATTERN = /"content":"[^"]/g;

interface Upstream {
  /** The fixture's origin; the OpenAI-compatible API is under `/v1`. */
  url: string;
  /** Departure times of the tokens of the streams whose marker starts with `prefix`. */
  emitted(prefix: string): Promise<Record<string, number[]>>;
  stop(): Promise<void>;
}

async function startUpstream(): Promise<Upstream> {
  const { url: urls, stop } = await spawnBenchProcess(UPSTREAM_FLAG);
  const [url, emittedUrl] = urls.split(" ");
  return {
    url,
    async emitted(prefix) {
      const response = await fetch(`${emittedUrl}?prefix=${encodeURIComponent(prefix)}`);
      return await response.json();
    },
    stop,
  };
}

/**
 * This module run again as a helper process (`flag`); its first output line is its URL (the
 * upstream prints two: the fixture's and where to ask for departure times).
 */
async function spawnBenchProcess(
  flag: string,
  ...args: string[]
): Promise<{ url: string; cpuSeconds(): Promise<number>; stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--config",
      join(PROJECT_ROOT, "deno.json"),
      import.meta.filename!,
      flag,
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let output = "";
  while (!output.includes("\n")) {
    const { done, value } = await lines.read();
    if (done) throw new Error(`the ${flag} process exited before it listened`);
    output += value;
  }
  lines.releaseLock();
  return {
    url: output.trim(),
    cpuSeconds: () => processCpuSeconds(child.pid),
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await child.stdout.cancel().catch(() => {});
    },
  };
}

async function serveUpstream(): Promise<void> {
  const emitted = new Map<string, number[]>();
  // The fixture itself notes when each token leaves: no proxy hop in front of it, which
  // would load this machine's cores for both paths without being part of either.
  const fixture = await startLlmFixture({
    port: 0,
    watchStream(messages) {
      const marker = messages.map((m) => m.content.match(MARKER)?.[0]).find(Boolean);
      if (!marker) return undefined;
      const times: number[] = [];
      emitted.set(marker, times);
      return (chunk) => {
        const now = clock();
        for (const _ of chunk.matchAll(TOKEN_PATTERN)) times.push(now);
      };
    },
  });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (request) => {
      const prefix = new URL(request.url).searchParams.get("prefix") ?? "";
      return Response.json(Object.fromEntries(
        [...emitted].filter(([marker]) => marker.startsWith(prefix)),
      ));
    },
  );
  console.log(`${fixture.url.replace(/\/v1$/, "")} http://127.0.0.1:${server.addr.port}/emitted`);
  Deno.addSignalListener("SIGTERM", () => {
    Promise.all([server.shutdown(), fixture.close()]).finally(() => Deno.exit(0));
  });
}

// ---------------------------------------------------------------------------------------------
// The bare relay process: the least any agent must do per token

interface Relay {
  /** WebSocket URL; speaks just enough of the agent protocol for `openAgentSession`. */
  url: string;
  cpuSeconds(): Promise<number>;
  stop(): Promise<void>;
}

function startRelay(upstreamUrl: string): Promise<Relay> {
  return spawnBenchProcess(RELAY_FLAG, upstreamUrl);
}

/**
 * Per chat frame: one streaming fetch, each SSE content delta out as a `token` frame. The body
 * is read as the agent reads it (`ChunkReader`), and so are the direct readers' bodies: a
 * default reader's 64 KiB buffer per chunk would make either path pay for garbage collection
 * the other does not.
 */
function serveRelay(upstreamUrl: string): void {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onopen = () => socket.send(JSON.stringify({ type: "ready" }));
    socket.onmessage = async (event) => {
      const chat = JSON.parse(event.data);
      const upstream = await fetch(`${upstreamUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          model: "bench-model",
          stream: true,
          messages: [{ role: "user", content: chat.content }],
        }),
      });
      const decoder = new TextDecoder();
      const reader = new ChunkReader(upstream.body!);
      let carry = "";
      for (let chunk = await reader.read(); chunk; chunk = await reader.read()) {
        const events = (carry + decoder.decode(chunk, { stream: true })).split("\n\n");
        carry = events.pop()!;
        for (const event of events) {
          const data = event.split("\n").find((line) => line.startsWith("data: "))?.slice(6);
          if (!data || data === "[DONE]") continue;
          const delta = JSON.parse(data).choices?.[0]?.delta?.content;
          if (delta) socket.send(JSON.stringify({ type: "token", delta }));
        }
      }
      socket.send(JSON.stringify({ type: "complete" }));
    };
    return response;
  });
  console.log(`ws://127.0.0.1:${server.addr.port}/`);
  Deno.addSignalListener("SIGTERM", () => {
    server.shutdown().finally(() => Deno.exit(0));
  });
}

// ---------------------------------------------------------------------------------------------
// Sessions

interface SessionRun {
  marker: string;
  /** When each token reached the client. */
  arrivals: number[];
  error?: string;
}

function fixtureDirective(shape: StreamShape): string {
  return `[[fixture:tokens count=${shape.tokens} delay=${shape.delayMs}]]`;
}

async function directSession(
  upstream: string,
  marker: string,
  shape: StreamShape,
): Promise<SessionRun> {
  const response = await fetch(`${upstream}/v1/chat/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      model: "bench-model",
      stream: true,
      messages: [{ role: "user", content: `${fixtureDirective(shape)} ${marker}` }],
    }),
  });
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    return { marker, arrivals: [], error: `HTTP ${response.status}` };
  }
  const arrivals: number[] = [];
  const decoder = new TextDecoder();
  const reader = new ChunkReader(response.body);
  for (let chunk = await reader.read(); chunk; chunk = await reader.read()) {
    const now = clock();
    const text = decoder.decode(chunk, { stream: true });
    for (const _ of text.matchAll(TOKEN_PATTERN)) arrivals.push(now);
  }
  return { marker, arrivals };
}

/** An open connection, past its `ready` frame, that runs one streaming chat on demand. */
interface AgentSession {
  chat(marker: string, shape: StreamShape): Promise<SessionRun>;
  close(): void;
}

function openAgentSession(url: string, token: string): Promise<AgentSession> {
  return new Promise((resolveOpen, rejectOpen) => {
    const socket = new WebSocket(
      url,
      { headers: { Authorization: `Bearer ${token}` } } as never,
    );
    let onFrame: (frame: ServerFrame, now: number) => void = (frame) => {
      if (frame.type === "ready") resolveOpen(session);
    };
    let onClose = (reason: string) => rejectOpen(new Error(reason));
    socket.onmessage = (event) => onFrame(JSON.parse(event.data) as ServerFrame, clock());
    socket.onclose = (event) => onClose(`closed ${event.code} ${event.reason}`);
    socket.onerror = () => onClose("socket error");
    const session: AgentSession = {
      chat: (marker, shape) =>
        new Promise((resolve) => {
          const arrivals: number[] = [];
          let settled = false;
          const finish = (error?: string) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve(error ? { marker, arrivals, error } : { marker, arrivals });
          };
          const timer = setTimeout(() => finish("timed out"), WAIT_MS);
          onClose = finish;
          onFrame = (frame, now) => {
            if (frame.type === "token") arrivals.push(now);
            else if (frame.type === "complete") finish();
            else if (frame.type === "error") {
              finish(`${frame.code}: ${frame.message}`);
            }
          };
          socket.send(JSON.stringify({
            type: "chat",
            id: crypto.randomUUID(),
            content: `${fixtureDirective(shape)} ${marker}`,
            tools: [],
          }));
        }),
      close: () => socket.close(),
    };
  });
}

async function openAgentSessions(
  url: string,
  tokens: string[],
): Promise<AgentSession[]> {
  const sessions: AgentSession[] = [];
  for (let i = 0; i < tokens.length; i += 100) {
    sessions.push(
      ...await Promise.all(
        tokens.slice(i, i + 100).map((t) => openAgentSession(url, t)),
      ),
    );
  }
  return sessions;
}

/**
 * How a level runs: `sessions` sessions stream at once, each chat after chat, their starts
 * spread evenly over one stream's duration. So turns start and end all the time, as with many
 * users in a steady state, rather than all together. Each session's first and last
 * `rampChats` chats are not measured: while they run, the other sessions are still starting
 * or already done, and the measured tokens all leave with `sessions` streams under way.
 */
interface Schedule {
  sessions: number;
  /** How long one answer streams. */
  streamMs: number;
  measuredChats: number;
  rampChats: number;
}

function chatsPerSession(schedule: Schedule): number {
  return schedule.measuredChats + 2 * schedule.rampChats;
}

/** Runs a level; returns the measured runs, and the ramp runs that failed (errors count). */
function runLevel(
  schedule: Schedule,
  chat: (session: number, chat: number) => Promise<SessionRun>,
): Promise<SessionRun[]> {
  const { sessions, measuredChats, rampChats } = schedule;
  return Promise.all(Array.from({ length: sessions }, async (_, session) => {
    await new Promise((resolve) => setTimeout(resolve, (session / sessions) * schedule.streamMs));
    const runs: SessionRun[] = [];
    for (let index = 0; index < chatsPerSession(schedule); index++) {
      const run = await chat(session, index);
      const measured = index >= rampChats && index < rampChats + measuredChats;
      if (measured || run.error) runs.push(measured ? run : { ...run, arrivals: [] });
    }
    return runs;
  })).then((perSession) => perSession.flat());
}

interface LevelLatencies {
  /** Per token after the first of its stream, sorted, in ms. */
  latencies: number[];
  /** Per stream: the first token, which also waits for the stream to be set up. */
  firstTokens: number[];
  errors: string[];
}

/**
 * Arrival minus departure for every token. A stream's first token is kept apart: in both
 * paths it also measures setting the stream up (headers, the reader starting), not relaying.
 */
function latencies(runs: SessionRun[], emitted: Record<string, number[]>): LevelLatencies {
  const all: number[] = [];
  const firstTokens: number[] = [];
  const errors: string[] = [];
  for (const run of runs) {
    const departures = emitted[run.marker] ?? [];
    if (run.error) errors.push(run.error);
    else if (departures.length !== run.arrivals.length) {
      errors.push(`${run.arrivals.length} tokens arrived, ${departures.length} were sent`);
    } else {
      run.arrivals.forEach((arrival, i) =>
        (i === 0 ? firstTokens : all).push(arrival - departures[i])
      );
    }
  }
  return {
    latencies: all.sort((a, b) => a - b),
    firstTokens: firstTokens.sort((a, b) => a - b),
    errors,
  };
}

function levelResults(
  sessions: number,
  rounds: number,
  measuredStreams: number,
  tokensPerStream: number,
  direct: LevelLatencies,
  relayed: LevelLatencies,
  agent: LevelLatencies,
  cpu: {
    agentProcess: number;
    machine: { agent: MachineCpu; direct: MachineCpu };
    agentPerToken: number;
    relayPerToken: number;
  },
): BenchResult[] {
  const p = (values: number[], q: number) => percentile(values, q);
  const addedP50 = p(agent.latencies, 50) - p(direct.latencies, 50);
  const addedP99 = p(agent.latencies, 99) - p(direct.latencies, 99);
  const targeted = sessions === 100;
  const detail = `added p99 ${addedP99.toFixed(2)} ms; agent p50/p99 ` +
    `${p(agent.latencies, 50).toFixed(2)}/${p(agent.latencies, 99).toFixed(2)} ms, direct ` +
    `${p(direct.latencies, 50).toFixed(2)}/${p(direct.latencies, 99).toFixed(2)} ms; ` +
    `first token p50 agent/direct ${p(agent.firstTokens, 50).toFixed(2)}/` +
    `${p(direct.firstTokens, 50).toFixed(2)} ms; ` +
    `${agent.latencies.length} tokens in ${rounds} round(s); agent process CPU ` +
    `${(cpu.agentProcess * 100).toFixed(0)}% of a core (${
      (cpu.agentPerToken * 1e6).toFixed(0)
    } µs per token, turn set-up included), machine ` +
    `${percentOf(cpu.machine.agent.busy, cpu.machine.agent)} busy, hypervisor steal ` +
    `${percentOf(cpu.machine.agent.steal, cpu.machine.agent)} (direct phase ` +
    `${percentOf(cpu.machine.direct.steal, cpu.machine.direct)}); ` +
    `errors ${agent.errors.length} agent, ${direct.errors.length} direct` +
    (agent.errors.length > 0 ? ` (first: ${agent.errors[0]})` : "");
  const results: BenchResult[] = [{
    name: `agent: added latency per token, ${sessions} concurrent sessions (p50)`,
    value: addedP50,
    unit: "ms",
    detail,
    ...(targeted
      ? {
        target: `p50 <= ${ADDED_P50_TARGET_MS} ms, p99 <= ${ADDED_P99_TARGET_MS} ms`,
        pass: addedP50 <= ADDED_P50_TARGET_MS &&
          addedP99 <= ADDED_P99_TARGET_MS &&
          agent.errors.length === 0,
      }
      : {}),
  }];
  const relayAddedP50 = p(relayed.latencies, 50) - p(direct.latencies, 50);
  results.push({
    name: `bare relay (fetch SSE → WebSocket, nothing else): added latency per token, ` +
      `${sessions} concurrent sessions (p50)`,
    value: relayAddedP50,
    unit: "ms",
    detail: `added p99 ${(p(relayed.latencies, 99) - p(direct.latencies, 99)).toFixed(2)} ms; ` +
      `relay p50/p99 ${p(relayed.latencies, 50).toFixed(2)}/` +
      `${p(relayed.latencies, 99).toFixed(2)} ms; relay process CPU ${
        (cpu.relayPerToken * 1e6).toFixed(0)
      } µs per token; the agent adds ` +
      `${(p(agent.latencies, 50) - p(relayed.latencies, 50)).toFixed(2)} ms (p50) beyond it; ` +
      `errors ${relayed.errors.length}`,
  });
  // The Edge Runtime's hard CPU limit per worker (runtime_limits.ts): how far one isolate's
  // budget goes, turn set-up included, beside the least any relay must spend.
  const budgetSeconds = (PLAN_LIMITS.free.cpu?.hardMs ?? 2_000) / 1000;
  results.push({
    name: `agent isolate: tokens streamed inside a ${budgetSeconds} s CPU budget, ` +
      `${sessions} concurrent sessions`,
    value: Math.floor(budgetSeconds / cpu.agentPerToken),
    unit: "tokens",
    detail: `agent ${(cpu.agentPerToken * 1e6).toFixed(0)} µs CPU per streamed token; the bare ` +
      `relay ${(cpu.relayPerToken * 1e6).toFixed(0)} µs, ` +
      `${Math.floor(budgetSeconds / cpu.relayPerToken)} tokens in the same budget ` +
      `(whole-process CPU from /proc, as the local gateway counts it)`,
  });
  if (sessions >= 1000) {
    results.push({
      name: `agent: ${sessions} concurrent streaming sessions, errors`,
      value: agent.errors.length,
      unit: "errors",
      target: "= 0",
      pass: agent.errors.length === 0,
      detail: `${agent.latencies.length + agent.firstTokens.length} of ` +
        `${measuredStreams * tokensPerStream} measured tokens delivered`,
    });
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Memory per idle connection

async function idleMemory(
  worker: AgentWorker,
  tokens: string[],
): Promise<BenchResult> {
  // One connection first, so code paths, pools and JIT are in place before the baseline.
  const warm = await openIdle(worker.url, tokens.slice(0, 1));
  for (const socket of warm) socket.close();
  await settle();
  const start = await worker.rssBytes();
  // Two rounds of one connection per user (the limit is three). The first round also grows
  // the JavaScript heap to its working size (setting up a connection makes short-lived
  // garbage: token verification, queries); the second round's growth is the steady cost.
  const first = await openRound(worker.url, tokens);
  const middle = await worker.rssBytes();
  const second = await openRound(worker.url, tokens);
  const end = await worker.rssBytes();
  for (const socket of [...first, ...second]) socket.close();
  const marginal = (end - middle) / second.length;
  const overall = (end - start) / (first.length + second.length);
  return {
    name: `agent: memory per idle connection (${first.length + second.length} open)`,
    value: marginal / 1024,
    unit: "KiB",
    // A few dozen sockets are within the noise of RSS (page granularity, heap growth): only a
    // full run is held to the target.
    ...(second.length >= MIN_IDLE_FOR_TARGET
      ? { target: `<= ${IDLE_BYTES_TARGET / 1024} KiB`, pass: marginal <= IDLE_BYTES_TARGET }
      : {}),
    detail: `second ${second.length} connections; over all ${(overall / 1024).toFixed(1)} KiB ` +
      `each; worker RSS ${mib(start)} → ${mib(middle)} → ${mib(end)} MiB`,
  };
}

async function openRound(url: string, tokens: string[]): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  for (let i = 0; i < tokens.length; i += 100) {
    sockets.push(...await openIdle(url, tokens.slice(i, i + 100)));
  }
  await settle();
  return sockets;
}

function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 1000));
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

/** Opens one idle socket per token and resolves once each got its `ready` frame. */
function openIdle(url: string, tokens: string[]): Promise<WebSocket[]> {
  return Promise.all(
    tokens.map((token) =>
      new Promise<WebSocket>((resolve, reject) => {
        const socket = new WebSocket(
          url,
          { headers: { Authorization: `Bearer ${token}` } } as never,
        );
        socket.onmessage = (event) => {
          if ((JSON.parse(event.data) as ServerFrame).type === "ready") {
            resolve(socket);
          }
        };
        socket.onerror = () => reject(new Error("an idle connection failed"));
      })
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// The agent worker process

export interface AgentWorker {
  url: string;
  log: WorkerLog;
  rssBytes(): Promise<number>;
  /** User plus system CPU time the worker used so far. */
  cpuSeconds(): Promise<number>;
  stop(): Promise<void>;
  /** SIGKILL, as the runtime's hard limits end a worker: no `beforeunload`. */
  kill(): Promise<void>;
}

/** What every benchmarked agent worker is given: the bench's database, keys and LLM double. */
export function agentWorkerEnv(
  ctx: BenchContext,
  key: SigningKey,
  llmUrl: string,
): Record<string, string> {
  return {
    SUPABASE_DB_URL: ctx.databaseUrl,
    AGENT_DB_POOL_SIZE: String(ctx.pools.agent),
    AGENT_FLUSH_DB_POOL_SIZE: String(ctx.pools.agentFlush),
    SUPABASE_JWKS: JSON.stringify(jwksOf(key)),
    LLM_BASE_URL: llmUrl,
    LLM_MODEL: "bench-model",
  };
}

export async function startAgentWorker(
  ctx: BenchContext,
  key: SigningKey,
  llmUrl: string,
  /** The V8 heap's maximum, as the Edge Runtime sets it to the memory limit; unset: V8's. */
  heapLimitBytes?: number,
  /** More of the function's environment (e.g. `AGENT_LEASE_MS`). */
  extraEnv: Record<string, string> = {},
): Promise<AgentWorker> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--config",
      join(PROJECT_ROOT, "deno.json"),
      // As deploy resolves it (and the stand-in's workers): the function's own import map.
      "--import-map",
      join(PROJECT_ROOT, "supabase", "functions", "agent", "deno.json"),
      `--lock=${join(PROJECT_ROOT, "deno.lock")}`,
      "--frozen",
      ...heapLimitFlags(heapLimitBytes),
      join(PROJECT_ROOT, "supabase", "functions", "agent", "index.ts"),
    ],
    cwd: PROJECT_ROOT,
    env: {
      ...agentWorkerEnv(ctx, key, llmUrl),
      DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${port}`,
      NO_COLOR: "1",
      // e.g. AGENT_BENCH_V8_FLAGS=--prof to profile the agent process.
      ...(Deno.env.get("AGENT_BENCH_V8_FLAGS")
        ? { DENO_V8_FLAGS: Deno.env.get("AGENT_BENCH_V8_FLAGS")! }
        : {}),
      ...extraEnv,
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const log: WorkerLog = { problems: 0 };
  watchLog(child.stderr, log);
  await waitForPort(port, child.status);
  return {
    url: `ws://127.0.0.1:${port}/agent`,
    log,
    async rssBytes() {
      const status = await Deno.readTextFile(`/proc/${child.pid}/status`);
      const kib = Number(status.match(/^VmRSS:\s+(\d+) kB$/m)?.[1]);
      if (!Number.isFinite(kib)) throw new Error("no VmRSS in /proc status");
      return kib * 1024;
    },
    cpuSeconds: () => processCpuSeconds(child.pid),
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
    async kill() {
      child.kill("SIGKILL");
      await child.status;
    },
  };
}

/** User plus system CPU time process `pid` used so far. */
async function processCpuSeconds(pid: number): Promise<number> {
  // Fields 14 and 15 of /proc/<pid>/stat, after the parenthesised command name.
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/**
 * CPU time of the whole machine (/proc/stat, in ticks). `steal` is time the hypervisor gave
 * this virtual machine's cores to someone else: a process that was running just stops, so
 * every path's latency tail grows with it, whatever the code does.
 */
interface MachineCpu {
  busy: number;
  steal: number;
  total: number;
}

function noCpu(): MachineCpu {
  return { busy: 0, steal: 0, total: 0 };
}

async function machineCpu(): Promise<MachineCpu> {
  const [line] = (await Deno.readTextFile("/proc/stat")).split("\n");
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = ticks[3] + ticks[4]; // idle + iowait
  const total = ticks.slice(0, 8).reduce((sum, t) => sum + t, 0);
  return { busy: total - idle, steal: ticks[7], total };
}

function addCpu(sum: MachineCpu, before: MachineCpu, after: MachineCpu): void {
  sum.busy += after.busy - before.busy;
  sum.steal += after.steal - before.steal;
  sum.total += after.total - before.total;
}

function percentOf(part: number, of: MachineCpu): string {
  return `${of.total > 0 ? (part / of.total * 100).toFixed(0) : "?"}%`;
}

/** How many problems the worker logged (lines starting "agent:"), and the first of them. */
interface WorkerLog {
  problems: number;
  first?: string;
}

/**
 * Reads the worker's log: counts its problem reports (a retried deadlock is an error in the
 * results even though the client never saw it) and prints the first few lines.
 */
async function watchLog(stream: ReadableStream<Uint8Array>, log: WorkerLog): Promise<void> {
  let buffered = "";
  let printed = 0;
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    buffered += text;
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) {
      if (line.trim() === "" || line.startsWith("Listening on")) continue;
      if (line.startsWith("agent:")) {
        log.problems++;
        log.first ??= line;
      }
      if (printed++ < 20) console.error(`[agent] ${line}`);
    }
  }
}

async function waitForPort(
  port: number,
  exited: Promise<Deno.CommandStatus>,
): Promise<void> {
  let gone = false;
  exited.then(() => gone = true);
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (gone) throw new Error("the agent worker exited before it listened");
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionRefused)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`the agent worker did not listen on port ${port}`);
}

if (import.meta.main && Deno.args.includes(UPSTREAM_FLAG)) {
  await serveUpstream();
}
if (import.meta.main && Deno.args.includes(RELAY_FLAG)) {
  serveRelay(Deno.args[Deno.args.indexOf(RELAY_FLAG) + 1]);
}
