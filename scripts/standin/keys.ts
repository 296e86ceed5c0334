/**
 * The well-known local keys `supabase start` prints. They are public by design: they only
 * ever open a database on this machine.
 */
export const LOCAL_PUBLISHABLE_KEY = "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH";
export const LOCAL_SECRET_KEY = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz";

/** What an `apikey` (or a Bearer `sb_…` key) stands for: Postgres role of the request. */
export function roleOfApiKey(key: string | null | undefined): "anon" | "service_role" | undefined {
  if (key === LOCAL_PUBLISHABLE_KEY) return "anon";
  if (key === LOCAL_SECRET_KEY) return "service_role";
  return undefined;
}
