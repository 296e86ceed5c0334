import assert from "node:assert/strict";
import { join } from "node:path";
import { readFunctionConfigs } from "./project_config.ts";

Deno.test("the project's functions verify JWTs themselves", async () => {
  const configs = await readFunctionConfigs();
  assert.deepEqual(configs.map((c) => [c.name, c.verifyJwt]).sort(), [
    ["agent", false],
    ["connections", false],
    ["history", false],
    ["mcp", false],
  ]);
  for (const config of configs) assert.match(config.entrypoint, /functions\/\w+\/index\.ts$/);
});

Deno.test("verify_jwt defaults to true and disabled functions are left out", async () => {
  const root = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(root, "supabase"));
    await Deno.writeTextFile(
      join(root, "supabase", "config.toml"),
      "[functions.open]\nverify_jwt = false\n[functions.plain]\n[functions.off]\nenabled = false\n",
    );
    const configs = await readFunctionConfigs(root);
    assert.deepEqual(configs.map((c) => [c.name, c.verifyJwt]), [["open", false], ["plain", true]]);
    assert.equal(configs[1].entrypoint, join(root, "supabase", "functions", "plain", "index.ts"));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
