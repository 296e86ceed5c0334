/**
 * What the agent's WebSocket tests share: the app served on a free port (several instances
 * stand for several isolates), the LLM fixture over HTTP, the test database, users with
 * tokens from a local ES256 key, and a small client that collects frames.
 */
import {
  type ServerFrame,
  ServerFrameSchema,
  type TurnFrame,
} from "../../functions/_shared/agent_protocol.ts";
import { type AgentApp, createAgentApp } from "../../functions/_shared/agent/app.ts";
import type { AgentConfig } from "../../functions/_shared/agent/config.ts";
import type { ConnectedTools } from "../../functions/_shared/agent/runtime.ts";
import { createTokenVerifier } from "../../functions/_shared/auth.ts";
import type { Sql } from "../../functions/_shared/db/client.ts";
import { createToolRegistry } from "../../functions/_shared/tools/registry.ts";
import type { ToolDefinition } from "../../functions/_shared/tools/types.ts";
import { type LlmFixture, startLlmFixture } from "../../../scripts/standin/llm_fixture.ts";
import {
  generateSigningKey,
  issueAccessToken,
  jwksOf,
  type SigningKey,
} from "../../../scripts/standin/signing_keys.ts";
import { POOL_SIZES } from "../../functions/_shared/db/config.ts";
import {
  connectFunctionDatabase,
  connectTestDatabase,
  createUser,
  functionDatabaseEnv,
  type TestUser,
} from "./database.ts";
import {
  type FunctionWorker,
  startFunctionWorker,
} from "../../../scripts/standin/function_workers.ts";

export const ISSUER = "https://project-ref.supabase.test/auth/v1";
const WAIT_MS = 15_000;

/**
 * Fast timings for tests; each test may override. A live isolate counts as dead only after
 * 10 s without a heartbeat or lease renewal, so a machine busy with other work cannot fake a
 * dead isolate; the tests that kill one shorten the doomed isolate's lease.
 */
export const TEST_CONFIG: Partial<AgentConfig> = {
  flushIntervalMs: 50,
  // The tests of stored partial text (a killed isolate's, say) look at the row within 15 s.
  textFlushIntervalMs: 50,
  heartbeatIntervalMs: 200,
  staleAfterMs: 10_000,
  pollIntervalMs: 50,
  approvalTimeoutMs: 5_000,
  // Likewise a lease: a test that kills an isolate shortens the doomed isolate's own.
  leaseMs: 10_000,
  leaseRenewMs: 200,
};

export interface AgentInstance {
  app: AgentApp;
  /** `ws://127.0.0.1:<port>/agent` */
  url: string;
  /** `http://127.0.0.1:<port>/agent` */
  httpUrl: string;
  close(): Promise<void>;
}

export interface WorldOptions {
  config?: Partial<AgentConfig>;
  tools?: readonly ToolDefinition[];
  /** Opens every instance's `POST /agent/sweep` to this secret. */
  sweepSecret?: string;
  /** The connected servers' tools, read through each instance's own pool. */
  connectedTools?: (sql: Sql) => ConnectedTools;
}

export interface World {
  /** Superuser pool for setting up and checking the database. */
  sql: Sql;
  fixture: LlmFixture;
  key: SigningKey;
  /** The first instance ("isolate"). */
  agent: AgentInstance;
  /** Another instance: a second isolate with its own pool and state. */
  startInstance(config?: Partial<AgentConfig>): Promise<AgentInstance>;
  user(label?: string): Promise<TestUser>;
  tokenFor(user: TestUser): Promise<string>;
  /** A client on `instance` (default: the first), past its `ready` frame. */
  connect(user: TestUser, instance?: AgentInstance): Promise<AgentClient>;
}

/**
 * The agent function as a process of its own (as the local runtime runs it: a test may kill
 * it without `beforeunload`), on the world's database, keys and LLM fixture, with `env` on top.
 */
export function startAgentProcess(
  world: Pick<World, "key" | "fixture">,
  env: Record<string, string> = {},
): Promise<FunctionWorker> {
  return startFunctionWorker({
    name: "agent",
    env: {
      ...functionDatabaseEnv(),
      SUPABASE_JWKS: JSON.stringify(jwksOf(world.key)),
      LLM_BASE_URL: world.fixture.url,
      LLM_MODEL: "fixture-model",
      ...env,
    },
    log: () => {},
  });
}

export async function withWorld(
  options: WorldOptions,
  test: (world: World) => Promise<void>,
): Promise<void> {
  const sql = connectTestDatabase(10);
  // The agent refuses models its catalogue does not offer: offer the fixture's, for free.
  await sql`insert into public.models (id, prompt_usd_per_token, completion_usd_per_token)
            values ('fixture-model', 0, 0) on conflict (id) do nothing`;
  const fixture = await startLlmFixture({ port: 0 });
  const key = await generateSigningKey();
  const instances: AgentInstance[] = [];
  const clients: AgentClient[] = [];
  const tools = options.tools ?? createToolRegistry({ workflow: {} });
  const startInstance = async (config: Partial<AgentConfig> = {}) => {
    const instance = await serveAgent({
      key,
      llmUrl: fixture.url,
      tools,
      config: { ...TEST_CONFIG, ...options.config, ...config },
      ...(options.sweepSecret ? { sweepSecret: options.sweepSecret } : {}),
      ...(options.connectedTools ? { connectedTools: options.connectedTools } : {}),
    });
    instances.push(instance);
    return instance;
  };
  const tokenFor = (user: TestUser) =>
    issueAccessToken(key, {
      userId: user.id,
      email: user.email,
      sessionId: user.sessionId,
      issuer: ISSUER,
    });
  try {
    const agent = await startInstance();
    await test({
      sql,
      fixture,
      key,
      agent,
      startInstance,
      user: (label = "user") => createUser(sql, label),
      tokenFor,
      connect: async (user, instance = agent) => {
        const client = await AgentClient.open(instance.url, {
          headers: { Authorization: `Bearer ${await tokenFor(user)}` },
        });
        clients.push(client);
        await client.take((frame) => frame.type === "ready");
        return client;
      },
    });
  } finally {
    for (const client of clients) client.close();
    await Promise.all(clients.map((client) => client.closed));
    for (const instance of instances) await instance.close();
    await fixture.close();
    await sql.end();
  }
}

export function serveAgent(options: {
  key: SigningKey;
  llmUrl: string;
  tools: readonly ToolDefinition[];
  config: Partial<AgentConfig>;
  sweepSecret?: string;
  connectedTools?: (sql: Sql) => ConnectedTools;
}): Promise<AgentInstance> {
  const pool = connectFunctionDatabase(POOL_SIZES.agent.defaultSize);
  const flushPool = connectFunctionDatabase(POOL_SIZES.agentFlush.defaultSize);
  const app = createAgentApp({
    sql: pool,
    flushSql: flushPool,
    verifier: createTokenVerifier({ jwks: jwksOf(options.key) }),
    llm: {
      baseUrl: options.llmUrl,
      model: "fixture-model",
      fallbackModels: [],
    },
    tools: options.tools,
    config: options.config,
    ...(options.sweepSecret ? { sweepSecret: options.sweepSecret } : {}),
    ...(options.connectedTools ? { connectedTools: options.connectedTools(pool) } : {}),
  });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    app.fetch,
  );
  const port = server.addr.port;
  return Promise.resolve({
    app,
    url: `ws://127.0.0.1:${port}/agent`,
    httpUrl: `http://127.0.0.1:${port}/agent`,
    close: async () => {
      await app.close();
      await server.shutdown();
      await Promise.all([pool.end(), flushPool.end()]);
    },
  });
}

export interface CloseInfo {
  code: number;
  reason: string;
}

/** A WebSocket client that keeps every frame and hands them out in order. */
export class AgentClient {
  readonly frames: ServerFrame[] = [];
  readonly closed: Promise<CloseInfo>;
  readonly #taken = new Set<number>();
  #wake: (() => void)[] = [];
  #closeInfo: CloseInfo | undefined;

  private constructor(readonly socket: WebSocket) {
    this.closed = new Promise((resolve) => {
      socket.addEventListener("close", (event) => {
        this.#closeInfo = { code: event.code, reason: event.reason };
        resolve(this.#closeInfo);
        this.#notify();
      });
    });
    socket.addEventListener("message", (event) => {
      if (typeof event.data !== "string") {
        throw new Error("the server sent a binary frame");
      }
      // Every frame must match the protocol's schema: this parse is an assertion.
      this.frames.push(ServerFrameSchema.parse(JSON.parse(event.data)));
      this.#notify();
    });
  }

  static open(
    url: string,
    init: { headers?: Record<string, string>; protocols?: string[] } = {},
  ): Promise<AgentClient> {
    const socket = new WebSocket(url, init as never);
    const client = new AgentClient(socket);
    return new Promise((resolve, reject) => {
      socket.addEventListener("open", () => resolve(client), { once: true });
      socket.addEventListener(
        "error",
        (event) =>
          reject(
            new Error(`WebSocket failed: ${(event as ErrorEvent).message}`),
          ),
        { once: true },
      );
    });
  }

  get isClosed(): boolean {
    return this.#closeInfo !== undefined;
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  close(): void {
    if (this.socket.readyState === WebSocket.OPEN) {
      this.socket.close(1000, "test done");
    }
  }

  /** The first frame not yet taken that matches, waiting for it if need be. */
  async take(
    match: (frame: ServerFrame) => boolean = () => true,
  ): Promise<ServerFrame> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const index = this.frames.findIndex((frame, i) => !this.#taken.has(i) && match(frame));
      if (index >= 0) {
        this.#taken.add(index);
        return this.frames[index];
      }
      if (this.#closeInfo) {
        throw new Error(
          `the socket closed (${this.#closeInfo.code} ${this.#closeInfo.reason}) before the ` +
            `expected frame; got ${JSON.stringify(this.frames)}`,
        );
      }
      if (Date.now() > deadline) {
        throw new Error(
          `no expected frame within ${WAIT_MS} ms; got ${JSON.stringify(this.frames)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(
          resolve,
          Math.max(0, deadline - Date.now()) + 1,
        );
        this.#wake.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The next frame of the given type (optionally of one turn). */
  async takeType<T extends ServerFrame["type"]>(
    type: T,
    turnId?: string,
  ): Promise<Extract<ServerFrame, { type: T }>> {
    return await this.take((frame) =>
      frame.type === type &&
      (turnId === undefined ||
        (frame as { turn_id?: string }).turn_id === turnId)
    ) as Extract<ServerFrame, { type: T }>;
  }

  /** Every frame of a turn up to and including its last (`complete` or `error`). */
  async turnFrames(turnId: string): Promise<TurnFrame[]> {
    const frames: TurnFrame[] = [];
    for (;;) {
      const frame = await this.take((f) => (f as { turn_id?: string }).turn_id === turnId);
      frames.push(frame as TurnFrame);
      if (frame.type === "complete" || frame.type === "error") return frames;
    }
  }

  /** Sends a chat and returns its turn's frames, start to end. */
  async chat(
    content: string,
    fields: {
      id?: string;
      session_id?: string;
      tools?: string[];
      model?: string;
    } = {},
  ): Promise<TurnFrame[]> {
    const id = fields.id ?? crypto.randomUUID();
    this.send({ type: "chat", id, content, ...fields });
    const start = await this.take((frame) =>
      (frame.type === "start" && frame.user_message_id === id) ||
      (frame.type === "error" && frame.ref === id)
    );
    if (start.type !== "start") return [start as TurnFrame];
    const rest = await this.turnFrames(start.turn_id);
    return [start, ...rest.filter((frame) => frame !== start)];
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = [];
    for (const resolve of wake) resolve();
  }
}

/** The text of a turn's token frames. */
export function tokensOf(frames: readonly TurnFrame[]): string {
  return frames.map((frame) => frame.type === "token" ? frame.delta : "").join(
    "",
  );
}

/** Gives the user the grant `mode` for `tool` (as the service role would). */
export async function grant(
  sql: Sql,
  user: TestUser,
  tool: string,
  mode: "auto" | "ask" | "deny",
  constraints: Record<string, unknown> = {},
): Promise<void> {
  await sql`
    insert into public.permissions (user_id, tool, approval_mode, constraints)
    values (${user.id}, ${tool}, ${mode}, ${sql.json(constraints as never)})
    on conflict on constraint permissions_user_tool_key
    do update set approval_mode = excluded.approval_mode, constraints = excluded.constraints`;
}

/** Polls `probe` until it returns a value other than undefined (the database catches up). */
export async function eventually<T>(
  probe: () => Promise<T | undefined>,
  what: string,
  timeoutMs = WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
