/**
 * The whole local stand-in for `supabase start`, as one value: Postgres shaped like
 * Supabase's, the LLM fixture when no API key is set, each Edge Function in its own worker,
 * and one gateway port serving the functions, Auth and Realtime. `deno task dev` runs it;
 * end-to-end tests start their own on free ports.
 */
import { join } from "node:path";
import { createTokenVerifier, type TokenVerifier } from "./token_verifier.ts";
import { connect } from "../../supabase/functions/_shared/db/client.ts";
import { createAuthHandler } from "./auth_server.ts";
import { createRealtimeHandler } from "./realtime/server.ts";
import { type LlmFixture, OFFLINE_DEMO_MODEL, startLlmFixture } from "./llm_fixture.ts";
import { createGateway, type Handler, ProxiedSockets } from "./gateway.ts";
import type { FunctionWorker } from "./function_workers.ts";
import {
  describeLimits,
  type LimitsChoice,
  resolveLimits,
  type RuntimeLimits,
} from "./runtime_limits.ts";
import { startSweepTicker, type SweepTicker } from "./sweep_ticker.ts";
import { FunctionPool } from "./worker_pool.ts";
import { startPgBouncer } from "./pgbouncer.ts";
import {
  type ApiKeys,
  LEGACY_ANON_KEY,
  LEGACY_API_KEYS,
  LEGACY_SERVICE_ROLE_KEY,
  LOCAL_MCP_CREDENTIALS_KEY,
  LOCAL_PUBLISHABLE_KEY,
  LOCAL_SECRET_KEY,
  STANDARD_API_KEYS,
} from "./keys.ts";
import {
  asRole,
  AUTH_ROLE,
  DEFAULT_DATA_DIR,
  DEFAULT_DB_PORT,
  freePort,
  startPostgres,
} from "./postgres.ts";
import { readFunctionConfigs } from "./project_config.ts";
import { createRestHandler } from "./rest_server.ts";
import { stopOnSignal } from "./shutdown.ts";
import {
  functionJwksOf,
  type JwtMode,
  legacySigningKey,
  loadOrCreateSigningKey,
  serverKeysOf,
  type SigningKey,
  signingKeyFor,
} from "./signing_keys.ts";

export const DEFAULT_API_PORT = 54321;

/** Secrets and settings passed on to the functions when set in the environment. */
const PASSED_THROUGH = [
  "OPENROUTER_API_KEY",
  "LLM_API_KEY",
  "LLM_BASE_URL",
  "LLM_MODEL",
  "LLM_FALLBACK_MODELS",
  "N8N_BASE_URL",
  "N8N_WEBHOOK_AUTH_HEADER",
  "N8N_WEBHOOK_AUTH_VALUE",
  "N8N_TIMEOUT_MS",
  "MCP_FUNCTION_URL",
  "MCP_CREDENTIALS_KEY",
  "MCP_REQUEST_TIMEOUT_MS",
  "MCP_OAUTH_REDIRECT_URL",
  "MCP_OAUTH_REFRESH_MARGIN_MS",
  "MCP_OAUTH_LEASE_MS",
  "AUTH_ISSUER_URL",
  "ALLOWED_HOSTS",
  "ALLOWED_ORIGINS",
];

export interface StackOptions {
  /**
   * Which kind of project to play (signing_keys.ts): `es256` (default) an asymmetric signing
   * key; `hs256` a shared-secret signing key, in the functions' SUPABASE_JWKS only; `legacy`
   * the legacy JWT secret, no JWKS at all, and the JWT `anon`/`service_role` API keys beside
   * the `sb_` ones.
   */
  jwt?: JwtMode;
  /** Postgres data directory; the signing key is kept beside it. */
  dataDir?: string;
  /** Throwaway stack (tests): data in a temp dir removed on stop, free ports, new key. */
  ephemeral?: boolean;
  dbPort?: number;
  apiPort?: number;
  reset?: boolean;
  /**
   * Put PgBouncer (transaction mode) between the functions and Postgres, as `DATABASE_URL`:
   * the local Supavisor pooler. Auth, REST and Realtime stay direct, as on Supabase.
   */
  pooler?: boolean;
  /**
   * The Edge Runtime's limits on the function workers (runtime_limits.ts): a plan's figures,
   * optionally stricter, or "off" (debugging only). Default: the paid plan, which test stacks
   * run on; `deno task dev` passes its `--plan` (free by default).
   */
  limits?: LimitsChoice;
  /** Extra environment for the functions (tests point them at doubles this way). */
  functionEnv?: Record<string, string>;
  log?: (line: string) => void;
  /** Also log initdb's transcript and each function's `Listening on …` line. */
  verbose?: boolean;
}

export interface RunningStack {
  apiUrl: string;
  dbUrl: string;
  /** PgBouncer, when started with `pooler`: its URL is the functions' `DATABASE_URL`. */
  pooler?: { url: string; poolSize: number };
  publishableKey: string;
  secretKey: string;
  jwt: JwtMode;
  /** In `legacy` mode, the JWT API keys beside the `sb_` ones. */
  legacyKeys?: { anon: string; serviceRole: string };
  signingKey: SigningKey;
  /** The offline LLM when no API key was set. */
  llm?: LlmFixture;
  /** Each function's workers under the runtime's limits (`current`, `events`, …). */
  functions: Map<string, FunctionPool>;
  /** The limits they run under; null with `limits: "off"`. */
  limits: RuntimeLimits | null;
  /** Kills a function's current worker (a crash) and starts a fresh one (a new isolate). */
  restartFunction(name: string): Promise<FunctionWorker>;
  /**
   * SIGKILLs every worker of a function — retired ones too — with no `beforeunload`, as a
   * hosted region losing all of a function's isolates at once; resolves with how many were
   * killed once all have exited. The next request boots a fresh worker.
   */
  killFunctionWorkers(name: string): Promise<number>;
  /** Cuts every function WebSocket at the gateway, both sides (tests of reconnecting). */
  dropFunctionWebSockets(): number;
  /**
   * Stops the gateway — its port, every socket through it, the Auth, Realtime and REST
   * stand-ins — and starts it again on the same port, as a restart of `supabase start`'s
   * API gateway would look to clients. Postgres and the function workers keep running.
   */
  restartGateway(): Promise<void>;
  /**
   * Kills Postgres with SIGKILL, as a crash would, and resolves once it is gone; everything
   * else keeps running and sees its connections drop. `restartDatabase` brings it back.
   */
  crashDatabase(): Promise<void>;
  /** Starts the crashed Postgres again on the same data directory and port. */
  restartDatabase(): Promise<void>;
  notes: string[];
  /**
   * Stops everything in order: the workers with `beforeunload` (the runtime's shutdown), the
   * gateway and its stand-ins, the LLM double, PgBouncer, Postgres. A SIGINT, SIGTERM or SIGHUP
   * to this process does the same (shutdown.ts), then exits.
   */
  stop(): Promise<void>;
}

/** How often the local stack calls the agent's sweep (what pg_cron does on hosted). */
export const SWEEP_INTERVAL_MS = 2_000;

export async function startStack(
  options: StackOptions = {},
): Promise<RunningStack> {
  const log = options.log ?? ((line: string) => console.error(line));
  const cleanups: (() => Promise<void>)[] = [];
  const notes: string[] = [];
  const pools = new Map<string, FunctionPool>();
  // The workers go first, with `beforeunload` as the runtime gives it, while Postgres, PgBouncer
  // and the gateway still serve them: the agent stores its running turns' endings and tells its
  // clients. Then the rest, newest first: the gateway with Auth, Realtime and REST, the LLM
  // double, PgBouncer, Postgres last.
  let stopping: Promise<void> | undefined;
  let sweeper: SweepTicker | undefined;
  const stop = () =>
    stopping ??= (async () => {
      await sweeper?.stop();
      await Promise.all([...pools.values()].map((pool) => pool.stop()));
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
      unregister();
    })();
  // A second signal: the workers are killed; PgBouncer and Postgres have their own kill, and
  // what runs in this process ends with it.
  const kill = async () => {
    await Promise.all([...pools.values()].map((pool) => pool.kill()));
  };
  let unregister = () => {};

  try {
    const dataDir = options.ephemeral
      ? await Deno.makeTempDir({ prefix: "supabase-agent-stack-" })
      : options.dataDir ?? DEFAULT_DATA_DIR;
    if (options.ephemeral) {
      cleanups.push(() => Deno.remove(dataDir, { recursive: true }));
    }

    const db = await startPostgres({
      dataDir,
      port: options.dbPort ??
        (options.ephemeral ? freePort() : DEFAULT_DB_PORT),
      reset: options.reset,
      seed: true,
      log: options.ephemeral ? undefined : log,
      verbose: options.verbose,
      // The developer's own data is flushed to disk; a throwaway test stack need not be.
      durable: !options.ephemeral,
    });
    cleanups.push(() => db.stop());
    const bouncer = options.pooler
      ? await startPgBouncer({
        upstreamUrl: db.url,
        log,
        verbose: options.verbose,
      })
      : undefined;
    if (bouncer) cleanups.push(() => bouncer.stop());
    // A signal stops what registered last first: the stack, after Postgres and PgBouncer
    // registered themselves, so that it stops them itself, after its workers.
    unregister = stopOnSignal({ stop, kill });

    const mode = options.jwt ?? "es256";
    const signingKey = options.ephemeral
      ? await signingKeyFor(mode)
      : mode === "legacy"
      ? legacySigningKey()
      : mode === "hs256"
      ? await loadOrCreateSigningKey(
        join(dataDir, "..", "signing-key-hs256.json"),
        "HS256",
      )
      : await loadOrCreateSigningKey(join(dataDir, "..", "signing-key.json"));
    const apiKeys = mode === "legacy" ? LEGACY_API_KEYS : STANDARD_API_KEYS;
    // The gateway binds before any worker asks for a free port, so no worker can be handed
    // the same port between a probe and the bind.
    let handler: Handler = () => new Response("starting", { status: 503 });
    const serveGateway = (port: number) =>
      Deno.serve(
        { port, hostname: "127.0.0.1", onListen() {} },
        (request) => handler(request),
      );
    let server = serveGateway(
      options.apiPort ?? (options.ephemeral ? 0 : DEFAULT_API_PORT),
    );
    // Shut the gateway when stopping, but also when start-up fails halfway.
    let gatewayStopped: Promise<void> | undefined;
    const stopGateway = () => gatewayStopped ??= server.shutdown();
    cleanups.push(stopGateway);
    const apiUrl = `http://127.0.0.1:${server.addr.port}`;

    const passedThrough = Object.fromEntries(
      PASSED_THROUGH.flatMap((name) => {
        const value = Deno.env.get(name);
        return value ? [[name, value]] : [];
      }),
    );
    const functionEnv: Record<string, string> = {
      ...passedThrough,
      ...options.functionEnv,
    };
    let llm: LlmFixture | undefined;
    if (
      !functionEnv.OPENROUTER_API_KEY && !functionEnv.LLM_API_KEY &&
      !functionEnv.LLM_BASE_URL
    ) {
      llm = await startLlmFixture({
        port: 0,
        demoDelayMs: options.ephemeral ? 0 : 40,
      });
      cleanups.push(() => llm!.close());
      functionEnv.LLM_BASE_URL = llm.url;
      functionEnv.LLM_MODEL = OFFLINE_DEMO_MODEL;
      // The agent refuses models its catalogue does not offer; the fixture's is offered free.
      const seed = connect(db.url, { max: 1 });
      try {
        await seed`insert into public.models (id, display_name, prompt_usd_per_token,
                     completion_usd_per_token)
                   values (${OFFLINE_DEMO_MODEL}, 'Offline demo', 0, 0)
                   on conflict (id) do nothing`;
      } finally {
        await seed.end();
      }
      notes.push(
        `No OPENROUTER_API_KEY: the agent talks to the offline demo model at ${llm.url}`,
      );
    }

    const env: Record<string, string> = {
      SUPABASE_URL: apiUrl,
      SUPABASE_DB_URL: db.url,
      ...(bouncer ? { DATABASE_URL: bouncer.url } : {}),
      // A legacy project has no key a function could check a token with: none is handed over.
      ...(mode === "legacy" ? {} : { SUPABASE_JWKS: JSON.stringify(functionJwksOf(signingKey)) }),
      SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({
        default: LOCAL_PUBLISHABLE_KEY,
      }),
      SUPABASE_SECRET_KEYS: JSON.stringify({ default: LOCAL_SECRET_KEY }),
      SUPABASE_ANON_KEY: mode === "legacy" ? LEGACY_ANON_KEY : LOCAL_PUBLISHABLE_KEY,
      SUPABASE_SERVICE_ROLE_KEY: mode === "legacy" ? LEGACY_SERVICE_ROLE_KEY : LOCAL_SECRET_KEY,
      // Opens the agent's sweep route to the ticker below (a secret like any other).
      AGENT_SWEEP_SECRET: Deno.env.get("AGENT_SWEEP_SECRET") || crypto.randomUUID(),
      // The connections function and the agent may reach MCP servers on this machine (the
      // doubles), and seal credentials with a key known to be local.
      MCP_ALLOW_LOOPBACK: "true",
      MCP_CREDENTIALS_KEY: LOCAL_MCP_CREDENTIALS_KEY,
      ...functionEnv,
    };

    const limits = resolveLimits(options.limits ?? { plan: "paid" });
    notes.push(`Edge Runtime limits: ${describeLimits(limits)}`);
    const configs = await readFunctionConfigs();
    const verifyJwt = new Map(configs.map((c) => [c.name, c.verifyJwt]));
    for (const config of configs) {
      if (!(await exists(config.entrypoint))) {
        notes.push(
          `function ${config.name}: not built yet (${config.entrypoint} is missing)`,
        );
        continue;
      }
      const pool = new FunctionPool({
        name: config.name,
        entrypoint: config.entrypoint,
        env,
        limits,
        log,
        verbose: options.verbose,
      });
      pools.set(config.name, pool);
    }
    // Every function boots at once, as `supabase start` has them ready.
    await Promise.all([...pools.values()].map((pool) => pool.start()));
    const routes = {
      has: (name: string) => pools.has(name),
      get: (name: string) => pools.get(name)?.acquire(),
    };

    // One verifier (token_verifier.ts, not the product's) for the gateway and every stand-in.
    const verifier = createTokenVerifier({ jwks: serverKeysOf(signingKey) });
    const standInContext = {
      dbUrl: db.url,
      signingKey,
      apiUrl,
      verifier,
      apiKeys,
    };
    let standIns = await startStandIns(standInContext);
    cleanups.push(() => standIns.close());

    const sockets = new ProxiedSockets();
    const gatewayOver = (standIns: StandIns) =>
      createGateway({
        functions: routes,
        verifyJwt,
        verifier,
        auth: standIns.auth,
        realtime: standIns.realtime,
        rest: standIns.rest,
        sockets,
      });
    handler = gatewayOver(standIns);
    cleanups.push(stopGateway);
    if (pools.has("agent")) {
      sweeper = startSweepTicker({
        url: `${apiUrl}/functions/v1/agent/sweep`,
        secret: env.AGENT_SWEEP_SECRET,
        intervalMs: SWEEP_INTERVAL_MS,
        log,
      });
    }

    return {
      apiUrl,
      dbUrl: db.url,
      pooler: bouncer && { url: bouncer.url, poolSize: bouncer.poolSize },
      publishableKey: LOCAL_PUBLISHABLE_KEY,
      secretKey: LOCAL_SECRET_KEY,
      jwt: mode,
      ...(mode === "legacy"
        ? {
          legacyKeys: {
            anon: LEGACY_ANON_KEY,
            serviceRole: LEGACY_SERVICE_ROLE_KEY,
          },
        }
        : {}),
      signingKey,
      llm,
      functions: pools,
      limits,
      notes,
      restartFunction: async (name): Promise<FunctionWorker> => {
        const pool = pools.get(name);
        if (!pool) throw new Error(`no function ${name}`);
        const old = pool.current;
        if (old) {
          old.kill("SIGKILL");
          await old.exited;
        }
        return await pool.start();
      },
      killFunctionWorkers: async (name) => {
        const pool = pools.get(name);
        if (!pool) throw new Error(`no function ${name}`);
        return await pool.killAll("killed by a test (every worker)");
      },
      dropFunctionWebSockets: () => sockets.dropAll(),
      restartGateway: async () => {
        const port = server.addr.port;
        handler = () => new Response("restarting", { status: 503 });
        sockets.dropAll();
        await standIns.close(); // closes the Realtime sockets
        await stopGateway();
        standIns = await startStandIns(standInContext);
        handler = gatewayOver(standIns);
        gatewayStopped = undefined;
        server = serveGateway(port);
      },
      crashDatabase: () => db.crash(),
      restartDatabase: () => db.restart(),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

interface StandIns {
  auth?: Handler;
  realtime?: Handler;
  rest?: Handler;
  close(): Promise<void>;
}

/** Auth, Realtime and REST stand-ins (auth_server.ts, realtime/, rest_server.ts). */
async function startStandIns(context: {
  dbUrl: string;
  signingKey: SigningKey;
  apiUrl: string;
  verifier: TokenVerifier;
  apiKeys: ApiKeys;
}): Promise<StandIns> {
  // Auth owns the `auth` schema and connects as its own role, as GoTrue does on hosted.
  const authSql = connect(asRole(context.dbUrl, AUTH_ROLE), { max: 4 });
  const auth = createAuthHandler({
    sql: authSql,
    signingKey: context.signingKey,
    apiKeys: context.apiKeys,
    publicUrl: context.apiUrl,
  });
  const realtime = await createRealtimeHandler({
    databaseUrl: context.dbUrl,
    verifier: context.verifier,
    apiKeys: context.apiKeys,
  });
  const restSql = connect(context.dbUrl, { max: 4 });
  const rest = createRestHandler({
    sql: restSql,
    verifier: context.verifier,
    apiKeys: context.apiKeys,
  });
  return {
    auth,
    realtime: realtime.handle,
    rest,
    close: async () => {
      await realtime.close();
      await restSql.end();
      await authSql.end();
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
