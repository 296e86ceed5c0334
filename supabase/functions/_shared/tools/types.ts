/**
 * What a tool is and what it is given, in a file of its own: every tool, the registry list and
 * both surfaces import these types, and none of them imports the others for it.
 */
import type { z } from "zod";
import type { JwtClaims, Tx } from "../db/client.ts";
import type { ResolvedPermission } from "../permissions.ts";

/** MCP's behaviour hints, in the registry's own type so the registry stays protocol-free. */
export interface ToolAnnotations {
  /** The tool changes nothing. */
  readOnlyHint: boolean;
  /** When it changes something, the change may destroy data. */
  destructiveHint: boolean;
  /** Calling it twice with the same arguments has no further effect. */
  idempotentHint: boolean;
  /** It reaches beyond this project (the Internet, a third-party service). */
  openWorldHint: boolean;
}

/** The hints of a tool that only reads what its caller may read: most of them. */
export const READ_ONLY_ANNOTATIONS: Readonly<ToolAnnotations> = Object.freeze({
  readOnlyHint: true,
  destructiveHint: false,
  idempotentHint: true,
  openWorldHint: false,
});

/** Who is calling: the verified user behind the access token. */
export interface ToolCaller {
  id: string;
  claims: JwtClaims;
  /**
   * The caller's current access token, where a surface holds one (the agent's socket, renewed
   * by `auth` frames): for a tool that calls this project's own functions as him. Never stored.
   */
  accessToken?: () => string | undefined;
}

/** Runs `work` in one transaction as the caller, so RLS decides what the tool sees. */
export type CallerDb = <T>(work: (tx: Tx) => Promise<T>) => Promise<T>;

/** Reports progress of a long call; resolves once the report is on its way. */
export type ProgressReporter = (
  progress: number,
  total?: number,
  message?: string,
  /** The phase the tool is in, and a partial result it chose to show early (agent only). */
  detail?: ProgressDetail,
) => Promise<void>;

export interface ProgressDetail {
  stage?: string;
  data?: unknown;
}

export interface ToolContext {
  caller: ToolCaller;
  db: CallerDb;
  progress: ProgressReporter;
  /** Aborts when the caller cancels the call or goes away. */
  signal: AbortSignal;
  /** The caller's grant for this tool, constraints included (e.g. `workflow_ids`). */
  permission: ResolvedPermission;
}

/** A failure the caller should see, with a stable code. */
export interface ToolError {
  code: string;
  message: string;
}

export type ToolResult<Output> =
  | { ok: true; output: Output }
  | { ok: false; error: ToolError };

/**
 * One tool. `input` and `output` are zod objects: the surfaces validate arguments with
 * `input` before `run` is called and publish both as JSON Schema.
 */
export interface ToolDefinition<
  Input extends z.ZodObject = z.ZodObject,
  Output extends z.ZodObject = z.ZodObject,
> {
  /** Also the name clients call it by; `^[a-z][a-z0-9_]{0,63}$`, like permissions.tool. */
  name: string;
  title: string;
  description: string;
  input: Input;
  output: Output;
  annotations: ToolAnnotations;
  /** The `permissions.tool` a caller needs (a row for it, or for '*'). */
  permission: string;
  /**
   * The input's JSON Schema when the tool was not defined in zod (a connected MCP server's
   * tool: its own schema, handed on as is); `input` then only checks for an object.
   */
  inputJsonSchema?: Record<string, unknown>;
  /**
   * `server`: what the tool calls meters the call and writes its usage row itself (this
   * project's own `mcp` function, connected as a server), so the caller's surface does neither
   * once the call has gone out.
   */
  meteredBy?: "server";
  // Method syntax on purpose: it lets a concrete tool stand in for `ToolDefinition`.
  run(input: z.output<Input>, context: ToolContext): Promise<ToolResult<z.output<Output>>>;
  /**
   * Begins a call while the surface's policy is still deciding on it, so that the tool's own
   * round trips (a connected server's initialize handshake) overlap the policy's (metering).
   * Only for a grant that needs no human (`auto`). Nothing may act before `run`: a call the
   * policy refuses is `discard`ed and must leave no trace but what a connection costs.
   */
  prepare?(input: z.output<Input>, context: ToolContext): PreparedCall<z.output<Output>>;
}

/** A call begun by `ToolDefinition.prepare`: exactly one of `run` or `discard` follows. */
export interface PreparedCall<Output> {
  /** The policy admitted the call: what `run` would answer. */
  run(): Promise<ToolResult<Output>>;
  /** The policy refused it, or it was cancelled: ends what was begun, quietly. */
  discard(): void;
}
