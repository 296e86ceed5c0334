/**
 * The real Supabase CLI, run through npx from the npm registry.
 *
 * Deno cannot install `npm:supabase` itself: the package lists platform binaries whose
 * versions are not all published, and Deno resolves every optional dependency. npm skips
 * them, so npx is the reliable route on a machine that has only Node.js and npm.
 */
import { fileURLToPath } from "node:url";

export const SUPABASE_CLI_VERSION = "3.1.0";
export const PROJECT_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * `workdir` is the folder holding `supabase/` (this project unless a test says otherwise);
 * `env` adds to the environment (the deploy rehearsal passes its access token this way).
 */
export async function runSupabaseCli(
  args: string[],
  workdir = PROJECT_ROOT,
  env: Record<string, string> = {},
): Promise<CliResult> {
  const command = new Deno.Command("npx", {
    args: ["--yes", `supabase@${SUPABASE_CLI_VERSION}`, ...args, "--workdir", workdir],
    cwd: workdir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { SUPABASE_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1", NO_COLOR: "1", ...env },
  });
  const output = await command.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: withoutNpmNoise(decoder.decode(output.stderr)),
  };
}

/** Runs the CLI and throws with its own words when it fails. */
export async function supabaseCli(args: string[], workdir = PROJECT_ROOT): Promise<string> {
  const result = await runSupabaseCli(args, workdir);
  if (result.code !== 0) {
    throw new Error(
      `supabase ${args[0]} ${args[1] ?? ""} failed (exit ${result.code}):\n` +
        (result.stderr.trim() || result.stdout.trim()),
    );
  }
  return result.stdout;
}

function withoutNpmNoise(text: string): string {
  return text.split("\n").filter((line) => !line.startsWith("npm warn")).join("\n");
}

/** The database URL as the CLI should get it: the local server speaks no TLS. */
export function remoteFlag(url: string): string {
  const parsed = new URL(url);
  if (["127.0.0.1", "localhost", "::1"].includes(parsed.hostname)) {
    parsed.searchParams.set("sslmode", "disable");
  }
  return `--remote=${parsed.href}`;
}
