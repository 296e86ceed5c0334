/**
 * `deno task dev [--port N] [--reset]`: the whole local stack on embedded defaults, a
 * stand-in for `supabase start` on machines without Docker. Ctrl-C stops everything; a
 * second run reuses the data.
 */
import { parseArgs } from "node:util";
import { DEFAULT_DB_PORT, LocalDatabaseError, startPostgres } from "./local/postgres.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "db-port": { type: "string", default: Deno.env.get("DB_PORT") ?? String(DEFAULT_DB_PORT) },
    reset: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
  },
});

console.log(
  "Local stand-in for `supabase start`: same migrations, same wire protocols, no Docker.",
);
const started = performance.now();
let db;
try {
  db = await startPostgres({
    port: Number(values["db-port"]),
    reset: values.reset,
    seed: true,
    log: values.verbose ? (line) => console.error(line) : undefined,
  });
} catch (error) {
  if (!(error instanceof LocalDatabaseError)) throw error;
  console.error(`error[${error.code}]: ${error.message}`);
  Deno.exit(1);
}

console.log(`
  Postgres 17   ${db.url}   (${db.created ? "created and seeded" : "reused"}: ${db.dataDir})
  Demo users    alice@example.com / password123, bob@example.com / password123

Ready in ${((performance.now() - started) / 1000).toFixed(1)} s. Ctrl-C stops everything.`);

await new Promise<void>((resolve) => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, resolve);
});
console.log("\nstopping…");
await db.stop();
