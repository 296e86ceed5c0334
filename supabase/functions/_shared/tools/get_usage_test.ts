import assert from "node:assert/strict";
import { dayRange } from "./get_usage.ts";

const NOW = new Date("2026-03-10T23:30:00Z");

Deno.test("the default range is the last 7 UTC days, today included", () => {
  assert.deepEqual(dayRange(undefined, undefined, NOW), {
    ok: true,
    from: "2026-03-04",
    to: "2026-03-10",
  });
});

Deno.test("from defaults to 6 days before an explicit to; from alone ends today", () => {
  assert.deepEqual(dayRange(undefined, "2026-03-01", NOW), {
    ok: true,
    from: "2026-02-23",
    to: "2026-03-01",
  });
  assert.deepEqual(dayRange("2026-01-01", undefined, NOW), {
    ok: true,
    from: "2026-01-01",
    to: "2026-03-10",
  });
});

Deno.test("a single day is a valid range; a reversed or over-long one is an error", () => {
  assert.deepEqual(dayRange("2026-03-05", "2026-03-05", NOW), {
    ok: true,
    from: "2026-03-05",
    to: "2026-03-05",
  });
  const reversed = dayRange("2026-03-06", "2026-03-05", NOW);
  assert.equal(reversed.ok ? "" : reversed.error.code, "invalid_range");
  const tooLong = dayRange("2024-01-01", "2026-03-05", NOW);
  assert.equal(tooLong.ok ? "" : tooLong.error.code, "range_too_long");
  assert.ok(dayRange("2025-03-10", "2026-03-10", NOW).ok, "366 days is allowed");
});
