/**
 * One Realtime WebSocket: Phoenix heartbeats, channel joins (with postgres_changes
 * bindings), leaves, access-token refreshes and broadcasts, answered the way Realtime
 * answers them. Frames are handled one after another, in arrival order, like a Phoenix
 * channel process handles its mailbox.
 */
import type { TokenVerifier } from "../token_verifier.ts";
import { compileBindings } from "./bindings.ts";
import { fanOut } from "./broadcast.ts";
import type { Catalog } from "./catalog.ts";
import { Channel, type ChannelRegistry, type Transport } from "./channels.ts";
import { type Identity, type IdentityResult, resolveIdentity, usesApikey } from "./identity.ts";
import {
  type BroadcastEnvelope,
  decodeFrame,
  encodeMessage,
  type PhoenixMessage,
  type Vsn,
} from "./phoenix.ts";

export interface SessionContext {
  registry: ChannelRegistry;
  catalog: Catalog;
  verifier: TokenVerifier;
  /** Who the socket's apikey stands for. */
  apikey: Identity;
  /** Why changes are not delivered right now (the replication connection is down), or undefined. */
  replicationDown(): string | undefined;
}

export class Session implements Transport {
  lastSeen = Date.now();
  readonly #channels = new Map<string, Channel>();
  #queue: Promise<void> = Promise.resolve();
  #disposed = false;

  constructor(
    readonly socket: WebSocket,
    readonly vsn: Vsn,
    readonly context: SessionContext,
  ) {}

  sendText(text: string): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(text);
  }

  sendBinary(bytes: Uint8Array): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(bytes);
  }

  receive(data: string | ArrayBuffer): void {
    this.lastSeen = Date.now();
    this.#queue = this.#queue
      .then(() => this.#handle(data))
      .catch((error) => console.error("realtime: handling a frame failed", error));
  }

  /** The socket is gone: every channel on it ends without a word to the client. */
  dispose(): void {
    this.#disposed = true;
    for (const channel of this.#channels.values()) this.#drop(channel, false);
  }

  /** Every channel of this socket: the change feed stopped or resumed. */
  pushSystemToSubscribers(status: "ok" | "error", message: string): void {
    for (const channel of this.#channels.values()) {
      if (channel.bindings.length > 0) channel.pushSystem("postgres_changes", status, message);
    }
  }

  async #handle(data: string | ArrayBuffer): Promise<void> {
    if (this.#disposed) return;
    const decoded = decodeFrame(data, this.vsn);
    if (!decoded.ok) {
      console.warn(`realtime: ignoring frame (${decoded.code}): ${decoded.message}`);
      return;
    }
    const message = decoded.message;
    if (message.topic === "phoenix") {
      if (message.event === "heartbeat") this.#reply(message, "ok", {});
      return;
    }
    switch (message.event) {
      case "phx_join":
        return await this.#join(message);
      case "phx_leave":
        return this.#leave(message);
      case "access_token":
        return await this.#refreshToken(message);
      case "broadcast":
        return this.#broadcast(message);
      case "presence":
        return this.#withChannel(message, (channel) =>
          channel.reply(message.ref, "error", {
            reason: "Presence is not supported by the local Realtime stand-in",
          }));
      default:
        // Realtime ignores unexpected client events on a joined channel.
        return this.#withChannel(message, () => {});
    }
  }

  async #join(message: PhoenixMessage): Promise<void> {
    const joinRef = message.joinRef ?? message.ref ?? "";
    const refuse = (reason: string) =>
      this.sendText(encodeMessage({
        joinRef,
        ref: message.ref,
        topic: message.topic,
        event: "phx_reply",
        payload: { status: "error", response: { reason } },
      }, this.vsn));

    if (!message.topic.startsWith("realtime:") || message.topic === "realtime:") {
      return refuse("TopicNameRequired: You must provide a topic name");
    }
    const payload = asRecord(message.payload);
    const config = asRecord(payload.config);
    const broadcast = asRecord(config.broadcast);
    if (config.private === true) {
      return refuse(
        "Unauthorized: You do not have permissions to read from this Channel topic: " +
          message.topic.slice("realtime:".length),
      );
    }
    const resolved = await this.#resolve(payload.access_token ?? payload.user_token);
    if (!resolved.ok) return refuse(resolved.reason);

    const existing = this.#channels.get(message.topic);
    if (existing) this.#drop(existing, true);

    const channel = new Channel(
      this,
      message.topic,
      joinRef,
      { self: broadcast.self === true, ack: broadcast.ack === true },
      resolved.identity,
    );
    const compiled = await compileBindings(
      config.postgres_changes,
      resolved.identity.role,
      this.context.catalog,
    );
    if (this.#disposed) return;
    this.#channels.set(channel.topic, channel);
    this.context.registry.add(channel);
    // Registered before the reply: anything committed after the client hears "ok" reaches it.
    if (compiled.ok) this.context.registry.setBindings(channel, compiled.bindings);
    channel.reply(message.ref, "ok", { postgres_changes: compiled.echo });
    if (compiled.echo.length > 0) {
      const down = this.context.replicationDown();
      if (!compiled.ok) channel.pushSystem("postgres_changes", "error", compiled.message);
      // Joined while the feed is down: the channel hears so now, and "Subscribed" when it is back.
      else if (down !== undefined) channel.pushSystem("postgres_changes", "error", down);
      else channel.pushSystem("postgres_changes", "ok", "Subscribed to PostgreSQL");
    }
    channel.watchExpiry(() => this.#shutdown(channel, "InvalidJWTToken: Token has expired"));
  }

  #leave(message: PhoenixMessage): void {
    this.#withChannel(message, (channel) => {
      channel.reply(message.ref, "ok", {});
      this.#drop(channel, true);
    });
  }

  /** No reply, as in Realtime; a token that does not verify ends the channel. */
  async #refreshToken(message: PhoenixMessage): Promise<void> {
    const channel = this.#channels.get(message.topic);
    if (!channel) return;
    const token = asRecord(message.payload).access_token;
    if (usesApikey(token) || token === channel.identity.token) return;
    const resolved = await this.#resolve(token);
    if (channel.closed) return;
    if (!resolved.ok) return this.#shutdown(channel, resolved.reason);
    channel.identity = resolved.identity;
    channel.watchExpiry(() => this.#shutdown(channel, "InvalidJWTToken: Token has expired"));
  }

  #broadcast(message: PhoenixMessage): void {
    this.#withChannel(message, (channel) => {
      const envelope = asRecord(message.payload);
      if (envelope.type !== "broadcast" || typeof envelope.event !== "string") {
        if (channel.config.ack) {
          channel.reply(message.ref, "error", { reason: "broadcast needs a string event" });
        }
        return;
      }
      fanOut(
        this.context.registry,
        channel.topic,
        envelope as unknown as BroadcastEnvelope,
        channel,
      );
      if (channel.config.ack) channel.reply(message.ref, "ok", {});
    });
  }

  /** Runs `action` on the joined channel, or answers "unmatched topic" as Phoenix does. */
  #withChannel(message: PhoenixMessage, action: (channel: Channel) => void): void {
    const channel = this.#channels.get(message.topic);
    if (channel) return action(channel);
    this.#reply(message, "error", { reason: "unmatched topic" });
  }

  #reply(message: PhoenixMessage, status: "ok" | "error", response: unknown): void {
    this.sendText(encodeMessage({
      joinRef: message.joinRef,
      ref: message.ref,
      topic: message.topic,
      event: "phx_reply",
      payload: { status, response },
    }, this.vsn));
  }

  async #resolve(token: unknown): Promise<IdentityResult> {
    try {
      return await resolveIdentity(token, this.context.apikey, this.context.verifier);
    } catch (error) {
      console.error("realtime: cannot verify access tokens", error);
      return {
        ok: false,
        code: "invalid_token",
        reason: "JwtSignerError: Failed to load the signing keys to verify the token",
      };
    }
  }

  /** Realtime's shutdown: a `system` error saying why, then `phx_close`. */
  #shutdown(channel: Channel, reason: string): void {
    if (channel.closed) return;
    channel.pushSystem("system", "error", reason);
    this.#drop(channel, true);
  }

  #drop(channel: Channel, notifyClient: boolean): void {
    channel.close(notifyClient);
    this.context.registry.remove(channel);
    if (this.#channels.get(channel.topic) === channel) this.#channels.delete(channel.topic);
  }
}

function asRecord(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? value as Record<string, unknown>
    : {};
}
