/**
 * Preloaded (`deno run --preload`) into every local function worker, never deployed. The Edge
 * Runtime ends a worker by dispatching `beforeunload` in its isolate and closing it a moment
 * later; a local worker is a Deno process, so the stand-in sends SIGTERM and this turns it into
 * the same event, then exits after the grace the gateway chose. The function's own code keeps
 * listening only for `beforeunload`, as on Supabase.
 *
 * The stand-in holds the worker's stdin open while it runs (function_workers.ts): when the pipe
 * ends without a SIGTERM, the stand-in died without unloading its workers, and the worker ends
 * the same way on its own rather than outlive it.
 */
const GRACE_VARIABLE = "STANDIN_UNLOAD_GRACE_MS";
const graceMs = Number(Deno.env.get(GRACE_VARIABLE) ?? "1000");
// The function sees the environment Supabase gives it, not the stand-in's knob.
Deno.env.delete(GRACE_VARIABLE);

let unloading = false;
function unload(why: string): void {
  if (unloading) return;
  unloading = true;
  // Marks the moment in the worker's log, as the runtime's own log does.
  console.error(`[runtime] beforeunload: the worker is shutting down (${why})`);
  dispatchEvent(new Event("beforeunload"));
  setTimeout(() => Deno.exit(0), Number.isFinite(graceMs) ? graceMs : 1000);
}

Deno.addSignalListener("SIGTERM", () => unload("SIGTERM"));
// Not before `load`: Deno runs a preload's pending work to its end before the main module.
addEventListener("load", async () => {
  // Nothing is ever written: the read only ends when the stand-in's end of the pipe closes.
  for await (const _ of Deno.stdin.readable) continue;
  unload("the stand-in that started it is gone");
});
