/**
 * What a first visit downloads: the entry script of dist/index.html and every chunk it imports
 * statically, gzipped. Chunks reached only through `import()` (the usage view) load on demand
 * and are counted apart.
 */
import { gzipSync } from "node:zlib";

/** The budget: 250 KB of gzipped JavaScript on first load. */
export const FIRST_LOAD_BUDGET_BYTES = 250 * 1000;

export interface FirstLoadSize {
  /** The files of the first load, relative to dist/. */
  files: string[];
  gzipBytes: number;
  /** The other JavaScript files of the build, gzipped. */
  lazyGzipBytes: number;
}

const STATIC_IMPORT = /(?:\bimport|\bfrom)\s*["']([^"']+\.js)["']/g;

export async function measureFirstLoad(dist: URL): Promise<FirstLoadSize> {
  const html = await Deno.readTextFile(new URL("index.html", dist));
  const entries = [...html.matchAll(/<script[^>]+type="module"[^>]+src="\/?([^"]+)"/g)]
    .map((match) => match[1]);
  if (entries.length === 0) throw new Error("dist/index.html loads no module script");

  const firstLoad = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (firstLoad.has(file)) continue;
    firstLoad.add(file);
    const code = await Deno.readTextFile(new URL(file, dist));
    const directory = file.slice(0, file.lastIndexOf("/") + 1);
    // Dynamic imports are `import("…")`: the pattern needs a space or quote right after
    // `import`, so they are left out, as they should be.
    for (const match of code.matchAll(STATIC_IMPORT)) {
      queue.push(new URL(match[1], `file:///${directory}`).pathname.slice(1));
    }
  }

  let gzipBytes = 0;
  for (const file of firstLoad) gzipBytes += await gzippedSize(new URL(file, dist));
  let lazyGzipBytes = 0;
  for await (const entry of Deno.readDir(new URL("assets/", dist))) {
    const file = `assets/${entry.name}`;
    if (entry.name.endsWith(".js") && !firstLoad.has(file)) {
      lazyGzipBytes += await gzippedSize(new URL(file, dist));
    }
  }
  return { files: [...firstLoad].sort(), gzipBytes, lazyGzipBytes };
}

async function gzippedSize(file: URL): Promise<number> {
  return gzipSync(await Deno.readFile(file), { level: 9 }).byteLength;
}
