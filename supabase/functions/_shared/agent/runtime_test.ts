import assert from "node:assert/strict";
import type { Sql } from "../db/client.ts";
import { agentConfig } from "./config.ts";
import { newLiveTurn } from "../../../tests/support/live_turn.ts";
import { AgentRuntime, type ConnectionHandle } from "./runtime.ts";

/** A runtime whose database is never reached: every test here stays on this isolate. */
function isolatedRuntime(): AgentRuntime {
  const noDatabase = new Proxy({}, {
    get() {
      throw new Error("this test must not reach the database");
    },
  }) as Sql;
  return new AgentRuntime({
    sql: noDatabase,
    llm: { baseUrl: "http://llm.invalid/v1", model: "m", fallbackModels: [] },
    config: agentConfig(),
    registry: [],
  });
}

Deno.test("runtime: a cancel of the user's own running turn aborts it here", async () => {
  const runtime = isolatedRuntime();
  const turn = newLiveTurn();
  runtime.turns.set(turn.turnId, turn);
  assert.equal(await runtime.cancel(turn.userId, turn.turnId), true);
  assert.equal(turn.signal.aborted, true);
});

Deno.test("runtime: close leaves the turns to other isolates, closes every socket with 1001, once", async () => {
  const runtime = isolatedRuntime();
  const turn = newLiveTurn();
  runtime.turns.set(turn.turnId, turn);
  const closed: number[] = [];
  const socket: ConnectionHandle = {
    id: "c1",
    userId: "alice",
    close: (code) => closed.push(code),
    revokeAccess: () => closed.push(4003),
  };
  runtime.sockets.add(socket);

  await runtime.close();
  await runtime.close();

  assert.equal(runtime.closed, true);
  assert.equal(turn.abortReason, "released");
  assert.deepEqual(closed, [1001]);
});
