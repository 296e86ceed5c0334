/**
 * `deno task db [--port N] [--reset]`: the embedded Postgres alone, shaped like Supabase's
 * and migrated, until Ctrl-C. `deno task dev` starts it too, with the rest of the stack.
 */
import { parseArgs } from "node:util";
import { DEFAULT_DB_PORT, LocalDatabaseError, startPostgres } from "./standin/postgres.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: String(Deno.env.get("DB_PORT") ?? DEFAULT_DB_PORT) },
    reset: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
  },
});

try {
  const started = performance.now();
  const db = await startPostgres({
    port: Number(values.port),
    reset: values.reset,
    seed: true,
    log: values.verbose ? (line) => console.error(line) : undefined,
    verbose: values.verbose,
  });
  console.log(
    `Postgres 17 ${db.created ? "created" : "started"} in ${
      ((performance.now() - started) / 1000).toFixed(1)
    } s (data in ${db.dataDir})\n  SUPABASE_DB_URL=${db.url}\nCtrl-C stops it.`,
  );
  // It runs until a signal: shutdown.ts then stops it and ends this process.
} catch (error) {
  if (!(error instanceof LocalDatabaseError)) throw error;
  console.error(`error[${error.code}]: ${error.message}`);
  Deno.exit(1);
}
