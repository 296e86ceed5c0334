/** An append batch as the caller sends it: its zod schema and the checks that name the field. */
import { z } from "zod";
import { Constants } from "../db/database.types.ts";
import { fieldPath } from "../field_path.ts";
import { HISTORY_LIMITS, type HistoryError, type HistoryResult } from "./protocol.ts";

/** Postgres text cannot hold U+0000; refusing it here names the field instead of failing late. */
function text() {
  return z.string().refine((s) => !s.includes("\u0000"), "must not contain NUL characters");
}

/** Any 8-4-4-4-12 hex id, as Postgres' uuid type accepts it (not only RFC 4122 variants). */
const uuid = () => z.guid("must be a uuid");

function withinBytes(s: string, max: number): boolean {
  // A UTF-16 unit never takes more than 3 UTF-8 bytes: short strings need no encoding.
  return s.length * 3 <= max || new TextEncoder().encode(s).byteLength <= max;
}

export const NewMessageSchema = z.object({
  /** The client's id for the message: a retry with the same id is stored once. */
  id: uuid(),
  role: z.enum(Constants.public.Enums.message_role),
  content: text().refine(
    (s) => withinBytes(s, HISTORY_LIMITS.maxContentBytes),
    `must be at most ${HISTORY_LIMITS.maxContentBytes} bytes`,
  ),
  tool_calls: z.array(z.json()).nullish(),
  tool_call_id: text().nullish(),
  model: text().nullish(),
  status: z.enum(Constants.public.Enums.message_status).optional(),
  turn_id: uuid().nullish(),
});

export const AppendInputSchema = z.object({
  /** Absent: the session of an earlier attempt of this batch, else a new one. */
  session_id: uuid().optional(),
  /** Kept when the session already has a title. */
  title: text()
    .refine(
      (s) => [...s].length <= HISTORY_LIMITS.maxTitleChars,
      `must be at most ${HISTORY_LIMITS.maxTitleChars} characters`,
    )
    .nullish(),
  messages: z.array(NewMessageSchema).min(1).max(HISTORY_LIMITS.maxMessagesPerBatch),
}).superRefine((input, ctx) => {
  const seen = new Set<string>();
  input.messages.forEach((message, index) => {
    const id = message.id.toLowerCase();
    if (seen.has(id)) {
      ctx.addIssue({
        code: "custom",
        path: ["messages", index, "id"],
        message: "is used twice in this batch",
      });
    }
    seen.add(id);
  });
});

export type NewMessage = z.input<typeof NewMessageSchema>;
export type AppendInput = z.input<typeof AppendInputSchema>;

export function invalid(message: string, path?: string): HistoryError {
  return path === undefined
    ? { ok: false, code: "invalid_request", message }
    : { ok: false, code: "invalid_request", message: `${path}: ${message}`, path };
}

function invalidFromZod(error: z.ZodError): HistoryError {
  const [issue] = error.issues;
  return invalid(issue.message, issue.path.length > 0 ? fieldPath(issue.path) : undefined);
}

/** Validates an append request (the HTTP body, or what the agent built). */
export function parseAppendInput(input: unknown): HistoryResult<AppendInput> {
  const parsed = AppendInputSchema.safeParse(input);
  return parsed.success ? { ok: true, value: parsed.data } : invalidFromZod(parsed.error);
}

export function checkLimit(
  value: number | undefined,
  bounds: { default: number; max: number },
): HistoryResult<number> {
  if (value === undefined) return { ok: true, value: bounds.default };
  if (!Number.isInteger(value) || value < 1 || value > bounds.max) {
    return invalid(`must be an integer from 1 to ${bounds.max}`, "limit");
  }
  return { ok: true, value };
}
