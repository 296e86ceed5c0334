/**
 * Joined channels and the indexes that find them: by topic (broadcast fan-out) and by table
 * (change fan-out). A channel is one `phx_join` on one socket; it owns its identity (claims),
 * its postgres_changes bindings and its token-expiry timer.
 */
import type { PostgresBinding } from "./bindings.ts";
import type { Identity } from "./identity.ts";
import {
  type BroadcastEnvelope,
  encodeMessage,
  encodeUserBroadcast,
  encodeWithRawPayload,
  type Vsn,
} from "./phoenix.ts";

/** The socket side of a channel. */
export interface Transport {
  readonly vsn: Vsn;
  sendText(text: string): void;
  sendBinary(bytes: Uint8Array): void;
}

export interface ChannelConfig {
  /** Receive one's own broadcasts. */
  self: boolean;
  /** Acknowledge each broadcast push with a reply. */
  ack: boolean;
}

/** setTimeout's limit; tokens living longer are re-checked when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Channel {
  readonly subTopic: string;
  bindings: PostgresBinding[] = [];
  #expiryTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  constructor(
    readonly transport: Transport,
    readonly topic: string,
    readonly joinRef: string,
    readonly config: ChannelConfig,
    public identity: Identity,
  ) {
    this.subTopic = topic.replace(/^realtime:/, "");
  }

  get closed(): boolean {
    return this.#closed;
  }

  reply(ref: string | null, status: "ok" | "error", response: unknown): void {
    this.#send(this.joinRef, ref, "phx_reply", { status, response });
  }

  /** `system` message, e.g. "Subscribed to PostgreSQL" or why the channel is closing. */
  pushSystem(extension: string, status: "ok" | "error", message: string): void {
    this.#send(this.joinRef, null, "system", {
      extension,
      status,
      message,
      channel: this.subTopic,
    });
  }

  pushChange(ids: number[], dataJson: string): void {
    if (this.#closed) return;
    this.transport.sendText(
      encodeWithRawPayload(
        { joinRef: null, ref: null, topic: this.topic, event: "postgres_changes" },
        `{"ids":${JSON.stringify(ids)},"data":${dataJson}}`,
        this.transport.vsn,
      ),
    );
  }

  pushBroadcast(envelope: BroadcastEnvelope): void {
    if (this.#closed) return;
    if (envelope.payload instanceof Uint8Array) {
      // Raw bytes only travel in a binary frame, which vsn 1.0.0 cannot represent.
      if (this.transport.vsn === "2.0.0") {
        this.transport.sendBinary(
          encodeUserBroadcast(this.topic, envelope.event, envelope.payload, envelope.meta),
        );
      }
      return;
    }
    this.#send(null, null, "broadcast", envelope);
  }

  /** Calls `onExpiry` when the identity's token expires (never for the apikey). */
  watchExpiry(onExpiry: () => void): void {
    clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    const expiresAt = this.identity.expiresAt;
    if (expiresAt === undefined) return;
    const delay = expiresAt * 1000 - Date.now();
    this.#expiryTimer = setTimeout(() => {
      if (Date.now() >= expiresAt * 1000) onExpiry();
      else this.watchExpiry(onExpiry);
    }, Math.max(0, Math.min(delay, MAX_TIMER_MS)));
  }

  /** Ends the channel: `phx_close` carries the join ref as its ref, as Phoenix sends it. */
  close(notifyClient: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#expiryTimer);
    if (notifyClient) this.#send(this.joinRef, this.joinRef, "phx_close", {});
  }

  #send(joinRef: string | null, ref: string | null, event: string, payload: unknown): void {
    this.transport.sendText(
      encodeMessage({ joinRef, ref, topic: this.topic, event, payload }, this.transport.vsn),
    );
  }
}

export class ChannelRegistry {
  readonly #byTopic = new Map<string, Set<Channel>>();
  readonly #byTable = new Map<number, Set<Channel>>();

  add(channel: Channel): void {
    addTo(this.#byTopic, channel.topic, channel);
    this.#indexTables(channel);
  }

  remove(channel: Channel): void {
    removeFrom(this.#byTopic, channel.topic, channel);
    this.#unindexTables(channel);
  }

  setBindings(channel: Channel, bindings: PostgresBinding[]): void {
    this.#unindexTables(channel);
    channel.bindings = bindings;
    if (this.#byTopic.get(channel.topic)?.has(channel)) this.#indexTables(channel);
  }

  onTopic(topic: string): ReadonlySet<Channel> {
    return this.#byTopic.get(topic) ?? EMPTY;
  }

  subscribedTo(tableOid: number): ReadonlySet<Channel> {
    return this.#byTable.get(tableOid) ?? EMPTY;
  }

  #indexTables(channel: Channel): void {
    for (const binding of channel.bindings) {
      for (const oid of binding.tableOids) addTo(this.#byTable, oid, channel);
    }
  }

  #unindexTables(channel: Channel): void {
    for (const binding of channel.bindings) {
      for (const oid of binding.tableOids) removeFrom(this.#byTable, oid, channel);
    }
  }
}

const EMPTY: ReadonlySet<Channel> = new Set();

function addTo<K>(map: Map<K, Set<Channel>>, key: K, channel: Channel): void {
  let set = map.get(key);
  if (!set) map.set(key, set = new Set());
  set.add(channel);
}

function removeFrom<K>(map: Map<K, Set<Channel>>, key: K, channel: Channel): void {
  const set = map.get(key);
  if (!set) return;
  set.delete(channel);
  if (set.size === 0) map.delete(key);
}
