import assert from "node:assert/strict";
import { type ChatRow, ChatRows, rowFromRecord } from "./chat_rows.ts";
import { messageView } from "./message_view.ts";
import { AgentStore } from "../agent/store.ts";
import { TurnScript } from "../agent/test_support.ts";

function row(id: string, seq: number, content: string, updatedAt: string): ChatRow {
  return {
    id,
    seq,
    role: "assistant",
    content,
    toolCalls: [],
    status: "streaming",
    model: null,
    turnId: null,
    updatedAt,
  };
}

Deno.test("rows are kept in seq order; a later flush replaces, a stale one does not", () => {
  const rows = new ChatRows();
  let orderChanges = 0;
  const rowChanges: string[] = [];
  rows.subscribe("order", () => orderChanges++);
  rows.subscribe("row:b", () => rowChanges.push("b"));
  rows.upsert([row("b", 2, "Hel", "2026-11-22T10:00:01.000+00:00")]);
  rows.upsert([row("a", 1, "hi", "2026-11-22T10:00:00.000+00:00")]);
  assert.deepEqual(rows.order, ["a", "b"]);
  assert.equal(orderChanges, 2);

  rows.upsert([row("b", 2, "Hello", "2026-11-22T10:00:01.500+00:00")]);
  // A load that started before the flush arrives after it: older, ignored.
  rows.upsert([row("b", 2, "Hel", "2026-11-22T10:00:01.000+00:00")]);
  assert.equal(rows.row("b")?.content, "Hello");
  assert.deepEqual(rowChanges, ["b", "b"]);
  assert.equal(orderChanges, 2, "growing text does not reorder");
});

Deno.test("a Realtime record becomes a row under its client id", () => {
  const parsed = rowFromRecord({
    id: "server-row-id",
    client_id: "client-id",
    seq: 3,
    role: "assistant",
    content: "x",
    status: "complete",
    tool_calls: [{ id: "c1", name: "calculator", arguments: '{"expression":"1+1"}', result: 2 }],
    updated_at: "2026-11-22T10:00:00+00:00",
  });
  assert.equal(parsed?.id, "client-id");
  assert.deepEqual(parsed?.toolCalls.map((c) => c.name), ["calculator"]);
  assert.equal(rowFromRecord({ id: "x" }), undefined);
});

Deno.test("a message shows the live turn over the stored row, and the row without it", () => {
  const s = new TurnScript();
  const store = new AgentStore((flush) => flush());
  const frame = (f: unknown) => store.applyFrame(f as Parameters<AgentStore["applyFrame"]>[0]);
  frame(s.start());
  frame(s.token("live text"));
  const stored = { ...row(s.messageId, 2, "live", "2026-11-22T10:00:00+00:00") };
  const live = messageView(s.messageId, stored, store.turnOfMessage(s.messageId), undefined)!;
  assert.equal(live.text, "live text");
  assert.equal(live.state, "streaming");
  assert.equal(live.live, true);

  const other = messageView(s.messageId, stored, undefined, undefined)!;
  assert.equal(other.text, "live");
  assert.equal(other.live, false, "another tab cannot answer approvals");

  frame(s.error("cancelled"));
  assert.equal(
    messageView(s.messageId, stored, store.turnOfMessage(s.messageId), undefined)!.state,
    "stopped",
  );
});
