/**
 * Phoenix channel frames as Supabase Realtime speaks them.
 *
 * vsn 2.0.0 (realtime-js's default) sends text frames as JSON arrays
 * `[join_ref, ref, topic, event, payload]` and every socket `channel.send({type:'broadcast'})`
 * as a binary "user broadcast push" (kind 3). vsn 1.0.0 sends JSON objects. The server answers
 * with text frames, except broadcasts whose payload is raw bytes: those can only travel as a
 * binary "user broadcast" (kind 4), the one binary kind the client decodes.
 */

export type Vsn = "1.0.0" | "2.0.0";
export const SUPPORTED_VSNS: readonly Vsn[] = ["1.0.0", "2.0.0"];

export interface PhoenixMessage {
  joinRef: string | null;
  ref: string | null;
  topic: string;
  event: string;
  payload: unknown;
}

/** A broadcast's user payload: JSON, or raw bytes when the sender sent binary. */
export type BroadcastPayload = unknown;

export interface BroadcastEnvelope {
  type: "broadcast";
  event: string;
  payload: BroadcastPayload;
  meta?: Record<string, unknown>;
}

export type DecodeResult =
  | { ok: true; message: PhoenixMessage }
  | { ok: false; code: "malformed_frame" | "unsupported_binary_kind"; message: string };

const KIND_USER_BROADCAST_PUSH = 3;
const KIND_USER_BROADCAST = 4;
const ENCODING_BINARY = 0;
const ENCODING_JSON = 1;

const textDecoder = new TextDecoder("utf-8", { fatal: true });
const textEncoder = new TextEncoder();

export function isSupportedVsn(value: string | null): value is Vsn {
  return value !== null && (SUPPORTED_VSNS as readonly string[]).includes(value);
}

/** Decodes one client frame; text per `vsn`, binary only as kind 3 (vsn 2.0.0). */
export function decodeFrame(data: string | ArrayBuffer | Uint8Array, vsn: Vsn): DecodeResult {
  if (typeof data !== "string") {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    return decodeBinary(bytes);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    return malformed("frame is not JSON");
  }
  return vsn === "2.0.0" ? fromArray(parsed) : fromObject(parsed);
}

function fromArray(parsed: unknown): DecodeResult {
  if (!Array.isArray(parsed) || parsed.length !== 5) {
    return malformed("vsn 2.0.0 frames are [join_ref, ref, topic, event, payload]");
  }
  const [joinRef, ref, topic, event, payload] = parsed;
  return build(joinRef, ref, topic, event, payload);
}

function fromObject(parsed: unknown): DecodeResult {
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return malformed("vsn 1.0.0 frames are {topic, event, payload, ref, join_ref}");
  }
  const { join_ref, ref, topic, event, payload } = parsed as Record<string, unknown>;
  return build(join_ref, ref, topic, event, payload);
}

function build(
  joinRef: unknown,
  ref: unknown,
  topic: unknown,
  event: unknown,
  payload: unknown,
): DecodeResult {
  const normalizedJoinRef = refOf(joinRef);
  const normalizedRef = refOf(ref);
  if (normalizedJoinRef === undefined || normalizedRef === undefined) {
    return malformed("refs must be strings, numbers or null");
  }
  if (typeof topic !== "string" || typeof event !== "string") {
    return malformed("topic and event must be strings");
  }
  return {
    ok: true,
    message: {
      joinRef: normalizedJoinRef,
      ref: normalizedRef,
      topic,
      event,
      payload: payload ?? {},
    },
  };
}

/** Phoenix refs are strings; other clients may send numbers. `undefined` means invalid. */
function refOf(value: unknown): string | null | undefined {
  if (value === null || value === undefined) return null;
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return undefined;
}

function decodeBinary(bytes: Uint8Array): DecodeResult {
  if (bytes.length === 0) return malformed("empty binary frame");
  if (bytes[0] !== KIND_USER_BROADCAST_PUSH) {
    return {
      ok: false,
      code: "unsupported_binary_kind",
      message: `binary frame kind ${bytes[0]} is not a user broadcast push (3)`,
    };
  }
  const headerLength = 7;
  if (bytes.length < headerLength) return malformed("truncated user broadcast push header");
  const [joinRefLength, refLength, topicLength, eventLength, metaLength, encoding] = bytes
    .subarray(1, headerLength);
  let offset = headerLength;
  const take = (length: number): string | undefined => {
    if (offset + length > bytes.length) return undefined;
    const slice = bytes.subarray(offset, offset + length);
    offset += length;
    try {
      return textDecoder.decode(slice);
    } catch {
      return undefined;
    }
  };
  const joinRef = take(joinRefLength);
  const ref = take(refLength);
  const topic = take(topicLength);
  const userEvent = take(eventLength);
  const metaText = take(metaLength);
  if (
    joinRef === undefined || ref === undefined || topic === undefined ||
    userEvent === undefined || metaText === undefined
  ) {
    return malformed("user broadcast push is shorter than its header says");
  }
  const body = bytes.slice(offset);
  let payload: BroadcastPayload;
  if (encoding === ENCODING_JSON) {
    try {
      payload = JSON.parse(textDecoder.decode(body));
    } catch {
      return malformed("user broadcast push payload is not JSON");
    }
  } else if (encoding === ENCODING_BINARY) {
    payload = body;
  } else {
    return malformed(`unknown payload encoding ${encoding}`);
  }
  const envelope: BroadcastEnvelope = { type: "broadcast", event: userEvent, payload };
  if (metaText !== "") {
    try {
      const meta = JSON.parse(metaText);
      if (typeof meta === "object" && meta !== null && !Array.isArray(meta)) envelope.meta = meta;
    } catch {
      return malformed("user broadcast push metadata is not JSON");
    }
  }
  return {
    ok: true,
    message: {
      joinRef: joinRef === "" ? null : joinRef,
      ref: ref === "" ? null : ref,
      topic,
      event: "broadcast",
      payload: envelope,
    },
  };
}

function malformed(message: string): DecodeResult {
  return { ok: false, code: "malformed_frame", message };
}

/** A text frame for `vsn`. */
export function encodeMessage(message: PhoenixMessage, vsn: Vsn): string {
  return encodeWithRawPayload(message, JSON.stringify(message.payload), vsn);
}

/**
 * A text frame whose payload is already JSON text: change events are serialized once per
 * role and reused for every subscriber's frame.
 */
export function encodeWithRawPayload(
  message: Omit<PhoenixMessage, "payload">,
  payloadJson: string,
  vsn: Vsn,
): string {
  const joinRef = JSON.stringify(message.joinRef);
  const ref = JSON.stringify(message.ref);
  const topic = JSON.stringify(message.topic);
  const event = JSON.stringify(message.event);
  if (vsn === "2.0.0") return `[${joinRef},${ref},${topic},${event},${payloadJson}]`;
  return `{"topic":${topic},"event":${event},"payload":${payloadJson},"ref":${ref},"join_ref":${joinRef}}`;
}

/** Server → client binary "user broadcast" (kind 4): the only way to deliver raw bytes. */
export function encodeUserBroadcast(
  topic: string,
  userEvent: string,
  payload: BroadcastPayload,
  meta?: Record<string, unknown>,
): Uint8Array {
  const topicBytes = textEncoder.encode(topic);
  const eventBytes = textEncoder.encode(userEvent);
  const metaBytes = textEncoder.encode(meta ? JSON.stringify(meta) : "");
  for (const [name, part] of [["topic", topicBytes], ["event", eventBytes], ["meta", metaBytes]]) {
    if ((part as Uint8Array).length > 255) throw new RangeError(`${name} longer than 255 bytes`);
  }
  const isBinary = payload instanceof Uint8Array;
  const body = isBinary ? payload : textEncoder.encode(JSON.stringify(payload));
  const frame = new Uint8Array(
    5 + topicBytes.length + eventBytes.length + metaBytes.length + body.length,
  );
  frame.set([
    KIND_USER_BROADCAST,
    topicBytes.length,
    eventBytes.length,
    metaBytes.length,
    isBinary ? ENCODING_BINARY : ENCODING_JSON,
  ]);
  let offset = 5;
  for (const part of [topicBytes, eventBytes, metaBytes, body]) {
    frame.set(part, offset);
    offset += part.length;
  }
  return frame;
}
