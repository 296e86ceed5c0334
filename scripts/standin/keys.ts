/**
 * The well-known local keys `supabase start` prints. They are public by design: they only
 * ever open a database on this machine.
 */
export const LOCAL_PUBLISHABLE_KEY = "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH";
export const LOCAL_SECRET_KEY = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz";
/** The local stack's MCP_CREDENTIALS_KEY (32 bytes, base64): fixed, so data survives restarts. */
export const LOCAL_MCP_CREDENTIALS_KEY = "bG9jYWwtc3RhbmQtaW4tbWNwLWNyZWRlbnRpYWxzISE=";
/**
 * The legacy JWT API keys `supabase start` prints, signed with its legacy JWT secret
 * (`LEGACY_JWT_SECRET` in signing_keys.ts; a test checks they still are). A project on the
 * legacy secret has them beside the `sb_` keys.
 */
export const LEGACY_ANON_KEY =
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0";
export const LEGACY_SERVICE_ROLE_KEY =
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU";

/** The API keys a project accepts, by the Postgres role each stands for. */
export interface ApiKeys {
  anon: readonly string[];
  serviceRole: readonly string[];
}

/** Every project's: the `sb_` keys. */
export const STANDARD_API_KEYS: ApiKeys = {
  anon: [LOCAL_PUBLISHABLE_KEY],
  serviceRole: [LOCAL_SECRET_KEY],
};

/** A legacy-secret project's: the `sb_` keys and the JWT keys beside them. */
export const LEGACY_API_KEYS: ApiKeys = {
  anon: [LOCAL_PUBLISHABLE_KEY, LEGACY_ANON_KEY],
  serviceRole: [LOCAL_SECRET_KEY, LEGACY_SERVICE_ROLE_KEY],
};

/** What an `apikey` (or a Bearer API key) stands for: Postgres role of the request. */
export function roleOfApiKey(
  key: string | null | undefined,
  keys: ApiKeys = STANDARD_API_KEYS,
): "anon" | "service_role" | undefined {
  if (!key) return undefined;
  if (keys.anon.includes(key)) return "anon";
  if (keys.serviceRole.includes(key)) return "service_role";
  return undefined;
}
