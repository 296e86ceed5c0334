/**
 * `deno task dev [--api-port N] [--db-port N] [--reset] [--verbose]`: the whole local stack on
 * embedded defaults, a stand-in for `supabase start` on machines without Docker. Ctrl-C stops
 * everything; a second run reuses the data.
 */
import { parseArgs } from "node:util";
import { LocalDatabaseError } from "./local/postgres.ts";
import { startStack } from "./local/stack.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "api-port": { type: "string", default: Deno.env.get("API_PORT") ?? "54321" },
    "db-port": { type: "string", default: Deno.env.get("DB_PORT") ?? "54322" },
    reset: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
  },
});

console.log(
  "Local stand-in for `supabase start`: same migrations, same wire protocols, no Docker.",
);
const started = performance.now();
let stack;
try {
  stack = await startStack({
    apiPort: Number(values["api-port"]),
    dbPort: Number(values["db-port"]),
    reset: values.reset,
    log: (line) => {
      if (values.verbose || !line.includes(" LOG: ")) console.error(line);
    },
  });
} catch (error) {
  if (!(error instanceof LocalDatabaseError)) throw error;
  console.error(`error[${error.code}]: ${error.message}`);
  Deno.exit(1);
}

const functions = [...stack.workers.keys()].map((name) => `${stack.apiUrl}/functions/v1/${name}`);
console.log(`
  API URL          ${stack.apiUrl}
  Functions        ${functions.join("\n                   ") || "(none built yet)"}
  Auth             ${stack.apiUrl}/auth/v1
  Realtime         ${stack.apiUrl.replace("http", "ws")}/realtime/v1
  DB URL           ${stack.dbUrl}
  Publishable key  ${stack.publishableKey}
  Secret key       ${stack.secretKey}
  Demo users       alice@example.com / password123, bob@example.com / password123
${stack.notes.map((note) => `\n  ${note}`).join("")}

Ready in ${((performance.now() - started) / 1000).toFixed(1)} s. Ctrl-C stops everything.`);

await new Promise<void>((resolve) => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, resolve);
});
console.log("\nstopping…");
await stack.stop();
Deno.exit(0);
