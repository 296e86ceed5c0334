/**
 * The agent for one signed-in user: the connection plus the store, and the rules that tie
 * them together. Chats are optimistic (shown at once under the client's id) and are sent
 * again after a reconnect until the server starts their turn — safe, since the id makes a
 * chat idempotent. After every `ready`, each running turn is resumed from its last seq.
 */
import {
  AgentConnection,
  type AgentConnectionOptions,
  type ConnectionStatus,
} from "./connection.ts";
import type { ServerFrame, TurnFrame } from "./protocol.ts";
import { AgentStore, type PendingChat } from "./store.ts";

export interface ChatRequest {
  content: string;
  /** Absent: the chat starts a new session. */
  sessionId?: string;
  /** Absent: the server's default model. */
  model?: string;
}

export type AgentClientOptions =
  & Omit<
    AgentConnectionOptions,
    "onFrame" | "onStatus" | "onReady" | "onProblem"
  >
  & {
    store?: AgentStore;
    newId?: () => string;
    /**
     * The user's turns running now, from the database (any tab, device or isolate started
     * them): asked after every `ready`, and each is followed, so live text, Stop and approval
     * prompts show wherever the user is: running turns and turns parked on an approval.
     */
    findRunningTurns?: () => Promise<string[]>;
  };

export class AgentClient {
  readonly store: AgentStore;
  readonly #connection: AgentConnection;
  readonly #newId: () => string;
  readonly #findRunningTurns: (() => Promise<string[]>) | undefined;
  /**
   * Turns this tab follows over its own socket though it did not start them (another tab's,
   * another device's, or found running on load): resumed from seq 0 once, then like any other
   * running turn after each reconnect. Only their frames reach this tab, not the stored row's
   * every rewrite.
   */
  readonly #followed = new Set<string>();

  constructor(options: AgentClientOptions) {
    this.store = options.store ?? new AgentStore();
    this.#newId = options.newId ?? (() => crypto.randomUUID());
    this.#findRunningTurns = options.findRunningTurns;
    this.#connection = new AgentConnection({
      ...options,
      onFrame: (frame) => this.#receive(frame),
      onStatus: (status: ConnectionStatus) => this.store.setStatus(status),
      onReady: () => this.#catchUp(),
      onProblem: (problem) => this.store.addNotice(problem.code, problem.message),
    });
  }

  start(): void {
    this.#connection.start();
  }

  stop(): void {
    this.#connection.stop();
  }

  reconnect(): void {
    this.#connection.reconnect();
  }

  /**
   * supabase-js refreshed the session: the open socket takes the new token (the server
   * closes a socket whose token expired, 4002). Not connected, nothing is sent: the next
   * connect asks for the current token anyway.
   */
  renewToken(accessToken: string): void {
    this.#connection.send({ type: "auth", access_token: accessToken });
  }

  /** Shows the message at once and sends it; returns its id (the user message's client id). */
  sendChat(request: ChatRequest): string {
    const chat: PendingChat = {
      id: this.#newId(),
      sessionId: request.sessionId,
      content: request.content,
      model: request.model || undefined,
      createdAt: Date.now(),
      state: "sending",
    };
    this.store.addPending(chat);
    this.#sendChat(chat);
    return chat.id;
  }

  /** Sends a failed chat again under the same id. */
  retryChat(id: string): void {
    const chat = this.store.retryChat(id);
    if (chat) this.#sendChat(chat);
  }

  /** Follows a running turn this tab does not know yet (seen streaming in the database). */
  followTurn(turnId: string): void {
    if (this.#followed.has(turnId) || this.store.hasTurn(turnId)) return;
    this.#followed.add(turnId);
    // Not connected: the next `ready` resumes it.
    this.#connection.send({ type: "resume", turn_id: turnId, after_seq: 0 });
  }

  cancel(turnId: string): void {
    const sent = this.#connection.send({ type: "cancel", turn_id: turnId });
    if (!sent.ok) this.store.addNotice(sent.code, "Not connected: the turn cannot be stopped now");
  }

  approve(
    messageId: string,
    callId: string,
    decision: "allow" | "deny",
    remember?: "session" | "always",
  ): void {
    const sent = this.#connection.send({
      type: "approve",
      call_id: callId,
      decision,
      ...(remember ? { remember } : {}),
    });
    if (!sent.ok) {
      return this.store.addNotice(sent.code, "Not connected: the answer was not sent; try again");
    }
    this.store.answerApproval(messageId, callId, decision);
  }

  #sendChat(chat: PendingChat): void {
    const sent = this.#connection.send({
      type: "chat",
      id: chat.id,
      content: chat.content,
      ...(chat.sessionId ? { session_id: chat.sessionId } : {}),
      ...(chat.model ? { model: chat.model } : {}),
      // Sent while the session still answers (from another tab, say): it waits its turn.
      policy: "enqueue",
    });
    // Not connected: the chat stays "sending" and goes out after the next `ready`.
    if (!sent.ok && sent.code === "bad_request") {
      this.store.failChat(chat.id, { code: "bad_request", message: "This message cannot be sent" });
    }
  }

  #receive(frame: ServerFrame): void {
    // A queued chat stays "sending" until its turn's `start`, which this socket will get.
    if (frame.type === "pong" || frame.type === "queued") return;
    if (frame.type === "error" && frame.turn_id === undefined) {
      return this.store.applyRefusal(frame);
    }
    if (frame.type === "ready") return;
    // A live word about a turn (its ending waits for the database): shown, ends nothing.
    if (frame.type === "notice") return this.store.addNotice(frame.code, frame.message);
    // What is left are the frames of a turn (an `error` here carries its turn_id and seq).
    this.store.applyFrame(frame as TurnFrame);
  }

  #catchUp(): void {
    for (const turn of this.store.runningTurns()) {
      this.#connection.send({
        type: "resume",
        turn_id: turn.turnId,
        after_seq: turn.lastSeq,
        // Which of its frames still stand after takeovers it has seen (`restart_step`).
        ...(turn.epoch ? { epoch: turn.epoch } : {}),
      });
    }
    for (const turnId of this.#followed) {
      if (this.store.hasTurn(turnId)) this.#followed.delete(turnId);
      else this.#connection.send({ type: "resume", turn_id: turnId, after_seq: 0 });
    }
    for (const chat of this.store.unstartedChats()) this.#sendChat(chat);
    this.#findRunningTurns?.().then(
      (turnIds) => turnIds.forEach((turnId) => this.followTurn(turnId)),
      (error: unknown) =>
        this.store.addNotice(
          "running_turns_unavailable",
          `Could not look for running answers: ${error instanceof Error ? error.message : error}`,
        ),
    );
  }
}
