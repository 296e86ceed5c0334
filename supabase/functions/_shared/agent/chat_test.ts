import assert from "node:assert/strict";
import { assistantMessageIdFor } from "./chat.ts";

Deno.test("the assistant message id is derived from the user message id", async () => {
  const userId = "6F1F6D3E-3C2A-4D7E-9A51-0C6B2B1F8A10";
  const derived = await assistantMessageIdFor(userId);
  assert.match(
    derived,
    /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
  );
  assert.equal(
    await assistantMessageIdFor(userId.toLowerCase()),
    derived,
    "case does not matter",
  );
  assert.notEqual(await assistantMessageIdFor(crypto.randomUUID()), derived);
  assert.notEqual(derived, userId.toLowerCase());
});
