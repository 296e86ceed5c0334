import type { Sql } from "../../supabase/functions/_shared/db/client.ts";

export interface BenchContext {
  /** Superuser pool on a fresh migrated database. */
  sql: Sql;
  databaseUrl: string;
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
