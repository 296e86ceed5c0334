/**
 * `deno task test [--pooler] [deno test args…]`: every test, against a fresh migrated database.
 *
 * Starts a throwaway embedded Postgres on a free port (or creates a fresh database in the
 * server STANDIN_ADMIN_DB_URL names), runs `deno test` over supabase/, scripts/ and web/ (the
 * browser tests start their own stack) with SUPABASE_DB_URL pointing at it as `postgres` (no
 * superuser, as on hosted) and STANDIN_ADMIN_DB_URL as `supabase_admin` for the harness, and
 * ends with one summary line `N passed, N failed`.
 *
 * `--pooler` puts PgBouncer in transaction mode in front of that database and sets
 * DATABASE_URL to it, which the functions' pools prefer (set-up stays on SUPABASE_DB_URL);
 * without paths it runs the functions' tests, supabase/functions. Afterwards every server
 * connection of PgBouncer's pool is inspected: a session setting, prepared statement, LISTEN,
 * temporary table, cursor or advisory lock left behind by a transaction fails the run.
 */
import { join } from "node:path";
import {
  findLeftovers,
  PgBouncerError,
  type RunningPgBouncer,
  startPgBouncer,
} from "./standin/pgbouncer.ts";
import { ADMIN_URL_VARIABLE, createScratchDatabase } from "./standin/scratch_database.ts";
import { PROJECT_ROOT } from "./standin/supabase_cli.ts";

const pooler = Deno.args.includes("--pooler");
const args = Deno.args.filter((arg) => arg !== "--pooler");

const ARTIFACTS = join(PROJECT_ROOT, "artifacts");
// The pooler run keeps its own report, so a CI run keeps both.
const JUNIT_FILE = join(ARTIFACTS, pooler ? "junit-pooler.xml" : "junit.xml");
await Deno.mkdir(ARTIFACTS, { recursive: true });
await Deno.remove(JUNIT_FILE).catch(() => {});

const started = performance.now();
const db = await createScratchDatabase();
console.log(`test database ready in ${((performance.now() - started) / 1000).toFixed(1)} s`);

let code: number;
let leftovers: string[] = [];
let bouncer: RunningPgBouncer | undefined;
try {
  const env: Record<string, string> = {
    SUPABASE_DB_URL: db.url,
    [ADMIN_URL_VARIABLE]: db.adminUrl,
  };
  if (pooler) {
    bouncer = await startPgBouncer({ upstreamUrl: db.url, log: console.error });
    env.DATABASE_URL = bouncer.url;
    console.log(`PgBouncer (transaction mode, pool ${bouncer.poolSize}) at ${bouncer.url}`);
  }
  const defaultPaths = pooler ? ["supabase/functions"] : ["supabase", "scripts", "web"];
  const testArgs = args.length > 0 ? args : defaultPaths;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check=remote", `--junit-path=${JUNIT_FILE}`, ...testArgs],
    cwd: PROJECT_ROOT,
    env,
    stdin: "null",
  }).spawn();
  const cleanUp = () => child.kill("SIGTERM");
  Deno.addSignalListener("SIGINT", cleanUp);
  code = (await child.status).code;
  Deno.removeSignalListener("SIGINT", cleanUp);
  if (bouncer) leftovers = await findLeftovers(bouncer.url, bouncer.poolSize);
} catch (error) {
  if (!(error instanceof PgBouncerError)) throw error;
  console.error(`error[${error.code}]: ${error.message}`);
  code = 1;
} finally {
  await bouncer?.stop();
  await db.dispose();
}

if (bouncer) {
  console.log(
    leftovers.length === 0
      ? `PgBouncer: no server connection kept session state, prepared statements or LISTEN`
      : `PgBouncer: transactions left state on server connections:\n  ${leftovers.join("\n  ")}`,
  );
}
const counts = await countResults(JUNIT_FILE);
console.log(`${counts.passed} passed, ${counts.failed} failed`);
if (counts.passed + counts.failed === 0) {
  console.error("no test ran");
  Deno.exit(1);
}
Deno.exit(code !== 0 || counts.failed > 0 || leftovers.length > 0 ? 1 : 0);

async function countResults(path: string): Promise<{ passed: number; failed: number }> {
  const xml = await Deno.readTextFile(path).catch(() => "");
  let passed = 0;
  let failed = 0;
  for (const match of xml.matchAll(/<testcase\b[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const body = match[2] ?? "";
    if (/<(failure|error)\b/.test(body)) failed++;
    else if (!/<skipped\b/.test(body)) passed++;
  }
  return { passed, failed };
}
