/**
 * Following a turn from `seq` on: what `resume` does, and what a retried chat gets. A turn
 * this isolate runs is followed in memory (replay, then live, with nothing in between). Any
 * other turn is read from Postgres: its stored frames, then — while it still runs on another
 * isolate — new frames as they are flushed, by polling (Supavisor's transaction mode rules
 * out LISTEN/NOTIFY). A turn whose isolate stopped heartbeating is marked interrupted on the
 * way, so the follower gets its final `error` frame instead of waiting forever.
 */
import { abortableSleep } from "../abortable_sleep.ts";
import { type ErrorFrame, isErrorCode, isTerminalFrame } from "../agent_protocol.ts";
import { asServiceRole, asUser } from "../db/client.ts";
import type { AgentRuntime } from "./runtime.ts";
import type { TurnClient } from "./turn_client.ts";
import {
  interruptStaleTurns,
  lastStoredFrame,
  loadTurn,
  readFrames,
  readQueuedChat,
  type StoredTurn,
} from "./turn_store.ts";

export async function followTurn(
  runtime: AgentRuntime,
  client: TurnClient,
  turnId: string,
  afterSeq: number,
): Promise<void> {
  if (followLocally(runtime, client, turnId, afterSeq)) return;
  const { sql, config } = runtime.deps;
  const claims = client.user.claims;
  await asServiceRole(
    sql,
    (tx) => interruptStaleTurns(tx, client.user.id, config.staleAfterMs, { turnId }),
  );
  const turn = await asUser(sql, claims, (tx) => loadTurn(tx, turnId, config.staleAfterMs)) ??
    await waitWhileQueued(runtime, client, turnId);
  if (turn === "reported") return;
  if (!turn) {
    return client.sendError({
      code: "not_found",
      message: "No turn of yours has this id",
      retryable: false,
      ref: turnId,
    });
  }
  // The turn may have started here between the first look and now.
  if (followLocally(runtime, client, turnId, afterSeq)) return;
  await pollTurn(runtime, client, turn, afterSeq);
}

/** How many polls of a queued turn pass between looks for a free session to start it in. */
const QUEUE_KICK_POLLS = 4;

/**
 * A turn that is still a queued chat (`chat_queue.ts`): waits until it starts (then returns
 * it) or fails to (then says why, with the chat's id as `ref`: "reported"); undefined when
 * there is no such queued chat either. Now and then it starts the queue itself when the session is free: the
 * isolate that ended the turn ahead may have died before starting the next.
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
      const { turn, queued } = await asUser(sql, claims, async (tx) => ({
        queued: await readQueuedChat(tx, turnId),
        turn: await loadTurn(tx, turnId, config.staleAfterMs),
      }));
      if (turn) return turn;
      if (!queued) return undefined;
      if (queued.error) {
        client.sendError({ ...queued.error, ref: queued.chat_id });
        return "reported";
      }
      if (poll % QUEUE_KICK_POLLS === QUEUE_KICK_POLLS - 1) {
        // A failed look is only a missed chance: the next poll looks again.
        await runtime.startQueuedChats(client.user, queued.session_id).catch((error) =>
          console.error("agent: could not start queued chats", error)
        );
      }
      await abortableSleep(config.pollIntervalMs, stopped.signal);
    }
  } finally {
    client.unfollow(turnId, stop);
  }
  return "reported";
}

function followLocally(
  runtime: AgentRuntime,
  client: TurnClient,
  turnId: string,
  afterSeq: number,
): boolean {
  const live = runtime.turns.get(turnId);
  if (!live || live.userId !== client.user.id) return false;
  let stop: () => void = () => {};
  const unsubscribe = live.subscribe(afterSeq, (frame) => {
    client.send(frame);
    if (isTerminalFrame(frame)) client.unfollow(turnId, stop);
  }, (notice) => client.send(notice));
  stop = unsubscribe;
  client.follow(turnId, stop);
  return true;
}

async function pollTurn(
  runtime: AgentRuntime,
  client: TurnClient,
  turn: StoredTurn,
  afterSeq: number,
): Promise<void> {
  const { sql, config } = runtime.deps;
  const claims = client.user.claims;
  const stopped = new AbortController();
  const stop = () => stopped.abort();
  client.follow(turn.id, stop);
  let last = afterSeq;
  try {
    while (!stopped.signal.aborted && client.isOpen) {
      const { frames, current } = await asUser(sql, claims, async (tx) => ({
        frames: await readFrames(tx, turn.id, last),
        current: await loadTurn(tx, turn.id, config.staleAfterMs),
      }));
      for (const frame of frames) {
        if (stopped.signal.aborted) return;
        client.send(frame);
        last = frame.seq;
        if (isTerminalFrame(frame)) return;
      }
      if (!current) return;
      if (current.state !== "running") {
        if (frames.length > 0) continue;
        // Ended, and the client has every stored frame. Unless the final flush failed, the
        // last of them ended the turn; otherwise say how it ended.
        const lastStored = await asUser(
          sql,
          claims,
          (tx) => lastStoredFrame(tx, turn.id),
        );
        if (!lastStored || !isTerminalFrame(lastStored)) {
          client.send(endingFrame(current));
        }
        return;
      }
      if (current.stale) {
        await asServiceRole(
          sql,
          (tx) => interruptStaleTurns(tx, client.user.id, config.staleAfterMs, { turnId: turn.id }),
        );
        continue;
      }
      // Finished registering on this isolate meanwhile: follow it in memory from here.
      if (runtime.turns.has(turn.id)) {
        client.unfollow(turn.id, stop);
        followLocally(runtime, client, turn.id, last);
        return;
      }
      await abortableSleep(config.pollIntervalMs, stopped.signal);
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
