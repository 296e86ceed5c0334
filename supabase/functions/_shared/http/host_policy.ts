/**
 * Which `Host` a function answers and which browser `Origin` may call MCP: the defence against
 * DNS rebinding (a page on a hostile name that resolves to a loopback or internal address
 * would otherwise reach a local or internal server with the user's browser) and the source of
 * the public URL a function names in its answers.
 *
 * The host a client used is the first `X-Forwarded-Host` when a proxy set one (Supabase's
 * gateway, Kong under `supabase functions serve`, the local stand-in's gateway), else `Host`.
 * Allowed: loopback names, the hosts of `SUPABASE_URL` and `MCP_FUNCTION_URL`, and
 * `ALLOWED_HOSTS` (comma-separated, for custom domains).
 */
import type { MiddlewareHandler } from "hono";
import type { Env } from "../env.ts";
import { HttpError } from "./errors.ts";

export interface HostPolicy {
  /** Host names (no port), lower case. */
  hosts: ReadonlySet<string>;
  /** Browser origins (`scheme://host[:port]`) allowed besides the request's own public origin. */
  origins: ReadonlySet<string>;
}

const LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]", "::1"];

/** Loopback only: what a function created without a policy (tests, local tools) accepts. */
export const LOOPBACK_ONLY: HostPolicy = { hosts: new Set(LOOPBACK_HOSTS), origins: new Set() };

export function hostPolicyFromEnv(env: Env = Deno.env): HostPolicy {
  const hosts = new Set(LOOPBACK_HOSTS);
  const origins = new Set<string>();
  for (const name of ["SUPABASE_URL", "MCP_FUNCTION_URL"]) {
    const url = parseUrl(env.get(name), name);
    if (url) hosts.add(url.hostname.toLowerCase());
    if (url && name === "MCP_FUNCTION_URL") origins.add(url.origin);
  }
  for (const host of listOf(env.get("ALLOWED_HOSTS"))) hosts.add(hostnameOf(host));
  for (const origin of listOf(env.get("ALLOWED_ORIGINS"))) {
    const url = parseUrl(origin, "ALLOWED_ORIGINS");
    if (url) origins.add(url.origin);
  }
  return { hosts, origins };
}

/** The host the client used, with its port: `X-Forwarded-Host`, else `Host`, else the URL's. */
export function requestHost(request: Request): string {
  const forwarded = firstOf(request.headers.get("x-forwarded-host"));
  return forwarded || request.headers.get("host") || new URL(request.url).host;
}

/** `scheme://host[:port]` as the client reached the project (behind any proxy). */
export function publicOrigin(request: Request): string {
  const proto = firstOf(request.headers.get("x-forwarded-proto")) ||
    new URL(request.url).protocol.replace(/:$/, "");
  return `${proto === "https" ? "https" : "http"}://${requestHost(request)}`;
}

/** Refuses a request for a host this project does not serve: 403 `forbidden_host`. */
export function checkHost(policy: HostPolicy): MiddlewareHandler {
  return async (c, next) => {
    const host = requestHost(c.req.raw);
    if (!policy.hosts.has(hostnameOf(host))) {
      throw new HttpError(
        403,
        "forbidden_host",
        `This function does not answer for the host "${host}"; add it to ALLOWED_HOSTS if it ` +
          `is yours (a custom domain)`,
      );
    }
    await next();
  };
}

/**
 * Refuses a browser request from a foreign page: an `Origin`, when present, must be the
 * project's own public origin or one of the policy's. 403 `forbidden_origin`.
 */
export function checkOrigin(policy: HostPolicy): MiddlewareHandler {
  return async (c, next) => {
    const origin = c.req.header("origin");
    if (origin !== undefined && origin !== publicOrigin(c.req.raw) && !policy.origins.has(origin)) {
      throw new HttpError(
        403,
        "forbidden_origin",
        `Requests from pages on ${origin} are not accepted; add it to ALLOWED_ORIGINS if it is ` +
          `yours`,
      );
    }
    await next();
  };
}

function hostnameOf(host: string): string {
  const trimmed = host.trim().toLowerCase();
  if (trimmed.startsWith("[")) return trimmed.slice(0, trimmed.indexOf("]") + 1);
  const colon = trimmed.lastIndexOf(":");
  return colon > 0 && trimmed.indexOf(":") === colon ? trimmed.slice(0, colon) : trimmed;
}

function firstOf(header: string | null): string | undefined {
  return header?.split(",")[0]?.trim() || undefined;
}

function listOf(value: string | undefined): string[] {
  return (value ?? "").split(",").map((item) => item.trim()).filter((item) => item !== "");
}

function parseUrl(value: string | undefined, name: string): URL | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  try {
    return new URL(value.trim());
  } catch (cause) {
    throw new Error(`${name} is not a URL: "${value}"`, { cause });
  }
}
