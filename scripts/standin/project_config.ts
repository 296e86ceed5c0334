/** What the stand-in reads from supabase/config.toml: the functions and their verify_jwt. */
import { parse } from "smol-toml";
import { join } from "node:path";
import { PROJECT_ROOT } from "./supabase_cli.ts";

export interface FunctionConfig {
  name: string;
  verifyJwt: boolean;
  entrypoint: string;
}

export async function readFunctionConfigs(root = PROJECT_ROOT): Promise<FunctionConfig[]> {
  const config = parse(await Deno.readTextFile(join(root, "supabase", "config.toml")));
  const functions = (config.functions ?? {}) as Record<string, Record<string, unknown>>;
  const configs: FunctionConfig[] = [];
  for (const [name, settings] of Object.entries(functions)) {
    if (settings.enabled === false) continue;
    const entrypoint = join(
      root,
      "supabase",
      typeof settings.entrypoint === "string"
        ? settings.entrypoint
        : join("functions", name, "index.ts"),
    );
    configs.push({ name, verifyJwt: settings.verify_jwt !== false, entrypoint });
  }
  return configs;
}
