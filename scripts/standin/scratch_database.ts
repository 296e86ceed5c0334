/**
 * A fresh, migrated database for tests, type generation and lints: a throwaway embedded
 * Postgres on a free port, or a new database inside the server `STANDIN_ADMIN_DB_URL` names
 * (a `supabase_admin` URL, as `deno task test` hands its tests).
 */
import postgres from "postgres";
import {
  ADMIN_ROLE,
  applyMigrations,
  applySupabaseShape,
  asRole,
  freePort,
  PRODUCT_ROLE,
  type RunningPostgres,
  startPostgres,
} from "./postgres.ts";

/** The harness's superuser URL; product code reads SUPABASE_DB_URL (as `postgres`) only. */
export const ADMIN_URL_VARIABLE = "STANDIN_ADMIN_DB_URL";

export interface ScratchDatabase {
  /** As `postgres`, what the product connects as. */
  url: string;
  /** As `supabase_admin`, for the harness. */
  adminUrl: string;
  dispose(): Promise<void>;
}

export interface ScratchOptions {
  log?: (line: string) => void;
  /**
   * `fsync` on for a throwaway cluster (default off: losing it in a crash loses nothing). A
   * database inside an existing server has that server's setting.
   */
  durable?: boolean;
}

export async function createScratchDatabase(
  options: ScratchOptions = {},
): Promise<ScratchDatabase> {
  const serverAdminUrl = Deno.env.get(ADMIN_URL_VARIABLE);
  if (serverAdminUrl) return await createDatabaseIn(serverAdminUrl);

  const dataDir = await Deno.makeTempDir({ prefix: "supabase-agent-pg-" });
  let running: RunningPostgres;
  try {
    running = await startPostgres({
      dataDir,
      port: freePort(),
      log: options.log,
      durable: options.durable ?? false,
    });
  } catch (error) {
    await Deno.remove(dataDir, { recursive: true });
    throw error;
  }
  return {
    url: running.url,
    adminUrl: running.adminUrl,
    dispose: async () => {
      await running.stop();
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

async function createDatabaseIn(serverAdminUrl: string): Promise<ScratchDatabase> {
  const name = `scratch_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = postgres(serverAdminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const adminUrl = new URL(asRole(serverAdminUrl, ADMIN_ROLE));
  adminUrl.pathname = `/${name}`;
  const url = asRole(adminUrl.href, PRODUCT_ROLE);
  try {
    await applySupabaseShape(adminUrl.href);
    await applyMigrations(url);
  } catch (error) {
    await admin.unsafe(`drop database ${name} with (force)`);
    await admin.end();
    throw error;
  }
  return {
    url,
    adminUrl: adminUrl.href,
    dispose: async () => {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}
