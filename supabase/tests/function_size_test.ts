/**
 * The size budget (scripts/deploy/size_budget.ts): each function's bundle, its local files plus
 * every npm package folder of its resolution gzipped at level 9, stays under 4 MiB, a margin
 * below the 5 MB server-side bundling accepts. A failure lists the largest packages.
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { functionGraph, functionNames } from "../../scripts/deploy/function_graph.ts";
import {
  describeSize,
  filesUnder,
  functionSize,
  measureFiles,
  SIZE_BUDGET_BYTES,
} from "../../scripts/deploy/size_budget.ts";

Deno.test("size budget: each function's bundle stays under the budget", async () => {
  const over: string[] = [];
  for (const name of await functionNames()) {
    const size = await functionSize(await functionGraph(name));
    const description = describeSize(size);
    console.log(description);
    assert.ok(size.packages.length > 0 && size.local.files > 0, `${name}: nothing measured`);
    if (size.gzipBytes > SIZE_BUDGET_BYTES) over.push(description);
  }
  assert.deepEqual(over, [], "over the size budget; the largest packages are listed");
});

Deno.test("size budget: a folder is measured whole, nested files included, gzipped at level 9", async () => {
  const folder = await Deno.makeTempDir();
  try {
    const a = new TextEncoder().encode("a".repeat(1000));
    const b = new TextEncoder().encode("export const b = 1;\n");
    await Deno.mkdir(join(folder, "lib/deep"), { recursive: true });
    await Deno.writeFile(join(folder, "a.txt"), a);
    await Deno.writeFile(join(folder, "lib/deep/b.js"), b);
    const measured = await measureFiles("pkg", await filesUnder(folder));
    assert.equal(measured.files, 2);
    assert.equal(measured.rawBytes, a.length + b.length);
    assert.equal(measured.gzipBytes, gzipSync(new Uint8Array([...a, ...b]), { level: 9 }).length);
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});
