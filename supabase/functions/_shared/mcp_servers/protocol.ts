/**
 * The connections API's shapes, as its clients (the web app) read and send them. No imports,
 * so the web may import it (docs/architecture.md, rule 3).
 */

export type ApprovalModeView = "auto" | "ask" | "deny";

/** A connected server's tool as its owner sees it. */
export interface ConnectedToolView {
  /** As offered to the model and named in permissions: `<slug>__<name>`. */
  name: string;
  /** As the server names it. */
  original_name: string;
  title: string | null;
  description: string;
  annotations: Record<string, unknown>;
  /** The caller's grant for it (its own row, else `<slug>__*`, else `*`); null: none. */
  approval_mode: ApprovalModeView | null;
}

/** A server as `GET /connections` lists it (and `POST` answers). */
export interface ServerView {
  id: string;
  slug: string;
  display_name: string | null;
  url: string;
  auth_mode: "none" | "header" | "oauth";
  status: "connected" | "needs_sign_in";
  /** Tools left out at discovery, with why (e.g. an invalid schema). */
  warnings: string[];
  created_at: string;
  tools: ConnectedToolView[];
}

export interface ServersPage {
  servers: ServerView[];
}

/** `POST /connections`. */
export interface AddServerRequest {
  url: string;
  slug: string;
  display_name?: string;
  auth?:
    | { type: "none" }
    | { type: "bearer"; token: string }
    | { type: "header"; name: string; value: string }
    | { type: "oauth" };
}

/** `POST /connections` with `auth: oauth` answers 202: the user signs in at this URL (a popup). */
export interface SignInStarted {
  sign_in: { authorization_url: string; expires_at: string };
}

/** What the callback page posts to the web app's window (its opener), then it closes. */
export type SignInMessage =
  & { type: "mcp_oauth"; slug: string | null }
  & ({ ok: true; server_id: string } | { ok: false; code: string; message: string });

export const SIGN_IN_MESSAGE_TYPE = "mcp_oauth";
