import assert from "node:assert/strict";
import type { TableInfo } from "./catalog.ts";
import { compileFilter, type FilterContext, MAX_IN_VALUES, parseFilter } from "./filters.ts";
import type { PgType } from "./pg_values.ts";

Deno.test("filters: parse col=op.value, in-lists, quoting and AND-ed conditions", () => {
  assert.deepEqual(parseFilter("id=eq.1"), {
    ok: true,
    conditions: [{ column: "id", operator: "eq", values: ["1"] }],
  });
  assert.deepEqual(parseFilter('name=in.(a,"b,c", d )'), {
    ok: true,
    conditions: [{ column: "name", operator: "in", values: ["a", "b,c", "d"] }],
  });
  assert.deepEqual(parseFilter('seq=gte.2,title=eq."x,y"'), {
    ok: true,
    conditions: [
      { column: "seq", operator: "gte", values: ["2"] },
      { column: "title", operator: "eq", values: ["x,y"] },
    ],
  });
  // Only the first "=" separates the column: the value may contain "=" and ".".
  assert.deepEqual(parseFilter("title=eq.a=b.c"), {
    ok: true,
    conditions: [{ column: "title", operator: "eq", values: ["a=b.c"] }],
  });
});

Deno.test("filters: unsupported operators and malformed filters are refused", () => {
  for (
    const filter of [
      "id",
      "id=1",
      "id=like.%a%",
      "id=in.1,2",
      "id=in.()",
      `id=in.(${Array.from({ length: MAX_IN_VALUES + 1 }, (_, i) => i).join(",")})`,
    ]
  ) {
    const result = parseFilter(filter);
    assert.equal(result.ok, false, filter);
    assert.equal(!result.ok && result.code, "invalid_filter", filter);
  }
});

const types: Record<string, PgType> = {
  int4: { oid: 23, name: "int4", category: "N", elementOid: 0, delimiter: ",", enumLabels: [] },
  text: { oid: 25, name: "text", category: "S", elementOid: 0, delimiter: ",", enumLabels: [] },
  timestamptz: {
    oid: 1184,
    name: "timestamptz",
    category: "D",
    elementOid: 0,
    delimiter: ",",
    enumLabels: [],
  },
  mood: {
    oid: 9000,
    name: "mood",
    category: "E",
    elementOid: 0,
    delimiter: ",",
    enumLabels: ["sad", "ok", "happy"],
  },
};

const table: TableInfo = {
  oid: 1,
  schema: "public",
  table: "t",
  primaryKey: ["n"],
  rlsEnabled: false,
  columns: [
    { name: "n", typeOid: 23, typeName: "int4", sqlType: "integer" },
    { name: "label", typeOid: 25, typeName: "text", sqlType: "text" },
    { name: "at", typeOid: 1184, typeName: "timestamptz", sqlType: "timestamp with time zone" },
    { name: "mood", typeOid: 9000, typeName: "mood", sqlType: "mood" },
  ],
};

/** Stands in for Postgres's cast: integers are canonicalized, anything else passes. */
const context: FilterContext = {
  table,
  type: (oid) => Object.values(types).find((type) => type.oid === oid),
  castToText(value, sqlType) {
    if (sqlType !== "integer") return Promise.resolve({ ok: true, text: value });
    return Promise.resolve(
      /^\s*[+-]?\d+\s*$/.test(value)
        ? { ok: true, text: String(Number(value)) }
        : { ok: false, message: `invalid input syntax for type integer: "${value}"` },
    );
  },
};

async function matcher(filter: string) {
  const parsed = parseFilter(filter);
  if (!parsed.ok) throw new Error(parsed.message);
  const compiled = await compileFilter(parsed.conditions, context);
  if (!compiled.ok) throw new Error(compiled.message);
  return (row: Record<string, string | null | undefined>) =>
    compiled.filter.matches(new Map(Object.entries(row)));
}

Deno.test("filters: numbers compare numerically, not as text", async () => {
  const gt = await matcher("n=gt.9");
  assert.equal(gt({ n: "10" }), true);
  assert.equal(gt({ n: "9" }), false);
  const eq = await matcher("n=eq.+07");
  assert.equal(eq({ n: "7" }), true);
  const within = await matcher("n=in.(1,3)");
  assert.deepEqual(["1", "2", "3"].map((n) => within({ n })), [true, false, true]);
  const neq = await matcher("n=neq.1");
  assert.deepEqual(["1", "2"].map((n) => neq({ n })), [false, true]);
  assert.equal((await matcher("n=lt.2"))({ n: "2" }), false);
  assert.equal((await matcher("n=lte.2"))({ n: "2" }), true);
  assert.equal((await matcher("n=gte.2"))({ n: "1" }), false);
});

Deno.test("filters: enums follow their declared order; timestamps compare as instants", async () => {
  const happierThanSad = await matcher("mood=gt.sad");
  assert.deepEqual(["sad", "ok", "happy"].map((mood) => happierThanSad({ mood })), [
    false,
    true,
    true,
  ]);
  const after = await matcher("at=gt.2026-01-01 10:00:00+00");
  assert.equal(after({ at: "2026-01-01 10:00:00.5+00" }), true);
  assert.equal(after({ at: "2026-01-01 09:59:59.999999+00" }), false);
});

Deno.test("filters: NULL and absent columns never match; conditions are AND-ed", async () => {
  const neq = await matcher("label=neq.x");
  assert.equal(neq({ label: null }), false);
  assert.equal(neq({}), false); // e.g. a DELETE whose old row only has the key
  assert.equal(neq({ label: undefined }), false); // unchanged TOAST value: unknown
  const both = await matcher("n=gte.2,label=eq.b");
  assert.equal(both({ n: "3", label: "b" }), true);
  assert.equal(both({ n: "1", label: "b" }), false);
  assert.equal(both({ n: "3", label: "c" }), false);
});

Deno.test("filters: unknown columns and values the type refuses fail compilation", async () => {
  for (const filter of ["missing=eq.1", "n=eq.abc", "n=in.(1,x)"]) {
    const parsed = parseFilter(filter);
    assert.ok(parsed.ok, filter);
    const compiled = await compileFilter(parsed.conditions, context);
    assert.equal(compiled.ok, false, filter);
  }
});
