/**
 * The conversation sent to the model: the system prompt, the session's recent messages from
 * chat_history (read as the user), and the new user message. An assistant message stored
 * with tool calls is replayed the way the model produced it: the calls, their results, then
 * the text.
 */
import type { Json } from "../db/database.types.ts";
import type { ChatMessage } from "../llm_client.ts";
import type { StoredToolCall } from "../history/protocol.ts";

/** Older messages are dropped first once the history passes this many characters. */
const MAX_HISTORY_CHARACTERS = 200_000;

export interface HistoryRow {
  client_id: string;
  role: "user" | "assistant" | "system" | "tool";
  content: string;
  tool_calls: Json | null;
}

export function buildMessages(
  systemPrompt: string,
  history: readonly HistoryRow[],
  userContent: string,
): ChatMessage[] {
  const replayed: ChatMessage[][] = history.map(replay);
  let characters = 0;
  let keepFrom = replayed.length;
  while (keepFrom > 0) {
    const size = JSON.stringify(replayed[keepFrom - 1]).length;
    if (characters + size > MAX_HISTORY_CHARACTERS) break;
    characters += size;
    keepFrom--;
  }
  return [
    { role: "system", content: systemPrompt },
    ...replayed.slice(keepFrom).flat(),
    { role: "user", content: userContent },
  ];
}

function replay(row: HistoryRow): ChatMessage[] {
  if (row.role === "user") return [{ role: "user", content: row.content }];
  const calls = storedToolCalls(row.tool_calls);
  const messages: ChatMessage[] = [];
  if (calls.length > 0) {
    messages.push({
      role: "assistant",
      content: null,
      tool_calls: calls.map((call) => ({
        id: call.id,
        type: "function",
        function: { name: call.name, arguments: call.arguments },
      })),
    });
    for (const call of calls) {
      const result = call.is_error ? { error: call.result ?? null } : call.result ?? null;
      messages.push({
        role: "tool",
        tool_call_id: call.id,
        content: JSON.stringify(result),
      });
    }
  }
  if (row.content !== "") {
    messages.push({ role: "assistant", content: row.content });
  }
  return messages;
}

function storedToolCalls(value: Json | null): StoredToolCall[] {
  if (!Array.isArray(value)) return [];
  return value.filter((call): call is Json & StoredToolCall =>
    typeof call === "object" && call !== null && !Array.isArray(call) &&
    typeof call.id === "string" && typeof call.name === "string" &&
    typeof call.arguments === "string"
  );
}
