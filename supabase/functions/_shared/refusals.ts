/**
 * Refusals of client frames (limits, bad input, a revoked account) leave no turn and no usage
 * row, so `/metrics` counts them here: one row per minute, code and reason in
 * `public.refusal_counts`, bumped by one statement that also drops rows older than the longest
 * metrics window. Written as service_role: the counts are everyone's.
 */
import { queryAsServiceRole, type Sql } from "./db/client.ts";
import { inlineSql } from "./db/inline_sql.ts";

export async function countRefusal(sql: Sql, code: string, reason = ""): Promise<void> {
  await queryAsServiceRole(
    sql,
    inlineSql`
      with pruned as (
        delete from public.refusal_counts where minute < now() - interval '2 days'
      )
      insert into public.refusal_counts as r (minute, code, reason, refusals)
      values (date_trunc('minute', now()), ${code.slice(0, 64)}, ${reason.slice(0, 64)}, 1)
      on conflict (minute, code, reason) do update set refusals = r.refusals + 1`,
  );
}
