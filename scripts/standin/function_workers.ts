/**
 * Each Edge Function runs in its own Deno process, as each runs in its own isolate on
 * Supabase: the process gets the environment Supabase gives a function, and its unchanged
 * `Deno.serve(...)` binds where `DENO_SERVE_ADDRESS` says. Killing a worker is how tests
 * simulate a dead isolate.
 */
import { join } from "node:path";
import { freePort } from "./postgres.ts";
import { PROJECT_ROOT } from "./supabase_cli.ts";

export interface FunctionWorkerOptions {
  name: string;
  /** Entry file; defaults to supabase/functions/<name>/index.ts. */
  entrypoint?: string;
  env: Record<string, string>;
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
  /** Resolves when the process exits (crash, kill or stop). */
  exited: Promise<Deno.CommandStatus>;
  kill(signal?: Deno.Signal): void;
  stop(): Promise<void>;
}

export async function startFunctionWorker(options: FunctionWorkerOptions): Promise<FunctionWorker> {
  const port = freePort();
  const entrypoint = options.entrypoint ??
    join(PROJECT_ROOT, "supabase", "functions", options.name, "index.ts");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", join(PROJECT_ROOT, "deno.json"), entrypoint],
    cwd: PROJECT_ROOT,
    env: { ...options.env, DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${port}`, NO_COLOR: "1" },
    stdin: "null",
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
  const exited = child.status;
  let stopped = false;
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
    exited,
    kill: (signal: Deno.Signal = "SIGKILL") => child.kill(signal),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      try {
        child.kill("SIGTERM");
      } catch (error) {
        // Already gone: nothing to stop.
        if (!(error instanceof TypeError)) throw error;
      }
      await exited;
    },
  };
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

async function pipeLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) if (line.trim()) onLine(line);
  }
  if (buffered.trim()) onLine(buffered);
}
