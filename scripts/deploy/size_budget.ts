/**
 * The size budget of a deployed function, measured as the bundle Supabase builds from the
 * upload: the eszip holds the local modules plus every npm package of the resolution as a whole
 * folder (not only the files imported), and server-side bundling refuses more than 5 MB. Each
 * package folder and the local files are gzipped at level 9 (the stand-in for the CLI's
 * compression) and summed; the budget leaves a margin below the limit.
 *
 * `deno run -A scripts/deploy/size_budget.ts` prints the table for every function.
 */
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { PROJECT_ROOT } from "../standin/supabase_cli.ts";
import { type FunctionGraph, functionGraph, functionNames } from "./function_graph.ts";

export const SIZE_BUDGET_BYTES = 4 * 1024 * 1024;

export interface Measured {
  /** A package's `name@version`, or "local files". */
  label: string;
  files: number;
  rawBytes: number;
  gzipBytes: number;
}

export interface FunctionSize {
  name: string;
  local: Measured;
  /** Largest first. */
  packages: Measured[];
  rawBytes: number;
  gzipBytes: number;
}

/** Packages are shared between functions; each folder is measured once per process. */
const measuredFolders = new Map<string, Promise<Measured>>();

export async function measureFiles(label: string, paths: readonly string[]): Promise<Measured> {
  const chunks: Uint8Array[] = [];
  for (const path of [...paths].sort()) chunks.push(await Deno.readFile(path));
  const raw = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    raw.set(chunk, offset);
    offset += chunk.length;
  }
  return {
    label,
    files: paths.length,
    rawBytes: raw.length,
    gzipBytes: gzipSync(raw, { level: 9 }).length,
  };
}

/** Every file under `folder`, at any depth. */
export async function filesUnder(folder: string): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(folder)) {
    const path = join(folder, entry.name);
    if (entry.isDirectory) files.push(...await filesUnder(path));
    else if (entry.isFile) files.push(path);
  }
  return files;
}

function measureFolder(label: string, folder: string): Promise<Measured> {
  let measured = measuredFolders.get(folder);
  if (!measured) {
    measured = filesUnder(folder).then((files) => measureFiles(label, files));
    measuredFolders.set(folder, measured);
  }
  return measured;
}

export async function functionSize(graph: FunctionGraph): Promise<FunctionSize> {
  const local = await measureFiles(
    "local files",
    graph.localFiles.map((file) => join(PROJECT_ROOT, file)),
  );
  const packages = await Promise.all(
    graph.npmPackages.map((pkg) => measureFolder(pkg.id, pkg.folder)),
  );
  packages.sort((a, b) => b.gzipBytes - a.gzipBytes);
  const all = [local, ...packages];
  return {
    name: graph.name,
    local,
    packages,
    rawBytes: all.reduce((sum, part) => sum + part.rawBytes, 0),
    gzipBytes: all.reduce((sum, part) => sum + part.gzipBytes, 0),
  };
}

export function formatBytes(bytes: number): string {
  return bytes >= 1024 * 1024
    ? `${(bytes / 1024 / 1024).toFixed(2)} MiB`
    : `${(bytes / 1024).toFixed(1)} KiB`;
}

/** One line for the function and one for each of its `top` largest packages. */
export function describeSize(size: FunctionSize, top = 5): string {
  const head = `${size.name}: ${formatBytes(size.gzipBytes)} gzip -9 ` +
    `(${formatBytes(size.rawBytes)} raw; ${size.local.files} local files ` +
    `${formatBytes(size.local.gzipBytes)}, ${size.packages.length} npm packages) ` +
    `of a ${formatBytes(SIZE_BUDGET_BYTES)} budget`;
  const largest = size.packages.slice(0, top).map((pkg) =>
    `  ${pkg.label.padEnd(40)} ${formatBytes(pkg.gzipBytes).padStart(10)} ` +
    `(${pkg.files} files, ${formatBytes(pkg.rawBytes)} raw)`
  );
  return [head, ...largest].join("\n");
}

if (import.meta.main) {
  for (const name of await functionNames()) {
    console.log(describeSize(await functionSize(await functionGraph(name))));
  }
}
