/**
 * `deno task db:advisors`: Supabase's own security and performance lints
 * (`supabase db advisors`) on a fresh database migrated from supabase/migrations.
 * Fails on any warning or error; prints the informational findings too.
 */
import { createScratchDatabase } from "./standin/scratch_database.ts";
import { remoteFlag, runSupabaseCli } from "./standin/supabase_cli.ts";

const db = await createScratchDatabase();
let result;
try {
  result = await runSupabaseCli([
    "db",
    "advisors",
    remoteFlag(db.url),
    "--type",
    "all",
    "--level",
    "info",
    "--fail-on",
    "warn",
  ]);
} finally {
  await db.dispose();
}

const findings = parseFindings(result.stdout);
for (const finding of findings) {
  console.log(`${finding.level.padEnd(5)} ${finding.name}: ${finding.detail}`);
}
const serious = findings.filter((f) => f.level !== "INFO");
console.log(
  `${findings.length} findings, ${serious.length} at warn or above` +
    (findings.length > serious.length ? " (unused indexes on an empty database are expected)" : ""),
);
if (result.code !== 0 || serious.length > 0) {
  if (findings.length === 0) console.error(result.stderr || result.stdout);
  Deno.exit(1);
}

interface Finding {
  name: string;
  level: string;
  detail: string;
}

function parseFindings(stdout: string): Finding[] {
  const start = stdout.indexOf("[");
  if (start < 0) return [];
  return JSON.parse(stdout.slice(start)) as Finding[];
}
