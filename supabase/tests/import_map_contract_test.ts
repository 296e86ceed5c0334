/**
 * The import-map contract of `supabase functions deploy`: the CLI resolves each function with
 * `supabase/functions/<name>/deno.json` (never the root `deno.json`) and uploads only the files
 * its graph reaches, so each function's graph must resolve with that file alone, stay inside
 * `supabase/functions/`, and pin every package exactly as the root `deno.json` does (the root is
 * what the tests, the stand-in and `deno task check` run: one version of each package).
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { parse } from "smol-toml";
import {
  filesOutsideFunctions,
  functionGraph,
  functionNames,
  importsOf,
  mappingsOutOfStep,
} from "../../scripts/deploy/function_graph.ts";
import { PROJECT_ROOT } from "../../scripts/standin/supabase_cli.ts";

const names = await functionNames();
const graphs = await Promise.all(names.map((name) => functionGraph(name)));
const rootImports = await importsOf("deno.json");

Deno.test("import map: the functions found are those config.toml declares", async () => {
  const config = parse(await Deno.readTextFile(join(PROJECT_ROOT, "supabase/config.toml")));
  const declared = Object.keys((config.functions ?? {}) as Record<string, unknown>).sort();
  assert.ok(declared.length >= 3, "config.toml declares no [functions.<name>]");
  assert.deepEqual(names, declared);
});

Deno.test("import map: every local module of each function lies under supabase/functions/", () => {
  const offending = graphs.flatMap((graph) => [
    ...filesOutsideFunctions(graph).map((file) => `${graph.name}: ${file} is outside`),
    // Only the npm registry: a https: or jsr: module would be fetched at bundling time.
    ...graph.otherModules.map((module) => `${graph.name}: ${module} is not an npm package`),
    ...(graph.localFiles.includes(graph.entrypoint)
      ? []
      : [`${graph.name}: no ${graph.entrypoint}`]),
  ]);
  assert.deepEqual(offending, []);
});

Deno.test("import map: every import resolves through the function's own deno.json", () => {
  const offending = graphs.flatMap((graph) =>
    [...graph.unresolved, ...graph.inlineSpecifiers].map(({ file, line, specifier, error }) =>
      `${graph.importMap}: ${file}:${line}: "${specifier}" ${error}`
    )
  );
  assert.deepEqual(offending, []);
});

Deno.test("import map: each function's deno.json maps every key exactly as the root deno.json", async () => {
  const offending: string[] = [];
  for (const graph of graphs) {
    const folders = { function: dirname(graph.importMap), root: "." };
    for (const line of mappingsOutOfStep(await importsOf(graph.importMap), rootImports, folders)) {
      offending.push(`${graph.importMap}: ${line}`);
    }
  }
  assert.deepEqual(offending, [], "one version of each package: change both, in lockstep");
});

Deno.test("import map: the lockstep check names a bumped version and a missing key", () => {
  const root = { "hono": "npm:hono@4.13.19", "zod": "npm:zod@4.6.7" };
  assert.deepEqual(mappingsOutOfStep({ "hono": "npm:hono@4.13.19" }, root), []);
  assert.deepEqual(
    mappingsOutOfStep({ "hono": "npm:hono@4.13.20", "jose": "npm:jose@6.2.17" }, root),
    [
      `"hono": "npm:hono@4.13.20" but the root deno.json says "npm:hono@4.13.19"`,
      `"jose": "npm:jose@6.2.17" is not in the root deno.json`,
    ],
  );
});

Deno.test("import map: a vendored module is the same file whichever deno.json names it", () => {
  const root = { "postgres": "./supabase/functions/_shared/vendor/postgres/mod.ts" };
  const folders = { function: "supabase/functions/agent", root: "." };
  assert.deepEqual(
    mappingsOutOfStep({ "postgres": "../_shared/vendor/postgres/mod.ts" }, root, folders),
    [],
  );
  assert.deepEqual(
    mappingsOutOfStep({ "postgres": "./vendor/postgres/mod.ts" }, root, folders),
    [
      `"postgres": "./vendor/postgres/mod.ts" but the root deno.json says ` +
      `"./supabase/functions/_shared/vendor/postgres/mod.ts"`,
    ],
  );
});
