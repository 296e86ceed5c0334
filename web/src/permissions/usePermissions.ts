/**
 * The user's tool grants (`permissions`, read through PostgREST under RLS), live through
 * Realtime: answering an approval with "Always allow" turns a grant to `auto` here at once.
 */
import { useEffect, useState } from "react";
import type { Database } from "../../../supabase/functions/_shared/database.types.ts";
import { type AppError, toAppError } from "../api/app_error.ts";
import { watchTable } from "../api/realtime.ts";
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
  const [state, setState] = useState<PermissionsState>({ grants: [], loading: true });
  useEffect(() => {
    let active = true;
    const byId = new Map<number, Grant>();
    const publish = (error?: AppError) => {
      if (!active) return;
      const grants = [...byId.values()].sort((a, b) => a.tool.localeCompare(b.tool));
      setState({ grants, loading: false, error });
    };
    const load = async () => {
      const { data, error } = await supabase.from("permissions")
        .select("id, tool, approval_mode, constraints, updated_at")
        .order("tool");
      if (error) return publish(toAppError(error, "permissions_unavailable"));
      byId.clear();
      for (const grant of data) byId.set(grant.id, grant);
      publish();
    };
    const unwatch = watchTable<Database["public"]["Tables"]["permissions"]["Row"]>({
      table: "permissions",
      filter: `user_id=eq.${userId}`,
      onSubscribed: load,
      onError: publish,
      onChange(change) {
        if (change.eventType === "DELETE") {
          if (typeof change.old.id === "number") byId.delete(change.old.id);
        } else {
          const { id, tool, approval_mode, constraints, updated_at } = change.new;
          byId.set(id, { id, tool, approval_mode, constraints, updated_at });
        }
        publish();
      },
    });
    return () => {
      active = false;
      unwatch();
    };
  }, [userId]);
  return state;
}
