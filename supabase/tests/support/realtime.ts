/**
 * Shared set-up for the Realtime tests and benchmark: the handler served on a local port
 * with its own ES256 signing key, supabase-js clients pointed at it, and waiting helpers
 * that fail after a generous timeout instead of asserting on timing.
 */
import { createClient, type RealtimeChannel, type SupabaseClient } from "@supabase/supabase-js";
import { createTokenVerifier } from "../../../scripts/standin/token_verifier.ts";
import { LOCAL_PUBLISHABLE_KEY } from "../../../scripts/standin/keys.ts";
import {
  generateSigningKey,
  issueAccessToken,
  jwksOf,
  type SigningKey,
} from "../../../scripts/standin/signing_keys.ts";
import {
  createRealtimeHandler,
  type RealtimeHandler,
} from "../../../scripts/standin/realtime/server.ts";

export const ISSUER = "http://127.0.0.1/auth/v1";
export const WAIT_MS = 20_000;

export interface RunningRealtime {
  port: number;
  url: string;
  key: SigningKey;
  handler: RealtimeHandler;
  tokenFor(userId: string, options?: { expiresIn?: number }): Promise<string>;
  /** Stops the server and the handler; `start()` brings a new one up on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

export async function startRealtime(
  databaseUrl: string,
  options: { port?: number; key?: SigningKey } = {},
): Promise<RunningRealtime> {
  const key = options.key ?? await generateSigningKey();
  const verifier = createTokenVerifier({ jwks: jwksOf(key) });
  let handler: RealtimeHandler | undefined;
  let server: Deno.HttpServer<Deno.NetAddr> | undefined;
  let port = options.port ?? 0;

  const running: RunningRealtime = {
    port,
    url: "",
    key,
    get handler() {
      if (!handler) throw new Error("realtime is stopped");
      return handler;
    },
    tokenFor: (userId, tokenOptions = {}) =>
      issueAccessToken(key, {
        userId,
        issuer: ISSUER,
        expiresIn: tokenOptions.expiresIn,
      }),
    async stop() {
      await handler?.close();
      await server?.shutdown();
      handler = undefined;
      server = undefined;
    },
    async start() {
      handler = await createRealtimeHandler({ databaseUrl, verifier });
      const current = handler;
      server = Deno.serve(
        { hostname: "127.0.0.1", port, onListen() {} },
        (request) => current.handle(request),
      );
      port = server.addr.port;
      running.port = port;
      running.url = `http://127.0.0.1:${port}`;
    },
  };
  await running.start();
  return running;
}

/**
 * A supabase-js client as an app builds it. With `token`, Realtime uses that access token
 * (through the `accessToken` option, which is what survives rejoins); `token` may be a
 * function so a test can rotate it. The token is fetched before this resolves: a channel
 * subscribed before supabase-js has it would join with the apikey (as anon).
 */
export async function realtimeClient(
  url: string,
  options: {
    key?: string;
    token?: string | (() => string);
    vsn?: "1.0.0" | "2.0.0";
  } = {},
): Promise<SupabaseClient> {
  const token = options.token;
  const client = createClient(url, options.key ?? LOCAL_PUBLISHABLE_KEY, {
    auth: { persistSession: false, autoRefreshToken: false },
    accessToken: token === undefined
      ? undefined
      : () => Promise.resolve(typeof token === "function" ? token() : token),
    realtime: options.vsn ? { vsn: options.vsn } : undefined,
  });
  if (token !== undefined) await client.realtime.setAuth();
  return client;
}

/** Subscribes and resolves on SUBSCRIBED; rejects on CHANNEL_ERROR, TIMED_OUT or CLOSED. */
export function subscribe(channel: RealtimeChannel): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  let settled = false;
  channel.subscribe((status, error) => {
    if (settled) return;
    settled = true;
    if (status === "SUBSCRIBED") resolve();
    else {reject(
        new Error(`subscribe: ${status}${error ? ` (${error.message})` : ""}`),
      );}
  });
  return promise;
}

/** Collects values pushed by callbacks; `waitFor` resolves once `predicate` holds. */
export class Inbox<T> {
  readonly items: T[] = [];
  #waiters: { test: () => boolean; resolve: () => void }[] = [];

  push = (item: T): void => {
    this.items.push(item);
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!waiter.test()) return true;
      waiter.resolve();
      return false;
    });
  };

  waitFor(
    predicate: (items: T[]) => boolean,
    what: string,
    timeoutMs = WAIT_MS,
  ): Promise<T[]> {
    return waitUntil(
      (wake) => {
        const test = () => predicate(this.items);
        if (test()) return true;
        this.#waiters.push({ test, resolve: wake });
        return false;
      },
      what,
      timeoutMs,
    ).then(() => this.items);
  }

  waitForCount(count: number, what: string, timeoutMs = WAIT_MS): Promise<T[]> {
    return this.waitFor((items) => items.length >= count, what, timeoutMs);
  }
}

/** Resolves when `check` reports success, either at once or by calling `wake` later. */
function waitUntil(
  check: (wake: () => void) => boolean,
  what: string,
  timeoutMs: number,
): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const timer = setTimeout(
    () => reject(new Error(`timed out waiting for ${what}`)),
    timeoutMs,
  );
  const done = () => {
    clearTimeout(timer);
    resolve();
  };
  if (check(done)) done();
  return promise;
}

/** Waits for a status of a channel's subscribe callback (e.g. SUBSCRIBED after a rejoin). */
export class StatusLog {
  readonly statuses = new Inbox<string>();
  readonly callback = (status: string) => this.statuses.push(status);

  count(status: string): number {
    return this.statuses.items.filter((item) => item === status).length;
  }

  waitForCount(
    status: string,
    count: number,
    timeoutMs = WAIT_MS,
  ): Promise<unknown> {
    return this.statuses.waitFor(
      (items) => items.filter((item) => item === status).length >= count,
      `${count}× ${status}`,
      timeoutMs,
    );
  }
}

/** Leaves every channel and closes the client's socket. */
export async function closeClient(client: SupabaseClient): Promise<void> {
  await client.removeAllChannels();
  await client.realtime.disconnect();
}
