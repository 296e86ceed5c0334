/**
 * `deno task test:mutations`: proves the database tests guard the schema. For every RLS
 * policy, and for the row lock in consume_quota, it makes a copy of the migrated database
 * with that one safeguard removed and runs the database tests against it. Each such
 * mutant must make at least one test fail; a surviving mutant fails this check.
 */
import postgres from "postgres";
import { ADMIN_ROLE, databaseUrl, freePort, startPostgres } from "./standin/postgres.ts";
import { ADMIN_URL_VARIABLE } from "./standin/scratch_database.ts";
import { PROJECT_ROOT } from "./standin/supabase_cli.ts";

const DB_TESTS = "supabase/tests/";

const dataDir = await Deno.makeTempDir({ prefix: "supabase-agent-mutants-" });
const cluster = await startPostgres({ dataDir, port: freePort(), durable: false });
const admin = postgres(databaseUrl(cluster.port, "template1", ADMIN_ROLE), {
  max: 1,
  onnotice: () => {},
});

try {
  const mutants = await listMutants(postgres(cluster.adminUrl, { max: 1 }));
  let survivors = 0;
  for (const [index, mutant] of mutants.entries()) {
    const name = `mutant_${index}`;
    await admin.unsafe(`create database ${name} owner postgres template postgres`);
    const url = databaseUrl(cluster.port, name);
    const adminUrl = databaseUrl(cluster.port, name, ADMIN_ROLE);
    const db = postgres(adminUrl, { max: 1, onnotice: () => {} });
    await db.unsafe(mutant.sql);
    await db.end();
    const failedTests = await runDatabaseTests(url, adminUrl);
    if (failedTests.length === 0) survivors++;
    console.log(
      failedTests.length > 0
        ? `killed    ${mutant.label}\n            by: ${failedTests.slice(0, 2).join("; ")}${
          failedTests.length > 2 ? ` and ${failedTests.length - 2} more` : ""
        }`
        : `SURVIVED  ${mutant.label}`,
    );
    await admin.unsafe(`drop database ${name} with (force)`);
  }
  console.log(`${mutants.length - survivors} of ${mutants.length} mutants killed`);
  if (survivors > 0) Deno.exitCode = 1;
} finally {
  await admin.end();
  await cluster.stop();
  await Deno.remove(dataDir, { recursive: true });
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
    const [{ definition }] = await sql`
      select pg_get_functiondef('public.consume_quota(uuid, integer)'::regprocedure) as definition`;
    const unlocked = (definition as string).replace(/\s+for update;/i, ";");
    if (unlocked === definition) throw new Error("consume_quota no longer takes a row lock");
    mutants.push({ label: "consume_quota without its row lock", sql: unlocked });
    return mutants;
  } finally {
    await sql.end();
  }
}

/** Runs the database tests against `url` and returns the names of those that failed. */
async function runDatabaseTests(url: string, adminUrl: string): Promise<string[]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check", DB_TESTS],
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
