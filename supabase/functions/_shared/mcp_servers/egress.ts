/**
 * The only `fetch` the functions use towards a user's MCP server: every URL (the first and
 * each redirect's target) passes `checkServerUrl`; redirects are followed here, at most
 * `MAX_REDIRECTS`, never by the runtime; each name is resolved once per guarded fetch (one use
 * of a server: its few requests follow each other within moments, see below); an answer must
 * start within `headersTimeoutMs` and its body may not exceed `maxResponseBytes` (the body
 * stream errors past it). What went wrong is kept in `trip`, so the caller can name it with a
 * stable code whatever error the MCP SDK wraps it in.
 */
import { checkServerUrl, type UrlPolicy } from "./url_safety.ts";

export const MAX_REDIRECTS = 5;

export interface EgressLimits {
  maxResponseBytes: number;
  headersTimeoutMs: number;
}

export const DEFAULT_EGRESS_LIMITS: EgressLimits = {
  maxResponseBytes: 4 * 1024 * 1024,
  headersTimeoutMs: 15_000,
};

export type EgressCode =
  | "url_not_allowed"
  | "server_unreachable"
  | "server_timeout"
  | "server_response_too_large";

export interface EgressTrip {
  code: EgressCode;
  message: string;
}

export class EgressError extends Error {
  constructor(readonly trip: EgressTrip) {
    super(trip.message);
    this.name = "EgressError";
  }
}

export interface GuardedFetch {
  fetch: typeof fetch;
  /** The first limit a request of this fetch ran into, if any. */
  readonly trip: EgressTrip | undefined;
}

export function guardedFetch(
  policy: UrlPolicy,
  limits: EgressLimits = DEFAULT_EGRESS_LIMITS,
  inner: typeof fetch = fetch,
  /** Told of the first trip: a body cut mid-stream rejects no request by itself. */
  onTrip?: (trip: EgressTrip) => void,
): GuardedFetch {
  let trip: EgressTrip | undefined;
  // One use of a server (initialize, the call, close) sends a few requests to one name within
  // moments: the checks share its answer instead of asking DNS again for each. That widens
  // nothing: `fetch` resolves for itself anyway (the rebinding window in url_safety.ts), and a
  // redirect to another name is resolved and checked afresh. Never kept past this use.
  const answers = new Map<string, Promise<string[]>>();
  const checkPolicy: UrlPolicy = {
    ...policy,
    resolveDns: (host, type) => {
      const key = `${type} ${host}`;
      let answer = answers.get(key);
      if (!answer) {
        answer = policy.resolveDns(host, type);
        answers.set(key, answer);
      }
      return answer;
    },
  };
  const fail = (found: EgressTrip): never => {
    if (!trip) {
      trip = found;
      onTrip?.(found);
    }
    throw new EgressError(found);
  };

  const guarded = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    let url = input instanceof Request ? input.url : String(input);
    let method = init?.method ?? (input instanceof Request ? input.method : "GET");
    let body = init?.body;
    for (let hop = 0;; hop++) {
      const checked = await checkServerUrl(url, checkPolicy);
      if (!checked.ok) fail({ code: checked.code, message: checked.message });
      const timeout = AbortSignal.timeout(limits.headersTimeoutMs);
      const signal = init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
      let response: Response;
      try {
        response = await inner(url, { ...init, method, body, redirect: "manual", signal });
      } catch (error) {
        if (timeout.aborted && !init?.signal?.aborted) {
          fail({
            code: "server_timeout",
            message: `${new URL(url).host} did not answer within ${limits.headersTimeoutMs} ms`,
          });
        }
        if (init?.signal?.aborted) throw error;
        fail({
          code: "server_unreachable",
          message: `${new URL(url).host} could not be reached: ${(error as Error).message}`,
        });
      }
      const location = response!.headers.get("location");
      if (response!.status >= 300 && response!.status < 400 && location) {
        await response!.body?.cancel();
        if (hop >= MAX_REDIRECTS) {
          fail({ code: "server_unreachable", message: `more than ${MAX_REDIRECTS} redirects` });
        }
        url = new URL(location, url).toString();
        if (response!.status === 303 || (response!.status <= 302 && method === "POST")) {
          method = "GET";
          body = undefined;
        }
        continue;
      }
      return limitBody(response!, limits.maxResponseBytes, fail);
    }
  };
  return {
    fetch: guarded as typeof fetch,
    get trip() {
      return trip;
    },
  };
}

function limitBody(
  response: Response,
  maxBytes: number,
  fail: (trip: EgressTrip) => never,
): Response {
  const declared = Number(response.headers.get("content-length") ?? "0");
  const tooLarge: EgressTrip = {
    code: "server_response_too_large",
    message: `the server's answer is larger than ${maxBytes} bytes`,
  };
  if (declared > maxBytes) {
    void response.body?.cancel();
    fail(tooLarge);
  }
  if (!response.body) return response;
  let seen = 0;
  const counted = response.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        seen += chunk.byteLength;
        if (seen > maxBytes) {
          try {
            fail(tooLarge);
          } catch (error) {
            controller.error(error);
            return;
          }
        }
        controller.enqueue(chunk);
      },
    }),
  );
  return new Response(counted, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}
