/**
 * The import rules of docs/architecture.md, checked on the tree as it is: every relative
 * import and re-export (type-only ones too) of the product's files, the web client's and the
 * stand-in's is read from the source and resolved to a file.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "../..");
const FUNCTIONS = "supabase/functions/";
const SHARED = "supabase/functions/_shared/";
/** What the web client may take from `_shared/`: the wire protocols and the generated types. */
const WEB_MAY_IMPORT = new Set([
  "supabase/functions/_shared/agent_protocol.ts",
  "supabase/functions/_shared/db/database.types.ts",
  "supabase/functions/_shared/history/protocol.ts",
  "supabase/functions/_shared/http/error_codes.ts",
  "supabase/functions/_shared/mcp_servers/protocol.ts",
]);

/**
 * Tests and their helpers (the shared ones in `supabase/tests/support/`, the web's own in
 * `web/src/agent/test_support.ts`): they may reach into the stand-in and the doubles.
 */
export function isTestFile(path: string): boolean {
  return /_test\.tsx?$/.test(path) || path.startsWith("supabase/tests/") ||
    /\/test_support\.tsx?$/.test(path) || path.includes("/testdata/");
}

const IMPORT =
  /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[^"';]*?\s+from\s+)?["']([^"']+)["']/g;
const DYNAMIC_IMPORT = /\bimport\(\s*["']([^"']+)["']\s*\)/g;

/** The relative imports of one source text, as written. */
export function importsOf(source: string): string[] {
  const withoutComments = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const found: string[] = [];
  for (const pattern of [IMPORT, DYNAMIC_IMPORT]) {
    for (const match of withoutComments.matchAll(pattern)) {
      if (match[1].startsWith(".")) found.push(match[1]);
    }
  }
  return found;
}

async function sourceFiles(folder: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(join(ROOT, dir))) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) {
        if (!["node_modules", "dist", ".data"].includes(entry.name)) await walk(path);
      } else if (/\.tsx?$/.test(entry.name)) {
        files.push(path);
      }
    }
  };
  await walk(folder);
  return files.sort();
}

/** file → the files it imports, all relative to the project root. */
async function importGraph(folders: string[]): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for (const folder of folders) {
    for (const file of await sourceFiles(folder)) {
      const source = await Deno.readTextFile(join(ROOT, file));
      graph.set(
        file,
        importsOf(source).map((specifier) =>
          relative(ROOT, resolve(ROOT, dirname(file), specifier))
        ),
      );
    }
  }
  return graph;
}

/** Every import cycle among `files`, each as the path that closes it. */
export function cyclesAmong(
  graph: ReadonlyMap<string, readonly string[]>,
  files: ReadonlySet<string>,
): string[][] {
  const cycles: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, "open");
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (!files.has(next)) continue;
      if (state.get(next) === "open") cycles.push([...stack.slice(stack.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(file, "done");
  };
  for (const file of files) if (!state.has(file)) visit(file);
  return cycles;
}

const graph = await importGraph(["supabase/functions", "web/src", "scripts"]);
const edges = [...graph].flatMap(([from, targets]) => targets.map((to) => ({ from, to })));

Deno.test("architecture: product code under supabase/functions never imports scripts/", () => {
  const offending = edges.filter(({ from, to }) =>
    from.startsWith(FUNCTIONS) && !isTestFile(from) && to.startsWith("scripts/")
  );
  assert.deepEqual(offending, []);
});

Deno.test("architecture: _shared/ never imports a function's own folder", () => {
  const offending = edges.filter(({ from, to }) =>
    from.startsWith(SHARED) && to.startsWith(FUNCTIONS) && !to.startsWith(SHARED)
  );
  assert.deepEqual(offending, []);
});

Deno.test("architecture: web/src takes only the wire protocols and the generated types from _shared/", () => {
  const offending = edges.filter(({ from, to }) =>
    from.startsWith("web/src/") && to.startsWith(FUNCTIONS) && !WEB_MAY_IMPORT.has(to)
  );
  assert.deepEqual(offending, []);
});

Deno.test("architecture: no import cycle among product files, type-only imports included", () => {
  const product = new Set(
    [...graph.keys()].filter((file) =>
      (file.startsWith(FUNCTIONS) || file.startsWith("web/src/")) && !isTestFile(file)
    ),
  );
  assert.deepEqual(cyclesAmong(graph, product), []);
});

Deno.test("architecture: every relative import resolves to a file that exists", async () => {
  const missing: string[] = [];
  for (const { from, to } of edges) {
    if (!(await Deno.stat(join(ROOT, to)).then(() => true, () => false))) {
      missing.push(`${from} -> ${to}`);
    }
  }
  assert.deepEqual(missing, []);
});

Deno.test("architecture: the checker itself finds imports and cycles", () => {
  assert.deepEqual(
    importsOf(
      `import type { A } from "./a.ts";\nexport { b } from "../b.ts";\n` +
        `import "./side.ts";\n// import { no } from "./comment.ts";\nimport { z } from "zod";\n` +
        `const lazy = await import("./lazy.ts");`,
    ),
    ["./a.ts", "../b.ts", "./side.ts", "./lazy.ts"],
  );
  const toy = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]]);
  assert.deepEqual(cyclesAmong(toy, new Set(["a", "b", "c", "d"])), [["a", "b", "c", "a"]]);
  assert.deepEqual(cyclesAmong(toy, new Set(["a", "b", "d"])), []);
});

// Rule 6 (each function resolves with its own deno.json) is the import-map contract:
// supabase/tests/import_map_contract_test.ts.
