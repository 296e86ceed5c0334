/**
 * The model catalogue (20261203000100_models.sql): an operator manages it as service_role,
 * users read its enabled rows, and a turn may only start with an enabled model.
 */
import assert from "node:assert/strict";
import { startTurn, type TurnStart } from "../functions/_shared/agent/turn_store.ts";
import { asServiceRole } from "../functions/_shared/db/client.ts";
import { as, connectTestDatabase, createUser, sqlState } from "./support/database.ts";

function chat(model: string): TurnStart {
  const turnId = crypto.randomUUID();
  return {
    turnId,
    sessionId: crypto.randomUUID(),
    title: "a title",
    messages: [
      {
        id: crypto.randomUUID(),
        role: "user",
        content: "hello",
        turn_id: turnId,
      },
      {
        id: crypto.randomUUID(),
        role: "assistant",
        content: "",
        status: "streaming",
        turn_id: turnId,
      },
    ],
    owner: "isolate-test",
    model,
    promptTokens: 0,
    completionTokens: 500,
  };
}

Deno.test("an operator manages the catalogue; users read its enabled models only", async () => {
  const sql = connectTestDatabase();
  const id = `test/model-${crypto.randomUUID()}`;
  try {
    const alice = await createUser(sql, "models");
    await asServiceRole(sql, async (tx) => {
      await tx`insert into public.models (id, prompt_usd_per_token, completion_usd_per_token)
               values (${id}, 0.000001, 0.000002)`;
      await tx`update public.models set display_name = 'Test' where id = ${id}`;
    });
    const visible = async () =>
      (await as(
        sql,
        alice,
        (tx) => tx`select id, display_name from public.models`,
      ))
        .map((row) => row.id as string);
    assert.ok((await visible()).includes(id));
    assert.ok(
      (await visible()).includes("openai/gpt-4o-mini"),
      "the seeded default model",
    );

    await asServiceRole(
      sql,
      (tx) => tx`update public.models set enabled = false where id = ${id}`,
    );
    assert.ok(
      !(await visible()).includes(id),
      "a disabled model is not offered",
    );

    assert.equal(
      await sqlState(
        as(sql, alice, (tx) => tx`update public.models set enabled = true`),
      ),
      "42501",
      "users cannot change the catalogue",
    );
    const [{ deleted }] = await asServiceRole(
      sql,
      (tx) =>
        tx`with d as (delete from public.models where id = ${id} returning 1)
                 select count(*)::int as deleted from d`,
    );
    assert.equal(deleted, 1);
  } finally {
    await sql`delete from public.models where id = ${id}`;
    await sql.end();
  }
});

Deno.test("a turn starts only with an enabled catalogue model, refusing before reserving", async () => {
  const sql = connectTestDatabase();
  const disabled = `test/disabled-${crypto.randomUUID()}`;
  try {
    const alice = await createUser(sql, "model-choice");
    await sql`insert into public.models (id, prompt_usd_per_token, completion_usd_per_token,
                enabled) values (${disabled}, 0, 0, false)`;
    for (const model of ["openai/o1-pro", disabled]) {
      const start = chat(model);
      assert.deepEqual(await startTurn(sql, alice.claims, start), {
        kind: "refused",
        reason: "model_not_allowed",
      });
      const [{ stored }] = await sql`select count(*)::int as stored from public.chat_sessions
                                     where id = ${start.sessionId}`;
      assert.equal(stored, 0, `${model}: nothing stored`);
    }
    const [limits] = await sql`select day_tokens from public.user_limits
                               where user_id = ${alice.id}`;
    assert.equal(Number(limits.day_tokens), 0, "nothing reserved");

    assert.equal(
      (await startTurn(sql, alice.claims, chat("openai/gpt-4o-mini"))).kind,
      "started",
    );
  } finally {
    await sql`delete from public.models where id = ${disabled}`;
    await sql.end();
  }
});
