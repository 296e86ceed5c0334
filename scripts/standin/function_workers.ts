/**
 * Each Edge Function runs in its own Deno process, as each runs in its own isolate on
 * Supabase: the process gets the environment Supabase gives a function, and its unchanged
 * `Deno.serve(...)` binds where `DENO_SERVE_ADDRESS` says. Killing a worker is how tests
 * simulate a dead isolate; `unload` is how the runtime ends one (`beforeunload`, then gone).
 *
 * Imports resolve as deploy resolves them: through the function's own deno.json only (its
 * `imports`, passed as the import map), with the root lockfile frozen, so a worker fails to
 * start on an import its deno.json lacks or on a package the lockfile does not pin. (The
 * function's deno.json cannot be the `--config` itself: Deno would then prune the root
 * lockfile's other entries, which `--frozen` refuses.)
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pipeLines, signalChild } from "./child_processes.ts";
import { freePort } from "./postgres.ts";
import { PROJECT_ROOT } from "./supabase_cli.ts";

const WORKER_SHIM = fileURLToPath(new URL("./worker_shim.ts", import.meta.url));
const DEFAULT_UNLOAD_GRACE_MS = 1_000;

export interface FunctionWorkerOptions {
  name: string;
  /** Entry file; defaults to supabase/functions/<name>/index.ts. */
  entrypoint?: string;
  /**
   * The import map, i.e. the function's deno.json; defaults to
   * supabase/functions/<name>/deno.json. A test entrypoint without one (importing nothing
   * bare) runs on the root configuration alone.
   */
  importMap?: string;
  env: Record<string, string>;
  /** How long the worker has between `beforeunload` and its end (`unload`). */
  unloadGraceMs?: number;
  /**
   * The V8 heap's limit: the Edge Runtime creates each user isolate with its memory limit as the
   * heap's maximum, so V8 collects garbage as it would there (by default V8 lets the heap grow to
   * gigabytes before a full collection). Unset: V8's default.
   */
  heapLimitBytes?: number;
  log?: (line: string) => void;
  /**
   * Also pass on the `Listening on …` line the function's own `Deno.serve` prints at start;
   * by default it is dropped (the gateway's address is the one that matters).
   */
  verbose?: boolean;
}

export interface FunctionWorker {
  name: string;
  /** Where the worker listens, e.g. http://127.0.0.1:41234 */
  origin: string;
  /** The worker's process, whose CPU and memory the gateway reads from /proc. */
  pid: number;
  /** Resolves when the process exits (crash, kill or stop). */
  exited: Promise<Deno.CommandStatus>;
  kill(signal?: Deno.Signal): void;
  /**
   * Ends the worker as the Edge Runtime does at its wall clock: `beforeunload` is dispatched
   * in it (worker_shim.ts), and it exits after the grace; resolves when it is gone.
   */
  unload(): Promise<void>;
  /** Ends the process at once, without `beforeunload` (a crash; a test's teardown). */
  stop(): Promise<void>;
}

/** `deno run` flags that cap the V8 heap as the Edge Runtime caps a user isolate's (none unset). */
export function heapLimitFlags(heapLimitBytes: number | undefined): string[] {
  return heapLimitBytes === undefined
    ? []
    : [`--v8-flags=--max-heap-size=${Math.floor(heapLimitBytes / 2 ** 20)}`];
}

export async function startFunctionWorker(options: FunctionWorkerOptions): Promise<FunctionWorker> {
  const port = freePort();
  const folder = join(PROJECT_ROOT, "supabase", "functions", options.name);
  const entrypoint = options.entrypoint ?? join(folder, "index.ts");
  const importMap = options.importMap ?? join(folder, "deno.json");
  const hasImportMap = await exists(importMap);
  if (!hasImportMap && (options.importMap || !options.entrypoint)) {
    throw new Error(
      `function ${options.name} has no ${importMap}: deploy resolves its imports with it`,
    );
  }
  const graceMs = options.unloadGraceMs ?? DEFAULT_UNLOAD_GRACE_MS;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--config",
      join(PROJECT_ROOT, "deno.json"),
      ...(hasImportMap ? ["--import-map", importMap] : []),
      `--lock=${join(PROJECT_ROOT, "deno.lock")}`,
      "--frozen",
      ...heapLimitFlags(options.heapLimitBytes),
      "--preload",
      WORKER_SHIM,
      entrypoint,
    ],
    cwd: PROJECT_ROOT,
    env: {
      ...options.env,
      DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${port}`,
      NO_COLOR: "1",
      STANDIN_UNLOAD_GRACE_MS: String(graceMs),
    },
    // A session of its own: a terminal's Ctrl-C would otherwise end it on the spot, without
    // `beforeunload`; the stand-in unloads it instead. The stand-in holds its stdin open and
    // never writes to it: when the stand-in dies without unloading it, the pipe's end tells the
    // worker to unload itself (worker_shim.ts), so no worker outlives its stand-in.
    detached: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const log = options.log ?? ((line: string) => console.error(line));
  // Deno.serve announces its address once, on stdout or stderr depending on the Deno version;
  // only that first announcement is dropped, whatever the function logs later passes.
  let announced = options.verbose === true;
  const forward = (line: string) => {
    if (!announced && LISTENING.test(line)) {
      announced = true;
      return;
    }
    log(`[${options.name}] ${line}`);
  };
  pipeLines(child.stdout, forward);
  pipeLines(child.stderr, forward);

  const origin = `http://127.0.0.1:${port}`;
  const exited = child.status.then(async (status) => {
    await child.stdin.close();
    return status;
  });
  let unloaded: Promise<void> | undefined;
  const signal = (name: Deno.Signal) => signalChild(child, name);
  const ready = await Promise.race([
    waitForPort(port).then(() => true),
    exited.then(() => false),
  ]);
  if (!ready) {
    throw new Error(`function ${options.name} exited before it listened (see its log above)`);
  }
  return {
    name: options.name,
    origin,
    pid: child.pid,
    exited,
    kill: (signal: Deno.Signal = "SIGKILL") => child.kill(signal),
    unload: () =>
      unloaded ??= (async () => {
        signal("SIGTERM");
        // A worker that ignores its grace is cut, as the runtime would.
        const cut = setTimeout(() => signal("SIGKILL"), graceMs + 2_000);
        await exited;
        clearTimeout(cut);
      })(),
    stop: async () => {
      signal("SIGKILL");
      await exited;
    },
  };
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

/** What `Deno.serve`'s default `onListen` prints, e.g. `Listening on http://127.0.0.1:41234/`. */
const LISTENING = /^Listening on https?:\/\/\S+/;

async function waitForPort(port: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0;; attempt++) {
    if (Date.now() > deadline) throw new Error(`nothing listened on port ${port} in time`);
    try {
      const connection = await Deno.connect({ hostname: "127.0.0.1", port });
      connection.close();
      return;
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionRefused)) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.min(50 * (attempt + 1), 250)));
    }
  }
}
