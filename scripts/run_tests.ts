/**
 * `deno task test [deno test args…]`: every test, against a fresh migrated database.
 *
 * Starts a throwaway embedded Postgres on a free port (or creates a fresh database in the
 * server STANDIN_ADMIN_DB_URL names), runs `deno test` over supabase/, scripts/ and web/ (the
 * browser tests start their own stack) with SUPABASE_DB_URL pointing at it as `postgres` (no
 * superuser, as on hosted) and STANDIN_ADMIN_DB_URL as `supabase_admin` for the harness, and
 * ends with one summary line `N passed, N failed`.
 */
import { join } from "node:path";
import { ADMIN_URL_VARIABLE, createScratchDatabase } from "./standin/scratch_database.ts";
import { PROJECT_ROOT } from "./standin/supabase_cli.ts";

const ARTIFACTS = join(PROJECT_ROOT, "artifacts");
const JUNIT_FILE = join(ARTIFACTS, "junit.xml");
await Deno.mkdir(ARTIFACTS, { recursive: true });
await Deno.remove(JUNIT_FILE).catch(() => {});

const started = performance.now();
const db = await createScratchDatabase();
console.log(`test database ready in ${((performance.now() - started) / 1000).toFixed(1)} s`);

let code: number;
try {
  const testArgs = Deno.args.length > 0 ? Deno.args : ["supabase", "scripts", "web"];
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check=remote", `--junit-path=${JUNIT_FILE}`, ...testArgs],
    cwd: PROJECT_ROOT,
    env: { SUPABASE_DB_URL: db.url, [ADMIN_URL_VARIABLE]: db.adminUrl },
    stdin: "null",
  }).spawn();
  const cleanUp = () => child.kill("SIGTERM");
  Deno.addSignalListener("SIGINT", cleanUp);
  code = (await child.status).code;
  Deno.removeSignalListener("SIGINT", cleanUp);
} finally {
  await db.dispose();
}

const counts = await countResults(JUNIT_FILE);
console.log(`${counts.passed} passed, ${counts.failed} failed`);
if (counts.passed + counts.failed === 0) {
  console.error("no test ran");
  Deno.exit(1);
}
Deno.exit(code !== 0 || counts.failed > 0 ? 1 : 0);

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
