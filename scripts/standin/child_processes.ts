/**
 * What the stand-in's servers (Postgres, PgBouncer, the function workers) share as child
 * processes: their output as lines, a signal that may find them already gone, and the OS user
 * they run as when we are root.
 */

/** Calls `onLine` with each non-blank line of `stream`, until it ends. */
export async function pipeLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) if (line.trim()) onLine(line);
  }
  if (buffered.trim()) onLine(buffered);
}

/** Sends `signal` unless the process has exited already (then there is nothing to signal). */
export function signalChild(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
  }
}

/** The uid and gid of an OS user from /etc/passwd; undefined when there is none. */
export async function osUser(name: string): Promise<{ uid: number; gid: number } | undefined> {
  const passwd = await Deno.readTextFile("/etc/passwd");
  const entry = passwd.split("\n").map((line) => line.split(":")).find((f) => f[0] === name);
  return entry && { uid: Number(entry[2]), gid: Number(entry[3]) };
}
