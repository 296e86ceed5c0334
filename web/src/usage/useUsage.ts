/**
 * The user's usage rows of the last days and his limits, read through PostgREST (RLS: his
 * own only) and kept live through Realtime on usage_metrics: each new LLM or tool call is
 * added as it is recorded, and the limits are read again after it.
 */
import { useEffect, useState } from "react";
import { type AppError, toAppError } from "../api/app_error.ts";
import { watchTable } from "../api/realtime.ts";
import { supabase } from "../supabase.ts";
import { type LimitsRow, rangeStart, type UsageRow } from "./usage_data.ts";

export interface UsageState {
  rows: UsageRow[];
  limits: LimitsRow | null;
  loading: boolean;
  error?: AppError;
  /** Bumped by every change, for the chart to redraw. */
  version: number;
}

const PAGE = 1000;
const COLUMNS = "id, created_at, kind, name, prompt_tokens, completion_tokens, cost_usd";
// One literal: supabase-js derives the row type from it.
const LIMIT_COLUMNS =
  "bucket_capacity, refill_per_minute, bucket_tokens, bucket_updated_at, daily_token_cap, daily_cost_cap_usd, usage_day, day_tokens, day_cost_usd";

async function loadRows(since: string): Promise<UsageRow[]> {
  const rows: UsageRow[] = [];
  for (let from = 0;; from += PAGE) {
    const { data, error } = await supabase.from("usage_metrics").select(COLUMNS)
      .gte("created_at", since).order("id").range(from, from + PAGE - 1);
    if (error) throw toAppError(error, "usage_unavailable");
    rows.push(...data);
    if (data.length < PAGE) return rows;
  }
}

async function loadLimits(): Promise<LimitsRow | null> {
  const { data, error } = await supabase.from("user_limits").select(LIMIT_COLUMNS).limit(1);
  if (error) throw toAppError(error, "limits_unavailable");
  return data[0] ?? null;
}

export function useUsage(userId: string, days: number): UsageState {
  const [state, setState] = useState<UsageState>({
    rows: [],
    limits: null,
    loading: true,
    version: 0,
  });
  useEffect(() => {
    let active = true;
    const byId = new Map<number, UsageRow>();
    let limits: LimitsRow | null = null;
    let version = 0;
    const publish = (error?: AppError) => {
      if (!active) return;
      setState({ rows: [...byId.values()], limits, loading: false, error, version: ++version });
    };
    const refresh = async () => {
      try {
        const [rows, freshLimits] = await Promise.all([
          loadRows(rangeStart(days, new Date())),
          loadLimits(),
        ]);
        for (const row of rows) byId.set(row.id, row);
        limits = freshLimits;
        publish();
      } catch (error) {
        publish(toAppError(error));
      }
    };
    let limitsTimer: ReturnType<typeof setTimeout> | undefined;
    const unwatch = watchTable<UsageRow & { user_id: string }>({
      table: "usage_metrics",
      event: "INSERT",
      filter: `user_id=eq.${userId}`,
      onSubscribed: refresh,
      onError: publish,
      onChange(change) {
        if (change.eventType !== "INSERT") return;
        const { id, created_at, kind, name, prompt_tokens, completion_tokens, cost_usd } =
          change.new;
        byId.set(id, { id, created_at, kind, name, prompt_tokens, completion_tokens, cost_usd });
        publish();
        // A turn records several rows at once; read the limits once after them.
        clearTimeout(limitsTimer);
        limitsTimer = setTimeout(async () => {
          try {
            limits = await loadLimits();
            publish();
          } catch (error) {
            publish(toAppError(error));
          }
        }, 300);
      },
    });
    return () => {
      active = false;
      clearTimeout(limitsTimer);
      unwatch();
    };
  }, [userId, days]);
  return state;
}
