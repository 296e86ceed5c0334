/**
 * A function's module graph as `supabase functions deploy` sees it: resolved from its
 * `supabase/functions/<name>/index.ts` with its own `deno.json` (the import map the CLI picks,
 * never the root one) by `deno info --json --no-lock` (the lockfile is not uploaded either).
 *
 * The import-map contract, the Edge API lint, the size budget and the deploy rehearsal all read
 * the graph from here, so they agree on which files and packages a function ships.
 */
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { PROJECT_ROOT } from "../standin/supabase_cli.ts";

export const FUNCTIONS_DIR = "supabase/functions";

/** An npm package in the graph's resolution, with the folder Deno unpacked it into. */
export interface NpmPackage {
  /** `name@version`. */
  id: string;
  name: string;
  version: string;
  folder: string;
}

/** A dependency Deno could not resolve, as `file:line: specifier (error)`. */
export interface Unresolved {
  file: string;
  line: number;
  specifier: string;
  error: string;
}

export interface FunctionGraph {
  name: string;
  /** `supabase/functions/<name>/deno.json`, relative to the project root. */
  importMap: string;
  /** `supabase/functions/<name>/index.ts`, relative to the project root. */
  entrypoint: string;
  /** Every local module in the graph, relative to the project root, sorted. */
  localFiles: string[];
  /** Modules that are neither local files nor npm packages (https:, jsr:, node: …). */
  otherModules: string[];
  /** Every npm package of the resolution, dependencies of dependencies included. */
  npmPackages: NpmPackage[];
  /** Imports written in a local file as `npm:…`, `jsr:…` or a URL instead of through the map. */
  inlineSpecifiers: Unresolved[];
  unresolved: Unresolved[];
}

export class FunctionGraphError extends Error {
  constructor(readonly functionName: string, message: string) {
    super(`${functionName}: ${message}`);
    this.name = "FunctionGraphError";
  }
}

/** The functions `supabase functions deploy` finds: folders with an index.ts, `_shared` aside. */
export async function functionNames(root = PROJECT_ROOT): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(join(root, FUNCTIONS_DIR))) {
    if (!entry.isDirectory || entry.name.startsWith("_")) continue;
    const hasIndex = await Deno.stat(join(root, FUNCTIONS_DIR, entry.name, "index.ts"))
      .then(() => true, () => false);
    if (hasIndex) names.push(entry.name);
  }
  return names.sort();
}

interface DenoInfo {
  modules: {
    specifier: string;
    kind?: string;
    error?: string;
    dependencies?: {
      specifier: string;
      code?: { specifier?: string; error?: string; span?: { start: { line: number } } };
      type?: { specifier?: string; error?: string; span?: { start: { line: number } } };
    }[];
  }[];
  npmPackages?: Record<string, { name: string; version: string; localPath?: string }>;
}

/** Written with a scheme (npm:, jsr:, https:, …) rather than bare or relative. */
const SCHEME = /^[a-z][a-z0-9+.-]*:/i;
/** Node's built-in modules have no version to pin and ship with the runtime. */
const BUILTIN = /^node:/;

export async function functionGraph(name: string, root = PROJECT_ROOT): Promise<FunctionGraph> {
  const importMap = `${FUNCTIONS_DIR}/${name}/deno.json`;
  const entrypoint = `${FUNCTIONS_DIR}/${name}/index.ts`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--no-lock", "--config", importMap, entrypoint],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  if (!output.success) {
    throw new FunctionGraphError(name, `deno info failed:\n${decoder.decode(output.stderr)}`);
  }
  const info = JSON.parse(decoder.decode(output.stdout)) as DenoInfo;
  const pathOf = (specifier: string) => relative(root, fileURLToPath(specifier));

  const localFiles: string[] = [];
  const otherModules: string[] = [];
  const unresolved: Unresolved[] = [];
  const inlineSpecifiers: Unresolved[] = [];
  for (const module of info.modules) {
    if (module.specifier.startsWith("file:")) localFiles.push(pathOf(module.specifier));
    else if (module.kind !== "npm" && !BUILTIN.test(module.specifier)) {
      otherModules.push(module.specifier);
    }
    if (!module.specifier.startsWith("file:")) continue;
    const file = pathOf(module.specifier);
    if (module.error) unresolved.push({ file, line: 0, specifier: "", error: module.error });
    for (const dependency of module.dependencies ?? []) {
      const resolved = dependency.code ?? dependency.type;
      const line = (resolved?.span?.start.line ?? -1) + 1;
      const error = dependency.code?.error ?? dependency.type?.error;
      if (error) unresolved.push({ file, line, specifier: dependency.specifier, error });
      if (SCHEME.test(dependency.specifier) && !BUILTIN.test(dependency.specifier)) {
        inlineSpecifiers.push({
          file,
          line,
          specifier: dependency.specifier,
          error: "written inline instead of through the function's deno.json",
        });
      }
    }
  }
  const npmPackages = Object.entries(info.npmPackages ?? {}).map(([key, pkg]) => {
    if (!pkg.localPath) {
      throw new FunctionGraphError(name, `deno info gave no folder for the npm package ${key}`);
    }
    return {
      id: `${pkg.name}@${pkg.version}`,
      name: pkg.name,
      version: pkg.version,
      folder: pkg.localPath,
    };
  });
  return {
    name,
    importMap,
    entrypoint,
    localFiles: localFiles.sort(),
    otherModules: otherModules.sort(),
    npmPackages: npmPackages.sort((a, b) => a.id.localeCompare(b.id)),
    inlineSpecifiers,
    unresolved,
  };
}

/** Every local file the graph reaches that is not under `supabase/functions/`. */
export function filesOutsideFunctions(graph: FunctionGraph): string[] {
  return graph.localFiles.filter((file) => !file.startsWith(`${FUNCTIONS_DIR}/`));
}

/** `deno.json` `imports`, read as JSON; a missing or malformed file is an error naming it. */
export async function importsOf(
  path: string,
  root = PROJECT_ROOT,
): Promise<Record<string, string>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await Deno.readTextFile(join(root, path)));
  } catch (cause) {
    throw new Error(`${path}: cannot read it as JSON`, { cause });
  }
  const imports = (parsed as { imports?: unknown }).imports;
  if (typeof imports !== "object" || imports === null || Array.isArray(imports)) {
    throw new Error(`${path}: has no "imports" object`);
  }
  return imports as Record<string, string>;
}

/**
 * The lines of a function's `deno.json` that differ from the root's: a key the root lacks or
 * maps elsewhere. The root is what tests, the stand-in and the type check use, so a package the
 * functions pin differently would ship a version nothing here ran. A relative target (a vendored
 * module) is written from each file's own folder, so the two must name the same file, not the
 * same text; `folders` gives the folders of the function's and the root's `deno.json`.
 */
export function mappingsOutOfStep(
  functionImports: Record<string, string>,
  rootImports: Record<string, string>,
  folders: { function: string; root: string } = { function: ".", root: "." },
): string[] {
  const place = (folder: string, target: string) =>
    /^\.\.?\//.test(target) ? join(folder, target) : target;
  return Object.entries(functionImports).flatMap(([key, target]) => {
    const rootTarget = rootImports[key];
    if (rootTarget === undefined) return [`"${key}": "${target}" is not in the root deno.json`];
    return place(folders.function, target) === place(folders.root, rootTarget)
      ? []
      : [`"${key}": "${target}" but the root deno.json says "${rootTarget}"`];
  });
}
