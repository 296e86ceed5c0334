/**
 * Sign in or create an account with email and password (supabase-js Auth). Errors show
 * Auth's code, e.g. `invalid_credentials` or `user_already_exists`.
 */
import { type FormEvent, useId, useState } from "react";
import { type AppError, toAppError } from "../api/app_error.ts";
import { SUPABASE_URL } from "../config.ts";
import { supabase } from "../supabase.ts";

/** The seeded demo users exist only on the local stand-in. */
const LOCAL = /^https?:\/\/(127\.0\.0\.1|localhost)[:/]/.test(SUPABASE_URL);

type Mode = "sign_in" | "sign_up";

export function AuthScreen() {
  const [mode, setMode] = useState<Mode>("sign_in");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<AppError>();
  const [notice, setNotice] = useState<string>();
  const emailId = useId();
  const passwordId = useId();

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    setNotice(undefined);
    try {
      if (mode === "sign_in") {
        const { error } = await supabase.auth.signInWithPassword({ email, password });
        if (error) throw error;
      } else {
        const { data, error } = await supabase.auth.signUp({ email, password });
        if (error) throw error;
        // Projects that confirm emails answer without a session until the link is used.
        if (!data.session) setNotice("Check your email to confirm the account, then sign in.");
      }
    } catch (caught) {
      setError(toAppError(caught, "auth_error"));
    } finally {
      setBusy(false);
    }
  };

  const title = mode === "sign_in" ? "Sign in" : "Create an account";
  return (
    <main className="auth-screen">
      <form className="auth-card" onSubmit={submit} aria-labelledby="auth-title">
        <h1 id="auth-title">{title}</h1>
        <p className="muted">Supabase Agent: chat with an AI agent that uses tools.</p>
        <label htmlFor={emailId}>Email</label>
        <input
          id={emailId}
          type="email"
          autoComplete="email"
          required
          value={email}
          onChange={(event) => setEmail(event.target.value)}
        />
        <label htmlFor={passwordId}>Password</label>
        <input
          id={passwordId}
          type="password"
          autoComplete={mode === "sign_in" ? "current-password" : "new-password"}
          required
          minLength={6}
          value={password}
          onChange={(event) => setPassword(event.target.value)}
        />
        {error && (
          <p className="inline-error" role="alert">
            <code>{error.code}</code> {error.message}
          </p>
        )}
        {notice && <p role="status">{notice}</p>}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Please wait…" : title}
        </button>
        <button
          type="button"
          className="link-button"
          onClick={() => {
            setMode(mode === "sign_in" ? "sign_up" : "sign_in");
            setError(undefined);
          }}
        >
          {mode === "sign_in" ? "No account yet? Create one" : "Have an account? Sign in"}
        </button>
        {LOCAL && (
          <p className="muted small">
            Local demo users: alice@example.com and bob@example.com, password{" "}
            <code>password123</code>
          </p>
        )}
      </form>
    </main>
  );
}
