/**
 * The one supabase-js client of the app. Sessions persist in localStorage and refresh
 * themselves (auth-js refreshes within 90 s of expiry); Realtime follows the session's token.
 */
import { createClient } from "@supabase/supabase-js";
import type { Database } from "../../supabase/functions/_shared/db/database.types.ts";
import { SUPABASE_PUBLISHABLE_KEY, SUPABASE_URL } from "./config.ts";

export const supabase = createClient<Database>(SUPABASE_URL, SUPABASE_PUBLISHABLE_KEY, {
  auth: { persistSession: true, autoRefreshToken: true, detectSessionInUrl: false },
});

export type Supabase = typeof supabase;
