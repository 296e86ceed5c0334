import assert from "node:assert/strict";
import postgres from "postgres";
import { isDatabaseUnavailable } from "./unavailable.ts";

Deno.test("isDatabaseUnavailable: a refused connection is an outage, a statement's error is not", async () => {
  // Port 1 is closed: the error is the one a stopped Postgres gives.
  const sql = postgres("postgres://postgres:x@127.0.0.1:1/postgres", {
    max: 1,
    onnotice: () => {},
  });
  try {
    const error = await sql`select 1`.then(() => undefined, (e) => e);
    assert.ok(isDatabaseUnavailable(error), String(error));
    assert.ok(isDatabaseUnavailable(new Error("wrapped", { cause: error })));
  } finally {
    await sql.end({ timeout: 0 });
  }
  const unique = Object.assign(Object.create(postgres.PostgresError.prototype), { code: "23505" });
  assert.ok(!isDatabaseUnavailable(unique));
  const shutdown = Object.assign(Object.create(postgres.PostgresError.prototype), {
    code: "57P01",
  });
  assert.ok(isDatabaseUnavailable(shutdown));
  assert.ok(!isDatabaseUnavailable(new TypeError("x is undefined")));
  assert.ok(!isDatabaseUnavailable(undefined));
});
