/**
 * Broadcast: fan-out to every channel joined on a topic (the sender only with
 * `config.broadcast.self`), and the REST endpoints supabase-js uses when it is not joined:
 * `POST /realtime/v1/api/broadcast` (`{"messages":[{topic,event,payload,private}]}`, what
 * `channel.send()` falls back to) and `POST /realtime/v1/api/broadcast/<topic>/events/<event>`
 * (`channel.httpSend()`). Both answer 202 Accepted.
 *
 * Private channels need Realtime Authorization (RLS on `realtime.messages`), which this
 * stand-in does not have, so private messages are refused rather than silently dropped.
 */
import { z } from "zod";
import { bearerToken, type TokenVerifier } from "../token_verifier.ts";
import { type ApiKeys, roleOfApiKey } from "../keys.ts";
import type { Channel, ChannelRegistry } from "./channels.ts";
import { apikeyIdentity, resolveIdentity, usesApikey } from "./identity.ts";
import type { BroadcastEnvelope } from "./phoenix.ts";

export function fanOut(
  registry: ChannelRegistry,
  topic: string,
  envelope: BroadcastEnvelope,
  sender?: Channel,
): number {
  let delivered = 0;
  for (const channel of registry.onTopic(topic)) {
    if (channel === sender && !channel.config.self) continue;
    channel.pushBroadcast(envelope);
    delivered++;
  }
  return delivered;
}

const batchSchema = z.object({
  messages: z.array(
    z.object({
      topic: z.string().min(1),
      event: z.string().min(1),
      payload: z.unknown().optional(),
      private: z.boolean().optional(),
    }),
  ).min(1),
});

export interface BroadcastApiContext {
  registry: ChannelRegistry;
  verifier: TokenVerifier;
  apiKeys: ApiKeys;
}

/** `POST /realtime/v1/api/broadcast`. */
export async function handleBroadcastBatch(
  request: Request,
  context: BroadcastApiContext,
): Promise<Response> {
  const denied = await authenticate(request, context);
  if (denied) return denied;
  const parsed = batchSchema.safeParse(await readJson(request));
  if (!parsed.success) {
    return errorResponse(400, "invalid_body", z.prettifyError(parsed.error));
  }
  if (parsed.data.messages.some((message) => message.private === true)) {
    return privateRefused();
  }
  for (const message of parsed.data.messages) {
    fanOut(context.registry, `realtime:${message.topic}`, {
      type: "broadcast",
      event: message.event,
      payload: message.payload ?? {},
    });
  }
  return new Response(null, { status: 202 });
}

/** `POST /realtime/v1/api/broadcast/<topic>/events/<event>`: the body is the payload. */
export async function handleBroadcastEvent(
  request: Request,
  topic: string,
  event: string,
  context: BroadcastApiContext,
): Promise<Response> {
  const denied = await authenticate(request, context);
  if (denied) return denied;
  if (new URL(request.url).searchParams.get("private") === "true") return privateRefused();
  const contentType = request.headers.get("content-type") ?? "";
  let payload: unknown;
  if (contentType.startsWith("application/octet-stream")) {
    payload = new Uint8Array(await request.arrayBuffer());
  } else {
    payload = await readJson(request);
    if (payload === undefined) return errorResponse(400, "invalid_body", "body must be JSON");
  }
  fanOut(context.registry, `realtime:${topic}`, { type: "broadcast", event, payload });
  return new Response(null, { status: 202 });
}

/** The apikey must be one of the local keys; a user token, when sent, must verify. */
async function authenticate(
  request: Request,
  { verifier, apiKeys }: BroadcastApiContext,
): Promise<Response | undefined> {
  const apikey = request.headers.get("apikey") ?? new URL(request.url).searchParams.get("apikey");
  const role = roleOfApiKey(apikey, apiKeys);
  if (!role) return errorResponse(401, "invalid_apikey", "A valid apikey is required");
  const token = bearerToken(request);
  if (usesApikey(token)) return undefined;
  const identity = await resolveIdentity(token, apikeyIdentity(role), verifier);
  return identity.ok ? undefined : errorResponse(401, identity.code, identity.reason);
}

async function readJson(request: Request): Promise<unknown> {
  try {
    return await request.json();
  } catch (error) {
    if (error instanceof SyntaxError) return undefined;
    throw error;
  }
}

function privateRefused(): Response {
  return errorResponse(
    403,
    "private_channels_unsupported",
    "Private channels need Realtime Authorization, which the local stand-in does not provide",
  );
}

export function errorResponse(status: number, code: string, message: string): Response {
  // `error` too: realtime-js reports `body.error || body.message`.
  return Response.json({ code, message, error: message }, { status });
}
