/**
 * `deno task bench:compare <base> [<head>] [--runs=3] [--only=Agent,MCP]`: an A/B of two commits
 * on this machine. Each commit is checked out into a throwaway worktree (nothing of the working
 * tree is used, so commit first), and `deno task bench` runs there `--runs` times per commit,
 * interleaved (base, head, head, base, …) so that a busy spell of the machine, or being second,
 * falls on both. The
 * report compares each benchmark's median: a regression is a median worse by more than 10% and
 * outside the base's min–max (the rule the issues use). Runs take what a full `deno task bench`
 * takes, times two, times `--runs`: this is a by-hand tool, not a CI step.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { PROJECT_ROOT } from "./standin/supabase_cli.ts";
import { type BenchRow, compareRuns, parseBenchOutput, renderComparison } from "./bench/compare.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: { runs: { type: "string", default: "3" }, only: { type: "string" } },
});
const [base, head = "HEAD"] = positionals;
const runs = Number(values.runs);
if (!base || !Number.isInteger(runs) || runs < 1) {
  console.error("usage: deno task bench:compare <base> [<head>] [--runs=3] [--only=Suite,…]");
  Deno.exit(2);
}

const scratch = await Deno.makeTempDir({ prefix: "bench-compare-" });
// Run as root, Postgres runs as the `postgres` system user, which must reach the worktrees'
// binaries: a temporary directory is private to its owner.
await Deno.chmod(scratch, 0o755);
const sides = [
  { label: "base", rev: await resolve(base), dir: join(scratch, "base") },
  { label: "head", rev: await resolve(head), dir: join(scratch, "head") },
];
const results: Record<string, BenchRow[][]> = { base: [], head: [] };
try {
  for (const side of sides) {
    await git(["worktree", "add", "--detach", side.dir, side.rev]);
    await run(side.dir, ["task", "setup"]);
  }
  for (let round = 1; round <= runs; round++) {
    // ABBA order: whichever side runs second in a round (a warmer machine, a busier one) swaps.
    for (const side of round % 2 === 1 ? sides : [...sides].reverse()) {
      console.error(`run ${round} of ${runs}: ${side.label} (${side.rev.slice(0, 8)})`);
      const args = ["task", "bench", ...(values.only ? [`--only=${values.only}`] : [])];
      results[side.label].push(parseBenchOutput(await run(side.dir, args)));
    }
  }
} finally {
  for (const side of sides) {
    await git(["worktree", "remove", "--force", side.dir]).catch(() => {});
  }
  await Deno.remove(scratch, { recursive: true }).catch(() => {});
}

const rows = compareRuns(results.base, results.head);
console.log(
  `A/B of ${sides[0].rev.slice(0, 8)} (base) and ${sides[1].rev.slice(0, 8)} (head), ` +
    `${runs} runs each, interleaved${values.only ? `, only ${values.only}` : ""}\n`,
);
console.log(renderComparison(rows));
const regressions = rows.filter((row) => row.verdict === "regression");
console.log(`\n${regressions.length} regression(s) of ${rows.length} benchmarks compared`);
if (regressions.length > 0) Deno.exitCode = 1;

async function resolve(rev: string): Promise<string> {
  return (await git(["rev-parse", "--verify", `${rev}^{commit}`])).trim();
}

async function git(args: string[]): Promise<string> {
  const output = await new Deno.Command("git", { args, cwd: PROJECT_ROOT, stderr: "inherit" })
    .output();
  if (!output.success) throw new Error(`git ${args.join(" ")} failed`);
  return new TextDecoder().decode(output.stdout);
}

/** Runs deno in `cwd`; its output is shown as it comes and returned. */
async function run(cwd: string, args: string[]): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const chunks: string[] = [];
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) chunks.push(decoder.decode(chunk, { stream: true }));
  const status = await child.status;
  if (!status.success) throw new Error(`deno ${args.join(" ")} failed in ${cwd}`);
  return chunks.join("");
}
