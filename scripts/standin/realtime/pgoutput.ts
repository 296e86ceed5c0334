/**
 * Decoder for the replication stream of a logical slot using Postgres's built-in `pgoutput`
 * plugin (protocol version 1, text tuples): the CopyData frames a walsender sends after
 * `START_REPLICATION ... LOGICAL`, and the standby status update it expects back.
 *
 * Pure functions over bytes; the connection lives in change_feed.ts.
 */

/** Microseconds between the Unix epoch and the Postgres epoch (2000-01-01). */
const POSTGRES_EPOCH_US = 946_684_800_000_000n;

export interface RelationColumn {
  name: string;
  typeOid: number;
  /** Part of the replica identity (the primary key, by default). */
  isKey: boolean;
}

export interface RelationMessage {
  tag: "relation";
  relationId: number;
  schema: string;
  table: string;
  /** d default, n nothing, f full, i index. */
  replicaIdentity: string;
  columns: RelationColumn[];
}

/** A tuple in text format: `null` is SQL NULL, `undefined` an unchanged TOASTed value. */
export type TupleData = (string | null | undefined)[];

export type PgOutputMessage =
  | { tag: "begin"; finalLsn: bigint; commitTimestampUs: bigint; xid: number }
  | { tag: "commit"; commitLsn: bigint; endLsn: bigint; commitTimestampUs: bigint }
  | RelationMessage
  | { tag: "type"; typeOid: number; schema: string; name: string }
  | { tag: "insert"; relationId: number; newTuple: TupleData }
  | {
    tag: "update";
    relationId: number;
    /** "K": only the replica identity key changed/was logged; "O": the full old row. */
    oldKind: "K" | "O" | null;
    oldTuple: TupleData | null;
    newTuple: TupleData;
  }
  | { tag: "delete"; relationId: number; oldKind: "K" | "O"; oldTuple: TupleData }
  | { tag: "truncate"; relationIds: number[] }
  | { tag: "origin" }
  | { tag: "message" };

export type ReplicationFrame =
  | { tag: "xlogdata"; walStart: bigint; walEnd: bigint; message: PgOutputMessage }
  | { tag: "keepalive"; walEnd: bigint; replyRequested: boolean };

const utf8 = new TextDecoder();

class Reader {
  offset = 0;
  readonly view: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u8(): number {
    return this.view.getUint8(this.offset++);
  }
  i16(): number {
    const value = this.view.getInt16(this.offset);
    this.offset += 2;
    return value;
  }
  u32(): number {
    const value = this.view.getUint32(this.offset);
    this.offset += 4;
    return value;
  }
  i32(): number {
    const value = this.view.getInt32(this.offset);
    this.offset += 4;
    return value;
  }
  u64(): bigint {
    const value = this.view.getBigUint64(this.offset);
    this.offset += 8;
    return value;
  }
  i64(): bigint {
    const value = this.view.getBigInt64(this.offset);
    this.offset += 8;
    return value;
  }
  cstring(): string {
    const end = this.bytes.indexOf(0, this.offset);
    if (end < 0) throw new PgOutputError("unterminated string");
    const value = utf8.decode(this.bytes.subarray(this.offset, end));
    this.offset = end + 1;
    return value;
  }
  text(length: number): string {
    const value = utf8.decode(this.bytes.subarray(this.offset, this.offset + length));
    this.offset += length;
    return value;
  }
}

export class PgOutputError extends Error {
  constructor(message: string) {
    super(`pgoutput: ${message}`);
    this.name = "PgOutputError";
  }
}

/** One CopyData payload from the walsender. */
export function decodeReplicationFrame(bytes: Uint8Array): ReplicationFrame | undefined {
  const reader = new Reader(bytes);
  const kind = String.fromCharCode(reader.u8());
  if (kind === "w") {
    const walStart = reader.u64();
    const walEnd = reader.u64();
    reader.i64(); // send time
    return { tag: "xlogdata", walStart, walEnd, message: decodeMessage(reader) };
  }
  if (kind === "k") {
    const walEnd = reader.u64();
    reader.i64(); // send time
    return { tag: "keepalive", walEnd, replyRequested: reader.u8() === 1 };
  }
  return undefined;
}

function decodeMessage(reader: Reader): PgOutputMessage {
  const tag = String.fromCharCode(reader.u8());
  switch (tag) {
    case "B": {
      const finalLsn = reader.u64();
      const commitTimestampUs = reader.i64();
      return { tag: "begin", finalLsn, commitTimestampUs, xid: reader.u32() };
    }
    case "C": {
      reader.u8(); // flags
      const commitLsn = reader.u64();
      const endLsn = reader.u64();
      return { tag: "commit", commitLsn, endLsn, commitTimestampUs: reader.i64() };
    }
    case "R": {
      const relationId = reader.u32();
      const schema = reader.cstring() || "pg_catalog";
      const table = reader.cstring();
      const replicaIdentity = String.fromCharCode(reader.u8());
      const count = reader.i16();
      const columns: RelationColumn[] = [];
      for (let i = 0; i < count; i++) {
        const flags = reader.u8();
        const name = reader.cstring();
        const typeOid = reader.u32();
        reader.i32(); // typmod
        columns.push({ name, typeOid, isKey: (flags & 1) === 1 });
      }
      return { tag: "relation", relationId, schema, table, replicaIdentity, columns };
    }
    case "Y": {
      const typeOid = reader.u32();
      const schema = reader.cstring();
      return { tag: "type", typeOid, schema, name: reader.cstring() };
    }
    case "I": {
      const relationId = reader.u32();
      expectByte(reader, "N");
      return { tag: "insert", relationId, newTuple: readTuple(reader) };
    }
    case "U": {
      const relationId = reader.u32();
      let marker = String.fromCharCode(reader.u8());
      let oldKind: "K" | "O" | null = null;
      let oldTuple: TupleData | null = null;
      if (marker === "K" || marker === "O") {
        oldKind = marker;
        oldTuple = readTuple(reader);
        marker = String.fromCharCode(reader.u8());
      }
      if (marker !== "N") throw new PgOutputError(`update without new tuple (${marker})`);
      return { tag: "update", relationId, oldKind, oldTuple, newTuple: readTuple(reader) };
    }
    case "D": {
      const relationId = reader.u32();
      const marker = String.fromCharCode(reader.u8());
      if (marker !== "K" && marker !== "O") {
        throw new PgOutputError(`delete without old tuple (${marker})`);
      }
      return { tag: "delete", relationId, oldKind: marker, oldTuple: readTuple(reader) };
    }
    case "T": {
      const count = reader.u32();
      reader.u8(); // options
      const relationIds: number[] = [];
      for (let i = 0; i < count; i++) relationIds.push(reader.u32());
      return { tag: "truncate", relationIds };
    }
    case "O":
      return { tag: "origin" };
    case "M":
      return { tag: "message" };
    default:
      throw new PgOutputError(`unknown message tag ${JSON.stringify(tag)}`);
  }
}

function expectByte(reader: Reader, expected: string): void {
  const actual = String.fromCharCode(reader.u8());
  if (actual !== expected) throw new PgOutputError(`expected ${expected}, got ${actual}`);
}

function readTuple(reader: Reader): TupleData {
  const count = reader.i16();
  const values: TupleData = new Array(count);
  for (let i = 0; i < count; i++) {
    const kind = String.fromCharCode(reader.u8());
    if (kind === "n") values[i] = null;
    else if (kind === "u") values[i] = undefined;
    else if (kind === "t") values[i] = reader.text(reader.i32());
    else throw new PgOutputError(`unsupported tuple value kind ${JSON.stringify(kind)}`);
  }
  return values;
}

/** Standby status update ('r'): everything up to `lsn` is processed and may be recycled. */
export function encodeStandbyStatus(lsn: bigint, now = Date.now()): Uint8Array {
  const bytes = new Uint8Array(34);
  const view = new DataView(bytes.buffer);
  bytes[0] = "r".charCodeAt(0);
  view.setBigUint64(1, lsn);
  view.setBigUint64(9, lsn);
  view.setBigUint64(17, lsn);
  view.setBigInt64(25, BigInt(now) * 1000n - POSTGRES_EPOCH_US);
  bytes[33] = 0;
  return bytes;
}

/** A Postgres timestamp (µs since 2000-01-01) as Realtime prints commit_timestamp. */
export function commitTimestampIso(postgresMicroseconds: bigint): string {
  const unixMs = (postgresMicroseconds + POSTGRES_EPOCH_US) / 1000n;
  return new Date(Number(unixMs)).toISOString();
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${
    (lsn & 0xffffffffn).toString(16).toUpperCase()
  }`;
}

export function parseLsn(text: string): bigint {
  const match = /^([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)$/.exec(text);
  if (!match) throw new PgOutputError(`invalid LSN ${JSON.stringify(text)}`);
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}
