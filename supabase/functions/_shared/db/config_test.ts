import assert from "node:assert/strict";
import {
  DatabaseConfigError,
  databaseConfigFromEnv,
  POOL_SIZES,
  poolSizeFromEnv,
} from "./config.ts";

const env = (values: Record<string, string>) => ({ get: (name: string) => values[name] });
const DIRECT = "postgresql://postgres:pw@db.example.supabase.co:5432/postgres";
const POOLER = "postgresql://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres";

Deno.test("DATABASE_URL is preferred, and marks the transaction pooler", () => {
  assert.deepEqual(databaseConfigFromEnv(env({ SUPABASE_DB_URL: DIRECT, DATABASE_URL: POOLER })), {
    url: POOLER,
    transactionPooler: true,
  });
});

Deno.test("without DATABASE_URL the direct SUPABASE_DB_URL is used, prepared statements on", () => {
  assert.deepEqual(databaseConfigFromEnv(env({ SUPABASE_DB_URL: DIRECT, DATABASE_URL: " " })), {
    url: DIRECT,
    transactionPooler: false,
  });
});

Deno.test("no database URL at all is a coded error", () => {
  assert.throws(
    () => databaseConfigFromEnv(env({})),
    (error) => error instanceof DatabaseConfigError && error.code === "database_url_missing",
  );
});

Deno.test("pool sizes: the defaults per isolate, each overridable by its own variable", () => {
  assert.deepEqual(
    Object.values(POOL_SIZES).map((pool) => poolSizeFromEnv(pool, env({}))),
    [3, 1, 2, 2, 2],
  );
  assert.equal(poolSizeFromEnv(POOL_SIZES.mcp, env({ MCP_DB_POOL_SIZE: " 4 " })), 4);
  assert.equal(poolSizeFromEnv(POOL_SIZES.history, env({ MCP_DB_POOL_SIZE: "4" })), 2);
  for (const raw of ["0", "-1", "2.5", "many"]) {
    assert.throws(
      () => poolSizeFromEnv(POOL_SIZES.agent, env({ AGENT_DB_POOL_SIZE: raw })),
      (error) => error instanceof DatabaseConfigError && error.code === "invalid_pool_size",
      raw,
    );
  }
});
