/**
 * `deno task bench [--smoke] [--only=Database,History]`: every benchmark (or the named suites)
 * against a fresh migrated database. A full run appends its results to BENCHMARKS.md with the
 * machine and the date (a run of some suites says which); `--smoke` (what CI runs) only proves
 * the benchmarks still work and writes nothing.
 */
import { join } from "node:path";
import os from "node:os";
import { connect } from "../supabase/functions/_shared/db/client.ts";
import { POOL_SIZES, poolSizeFromEnv } from "../supabase/functions/_shared/db/config.ts";
import { agentBench } from "./bench/agent_bench.ts";
import { agentFlushBench } from "./bench/agent_flush_bench.ts";
import { crossTabBench } from "./bench/cross_tab_bench.ts";
import { databaseBench } from "./bench/database_bench.ts";
import { durableBench } from "./bench/durable_bench.ts";
import { historyBench } from "./bench/history_bench.ts";
import { hardeningBench } from "./bench/hardening_bench.ts";
import { mcpBench } from "./bench/mcp_bench.ts";
import { outageBench } from "./bench/outage_bench.ts";
import { hubBench } from "./bench/hub_bench.ts";
import { realtimeBench } from "./bench/realtime_bench.ts";
import type { BenchContext, BenchResult, PoolSizes } from "./bench/types.ts";
import { webBench } from "./bench/web_bench.ts";
import { createScratchDatabase } from "./standin/scratch_database.ts";
import { PROJECT_ROOT } from "./standin/supabase_cli.ts";

const smoke = Deno.args.includes("--smoke");
const only = Deno.args.find((arg) => arg.startsWith("--only="))?.slice("--only=".length)
  .split(",").map((name) => name.trim().toLowerCase()).filter((name) => name !== "");
/** The benchmark's own pool: set-up, and the Database suite's concurrent clients. */
const BENCH_POOL_SIZE = 40;
// The functions' pools as deployed, or as the environment overrides them (POOL_SIZES).
const pools = Object.fromEntries(
  Object.entries(POOL_SIZES).map(([name, pool]) => [name, poolSizeFromEnv(pool)]),
) as PoolSizes;
/**
 * The function suites run their worker straight, not through the local gateway: without the
 * Edge Runtime's limits (a latency run must not be cut by its CPU limit), which their header
 * says. CPU is still measured where it matters (the agent's per-token CPU and 2 s budget).
 */
const LIMITS_OFF = "Edge Runtime limits off: CPU measured, not enforced";
/** Each suite, the pools its numbers were measured with, and a note for its header. */
const suites: [string, (ctx: BenchContext) => Promise<BenchResult[]>, string?, string?][] = [
  ["Database", databaseBench, `the benchmark's own pool of ${BENCH_POOL_SIZE}`],
  [
    "History",
    historyBench,
    `history isolate ${pools.history} (HISTORY_DB_POOL_SIZE)`,
    LIMITS_OFF,
  ],
  ["MCP", mcpBench, `mcp isolate ${pools.mcp} (MCP_DB_POOL_SIZE)`, LIMITS_OFF],
  ["Hub", hubBench, `agent isolate ${pools.agent} (AGENT_DB_POOL_SIZE)`, LIMITS_OFF],
  ["Realtime", realtimeBench],
  [
    "Agent",
    async (ctx) => [...await agentFlushBench(ctx), ...await agentBench(ctx)],
    `agent isolate ${pools.agent} + flush ${pools.agentFlush} (AGENT_DB_POOL_SIZE, ` +
    `AGENT_FLUSH_DB_POOL_SIZE)`,
    LIMITS_OFF,
  ],
  [
    "Hardening",
    hardeningBench,
    `agent isolate ${pools.agent} + flush ${pools.agentFlush}`,
    LIMITS_OFF,
  ],
  [
    "Durable",
    durableBench,
    `agent isolate ${pools.agent} + flush ${pools.agentFlush}`,
    "recovery: limits off, workers killed by the benchmark; churn: Free limits, wall clock 20 s, " +
    "CPU soft 1 s / hard 2 s",
  ],
  ["Web", webBench],
  ["Cross-tab", crossTabBench, `agent isolate ${pools.agent} + flush ${pools.agentFlush}`],
  [
    "Outage",
    outageBench,
    "the local stack's own (functions' defaults)",
    "local stack, its own Postgres killed with SIGKILL; paid-plan Edge Runtime limits",
  ],
];
const chosen = suites.filter(([title]) => !only || only.includes(title.toLowerCase()));
if (only && chosen.length !== only.length) {
  console.error(`--only names suites of: ${suites.map(([title]) => title).join(", ")}`);
  Deno.exit(2);
}
const poolSummary = `Database pools per isolate: agent ${pools.agent} + flush ` +
  `${pools.agentFlush}, mcp ${pools.mcp}, history ${pools.history}; direct connections ` +
  `(SUPABASE_DB_URL, prepared statements on).`;
console.log(poolSummary);

// Durable, as the developer's database and hosted Postgres are: the Database and History
// numbers include the cost of flushing each commit to disk.
const db = await createScratchDatabase({ durable: true });
const sql = connect(db.url, { max: BENCH_POOL_SIZE });
const [{ fsync }] = await sql<{ fsync: string }[]>`show fsync`;
const durability = `Postgres fsync ${fsync} (every suite).`;
console.log(durability);
const sections: string[] = [];
try {
  for (const [title, suite, poolsUsed, note] of chosen) {
    const results = await suite({ sql, databaseUrl: db.url, pools, smoke });
    sections.push(renderSection(note ? `${title} (${note})` : title, results, poolsUsed));
    console.log(sections.at(-1));
  }
} finally {
  await sql.end();
  await db.dispose();
}

if (!smoke) {
  const file = join(PROJECT_ROOT, "BENCHMARKS.md");
  const existing = await Deno.readTextFile(file).catch(() => "# Benchmarks\n");
  const partial = only ? ` (only ${chosen.map(([title]) => title).join(", ")})` : "";
  const entry = `\n## ${new Date().toISOString().slice(0, 10)} — ${machine()}${partial}\n\n` +
    `${poolSummary} ${durability}\n\n${sections.join("\n")}`;
  await Deno.writeTextFile(file, existing.trimEnd() + "\n" + entry);
  console.log(`appended to ${file}`);
}

function renderSection(title: string, results: BenchResult[], poolsUsed?: string): string {
  const rows = results.map((r) =>
    `| ${r.name} | ${formatNumber(r.value)} ${r.unit} | ${r.detail ?? ""} | ${
      r.target ? `${r.target} ${r.pass ? "✅" : "❌"}` : ""
    } |`
  );
  return [
    `### ${title}${smoke ? " (smoke run, numbers not meaningful)" : ""}`,
    "",
    ...(poolsUsed ? [`Database pool: ${poolsUsed}.`, ""] : []),
    "| benchmark | result | detail | target |",
    "| --- | --- | --- | --- |",
    ...rows,
    "",
  ].join("\n");
}

function formatNumber(value: number): string {
  return value >= 100 ? Math.round(value).toLocaleString("en-US") : value.toFixed(2);
}

function machine(): string {
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  const memGiB = (os.totalmem() / 2 ** 30).toFixed(0);
  return `${cpu}, ${os.cpus().length} cores, ${memGiB} GiB, ${Deno.build.os}/${Deno.build.arch}, ` +
    `Deno ${Deno.version.deno}, PostgreSQL 17 (embedded, fsync off)`;
}
