/**
 * The user's tool grants (`permissions`, read through PostgREST under RLS), live through
 * Realtime: answering an approval with "Always allow" turns a grant to `auto` here at once.
 */
import type { Database } from "../../../supabase/functions/_shared/db/database.types.ts";
import { type AppError, toAppError } from "../api/app_error.ts";
import { useLiveRows } from "../api/live_rows.ts";
import { supabase } from "../supabase.ts";

export type Grant = Pick<
  Database["public"]["Tables"]["permissions"]["Row"],
  "id" | "tool" | "approval_mode" | "constraints" | "updated_at"
>;

export interface PermissionsState {
  grants: Grant[];
  loading: boolean;
  error?: AppError;
}

export function usePermissions(userId: string): PermissionsState {
  const { rows, loading, error } = useLiveRows<Grant>({
    table: "permissions",
    userId,
    async load() {
      const { data, error } = await supabase.from("permissions")
        .select("id, tool, approval_mode, constraints, updated_at")
        .order("tool");
      if (error) throw toAppError(error, "permissions_unavailable");
      return data;
    },
    pick: ({ id, tool, approval_mode, constraints, updated_at }) =>
      ({ id, tool, approval_mode, constraints, updated_at }) as Grant,
    compare: (a, b) => a.tool.localeCompare(b.tool),
  });
  return { grants: rows, loading, error };
}
