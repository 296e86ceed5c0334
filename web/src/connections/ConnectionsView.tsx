/**
 * Connections: the MCP servers whose tools the agent may use for this user. Adding one reaches
 * the server and lists its tools before anything is stored; each tool's description is shown
 * here, and every new tool asks before it runs (Permissions). A server that wants OAuth is
 * signed in to in a popup; one whose grant was revoked shows "needs sign-in" (live, through
 * Realtime) and a button to sign in again.
 */
import { type FormEvent, useState } from "react";
import { AppError, toAppError } from "../api/app_error.ts";
import {
  addServer,
  type AddServerRequest,
  refreshServer,
  removeServer,
  signInAgain,
  startSignIn,
} from "./connections_api.ts";
import { openSignInWindow, signInThrough } from "./sign_in_popup.ts";
import { useConnections } from "./useConnections.ts";

type AuthKind = "none" | "bearer" | "header" | "oauth";

/**
 * Runs an OAuth sign-in in a popup opened now (at the click): `start` gets the authorization URL
 * from the connections function; the callback page's message ends it.
 */
async function signInWithPopup(start: () => Promise<string>): Promise<void> {
  const popup = openSignInWindow();
  try {
    const outcome = await signInThrough(popup, await start());
    if (!outcome.ok) throw new AppError(outcome.code, outcome.message);
  } finally {
    if (!popup.closed) popup.close();
  }
}

export function ConnectionsView({ userId }: { userId: string }) {
  const { servers, loading, error, reload } = useConnections(userId);
  const [url, setUrl] = useState("");
  const [slug, setSlug] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [auth, setAuth] = useState<AuthKind>("none");
  const [secretName, setSecretName] = useState("");
  const [secret, setSecret] = useState("");
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<AppError>();

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setProblem(undefined);
    const request: AddServerRequest = {
      url: url.trim(),
      slug: slug.trim(),
      ...(displayName.trim() ? { display_name: displayName.trim() } : {}),
      auth: auth === "none"
        ? { type: "none" }
        : auth === "oauth"
        ? { type: "oauth" }
        : auth === "bearer"
        ? { type: "bearer", token: secret }
        : { type: "header", name: secretName.trim(), value: secret },
    };
    try {
      if (auth === "oauth") await signInWithPopup(() => startSignIn(request));
      else await addServer(request);
      setUrl("");
      setSlug("");
      setDisplayName("");
      setSecret("");
      await reload();
    } catch (error) {
      setProblem(toAppError(error));
    } finally {
      setBusy(false);
    }
  };

  const refresh = async (id: string) => {
    setProblem(undefined);
    try {
      await refreshServer(id);
      await reload();
    } catch (error) {
      setProblem(toAppError(error));
    }
  };

  const reconnect = async (id: string) => {
    setProblem(undefined);
    try {
      await signInWithPopup(() => signInAgain(id));
      await reload();
    } catch (error) {
      setProblem(toAppError(error));
    }
  };

  const remove = async (id: string) => {
    try {
      await removeServer(id);
      await reload();
    } catch (error) {
      setProblem(toAppError(error));
    }
  };

  return (
    <section className="page" aria-labelledby="connections-title">
      <h1 id="connections-title">Connections</h1>
      <p className="muted">
        MCP servers (Streamable HTTP) whose tools the agent may use for you. Their tools ask you
        before each call until you allow them for good.
      </p>
      <form className="mcp-server-form" onSubmit={submit} aria-label="Add a server">
        <label>
          Server URL
          <input
            name="url"
            type="url"
            required
            value={url}
            placeholder="https://mcp.example.com/mcp"
            onChange={(e) => setUrl(e.target.value)}
          />
        </label>
        <label>
          Short name
          <input
            name="slug"
            required
            pattern="[a-z][a-z0-9]{0,15}"
            title="a lowercase letter, then up to 15 lowercase letters or digits"
            value={slug}
            onChange={(e) => setSlug(e.target.value)}
          />
        </label>
        <label>
          Display name
          <input
            name="display_name"
            value={displayName}
            onChange={(e) => setDisplayName(e.target.value)}
          />
        </label>
        <label>
          Authentication
          <select
            name="auth"
            value={auth}
            onChange={(e) => setAuth(e.target.value as AuthKind)}
          >
            <option value="none">None</option>
            <option value="bearer">Bearer token</option>
            <option value="header">Header</option>
            <option value="oauth">Sign in (OAuth)</option>
          </select>
        </label>
        {auth === "header" && (
          <label>
            Header name
            <input
              name="header_name"
              required
              value={secretName}
              onChange={(e) => setSecretName(e.target.value)}
            />
          </label>
        )}
        {(auth === "bearer" || auth === "header") && (
          <label>
            {auth === "bearer" ? "Token" : "Header value"}
            <input
              name="secret"
              type="password"
              required
              autoComplete="off"
              value={secret}
              onChange={(e) => setSecret(e.target.value)}
            />
          </label>
        )}
        <button type="submit" disabled={busy}>
          {busy ? "Connecting…" : auth === "oauth" ? "Sign in" : "Connect"}
        </button>
      </form>
      {(problem ?? error) && (
        <p className="inline-error" role="alert">
          <code>{(problem ?? error)!.code}</code> {(problem ?? error)!.message}
        </p>
      )}
      {loading
        ? <p className="muted">Loading…</p>
        : servers.length === 0
        ? <p>No servers connected yet.</p>
        : servers.map((server) => (
          <article
            key={server.id}
            className="mcp-server"
            data-testid="connection"
            data-slug={server.slug}
            data-status={server.status}
          >
            <header className="mcp-server-header">
              <h2>{server.display_name ?? server.slug}</h2>
              <code>{server.slug}</code>
              <span className={`badge badge-${server.status === "connected" ? "auto" : "deny"}`}>
                {server.status === "connected" ? "connected" : "needs sign-in"}
              </span>
              <span className="muted">{server.url}</span>
              {server.status === "needs_sign_in" && server.auth_mode === "oauth" && (
                <button
                  type="button"
                  onClick={() => reconnect(server.id)}
                >
                  Sign in again
                </button>
              )}
              <button type="button" onClick={() => refresh(server.id)}>Refresh tools</button>
              <button type="button" onClick={() => remove(server.id)}>Remove</button>
            </header>
            {server.warnings.map((warning) => (
              <p key={warning} className="inline-error" data-testid="connection-warning">
                {warning}
              </p>
            ))}
            <ul className="mcp-server-tools">
              {server.tools.map((tool) => (
                <li key={tool.name} data-tool={tool.name} data-mode={tool.approval_mode ?? "none"}>
                  <code>{tool.name}</code>{" "}
                  <span className={`badge badge-${tool.approval_mode ?? "deny"}`}>
                    {tool.approval_mode ?? "no grant"}
                  </span>{" "}
                  <span className="muted">{tool.description}</span>
                </li>
              ))}
            </ul>
          </article>
        ))}
    </section>
  );
}
