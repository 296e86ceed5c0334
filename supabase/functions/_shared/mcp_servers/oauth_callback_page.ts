/**
 * The page the OAuth callback answers in the sign-in popup: it says how the sign-in ended,
 * posts that to the window that opened it (the web app, only at the origin the sign-in started
 * from) and closes. The URL holds the authorization code: nothing is cached and no referrer is
 * sent; the one inline script runs by nonce.
 */
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { SIGN_IN_MESSAGE_TYPE, type SignInMessage } from "./protocol.ts";

type Outcome =
  | { ok: true; server_id: string }
  | { ok: false; code: string; message: string };

export function callbackPage(
  c: Context,
  status: ContentfulStatusCode,
  outcome: Outcome,
  told: { returnOrigin: string | null; slug: string } = { returnOrigin: null, slug: "" },
): Response {
  const message: SignInMessage = {
    type: SIGN_IN_MESSAGE_TYPE,
    slug: told.slug || null,
    ...outcome,
  };
  const nonce = crypto.randomUUID();
  // JSON in a script: `<` escaped so no text can close the script element.
  const json = (value: unknown) => JSON.stringify(value).replaceAll("<", "\\u003c");
  const text = outcome.ok
    ? `Connected ${told.slug}. You can close this window.`
    : `Not connected: ${outcome.message}`;
  const html = `<!doctype html>
<meta charset="utf-8"><title>${outcome.ok ? "Connected" : "Not connected"}</title>
<p id="outcome">${escapeHtml(text)}</p>
<script nonce="${nonce}">
  const origin = ${json(told.returnOrigin)};
  if (origin && window.opener) {
    window.opener.postMessage(${json(message)}, origin);
    window.close();
  }
</script>`;
  return c.html(html, status, {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": `default-src 'none'; script-src 'nonce-${nonce}'`,
  });
}

function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
