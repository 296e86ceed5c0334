import assert from "node:assert/strict";
import {
  decodeFrame,
  encodeMessage,
  encodeUserBroadcast,
  encodeWithRawPayload,
  type PhoenixMessage,
} from "./phoenix.ts";

const join: PhoenixMessage = {
  joinRef: "6",
  ref: "6",
  topic: "realtime:room1",
  event: "phx_join",
  payload: { config: { private: false } },
};

Deno.test("phoenix: vsn 2.0.0 text frames are arrays, both ways", () => {
  const text = '["6","6","realtime:room1","phx_join",{"config":{"private":false}}]';
  assert.deepEqual(decodeFrame(text, "2.0.0"), { ok: true, message: join });
  assert.equal(encodeMessage(join, "2.0.0"), text);
  assert.equal(
    encodeMessage(
      { joinRef: null, ref: "8", topic: "phoenix", event: "phx_reply", payload: {} },
      "2.0.0",
    ),
    '[null,"8","phoenix","phx_reply",{}]',
  );
});

Deno.test("phoenix: vsn 1.0.0 text frames are objects, both ways", () => {
  const text = JSON.stringify({
    topic: "realtime:room1",
    event: "phx_join",
    payload: { config: { private: false } },
    ref: "6",
    join_ref: "6",
  });
  assert.deepEqual(decodeFrame(text, "1.0.0"), { ok: true, message: join });
  assert.deepEqual(JSON.parse(encodeMessage(join, "1.0.0")), JSON.parse(text));
});

Deno.test("phoenix: numeric refs become strings; malformed frames are errors", () => {
  const decoded = decodeFrame('[1,2,"phoenix","heartbeat",{}]', "2.0.0");
  assert.ok(decoded.ok);
  assert.deepEqual([decoded.message.joinRef, decoded.message.ref], ["1", "2"]);
  for (
    const [frame, vsn] of [
      ["not json", "2.0.0"],
      ['["1","1","t"]', "2.0.0"],
      ['[null,null,5,"e",{}]', "2.0.0"],
      ['["1","1","t","e",{}]', "1.0.0"],
      ['[{"x":1},"1","t","e",{}]', "2.0.0"],
    ] as const
  ) {
    const result = decodeFrame(frame, vsn);
    assert.equal(result.ok, false, frame);
    assert.equal(!result.ok && result.code, "malformed_frame", frame);
  }
});

Deno.test("phoenix: binary user broadcast push (kind 3) with JSON and raw payloads", () => {
  // The reference's example: 03 01 01 0e 04 00 01 "6" "7" "realtime:room1" "ping" {"n":1}
  const body = new TextEncoder().encode(`67realtime:room1ping{"n":1}`);
  const json = decodeFrame(new Uint8Array([3, 1, 1, 14, 4, 0, 1, ...body]).buffer, "2.0.0");
  assert.deepEqual(json, {
    ok: true,
    message: {
      joinRef: "6",
      ref: "7",
      topic: "realtime:room1",
      event: "broadcast",
      payload: { type: "broadcast", event: "ping", payload: { n: 1 } },
    },
  });

  const meta = new TextEncoder().encode('{"persist":true}');
  const raw = new Uint8Array([
    3,
    0,
    0,
    1,
    1,
    meta.length,
    0,
    ..."t".split("").map((c) => c.charCodeAt(0)),
    ..."e".split("").map((c) => c.charCodeAt(0)),
    ...meta,
    9,
    8,
    7,
  ]);
  const decoded = decodeFrame(raw, "2.0.0");
  assert.ok(decoded.ok);
  assert.deepEqual(decoded.message.joinRef, null);
  assert.deepEqual(decoded.message.payload, {
    type: "broadcast",
    event: "e",
    payload: new Uint8Array([9, 8, 7]),
    meta: { persist: true },
  });
});

Deno.test("phoenix: other binary kinds and truncated pushes are refused", () => {
  const other = decodeFrame(new Uint8Array([4, 0, 0, 0, 1]), "2.0.0");
  assert.deepEqual(other.ok ? undefined : other.code, "unsupported_binary_kind");
  const truncated = decodeFrame(new Uint8Array([3, 1, 1, 14, 4, 0, 1, 54]), "2.0.0");
  assert.deepEqual(truncated.ok ? undefined : truncated.code, "malformed_frame");
});

Deno.test("phoenix: server user broadcast (kind 4) is laid out as realtime-js decodes it", () => {
  const frame = encodeUserBroadcast("realtime:r", "ev", new Uint8Array([1, 2]), { id: "x" });
  const meta = '{"id":"x"}';
  assert.deepEqual([...frame.subarray(0, 5)], [4, 10, 2, meta.length, 0]);
  const text = new TextDecoder().decode(frame.subarray(5, 5 + 10 + 2 + meta.length));
  assert.equal(text, `realtime:rev${meta}`);
  assert.deepEqual([...frame.subarray(5 + 10 + 2 + meta.length)], [1, 2]);

  const json = encodeUserBroadcast("realtime:r", "ev", { a: 1 });
  assert.equal(json[4], 1);
  assert.equal(new TextDecoder().decode(json.subarray(5 + 12)), '{"a":1}');
});

Deno.test("phoenix: a pre-serialized payload is spliced in verbatim", () => {
  const message = { joinRef: null, ref: null, topic: "realtime:t", event: "postgres_changes" };
  const payload = '{"ids":[1],"data":{"a":1}}';
  assert.deepEqual(JSON.parse(encodeWithRawPayload(message, payload, "2.0.0")), [
    null,
    null,
    "realtime:t",
    "postgres_changes",
    { ids: [1], data: { a: 1 } },
  ]);
  assert.deepEqual(JSON.parse(encodeWithRawPayload(message, payload, "1.0.0")), {
    topic: "realtime:t",
    event: "postgres_changes",
    payload: { ids: [1], data: { a: 1 } },
    ref: null,
    join_ref: null,
  });
});
