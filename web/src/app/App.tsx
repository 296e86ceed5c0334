/**
 * The app: the sign-in screen, or for a signed-in user the agent connection and the
 * screens (chat, usage, permissions, connections). The usage screen and its chart library load on demand,
 * which keeps the first load small.
 */
import { lazy, Suspense, useState } from "react";
import { AgentProvider } from "../agent/useAgent.tsx";
import { toAppError } from "../api/app_error.ts";
import { AuthScreen } from "../auth/AuthScreen.tsx";
import { useAuthSession } from "../auth/useAuthSession.ts";
import { ChatView } from "../chat/ChatView.tsx";
import { PermissionsView } from "../permissions/PermissionsView.tsx";
import { ConnectionsView } from "../connections/ConnectionsView.tsx";
import { supabase } from "../supabase.ts";
import { ConnectionIndicator } from "./ConnectionIndicator.tsx";
import { Notices } from "./Notices.tsx";
import { type Route, useHashRoute } from "./useHashRoute.ts";

const UsageView = lazy(() => import("../usage/UsageView.tsx"));
const AdminView = lazy(() => import("../admin/AdminView.tsx"));

export function App() {
  const { session, error } = useAuthSession();
  const [route, navigate] = useHashRoute();
  if (session === undefined) return <p className="muted center">Loading…</p>;
  if (!session) {
    return (
      <>
        {error && (
          <p className="inline-error" role="alert">
            <code>{error.code}</code> {error.message}
          </p>
        )}
        <AuthScreen />
      </>
    );
  }
  const userId = session.user.id;
  // app_metadata is the service role's to set: a user cannot make himself an admin.
  const isAdmin = session.user.app_metadata?.role === "admin";
  return (
    <AgentProvider userId={userId}>
      <div className="app">
        <Header email={session.user.email ?? ""} route={route} isAdmin={isAdmin} />
        <Notices />
        <main className="app-main">
          {route.view === "chat" && (
            <ChatView userId={userId} sessionId={route.sessionId} navigate={navigate} />
          )}
          {route.view === "usage" && (
            <Suspense fallback={<p className="muted">Loading usage…</p>}>
              <UsageView userId={userId} />
            </Suspense>
          )}
          {route.view === "permissions" && <PermissionsView userId={userId} />}
          {route.view === "admin" && (
            <Suspense fallback={<p className="muted">Loading…</p>}>
              <AdminView />
            </Suspense>
          )}
          {route.view === "connections" && <ConnectionsView userId={userId} />}
        </main>
      </div>
    </AgentProvider>
  );
}

function Header({ email, route, isAdmin }: { email: string; route: Route; isAdmin: boolean }) {
  const [signOutError, setSignOutError] = useState<string>();
  const signOut = async () => {
    const { error } = await supabase.auth.signOut();
    if (error) setSignOutError(`${toAppError(error).code}: ${error.message}`);
  };
  const link = (view: Route["view"], label: string) => (
    <a href={`#/${view}`} aria-current={route.view === view ? "page" : undefined}>{label}</a>
  );
  return (
    <header className="app-header">
      <span className="brand">Supabase Agent</span>
      <nav className="app-nav" aria-label="Screens">
        {link("chat", "Chat")}
        {link("usage", "Usage")}
        {link("permissions", "Permissions")}
        {isAdmin && link("admin", "Admin")}
        {link("connections", "Connections")}
      </nav>
      <ConnectionIndicator />
      <div className="account">
        <span className="muted account-email" title={email}>{email}</span>
        <button type="button" onClick={signOut}>Sign out</button>
        {signOutError && <span className="inline-error" role="alert">{signOutError}</span>}
      </div>
    </header>
  );
}
