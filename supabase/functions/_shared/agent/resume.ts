/**
 * Following a turn from `seq` on: what `resume` does, and what a retried chat gets. A turn
 * this isolate runs is followed in memory (replay, then live, with nothing in between). Any
 * other turn is read from Postgres: its stored frames, then — while it runs on another
 * isolate or is parked — new frames as they are flushed, by polling (Supavisor's transaction
 * mode rules out LISTEN/NOTIFY). A turn whose isolate stopped renewing its lease is adopted
 * on the way and followed here.
 *
 * A client may hold frames that a dead isolate sent but never stored; the isolate that took
 * the turn over numbers its frames from the last stored one, after a `restart_step` frame.
 * The client's `epoch` (the last `restart_step` it saw) tells which of its frames still
 * stand: it gets everything from the first takeover it has not seen.
 */
import { abortableSleep } from "../abortable_sleep.ts";
import { type ErrorFrame, isErrorCode, isTerminalFrame } from "../agent_protocol.ts";
import { asUser } from "../db/client.ts";
import type { LiveTurn } from "./live_turn.ts";
import type { AgentRuntime } from "./runtime.ts";
import type { TurnClient } from "./turn_client.ts";
import {
  lastStoredFrame,
  loadTurn,
  readFrames,
  readQueuedChat,
  type StoredTurn,
} from "./turn_store.ts";
import { logFailure } from "../log.ts";

export async function followTurn(
  runtime: AgentRuntime,
  client: TurnClient,
  turnId: string,
  afterSeq: number,
  epoch = 0,
): Promise<void> {
  const here = runtime.turns.get(turnId);
  if (here && here.userId === client.user.id) {
    return await followLocally(runtime, client, here, standing(afterSeq, epoch, here.restarts));
  }
  const { sql } = runtime.deps;
  const found = await loadTurn(sql, client.user.id, turnId) ??
    await waitWhileQueued(runtime, client, turnId);
  if (found === "reported") return;
  let turn = found;
  if (!turn) {
    return client.sendError({
      code: "not_found",
      message: "No turn of yours has this id",
      retryable: false,
      ref: turnId,
    });
  }
  if (turn.orphaned) {
    await runtime.adopt({ userId: client.user.id, turnId });
    turn = await loadTurn(sql, client.user.id, turnId) ?? turn;
  }
  const after = standing(afterSeq, epoch, turn.restarts);
  // The turn may run here now (adopted just now, or started here meanwhile).
  const local = runtime.turns.get(turnId);
  if (local) return await followLocally(runtime, client, local, after);
  await pollTurn(runtime, client, turn, after, epoch);
}

/** The last seq of the client's frames that still stands, given the takeovers it has seen. */
function standing(
  afterSeq: number,
  epoch: number,
  restarts: readonly { epoch: number; seq: number }[],
): number {
  let after = afterSeq;
  for (const restart of restarts) {
    if (restart.epoch > epoch) after = Math.min(after, restart.seq - 1);
  }
  return after;
}

/** How many polls of a queued turn pass between looks for a free session to start it in. */
const QUEUE_KICK_POLLS = 4;

/**
 * A turn that is still a queued chat (`chat_queue.ts`): waits until it starts (then returns
 * it) or fails to (then says why, with the chat's id as `ref`: "reported"); undefined when
 * there is no such queued chat either. Now and then it starts the queue itself when the
 * session is free: the isolate that ended the turn ahead may have died before starting the
 * next.
 */
async function waitWhileQueued(
  runtime: AgentRuntime,
  client: TurnClient,
  turnId: string,
): Promise<StoredTurn | "reported" | undefined> {
  const { sql, config } = runtime.deps;
  const claims = client.user.claims;
  const stopped = new AbortController();
  const stop = () => stopped.abort();
  client.follow(turnId, stop);
  try {
    for (let poll = 0; !stopped.signal.aborted && client.isOpen; poll++) {
      // The queue row first, then the turn: a chat leaves the queue in the transaction that
      // starts its turn, so one of the two reads finds it (read together, both could miss).
      const queued = await asUser(sql, claims, (tx) => readQueuedChat(tx, turnId));
      const turn = await loadTurn(sql, client.user.id, turnId);
      if (turn) return turn;
      if (!queued) return undefined;
      if (queued.error) {
        client.sendError({ ...queued.error, ref: queued.chat_id });
        return "reported";
      }
      if (poll % QUEUE_KICK_POLLS === QUEUE_KICK_POLLS - 1) {
        // A failed look is only a missed chance: the next poll looks again.
        await runtime.startQueuedChats(client.user, queued.session_id).catch((error) =>
          logFailure("start_queued_chats", error, { user_id: client.user.id })
        );
      }
      await abortableSleep(config.pollIntervalMs, stopped.signal);
    }
  } finally {
    client.unfollow(turnId, stop);
  }
  return "reported";
}

async function followLocally(
  runtime: AgentRuntime,
  client: TurnClient,
  live: LiveTurn,
  afterSeq: number,
): Promise<void> {
  let after = afterSeq;
  if (after < live.baseSeq) {
    // The frames before this isolate took the turn are in storage only.
    const stored = await readFrames(runtime.deps.sql, client.user.claims, live.turnId, after);
    for (const frame of stored) {
      if (frame.seq > live.baseSeq) break;
      client.send(frame);
    }
    after = live.baseSeq;
  }
  let stop: () => void = () => {};
  const unsubscribe = live.subscribe(
    after,
    (frame) => {
      client.send(frame);
      if (isTerminalFrame(frame)) client.unfollow(live.turnId, stop);
    },
    (notice) => client.send(notice),
    (last) => {
      client.unfollow(live.turnId, stop);
      void followTurn(runtime, client, live.turnId, last, live.epoch).catch((error) =>
        logFailure("follow_turn", error, { turn_id: live.turnId })
      );
    },
  );
  stop = unsubscribe;
  client.follow(live.turnId, stop);
}

async function pollTurn(
  runtime: AgentRuntime,
  client: TurnClient,
  turn: StoredTurn,
  afterSeq: number,
  clientEpoch: number,
): Promise<void> {
  const { sql, config } = runtime.deps;
  const claims = client.user.claims;
  const stopped = new AbortController();
  const stop = () => stopped.abort();
  client.follow(turn.id, stop);
  let last = afterSeq;
  let epoch = clientEpoch;
  let endingSeen = false;
  try {
    while (!stopped.signal.aborted && client.isOpen) {
      const [frames, current] = await Promise.all([
        readFrames(sql, claims, turn.id, last),
        loadTurn(sql, client.user.id, turn.id),
      ]);
      // Taken over since the client's frames were counted: those past the takeover's first
      // frame are replaced (frames the dead isolate sent but never stored among them). Read
      // again from there, or the replacing frames (the ending too) are skipped as held.
      const stands = current ? standing(last, epoch, current.restarts) : last;
      if (stands < last) {
        last = stands;
        continue;
      }
      for (const frame of frames) {
        if (stopped.signal.aborted) return;
        client.send(frame);
        last = frame.seq;
        if (frame.type === "restart_step") epoch = Math.max(epoch, frame.epoch);
        if (isTerminalFrame(frame)) return;
      }
      if (!current) return;
      if (current.state !== "running" && current.state !== "parked") {
        // The two reads ran side by side: frames stored just before the ending (a turn
        // answered here may run to its end within one poll) can be missing from this read.
        // Once the ending is seen, a read started after it finds every frame.
        if (frames.length > 0 || !endingSeen) {
          endingSeen = true;
          continue;
        }
        // Ended, and the client has every stored frame. Unless the final flush failed, the
        // last of them ended the turn; otherwise say how it ended.
        const lastStored = await lastStoredFrame(sql, claims, turn.id);
        if (!lastStored || !isTerminalFrame(lastStored)) {
          client.send(endingFrame(current));
        }
        return;
      }
      if (current.orphaned) await runtime.adopt({ userId: client.user.id, turnId: turn.id });
      // Runs here now (adopted, or answered here): follow it in memory from here.
      const here = runtime.turns.get(turn.id);
      if (here) {
        client.unfollow(turn.id, stop);
        // Taken over meanwhile: what the client held beyond the stored frames is replaced.
        await followLocally(runtime, client, here, standing(last, epoch, here.restarts));
        return;
      }
      // A lease about to lapse is looked at again right then: its turn is adopted at once.
      const leaseLeft = current.lease_left_ms;
      await abortableSleep(
        leaseLeft === null ? config.pollIntervalMs : Math.min(config.pollIntervalMs, leaseLeft + 5),
        stopped.signal,
      );
    }
  } finally {
    client.unfollow(turn.id, stop);
  }
}

function endingFrame(turn: StoredTurn): ErrorFrame {
  const error = (turn.error ?? {}) as { code?: string; message?: string };
  const code = isErrorCode(error.code)
    ? error.code
    : isErrorCode(turn.state)
    ? turn.state
    : "internal_error";
  return {
    type: "error",
    turn_id: turn.id,
    code,
    message: error.message ??
      `The turn ended (${turn.state}) but its last frames are missing`,
    retryable: turn.state !== "complete",
  };
}
