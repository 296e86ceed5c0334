/**
 * `search_history`: full-text search over the caller's own messages. The search itself is
 * the history module's (one definition for the `history` function, MCP and the agent); it
 * runs as the caller, so RLS keeps it to his rows.
 */
import { z } from "zod";
import type { Database } from "../db/database.types.ts";
import { HISTORY_LIMITS } from "../history/protocol.ts";
import { searchMessages } from "../history/search.ts";
import { READ_ONLY_ANNOTATIONS, type ToolDefinition } from "./types.ts";

type MessageRole = Database["public"]["Enums"]["message_role"];

const input = z.object({
  query: z.string().trim().min(1).max(HISTORY_LIMITS.maxSearchQueryChars).describe(
    'What to look for, in web-search syntax: words, "quoted phrases", OR, -excluded.',
  ),
  limit: z.number().int().min(1).max(HISTORY_LIMITS.searchPage.max).default(10).describe(
    "At most this many messages.",
  ),
  session_id: z.uuid().optional().describe("Only search this chat session."),
});

const output = z.object({
  query: z.string(),
  results: z.array(z.object({
    message_id: z.string().describe("The message's client id."),
    session_id: z.string(),
    session_title: z.string().nullable(),
    seq: z.number().int(),
    role: z.enum(["user", "assistant", "system", "tool"] satisfies MessageRole[]),
    created_at: z.string().describe("ISO 8601 timestamp."),
    rank: z.number(),
    snippet: z.string().describe("HTML-escaped excerpt, matched words in <mark>…</mark>."),
  })),
  session_ids: z.array(z.string()).describe("The sessions the results come from, best first."),
});

export const searchHistoryTool: ToolDefinition<typeof input, typeof output> = {
  name: "search_history",
  title: "Search chat history",
  description: "Full-text search over your own chat messages (English stemming). Returns the " +
    "best matches with highlighted snippets and the sessions they belong to.",
  input,
  output,
  annotations: READ_ONLY_ANNOTATIONS,
  permission: "search_history",
  async run({ query, limit, session_id }, { db }) {
    const found = await db((tx) => searchMessages(tx, query, { limit, sessionId: session_id }));
    if (!found.ok) return { ok: false, error: { code: found.code, message: found.message } };
    const results = found.value;
    return {
      ok: true,
      output: { query, results, session_ids: [...new Set(results.map((r) => r.session_id))] },
    };
  },
};
