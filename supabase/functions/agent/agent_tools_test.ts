/**
 * Tools in the turn loop: calls assembled from split argument deltas, results fed back,
 * progress, the step limit, permissions (auto, ask, deny, none) and approvals (allow, deny,
 * timeout, remember for the session or for good).
 */
import assert from "node:assert/strict";
import { z } from "zod";
import { fixtureArg } from "../../../scripts/standin/llm_fixture.ts";
import type { ServerFrame, TurnFrame } from "../_shared/agent_protocol.ts";
import { createToolRegistry } from "../_shared/tools/registry.ts";
import type { ToolDefinition } from "../_shared/tools/types.ts";
import { type AgentClient, grant, tokensOf, withWorld } from "../../tests/support/agent_world.ts";

type Frame<T extends TurnFrame["type"]> = Extract<TurnFrame, { type: T }>;

const probeInput = z.object({ steps: z.int().min(1).max(10) });
const probeOutput = z.object({ done: z.boolean(), steps: z.int() });

/** A tool that reports progress before it answers. */
const progressProbe: ToolDefinition<typeof probeInput, typeof probeOutput> = {
  name: "progress_probe",
  title: "Progress probe",
  description: "Reports progress `steps` times, then answers.",
  input: probeInput,
  output: probeOutput,
  annotations: {
    readOnlyHint: true,
    destructiveHint: false,
    idempotentHint: true,
    openWorldHint: false,
  },
  permission: "progress_probe",
  async run({ steps }, { progress }) {
    for (let step = 1; step <= steps; step++) {
      await progress(step, steps, `step ${step}`, { stage: `stage ${step}`, data: { done: step } });
    }
    return { ok: true, output: { done: true, steps } };
  },
};

const TOOLS = [...createToolRegistry({ workflow: {} }), progressProbe];

function toolCall(tool: string, args: unknown): string {
  return `[[fixture:tool_call tool=${tool} args=${fixtureArg(JSON.stringify(args))}]]`;
}

function ofType<T extends TurnFrame["type"]>(
  frames: TurnFrame[],
  type: T,
): Frame<T>[] {
  return frames.filter((frame): frame is Frame<T> => frame.type === type);
}

Deno.test("a tool call with split arguments runs, and its result goes back to the model", async () => {
  await withWorld({ tools: TOOLS }, async ({ sql, connect, user, fixture }) => {
    const alice = await user();
    const client = await connect(alice);
    const frames = await client.chat("[[fixture:tool_call]] what is (1+2)*3?");
    assert.deepEqual(
      frames.map((frame) => frame.type).filter((type) => type !== "token"),
      [
        "start",
        "step",
        "step",
        "tool_call",
        "tool_result",
        "step",
        "response",
        "complete",
      ],
    );
    assert.deepEqual(
      frames.map((frame) => frame.seq),
      frames.map((_, i) => i + 1),
    );
    const [call] = ofType(frames, "tool_call");
    assert.equal(call.tool, "calculator");
    assert.deepEqual(call.args, { expression: "(1+2)*3" });
    const [result] = ofType(frames, "tool_result");
    assert.equal(result.call_id, call.call_id);
    assert.equal(result.is_error, false);
    assert.deepEqual(result.result, { value: "9", fraction: "9", exact: true });
    const complete = frames.at(-1) as Frame<"complete">;
    assert.equal(complete.steps, 2);
    assert.match(tokensOf(frames), /^The tool returned \{"value":"9"/);

    // The second request carries the call and its result, under the call's id.
    const second = fixture.requests.at(-1)?.body as {
      messages: {
        role: string;
        content: string | null;
        tool_call_id?: string;
      }[];
      tools: { function: { name: string } }[];
    };
    const tail = second.messages.slice(-2);
    assert.equal(tail[0].role, "assistant");
    assert.deepEqual(tail[1], {
      role: "tool",
      tool_call_id: call.call_id,
      content: JSON.stringify(result.result),
    });
    assert.ok(second.tools.some((tool) => tool.function.name === "calculator"));

    const usage = await sql`select kind, name, status from public.usage_metrics
                            where user_id = ${alice.id} order by id`;
    assert.deepEqual(usage.map((u) => [u.kind, u.name, u.status]), [
      ["llm", "fixture-model", "ok"],
      ["tool", "calculator", "ok"],
      ["llm", "fixture-model", "ok"],
    ]);
    const [message] = await sql`select tool_calls from public.chat_history
                                where client_id = ${(frames[0] as Frame<"start">).message_id}`;
    assert.deepEqual(message.tool_calls, [{
      id: call.call_id,
      name: "calculator",
      arguments: '{"expression":"(1+2)*3"}',
      result: result.result,
      is_error: false,
    }]);
  });
});

Deno.test("a tool reports progress frames before its result", async () => {
  await withWorld({ tools: TOOLS }, async ({ sql, connect, user }) => {
    const alice = await user();
    await grant(sql, alice, "progress_probe", "auto");
    const client = await connect(alice);
    const frames = await client.chat(
      `${toolCall("progress_probe", { steps: 3 })} go`,
    );
    const progress = ofType(frames, "progress");
    assert.deepEqual(progress.map((p) => [p.stage, p.data]), [
      ["stage 1", { done: 1 }],
      ["stage 2", { done: 2 }],
      ["stage 3", { done: 3 }],
    ]);
    assert.deepEqual(progress.map((p) => [p.progress, p.total, p.message]), [
      [1, 3, "step 1"],
      [2, 3, "step 2"],
      [3, 3, "step 3"],
    ]);
    const types = frames.map((frame) => frame.type);
    assert.ok(types.indexOf("tool_call") < types.indexOf("progress"));
    assert.ok(types.lastIndexOf("progress") < types.indexOf("tool_result"));
    assert.deepEqual(ofType(frames, "tool_result")[0].result, {
      done: true,
      steps: 3,
    });
  });
});

Deno.test("a model that keeps calling tools stops at the step limit", async () => {
  await withWorld(
    { tools: TOOLS, config: { maxSteps: 3 } },
    async ({ connect, user, fixture }) => {
      const client = await connect(await user());
      const frames = await client.chat("[[fixture:parallel_tools]] loop");
      const last = frames.at(-1)!;
      assert.ok(
        last.type === "error" && last.code === "step_limit",
        JSON.stringify(last),
      );
      // Two parallel calls per step, run for the first two steps; the third may not use tools.
      assert.equal(ofType(frames, "tool_result").length, 4);
      assert.equal(fixture.requests.length, 3);
      const bodies = fixture.requests.map((r) => r.body as { tool_choice?: string });
      assert.deepEqual(bodies.map((b) => b.tool_choice), [
        undefined,
        undefined,
        "none",
      ]);
    },
  );
});

Deno.test("tool errors the model sees: unknown tool, bad arguments, deny, no grant", async () => {
  await withWorld({ tools: TOOLS }, async ({ sql, connect, user }) => {
    const alice = await user();
    await grant(sql, alice, "progress_probe", "deny");
    const client = await connect(alice);
    const resultOf = async (content: string) => {
      const frames = await client.chat(content);
      assert.equal(
        frames.at(-1)?.type,
        "complete",
        JSON.stringify(frames.at(-1)),
      );
      return ofType(frames, "tool_result")[0];
    };
    const unknown = await resultOf(`${toolCall("no_such_tool", {})} go`);
    assert.equal(unknown.is_error, true);
    assert.equal((unknown.result as { code: string }).code, "unknown_tool");

    const invalid = await resultOf(
      `${toolCall("calculator", { expression: 42 })} go`,
    );
    assert.equal(
      (invalid.result as { code: string }).code,
      "invalid_arguments",
    );
    assert.match(
      (invalid.result as { message: string }).message,
      /^expression: /,
    );

    const denied = await resultOf(
      `${toolCall("progress_probe", { steps: 1 })} go`,
    );
    assert.equal((denied.result as { code: string }).code, "permission_denied");
    assert.match((denied.result as { message: string }).message, /deny/);

    await sql`delete from public.permissions where user_id = ${alice.id} and tool = 'calculator'`;
    const ungranted = await resultOf(
      `${toolCall("calculator", { expression: "1+1" })} go`,
    );
    assert.equal(
      (ungranted.result as { code: string }).code,
      "permission_denied",
    );

    const statuses = await sql`select name, status from public.usage_metrics
                               where user_id = ${alice.id} and kind = 'tool' order by id`;
    assert.deepEqual(statuses.map((s) => [s.name, s.status]), [
      ["no_such_tool", "error"],
      ["calculator", "error"],
      ["progress_probe", "denied"],
      ["calculator", "denied"],
    ]);
  });
});

/** Sends a chat that calls the calculator and waits for its approval request. */
async function askedFor(
  client: AgentClient,
  extra: { session_id?: string } = {},
): Promise<{ start: Frame<"start">; ask: Frame<"approval_required"> }> {
  const id = crypto.randomUUID();
  client.send({
    type: "chat",
    id,
    content: `${toolCall("calculator", { expression: "6*7" })} go`,
    ...extra,
  });
  const start = await client.take((f) => f.type === "start" && f.user_message_id === id) as Frame<
    "start"
  >;
  const ask = await client.takeType("approval_required", start.turn_id);
  return { start, ask };
}

async function finish(
  client: AgentClient,
  turnId: string,
): Promise<TurnFrame[]> {
  return await client.turnFrames(turnId);
}

function resultFrame(frames: TurnFrame[]): Frame<"tool_result"> {
  return ofType(frames, "tool_result")[0];
}

Deno.test("mode ask: allow runs the tool, deny refuses it, silence times out", async () => {
  await withWorld(
    { tools: TOOLS, config: { approvalTimeoutMs: 300 } },
    async (world) => {
      const { sql, connect, user } = world;
      const alice = await user();
      await grant(sql, alice, "calculator", "ask");
      const client = await connect(alice);

      const allowed = await askedFor(client);
      assert.equal(allowed.ask.tool, "calculator");
      assert.deepEqual(allowed.ask.args, { expression: "6*7" });
      assert.equal(allowed.ask.timeout_ms, 300);
      client.send({
        type: "approve",
        call_id: allowed.ask.call_id,
        decision: "allow",
      });
      const afterAllow = await finish(client, allowed.start.turn_id);
      assert.equal(resultFrame(afterAllow).is_error, false);
      assert.deepEqual(resultFrame(afterAllow).result, {
        value: "42",
        fraction: "42",
        exact: true,
      });

      const denied = await askedFor(client);
      client.send({
        type: "approve",
        call_id: denied.ask.call_id,
        decision: "deny",
      });
      const afterDeny = await finish(client, denied.start.turn_id);
      assert.equal(
        (resultFrame(afterDeny).result as { code: string }).code,
        "approval_denied",
      );
      assert.equal(afterDeny.at(-1)?.type, "complete");

      const ignored = await askedFor(client);
      const afterSilence = await finish(client, ignored.start.turn_id);
      assert.equal(
        (resultFrame(afterSilence).result as { code: string }).code,
        "approval_timeout",
      );

      const late = crypto.randomUUID();
      client.send({
        type: "approve",
        call_id: ignored.ask.call_id,
        decision: "allow",
      });
      client.send({ type: "approve", call_id: late, decision: "allow" });
      const unknown = await client.take((f) => f.type === "error" && f.ref === late);
      assert.equal(
        (unknown as ServerFrame & { code: string }).code,
        "not_found",
      );

      const statuses = await sql`select status from public.usage_metrics
                               where user_id = ${alice.id} and kind = 'tool' order by id`;
      assert.deepEqual(statuses.map((s) => s.status), [
        "ok",
        "denied",
        "denied",
      ]);
    },
  );
});

Deno.test("remember: session skips the question in that session only", async () => {
  await withWorld({ tools: TOOLS }, async ({ sql, connect, user }) => {
    const alice = await user();
    await grant(sql, alice, "calculator", "ask");
    const client = await connect(alice);
    const first = await askedFor(client);
    client.send({
      type: "approve",
      call_id: first.ask.call_id,
      decision: "allow",
      remember: "session",
    });
    await finish(client, first.start.turn_id);
    const approvals = await sql`select session_id, tool from public.tool_approvals
                                where user_id = ${alice.id}`;
    assert.deepEqual(approvals.map((a) => [a.session_id, a.tool]), [
      [first.start.session_id, "calculator"],
    ]);

    const sameSession = await client.chat(
      `${toolCall("calculator", { expression: "1+1" })} go`,
      {
        session_id: first.start.session_id,
      },
    );
    assert.equal(ofType(sameSession, "approval_required").length, 0);
    assert.equal(resultFrame(sameSession).is_error, false);

    const otherSession = await askedFor(client);
    assert.notEqual(otherSession.start.session_id, first.start.session_id);
    client.send({
      type: "approve",
      call_id: otherSession.ask.call_id,
      decision: "deny",
    });
    await finish(client, otherSession.start.turn_id);
    const [grantRow] = await sql`select approval_mode from public.permissions
                                 where user_id = ${alice.id} and tool = 'calculator'`;
    assert.equal(
      grantRow.approval_mode,
      "ask",
      "a session approval leaves the grant alone",
    );
  });
});

Deno.test("remember: always turns the grant to auto for every later session", async () => {
  await withWorld({ tools: TOOLS }, async ({ sql, connect, user }) => {
    const alice = await user();
    await sql`delete from public.permissions where user_id = ${alice.id}`;
    await grant(sql, alice, "*", "ask");
    const client = await connect(alice);
    const first = await askedFor(client);
    client.send({
      type: "approve",
      call_id: first.ask.call_id,
      decision: "allow",
      remember: "always",
    });
    await finish(client, first.start.turn_id);
    const grants = await sql`select tool, approval_mode from public.permissions
                             where user_id = ${alice.id} order by tool`;
    assert.deepEqual(grants.map((g) => [g.tool, g.approval_mode]), [
      ["*", "ask"],
      ["calculator", "auto"],
    ]);

    const later = await client.chat(
      `${toolCall("calculator", { expression: "2+2" })} go`,
    );
    assert.equal(ofType(later, "approval_required").length, 0);
    assert.deepEqual(resultFrame(later).result, {
      value: "4",
      fraction: "4",
      exact: true,
    });
  });
});

Deno.test("an approval sent through another isolate reaches the waiting turn", async () => {
  await withWorld(
    { tools: TOOLS },
    async ({ sql, connect, user, startInstance }) => {
      const alice = await user();
      await grant(sql, alice, "calculator", "ask");
      const owner = await connect(alice);
      const { start, ask } = await askedFor(owner);
      const elsewhere = await connect(alice, await startInstance());
      elsewhere.send({
        type: "approve",
        call_id: ask.call_id,
        decision: "allow",
      });
      const frames = await finish(owner, start.turn_id);
      assert.equal(resultFrame(frames).is_error, false);
      assert.deepEqual(resultFrame(frames).result, {
        value: "42",
        fraction: "42",
        exact: true,
      });
      const [turn] = await sql`select awaiting_call_id, approval_answer from public.agent_turns
                             where id = ${start.turn_id}`;
      assert.deepEqual([turn.awaiting_call_id, turn.approval_answer], [
        null,
        null,
      ]);
      // Nothing waits any more: a second answer finds nothing.
      elsewhere.send({
        type: "approve",
        call_id: ask.call_id,
        decision: "deny",
      });
      assert.equal((await elsewhere.takeType("error")).code, "not_found");
    },
  );
});

Deno.test("the agent's tool calls count against the user's tool-call rate and token quota", async () => {
  // Two parallel calls in each of the first two steps: four calls.
  await withWorld({ tools: TOOLS, config: { maxSteps: 3 } }, async ({ sql, connect, user }) => {
    const alice = await user("metered");
    // Room for three calls, no refill: the fourth of two parallel steps is refused.
    await sql`update public.user_limits
              set tool_call_capacity = 3, tool_call_tokens = 3, tool_calls_per_minute = 0,
                  tool_call_updated_at = now()
              where user_id = ${alice.id}`;
    const client = await connect(alice);
    const before = await sql`select day_tokens from public.user_limits
                             where user_id = ${alice.id}`;
    const frames = await client.chat("[[fixture:parallel_tools]] twice");
    const results = ofType(frames, "tool_result");
    assert.equal(results.length, 4);
    const refused = results.filter((r) => r.is_error);
    assert.equal(refused.length, 1, JSON.stringify(results));
    assert.equal((refused[0].result as { code: string }).code, "rate_limited");

    const [limits] = await sql`select tool_call_tokens, day_tokens from public.user_limits
                               where user_id = ${alice.id}`;
    assert.ok(limits.tool_call_tokens < 1, "the three admitted calls took the bucket");
    const llmTokens = await sql`select coalesce(sum(prompt_tokens + completion_tokens), 0)::int
                                  as tokens
                                from public.usage_metrics
                                where user_id = ${alice.id} and kind = 'llm'`;
    assert.equal(
      Number(limits.day_tokens) - Number(before[0].day_tokens),
      llmTokens[0].tokens + 3 * 100,
      "each admitted call cost tool_call_token_cost (100) of the day's tokens",
    );
    const usage = await sql`select status from public.usage_metrics
                            where user_id = ${alice.id} and kind = 'tool' order by id`;
    assert.deepEqual(usage.map((u) => u.status).sort(), ["denied", "ok", "ok", "ok"]);
  });
});
