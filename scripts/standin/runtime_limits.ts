/**
 * The Edge Runtime's limits, as the local gateway applies them to each function's workers
 * (worker_pool.ts). The figures live here and in `deno task dev`'s flags, never in config.toml:
 * config.toml describes the project, these describe Supabase's runtime.
 *
 * Documented by Supabase: 256 MB memory, wall clock 150 s (Free) / 400 s (paid), 2 s of CPU.
 * Read from the runtime's source (`crates/base/src/worker/supervisor/strategy_per_worker.rs`):
 * one worker serves many requests, its wall clock runs from boot and it is retired (no new
 * requests) at half of it; CPU is counted over the worker's life, the soft limit retires it and
 * the hard one terminates it without `beforeunload`. The soft 1 s / hard 2 s pair is the CLI's
 * local runtime's (`internal/functions/serve/templates/main.ts`), the only published values.
 */

export const PLANS = ["free", "paid"] as const;
export type Plan = typeof PLANS[number];

export interface RuntimeLimits {
  plan: Plan;
  /** From boot; retired at half, `beforeunload` and closed at the full figure. */
  wallClockMs: number;
  /**
   * CPU time of the worker's process since its first request: the soft limit retires it, the
   * hard one kills it (SIGKILL, no `beforeunload`). `null`: CPU not limited, which only the
   * latency benchmarks may choose, and must say so.
   */
  cpu: { softMs: number; hardMs: number } | null;
  /** Resident memory of the worker's process; over it, the worker is killed. */
  memoryBytes: number;
  /** How often a worker's CPU, memory and age are read (from /proc). */
  pollMs: number;
  /** How long a worker has between `beforeunload` and its end. */
  unloadGraceMs: number;
}

const MB = 1024 * 1024;

export const PLAN_LIMITS: Record<Plan, RuntimeLimits> = {
  free: {
    plan: "free",
    wallClockMs: 150_000,
    cpu: { softMs: 1_000, hardMs: 2_000 },
    memoryBytes: 256 * MB,
    pollMs: 100,
    unloadGraceMs: 1_000,
  },
  paid: {
    plan: "paid",
    wallClockMs: 400_000,
    cpu: { softMs: 1_000, hardMs: 2_000 },
    memoryBytes: 256 * MB,
    pollMs: 100,
    unloadGraceMs: 1_000,
  },
};

/** What a stack or gateway is started with: a plan's limits, stricter figures, or none. */
export type LimitsChoice =
  | "off"
  | {
    plan: Plan;
    wallClockMs?: number;
    cpu?: { softMs: number; hardMs: number } | "off";
    memoryBytes?: number;
    pollMs?: number;
    unloadGraceMs?: number;
  };

export class RuntimeLimitsError extends Error {
  override name = "RuntimeLimitsError";
}

/**
 * The limits for `choice`: the plan's figures with any overrides, which may only be stricter
 * (a test that needs a worker retired sooner may say so; none may be laxer than Supabase).
 * `cpu: "off"` lifts the CPU limits, for latency benchmarks only. Returns null for "off"
 * (`--no-limits`, for debugging).
 */
export function resolveLimits(choice: LimitsChoice): RuntimeLimits | null {
  if (choice === "off") return null;
  const plan = PLAN_LIMITS[choice.plan];
  if (!plan) {
    throw new RuntimeLimitsError(`unknown plan "${choice.plan}": one of ${PLANS.join(", ")}`);
  }
  const stricter = (name: string, value: number | undefined, limit: number): number => {
    if (value === undefined) return limit;
    if (!(value > 0) || value > limit) {
      throw new RuntimeLimitsError(
        `${name} ${value} is not in (0, ${limit}], the ${choice.plan} plan's figure: ` +
          `limits may only be made stricter`,
      );
    }
    return value;
  };
  let cpu: RuntimeLimits["cpu"];
  if (choice.cpu === "off") cpu = null;
  else {
    const softMs = stricter("cpu.softMs", choice.cpu?.softMs, plan.cpu!.softMs);
    const hardMs = stricter("cpu.hardMs", choice.cpu?.hardMs, plan.cpu!.hardMs);
    if (softMs > hardMs) {
      throw new RuntimeLimitsError(`cpu.softMs ${softMs} is above cpu.hardMs ${hardMs}`);
    }
    cpu = { softMs, hardMs };
  }
  return {
    plan: choice.plan,
    wallClockMs: stricter("wallClockMs", choice.wallClockMs, plan.wallClockMs),
    cpu,
    memoryBytes: stricter("memoryBytes", choice.memoryBytes, plan.memoryBytes),
    // Polling and the grace are the stand-in's own knobs, not Supabase figures.
    pollMs: choice.pollMs ?? plan.pollMs,
    unloadGraceMs: choice.unloadGraceMs ?? plan.unloadGraceMs,
  };
}

/** One line for logs and benchmark headers, e.g. `free plan: wall clock 150 s, CPU 1/2 s, …`. */
export function describeLimits(limits: RuntimeLimits | null): string {
  if (!limits) return "no runtime limits (--no-limits: debugging only)";
  const cpu = limits.cpu
    ? `CPU soft ${limits.cpu.softMs / 1000} s / hard ${limits.cpu.hardMs / 1000} s`
    : "CPU NOT limited";
  return `${limits.plan} plan: wall clock ${limits.wallClockMs / 1000} s (retired at half), ` +
    `${cpu}, memory ${Math.round(limits.memoryBytes / MB)} MB`;
}
