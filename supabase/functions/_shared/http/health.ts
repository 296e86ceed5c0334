/**
 * `GET /<function>/health`: what an operator's probe or load balancer asks. No token, nothing
 * secret: each check's verdict and a few numbers, the version and commit. 200 when every check
 * passes; 503 with `failed` naming the checks that did not.
 *
 * - `db`: one round trip (`select 1`) within `DB_CHECK_TIMEOUT_MS`;
 * - `keys`: whether the JWKS (or, for a legacy project, Auth) answers, and how long ago it last
 *   did (`TokenVerifier.health`: a fetch only when the cached keys are stale);
 * - `llm` (agent): the LLM upstream's reachability, from `LlmReachability`'s cache.
 */
import type { Handler } from "hono";
import type { TokenVerifier } from "../auth.ts";
import type { Sql } from "../db/client.ts";
import type { Env } from "../env.ts";
import type { LlmReachability } from "../llm_reachability.ts";

export interface CheckResult {
  ok: boolean;
  [detail: string]: string | number | boolean | null | undefined;
}

export interface HealthOptions {
  sql: Sql;
  verifier: TokenVerifier;
  llm?: LlmReachability;
  env?: Env;
}

/** A probe must answer quickly; a database that takes longer is as good as down. */
export const DB_CHECK_TIMEOUT_MS = 2000;

export interface HealthBody {
  status: "ok" | "failing";
  /** The checks that failed; empty when healthy. */
  failed: string[];
  checks: Record<string, CheckResult>;
  version: string;
  commit: string;
}

export function healthHandler(options: HealthOptions): Handler {
  const env = options.env ?? Deno.env;
  const version = env.get("APP_VERSION")?.trim() || "unknown";
  const commit = env.get("GIT_COMMIT")?.trim() || "unknown";
  return async (c) => {
    const named: [string, Promise<CheckResult>][] = [
      ["db", checkDatabase(options.sql)],
      ["keys", checkKeys(options.verifier)],
    ];
    if (options.llm) named.push(["llm", options.llm.check().then((result) => ({ ...result }))]);
    const checks: Record<string, CheckResult> = {};
    for (const [name, result] of named) checks[name] = await result;
    const failed = Object.keys(checks).filter((name) => !checks[name].ok);
    const body: HealthBody = {
      status: failed.length === 0 ? "ok" : "failing",
      failed,
      checks,
      version,
      commit,
    };
    if (failed.length > 0) c.set("errorCode", `unhealthy:${failed.join(",")}`);
    return c.json(body, failed.length === 0 ? 200 : 503, { "Cache-Control": "no-store" });
  };
}

async function checkDatabase(sql: Sql): Promise<CheckResult> {
  const started = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), DB_CHECK_TIMEOUT_MS);
  });
  const query = sql`select 1 as one`.then(() => "ok" as const);
  try {
    const outcome = await Promise.race([query, timeout]);
    if (outcome === "timeout") {
      // The query may still settle later; nobody waits for it.
      query.catch(() => {});
      return { ok: false, error: `no answer within ${DB_CHECK_TIMEOUT_MS} ms` };
    }
    return { ok: true, latency_ms: Math.round(performance.now() - started) };
  } catch (error) {
    return { ok: false, error: errorCodeOf(error) };
  } finally {
    clearTimeout(timer);
  }
}

async function checkKeys(verifier: TokenVerifier): Promise<CheckResult> {
  if (!verifier.health) return { ok: true, source: "unknown", age_s: null };
  try {
    const health = await verifier.health();
    return { ...health };
  } catch (error) {
    return { ok: false, error: errorCodeOf(error) };
  }
}

/** A short, non-secret description: the error's code (ECONNREFUSED, …) or its name. */
function errorCodeOf(error: unknown): string {
  const code = (error as { code?: unknown })?.code;
  if (typeof code === "string") return code;
  return error instanceof Error ? error.name : "error";
}
