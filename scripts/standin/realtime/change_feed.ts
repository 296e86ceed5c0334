/**
 * Captures every committed INSERT, UPDATE and DELETE on the publication's tables, in commit
 * order, through logical decoding: a replication connection, a temporary slot with the
 * built-in `pgoutput` plugin and `publication_names` = the publication. See
 * docs/realtime.md for why this and not triggers.
 *
 * Postgres only decodes a transaction once it has committed and hands transactions over in
 * commit order, so changes reach `onChanges` in exactly that order, each exactly once while
 * the slot lives. `onChanges` is awaited before the next batch is delivered; whatever
 * arrives meanwhile is queued and delivered as the next batch.
 *
 * The slot is temporary: it vanishes with the connection, so nothing is left holding WAL on
 * a developer's disk after a crash. The price: changes committed while the connection is
 * down are not replayed (the feed reconnects with a fresh slot and says so via `onStatus`).
 */
import postgres from "postgres";
import type { Catalog, TableInfo } from "./catalog.ts";
import type { RawRow } from "./filters.ts";
import {
  commitTimestampIso,
  decodeReplicationFrame,
  encodeStandbyStatus,
  formatLsn,
  parseLsn,
  type PgOutputMessage,
  type RelationMessage,
  type TupleData,
} from "./pgoutput.ts";

export type ChangeType = "INSERT" | "UPDATE" | "DELETE";

export interface Change {
  type: ChangeType;
  table: TableInfo;
  /** The columns pgoutput sent, in its order. */
  relation: RelationMessage;
  /** `2026-01-01T00:00:00.000Z`, as Realtime prints it. */
  commitTimestamp: string;
  /** The (32-bit) id of the transaction that made the change. */
  xid: number;
  /** INSERT/UPDATE: the new row (`undefined` for an unchanged TOASTed value). */
  newRow: RawRow | null;
  /**
   * UPDATE/DELETE: the old row as the WAL has it — the replica identity columns (the primary
   * key by default), or every column with REPLICA IDENTITY FULL.
   */
  oldRow: RawRow | null;
}

export type FeedStatus = "up" | "down";

export interface ChangeFeedOptions {
  databaseUrl: string;
  publication: string;
  catalog: Catalog;
  onChanges(changes: Change[]): Promise<void>;
  /** The replication connection dropped ("down") or streams again ("up"). */
  onStatus?(status: FeedStatus, detail: string): void;
}

export interface ChangeFeed {
  close(): Promise<void>;
}

/** Most changes handed to `onChanges` at once; bounds the latency one batch adds. */
const MAX_BATCH = 500;
const PAUSE_ABOVE = 50_000;
const RESUME_BELOW = 5_000;
const STATUS_INTERVAL_MS = 10_000;
const RECONNECT_DELAYS_MS = [500, 1_000, 2_000, 5_000];

type Pending =
  | { tag: "relation"; relation: RelationMessage }
  | { tag: "type"; typeOid: number }
  | {
    tag: "change";
    type: ChangeType;
    /** The table's shape when the change was made (a later Relation message may differ). */
    relation: RelationMessage;
    commitTimestamp: string;
    xid: number;
    newTuple: TupleData | null;
    oldTuple: TupleData | null;
    oldIsKeyOnly: boolean;
  }
  | { tag: "commit"; endLsn: bigint };

interface ReplicationStream {
  on(event: "data", listener: (chunk: Uint8Array) => void): void;
  on(event: "error", listener: (error: unknown) => void): void;
  on(event: "close", listener: () => void): void;
  once(event: "close", listener: () => void): void;
  write(chunk: Uint8Array): boolean;
  end(): void;
  pause(): void;
  resume(): void;
  destroyed?: boolean;
}

interface Connection {
  sql: postgres.Sql;
  stream: ReplicationStream;
}

/** Resolves once the slot exists: every transaction committed from then on is delivered. */
export async function startChangeFeed(options: ChangeFeedOptions): Promise<ChangeFeed> {
  const relations = new Map<number, RelationMessage>();
  const pending = new Queue<Pending>();
  let commitTimestamp = "";
  let xid = 0;
  let processedLsn = 0n;
  let processing: Promise<void> | undefined;
  let connection: Connection | undefined;
  let closed = false;
  let paused = false;
  let reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  let reconnectAttempt = 0;

  const sendStatus = () => {
    if (!connection || connection.stream.destroyed || processedLsn === 0n) return;
    connection.stream.write(encodeStandbyStatus(processedLsn));
  };
  const statusTimer = setInterval(sendStatus, STATUS_INTERVAL_MS);

  // Work triggered by replication data starts from a fresh task, not from inside the
  // stream's 'data' callback: under Deno's Node layer, postgres.js queries issued from that
  // callback chain were seen to sit unsent until the next replication packet arrived
  // (hundreds of ms later). A message to ourselves is the cheapest fresh task (a 0 ms
  // timer costs a few ms).
  const wakeUp = new MessageChannel();
  const woken: (() => void)[] = [];
  wakeUp.port1.onmessage = () => woken.shift()?.();
  const nextTask = () =>
    new Promise<void>((resolve) => {
      woken.push(resolve);
      wakeUp.port2.postMessage(null);
    });

  const relationOf = (relationId: number): RelationMessage => {
    const relation = relations.get(relationId);
    // pgoutput always announces a relation before its first row.
    if (!relation) throw new Error(`realtime: change for unannounced relation ${relationId}`);
    return relation;
  };

  const onMessage = (message: PgOutputMessage) => {
    switch (message.tag) {
      case "begin":
        commitTimestamp = commitTimestampIso(message.commitTimestampUs);
        xid = message.xid;
        return;
      case "relation": {
        const known = relations.get(message.relationId);
        relations.set(message.relationId, message);
        // pgoutput repeats Relation messages after any relcache invalidation; only a
        // different shape means the table changed.
        if (!known || relationShape(known) !== relationShape(message)) {
          pending.push({ tag: "relation", relation: message });
        }
        return;
      }
      case "type":
        pending.push({ tag: "type", typeOid: message.typeOid });
        return;
      case "insert":
        pending.push({
          tag: "change",
          type: "INSERT",
          relation: relationOf(message.relationId),
          commitTimestamp,
          xid,
          newTuple: message.newTuple,
          oldTuple: null,
          oldIsKeyOnly: false,
        });
        return;
      case "update":
        pending.push({
          tag: "change",
          type: "UPDATE",
          relation: relationOf(message.relationId),
          commitTimestamp,
          xid,
          newTuple: message.newTuple,
          oldTuple: message.oldTuple,
          oldIsKeyOnly: message.oldKind !== "O",
        });
        return;
      case "delete":
        pending.push({
          tag: "change",
          type: "DELETE",
          relation: relationOf(message.relationId),
          commitTimestamp,
          xid,
          newTuple: null,
          oldTuple: message.oldTuple,
          oldIsKeyOnly: message.oldKind === "K",
        });
        return;
      case "commit":
        pending.push({ tag: "commit", endLsn: message.endLsn });
        return;
      default:
        // truncate, origin and logical messages carry nothing Realtime reports.
        return;
    }
  };

  const onData = (chunk: Uint8Array) => {
    try {
      receive(chunk);
    } catch (error) {
      // Thrown inside the stream's callback it would take the whole process down; a frame
      // this decoder cannot read is a bug to report, and the stream goes on.
      console.error("realtime: undecodable replication frame", error);
    }
  };

  const receive = (chunk: Uint8Array) => {
    const frame = decodeReplicationFrame(chunk);
    if (!frame) return;
    if (frame.tag === "keepalive") {
      if (frame.replyRequested) sendStatus();
      return;
    }
    onMessage(frame.message);
    if (!paused && pending.length > PAUSE_ABOVE && connection) {
      paused = true;
      connection.stream.pause();
    }
    if (!processing) {
      processing = nextTask().then(drain)
        .catch((error) => console.error("realtime: reading the change feed failed", error))
        .finally(() => processing = undefined);
    }
  };

  const drain = async () => {
    while (pending.length > 0) {
      const batch: Change[] = [];
      let lastCommit = 0n;
      while (pending.length > 0 && batch.length < MAX_BATCH) {
        const item = pending.shift();
        if (item.tag === "relation") {
          options.catalog.invalidateTable(item.relation.relationId);
        } else if (item.tag === "type") {
          options.catalog.forgetType(item.typeOid);
        } else if (item.tag === "commit") {
          lastCommit = item.endLsn;
        } else {
          const change = await toChange(item);
          if (change) batch.push(change);
        }
      }
      if (paused && pending.length < RESUME_BELOW && connection) {
        paused = false;
        connection.stream.resume();
      }
      if (batch.length > 0) {
        try {
          await options.onChanges(batch);
        } catch (error) {
          // One failed batch must not stop the stream for everyone; it is reported, not hidden.
          console.error("realtime: delivering changes failed", error);
        }
      }
      if (lastCommit > processedLsn) processedLsn = lastCommit;
    }
  };

  const toChange = async (item: Extract<Pending, { tag: "change" }>): Promise<Change | null> => {
    const relation = item.relation;
    const table = await options.catalog.table(relation.relationId);
    if (!table) return null; // dropped since
    return {
      type: item.type,
      table,
      relation,
      commitTimestamp: item.commitTimestamp,
      xid: item.xid,
      newRow: item.newTuple ? rowOf(relation, item.newTuple, false) : null,
      oldRow: oldRowOf(relation, item),
    };
  };

  const connect = async (): Promise<Connection> => {
    const sql = postgres(options.databaseUrl, {
      max: 1,
      fetch_types: false,
      idle_timeout: 0,
      max_lifetime: 0,
      onnotice: () => {},
      connection: {
        replication: "database",
        application_name: "local-realtime-feed",
        TimeZone: "UTC",
        DateStyle: "ISO, MDY",
      } as Record<string, string>,
    });
    try {
      const slot = `local_realtime_${crypto.randomUUID().replaceAll("-", "").slice(0, 20)}`;
      const [created] = await sql.unsafe<{ consistent_point: string }[]>(
        `CREATE_REPLICATION_SLOT ${slot} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT`,
      );
      const start = parseLsn(created.consistent_point);
      const publication = options.publication.replaceAll("'", "''");
      const stream = await sql.unsafe(
        `START_REPLICATION SLOT ${slot} LOGICAL ${formatLsn(start)} ` +
          `(proto_version '1', publication_names '${publication}')`,
      ).writable() as unknown as ReplicationStream;
      stream.on("data", onData);
      stream.on("error", (error) => {
        if (!closed) console.error("realtime: replication stream error", error);
      });
      stream.on("close", () => {
        if (closed) return;
        connection = undefined;
        options.onStatus?.("down", "replication connection lost");
        void sql.end({ timeout: 0 });
        scheduleReconnect();
      });
      return { sql, stream };
    } catch (error) {
      await sql.end({ timeout: 0 });
      throw error;
    }
  };

  const scheduleReconnect = () => {
    const delay = RECONNECT_DELAYS_MS[Math.min(reconnectAttempt, RECONNECT_DELAYS_MS.length - 1)];
    reconnectAttempt++;
    reconnectTimer = setTimeout(async () => {
      reconnectTimer = undefined;
      if (closed) return;
      try {
        // A fresh slot starts from now and announces every relation again before its rows.
        relations.clear();
        const reconnected = await connect();
        if (closed) {
          // Stopped while connecting: close() saw no connection, so this one is ended here.
          reconnected.stream.end();
          await reconnected.sql.end({ timeout: 1 });
          return;
        }
        connection = reconnected;
        reconnectAttempt = 0;
        options.onStatus?.("up", "replication connection re-established");
      } catch (error) {
        // A stop during the attempt: the failure is the stop's, not news.
        if (closed) return;
        console.error("realtime: reconnecting the change feed failed", error);
        scheduleReconnect();
      }
    }, delay);
  };

  const stopTimersAndPorts = () => {
    clearInterval(statusTimer);
    if (reconnectTimer !== undefined) clearTimeout(reconnectTimer);
    wakeUp.port1.close();
    wakeUp.port2.close();
  };

  try {
    connection = await connect();
  } catch (error) {
    stopTimersAndPorts();
    throw error;
  }

  return {
    async close() {
      if (closed) return;
      closed = true;
      const current = connection;
      connection = undefined;
      if (current) {
        if (!current.stream.destroyed) {
          await new Promise<void>((resolve) => {
            current.stream.once("close", resolve);
            current.stream.end();
          });
        }
        await current.sql.end({ timeout: 1 });
      }
      pending.clear();
      await processing;
      stopTimersAndPorts();
    },
  };
}

/** FIFO with O(1) shift: the backlog can reach tens of thousands of messages. */
class Queue<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  shift(): T {
    if (this.length === 0) throw new RangeError("shift from an empty queue");
    const item = this.#items[this.#head] as T;
    this.#items[this.#head++] = undefined;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }

  clear(): void {
    this.#items = [];
    this.#head = 0;
  }
}

function relationShape(relation: RelationMessage): string {
  return JSON.stringify([
    relation.schema,
    relation.table,
    relation.replicaIdentity,
    relation.columns,
  ]);
}

function rowOf(relation: RelationMessage, tuple: TupleData, keysOnly: boolean): RawRow {
  const row = new Map<string, string | null | undefined>();
  relation.columns.forEach((column, index) => {
    if (!keysOnly || column.isKey) row.set(column.name, tuple[index]);
  });
  return row;
}

function oldRowOf(
  relation: RelationMessage,
  item: Extract<Pending, { tag: "change" }>,
): RawRow | null {
  if (item.type === "INSERT") return null;
  if (item.oldTuple) return rowOf(relation, item.oldTuple, item.oldIsKeyOnly);
  // UPDATE that did not touch the key: the WAL logs no old tuple; the key is the new one's.
  return item.newTuple ? rowOf(relation, item.newTuple, true) : null;
}
