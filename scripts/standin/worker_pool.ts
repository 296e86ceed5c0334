/**
 * One function's workers under the Edge Runtime's rules (runtime_limits.ts), as the local
 * gateway runs them. New requests go to the current worker; a worker stops taking them
 * (is retired) at half its wall clock or at the soft CPU limit, and the next request starts a
 * fresh one. A retired worker keeps serving what it has — open WebSockets included — until its
 * wall clock, when it gets `beforeunload` and is closed. Over the hard CPU limit or the memory
 * limit it is killed on the spot, with no `beforeunload`. A worker that dies is replaced by the
 * next request.
 *
 * CPU and memory are read from /proc: utime+stime of the whole process (the isolate's thread
 * and Deno's own, the GC's included, as the process is the isolate here) counted from the start
 * of its first request, so booting is free as on Supabase; VmRSS for memory.
 */
import { type FunctionWorker, startFunctionWorker } from "./function_workers.ts";
import { hasProcfs, readProcFile, readStat } from "./procfs.ts";
import type { RuntimeLimits } from "./runtime_limits.ts";

export interface FunctionPoolOptions {
  name: string;
  entrypoint?: string;
  env: Record<string, string>;
  /** null: no limits (`--no-limits`, debugging only). */
  limits: RuntimeLimits | null;
  log?: (line: string) => void;
  verbose?: boolean;
}

export type WorkerEventKind =
  | "started"
  | "retired" // no new requests
  | "unloading" // beforeunload dispatched, closing after the grace
  | "killed" // hard limit: SIGKILL, no beforeunload
  | "exited";

export interface WorkerEvent {
  pid: number;
  kind: WorkerEventKind;
  /** Why, e.g. "wall clock half (75 s)", "CPU soft limit", "memory limit", "exit code 1". */
  reason: string;
  /** Milliseconds since the worker booted. */
  ageMs: number;
}

/** What the gateway gets when no worker can be had. */
export interface Unavailable {
  unavailable: string;
}

interface Supervised {
  worker: FunctionWorker;
  bootedAt: number;
  /** CPU ticks of the process when its first request started. */
  cpuBaseline?: number;
  retired: boolean;
  ending: boolean;
  exited: boolean;
  timer?: ReturnType<typeof setInterval>;
}

export class FunctionPool {
  readonly name: string;
  /** Every worker's life, in order; tests read it, the log shows it. */
  readonly events: WorkerEvent[] = [];
  readonly #options: FunctionPoolOptions;
  readonly #live = new Set<Supervised>();
  #current?: Supervised;
  #starting?: Promise<Supervised>;
  #stopped = false;
  readonly #procfs = hasProcfs();

  constructor(options: FunctionPoolOptions) {
    this.name = options.name;
    this.#options = options;
    if (options.limits && !this.#procfs) {
      this.#log("no /proc here: only the wall clock is enforced, not CPU or memory");
    }
  }

  /** The worker new requests go to now, if one is up and not retired. */
  get current(): FunctionWorker | undefined {
    const current = this.#current;
    return current && !current.retired && !current.exited ? current.worker : undefined;
  }

  /** Every worker still running, retired ones included. */
  get workers(): FunctionWorker[] {
    return [...this.#live].map((entry) => entry.worker);
  }

  /** Starts a worker to take new requests (the stack boots one per function). */
  async start(): Promise<FunctionWorker> {
    return (await this.#next()).worker;
  }

  /**
   * The origin of a worker that takes a new request, starting one when none can; its first
   * request starts its CPU count.
   */
  async acquire(): Promise<string | Unavailable> {
    if (this.#stopped) return { unavailable: `function ${this.name} is stopped` };
    let entry = this.#current;
    if (!entry || entry.retired || entry.exited) {
      try {
        entry = await this.#next();
      } catch (error) {
        if (!(error instanceof Error)) throw error;
        return { unavailable: error.message };
      }
    }
    if (entry.cpuBaseline === undefined && this.#options.limits?.cpu && this.#procfs) {
      entry.cpuBaseline = readUsage(entry.worker.pid)?.cpuTicks;
    }
    return entry.worker.origin;
  }

  /**
   * Takes no more requests and ends every worker as the runtime does when it shuts down:
   * `beforeunload`, the grace, then gone; resolves when all are.
   */
  async stop(): Promise<void> {
    await this.#end((worker) => worker.unload());
  }

  /** Takes no more requests and kills every worker at once, without `beforeunload`. */
  async kill(): Promise<void> {
    await this.#end((worker) => worker.stop());
  }

  /**
   * Kills every worker — retired ones still serving sockets included — on the spot, without
   * `beforeunload`, as the runtime does at a hard limit; the pool keeps going, and the next
   * request boots a fresh worker. Resolves with how many were killed, once all have exited.
   */
  async killAll(reason: string): Promise<number> {
    const entries = [...this.#live].filter((entry) => !entry.exited);
    for (const entry of entries) this.#kill(entry, reason);
    await Promise.all(entries.map((entry) => entry.worker.exited));
    return entries.length;
  }

  async #end(how: (worker: FunctionWorker) => Promise<void>): Promise<void> {
    this.#stopped = true;
    // A boot that fails is the failure of the request that started it, reported to it there.
    await this.#starting?.catch(() => {});
    await Promise.all([...this.#live].map(async (entry) => {
      clearInterval(entry.timer);
      await how(entry.worker);
    }));
  }

  /** The current worker if it still takes requests, else a fresh one (one start at a time). */
  #next(): Promise<Supervised> {
    const current = this.#current;
    if (current && !current.retired && !current.exited) return Promise.resolve(current);
    this.#starting ??= this.#boot().finally(() => this.#starting = undefined);
    return this.#starting;
  }

  async #boot(): Promise<Supervised> {
    const bootedAt = performance.now();
    const { limits } = this.#options;
    const worker = await startFunctionWorker({
      name: this.name,
      entrypoint: this.#options.entrypoint,
      env: this.#options.env,
      log: this.#options.log,
      verbose: this.#options.verbose,
      unloadGraceMs: limits?.unloadGraceMs,
      heapLimitBytes: limits?.memoryBytes,
    });
    const entry: Supervised = { worker, bootedAt, retired: false, ending: false, exited: false };
    if (this.#stopped) {
      await worker.stop();
      throw new Error(`function ${this.name} is stopped`);
    }
    this.#live.add(entry);
    this.#current = entry;
    this.#record(entry, "started", limits ? "" : "no limits");
    worker.exited.then((status) => {
      entry.exited = true;
      clearInterval(entry.timer);
      this.#live.delete(entry);
      if (this.#current === entry) this.#current = undefined;
      const how = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
      this.#record(entry, "exited", how);
    });
    if (limits) entry.timer = setInterval(() => this.#check(entry, limits), limits.pollMs);
    return entry;
  }

  #check(entry: Supervised, limits: RuntimeLimits) {
    if (entry.exited || entry.ending) return;
    const age = performance.now() - entry.bootedAt;
    if (this.#procfs) {
      const usage = readUsage(entry.worker.pid);
      if (!usage) return; // exiting: the exit handler records it
      if (usage.rssBytes > limits.memoryBytes) {
        return this.#kill(entry, `memory limit (${mb(usage.rssBytes)} MB resident)`);
      }
      if (limits.cpu && entry.cpuBaseline !== undefined) {
        const cpuMs = (usage.cpuTicks - entry.cpuBaseline) * 1000 / CLOCK_TICKS;
        if (cpuMs >= limits.cpu.hardMs) {
          return this.#kill(entry, `CPU hard limit (${cpuMs} ms used)`);
        }
        if (cpuMs >= limits.cpu.softMs) this.#retire(entry, `CPU soft limit (${cpuMs} ms used)`);
      }
    }
    if (age >= limits.wallClockMs) {
      entry.ending = true;
      clearInterval(entry.timer);
      this.#record(entry, "unloading", `wall clock (${limits.wallClockMs / 1000} s)`);
      void entry.worker.unload();
      return;
    }
    if (age >= limits.wallClockMs / 2) {
      this.#retire(entry, `wall clock half (${limits.wallClockMs / 2000} s)`);
    }
  }

  #retire(entry: Supervised, reason: string) {
    if (entry.retired) return;
    entry.retired = true;
    if (this.#current === entry) this.#current = undefined;
    this.#record(entry, "retired", reason);
  }

  #kill(entry: Supervised, reason: string) {
    entry.ending = true;
    entry.retired = true;
    clearInterval(entry.timer);
    if (this.#current === entry) this.#current = undefined;
    this.#record(entry, "killed", reason);
    try {
      entry.worker.kill("SIGKILL");
    } catch (error) {
      // It exited between the reading and the kill.
      if (!(error instanceof TypeError)) throw error;
    }
  }

  #record(entry: Supervised, kind: WorkerEventKind, reason: string) {
    const event = {
      pid: entry.worker.pid,
      kind,
      reason,
      ageMs: Math.round(performance.now() - entry.bootedAt),
    };
    this.events.push(event);
    // Starting is routine; what the limits do to a worker is what a developer wants to see.
    if (kind !== "started" && !this.#stopped) {
      this.#log(`worker ${event.pid} ${kind}${reason ? `: ${reason}` : ""}`);
    }
  }

  #log(line: string) {
    (this.#options.log ?? console.error)(`[${this.name}] ${line}`);
  }
}

/** The kernel's clock tick for /proc's CPU times (USER_HZ): 100 on every Linux we run on. */
const CLOCK_TICKS = clockTicks();

function clockTicks(): number {
  try {
    const output = new Deno.Command("getconf", { args: ["CLK_TCK"] }).outputSync();
    const ticks = Number(new TextDecoder().decode(output.stdout).trim());
    if (output.success && ticks > 0) return ticks;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return 100;
}

/** CPU ticks (utime+stime) and resident bytes of a process; undefined once it is gone. */
export function readUsage(pid: number): { cpuTicks: number; rssBytes: number } | undefined {
  const stat = readStat(pid);
  const status = readProcFile(pid, "status");
  if (!stat || status === undefined) return undefined;
  const rssKb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1] ?? 0);
  return { cpuTicks: stat.cpuTicks, rssBytes: rssKb * 1024 };
}

function mb(bytes: number): number {
  return Math.round(bytes / (1024 * 1024));
}
