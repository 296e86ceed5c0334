/**
 * Traces: a turn's spans reach an OTLP collector (the double) as one trace, the turn's run →
 * its LLM calls → its tool calls, with the GenAI conventions' attributes; a turn parked on an
 * approval and continued by another isolate stays in its trace; the trace id is the one stored
 * beside the turn and its usage rows.
 */
import assert from "node:assert/strict";
import { fixtureArg } from "../../../scripts/standin/llm_fixture.ts";
import type { TurnFrame } from "../_shared/agent_protocol.ts";
import { OtlpTracer, tracer, useTracer } from "../_shared/tracing/otlp.ts";
import { rootSpanIdOfTurn } from "../_shared/tracing/genai.ts";
import { grant, withWorld } from "../../tests/support/agent_world.ts";
import { type ReceivedSpan, startOtlpDouble } from "../../tests/support/otlp_double.ts";

type Frame<T extends TurnFrame["type"]> = Extract<TurnFrame, { type: T }>;

Deno.test("one trace per turn: run → LLM calls → tool calls, continued on the isolate that got the approval", async () => {
  const collector = startOtlpDouble();
  const previous = tracer();
  const traced = new OtlpTracer({
    url: collector.url,
    headers: { authorization: "Bearer collector-key" },
    serviceName: "agent",
    batchDelayMs: 20,
  });
  useTracer(traced);
  try {
    await withWorld({}, async ({ sql, connect, user, startInstance }) => {
      const alice = await user();
      await grant(sql, alice, "calculator", "ask");
      const owner = await connect(alice);
      const id = crypto.randomUUID();
      const expression = fixtureArg(JSON.stringify({ expression: "6*7" }));
      owner.send({
        type: "chat",
        id,
        content: `[[fixture:tool_call tool=calculator args=${expression}]]`,
      });
      const start = await owner.take((f) =>
        f.type === "start" && f.user_message_id === id
      ) as Frame<
        "start"
      >;
      const ask = await owner.takeType("approval_required", start.turn_id);
      const elsewhere = await connect(alice, await startInstance());
      elsewhere.send({ type: "approve", call_id: ask.call_id, decision: "allow" });
      const frames = await owner.turnFrames(start.turn_id);
      assert.equal(frames.at(-1)?.type, "complete");

      const [turn] = await sql`select trace_id from public.agent_turns where id = ${start.turn_id}`;
      const traceId: string = turn.trace_id;
      assert.match(traceId, /^[0-9a-f]{32}$/);
      const usage = await sql`select kind::text, name, trace_id, prompt_tokens, completion_tokens,
                                     ttft_ms, approval, approval_wait_ms
                              from public.usage_metrics where turn_id = ${start.turn_id}
                              order by created_at, kind`;
      assert.deepEqual(usage.map((row) => [row.kind, row.trace_id]), [
        ["llm", traceId],
        ["tool", traceId],
        ["llm", traceId],
      ]);
      // The metrics' raw numbers, written with the rows: the answer's LLM call streamed text
      // (the first only asked for the tool; a tool streams none), and the tool call waited
      // for its approval.
      assert.deepEqual(usage.map((row) => row.ttft_ms === null), [true, true, false]);
      assert.equal(usage[1].approval, "allowed");
      assert.ok(usage[1].approval_wait_ms >= 0);
      assert.equal(usage[0].approval_wait_ms, null);

      await traced.flush();
      const ofTurn = (spans: ReceivedSpan[]) => spans.filter((s) => s.traceId === traceId);
      // 2 runs, 2 LLM calls, the call that parked and the call that ran.
      await collector.waitFor((spans) => ofTurn(spans).length >= 6);
      const spans = ofTurn(collector.spans);
      const named = (prefix: string) => spans.filter((span) => span.name.startsWith(prefix));
      assert.equal(spans.length, 6, spans.map((s) => s.name).join(", "));
      assert.ok(spans.every((span) => span.service === "agent"));

      const [root, continued] = named("invoke_agent");
      assert.equal(root.parentSpanId, undefined);
      assert.equal(root.spanId, rootSpanIdOfTurn(start.turn_id));
      assert.equal(root.attributes["gen_ai.operation.name"], "invoke_agent");
      assert.equal(root.attributes["agent.turn.state"], "parked");
      assert.equal(continued.parentSpanId, root.spanId, "the continued run hangs under the root");
      assert.equal(continued.attributes["agent.turn.continued"], true);
      assert.equal(continued.attributes["agent.turn.state"], "complete");

      const chats = named("chat ");
      assert.deepEqual(chats.map((span) => span.parentSpanId), [root.spanId, continued.spanId]);
      const llmRows = usage.filter((row) => row.kind === "llm");
      chats.forEach((span, index) => {
        assert.equal(span.kind, 3, "an LLM call is a CLIENT span");
        assert.equal(span.attributes["gen_ai.operation.name"], "chat");
        assert.equal(span.attributes["gen_ai.request.model"], "fixture-model");
        assert.equal(span.attributes["gen_ai.response.model"], llmRows[index].name);
        assert.equal(span.attributes["gen_ai.usage.input_tokens"], llmRows[index].prompt_tokens);
        assert.equal(
          span.attributes["gen_ai.usage.output_tokens"],
          llmRows[index].completion_tokens,
        );
      });

      const tools = named("execute_tool calculator");
      assert.deepEqual(
        tools.map((span) => [
          span.parentSpanId,
          span.attributes["gen_ai.tool.name"],
          span.attributes["gen_ai.tool.call.id"],
          span.attributes["agent.tool.status"],
        ]),
        [
          [root.spanId, "calculator", ask.call_id, "left"],
          [continued.spanId, "calculator", ask.call_id, "ok"],
        ],
      );
      assert.ok(spans.every((span) => span.end >= span.start));
      assert.equal(collector.posts[0].authorization, "Bearer collector-key");
    });
  } finally {
    useTracer(previous);
    await collector.close();
  }
});

Deno.test("a refused client frame is counted in Postgres for /metrics, by code", async () => {
  await withWorld({}, async ({ sql, connect, user }) => {
    const counted = async () => {
      const [row] = await sql`select coalesce(sum(refusals), 0)::int as n
                              from public.refusal_counts
                              where code = 'bad_request' and minute > now() - interval '10 minutes'`;
      return row.n as number;
    };
    const before = await counted();
    const client = await connect(await user());
    client.socket.send(new Uint8Array([1, 2, 3]));
    assert.equal((await client.takeType("error")).code, "bad_request");
    for (let tries = 0; await counted() === before; tries++) {
      assert.ok(tries < 100, "the refusal was not counted");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });
});
