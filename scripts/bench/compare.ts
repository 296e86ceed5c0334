/**
 * Reading `deno task bench` output back and comparing two sets of runs (bench_compare.ts). The
 * output is read, not a file: an older commit's bench knows no other format than its tables.
 */

export interface BenchRow {
  /** "Suite / benchmark name": the suite's heading without its parenthesised note. */
  key: string;
  value: number;
  unit: string;
  /** Which way is better: from the target (">=" is higher) or else the unit ("/s" is higher). */
  better: "lower" | "higher";
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export interface ComparedRow {
  key: string;
  unit: string;
  better: "lower" | "higher";
  base: Spread;
  head: Spread;
  /** How much worse the head's median is, in percent of the base's (negative: better). */
  worsePct: number;
  /**
   * "regression": median worse by more than 10% and outside the base's min–max; "improvement":
   * the same the other way; else "same".
   */
  verdict: "regression" | "improvement" | "same";
}

const REGRESSION_PCT = 10;

export function parseBenchOutput(output: string): BenchRow[] {
  const rows: BenchRow[] = [];
  let suite: string | undefined;
  for (const line of output.split("\n")) {
    if (line.startsWith("### ")) {
      suite = line.slice(4).replace(/\s*\(.*\)\s*$/, "").trim();
      continue;
    }
    if (!suite || !line.startsWith("| ")) continue;
    const cells = line.split("|").slice(1, -1).map((cell) => cell.trim());
    if (cells.length < 4 || cells[0] === "benchmark" || /^-+$/.test(cells[0])) continue;
    const [name, result, , target] = cells;
    const match = /^(-?[\d,]+(?:\.\d+)?)\s*(.*)$/.exec(result);
    if (!match) continue;
    const unit = match[2];
    rows.push({
      key: `${suite} / ${name}`,
      value: Number(match[1].replaceAll(",", "")),
      unit,
      better: target.startsWith(">") || (!target.startsWith("<") && unit.includes("/s"))
        ? "higher"
        : "lower",
    });
  }
  return rows;
}

/** Rows present in every run of both sides, compared by median. */
export function compareRuns(base: BenchRow[][], head: BenchRow[][]): ComparedRow[] {
  const keys = base[0]?.map((row) => row.key) ?? [];
  const compared: ComparedRow[] = [];
  for (const key of keys) {
    const baseValues = valuesOf(base, key);
    const headValues = valuesOf(head, key);
    if (!baseValues || !headValues) continue;
    const { unit, better } = base[0].find((row) => row.key === key)!;
    const b = spread(baseValues);
    const h = spread(headValues);
    const sign = better === "lower" ? 1 : -1;
    const worsePct = b.median === 0
      ? (h.median === 0 ? 0 : sign * Infinity)
      : sign * (h.median - b.median) / Math.abs(b.median) * 100;
    const outsideWorse = better === "lower" ? h.median > b.max : h.median < b.min;
    const outsideBetter = better === "lower" ? h.median < b.min : h.median > b.max;
    const verdict = worsePct > REGRESSION_PCT && outsideWorse
      ? "regression"
      : worsePct < -REGRESSION_PCT && outsideBetter
      ? "improvement"
      : "same";
    compared.push({ key, unit, better, base: b, head: h, worsePct, verdict });
  }
  return compared;
}

export function renderComparison(rows: ComparedRow[]): string {
  const format = (s: Spread) => `${num(s.median)} (${num(s.min)}–${num(s.max)})`;
  return [
    "| benchmark | unit | base median (min–max) | head median (min–max) | worse by | verdict |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows.map((row) =>
      `| ${row.key} | ${row.unit} (${row.better} is better) | ${format(row.base)} | ${
        format(row.head)
      } | ${row.worsePct.toFixed(1)}% | ${row.verdict} |`
    ),
  ].join("\n");
}

function valuesOf(runs: BenchRow[][], key: string): number[] | undefined {
  const values: number[] = [];
  for (const run of runs) {
    const row = run.find((candidate) => candidate.key === key);
    if (!row) return undefined;
    values.push(row.value);
  }
  return values;
}

function spread(values: number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1
    ? sorted[middle]
    : (sorted[middle - 1] + sorted[middle]) / 2;
  return { median, min: sorted[0], max: sorted.at(-1)! };
}

function num(value: number): string {
  return value >= 100 ? Math.round(value).toLocaleString("en-US") : value.toFixed(2);
}
