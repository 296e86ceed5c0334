/**
 * The agent's WebSocket protocol: every frame the client and the server exchange, as zod
 * schemas. This module is the one definition; the `agent` function, the web client and the
 * tests all import it. Frames are JSON text frames, one JSON object each, told apart by `type`.
 *
 * Client → server: chat, cancel, approve, resume, ping.
 * Server → client: ready (once, after the upgrade), pong, queued, and the frames of a turn: start,
 * step, token, tool_call, approval_required, progress, tool_result, response, complete, error;
 * and `notice`, a live word about a turn that is neither numbered nor stored.
 * Every turn frame carries the `turn_id` and a per-turn `seq` (1, 2, 3, … without gaps); a
 * turn ends with exactly one `complete` or `error` frame. An `error` without `turn_id`
 * answers one client frame (bad input, a refused chat) and ends nothing.
 *
 * Unknown fields are ignored, so either side may add fields without breaking the other.
 */
import { nestsDeeperThan, tooDeepMessage } from "./json_depth.ts";
import { z } from "zod";
import { fieldPath } from "./field_path.ts";

export { fieldPath };

/** Limits every connection has; the `ready` frame repeats them. */
export const PROTOCOL_LIMITS = {
  /** Larger frames are answered with `frame_too_large` and otherwise ignored. */
  maxFrameBytes: 256 * 1024,
  /** Frames over this many per second (sliding window) get `rate_limited`. */
  maxFramesPerSecond: 20,
} as const;

/** WebSocket close codes the server uses. */
export const CLOSE_CODES = {
  /** A newer connection of the same user pushed this one over the connection limit. */
  tooManyConnections: 4001,
  /** The server is shutting down; reconnect and `resume`. */
  goingAway: 1001,
  /** The access token expired and no `auth` frame renewed it; reconnect with a fresh one. */
  tokenExpired: 4002,
  /** A frame was over `maxFrameBytes` (after an `error` frame_too_large); do not resend it. */
  frameTooLarge: 1009,
  /**
   * The user was deleted or banned, or his session signed out (after an `error`
   * access_revoked naming which): do not reconnect with this session's tokens.
   */
  accessRevoked: 4003,
  /**
   * The database could not be reached while setting up the socket (after an `error`
   * db_unavailable): reconnect after a backoff; nothing was lost.
   */
  databaseUnavailable: 4004,
} as const;

/** The Sec-WebSocket-Protocol prefix that carries the access token (`jwt-<token>`). */
export const TOKEN_SUBPROTOCOL_PREFIX = "jwt-";

/** Stable `code`s of `error` frames. */
export const ERROR_CODES = [
  /** The frame is not JSON, has an unknown type or an invalid field (see `path`). */
  "bad_request",
  /** The frame is larger than `PROTOCOL_LIMITS.maxFrameBytes`. */
  "frame_too_large",
  /** Too many frames per second, or the user's token quota refused a chat (see `reason`). */
  "rate_limited",
  /** The chat names a model the server's catalogue (`public.models`) does not offer. */
  "model_not_allowed",
  /** No such turn or pending approval for this user. */
  "not_found",
  /** `cancel` for a turn that already ended. */
  "not_running",
  /** The chat's message id is already used by a different message. */
  "conflict",
  /** The turn was cancelled by the client. */
  "cancelled",
  /** The isolate running the turn died; the partial answer is stored. */
  "interrupted",
  /** The model still wanted tools after the last allowed step. */
  "step_limit",
  /** The LLM upstream failed; the suffix is `llm_client.ts`'s error code. */
  "llm_rate_limited",
  "llm_unavailable",
  "llm_insufficient_credits",
  "llm_stream_error",
  "llm_connection_lost",
  "llm_timeout",
  "llm_upstream_http_error",
  /** An `auth` frame's token is not valid, has expired, or is another user's (`ref: "auth"`). */
  "invalid_token",
  "expired_token",
  /**
   * The user was deleted or banned, or the token's session signed out (`reason`:
   * `user_deleted`, `user_banned`, `session_ended`); the socket closes with 4003.
   */
  "access_revoked",
  /**
   * The database cannot be reached right now: a chat that could not be stored (`ref` is its
   * id; send it again with the same id after `retry_after_ms`), or a socket's set-up (closed
   * with 4004).
   */
  "db_unavailable",
  /** Anything else; details are in the server's log. */
  "internal_error",
  /** The chat's session has a running turn (`running_turn_id`) and the policy is `reject`. */
  "session_busy",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** What the server puts in an `error` frame: its code is always one of `ERROR_CODES`. */
export type ServerError = Omit<ErrorFrame, "type" | "code"> & { code: ErrorCode };

export function isErrorCode(value: unknown): value is ErrorCode {
  return (ERROR_CODES as readonly unknown[]).includes(value);
}

const uuid = () => z.guid("must be a uuid");
const toolName = () => z.string().regex(/^[a-z][a-z0-9_]{0,63}$/, "must be a tool name");
const seq = () => z.int().min(1);

// ---------------------------------------------------------------------------------------------
// Client frames

export const ChatFrameSchema = z.object({
  type: z.literal("chat"),
  /** The client's id for the user message: a retried chat with the same id starts no turn. */
  id: uuid(),
  /** Absent: a new session. */
  session_id: uuid().optional(),
  content: z.string().min(1, "must not be empty").refine(
    (s) => !s.includes("\u0000"),
    "must not contain NUL characters",
  ),
  /** The model to ask; defaults to the server's LLM_MODEL. */
  model: z.string().min(1).max(200).optional(),
  /** Offer only these tools (those the user may use); absent: every tool he may use. */
  tools: z.array(toolName()).max(64).optional(),
  /**
   * What to do when the session already has a running turn: `reject` (the default) answers
   * `session_busy`; `enqueue` stores the chat (`queued`) and starts it when the turns ahead
   * of it have ended, in order.
   */
  policy: z.enum(["reject", "enqueue"]).optional(),
});

export const CancelFrameSchema = z.object({
  type: z.literal("cancel"),
  turn_id: uuid(),
});

export const ApproveFrameSchema = z.object({
  type: z.literal("approve"),
  call_id: z.string().min(1).max(200),
  decision: z.enum(["allow", "deny"]),
  /** "session": allow this tool for the rest of the session; "always": set it to auto. */
  remember: z.enum(["session", "always"]).optional(),
  /**
   * With `allow`: the arguments to run the call with instead of the model's (checked against
   * the tool's schema; a `bad_request` with `path` when they do not fit). The model's own
   * arguments are kept beside them.
   */
  args: z.record(z.string(), z.unknown()).optional(),
});

export const ResumeFrameSchema = z.object({
  type: z.literal("resume"),
  turn_id: uuid(),
  /** The last seq the client has; 0 for everything. */
  after_seq: z.int().min(0),
  /**
   * The highest `restart_step.epoch` the client has seen (0 or absent: none). Frames a client
   * got from a server that then died may have been replaced: with this the server knows which
   * of the client's frames still stand, and resends from the first that does not.
   */
  epoch: z.int().min(0).optional(),
});

export const PingFrameSchema = z.object({ type: z.literal("ping") });

/**
 * A renewed access token for the same user (send it whenever supabase-js refreshes the
 * session): later turns, tool calls and approvals run with its claims, and the socket lives
 * until its `exp` instead of the old one's. Failures come back as an `error` frame with
 * `ref: "auth"`.
 */
export const AuthFrameSchema = z.object({
  type: z.literal("auth"),
  access_token: z.string().min(1).max(16 * 1024),
});

export const ClientFrameSchema = z.discriminatedUnion("type", [
  ChatFrameSchema,
  CancelFrameSchema,
  ApproveFrameSchema,
  ResumeFrameSchema,
  PingFrameSchema,
  AuthFrameSchema,
]);

export type ChatFrame = z.infer<typeof ChatFrameSchema>;
export type CancelFrame = z.infer<typeof CancelFrameSchema>;
export type ApproveFrame = z.infer<typeof ApproveFrameSchema>;
export type ResumeFrame = z.infer<typeof ResumeFrameSchema>;
export type PingFrame = z.infer<typeof PingFrameSchema>;
export type AuthFrame = z.infer<typeof AuthFrameSchema>;
export type ClientFrame = z.infer<typeof ClientFrameSchema>;
export type ClientFrameType = ClientFrame["type"];

// ---------------------------------------------------------------------------------------------
// Server frames

export const LimitsSchema = z.object({
  max_connections: z.int(),
  max_frame_bytes: z.int(),
  max_frames_per_second: z.int(),
  max_steps: z.int(),
  approval_timeout_ms: z.int(),
  max_completion_tokens: z.int(),
  token_bucket: z.object({
    capacity: z.int(),
    refill_per_minute: z.int(),
    /** Tokens in the bucket when the connection opened. */
    available: z.int(),
  }),
  daily: z.object({
    token_cap: z.int(),
    tokens_used: z.int(),
    cost_cap_usd: z.number(),
    cost_used_usd: z.number(),
  }),
});

export const ReadyFrameSchema = z.object({
  type: z.literal("ready"),
  /** The id of the socket's upgrade request in the server's logs. */
  request_id: z.string().optional(),
  user_id: uuid(),
  connection_id: uuid(),
  limits: LimitsSchema,
});

export const PongFrameSchema = z.object({ type: z.literal("pong") });

/**
 * A chat sent with `policy: "enqueue"` to a busy session was stored; its turn (`turn_id`)
 * starts when the turns ahead of it end, and this connection follows it from `start` on.
 * Not a turn frame: it has no seq.
 */
export const QueuedFrameSchema = z.object({
  type: z.literal("queued"),
  /** The chat's id. */
  ref: uuid(),
  turn_id: uuid(),
  session_id: uuid(),
  /** Queued chats of the session ahead of this one (0: it starts next). */
  ahead: z.int().min(0),
  /** The turn running in the session when the chat was queued. */
  running_turn_id: uuid().optional(),
});

const turnFrame = <Type extends string, Shape extends z.ZodRawShape>(
  type: Type,
  shape: Shape,
) => z.object({ type: z.literal(type), turn_id: uuid(), seq: seq(), ...shape });

export const StartFrameSchema = turnFrame("start", {
  session_id: uuid(),
  /** The id of the assistant message the answer streams into (chat_history.client_id). */
  message_id: uuid(),
  /** The chat's id: the user message this turn answers. */
  user_message_id: uuid(),
  model: z.string(),
});

export const TokenFrameSchema = turnFrame("token", { delta: z.string() });

/** What the agent starts doing between tokens (`STEP_KINDS`; a client ignores kinds it does not know). */
export const STEP_KINDS = ["calling_model", "running_tool"] as const;

export const StepFrameSchema = turnFrame("step", {
  step: z.string(),
  /** The LLM call this belongs to: 1, 2, … */
  index: z.int().min(1),
  /** For `running_tool`. */
  tool: z.string().optional(),
  call_id: z.string().optional(),
});

export const ToolCallFrameSchema = turnFrame("tool_call", {
  call_id: z.string(),
  tool: z.string(),
  /** The arguments the model sent: parsed JSON, or the raw text when it was not JSON. */
  args: z.unknown(),
});

export const ApprovalRequiredFrameSchema = turnFrame("approval_required", {
  call_id: z.string(),
  tool: z.string(),
  args: z.unknown(),
  /** Without an `approve` in this time the call is denied. */
  timeout_ms: z.int(),
});

/**
 * The server that ran this turn stopped and another took it over from its last checkpoint.
 * Drop every frame of this turn you hold with this frame's seq or later (they came from the
 * stopped server and are replaced from here), and cut the answer text you have to its first
 * `keep_chars` UTF-16 units: the text after them was the partial output of the step that is
 * now requested again. Then go on with the frames after this one.
 */
export const RestartStepFrameSchema = turnFrame("restart_step", {
  /** The LLM call (1-based) asked again, or continued after its tool calls. */
  step: z.int().min(1),
  /** The takeover's number (1 for the first); send the highest you saw with `resume`. */
  epoch: z.int().min(1),
  keep_chars: z.int().min(0),
});

export const ProgressFrameSchema = turnFrame("progress", {
  call_id: z.string(),
  progress: z.number(),
  total: z.number().optional(),
  message: z.string().optional(),
  /** The phase the tool is in, in its own words (e.g. `fetching`, `parsing`). */
  stage: z.string().optional(),
  /** A partial result the tool chose to show early. */
  data: z.unknown().optional(),
});

export const ToolResultFrameSchema = turnFrame("tool_result", {
  call_id: z.string(),
  tool: z.string(),
  /** The tool's output, or `{code, message}` when `is_error`. */
  result: z.unknown(),
  is_error: z.boolean(),
});

export const ResponseFrameSchema = turnFrame("response", {
  message_id: uuid(),
  /** The whole answer text (every step's text, concatenated). */
  content: z.string(),
});

export const UsageSchema = z.object({
  prompt_tokens: z.int(),
  completion_tokens: z.int(),
  /** USD, as the LLM upstream reported it. */
  cost: z.number(),
});

export const CompleteFrameSchema = turnFrame("complete", {
  usage: UsageSchema,
  /** LLM calls the turn made. */
  steps: z.int(),
  /** From the turn's start to its end, in this isolate (a resumed turn: since its adoption). */
  duration_ms: z.int().min(0).optional(),
  /** The model that answered (the last call's; a fallback when the asked one failed). */
  model: z.string().optional(),
});

export const ErrorFrameSchema = z.object({
  type: z.literal("error"),
  /** The id of the request (the socket's upgrade) in the server's logs. */
  request_id: z.string().optional(),
  /** Present when the error ends a turn. */
  turn_id: uuid().optional(),
  seq: seq().optional(),
  /** One of `ERROR_CODES` from this server; a client keeps frames with codes it does not know. */
  code: z.string(),
  message: z.string(),
  retryable: z.boolean(),
  /** The client frame this answers: a chat's `id`, a `turn_id` or a `call_id`. */
  ref: z.string().optional(),
  /** For `bad_request`: the offending field, e.g. `tools[2]`. */
  path: z.string().optional(),
  /** For `rate_limited`: why (`frames_per_second`, `token_bucket`, `daily_token_cap`, …). */
  reason: z.string().optional(),
  /** For `rate_limited`: when trying again may succeed. */
  retry_after_ms: z.int().optional(),
  /** For `session_busy`: the turn that holds the session. */
  running_turn_id: uuid().optional(),
});

/**
 * A live word about a turn, for the clients following it on the isolate that runs it: not
 * numbered, not stored, never replayed. `ending_delayed`: the turn has ended but the database
 * has not stored its ending after a second (it may be unreachable); its closing frames follow
 * once it has (or, after about 30 s of tries, anyway).
 */
export const NoticeFrameSchema = z.object({
  type: z.literal("notice"),
  turn_id: uuid(),
  code: z.string(),
  message: z.string(),
  retry_after_ms: z.int().optional(),
});

/** An `error` that ends a turn: numbered like every frame of the turn. */
export const TurnErrorFrameSchema = ErrorFrameSchema.extend({
  turn_id: uuid(),
  seq: seq(),
});

export const TurnFrameSchema = z.discriminatedUnion("type", [
  StartFrameSchema,
  StepFrameSchema,
  TokenFrameSchema,
  ToolCallFrameSchema,
  ApprovalRequiredFrameSchema,
  ProgressFrameSchema,
  ToolResultFrameSchema,
  ResponseFrameSchema,
  CompleteFrameSchema,
  TurnErrorFrameSchema,
  RestartStepFrameSchema,
]);

export const ServerFrameSchema = z.discriminatedUnion("type", [
  ReadyFrameSchema,
  PongFrameSchema,
  QueuedFrameSchema,
  StartFrameSchema,
  StepFrameSchema,
  TokenFrameSchema,
  ToolCallFrameSchema,
  ApprovalRequiredFrameSchema,
  ProgressFrameSchema,
  ToolResultFrameSchema,
  ResponseFrameSchema,
  CompleteFrameSchema,
  ErrorFrameSchema,
  RestartStepFrameSchema,
  NoticeFrameSchema,
]);

export type Limits = z.infer<typeof LimitsSchema>;
export type ReadyFrame = z.infer<typeof ReadyFrameSchema>;
export type PongFrame = z.infer<typeof PongFrameSchema>;
export type QueuedFrame = z.infer<typeof QueuedFrameSchema>;
export type StartFrame = z.infer<typeof StartFrameSchema>;
export type StepFrame = z.infer<typeof StepFrameSchema>;
export type TokenFrame = z.infer<typeof TokenFrameSchema>;
export type ToolCallFrame = z.infer<typeof ToolCallFrameSchema>;
export type ApprovalRequiredFrame = z.infer<typeof ApprovalRequiredFrameSchema>;
export type ProgressFrame = z.infer<typeof ProgressFrameSchema>;
export type RestartStepFrame = z.infer<typeof RestartStepFrameSchema>;
export type ToolResultFrame = z.infer<typeof ToolResultFrameSchema>;
export type ResponseFrame = z.infer<typeof ResponseFrameSchema>;
export type Usage = z.infer<typeof UsageSchema>;
export type CompleteFrame = z.infer<typeof CompleteFrameSchema>;
export type ErrorFrame = z.infer<typeof ErrorFrameSchema>;
export type NoticeFrame = z.infer<typeof NoticeFrameSchema>;
export type TurnErrorFrame = z.infer<typeof TurnErrorFrameSchema>;
export type TurnFrame = z.infer<typeof TurnFrameSchema>;
export type ServerFrame = z.infer<typeof ServerFrameSchema>;
export type ServerFrameType = ServerFrame["type"];

/** A turn frame before the turn numbered it. */
export type UnnumberedTurnFrame = TurnFrame extends infer F
  ? F extends TurnFrame ? Omit<F, "turn_id" | "seq"> : never
  : never;

/** `complete` and `error` end a turn; nothing of it follows them. */
export function isTerminalFrame(frame: { type: string }): boolean {
  return frame.type === "complete" || frame.type === "error";
}

// ---------------------------------------------------------------------------------------------
// Decoding

export interface FrameProblem {
  code: "bad_request";
  message: string;
  /** The offending field, e.g. `content` or `tools[1]`. */
  path?: string;
}

export type DecodedClientFrame = { ok: true; frame: ClientFrame } | {
  ok: false;
  error: FrameProblem;
};

/** Parses and validates one client text frame; the error names the field at fault. */
export function decodeClientFrame(text: string): DecodedClientFrame {
  if (nestsDeeperThan(text)) {
    return { ok: false, error: { code: "bad_request", message: tooDeepMessage("The frame") } };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    return {
      ok: false,
      error: {
        code: "bad_request",
        message: `not valid JSON: ${error.message}`,
      },
    };
  }
  const parsed = ClientFrameSchema.safeParse(value);
  if (parsed.success) return { ok: true, frame: parsed.data };
  const [issue] = parsed.error.issues;
  const path = fieldPath(issue.path);
  if (path === "") {
    return {
      ok: false,
      error: {
        code: "bad_request",
        message: "the frame must be a JSON object",
      },
    };
  }
  const message = issue.code === "invalid_union" && path === "type"
    ? `type: must be one of ${ClientFrameSchema.options.map((o) => o.shape.type.value).join(", ")}`
    : `${path}: ${issue.message}`;
  return { ok: false, error: { code: "bad_request", message, path } };
}

/** Parses one server frame (for clients and tests); throws on anything the server never sends. */
export function decodeServerFrame(text: string): ServerFrame {
  return ServerFrameSchema.parse(JSON.parse(text));
}
