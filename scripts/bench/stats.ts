/** Latency statistics for benchmarks. */
export function percentile(sortedMs: number[], p: number): number {
  if (sortedMs.length === 0) return NaN;
  const index = Math.min(sortedMs.length - 1, Math.ceil((p / 100) * sortedMs.length) - 1);
  return sortedMs[Math.max(0, index)];
}

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  perSecond: number;
}

/** Runs `operation` from `concurrency` workers until `total` calls are done. */
export async function measure(
  total: number,
  concurrency: number,
  operation: () => Promise<unknown>,
): Promise<LatencySummary> {
  const latencies: number[] = [];
  let started = 0;
  const begin = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (started < total) {
      started++;
      const t0 = performance.now();
      await operation();
      latencies.push(performance.now() - t0);
    }
  }));
  const elapsedS = (performance.now() - begin) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    count: latencies.length,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    perSecond: latencies.length / elapsedS,
  };
}
