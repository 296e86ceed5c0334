/**
 * The Edge API lint (scripts/deploy/edge_api_lint.ts) over every product file a function's graph
 * reaches: what `supabase functions deploy` uploads must not use an API the hosted Edge Runtime
 * refuses. A finding names its file and line.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { formatFinding, lintSource, RULES } from "../../scripts/deploy/edge_api_lint.ts";
import { functionGraph, functionNames } from "../../scripts/deploy/function_graph.ts";
import { PROJECT_ROOT } from "../../scripts/standin/supabase_cli.ts";

/**
 * Vendored packages are third-party code that ships as an npm package would, and the lint reads
 * no npm package either: postgres.js imports node:fs, for a `sql.file()` nothing here calls.
 */
const VENDORED = "supabase/functions/_shared/vendor/";

Deno.test("edge API lint: no function's graph uses an API the Edge Runtime refuses", async () => {
  const files = new Set<string>();
  for (const name of await functionNames()) {
    for (const file of (await functionGraph(name)).localFiles) {
      if (!file.startsWith(VENDORED)) files.add(file);
    }
  }
  assert.ok(files.size > 10, `only ${files.size} files in the graphs`);
  const findings = [];
  for (const file of [...files].sort()) {
    findings.push(...lintSource(file, await Deno.readTextFile(join(PROJECT_ROOT, file))));
  }
  assert.deepEqual(findings.map(formatFinding), []);
});

Deno.test("edge API lint: every rule finds its API, by line, and comments and strings stay quiet", () => {
  const source = [
    `// Deno.Command in a comment, and "https://example.com/" in a string`,
    `new Deno.Command("ls");`,
    `Deno.run({ cmd: ["ls"] });`,
    `Deno.listen({ port: 1 });`,
    `await Deno.writeTextFile("/tmp/x", "x"); /* Deno.mkdir */`,
    `await Deno.open("/tmp/x", { read: true });`,
    `await Deno.open(path, {`,
    `  write: true,`,
    `});`,
    `Deno.env.set("A", "b");`,
    `new Worker(new URL("./w.ts", import.meta.url));`,
    `await Deno.openKv();`,
    `Deno.addSignalListener("SIGTERM", () => {});`,
    `import { spawn } from "node:child_process";`,
    `Deno.serve(() => new Response(Deno.env.get("A")));`,
  ].join("\n");
  const found = lintSource("f.ts", source).map(({ line, rule }) => `${line} ${rule}`);
  assert.deepEqual(found, [
    "2 Deno.Command",
    "3 Deno.run",
    "4 Deno.listen",
    "5 file write",
    "7 Deno.open for writing",
    "10 Deno.env.set",
    "11 import.meta location",
    "11 new Worker",
    "12 Deno.openKv",
    "13 Deno.addSignalListener",
    "14 node: process, worker or file module",
  ]);
  assert.equal(new Set(found.map((entry) => entry.replace(/^\d+ /, ""))).size, RULES.length);
});
