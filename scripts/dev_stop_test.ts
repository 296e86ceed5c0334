/**
 * `deno task dev` — the real entry, as a developer runs it — stops whole. Each stop starts the
 * task in a process group of its own, as a terminal runs a foreground job, opens an agent turn
 * that is still streaming, and then signals it: SIGINT to the whole group (what Ctrl-C in a
 * terminal sends), SIGINT to the task process alone, SIGTERM to it alone. Every time the task
 * must exit, no process it started may be left (every descendant seen while it ran, found by
 * walking /proc, and the postmaster of postmaster.pid), Postgres must be shut down cleanly, and
 * the running turn must have been left by the agent's `beforeunload` for the next isolate to
 * adopt — its lease given up, its client told to reconnect and resume — not ended.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createClient } from "@supabase/supabase-js";
import postgres from "postgres";
import type { TurnFrame } from "../supabase/functions/_shared/agent_protocol.ts";
import { AgentClient } from "../supabase/tests/support/agent_world.ts";
import { pipeLines } from "./standin/child_processes.ts";
import { LOCAL_PUBLISHABLE_KEY } from "./standin/keys.ts";
import { databaseUrl, freePort, startPostgres } from "./standin/postgres.ts";
import { hasProcfs, type ProcessStat, readProcFile, readStat } from "./standin/procfs.ts";
import { PROJECT_ROOT } from "./standin/supabase_cli.ts";

type StopSignal = "SIGINT" | "SIGTERM";
interface Stop {
  signal: StopSignal;
  /** `group`: every process of the task's group, as a terminal's Ctrl-C; `task`: it alone. */
  to: "group" | "task";
}

const STOPS: Stop[] = [
  { signal: "SIGINT", to: "group" },
  { signal: "SIGINT", to: "task" },
  { signal: "SIGTERM", to: "task" },
];

/** How long a start or a stop may take before the test gives up on it (a deadline, no claim). */
const START_DEADLINE_MS = 120_000;
const STOP_DEADLINE_MS = 60_000;
/** How long what outlives the task may take to go (esbuild, say, sees its pipe close). */
const LEFTOVER_DEADLINE_MS = 20_000;

/** Variables of the test run that would point the stack's functions elsewhere. */
const NOT_PASSED_ON = [
  "SUPABASE_DB_URL",
  "DATABASE_URL",
  "STANDIN_ADMIN_DB_URL",
  "OPENROUTER_API_KEY",
  "LLM_API_KEY",
  "LLM_BASE_URL",
  "LLM_MODEL",
];

Deno.test({
  name:
    "deno task dev: Ctrl-C and SIGTERM stop every process it started, the agent's turn released by beforeunload",
  // The process tree is read from /proc; under CI=true (Linux) it must run.
  ignore: Deno.env.get("CI") !== "true" && !hasProcfs(),
  fn: async (t) => {
    const home = await Deno.makeTempDir({ prefix: "supabase-agent-dev-stop-" });
    // As root, Postgres runs as the `postgres` OS user, which must reach its data directory.
    await Deno.chmod(home, 0o755);
    const dataDir = join(home, "postgres");
    try {
      for (const stop of STOPS) {
        const target = stop.to === "group" ? "the process group (Ctrl-C)" : "the task process";
        await t.step(`${stop.signal} to ${target}`, async () => {
          const dev = await startDev(dataDir);
          let turn: RunningTurn | undefined;
          try {
            turn = await startRunningTurn(dev.apiUrl);
            dev.signal(stop);
            const status = await dev.exited();
            assert.equal(
              status.signal ?? status.code,
              status.signal ? stop.signal : 128 + SIGNAL_NUMBERS[stop.signal],
              `deno task dev ended with ${JSON.stringify(status)}\n${dev.transcript()}`,
            );
            const left = await dev.leftBehind();
            assert.deepEqual(
              left,
              [],
              `processes left behind:\n${left.join("\n")}\n${dev.transcript()}`,
            );

            // The agent itself closed the socket, telling the client to resume; the turn goes on
            // elsewhere (the next start's isolates adopt it), so nothing ended it.
            const closed = await turn.client.closed;
            assert.equal(
              closed.reason,
              "[1001] the server is shutting down; reconnect and resume",
              dev.transcript(),
            );
            const ending = turn.client.frames.find((frame) =>
              (frame as TurnFrame).turn_id === turn!.turnId && frame.type === "error"
            );
            assert.equal(ending, undefined, dev.transcript());
          } finally {
            turn?.client.close();
            await dev.killLeftovers();
          }
          assert.equal(await clusterState(dataDir), "shut down", dev.transcript());
          assert.equal(
            await turnState(dataDir, turn.turnId),
            "running, no lease",
            dev.transcript(),
          );
        });
      }
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
});

interface RunningDev {
  apiUrl: string;
  signal(stop: Stop): void;
  /** Waits (with a deadline) for the task process to exit. */
  exited(): Promise<Deno.CommandStatus>;
  /** Every process seen in the tree that is still alive once the task exited (with a deadline). */
  leftBehind(): Promise<string[]>;
  /** Kills whatever of the tree is still alive (after a failure) and waits for the task. */
  killLeftovers(): Promise<void>;
  transcript(): string;
}

async function startDev(dataDir: string): Promise<RunningDev> {
  const apiPort = freePort();
  const env = Deno.env.toObject();
  for (const name of NOT_PASSED_ON) delete env[name];
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "task",
      "dev",
      `--api-port=${apiPort}`,
      `--db-port=${freePort()}`,
      `--web-port=${freePort()}`,
      `--data-dir=${dataDir}`,
    ],
    cwd: PROJECT_ROOT,
    clearEnv: true,
    env: { ...env, NO_COLOR: "1" },
    // A session and process group of its own, led by the task: a terminal's foreground job.
    detached: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => ready = resolve);
  const collect = (stream: ReadableStream<Uint8Array>) =>
    pipeLines(stream, (line) => {
      lines.push(line);
      if (line.startsWith("Ready in ")) ready();
    });
  const output = Promise.all([collect(child.stdout), collect(child.stderr)]);

  // Every process of the tree, recorded while it runs: after the stop, none may be left.
  const seen = new Map<string, ProcessEntry>();
  const record = () => {
    for (const stat of descendantsOf(child.pid)) {
      const key = `${stat.pid}:${stat.startTime}`;
      if (!seen.has(key)) seen.set(key, entryOf(stat));
    }
  };
  const watcher = setInterval(record, 100);
  const transcript = () => `--- deno task dev said ---\n${lines.join("\n")}`;

  const started = await withDeadline(
    Promise.race([
      isReady.then(() => "ready" as const),
      child.status.then((status) => `exited (${JSON.stringify(status)})`),
    ]),
    START_DEADLINE_MS,
    "ready",
  ).catch((error: Error) => error.message);
  if (started !== "ready") {
    clearInterval(watcher);
    killAll(child.pid, seen);
    await child.status;
    await output;
    throw new Error(`deno task dev did not start: ${started}\n${transcript()}`);
  }
  record();
  const postmaster = await readPostmaster(dataDir);
  if (postmaster) seen.set(postmaster.key, postmaster);
  assert.ok(postmaster, `no postmaster.pid in ${dataDir} once ready`);

  let exitedAt: Promise<Deno.CommandStatus> | undefined;
  return {
    apiUrl: `http://127.0.0.1:${apiPort}`,
    signal: (stop) => {
      record();
      Deno.kill(stop.to === "group" ? -child.pid : child.pid, stop.signal);
    },
    exited: () =>
      exitedAt ??= (async () => {
        const status = await withDeadline(child.status, STOP_DEADLINE_MS, "deno task dev exited")
          .catch((error: Error) => {
            throw new Error(`${error.message}\n${transcript()}`);
          });
        clearInterval(watcher);
        await output;
        return status;
      })(),
    leftBehind: async () => {
      const until = Date.now() + LEFTOVER_DEADLINE_MS;
      for (;;) {
        const alive = [...seen.values()].filter(isAlive);
        if (alive.length === 0 || Date.now() > until) {
          return alive.map((entry) => `${entry.pid} ${entry.command}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    killLeftovers: async () => {
      clearInterval(watcher);
      killAll(child.pid, seen);
      await child.status;
      await output;
    },
    transcript,
  };
}

interface RunningTurn {
  turnId: string;
  client: AgentClient;
}

/** Signs alice in and starts a turn that streams for minutes: it is running when we stop. */
async function startRunningTurn(apiUrl: string): Promise<RunningTurn> {
  const supabase = createClient(apiUrl, LOCAL_PUBLISHABLE_KEY, {
    auth: { persistSession: false, autoRefreshToken: false },
  });
  const { data, error } = await supabase.auth.signInWithPassword({
    email: "alice@example.com",
    password: "password123",
  });
  assert.equal(error, null);
  const token = data.session!.access_token;
  const client = await AgentClient.open(`${apiUrl.replace(/^http/, "ws")}/functions/v1/agent`, {
    protocols: [`jwt-${token}`],
  });
  await client.takeType("ready");
  const id = crypto.randomUUID();
  client.send({ type: "chat", id, content: "[[fixture:slow count=5000 delay=50]] go on" });
  const start = await client.take((frame) =>
    frame.type === "start" && frame.user_message_id === id
  );
  const turnId = (start as Extract<TurnFrame, { type: "start" }>).turn_id;
  await client.takeType("token", turnId);
  return { turnId, client };
}

/** What the cluster's control file says of its last shutdown (pg_control's `state`). */
async function clusterState(dataDir: string): Promise<string> {
  const control = await Deno.readFile(join(dataDir, "global", "pg_control"));
  // ControlFileData: system_identifier (8 bytes), pg_control_version (4), catalog_version_no
  // (4), then `state`, a DBState (int32, host order).
  const state = new DataView(control.buffer).getInt32(16, true);
  return DB_STATES[state] ?? `state ${state}`;
}

const DB_STATES = [
  "starting up",
  "shut down",
  "shut down in recovery",
  "shutting down",
  "in crash recovery",
  "in archive recovery",
  "in production",
];

/** The turn's stored state and whether a lease holds it, read from the cluster left behind. */
async function turnState(dataDir: string, turnId: string): Promise<string> {
  const db = await startPostgres({ dataDir, port: freePort() });
  const sql = postgres(databaseUrl(db.port), { max: 1, onnotice: () => {} });
  try {
    const [turn] = await sql`
      select t.state, exists (select 1 from public.agent_isolates i where i.id = t.owner)
        as leased
      from public.agent_turns t where t.id = ${turnId}`;
    if (!turn) return "missing";
    return `${turn.state}, ${turn.leased ? "leased" : "no lease"}`;
  } finally {
    await sql.end();
    await db.stop();
  }
}

const SIGNAL_NUMBERS: Record<StopSignal, number> = { SIGINT: 2, SIGTERM: 15 };

interface ProcessEntry {
  /** pid and start time: a pid the kernel hands out again is another process. */
  key: string;
  pid: number;
  startTime: string;
  command: string;
}

function commandOf(pid: number): string {
  return readProcFile(pid, "cmdline")?.replaceAll("\0", " ").trim() ?? "(gone)";
}

/** The process and everything below it, by parent pid, as /proc has them now. */
function descendantsOf(root: number): ProcessStat[] {
  const children = new Map<number, ProcessStat[]>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const stat = readStat(Number(entry.name));
    if (!stat) continue;
    children.set(stat.ppid, [...children.get(stat.ppid) ?? [], stat]);
  }
  const found: ProcessStat[] = [];
  const rootStat = readStat(root);
  const queue = rootStat ? [rootStat] : [];
  while (queue.length > 0) {
    const stat = queue.shift()!;
    found.push(stat);
    queue.push(...children.get(stat.pid) ?? []);
  }
  return found;
}

function entryOf(stat: ProcessStat): ProcessEntry {
  return {
    key: `${stat.pid}:${stat.startTime}`,
    pid: stat.pid,
    startTime: stat.startTime,
    command: commandOf(stat.pid),
  };
}

/** Alive: the same process (pid and start time) exists and is not a zombie awaiting its reaper. */
function isAlive(entry: ProcessEntry): boolean {
  const stat = readStat(entry.pid);
  return stat !== undefined && stat.startTime === entry.startTime && stat.state !== "Z";
}

async function readPostmaster(dataDir: string): Promise<ProcessEntry | undefined> {
  const text = await Deno.readTextFile(join(dataDir, "postmaster.pid")).catch((error) => {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  });
  const pid = Number(text?.split("\n")[0]);
  const stat = pid > 0 ? readStat(pid) : undefined;
  return stat && entryOf(stat);
}

function killAll(root: number, seen: Map<string, ProcessEntry>): void {
  for (const entry of [...descendantsOf(root).map(entryOf), ...seen.values()]) {
    if (!isAlive(entry)) continue;
    try {
      Deno.kill(entry.pid, "SIGKILL");
    } catch (error) {
      // Gone between the look and the kill.
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
}

/** `promise`, or an error saying `what` did not happen within `ms`. */
async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not ${what} within ${ms / 1000} s`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
