/**
 * Taking a turn over: the lease an isolate holds for all its turns, adopting turns whose
 * isolate stopped renewing its lease (or parked turns whose wait expired), and rebuilding a
 * taken turn from its checkpoint so the runtime can run it on from there.
 */
import { accountRefusalMessage } from "../account_access.ts";
import { type JwtClaims, queryAsServiceRole, type Sql, type Tx } from "../db/client.ts";
import { inlineSql, run } from "../db/inline_sql.ts";
import type { TurnResumption } from "./approvals.ts";
import { readChatContext } from "./chat_context.ts";
import type { AgentConfig } from "./config.ts";
import { codePoints, errorFrame, LiveTurn, type LiveTurnInit } from "./live_turn.ts";
import { type ConnectedTools, toolsFor } from "./connected_tools.ts";
import { buildMessages } from "./prompt.ts";
import type { ToolDefinition } from "../tools/types.ts";
import { llmToolDefinitions, offeredTools } from "./tools.ts";
import type { TurnEnding, TurnResumePoint } from "./turn.ts";
import type { TurnCheckpoint } from "./turn_checkpoint.ts";
import type { TurnInputs } from "./turn_scope.ts";
import { storedAnswer } from "./turn_store.ts";
import { log } from "../log.ts";

/** Renews the lease and adopts a batch of orphaned turns, in one statement. */
export async function renewLeaseAndAdopt(
  sql: Sql,
  owner: string,
  config: AgentConfig,
): Promise<TurnResumption[]> {
  const [row] = await queryAsServiceRole<{ adopted: AdoptionRow[] }>(
    sql,
    inlineSql`
      select public.agent_renew_lease(${owner}, ${config.leaseMs}) as renewed,
        (select coalesce(jsonb_agg(r), '[]'::jsonb)
         from public.agent_adopt_turns(${owner}, null, null, ${config.adoptBatch},
           ${config.maxRecoveries}) r) as adopted`,
  );
  return resumptionsOf(row.adopted);
}

/** Renews the lease only (a connection's start: its turns must not look orphaned). */
export async function renewLease(tx: Tx, owner: string, leaseMs: number): Promise<void> {
  await run(tx, inlineSql`select public.agent_renew_lease(${owner}, ${leaseMs})`);
}

export async function releaseLease(sql: Sql, owner: string): Promise<void> {
  await queryAsServiceRole(sql, inlineSql`select public.agent_release_lease(${owner})`);
}

/**
 * Gives a turn this isolate holds but cannot run (taking it over or storing its ending failed)
 * back to whoever adopts it next: its owner becomes one with no lease. While this isolate
 * lives it would otherwise keep the turn, renewing a lease for a turn nobody runs.
 */
export async function handBack(
  sql: Sql,
  owner: string,
  turnId: string,
  epoch: number,
): Promise<void> {
  await queryAsServiceRole(
    sql,
    inlineSql`
      update public.agent_turns t set owner = ${`handed-back:${owner}`}
      where t.id = ${turnId}::uuid and t.owner = ${owner} and t.epoch = ${epoch}
        and t.state = 'running'`,
  );
}

/** Adopts the orphaned turns of one user, or one turn. */
export async function adoptTurns(
  sql: Sql,
  owner: string,
  config: AgentConfig,
  scope: { userId?: string; turnId?: string },
): Promise<TurnResumption[]> {
  const rows = await queryAsServiceRole<{ adopted: AdoptionRow }>(
    sql,
    inlineSql`
      select r as adopted from public.agent_adopt_turns(${owner}, ${scope.userId ?? null}::uuid,
        ${scope.turnId ?? null}::uuid, ${config.adoptBatch}, ${config.maxRecoveries}) r`,
  );
  return resumptionsOf(rows.map((row) => row.adopted));
}

type AdoptionRow = TurnResumption | { kind: "interrupted"; turn_id: string };

function resumptionsOf(rows: readonly AdoptionRow[]): TurnResumption[] {
  const taken: TurnResumption[] = [];
  for (const row of rows) {
    if (row.kind === "interrupted") {
      log("warn", "turn_end", {
        turn_id: row.turn_id,
        state: "interrupted",
        code: "recovery_budget",
      });
    } else taken.push(row);
  }
  return taken;
}

/** What taking a turn over reads with. */
export interface TakeOverDeps {
  sql: Sql;
  config: AgentConfig;
  registry: readonly ToolDefinition[];
  /** The caller's connected servers' tools (as for a chat: `toolsFor`). */
  connectedTools?: ConnectedTools;
  /** The current access token of a socket of the user on this isolate, if one is open. */
  accessTokenOf?: (userId: string) => string | undefined;
}

export type TakeOver =
  | { kind: "run"; turn: LiveTurn; inputs: TurnInputs; resume: TurnResumePoint }
  /** Its user may not act any more: the turn ends at once. */
  | { kind: "refused"; turn: LiveTurn; ending: TurnEnding };

/**
 * The live turn and inputs of a turn just taken: its frames go on from the last stored seq,
 * its answer from the checkpoint's text (a restarted step's partial text is dropped, and the
 * clients are told so with `restart_step`) or, when its model continues partial answers, from
 * all of the stored text; its reservation is the row's.
 */
export async function takeOver(deps: TakeOverDeps, taken: TurnResumption): Promise<TakeOver> {
  const claims: JwtClaims = taken.checkpoint?.claims ??
    { sub: taken.user_id, role: "authenticated", aud: "authenticated" };
  // The turn holds no access token (none is stored): tools that need one (the project's own
  // MCP function) use the current token of a socket of the user here — the one that answered
  // or resumed it, say — looked up at each call; with none open they ask him to sign in again.
  // Connected servers use their stored credentials.
  const caller = {
    id: taken.user_id,
    claims,
    accessToken: () => deps.accessTokenOf?.(taken.user_id),
  };
  // The tools the chat offered, connected ones included, found again as the chat found them.
  // Read side by side where one does not need the other: each round trip here delays the
  // turn's next token.
  const [registry, keptFromCheckpoint] = await Promise.all([
    taken.refusal ? deps.registry : toolsFor(deps, caller),
    taken.checkpoint ? keptAnswer(deps.sql, taken, taken.checkpoint) : undefined,
  ]);
  const checkpoint = taken.checkpoint ?? await firstCheckpoint(deps, taken, claims, registry);
  const kept = taken.checkpoint
    ? keptFromCheckpoint
    : await keptAnswer(deps.sql, taken, checkpoint);
  const turn = new LiveTurn({
    turnId: taken.turn_id,
    userId: taken.user_id,
    sessionId: taken.session_id,
    assistantRowId: taken.assistant_row_id,
    assistantMessageId: taken.assistant_message_id,
    userMessageId: taken.user_message_id,
    model: taken.model,
    reservedTokens: taken.reserved_tokens,
    reservedCostUsd: Number(taken.reserved_cost_usd),
    textFlushIntervalMs: deps.config.textFlushIntervalMs,
    epoch: taken.epoch,
    baseSeq: taken.last_seq,
    content: kept ?? { text: taken.content, ...checkpoint.text },
    keepsPartialText: taken.continues_partial,
    restarts: taken.kind === "adopted" &&
        !taken.restarts.some((restart) => restart.epoch === taken.epoch)
      ? [...taken.restarts, { epoch: taken.epoch, seq: taken.last_seq + 1 }]
      : taken.restarts,
  });
  turn.steps = taken.steps;
  turn.toolCalls = taken.tool_calls;
  turn.awaitsProgress = taken.kind === "adopted" && taken.continues_partial;
  if (taken.checkpoint) turn.checkpoint = checkpoint;
  else turn.setCheckpoint(checkpoint);
  if (taken.kind === "adopted" && taken.last_seq === 0) {
    // Its isolate died before storing a frame: `start` is what tells a client that retried
    // its chat (followed from seq 0) which turn answers it, so it comes first again.
    turn.emit({
      type: "start",
      session_id: taken.session_id,
      message_id: taken.assistant_message_id,
      user_message_id: taken.user_message_id,
      model: taken.model,
    });
  }
  if (taken.kind === "adopted") {
    turn.emit({
      type: "restart_step",
      step: checkpoint.step + 1,
      epoch: taken.epoch,
      keep_chars: kept?.units ?? checkpoint.text.units,
    });
  }
  if (taken.refusal) {
    const message = accountRefusalMessage(taken.refusal);
    return {
      kind: "refused",
      turn,
      ending: {
        kind: "ended",
        outcome: {
          state: "error",
          messageStatus: "error",
          error: { code: "access_revoked", message },
        },
        closing: [{ ...errorFrame("access_revoked", message, false), reason: taken.refusal }],
        usage: checkpoint.usage,
      },
    };
  }
  const tools = registry.filter((tool) => checkpoint.tools.includes(tool.name));
  return {
    kind: "run",
    turn,
    inputs: {
      caller,
      registry,
      grants: checkpoint.grants,
      llmTools: llmToolDefinitions(tools),
      messages: checkpoint.messages,
    },
    resume: {
      ...(taken.answer ? { answer: taken.answer } : {}),
      // A step asked again: its first reservation went to the attempt that died.
      reserveFirst: taken.kind === "adopted" && checkpoint.calls.length === 0,
    },
  };
}

/**
 * The answer an adopted turn goes on from when its model continues partial answers and it
 * died streaming (no tool call pending): every stored token, the interrupted step's included.
 * Undefined: it restarts the step from the checkpoint's text.
 */
async function keptAnswer(
  sql: Sql,
  taken: TurnResumption,
  checkpoint: TurnCheckpoint,
): Promise<LiveTurnInit["content"] | undefined> {
  if (taken.kind !== "adopted" || !taken.continues_partial || checkpoint.calls.length > 0) {
    return undefined;
  }
  const text = await storedAnswer(sql, taken.turn_id, taken.last_seq);
  if (text.length <= checkpoint.text.units) return undefined;
  // The message row holds a prefix of it (rewritten only now and then): the first flush
  // writes the rest from where they part.
  let common = 0;
  const row = taken.content;
  while (common < text.length && common < row.length && text[common] === row[common]) common++;
  if (common > 0 && isHighSurrogate(text.charCodeAt(common - 1))) common--;
  return {
    text,
    units: text.length,
    chars: codePoints(text),
    stored: { units: common, chars: codePoints(text.slice(0, common)) },
  };
}

function isHighSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdbff;
}

/**
 * A turn whose isolate died before its first flush has no checkpoint: it is rebuilt as the
 * chat built it (the session's history, read as the user, and the user's message), offering
 * every tool the user holds.
 */
async function firstCheckpoint(
  deps: TakeOverDeps,
  taken: TurnResumption,
  claims: JwtClaims,
  registry: readonly ToolDefinition[],
): Promise<TurnCheckpoint> {
  const { sql, config } = deps;
  const context = await readChatContext(sql, claims, {
    chatId: taken.user_message_id,
    sessionId: taken.session_id,
    historyMessages: config.historyMessages,
    exclude: [taken.user_message_id, taken.assistant_message_id],
  });
  return {
    v: 1,
    progress: 0,
    step: 0,
    messages: buildMessages(config.systemPrompt, context.history, taken.user_content),
    tools: offeredTools(registry, context.grants).map((tool) => tool.name),
    claims,
    grants: context.grants,
    usage: { prompt_tokens: 0, completion_tokens: 0, cost: 0 },
    settled: { tokens: 0, cost: 0 },
    calls: [],
    text: { units: 0, chars: 0 },
  };
}
