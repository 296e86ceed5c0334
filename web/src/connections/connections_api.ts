/**
 * The `connections` Edge Function as the web uses it: list, add and remove the user's MCP
 * servers. Errors arrive as `{"error":{"code","message"}}` and become AppErrors with that code,
 * so a refused server (`url_not_allowed`, `not_an_mcp_server`, …) shows what went wrong.
 */
import type {
  AddServerRequest,
  ServersPage,
  ServerView,
  SignInStarted,
} from "../../../supabase/functions/_shared/mcp_servers/protocol.ts";
import { SUPABASE_PUBLISHABLE_KEY, SUPABASE_URL } from "../config.ts";
import { supabase } from "../supabase.ts";
import { AppError } from "../api/app_error.ts";

export type { AddServerRequest, ServerView };

const CONNECTIONS_URL = `${SUPABASE_URL}/functions/v1/connections`;
/** Where the OAuth callback page runs: its messages come from this origin only. */
export const CONNECTIONS_ORIGIN = new URL(CONNECTIONS_URL, location.href).origin;

async function call<T>(method: string, path = "", body?: unknown): Promise<T> {
  const { data } = await supabase.auth.getSession();
  const token = data.session?.access_token;
  if (!token) throw new AppError("signed_out", "Sign in again to manage your connections");
  let response: Response;
  try {
    response = await fetch(`${CONNECTIONS_URL}${path}`, {
      method,
      headers: {
        apikey: SUPABASE_PUBLISHABLE_KEY,
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (error) {
    throw new AppError("network_error", `The connections service is unreachable: ${error}`);
  }
  const text = await response.text();
  const parsed = text ? JSON.parse(text) : undefined;
  if (!response.ok) {
    const problem = parsed?.error;
    throw new AppError(
      typeof problem?.code === "string" ? problem.code : `http_${response.status}`,
      typeof problem?.message === "string" ? problem.message : response.statusText,
    );
  }
  return parsed as T;
}

export async function listServers(): Promise<ServerView[]> {
  return (await call<ServersPage>("GET")).servers;
}

export async function addServer(request: AddServerRequest): Promise<ServerView> {
  return (await call<{ server: ServerView }>("POST", "", request)).server;
}

/** Starts an OAuth sign-in to a new server: the URL to open; the callback stores the server. */
export async function startSignIn(request: AddServerRequest): Promise<string> {
  return (await call<SignInStarted>("POST", "", request)).sign_in.authorization_url;
}

/** Starts a new sign-in for a server that needs one. */
export async function signInAgain(id: string): Promise<string> {
  return (await call<SignInStarted>("POST", `/${encodeURIComponent(id)}/sign-in`)).sign_in
    .authorization_url;
}

/** Lists the server's tools again (it changed them). */
export async function refreshServer(id: string): Promise<ServerView> {
  return (await call<{ server: ServerView }>("POST", `/${encodeURIComponent(id)}/refresh`)).server;
}

export async function removeServer(id: string): Promise<void> {
  await call<void>("DELETE", `/${encodeURIComponent(id)}`);
}
