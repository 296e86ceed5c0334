/**
 * The Hono app every function starts from: routes under `/<function name>` (the path Supabase
 * hands a function is `/<name>/…`), the `Host` check (`./host_policy.ts`), the JSON error
 * envelope for thrown errors and unknown routes, and optionally CORS for browsers calling it
 * with supabase-js.
 */
import { type Env as HonoEnv, Hono } from "hono";
import { cors } from "hono/cors";
import { handleError, handleNotFound } from "./errors.ts";
import { checkHost, type HostPolicy, LOOPBACK_ONLY } from "./host_policy.ts";
import { requestContext } from "./request_context.ts";

export interface FunctionAppOptions {
  /** Treat `/name` and `/name/` as one route (the WebSocket endpoint is reached both ways). */
  trailingSlashAgnostic?: boolean;
  /** Answer CORS for these methods (OPTIONS is added); omitted, the function sends no CORS. */
  corsMethods?: readonly string[];
  /** Request headers a browser may send, besides those supabase-js always sends. */
  corsHeaders?: readonly string[];
  /** Response headers a browser script may read. */
  corsExposeHeaders?: readonly string[];
  /** The hosts answered (`hostPolicyFromEnv` in production); loopback only by default. */
  hostPolicy?: HostPolicy;
}

/** What supabase-js sends with every call; the browser asks before sending them. */
const SUPABASE_JS_HEADERS = ["authorization", "x-client-info", "apikey", "content-type"];

export function createFunctionApp<E extends HonoEnv = HonoEnv>(
  name: string,
  options: FunctionAppOptions = {},
) {
  const app = new Hono<E>({ strict: !options.trailingSlashAgnostic }).basePath(`/${name}`);
  app.onError(handleError);
  app.notFound(handleNotFound);
  app.use(requestContext(name));
  app.use(checkHost(options.hostPolicy ?? LOOPBACK_ONLY));
  if (options.corsMethods) {
    app.use(cors({
      origin: "*",
      allowMethods: [...options.corsMethods, "OPTIONS"],
      allowHeaders: [...SUPABASE_JS_HEADERS, ...(options.corsHeaders ?? [])],
      exposeHeaders: [...(options.corsExposeHeaders ?? [])],
      maxAge: 86400,
    }));
  }
  return app;
}
