/**
 * `deno task test:mutations`: proves the database tests guard the schema. For every RLS
 * policy, for the row locks of consume_quota, consume_tool_calls, consume_request and agent_start_turn's
 * concurrent-turn count, for consume_quota's cost reservation and agent_reserve_step's per-step
 * re-check, for agent_start_chat's busy check and queue order and the one-running-turn index, for the
 * MCP token refresh lease (mcp_take_refresh_lease, mcp_store_refreshed), and for every grant an API role holds in `public` (one per object and role, as the
 * migrations grant them), it makes a copy of the migrated database with that one piece removed
 * and runs the database tests against it. Each
 * such mutant must make at least one test fail; a surviving mutant fails this check.
 * `--only=<text>` runs just the mutants whose label contains the text.
 *
 * The privilege-matrix test is left out of those runs: it would kill every grant mutant by
 * comparing tables, while the point is that some test does, as that role, what the code does.
 */
import postgres from "postgres";
import { ADMIN_ROLE, databaseUrl, freePort, startPostgres } from "./standin/postgres.ts";
import { ADMIN_URL_VARIABLE } from "./standin/scratch_database.ts";
import { PROJECT_ROOT } from "./standin/supabase_cli.ts";

const DB_TESTS = "supabase/tests/";
/**
 * Left out of mutant runs: the privilege matrix (see above), and tests of other layers that
 * share the folder but not the schema's safeguards (they would only slow each run down).
 */
const NOT_RUN_ON_MUTANTS = new Set([
  "privileges_test.ts",
  "architecture_test.ts",
  "auth_matrix_test.ts",
  "auth_modes_stack_test.ts",
  "database_outage_stack_test.ts",
  "edge_api_lint_test.ts",
  "function_size_test.ts",
  "import_map_contract_test.ts",
  "runtime_limits_stack_test.ts",
]);
/** Mutants run two at a time: each is one small database and one `deno test` process. */
const CONCURRENCY = 2;

const dataDir = await Deno.makeTempDir({ prefix: "supabase-agent-mutants-" });
const cluster = await startPostgres({ dataDir, port: freePort(), durable: false });
const admin = postgres(databaseUrl(cluster.port, "template1", ADMIN_ROLE), {
  max: 1,
  onnotice: () => {},
});

try {
  // `--only=<text>`: just the mutants whose label contains it (checking a new guard by hand).
  const only = Deno.args.find((arg) => arg.startsWith("--only="))?.slice("--only=".length);
  const mutants = (await listMutants(postgres(cluster.adminUrl, { max: 1 })))
    .filter((mutant) => only === undefined || mutant.label.includes(only));
  const testFiles = await databaseTestFiles();
  let survivors = 0;
  let next = 0;
  const runMutants = async () => {
    while (next < mutants.length) {
      const index = next++;
      const failedTests = await runMutant(index, mutants[index], testFiles);
      if (failedTests.length === 0) survivors++;
      console.log(
        failedTests.length > 0
          ? `killed    ${mutants[index].label}\n            by: ${failedTests[0]}`
          : `SURVIVED  ${mutants[index].label}`,
      );
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, runMutants));
  console.log(`${mutants.length - survivors} of ${mutants.length} mutants killed`);
  if (survivors > 0) Deno.exitCode = 1;
} finally {
  await admin.end();
  await cluster.stop();
  await Deno.remove(dataDir, { recursive: true });
}
// Said outright: stopping the cluster runs the Postgres package's exit hook, which ended the
// process with 0 and so let a run with survivors pass CI.
Deno.exit(Deno.exitCode);

async function runMutant(index: number, mutant: Mutant, testFiles: string[]): Promise<string[]> {
  const name = `mutant_${index}`;
  await admin.unsafe(`create database ${name} owner postgres template postgres`);
  try {
    const url = databaseUrl(cluster.port, name);
    const adminUrl = databaseUrl(cluster.port, name, ADMIN_ROLE);
    const db = postgres(adminUrl, { max: 1, onnotice: () => {} });
    await db.unsafe(mutant.sql);
    await db.end();
    return await runDatabaseTests(url, adminUrl, testFiles);
  } finally {
    await admin.unsafe(`drop database ${name} with (force)`);
  }
}

interface Mutant {
  label: string;
  sql: string;
}

async function listMutants(sql: postgres.Sql): Promise<Mutant[]> {
  try {
    const policies = await sql`select tablename, policyname from pg_policies
                               where schemaname = 'public' order by tablename, policyname`;
    const mutants: Mutant[] = policies.map((p) => ({
      label: `drop policy "${p.policyname}"`,
      sql: `drop policy "${p.policyname}" on public.${p.tablename}`,
    }));
    const definitionOf = async (fn: string) =>
      (await sql`select pg_get_functiondef(${fn}::regprocedure) as definition`)[0]
        .definition as string;
    /** A mutant of a function: each pattern replaced, which must be there to replace. */
    const mutate = (label: string, definition: string, edits: [RegExp, string][]) => {
      let mutated = definition;
      for (const [pattern, replacement] of edits) {
        const next = mutated.replace(pattern, replacement);
        if (next === mutated) throw new Error(`no longer found for "${label}": ${pattern}`);
        mutated = next;
      }
      mutants.push({ label, sql: mutated });
    };
    const consume = await definitionOf("public.consume_quota(uuid, integer, numeric)");
    mutate("consume_quota without its row lock", consume, [[/\s+for update;/i, ";"]]);
    // A reservation's cost neither checked against the daily cost cap nor counted in the day.
    mutate("consume_quota without its cost reservation", consume, [
      [/\s+or v_limits\.day_cost_usd \+ p_cost_usd > v_limits\.daily_cost_cap_usd then/i, " then"],
      [/v_limits\.day_cost_usd := v_limits\.day_cost_usd \+ p_cost_usd;/i, ""],
    ]);
    // A turn's further LLM calls made whatever the user's limits say.
    mutate(
      "agent_reserve_step without its re-check",
      await definitionOf("public.agent_reserve_step(uuid, integer, integer)"),
      [[/if not v_quota\.allowed then/i, "if false then"]],
    );
    // Concurrent starts no longer count one after the other.
    mutate(
      "agent_start_turn without its concurrent-turn lock",
      await definitionOf(
        "public.agent_start_turn(uuid, uuid, text, jsonb, text, text, integer, integer, integer)",
      ),
      [[/where l\.user_id = v_user for update;/i, "where l.user_id = v_user;"]],
    );
    // Double-texting: a busy session starts a second turn, or a queued chat jumps the queue.
    const startChat = await definitionOf(
      "public.agent_start_chat(text, jsonb, uuid, uuid, text, jsonb, text, text, integer, " +
        "integer, integer)",
    );
    mutate("agent_start_chat without its busy check", startChat, [
      [
        /elsif v_busy\.turn_id is not null or v_head\.chat_id is not null then/i,
        "elsif false then",
      ],
    ]);
    mutate("agent_start_chat letting any queued chat start first", startChat, [
      [/or v_head\.chat_id is distinct from v_chat then/i, "then"],
    ]);
    mutants.push({
      label: "two running turns per session",
      sql: "drop index public.agent_turns_one_running_per_session",
    });
    // A parked turn no longer holds its session: a chat queues behind it, or starts beside it.
    mutate(
      "agent_session_busy_turn ignoring parked turns",
      await definitionOf("public.agent_session_busy_turn(uuid, uuid, integer)"),
      [[/\(t\.state = 'parked'\n\s+or /i, "(false or "]],
    );
    // The sweep takes a session whose turn's isolate stopped heartbeating as free: the queued
    // chat's start interrupts that turn instead of letting the sweep adopt it.
    mutate(
      "agent_sweep_queued_chats superseding turns of dead isolates",
      await definitionOf("public.agent_sweep_queued_chats(integer)"),
      [[
        /t\.state in \('running', 'parked'\)/i,
        "(t.state = 'parked' or (t.state = 'running' " +
        "and t.heartbeat_at > clock_timestamp() - interval '10 seconds'))",
      ]],
    );
    mutate(
      "consume_tool_calls without its row lock",
      await definitionOf("public.consume_tool_calls(uuid, integer)"),
      [[/\s+for update;/i, ";"]],
    );
    mutate(
      "consume_request without its row lock",
      await definitionOf("public.consume_request(uuid, text)"),
      [[/\s+for update;/i, ";"]],
    );
    // An isolate that lost a turn (taken over: a new epoch) keeps writing it.
    mutate(
      "agent_flush without its epoch check",
      await definitionOf("public.agent_flush(text, jsonb, jsonb, jsonb)"),
      [[/ and t\.epoch = x\.epoch/i, ""]],
    );
    // An answer committed while the park waited for the turn's row is left unseen: the turn
    // parks beside it until its wait expires.
    mutate(
      "agent_flush parking without the turn's row lock",
      await definitionOf("public.agent_flush(text, jsonb, jsonb, jsonb)"),
      [[/order by t\.id\n\s+for update;/i, "order by t.id;"]],
    );
    // A continued answer never counts as progress: under churn its turn runs out of
    // recoveries while its text grows.
    mutate(
      "agent_flush ignoring a continued answer's progress",
      await definitionOf("public.agent_flush(text, jsonb, jsonb, jsonb)"),
      [[/\n\s+or coalesce\(x\.progressed, false\)/i, ""]],
    );
    // Turns of live isolates are taken over.
    mutate(
      "agent_adopt_turns ignoring leases",
      await definitionOf("public.agent_adopt_turns(text, uuid, uuid, integer, integer)"),
      [[
        // Both looks: the candidates' and the re-check under the row lock.
        /i\.lease_expires_at > clock_timestamp\(\)\)\)\n\s+or \(t\.state = 'parked'/gi,
        "false))\n or (t.state = 'parked'",
      ]],
    );
    // Users who may no longer act pass: a deleted, banned or signed-out token acts on.
    mutate(
      "account_refusal that refuses nobody",
      await definitionOf("public.account_refusal(uuid, uuid)"),
      [
        [/then 'user_deleted'/i, "then null"],
        [/then 'user_banned'/i, "then null"],
        [/then 'session_ended'/i, "then null"],
      ],
    );
    // Two isolates refresh one MCP server's token at once (a rotating server then revokes the
    // grant), or one refreshes a token another already replaced, or a lost lease stores.
    const takeLease = await definitionOf(
      "public.mcp_take_refresh_lease(uuid, uuid, integer, integer)",
    );
    mutate("mcp_take_refresh_lease ignoring a live lease", takeLease, [
      [/\s+and \(lease_until is null or lease_until <= clock_timestamp\(\)\)/i, ""],
    ]);
    mutate("mcp_take_refresh_lease ignoring the version read", takeLease, [
      [/\s+and version = p_version/i, ""],
    ]);
    mutate(
      "mcp_store_refreshed without its holder check",
      await definitionOf(
        "public.mcp_store_refreshed(uuid, uuid, integer, bytea, timestamp with time zone)",
      ),
      [[/ and lease_holder = p_holder/i, ""]],
    );
    // Every privilege the migrations granted an API role, one object and role at a time.
    const grants = await sql<{ object: string; kind: string; grantee: string }[]>`
      select distinct format('%I.%I', n.nspname, c.relname) as object, 'table' as kind,
        g.rolname as grantee
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      cross join lateral aclexplode(c.relacl) a
      join pg_roles g on g.oid = a.grantee
      where n.nspname = 'public' and c.relkind in ('r', 'v', 'm', 'p', 'S')
        and g.rolname in ('anon', 'authenticated', 'service_role')
      union
      select distinct p.oid::regprocedure::text, 'function', g.rolname
      from pg_proc p
      join pg_namespace n on n.oid = p.pronamespace
      cross join lateral aclexplode(p.proacl) a
      join pg_roles g on g.oid = a.grantee
      where n.nspname = 'public' and g.rolname in ('anon', 'authenticated', 'service_role')
      order by 2, 1, 3`;
    for (const { object, kind, grantee } of grants) {
      const target = kind === "function" ? `function ${object}` : object;
      mutants.push({
        label: `revoke ${grantee}'s privileges on ${target}`,
        sql: `revoke all on ${target} from ${grantee}`,
      });
    }
    return mutants;
  } finally {
    await sql.end();
  }
}

/** Runs the database tests against `url` and returns the names of those that failed. */
async function runDatabaseTests(
  url: string,
  adminUrl: string,
  testFiles: string[],
): Promise<string[]> {
  const output = await new Deno.Command(Deno.execPath(), {
    // One failure kills the mutant: the rest of the run would only cost time.
    args: ["test", "-A", "--no-check", "--fail-fast", ...testFiles],
    cwd: PROJECT_ROOT,
    env: { SUPABASE_DB_URL: url, [ADMIN_URL_VARIABLE]: adminUrl, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "null",
  }).output();
  const report = new TextDecoder().decode(output.stdout);
  const failed = [...report.matchAll(/^(.+?) \.\.\. FAILED/gm)].map((m) => m[1]);
  if (!output.success && failed.length === 0) failed.push("(the test run itself failed)");
  return failed;
}

/** The database tests, but for those in `NOT_RUN_ON_MUTANTS`. */
async function databaseTestFiles(): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(`${PROJECT_ROOT}/${DB_TESTS}`)) {
    if (entry.isFile && entry.name.endsWith("_test.ts") && !NOT_RUN_ON_MUTANTS.has(entry.name)) {
      files.push(`${DB_TESTS}${entry.name}`);
    }
  }
  if (files.length === 0) throw new Error(`no database tests in ${DB_TESTS}`);
  return files.sort();
}
