/**
 * What one isolate (one app instance) holds while it serves agent connections: its id (the
 * `owner` of its turns), its open connections, its running turns, the approvals they wait
 * for, the flusher, and a heartbeat that keeps its turns and connections alive in Postgres.
 *
 * None of it is the truth: turns, frames, connections and quotas live in Postgres. These
 * objects only let this isolate serve its own clients without polling, and die with it.
 */
import type { AccountRefusal } from "../account_access.ts";
import { asServiceRole, type Sql } from "../db/client.ts";
import { consumeToolCalls } from "../tool_limits.ts";
import type { ToolCaller, ToolDefinition } from "../tools/types.ts";
import { ConcurrencyLimit } from "../concurrency_limit.ts";
import { createUsageWriter, type UsageWriter } from "../usage.ts";
import { isDatabaseUnavailable } from "../db/unavailable.ts";
import { log, logFailure } from "../log.ts";
import { waitUntil } from "../wait_until.ts";
import type { ApproveFrame, ServerError } from "../agent_protocol.ts";
import { answerParked, awaitedCall, type TurnResumption } from "./approvals.ts";
import type { AgentConfig } from "./config.ts";
import type { ConnectedTools } from "./connected_tools.ts";
import { heartbeatConnections, unregisterConnection } from "./connections.ts";
import { editedArgumentsRefusal } from "./edited_arguments.ts";
import { Flusher } from "./flusher.ts";
import type { LiveTurn } from "./live_turn.ts";
import { aborted, runTurn, type TurnEnding, type TurnResumePoint, type TurnRun } from "./turn.ts";
import { initialCheckpoint, unsettled } from "./turn_checkpoint.ts";
import type { LlmSettings, TurnInputs } from "./turn_scope.ts";
import {
  adoptTurns,
  handBack,
  releaseLease,
  renewLeaseAndAdopt,
  takeOver,
} from "./turn_takeover.ts";
import { requestCancel, reserveStep, writeFlush } from "./turn_store.ts";
import { contextOf, endTurnSpan, startTurnSpan } from "../tracing/genai.ts";

export { type ConnectedTools, toolsFor } from "./connected_tools.ts";

export interface RuntimeDependencies {
  sql: Sql;
  /**
   * Where flushes go: best a pool of its own with one connection. Flushes are this isolate's
   * largest writes: on their own pool, a turn's reads never queue behind them. Defaults to
   * `sql`.
   */
  flushSql?: Sql;
  llm: LlmSettings;
  config: AgentConfig;
  registry: readonly ToolDefinition[];
  /**
   * The tools of the servers the caller connected (`mcp_servers/server_tools.ts`), read for
   * each chat and offered beside `registry`. The one seam between the agent and the hub.
   */
  connectedTools?: ConnectedTools;
}

/** A socket as the runtime sees it. */
export interface ConnectionHandle {
  readonly id: string;
  readonly userId: string;
  /** The session its latest token belongs to, when the token names one. */
  readonly sessionId?: string;
  /** Its latest access token (renewed by `auth` frames; the socket closes when it expires). */
  readonly accessToken?: string;
  /** Closes the socket with this code (4001 when evicted, 1001 on shutdown). */
  close(code: number, reason: string): void;
  /** Tells the client its user may not act any more, and closes (4003). */
  revokeAccess(refusal: AccountRefusal): void;
}

export const EVICTION_REASON =
  "too many connections: the user opened another one and this is the oldest";

/**
 * Retries of a turn's ending: a blip heals in the first ones; a database restart (seconds to
 * tens of seconds) in the later ones, 3 s apart, about 30 s in all, while the client has been
 * told it waits (`notice`).
 */
/** How long a turn's ending may wait for the database before its clients are told. */
const ENDING_NOTICE_AFTER_MS = 1000;

const FINAL_FLUSH_RETRY_DELAYS_MS = [100, 500, 1000, 2000, ...Array(9).fill(3000)] as number[];

export class AgentRuntime {
  readonly isolateId = `isolate-${crypto.randomUUID()}`;
  readonly turns = new Map<string, LiveTurn>();
  /** Registered connections (in `agent_connections`), which the heartbeat keeps alive. */
  readonly connections = new Map<string, ConnectionHandle>();
  /** Every open socket, registered yet or not: what shutdown closes. */
  readonly sockets = new Set<ConnectionHandle>();
  readonly flusher: Flusher;
  /** Usage rows of turns that end together go out in one insert. */
  readonly recordUsage: UsageWriter;
  /** Turn starts (a read and `agent_start_turn`) under way at once, at most. */
  readonly turnStarts: ConcurrencyLimit;
  readonly #tasks = new Set<Promise<unknown>>();
  /** The running turns' promises (a subset of `#tasks`): shutdown waits for them first. */
  readonly #runs = new Set<Promise<void>>();
  /**
   * Starts the next queued chat of the user's free sessions (or of one): called once a turn's
   * ending is stored (not while shutting down) and by followers of queued turns. `app.ts`
   * wires `chat_queue.ts`'s `startQueuedChats` (a hook, so that module's imports of the chat
   * path make no cycle with the runtime's users).
   */
  startQueuedChats: (caller: ToolCaller, sessionId?: string) => Promise<void> = () =>
    Promise.resolve();
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #beating = false;
  /** Renews this isolate's lease (and adopts orphaned turns) while it has work. */
  #leaseTimer: ReturnType<typeof setInterval> | undefined;
  #renewing = false;
  /**
   * Where the lease goes: the flusher's pool, beside the writes it keeps valid. Renewed every
   * half second, it must not run up the backoff of the main pool while the database is down
   * (postgres.js waits 3^failures / 100 s, up to 20 s, before a pool's next connect), or a
   * turn's usage row and a chat's reads would wait that long after the database is back.
   */
  readonly #leaseSql: Sql;
  #closed = false;

  constructor(readonly deps: RuntimeDependencies) {
    this.recordUsage = createUsageWriter(deps.sql);
    this.turnStarts = new ConcurrencyLimit(deps.config.startConcurrency);
    const flushSql = deps.flushSql ?? deps.sql;
    this.#leaseSql = flushSql;
    this.flusher = new Flusher(
      (entries) => writeFlush(flushSql, this.isolateId, entries),
      deps.config.flushIntervalMs,
      {
        onLost: (turn) => {
          if (!turn.ended) turn.abort("lost");
        },
        onCancelRequested: (turn) => {
          if (!turn.ended) turn.abort("cancelled");
        },
      },
    );
  }

  get closed(): boolean {
    return this.#closed;
  }

  get config(): AgentConfig {
    return this.deps.config;
  }

  /**
   * Keeps `promise` in the set `close` waits for, and — on Supabase — keeps the worker alive
   * until it settles: an open socket or a running turn is work the worker must not be
   * retired under. Returns the promise.
   */
  track<T>(promise: Promise<T>): Promise<T> {
    this.#tasks.add(promise);
    promise.finally(() => this.#tasks.delete(promise)).catch(() => {});
    waitUntil(promise);
    return promise;
  }

  addConnection(connection: ConnectionHandle): void {
    this.connections.set(connection.id, connection);
    this.#startHeartbeat();
  }

  /**
   * Takes turns over and runs them here: turns of dead isolates (restarted from their
   * checkpoint) and parked turns (answered, cancelled or expired). Returns their ids.
   */
  async continueTurns(resumptions: readonly TurnResumption[]): Promise<string[]> {
    // Side by side: each takeover reads before its turn's next LLM request, and a batch taken
    // one after another would hold the last turn back for the reads of all the others.
    const taken = await Promise.all(
      resumptions.map((resumption) => this.#continueTurn(resumption)),
    );
    return resumptions.filter((_, i) => taken[i]).map((resumption) => resumption.turn_id);
  }

  async #continueTurn(resumption: TurnResumption): Promise<boolean> {
    if (this.#closed) {
      await this.#handBack(resumption.turn_id, resumption.epoch);
      return false;
    }
    let taken;
    try {
      taken = await takeOver(
        { ...this.deps, accessTokenOf: (userId) => this.accessTokenOf(userId) },
        resumption,
      );
    } catch (error) {
      logFailure("take_over", error, { turn_id: resumption.turn_id });
      await this.#handBack(resumption.turn_id, resumption.epoch);
      return false;
    }
    if (this.#closed) {
      // Shut down while it read: the turn goes to another isolate, as its running ones did.
      await this.#handBack(resumption.turn_id, resumption.epoch);
      return false;
    }
    if (taken.kind === "refused") {
      void this.#endAtOnce(taken.turn, taken.ending);
    } else {
      void this.launch(taken.turn, taken.inputs, taken.resume);
    }
    return true;
  }

  /** A turn taken but not run here goes back to whoever adopts it next. */
  async #handBack(turnId: string, epoch: number): Promise<void> {
    try {
      await handBack(this.deps.sql, this.isolateId, turnId, epoch);
    } catch (error) {
      // Kept by this isolate until its lease lapses: then it is adopted all the same.
      logFailure("hand_back", error, { turn_id: turnId });
    }
  }

  /** Adopts orphaned turns (of one user, or one turn, or any) and runs them here. */
  async adopt(scope: { userId?: string; turnId?: string } = {}): Promise<string[]> {
    if (this.#closed) return [];
    // Through the turn starts' limit, adoption and takeover together: a dead isolate's
    // followers all ask at once, and taken in turn (first come, first served) the first turns
    // run on while the rest wait, instead of all of them waiting for all the reads. A turn
    // waiting here is not adopted yet: should this isolate die too, it has lost no recovery.
    return await this.turnStarts.run(async () => {
      const found = await adoptTurns(this.deps.sql, this.isolateId, this.config, scope);
      return await this.continueTurns(found);
    });
  }

  /**
   * The sweep (`POST /agent/sweep`): renews this isolate's lease, adopts up to a batch of
   * orphaned or expired turns and runs them here, so turns finish when nobody is connected.
   */
  async sweep(): Promise<{ adopted: number }> {
    if (this.#closed) return { adopted: 0 };
    const found = await renewLeaseAndAdopt(this.#leaseSql, this.isolateId, this.config);
    const adopted = await this.continueTurns(found);
    if (adopted.length > 0) this.#startHeartbeat();
    return { adopted: adopted.length };
  }

  /**
   * The current access token of one of the user's open sockets here, if any: what a turn
   * taken over here (it holds no token of its own) calls the project's own functions with,
   * looked up at each call. Never stored.
   */
  accessTokenOf(userId: string): string | undefined {
    for (const connection of this.connections.values()) {
      if (connection.userId === userId && connection.accessToken) return connection.accessToken;
    }
    return undefined;
  }

  async removeConnection(connectionId: string): Promise<void> {
    if (!this.connections.delete(connectionId)) return;
    this.#stopHeartbeatWhenIdle();
    await unregisterConnection(this.deps.sql, connectionId);
  }

  /** Closes the given connections if they are this isolate's (the rest close elsewhere). */
  evict(
    connectionIds: readonly string[],
    reason: string = EVICTION_REASON,
  ): void {
    for (const id of connectionIds) {
      this.connections.get(id)?.close(4001, reason);
    }
  }

  /**
   * Runs `turn` with what this runtime owns, from its checkpoint (the first one, made from
   * `inputs`, for a new turn), until it ends and its ending is stored, parks, or leaves.
   */
  launch(turn: LiveTurn, inputs: TurnInputs, resume: TurnResumePoint = {}): Promise<void> {
    this.turns.set(turn.turnId, turn);
    turn.onChange = (changed) => this.flusher.markDirty(changed);
    // A turn that has a checkpoint ran before (elsewhere): this run continues its trace.
    const span = startTurnSpan(turn, turn.checkpoint !== undefined);
    // The first checkpoint goes out with the turn's first flush: no round trip of its own.
    if (!turn.checkpoint) turn.setCheckpoint(initialCheckpoint(inputs));
    this.flusher.markDirty(turn);
    this.#startHeartbeat();
    const run = (async () => {
      const { sql, llm, config, registry } = this.deps;
      const ending = await runTurn(turn, {
        ...inputs,
        sql,
        llm,
        config,
        registry: inputs.registry ?? registry,
        recordUsage: this.recordUsage,
        deferUsage: (write) => void this.track(write),
        reserveStep: (turnId, promptTokens, completionTokens) =>
          reserveStep(sql, turnId, promptTokens, completionTokens),
        meterToolCall: (userId) => consumeToolCalls(sql, userId, 1),
        flushTurn: (live) => this.flusher.flushTurn(live),
        trace: contextOf(span),
      }, resume).catch((error) => {
        endTurnSpan(span, { state: "failed", code: "internal_error" });
        throw error;
      });
      endTurnSpan(
        span,
        ending.kind === "ended"
          ? {
            state: ending.outcome.state,
            ...(ending.outcome.error ? { code: ending.outcome.error.code } : {}),
            steps: turn.steps,
            inputTokens: ending.usage.prompt_tokens,
            outputTokens: ending.usage.completion_tokens,
            model: turn.model,
          }
          : { state: ending.kind },
      );
      await this.#finish(turn, ending);
      // An ended turn frees its session (a parked or departed one does not): the next queued
      // chat starts, adopted turns' included.
      if (!this.#closed && turn.ended) {
        this.track(
          this.startQueuedChats(inputs.caller, turn.sessionId).catch((error) =>
            logFailure("start_queued_chats", error, { turn_id: turn.turnId })
          ),
        );
      }
    })();
    const settled = this.track(run.catch(async (error) => {
      logFailure("finish_turn", error, { request_id: turn.requestId, turn_id: turn.turnId });
      if (this.turns.get(turn.turnId) === turn) this.turns.delete(turn.turnId);
      turn.leave();
      await this.#handBack(turn.turnId, turn.epoch);
    }));
    this.#runs.add(settled);
    settled.finally(() => this.#runs.delete(settled));
    return settled;
  }

  /**
   * Cancels a turn of the user, wherever it runs (a parked one is taken here and ended);
   * false when none is running or parked.
   */
  async cancel(userId: string, turnId: string): Promise<boolean> {
    const local = this.turns.get(turnId);
    if (local && local.userId === userId && !local.ended) {
      local.abort("cancelled");
      return true;
    }
    if (await requestCancel(this.deps.sql, userId, turnId)) return true;
    const parked = await answerParked(this.deps.sql, this.isolateId, userId, { turnId }, {
      decision: "cancel",
    });
    if (parked.kind === "none" || parked.kind === "left") return parked.kind === "left";
    await this.continueTurns([parked]);
    return true;
  }

  /**
   * Answers a call waiting for approval, wherever its turn is: a parked turn is taken and
   * continued here. An error when no call of the user waits for it, or edited arguments do
   * not fit the tool.
   */
  async approve(caller: ToolCaller, frame: ApproveFrame): Promise<ServerError | undefined> {
    const { sql } = this.deps;
    const userId = caller.id;
    if (frame.args !== undefined && frame.decision === "allow") {
      const awaited = await awaitedCall(sql, userId, frame.call_id);
      const refused = awaited &&
        await editedArgumentsRefusal(this.deps, caller, awaited.tool, frame.args, frame.call_id);
      if (refused) return refused;
    }
    const answer = frame.decision === "allow"
      ? {
        decision: "allow" as const,
        ...(frame.remember ? { remember: frame.remember } : {}),
        ...(frame.args ? { args: frame.args as Record<string, never> } : {}),
      }
      : { decision: "deny" as const };
    const outcome = await answerParked(
      sql,
      this.isolateId,
      userId,
      { callId: frame.call_id },
      answer,
    );
    if (outcome.kind === "none") {
      return {
        code: "not_found",
        message: "No tool call of yours is waiting for approval with this id",
        retryable: false,
        ref: frame.call_id,
      };
    }
    if (outcome.kind !== "left") await this.continueTurns([outcome]);
    return undefined;
  }

  /**
   * `beforeunload`: leaves every running turn to another isolate (their pending output
   * stored first), gives up the lease so they are adopted at once, closes every socket (1001:
   * reconnect and resume), stops the timers. Ends no turn.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#leaseTimer);
    this.#leaseTimer = undefined;
    for (const turn of this.turns.values()) turn.abort("released");
    await Promise.allSettled([...this.#runs]);
    try {
      await releaseLease(this.#leaseSql, this.isolateId);
    } catch (error) {
      logFailure("release_lease", error);
    }
    for (const socket of this.sockets) {
      socket.close(1001, "the server is shutting down; reconnect and resume");
    }
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    this.flusher.close();
  }

  /** Ends a turn taken over for a user who may not act any more (deleted, banned). */
  async #endAtOnce(turn: LiveTurn, ending: TurnEnding): Promise<void> {
    this.turns.set(turn.turnId, turn);
    turn.onChange = (changed) => this.flusher.markDirty(changed);
    this.#startHeartbeat();
    const settled = this.track(
      this.#finish(turn, ending).catch((error) => {
        logFailure("finish_turn", error, { request_id: turn.requestId, turn_id: turn.turnId });
      }),
    );
    this.#runs.add(settled);
    settled.finally(() => this.#runs.delete(settled));
    await settled;
  }

  async #finish(turn: LiveTurn, run: TurnRun): Promise<void> {
    const gone = turn.abortReason === "lost" || turn.abortReason === "released";
    if (run.kind !== "ended" || gone) {
      // Parked, or going on elsewhere: what is new is stored (a released turn's; a lost
      // turn's flush is refused), and followers here follow it from storage.
      if (turn.abortReason !== "lost") {
        await this.flusher.flushTurn(turn).catch((error) =>
          logFailure("store_before_leaving", error, { turn_id: turn.turnId })
        );
      }
      if (this.turns.get(turn.turnId) === turn) this.turns.delete(turn.turnId);
      turn.leave();
      this.#stopHeartbeatWhenIdle();
      return;
    }
    const ending = run;
    // A cancel that lands after the last LLM call changes nothing: the answer is complete.
    const final = turn.signal.aborted && ending.outcome.state !== "complete"
      ? aborted(turn, ending.usage)
      : ending;
    // The reservation is settled with the ending, before the client hears of it: a chat sent
    // right after `complete` finds the unused tokens back in the bucket. What a park settled
    // already is not settled again.
    const left = turn.checkpoint ? unsettled({ ...turn.checkpoint, usage: final.usage }) : {
      tokens: final.usage.prompt_tokens + final.usage.completion_tokens,
      cost: final.usage.cost,
    };
    const used = { tokens: left.tokens, costUsd: left.cost };
    turn.end({ ...final.outcome, used }, final.closing);
    log(final.outcome.state === "complete" ? "info" : "warn", "turn_end", {
      request_id: turn.requestId,
      turn_id: turn.turnId,
      user_id: turn.userId,
      state: final.outcome.state,
      code: final.outcome.error?.code,
      steps: turn.steps,
      prompt_tokens: final.usage.prompt_tokens,
      completion_tokens: final.usage.completion_tokens,
      latency_ms: turn.elapsedMs(),
    });
    try {
      await this.#storeEnding(turn);
    } finally {
      turn.release();
      if (this.turns.get(turn.turnId) === turn) this.turns.delete(turn.turnId);
      this.#stopHeartbeatWhenIdle();
    }
  }

  async #storeEnding(turn: LiveTurn): Promise<void> {
    // Its clients hear that the ending waits, once it has waited a while (a database that is
    // down may take long to say so: a connection attempt, a lock).
    const waiting = setTimeout(() => tellEndingWaits(turn), ENDING_NOTICE_AFTER_MS);
    try {
      for (let attempt = 0;; attempt++) {
        try {
          await this.flusher.flushTurn(turn);
          if (turn.settled) return;
        } catch (error) {
          if (attempt >= FINAL_FLUSH_RETRY_DELAYS_MS.length) throw error;
          if (!isDatabaseUnavailable(error)) {
            logFailure("store_ending", error, { turn_id: turn.turnId }, "warn");
          }
        }
        if (attempt >= FINAL_FLUSH_RETRY_DELAYS_MS.length) return;
        await new Promise((resolve) => setTimeout(resolve, FINAL_FLUSH_RETRY_DELAYS_MS[attempt]));
      }
    } finally {
      clearTimeout(waiting);
    }
  }

  #startHeartbeat(): void {
    this.#startLease();
    if (this.#heartbeat !== undefined || this.#closed) return;
    this.#heartbeat = setInterval(() => {
      if (this.#beating) return;
      this.#beating = true;
      this.#beat()
        .catch((error) => logFailure("heartbeat", error))
        .finally(() => this.#beating = false);
    }, this.deps.config.heartbeatIntervalMs);
  }

  #stopHeartbeatWhenIdle(): void {
    if (this.connections.size === 0 && this.turns.size === 0) {
      clearInterval(this.#heartbeat);
      this.#heartbeat = undefined;
      clearInterval(this.#leaseTimer);
      this.#leaseTimer = undefined;
    }
  }

  /**
   * One lease for all of this isolate's turns, renewed every `leaseRenewMs`; the same
   * statement adopts a batch of orphaned turns, so whichever isolate is alive notices a dead
   * one's turns within a lease and a renewal.
   */
  #startLease(): void {
    if (this.#leaseTimer !== undefined || this.#closed) return;
    this.#leaseTimer = setInterval(() => {
      if (this.#renewing) return;
      this.#renewing = true;
      // The next renewal does not wait for the takeovers: a lease renewed late lets other
      // isolates adopt this one's turns, which then start over for nothing.
      renewLeaseAndAdopt(this.#leaseSql, this.isolateId, this.config)
        .then((found) => {
          if (found.length > 0) this.track(this.continueTurns(found));
        })
        .catch((error) => logFailure("lease_renewal", error))
        .finally(() => this.#renewing = false);
    }, this.config.leaseRenewMs);
  }

  async #beat(): Promise<void> {
    const turns = [...this.turns.values()].filter((turn) => !turn.ended);
    const connections = [...this.connections.values()].map((c) => ({
      id: c.id,
      userId: c.userId,
      ...(c.sessionId ? { sessionId: c.sessionId } : {}),
    }));
    // Turns: through the flusher, which also learns of takeovers and cancel requests.
    const beats: Promise<unknown>[] = [this.flusher.heartbeat(turns)];
    if (connections.length > 0) {
      beats.push(
        asServiceRole(this.deps.sql, (tx) => heartbeatConnections(tx, this.isolateId, connections))
          .then(({ evicted, revoked }) => {
            this.evict(evicted);
            for (const [id, refusal] of revoked) this.connections.get(id)?.revokeAccess(refusal);
            return this.#unregisterClosedDuring(connections);
          }),
      );
    }
    const failures = (await Promise.allSettled(beats)).filter((r) => r.status === "rejected");
    if (failures.length > 0) throw (failures[0] as PromiseRejectedResult).reason;
  }

  /**
   * A beat re-registers rows that are missing (an isolate that stalled past the stale limit
   * gets its connections back). A connection that closed while the beat was in flight may
   * have had its row deleted just before the beat wrote it again: delete those once more, or
   * a closed socket would count against its user's limit until it went stale.
   */
  async #unregisterClosedDuring(beaten: readonly { id: string }[]): Promise<void> {
    const closed = beaten.filter((connection) => !this.connections.has(connection.id));
    await Promise.all(closed.map(({ id }) => unregisterConnection(this.deps.sql, id)));
  }
}

/** The turn is over but the database has not taken its ending: its clients hear so. */
function tellEndingWaits(turn: LiveTurn): void {
  log("warn", "ending_delayed", { request_id: turn.requestId, turn_id: turn.turnId });
  turn.notify({
    code: "ending_delayed",
    message: "The turn has ended, but the database has not stored its ending yet (it may be " +
      "unreachable); its last frames follow once it is stored",
  });
}
