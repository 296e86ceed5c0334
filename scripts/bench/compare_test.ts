import assert from "node:assert/strict";
import { compareRuns, parseBenchOutput } from "./compare.ts";

function output(p50: number, rate: string): string {
  return [
    "Database pools per isolate: agent 3 + flush 1",
    "### Agent (Edge Runtime limits off: CPU measured, not enforced)",
    "",
    "Database pool: agent isolate 3 + flush 1.",
    "",
    "| benchmark | result | detail | target |",
    "| --- | --- | --- | --- |",
    `| token latency p50 | ${p50} ms | 100 sessions |  |`,
    `| history append | ${rate} rows/s | batched | >= 20000 ✅ |`,
    "| first byte | 3.00 ms | no target |  |",
    "",
  ].join("\n");
}

Deno.test("bench output: each row by suite and name, thousands separators read, direction known", () => {
  const rows = parseBenchOutput(output(12.5, "34,986"));
  assert.deepEqual(rows, [
    { key: "Agent / token latency p50", value: 12.5, unit: "ms", better: "lower" },
    { key: "Agent / history append", value: 34_986, unit: "rows/s", better: "higher" },
    { key: "Agent / first byte", value: 3, unit: "ms", better: "lower" },
  ]);
});

Deno.test("A/B: a regression is a median worse by over 10% and outside the base's min–max", () => {
  const base = [output(10, "30,000"), output(11, "31,000"), output(12, "29,000")].map(
    parseBenchOutput,
  );
  const head = [output(14, "20,000"), output(13.5, "21,000"), output(11.8, "35,000")].map(
    parseBenchOutput,
  );
  const byKey = Object.fromEntries(compareRuns(base, head).map((row) => [row.key, row]));
  // 11 → 13.5 ms: 22.7% worse, above the base's max of 12.
  assert.equal(byKey["Agent / token latency p50"].verdict, "regression");
  assert.equal(byKey["Agent / token latency p50"].worsePct.toFixed(1), "22.7");
  // 30,000 → 21,000 rows/s: higher is better, so 30% worse, below the base's min.
  assert.equal(byKey["Agent / history append"].verdict, "regression");
  assert.equal(byKey["Agent / first byte"].verdict, "same");

  // Worse by more than 10% but inside the base's spread is noise, not a regression.
  const wide = [output(10, "30,000"), output(11, "30,000"), output(20, "30,000")].map(
    parseBenchOutput,
  );
  const within = compareRuns(wide, head).find((row) => row.key === "Agent / token latency p50");
  assert.equal(within?.verdict, "same");
  // And the other way round it is an improvement.
  const improved = compareRuns(head, base).find((row) => row.key === "Agent / token latency p50");
  assert.equal(improved?.verdict, "improvement");
});
