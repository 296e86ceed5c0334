/**
 * A fresh, migrated database for tests, type generation and lints: a throwaway embedded
 * Postgres on a free port, or a new database inside the server SUPABASE_DB_URL names.
 */
import postgres from "postgres";
import {
  applyMigrations,
  applySupabaseShape,
  freePort,
  type RunningPostgres,
  startPostgres,
} from "./postgres.ts";

export interface ScratchDatabase {
  url: string;
  dispose(): Promise<void>;
}

export async function createScratchDatabase(
  options: { log?: (line: string) => void } = {},
): Promise<ScratchDatabase> {
  const serverUrl = Deno.env.get("SUPABASE_DB_URL");
  if (serverUrl) return await createDatabaseIn(serverUrl);

  const dataDir = await Deno.makeTempDir({ prefix: "supabase-agent-pg-" });
  let running: RunningPostgres;
  try {
    running = await startPostgres({ dataDir, port: freePort(), log: options.log });
  } catch (error) {
    await Deno.remove(dataDir, { recursive: true });
    throw error;
  }
  return {
    url: running.url,
    dispose: async () => {
      await running.stop();
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

async function createDatabaseIn(serverUrl: string): Promise<ScratchDatabase> {
  const name = `scratch_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  try {
    await applySupabaseShape(url.href);
    await applyMigrations(url.href);
  } catch (error) {
    await admin.unsafe(`drop database ${name} with (force)`);
    await admin.end();
    throw error;
  }
  return {
    url: url.href,
    dispose: async () => {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}
