import assert from "node:assert/strict";
import { connectFunctionDatabase } from "../../../tests/support/database.ts";
import { InlineSql, inlineSql, sqlLiteral } from "./inline_sql.ts";

Deno.test("sqlLiteral writes each kind of value", () => {
  assert.equal(sqlLiteral(null), "NULL");
  assert.equal(sqlLiteral(undefined), "NULL");
  assert.equal(sqlLiteral(true), "true");
  assert.equal(sqlLiteral(false), "false");
  assert.equal(sqlLiteral(42), "42");
  assert.equal(sqlLiteral(-1.5), "(-1.5)");
  assert.equal(sqlLiteral(12n), "12");
  assert.equal(sqlLiteral(-12n), "(-12)");
  assert.equal(sqlLiteral("it's"), "E'it''s'");
  assert.equal(sqlLiteral("a\\b"), "E'a\\\\b'");
});

Deno.test("sqlLiteral refuses what Postgres cannot hold", () => {
  assert.throws(() => sqlLiteral(Number.NaN), TypeError);
  assert.throws(() => sqlLiteral(Number.POSITIVE_INFINITY), TypeError);
  assert.throws(() => sqlLiteral("a\u0000b"), TypeError);
  assert.throws(() => sqlLiteral({} as never), TypeError);
});

Deno.test("inlineSql writes values as literals and fragments as they are", () => {
  const table = new InlineSql("public.t");
  const statement = inlineSql`select * from ${table} where a = ${"x'y"} and b = ${-2}`;
  assert.equal(statement.text, "select * from public.t where a = E'x''y' and b = (-2)");
});

Deno.test("every string comes back from Postgres exactly as it went in", async () => {
  const sql = connectFunctionDatabase(1);
  // Quotes, backslashes in every position, escapes E'' would interpret, comment and statement
  // breakers, multi-byte and astral characters, control characters.
  const hostile = [
    "",
    "'",
    "\\",
    "\\'",
    "'\\",
    "\\\\'';",
    "'; drop table public.chat_history; --",
    "\\x41\\101\\u0041\\n\\t\\b",
    "$$ $tag$ /* -- */",
    "é ü 漢字 😀 \u{10FFFF}",
    "\n\r\t\u0001\u001f\u007f",
    JSON.stringify({ role: "authenticated", quote: "it's", slash: "a\\b", nested: ['"'] }),
  ];
  try {
    for (const value of hostile) {
      const [row] = await sql.unsafe(
        inlineSql`select ${value}::text as value, ${value}::text = ${value} as same`.text,
      );
      assert.equal(row.value, value);
      assert.equal(row.same, true);
    }
    const [numbers] = await sql.unsafe(
      inlineSql`select ${-0.125}::float8 as a, 3 - ${-2} as b, ${1e21}::numeric as c`.text,
    );
    assert.deepEqual({ ...numbers }, { a: -0.125, b: 5, c: "1000000000000000000000" });
  } finally {
    await sql.end();
  }
});
