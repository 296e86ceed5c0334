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

/** A file of /proc/<pid>/; undefined once the process is gone. */
export function readProcFile(pid: number, name: string): string | undefined {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/${name}`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    // Reaped between the open and the read: ESRCH, which Deno raises as a plain Error.
    if (error instanceof Error && error.message.startsWith("No such process (os error 3)")) {
      return undefined;
    }
    throw error;
  }
}

/** The process's `stat` line; undefined once it is gone. */
export function readStat(pid: number): ProcessStat | undefined {
  const text = readProcFile(pid, "stat");
  if (text === undefined) return undefined;
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
