/**
 * One whole chat per kind of project, through the stand-in: sign in with supabase-js, open the
 * agent's WebSocket through the gateway with the token as its subprotocol, get an answer from
 * the offline LLM. The functions run in their own workers with the environment that kind of
 * project gets (SUPABASE_JWKS with the EC key, with the HS256 oct key, or none at all).
 */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import { decodeProtectedHeader } from "jose";
import { startStack } from "../../scripts/standin/stack.ts";
import type { JwtMode } from "../../scripts/standin/signing_keys.ts";
import { AgentClient, tokensOf } from "./support/agent_world.ts";
import { assertNothingSecretIn, secretsOf } from "./support/log_scan.ts";

const EXPECTED: Record<JwtMode, { alg: string; kid: boolean; publicKeys: number }> = {
  es256: { alg: "ES256", kid: true, publicKeys: 1 },
  // The public JWKS never shows a shared secret.
  hs256: { alg: "HS256", kid: true, publicKeys: 0 },
  legacy: { alg: "HS256", kid: false, publicKeys: 0 },
};

for (const mode of ["es256", "hs256", "legacy"] as const) {
  Deno.test(`${mode}: a user signs in and chats with the agent through the stand-in`, async () => {
    const logs: string[] = [];
    const stack = await startStack({ ephemeral: true, jwt: mode, log: (line) => logs.push(line) });
    const supabase = createClient(stack.apiUrl, stack.publishableKey, {
      auth: { persistSession: false, autoRefreshToken: false },
    });
    let client: AgentClient | undefined;
    const secrets = secretsOf(stack);
    try {
      const jwks = await (await fetch(`${stack.apiUrl}/auth/v1/.well-known/jwks.json`)).json();
      assert.equal(jwks.keys.length, EXPECTED[mode].publicKeys);

      const { data, error } = await supabase.auth.signInWithPassword({
        email: "alice@example.com",
        password: "password123",
      });
      assert.equal(error, null);
      const token = data.session!.access_token;
      secrets.push(token);
      const header = decodeProtectedHeader(token);
      assert.equal(header.alg, EXPECTED[mode].alg);
      assert.equal(typeof header.kid === "string", EXPECTED[mode].kid);

      const agentUrl = `${stack.apiUrl.replace(/^http/, "ws")}/functions/v1/agent`;
      client = await AgentClient.open(agentUrl, { protocols: [`jwt-${token}`] });
      const ready = await client.takeType("ready");
      assert.equal(ready.user_id, data.user!.id);
      const frames = await client.chat("hello, a chat no log may show");
      assert.equal(frames.at(-1)?.type, "complete", JSON.stringify(frames.at(-1)));
      assert.ok(tokensOf(frames).length > 0);

      // A forged token of the mode's own kind is refused at the edge, not by a crash.
      const forged = `${token.slice(0, token.lastIndexOf(".") + 1)}${"A".repeat(43)}`;
      const refused = await fetch(`${stack.apiUrl}/functions/v1/history/sessions`, {
        headers: { Authorization: `Bearer ${forged}` },
      });
      assert.equal(refused.status, 401);
      assert.equal((await refused.json()).error.code, "invalid_token");

      if (stack.legacyKeys) {
        // The JWT API keys open the project's REST like the sb_ keys do.
        const rest = await fetch(`${stack.apiUrl}/rest/v1/chat_sessions?select=id`, {
          headers: { apikey: stack.legacyKeys.anon, Authorization: `Bearer ${token}` },
        });
        assert.equal(rest.status, 200, await rest.clone().text());
        assert.ok(Array.isArray(await rest.json()));
      }
    } finally {
      client?.close();
      await client?.closed;
      await supabase.auth.signOut();
      await stack.stop();
    }
    // After the stop: the workers' last lines (beforeunload, socket_close) are in.
    assertNothingSecretIn(logs, { secrets, contents: ["hello, a chat no log may show"] });
  });
}
