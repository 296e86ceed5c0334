/**
 * `deno task dev [--jwt es256|hs256|legacy] [--plan free|paid] [--no-limits] [--api-port N]
 * [--db-port N] [--web-port N] [--data-dir DIR] [--reset] [--pooler] [--verbose]`: the whole
 * local stack on embedded defaults, a stand-in for `supabase start` on machines without Docker,
 * plus the web app on Vite's dev server pointed at it. `--pooler` runs the functions through
 * PgBouncer in transaction mode (their `DATABASE_URL`), as with Supavisor. The functions run
 * under the Edge Runtime's limits of the Free plan unless `--plan paid` (runtime_limits.ts);
 * `--no-limits` lifts them, for debugging only. A second run reuses the data.
 *
 * Ctrl-C, SIGTERM or SIGHUP — to this process, to `deno task`, to its whole process group, or
 * the end of the `deno task` (or `npx`) that launched it — stops everything in order: the web
 * server, the function workers with `beforeunload` (the agent ends its running turns), the
 * gateway with Auth, Realtime and REST, then PgBouncer and Postgres (shutdown.ts); a second
 * Ctrl-C kills what is left.
 */
import { parseArgs } from "node:util";
import { createServer } from "vite";
import { webConfig } from "../web/vite.config.ts";
import { PgBouncerError } from "./standin/pgbouncer.ts";
import { DEFAULT_DATA_DIR, LocalDatabaseError } from "./standin/postgres.ts";
import { stopOnSignal, stopWhenLauncherExits } from "./standin/shutdown.ts";
import { JWT_MODES, type JwtMode } from "./standin/signing_keys.ts";
import { type Plan, PLANS } from "./standin/runtime_limits.ts";
import { DEFAULT_API_PORT, startStack } from "./standin/stack.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "api-port": { type: "string", default: Deno.env.get("API_PORT") ?? String(DEFAULT_API_PORT) },
    "db-port": { type: "string", default: Deno.env.get("DB_PORT") ?? "54322" },
    "web-port": { type: "string", default: Deno.env.get("WEB_PORT") ?? "5173" },
    // Postgres' data directory; the signing key is kept in the directory above it.
    "data-dir": { type: "string", default: DEFAULT_DATA_DIR },
    // Which kind of project to play: asymmetric keys, a shared HS256 secret, or the legacy secret.
    jwt: { type: "string", default: "es256" },
    // Whose Edge Runtime limits the functions run under; Free, the stricter, by default.
    plan: { type: "string", default: "free" },
    "no-limits": { type: "boolean", default: false },
    reset: { type: "boolean", default: false },
    pooler: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
  },
});

const TOKEN_KINDS: Record<JwtMode, string> = {
  es256: "ES256, the public key in the JWKS (--jwt es256)",
  hs256: "HS256 shared secret, in the functions' SUPABASE_JWKS only (--jwt hs256)",
  legacy: "HS256 legacy JWT secret, no JWKS: functions ask Auth (--jwt legacy)",
};
const jwt = values.jwt as JwtMode;
if (!JWT_MODES.includes(jwt)) {
  console.error(`error[bad_jwt_mode]: --jwt takes ${JWT_MODES.join(", ")}, not "${values.jwt}"`);
  Deno.exit(2);
}

const plan = values.plan as Plan;
if (!PLANS.includes(plan)) {
  console.error(`error[bad_plan]: --plan takes ${PLANS.join(", ")}, not "${values.plan}"`);
  Deno.exit(2);
}

console.log(
  "Local stand-in for `supabase start`: same migrations, same wire protocols, no Docker.",
);
const started = performance.now();
let stack;
try {
  stack = await startStack({
    jwt,
    apiPort: Number(values["api-port"]),
    dbPort: Number(values["db-port"]),
    dataDir: values["data-dir"],
    reset: values.reset,
    pooler: values.pooler,
    limits: values["no-limits"] ? "off" : { plan },
    verbose: values.verbose,
    // The web app's pages may call the functions (MCP checks a browser's Origin).
    functionEnv: {
      ALLOWED_ORIGINS: Deno.env.get("ALLOWED_ORIGINS") ??
        `http://localhost:${values["web-port"]},http://127.0.0.1:${values["web-port"]}`,
    },
    log: (line) => {
      if (values.verbose || !line.includes(" LOG: ")) console.error(line);
    },
  });
} catch (error) {
  if (!(error instanceof LocalDatabaseError || error instanceof PgBouncerError)) throw error;
  console.error(`error[${error.code}]: ${error.message}`);
  Deno.exit(1);
}

// The web app talks to this stack unless VITE_SUPABASE_URL points it elsewhere.
const web = await createServer(webConfig({
  fallback: { supabaseUrl: stack.apiUrl, publishableKey: stack.publishableKey },
  port: Number(values["web-port"]),
}));
await web.listen();
const webUrl = web.resolvedUrls?.local[0] ?? `http://127.0.0.1:${values["web-port"]}/`;

const functions = [...stack.functions.keys()].map((name) => `${stack.apiUrl}/functions/v1/${name}`);
console.log(`
  Web app          ${webUrl}   ← open this, sign in as alice@example.com / password123
  API URL          ${stack.apiUrl}
  Functions        ${functions.join("\n                   ") || "(none built yet)"}
  Auth             ${stack.apiUrl}/auth/v1
  Realtime         ${stack.apiUrl.replace("http", "ws")}/realtime/v1
  REST             ${stack.apiUrl}/rest/v1 (read-only stand-in for PostgREST)
  DB URL           ${stack.dbUrl}${
  stack.pooler
    ? `\n  Pooler URL       ${stack.pooler.url}   (PgBouncer, transaction mode, ${stack.pooler.poolSize} server connections: the functions' DATABASE_URL)`
    : ""
}
  Publishable key  ${stack.publishableKey}
  Secret key       ${stack.secretKey}
  Access tokens    ${TOKEN_KINDS[stack.jwt]}${
  stack.legacyKeys
    ? `
  anon key         ${stack.legacyKeys.anon}
  service_role key ${stack.legacyKeys.serviceRole}`
    : ""
}
  Demo users       alice@example.com / password123, bob@example.com / password123
${stack.notes.map((note) => `\n  ${note}`).join("")}

Ready in ${((performance.now() - started) / 1000).toFixed(1)} s. Ctrl-C stops everything.`);

// Closing Vite while it still optimises dependencies (a fresh checkout's first seconds) makes
// its esbuild service reject a promise nobody awaits; that would end this process before the
// stack is stopped. A terminal's Ctrl-C reaches esbuild (same process group) before this process
// has run its own signal handler, so the rejection may come just before `stopping` is set: it is
// never fatal, and outside a stop it says that the web app's dependencies need a reload.
let stopping = false;
globalThis.addEventListener("unhandledrejection", (event) => {
  const message = event.reason instanceof Error ? event.reason.message : "";
  if (!message.includes("The service was stopped")) return;
  event.preventDefault();
  console.log(
    stopping
      ? "(Vite stopped while it optimised dependencies)"
      : "(Vite's dependency optimiser stopped; reload the web app if it fails to load)",
  );
});

// Registered after the stack, so it goes first; the stack registered itself when it started.
stopOnSignal({
  stop: async () => {
    console.log("\nstopping… (Ctrl-C again to kill what is left)");
    stopping = true;
    await web.close();
  },
  kill: () => web.close(),
});
stopWhenLauncherExits();
