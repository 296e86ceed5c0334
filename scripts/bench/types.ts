import type { Sql } from "../../supabase/functions/_shared/db/client.ts";
import type { POOL_SIZES } from "../../supabase/functions/_shared/db/config.ts";

/** Connections per isolate the benchmarked functions get, by pool (`POOL_SIZES`). */
export type PoolSizes = Record<keyof typeof POOL_SIZES, number>;

export interface BenchContext {
  /** The benchmark's own direct pool on a fresh migrated database (set-up, Database suite). */
  sql: Sql;
  databaseUrl: string;
  pools: PoolSizes;
  /** Short runs that only prove the benchmark still works (CI). */
  smoke: boolean;
}

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  /** The target, as written in the issue, e.g. ">= 20000". */
  target?: string;
  pass?: boolean;
  detail?: string;
}
