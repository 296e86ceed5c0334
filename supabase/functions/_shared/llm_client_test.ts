import assert from "node:assert/strict";
import {
  type ChatMessage,
  llmConfigFromEnv,
  type LlmErrorEvent,
  type LlmStreamEvent,
  parseRetryAfter,
  streamChatCompletion,
  type StreamChatOptions,
  type ToolDefinition,
} from "./llm_client.ts";
import {
  fixtureArg,
  type LlmFixture,
  startLlmFixture,
} from "../../../scripts/standin/llm_fixture.ts";

const CALCULATOR: ToolDefinition = {
  type: "function",
  function: {
    name: "calculator",
    description: "Evaluates an arithmetic expression.",
    parameters: {
      type: "object",
      properties: { expression: { type: "string" } },
      required: ["expression"],
    },
  },
};

async function withFixture(test: (fixture: LlmFixture) => Promise<void>): Promise<void> {
  const fixture = await startLlmFixture({ port: 0, demoDelayMs: 0 });
  try {
    await test(fixture);
  } finally {
    await fixture.close();
  }
}

function options(fixture: LlmFixture, extra: Partial<StreamChatOptions> = {}): StreamChatOptions {
  return { baseUrl: fixture.url, apiKey: "test-key", model: "test/model", ...extra };
}

function userSays(content: string): ChatMessage[] {
  return [{ role: "system", content: "You are a test." }, { role: "user", content }];
}

async function collect(
  stream: AsyncIterable<LlmStreamEvent>,
): Promise<LlmStreamEvent[]> {
  const events: LlmStreamEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

function textOf(events: LlmStreamEvent[]): string {
  return events.map((event) => event.type === "text" ? event.delta : "").join("");
}

function only<T extends LlmStreamEvent["type"]>(
  events: LlmStreamEvent[],
  type: T,
): Extract<LlmStreamEvent, { type: T }> {
  const matching = events.filter((event) => event.type === type);
  assert.equal(matching.length, 1, `expected one ${type} event in ${JSON.stringify(events)}`);
  return matching[0] as Extract<LlmStreamEvent, { type: T }>;
}

function lastError(events: LlmStreamEvent[]): LlmErrorEvent {
  const last = events.at(-1);
  assert.equal(last?.type, "error", `expected an error last in ${JSON.stringify(events)}`);
  return last as LlmErrorEvent;
}

Deno.test("llm: streams text deltas, then done with the fixture's usage, model and id", async () => {
  await withFixture(async (fixture) => {
    const text = "Grüße 👋 — streamed in pieces, with multi-byte characters.";
    const directive = `[[fixture:text text=${
      fixtureArg(text)
    } prompt_tokens=17 completion_tokens=9 cost=0.00123]]`;
    const events = await collect(streamChatCompletion(
      { messages: userSays(`Say something ${directive}`), temperature: 0.2, maxTokens: 50 },
      options(fixture, { title: "Agent tests", referer: "https://example.test" }),
    ));

    assert.ok(events.filter((event) => event.type === "text").length > 3);
    assert.equal(textOf(events), text);
    const done = only(events, "done");
    assert.deepEqual(done.usage, { promptTokens: 17, completionTokens: 9, cost: 0.00123 });
    assert.equal(done.finishReason, "stop");
    assert.equal(done.model, "test/model");
    assert.match(done.generationId, /^gen-fixture-/);
    assert.equal(events.at(-1), done);

    const [request] = fixture.requests;
    assert.equal(request.headers.authorization, "Bearer test-key");
    assert.equal(request.headers["x-title"], "Agent tests");
    assert.equal(request.headers["http-referer"], "https://example.test");
    const body = request.body as Record<string, unknown>;
    assert.equal(body.stream, true);
    assert.deepEqual(body.usage, { include: true });
    assert.equal(body.model, "test/model");
    assert.equal(body.temperature, 0.2);
    assert.equal(body.max_tokens, 50);
    assert.equal((body.messages as ChatMessage[]).length, 2);
  });
});

Deno.test("llm: the fixture continues a partial assistant message (prefill), mid-piece too", async () => {
  await withFixture(async (fixture) => {
    const text = "One two three four, grüße 👋 five.";
    const directive = `[[fixture:text text=${fixtureArg(text)}]]`;
    const whole = textOf(
      await collect(streamChatCompletion({ messages: userSays(directive) }, options(fixture))),
    );
    assert.equal(whole, text);
    for (const cut of ["One two thr", "One two three four, grüße 👋", "One"]) {
      const events = await collect(streamChatCompletion({
        messages: [...userSays(directive), { role: "assistant", content: cut }],
      }, options(fixture)));
      assert.equal(cut + textOf(events), text, `continued after ${JSON.stringify(cut)}`);
      assert.ok(only(events, "done").usage.completionTokens > 0);
    }
  });
});

Deno.test("llm: a tool call split mid-string is reassembled after finish_reason tool_calls", async () => {
  await withFixture(async (fixture) => {
    const args = { expression: "(12+30)*2", note: 'naïve ünïcode "quoted"' };
    const directive = `[[fixture:tool_call tool=calculator args=${
      fixtureArg(JSON.stringify(args))
    }]]`;
    const messages = userSays(`Compute it ${directive}`);
    const events = await collect(
      streamChatCompletion({ messages, tools: [CALCULATOR] }, options(fixture)),
    );

    const toolCalls = only(events, "tool_calls");
    assert.equal(toolCalls.calls.length, 1);
    const [call] = toolCalls.calls;
    assert.equal(call.name, "calculator");
    assert.match(call.id, /^call_/);
    assert.deepEqual(JSON.parse(call.arguments), args);
    assert.equal(only(events, "done").finishReason, "tool_calls");
    assert.deepEqual(events.map((event) => event.type), ["tool_calls", "done"]);
    assert.deepEqual((fixture.requests[0].body as { tools: unknown }).tools, [CALCULATOR]);

    // Sending the result back in OpenAI format gets a text answer quoting it.
    const followUp = await collect(streamChatCompletion({
      messages: [
        ...messages,
        {
          role: "assistant",
          content: null,
          tool_calls: [{
            id: call.id,
            type: "function",
            function: { name: call.name, arguments: call.arguments },
          }],
        },
        { role: "tool", tool_call_id: call.id, content: "84" },
      ],
      tools: [CALCULATOR],
    }, options(fixture)));
    assert.equal(textOf(followUp), "The tool returned 84.");
    assert.equal(only(followUp, "done").finishReason, "stop");
  });
});

Deno.test("llm: parallel tool calls sharing index 0 are told apart by id", async () => {
  await withFixture(async (fixture) => {
    const directive = `[[fixture:parallel_tools tool=calculator args=${
      fixtureArg('{"expression":"6*7"}')
    } tool2=weather args2=${fixtureArg('{"city":"Zürich"}')}]]`;
    const events = await collect(
      streamChatCompletion({ messages: userSays(`Both ${directive}`) }, options(fixture)),
    );
    const { calls } = only(events, "tool_calls");
    assert.equal(calls.length, 2);
    assert.notEqual(calls[0].id, calls[1].id);
    assert.deepEqual(
      calls.map((call) => [call.name, JSON.parse(call.arguments)]),
      [["calculator", { expression: "6*7" }], ["weather", { city: "Zürich" }]],
    );
  });
});

Deno.test("llm: comment lines and blank keep-alives are ignored, CRLF or not", async () => {
  await withFixture(async (fixture) => {
    for (const eol of ["lf", "crlf", "cr"]) {
      const events = await collect(streamChatCompletion(
        { messages: userSays(`[[fixture:comments eol=${eol}]]`) },
        options(fixture),
      ));
      assert.equal(textOf(events), "Hello from the LLM fixture: grüße 👋, and goodbye.", eol);
      assert.equal(only(events, "done").finishReason, "stop");
    }
  });
});

Deno.test("llm: usage and cost are read from the last chunk", async () => {
  await withFixture(async (fixture) => {
    const events = await collect(streamChatCompletion(
      {
        messages: userSays(
          "[[fixture:tool_call prompt_tokens=1234 completion_tokens=56 cost=0.0789]]",
        ),
      },
      options(fixture),
    ));
    assert.deepEqual(only(events, "done").usage, {
      promptTokens: 1234,
      completionTokens: 56,
      cost: 0.0789,
    });
  });
});

Deno.test("llm: an HTTP 400 before the stream is returned at once, not retried", async () => {
  await withFixture(async (fixture) => {
    const message = "tools are not supported by this model";
    const events = await collect(streamChatCompletion(
      { messages: userSays(`[[fixture:error_before status=400 message=${fixtureArg(message)}]]`) },
      options(fixture, { maxRetries: 3 }),
    ));
    assert.equal(events.length, 1);
    const error = lastError(events);
    assert.equal(error.code, "upstream_http_error");
    assert.equal(error.status, 400);
    assert.equal(error.retryable, false);
    assert.equal(error.partial, false);
    assert.match(error.message, /tools are not supported by this model/);
    assert.equal(fixture.requests.length, 1);
  });
});

Deno.test("llm: 402 is not retried without Retry-After, and is with it", async () => {
  await withFixture(async (fixture) => {
    const plain = await collect(streamChatCompletion(
      { messages: userSays("[[fixture:error_before status=402]]") },
      options(fixture),
    ));
    const error = lastError(plain);
    assert.equal(error.code, "insufficient_credits");
    assert.equal(error.retryable, false);
    assert.equal(fixture.requests.length, 1);

    const withRetryAfter = await collect(streamChatCompletion(
      { messages: userSays("[[fixture:error_before status=402 retry_after=0]]") },
      options(fixture, { maxRetries: 2 }),
    ));
    assert.equal(lastError(withRetryAfter).code, "insufficient_credits");
    assert.equal(fixture.requests.length, 1 + 3);
  });
});

Deno.test("llm: 429 with Retry-After is waited out and retried until it succeeds", async () => {
  await withFixture(async (fixture) => {
    const key = crypto.randomUUID();
    const events = await collect(streamChatCompletion(
      { messages: userSays(`[[fixture:rate_limit key=${key} times=1 retry_after=1]]`) },
      options(fixture),
    ));
    assert.equal(events.some((event) => event.type === "error"), false);
    assert.equal(textOf(events), "Hello from the LLM fixture: grüße 👋, and goodbye.");
    assert.equal(only(events, "done").finishReason, "stop");
    assert.equal(fixture.requests.length, 2);
  });
});

Deno.test("llm: 429 whose Retry-After exceeds the cap is returned with retryAfterMs", async () => {
  await withFixture(async (fixture) => {
    const events = await collect(streamChatCompletion(
      { messages: userSays("[[fixture:rate_limit key=long times=5 retry_after=3600]]") },
      options(fixture),
    ));
    assert.equal(events.length, 1);
    const error = lastError(events);
    assert.equal(error.code, "rate_limited");
    assert.equal(error.status, 429);
    assert.equal(error.retryAfterMs, 3_600_000);
    assert.equal(error.retryable, true);
    assert.equal(fixture.requests.length, 1);
  });
});

Deno.test("llm: 503 retries are exhausted before the error is returned", async () => {
  await withFixture(async (fixture) => {
    const events = await collect(streamChatCompletion(
      { messages: userSays("[[fixture:error_before status=503]]") },
      options(fixture, { maxRetries: 2, retryBaseDelayMs: 1 }),
    ));
    const error = lastError(events);
    assert.equal(error.code, "unavailable");
    assert.equal(error.retryable, true);
    assert.equal(fixture.requests.length, 3);
  });
});

Deno.test("llm: a fallback model answers when the first model fails before output", async () => {
  await withFixture(async (fixture) => {
    const events = await collect(streamChatCompletion(
      { messages: userSays("[[fixture:text fail_models=primary/model fail_status=400]]") },
      options(fixture, { model: "primary/model", fallbackModels: ["backup/model"] }),
    ));
    assert.equal(events.some((event) => event.type === "error"), false);
    assert.equal(only(events, "done").model, "backup/model");
    assert.deepEqual(
      fixture.requests.map((request) => (request.body as { model: string }).model),
      ["primary/model", "backup/model"],
    );
  });
});

Deno.test("llm: a mid-stream error keeps the partial text and is not retried", async () => {
  await withFixture(async (fixture) => {
    const events = await collect(streamChatCompletion(
      { messages: userSays("[[fixture:error_mid]]") },
      options(fixture, { fallbackModels: ["backup/model"] }),
    ));
    assert.equal(textOf(events), "Partial answer before the failure");
    const error = lastError(events);
    assert.equal(error.code, "stream_error");
    assert.equal(error.partial, true);
    assert.match(error.message, /failed mid-stream/);
    assert.equal(events.some((event) => event.type === "done"), false);
    assert.equal(fixture.requests.length, 1);
  });
});

Deno.test("llm: a connection closed before [DONE] is connection_lost with partial output", async () => {
  await withFixture(async (fixture) => {
    const events = await collect(streamChatCompletion(
      { messages: userSays("[[fixture:disconnect]]") },
      options(fixture),
    ));
    assert.equal(textOf(events), "This answer is cut off");
    const error = lastError(events);
    assert.equal(error.code, "connection_lost");
    assert.equal(error.partial, true);
    assert.equal(fixture.requests.length, 1);
  });
});

Deno.test("llm: aborting mid-stream yields aborted and cancels the upstream request", async () => {
  await withFixture(async (fixture) => {
    const controller = new AbortController();
    const events: LlmStreamEvent[] = [];
    const stream = streamChatCompletion(
      { messages: userSays("[[fixture:slow delay=50 count=100]]") },
      options(fixture, { signal: controller.signal }),
    );
    for await (const event of stream) {
      events.push(event);
      if (events.length === 2) controller.abort();
    }
    assert.equal(events.length, 3);
    assert.equal(textOf(events), "word0 word1 ");
    const error = lastError(events);
    assert.equal(error.code, "aborted");
    assert.equal(error.retryable, false);
    assert.equal(error.partial, true);
    assert.equal(await fixture.waitForAbortedRequests(1), 1);
  });
});

Deno.test("llm: an already aborted signal sends no request", async () => {
  await withFixture(async (fixture) => {
    const events = await collect(streamChatCompletion(
      { messages: userSays("hello") },
      options(fixture, { signal: AbortSignal.abort() }),
    ));
    assert.equal(lastError(events).code, "aborted");
    assert.equal(lastError(events).partial, false);
    assert.equal(fixture.requests.length, 0);
  });
});

Deno.test("llm: upstream silence longer than timeoutMs is a timeout", async () => {
  await withFixture(async (fixture) => {
    const events = await collect(streamChatCompletion(
      { messages: userSays("[[fixture:slow delay=5000 count=3]]") },
      options(fixture, { timeoutMs: 200 }),
    ));
    assert.equal(textOf(events), "word0 ");
    const error = lastError(events);
    assert.equal(error.code, "timeout");
    assert.equal(error.partial, true);
    assert.equal(await fixture.waitForAbortedRequests(1), 1);
  });
});

Deno.test("llm: timeoutMs bounds each silence, not the whole answer", async () => {
  await withFixture(async (fixture) => {
    // Eight pauses of 100 ms: 800 ms in all, never 250 ms without a chunk.
    const events = await collect(streamChatCompletion(
      { messages: userSays("[[fixture:slow delay=100 count=9]]") },
      options(fixture, { timeoutMs: 250 }),
    ));
    assert.equal(events.at(-1)?.type, "done");
    assert.equal(textOf(events).trim().split(" ").length, 9);
  });
});

Deno.test("llm: the consumer leaving early cancels the upstream request", async () => {
  await withFixture(async (fixture) => {
    for await (
      const event of streamChatCompletion(
        { messages: userSays("[[fixture:slow delay=50 count=100]]") },
        options(fixture),
      )
    ) {
      if (event.type === "text") break;
    }
    assert.equal(await fixture.waitForAbortedRequests(1), 1);
  });
});

Deno.test("llm: the offline demo calls the calculator, then quotes its result", async () => {
  await withFixture(async (fixture) => {
    const messages = userSays("what is 2+3?");
    const first = await collect(streamChatCompletion(
      { messages, tools: [CALCULATOR] },
      options(fixture, { apiKey: undefined }),
    ));
    const { calls } = only(first, "tool_calls");
    assert.equal(calls.length, 1);
    assert.equal(calls[0].name, "calculator");
    assert.deepEqual(JSON.parse(calls[0].arguments), { expression: "2+3" });
    assert.equal(only(first, "done").model, "offline-demo");
    assert.equal(fixture.requests[0].headers.authorization, undefined);

    const second = await collect(streamChatCompletion({
      messages: [
        ...messages,
        {
          role: "assistant",
          content: null,
          tool_calls: [{
            id: calls[0].id,
            type: "function",
            function: { name: "calculator", arguments: calls[0].arguments },
          }],
        },
        {
          role: "tool",
          tool_call_id: calls[0].id,
          content: '{"value":"5","fraction":"5","exact":true}',
        },
      ],
      tools: [CALCULATOR],
    }, options(fixture)));
    const answer = textOf(second);
    // A sentence, as a model would say it, not the tool's raw JSON.
    assert.match(answer, /^2\+3 = 5\./);
    assert.doesNotMatch(answer, /\{/);
    assert.match(answer, /offline demo/);
    assert.equal(only(second, "done").finishReason, "stop");
  });
});

Deno.test("llm: the offline demo says what it is when there is nothing to compute", async () => {
  await withFixture(async (fixture) => {
    const events = await collect(streamChatCompletion(
      { messages: userSays("tell me a story"), tools: [CALCULATOR] },
      options(fixture),
    ));
    assert.equal(events.some((event) => event.type === "tool_calls"), false);
    assert.match(textOf(events), /offline demo model: no LLM API key is set/);
    assert.match(textOf(events), /You said: "tell me a story"/);
  });
});

Deno.test("llm: config comes from the environment with OpenRouter defaults", () => {
  const env = (values: Record<string, string>) => ({ get: (name: string) => values[name] });
  assert.deepEqual(llmConfigFromEnv(env({})), {
    baseUrl: "https://openrouter.ai/api/v1",
    model: "openai/gpt-4o-mini",
    fallbackModels: [],
  });
  assert.deepEqual(
    llmConfigFromEnv(env({
      LLM_BASE_URL: "http://127.0.0.1:54330/v1",
      LLM_API_KEY: "fallback-key",
      OPENROUTER_API_KEY: "or-key",
      LLM_MODEL: "anthropic/claude-sonnet-4",
      LLM_FALLBACK_MODELS: "a/one, b/two,,",
    })),
    {
      baseUrl: "http://127.0.0.1:54330/v1",
      apiKey: "or-key",
      model: "anthropic/claude-sonnet-4",
      fallbackModels: ["a/one", "b/two"],
    },
  );
  assert.equal(
    llmConfigFromEnv(env({ OPENROUTER_API_KEY: "", LLM_API_KEY: "other" })).apiKey,
    "other",
  );
});

Deno.test("llm: Retry-After is read as seconds or as an HTTP date", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("3", now), 3000);
  assert.equal(parseRetryAfter("1.5", now), 1500);
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:42 GMT", now), 42_000);
  assert.equal(parseRetryAfter("Wed, 31 Dec 2025 23:00:00 GMT", now), 0);
  assert.equal(parseRetryAfter("soon", now), undefined);
  assert.equal(parseRetryAfter(null, now), undefined);
});
