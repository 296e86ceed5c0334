/**
 * Keeps the worker alive until `promise` settles: Supabase's `EdgeRuntime.waitUntil`, so work
 * that outlives its request (a turn, a usage row, spans, a tool refresh) is not cut when the
 * worker is retired. Elsewhere (tests, the local stand-in) the global is absent and the promise
 * just runs.
 */
export function waitUntil(promise: Promise<unknown>): void {
  (globalThis as EdgeRuntimeGlobal).EdgeRuntime?.waitUntil(promise);
}

interface EdgeRuntimeGlobal {
  EdgeRuntime?: { waitUntil(promise: Promise<unknown>): void };
}
