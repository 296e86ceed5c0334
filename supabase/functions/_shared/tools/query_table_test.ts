/**
 * query_table's identifier allow-list, without a database: whatever the arguments say, the
 * SQL holds only allow-listed identifiers, and values only as $n parameters.
 */
import assert from "node:assert/strict";
import {
  planQuery,
  QUERYABLE_TABLES,
  type QueryTableInput,
  queryTableTool,
} from "./query_table.ts";

function args(
  overrides: Omit<Partial<QueryTableInput>, "table"> & { table?: string },
): QueryTableInput {
  return { table: "chat_history", limit: 20, ...overrides } as QueryTableInput;
}

function rejected(input: QueryTableInput): string {
  const plan = planQuery(input);
  assert.equal(plan.ok, false, `expected a refusal, got ${JSON.stringify(plan)}`);
  return plan.ok ? "" : plan.error.code;
}

const INJECTIONS = [
  'content" from public.chat_history; drop table public.permissions; --',
  "content; select * from auth.users",
  "content--",
  "id, (select encrypted_password from auth.users limit 1)",
  "pg_sleep(10)",
  '"content"',
  "CONTENT",
  "content ",
  "user_id)/*",
  "constructor",
  "__proto__",
  "toString",
];

Deno.test("a plain query selects the readable columns, newest first, limit as a parameter", () => {
  const plan = planQuery(args({ table: "chat_sessions" }));
  assert.ok(plan.ok);
  assert.equal(
    plan.text,
    'select "id", "user_id", "title", "created_at", "updated_at" from public."chat_sessions" ' +
      'order by "updated_at" desc limit $1',
  );
  assert.deepEqual(plan.params, [20]);
  assert.deepEqual(plan.columns, ["id", "user_id", "title", "created_at", "updated_at"]);
});

Deno.test("filters become $n parameters, null becomes is null, order and limit follow", () => {
  const plan = planQuery(args({
    columns: ["seq", "content", "seq"],
    filters: { session_id: "x' or '1'='1", role: "user", tool_call_id: null, seq: 3 },
    order_by: [{ column: "seq", direction: "desc" }, { column: "created_at", direction: "asc" }],
    limit: 100,
  }));
  assert.ok(plan.ok);
  assert.equal(
    plan.text,
    'select "seq", "content" from public."chat_history" ' +
      'where "session_id" = $1 and "role" = $2 and "tool_call_id" is null and "seq" = $3 ' +
      'order by "seq" desc, "created_at" asc limit $4',
  );
  assert.deepEqual(plan.params, ["x' or '1'='1", "user", 3, 100]);
});

Deno.test("injection attempts in column names are unknown columns", () => {
  for (const attempt of INJECTIONS) {
    assert.equal(rejected(args({ columns: [attempt] })), "unknown_column", attempt);
  }
});

Deno.test("injection attempts in filter names are unknown columns", () => {
  for (const attempt of INJECTIONS) {
    assert.equal(rejected(args({ filters: { [attempt]: "x" } })), "unknown_column", attempt);
  }
});

Deno.test("injection attempts in order_by are unknown columns", () => {
  for (const attempt of INJECTIONS) {
    assert.equal(
      rejected(args({ order_by: [{ column: attempt, direction: "asc" }] })),
      "unknown_column",
      attempt,
    );
  }
});

Deno.test("a direction other than asc/desc never reaches the SQL", () => {
  const plan = planQuery(args({
    order_by: [{ column: "seq", direction: "desc; drop table x" as "desc" }],
  }));
  assert.ok(plan.ok);
  assert.match(plan.text, /order by "seq" asc limit/);
  assert.equal(
    queryTableTool.input.safeParse({
      table: "chat_history",
      order_by: [{ column: "seq", direction: "desc; drop table x" }],
    }).success,
    false,
  );
});

Deno.test("tables outside the allow-list are refused, by the schema and by the planner", () => {
  const attempts = [
    "auth.users",
    "users",
    "chat_history; drop table permissions",
    'chat_history" --',
    "user_limits",
    "agent_turns",
    "default_permissions",
    "constructor",
    "__proto__",
  ];
  for (const table of attempts) {
    assert.equal(rejected(args({ table })), "unknown_table", table);
    assert.equal(queryTableTool.input.safeParse({ table }).success, false, table);
  }
  assert.deepEqual(QUERYABLE_TABLES, [
    "chat_sessions",
    "chat_history",
    "usage_metrics",
    "permissions",
  ]);
});

Deno.test("a column of another table is unknown here", () => {
  assert.equal(rejected(args({ table: "chat_sessions", columns: ["content"] })), "unknown_column");
  assert.equal(rejected(args({ table: "permissions", filters: { seq: 1 } })), "unknown_column");
});

Deno.test("json columns can be read but not filtered or sorted on", () => {
  assert.ok(planQuery(args({ columns: ["tool_calls"] })).ok);
  assert.equal(rejected(args({ filters: { tool_calls: "[]" } })), "column_not_comparable");
  assert.equal(
    rejected(
      args({ table: "permissions", order_by: [{ column: "constraints", direction: "asc" }] }),
    ),
    "column_not_comparable",
  );
});

Deno.test("the search vector and unlisted columns are not readable", () => {
  assert.equal(rejected(args({ columns: ["content_search"] })), "unknown_column");
  assert.equal(rejected(args({ table: "chat_sessions", columns: ["*"] })), "unknown_column");
});

Deno.test("limit outside 1..100 is refused by the schema and the planner", () => {
  for (const limit of [0, 101, 1.5, -1]) {
    assert.equal(queryTableTool.input.safeParse({ table: "chat_history", limit }).success, false);
    assert.equal(rejected(args({ limit })), "invalid_limit", String(limit));
  }
  const parsed = queryTableTool.input.parse({ table: "chat_history" });
  assert.equal(parsed.limit, 20);
});

Deno.test("a NUL character in a filter value is refused as a bad value, not sent to Postgres", () => {
  const plan = planQuery({
    table: "chat_history",
    filters: { content: "before\u0000after" },
    limit: 20,
  });
  assert.equal(plan.ok, false);
  if (!plan.ok) assert.equal(plan.error.code, "invalid_filter_value");
});
