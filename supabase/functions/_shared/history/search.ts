/** Full-text search over the caller's own messages, with HTML-safe snippets. */
import type { Tx } from "../db/client.ts";
import { checkLimit, invalid } from "./input.ts";
import { HISTORY_LIMITS, type HistoryResult, type SearchHit } from "./protocol.ts";

export interface SearchOptions {
  limit?: number;
  /** Only this session's messages. */
  sessionId?: string;
}

// Private-use characters mark the matches inside ts_headline's output; the content is escaped
// afterwards and only these become tags, so message text can never inject markup.
const MATCH_START = "\uE000";
const MATCH_END = "\uE001";
const HEADLINE_OPTIONS =
  `StartSel="${MATCH_START}", StopSel="${MATCH_END}", MaxWords=30, MinWords=12, ` +
  `MaxFragments=2, FragmentDelimiter=" … "`;

/**
 * Full-text search over the caller's own messages (`websearch_to_tsquery('english', q)`:
 * quoted phrases, `or`, `-word`), best `ts_rank` first.
 */
export async function searchMessages(
  tx: Tx,
  query: string,
  options: SearchOptions = {},
): Promise<HistoryResult<SearchHit[]>> {
  const limit = checkLimit(options.limit, HISTORY_LIMITS.searchPage);
  if (!limit.ok) return limit;
  if (query.trim() === "") return invalid("must not be empty", "q");
  if (query.length > HISTORY_LIMITS.maxSearchQueryChars || query.includes("\u0000")) {
    return invalid(`must be at most ${HISTORY_LIMITS.maxSearchQueryChars} characters of text`, "q");
  }
  // ts_headline re-parses the whole content, so it runs on the page of hits only.
  const rows = await tx<SearchHit[]>`
    with query as (select websearch_to_tsquery('english', ${query}) as q),
    hits as (
      select h.id as row_id, h.session_id, h.client_id, h.seq, h.role, h.created_at, h.content,
             ts_rank(h.content_search, query.q) as rank
      from public.chat_history h, query
      where h.user_id = (select auth.uid()) and h.content_search @@ query.q
        and (${options.sessionId ?? null}::uuid is null or h.session_id = ${
    options.sessionId ?? null
  }::uuid)
      order by rank desc, h.created_at desc, h.id
      limit ${limit.value}
    )
    select hits.session_id, s.title as session_title, hits.client_id as message_id, hits.seq,
           hits.role, to_json(hits.created_at) #>> '{}' as created_at, hits.rank,
           ts_headline('english',
                       translate(hits.content, ${MATCH_START + MATCH_END}, ''),
                       query.q, ${HEADLINE_OPTIONS}) as snippet
    from hits
    cross join query
    join public.chat_sessions s on s.id = hits.session_id
    order by hits.rank desc, hits.created_at desc, hits.row_id`;
  const hits = rows.map((row) => ({ ...row, snippet: markMatches(row.snippet) }));
  return { ok: true, value: hits };
}

function markMatches(headline: string): string {
  return headline
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;")
    .replaceAll(MATCH_START, "<mark>")
    .replaceAll(MATCH_END, "</mark>");
}
