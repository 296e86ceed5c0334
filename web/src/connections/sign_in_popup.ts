/**
 * OAuth consent in a popup: the window is opened at the click (browsers block popups opened
 * later, after an await), pointed at the authorization URL once the connections function gave
 * it, and the sign-in ends with the message its callback page posts (from the functions' origin
 * only) — or when the user closes the window first.
 */
import {
  SIGN_IN_MESSAGE_TYPE,
  type SignInMessage,
} from "../../../supabase/functions/_shared/mcp_servers/protocol.ts";
import { AppError } from "../api/app_error.ts";
import { CONNECTIONS_ORIGIN } from "./connections_api.ts";

export function openSignInWindow(): Window {
  const popup = globalThis.open("about:blank", "mcp-sign-in", "popup,width=520,height=680");
  if (!popup) throw new AppError("popup_blocked", "Allow popups for this site to sign in");
  return popup;
}

/** Points the popup at `authorizationUrl` and resolves with the callback's outcome. */
export function signInThrough(popup: Window, authorizationUrl: string): Promise<SignInMessage> {
  popup.location.href = authorizationUrl;
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = () => {
      settled = true;
      removeEventListener("message", onMessage);
      clearInterval(watch);
    };
    const onMessage = (event: MessageEvent) => {
      const data = event.data as Partial<SignInMessage> | null;
      if (event.origin !== CONNECTIONS_ORIGIN || data?.type !== SIGN_IN_MESSAGE_TYPE) return;
      done();
      resolve(data as SignInMessage);
    };
    // Closed with no message: the user gave up. (The page closes itself right after posting;
    // its message is given a moment to arrive first.)
    const watch = setInterval(() => {
      if (!popup.closed) return;
      clearInterval(watch);
      setTimeout(() => {
        if (settled) return;
        done();
        reject(new AppError("sign_in_cancelled", "The sign-in window was closed"));
      }, 1000);
    }, 500);
    addEventListener("message", onMessage);
  });
}
