/**
 * The signed-in session as React state, following supabase-js: sign-in, sign-out and every
 * automatic token refresh (auth-js refreshes shortly before expiry and persists the result).
 */
import type { Session } from "@supabase/supabase-js";
import { useEffect, useState } from "react";
import { type AppError, toAppError } from "../api/app_error.ts";
import { supabase } from "../supabase.ts";

export interface AuthState {
  /** Undefined while the stored session is being read. */
  session: Session | null | undefined;
  error?: AppError;
}

export function useAuthSession(): AuthState {
  const [state, setState] = useState<AuthState>({ session: undefined });
  useEffect(() => {
    let active = true;
    supabase.auth.getSession().then(({ data, error }) => {
      if (!active) return;
      setState(
        error ? { session: null, error: toAppError(error, "auth_error") } : {
          session: data.session,
        },
      );
    });
    const { data } = supabase.auth.onAuthStateChange((_event, session) => {
      if (active) setState({ session });
    });
    return () => {
      active = false;
      data.subscription.unsubscribe();
    };
  }, []);
  return state;
}
