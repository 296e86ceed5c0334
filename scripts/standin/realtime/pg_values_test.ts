import assert from "node:assert/strict";
import { testDatabaseUrl } from "../../../supabase/tests/support/database.ts";
import { Catalog, openRealtimePool } from "./catalog.ts";
import { parseArrayLiteral, toJsonValue } from "./pg_values.ts";

/** SQL expressions whose text form must convert to exactly what to_jsonb gives. */
const EXPRESSIONS = [
  "42::int2",
  "2147483647::int4",
  "9007199254740991::int8",
  "(-5)::int8",
  "1.5::float8",
  "0.1::float4",
  "'NaN'::float8",
  "'-Infinity'::float4",
  "12.340::numeric",
  "'NaN'::numeric",
  "true",
  "false",
  `'{"a":[1,2,{"b":null}]}'::jsonb`,
  `'[1, "x"]'::json`,
  "'2026-01-02 03:04:05.678+00'::timestamptz",
  "'2026-01-02 03:04:05+05:30'::timestamptz",
  "'infinity'::timestamptz",
  "'2026-01-02 03:04:05.5'::timestamp",
  "'2026-01-02'::date",
  "'03:04:05'::time",
  "'1 day 02:00:00'::interval",
  "'some text'::text",
  "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
  "'assistant'::public.message_role",
  "'\\x0102ff'::bytea",
  "to_tsvector('english', 'the quick foxes')",
  "array[1, 2, null]::int4[]",
  `array['a b', 'c"d', null, 'NULL', 'e\\f', '']::text[]`,
  "'{{1,2},{3,4}}'::int4[]",
  "array[true, false]",
  `array['{"a":1}'::jsonb, 'null'::jsonb]`,
  "array['2026-01-01 00:00:00+00'::timestamptz]",
  "array['user', 'tool']::public.message_role[]",
  "'{}'::text[]",
  "'[0:1]={7,8}'::int4[]",
];

Deno.test("pg values: every text form converts to what to_jsonb gives", async () => {
  const pool = openRealtimePool(testDatabaseUrl(), 1);
  try {
    const catalog = new Catalog(pool, "supabase_realtime");
    for (const expression of EXPRESSIONS) {
      const [row] = await pool.unsafe<{ text: string; json: unknown; type: number }[]>(
        // format('%s') prints with the type's output function, as pgoutput does (a cast to
        // text would print booleans as true/false instead of t/f).
        `select format('%s', ${expression}) as text, to_jsonb(${expression}) as json,
                pg_typeof(${expression})::oid::int4 as type`,
      );
      await catalog.loadTypes([row.type]);
      const converted = toJsonValue(row.text, catalog.type(row.type), (oid) => catalog.type(oid));
      assert.deepEqual(converted, row.json, `${expression} (text ${row.text})`);
    }
  } finally {
    await pool.end();
  }
});

Deno.test("pg values: integers past 2^53 stay exact as text", () => {
  const int8 = {
    oid: 20,
    name: "int8",
    category: "N",
    elementOid: 0,
    delimiter: ",",
    enumLabels: [],
  };
  assert.equal(toJsonValue("9007199254740993", int8, () => undefined), "9007199254740993");
  assert.equal(toJsonValue("9007199254740991", int8, () => undefined), 9007199254740991);
});

Deno.test("pg values: array literals parse with quoting, NULLs, nesting and bounds", () => {
  assert.deepEqual(parseArrayLiteral('{a,"b,c",NULL,"NULL","x\\"y"}'), [
    "a",
    "b,c",
    null,
    "NULL",
    'x"y',
  ]);
  assert.deepEqual(parseArrayLiteral("{{1,2},{3,4}}"), [["1", "2"], ["3", "4"]]);
  assert.deepEqual(parseArrayLiteral("[2:3]={5,6}"), ["5", "6"]);
  assert.deepEqual(parseArrayLiteral("{(1,2);(3,4)}", ";"), ["(1,2)", "(3,4)"]);
  assert.deepEqual(parseArrayLiteral("{}"), []);
  assert.equal(parseArrayLiteral("not an array"), undefined);
  assert.equal(parseArrayLiteral("{1,2"), undefined);
});
