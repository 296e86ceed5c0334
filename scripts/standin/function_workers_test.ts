import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startFunctionWorker } from "./function_workers.ts";

const ECHO_FUNCTION = fileURLToPath(new URL("./testdata/echo_function.ts", import.meta.url));

Deno.test("a worker's own `Listening on …` line is dropped unless verbose", async () => {
  for (const verbose of [false, true]) {
    const lines: string[] = [];
    const worker = await startFunctionWorker({
      name: "echo",
      entrypoint: ECHO_FUNCTION,
      env: {},
      log: (line) => lines.push(line),
      verbose,
    });
    try {
      const answer = await fetch(`${worker.origin}/echo/ping`);
      await answer.body?.cancel();
      assert.equal(answer.ok, true);
    } finally {
      await worker.stop();
    }
    const announced = lines.filter((line) => /Listening on http/.test(line));
    assert.equal(announced.length, verbose ? 1 : 0, lines.join("\n"));
  }
});

Deno.test("each function starts on its own deno.json and the frozen root lockfile", async () => {
  const env = {
    SUPABASE_URL: "http://127.0.0.1:9",
    SUPABASE_DB_URL: "postgres://postgres@127.0.0.1:9/postgres",
    SUPABASE_JWKS: JSON.stringify({ keys: [] }),
  };
  for (const name of ["agent", "connections", "history", "mcp"]) {
    const lines: string[] = [];
    const worker = await startFunctionWorker({ name, env, log: (line) => lines.push(line) });
    await worker.stop();
    assert.deepEqual(lines, [], `${name} logged while starting`);
  }
});

Deno.test("a bare import the function's deno.json lacks keeps the worker from starting", async () => {
  const folder = await Deno.makeTempDir({ prefix: "function-workers-test-" });
  try {
    const entrypoint = join(folder, "index.ts");
    // zod is in the root deno.json, but not in this function's: deploy would fail on it.
    await Deno.writeTextFile(entrypoint, `import "zod";\nDeno.serve(() => new Response("x"));\n`);
    const importMap = join(folder, "deno.json");
    await Deno.writeTextFile(importMap, JSON.stringify({ imports: {} }));
    const lines: string[] = [];
    await assert.rejects(
      startFunctionWorker({
        name: "lacking",
        entrypoint,
        importMap,
        env: {},
        log: (line) => lines.push(line),
      }),
      /exited before it listened/,
    );
    assert.ok(lines.some((line) => /Import "zod" not a dependency/.test(line)), lines.join("\n"));
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});
