/**
 * The app's screens in the URL hash (`#/chat/<session>`, `#/usage`, `#/permissions`,
 * `#/connections`, `#/admin`),
 * so a chat can be opened in a second tab by its address and the back button works.
 */
import { useCallback, useEffect, useState } from "react";

export type Route =
  | { view: "chat"; sessionId?: string }
  | { view: "usage" }
  | { view: "permissions" }
  | { view: "admin" }
  | { view: "connections" };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function parseRoute(hash: string): Route {
  const [view, id] = hash.replace(/^#\/?/, "").split("/");
  if (view === "usage") return { view: "usage" };
  if (view === "permissions") return { view: "permissions" };
  if (view === "admin") return { view: "admin" };
  if (view === "connections") return { view: "connections" };
  return id && UUID.test(id) ? { view: "chat", sessionId: id.toLowerCase() } : { view: "chat" };
}

export function useHashRoute(): [Route, (hash: string) => void] {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  const navigate = useCallback((hash: string) => {
    location.hash = hash;
  }, []);
  return [route, navigate];
}
