/**
 * What the stand-in reads of its processes in Linux's /proc: a process's parent, group, start
 * and CPU time (`/proc/<pid>/stat`). Elsewhere there is no /proc, and what needs it is skipped.
 */

export interface ProcessStat {
  pid: number;
  /** R, S, D, Z (a zombie: exited, not yet reaped), … */
  state: string;
  ppid: number;
  /** The process group. */
  pgrp: number;
  /** Clock ticks after boot; with the pid it names one process, as pids are handed out again. */
  startTime: string;
  /** utime + stime, in clock ticks. */
  cpuTicks: number;
}

export function hasProcfs(): boolean {
  try {
    Deno.statSync("/proc/self/stat");
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The process's `stat` line; undefined once it is gone. */
export function readStat(pid: number): ProcessStat | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  // The fields after the command name, which is in parentheses and may hold anything; they are
  // numbered from 3 in proc(5).
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return {
    pid,
    state: fields[0],
    ppid: Number(fields[1]),
    pgrp: Number(fields[2]),
    cpuTicks: Number(fields[11]) + Number(fields[12]),
    startTime: fields[19],
  };
}
