import assert from "node:assert/strict";
import { parseRoute } from "./useHashRoute.ts";

Deno.test("routes come from the hash; anything unknown is a new chat", () => {
  const id = "0D1C2A4E-0000-4000-8000-000000000001";
  assert.deepEqual(parseRoute(`#/chat/${id}`), { view: "chat", sessionId: id.toLowerCase() });
  assert.deepEqual(parseRoute("#/usage"), { view: "usage" });
  assert.deepEqual(parseRoute("#/permissions"), { view: "permissions" });
  assert.deepEqual(parseRoute("#/connections"), { view: "connections" });
  assert.deepEqual(parseRoute("#/chat/not-a-session"), { view: "chat" });
  assert.deepEqual(parseRoute(""), { view: "chat" });
});
