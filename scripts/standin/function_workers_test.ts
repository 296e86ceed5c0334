import assert from "node:assert/strict";
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
