/**
 * The routes every function offers its operator, before any user route: `GET /health` (open,
 * see `health.ts`) and `GET /metrics` (Prometheus text behind the `METRICS_TOKEN` secret; shut,
 * 503 `not_configured`, until it is set; see `../metrics.ts`).
 */
import type { Env as HonoEnv, Hono } from "hono";
import type { BlankSchema } from "hono/types";
import type { TokenVerifier } from "../auth.ts";
import type { Sql } from "../db/client.ts";
import type { LlmReachability } from "../llm_reachability.ts";
import { metricsHandler } from "../metrics.ts";
import { healthHandler } from "./health.ts";
import { requireSecret } from "./require_secret.ts";

export interface OperatorRouteOptions {
  sql: Sql;
  verifier: TokenVerifier;
  llm?: LlmReachability;
  /** `METRICS_TOKEN`; without it `/metrics` stays shut. */
  metricsToken?: string;
}

export function addOperatorRoutes<E extends HonoEnv>(
  app: Hono<E, BlankSchema, string>,
  options: OperatorRouteOptions,
) {
  app.get(
    "/health",
    healthHandler({
      sql: options.sql,
      verifier: options.verifier,
      ...(options.llm ? { llm: options.llm } : {}),
    }),
  );
  app.get(
    "/metrics",
    requireSecret({ secret: options.metricsToken, settingName: "METRICS_TOKEN" }),
    metricsHandler({ sql: options.sql }),
  );
}
