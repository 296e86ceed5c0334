import assert from "node:assert/strict";
import { MAX_TOOL_NAME, offeredToolNames, serverWildcardOf } from "./tool_names.ts";

Deno.test("tool names: lowercased, other characters to _, the slug in front", async () => {
  assert.deepEqual(await offeredToolNames("gh", ["create_issue", "Get-File.Contents"]), [
    "gh__create_issue",
    "gh__get_file_contents",
  ]);
});

Deno.test("tool names: a name cut to 64 characters or colliding gets a 6-hex hash of the original", async () => {
  const long = "a".repeat(100);
  const [cut, one, two] = await offeredToolNames("slug", [long, "Read File", "read-file"]);
  assert.equal(cut.length, MAX_TOOL_NAME);
  assert.match(cut, /^slug__a+_[0-9a-f]{6}$/);
  assert.match(one, /^slug__read_file_[0-9a-f]{6}$/);
  assert.match(two, /^slug__read_file_[0-9a-f]{6}$/);
  assert.notEqual(one, two);
  for (const name of [cut, one, two]) assert.match(name, /^[a-z][a-z0-9_]{0,63}$/);
  // Deterministic: a rediscovery names each tool the same way.
  assert.deepEqual(await offeredToolNames("slug", [long, "Read File", "read-file"]), [
    cut,
    one,
    two,
  ]);
});

Deno.test("tool names: the <slug>__* row that covers a tool", () => {
  assert.equal(serverWildcardOf("gh__create_issue"), "gh__*");
  assert.equal(serverWildcardOf("calculator"), undefined);
  assert.equal(serverWildcardOf("__x"), undefined);
});
