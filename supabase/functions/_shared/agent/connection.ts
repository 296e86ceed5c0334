/**
 * One client's WebSocket after the upgrade: it checks every frame (size, rate, JSON, schema),
 * dispatches the valid ones, and answers the rest with an `error` frame while the connection
 * stays open. Handlers run concurrently (a connection may run several turns); a handler that
 * fails answers `internal_error` for its frame and the connection carries on.
 */
import {
  type ClientFrame,
  CLOSE_CODES,
  decodeClientFrame,
  PROTOCOL_LIMITS,
  type ServerError,
  type ServerFrame,
} from "../agent_protocol.ts";
import { type AccountRefusal, accountRefusalMessage, sessionIdOf } from "../account_access.ts";
import type { TokenVerifier, VerifiedUser } from "../auth.ts";
import { DATABASE_RETRY_AFTER_SECONDS, isDatabaseUnavailable } from "../db/unavailable.ts";
import { USER_ROLE } from "../http/require_user.ts";
import { describeError, log, logFailure } from "../log.ts";
import { countRefusal } from "../refusals.ts";
import { handleChat } from "./chat.ts";
import { frameRateWindow, type SlidingWindow } from "./limits.ts";
import { followTurn } from "./resume.ts";
import type { AgentRuntime, ConnectionHandle } from "./runtime.ts";
import type { TurnClient } from "./turn_client.ts";

export class AgentConnection implements ConnectionHandle, TurnClient {
  readonly userId: string;
  #user: VerifiedUser;
  #expiry: ReturnType<typeof setTimeout> | undefined;
  readonly #window: SlidingWindow = frameRateWindow();
  /** Turns this connection follows, with how to stop following each. */
  readonly #following = new Map<string, () => void>();
  #closed = false;
  /**
   * Settles once the last chat frame received is stored and answered: chats are stored in
   * the order they arrived (two sent back to back to a busy session queue in that order).
   */
  #chatsStored: Promise<void> = Promise.resolve();
  /** The latest access token (the upgrade's, then each `auth` frame's); never stored. */
  #token: string | undefined;

  constructor(
    readonly id: string,
    user: VerifiedUser,
    readonly socket: WebSocket,
    readonly runtime: AgentRuntime,
    readonly verifier?: TokenVerifier,
    /** The upgrade request's id: in this socket's `error` frames and log lines. */
    readonly requestId?: string,
    token?: string,
  ) {
    this.userId = user.id;
    this.#user = user;
    this.#token = token;
    this.#closeAtExpiry();
  }

  /** The caller as the latest token says; a turn keeps the claims it started with. */
  get user(): VerifiedUser {
    return this.#user;
  }

  /** The latest access token, for tools that call this project's functions as the user. */
  get accessToken(): string | undefined {
    return this.#token;
  }

  /** The latest token's session (what the heartbeat checks is still signed in). */
  get sessionId(): string | undefined {
    return sessionIdOf(this.#user.claims);
  }

  /** The user may not act any more: say why, and close (4003). Running turns go on. */
  revokeAccess(refusal: AccountRefusal): void {
    this.sendError({
      code: "access_revoked",
      reason: refusal,
      message: accountRefusalMessage(refusal),
      retryable: false,
    });
    this.close(CLOSE_CODES.accessRevoked, refusal);
  }

  /**
   * A socket may not outlive its token: at `exp`, unless an `auth` frame renewed it, it
   * closes (4002). New turns, approvals and renewals thus always come with a valid token.
   */
  #closeAtExpiry(): void {
    if (this.#expiry !== undefined) clearTimeout(this.#expiry);
    const exp = this.#user.claims.exp;
    if (typeof exp !== "number") return;
    // setTimeout's delay is a 32-bit integer; a later expiry is re-armed when it comes.
    const delay = Math.min(exp * 1000 - Date.now(), 2 ** 31 - 1);
    this.#expiry = setTimeout(() => {
      if (this.#user.claims.exp !== exp) return;
      if (exp * 1000 > Date.now()) return this.#closeAtExpiry();
      this.sendError({
        code: "expired_token",
        message: "The access token expired; reconnect with a fresh one",
        retryable: true,
        ref: "auth",
      });
      this.close(CLOSE_CODES.tokenExpired, "access token expired");
    }, Math.max(0, delay));
  }

  async #renew(token: string): Promise<void> {
    const refuse = (code: "invalid_token" | "expired_token", message: string) =>
      this.sendError({ code, message, retryable: false, ref: "auth" });
    if (!this.verifier) return refuse("invalid_token", "This server cannot renew tokens");
    const result = await this.verifier.verify(token);
    if (!result.ok) {
      return refuse(
        result.code === "expired_token" ? "expired_token" : "invalid_token",
        result.message,
      );
    }
    if (result.user.id !== this.userId) {
      return refuse("invalid_token", "The token is another user's; a socket keeps its user");
    }
    if (result.user.role !== USER_ROLE) {
      return refuse("invalid_token", "Only a signed-in user's token can renew this socket");
    }
    this.#user = result.user;
    this.#token = token;
    this.#closeAtExpiry();
  }

  get isOpen(): boolean {
    return !this.#closed && this.socket.readyState === WebSocket.OPEN;
  }

  send(frame: ServerFrame): void {
    if (this.isOpen) this.socket.send(JSON.stringify(frame));
  }

  sendError(error: ServerError): void {
    // A client over the frame rate would turn each dropped frame into a line: not logged.
    if (error.reason !== "frames_per_second") {
      log("warn", "refusal", {
        request_id: this.requestId,
        user_id: this.userId,
        code: error.code,
        ...(error.reason ? { reason: error.reason } : {}),
      });
      // Counted for /metrics, beside the frame (never before it); a database that is down
      // cannot count its own outage, which the log line above records.
      if (error.code !== "db_unavailable") {
        this.runtime.track(
          countRefusal(this.runtime.deps.sql, error.code, error.reason ?? "").catch((failure) => {
            if (!isDatabaseUnavailable(failure)) {
              log("error", "failure", { what: "count_refusal", error: describeError(failure) });
            }
          }),
        );
      }
    }
    this.send({
      type: "error",
      ...error,
      ...(this.requestId === undefined ? {} : { request_id: this.requestId }),
    });
  }

  close(code: number, reason: string): void {
    if (this.#closed) return;
    try {
      this.socket.close(code, reason);
    } catch (error) {
      // Already closing: the close handler does the rest.
      if (!(error instanceof DOMException)) throw error;
    }
  }

  /** Starts following a turn, replacing an earlier follow of the same turn. */
  follow(turnId: string, stop: () => void): void {
    this.#following.get(turnId)?.();
    this.#following.set(turnId, stop);
  }

  /** Stops following a turn (its last frame went out, or the client left). */
  unfollow(turnId: string, stop?: () => void): void {
    const current = this.#following.get(turnId);
    if (current && (stop === undefined || current === stop)) {
      this.#following.delete(turnId);
      current();
    }
  }

  /** The socket closed: stop following turns (they keep running), leave the registry. */
  async closed(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#expiry !== undefined) clearTimeout(this.#expiry);
    for (const stop of this.#following.values()) stop();
    this.#following.clear();
    await this.runtime.removeConnection(this.id);
  }

  onMessage(data: unknown): void {
    if (typeof data !== "string") {
      const size = data instanceof ArrayBuffer
        ? data.byteLength
        : data instanceof Blob
        ? data.size
        : 0;
      if (size > PROTOCOL_LIMITS.maxFrameBytes) return this.#tooLarge();
      if (!this.#admit()) return;
      return this.sendError({
        code: "bad_request",
        message: "binary frames are not supported; send JSON text frames",
        retryable: false,
      });
    }
    if (byteLength(data) > PROTOCOL_LIMITS.maxFrameBytes) {
      return this.#tooLarge();
    }
    if (!this.#admit()) return;
    const decoded = decodeClientFrame(data);
    if (!decoded.ok) {
      return this.sendError({
        code: decoded.error.code,
        message: decoded.error.message,
        retryable: false,
        ...(decoded.error.path === undefined ? {} : { path: decoded.error.path }),
      });
    }
    const frame = decoded.frame;
    this.runtime.track(
      this.#dispatch(frame).catch((error) => {
        if (isDatabaseUnavailable(error)) {
          log("warn", "db_unavailable", {
            request_id: this.requestId,
            what: `${frame.type} frame`,
            user_id: this.userId,
          });
          return this.sendError({
            code: "db_unavailable",
            message: `The database cannot be reached right now; send the ${frame.type} frame ` +
              "again shortly",
            retryable: true,
            retry_after_ms: DATABASE_RETRY_AFTER_SECONDS * 1000,
            ...refOf(frame),
          });
        }
        logFailure("client_frame", error, {
          request_id: this.requestId,
          user_id: this.userId,
          frame: frame.type,
        });
        this.sendError({
          code: "internal_error",
          message: `The ${frame.type} frame failed on the server`,
          retryable: true,
          ...refOf(frame),
        });
      }),
    );
  }

  async #dispatch(frame: ClientFrame): Promise<void> {
    switch (frame.type) {
      case "ping":
        return this.send({ type: "pong" });
      case "auth":
        return await this.#renew(frame.access_token);
      case "chat": {
        const before = this.#chatsStored;
        const answered = Promise.withResolvers<void>();
        this.#chatsStored = answered.promise;
        await before;
        try {
          return await handleChat(this.runtime, this, frame, { onAnswered: answered.resolve });
        } finally {
          answered.resolve();
        }
      }
      case "resume":
        return await followTurn(
          this.runtime,
          this,
          frame.turn_id,
          frame.after_seq,
          frame.epoch ?? 0,
        );
      case "cancel": {
        if (await this.runtime.cancel(this.userId, frame.turn_id)) return;
        return this.sendError({
          code: "not_running",
          message: "No running turn of yours has this id",
          retryable: false,
          ref: frame.turn_id,
        });
      }
      case "approve": {
        const refused = await this.runtime.approve(this.#user, frame);
        if (refused) this.sendError(refused);
        return;
      }
    }
  }

  #admit(): boolean {
    if (this.#window.admit()) return true;
    this.sendError({
      code: "rate_limited",
      reason: "frames_per_second",
      message: `more than ${PROTOCOL_LIMITS.maxFramesPerSecond} frames per second; this one ` +
        "was dropped",
      retryable: true,
      retry_after_ms: this.#window.retryAfterMs(),
    });
    return false;
  }

  /**
   * Deno hands over a message only once it has read all of it, so a size check cannot spare
   * the memory of the frame at hand; closing at the first one spares the next ones (a client
   * could otherwise make the isolate buffer megabytes twenty times a second). The frame still
   * counts against the rate.
   */
  #tooLarge(): void {
    this.#window.admit();
    this.sendError({
      code: "frame_too_large",
      message: `frames may be at most ${PROTOCOL_LIMITS.maxFrameBytes} bytes; closing`,
      retryable: false,
    });
    this.close(CLOSE_CODES.frameTooLarge, "frame too large");
  }
}

function byteLength(text: string): number {
  // A UTF-16 unit takes 1 to 3 UTF-8 bytes (a surrogate pair 4 for 2): most frames need no
  // encoding, and an oversized one is not copied once more just to be refused.
  if (text.length * 3 <= PROTOCOL_LIMITS.maxFrameBytes) return text.length;
  if (text.length > PROTOCOL_LIMITS.maxFrameBytes) return text.length;
  return new TextEncoder().encode(text).byteLength;
}

function refOf(frame: ClientFrame): { ref?: string } {
  switch (frame.type) {
    case "chat":
      return { ref: frame.id };
    case "cancel":
    case "resume":
      return { ref: frame.turn_id };
    case "approve":
      return { ref: frame.call_id };
    default:
      return {};
  }
}
