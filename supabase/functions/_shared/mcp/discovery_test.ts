/**
 * What MCP clients discover and who may reach the functions: the protected-resource metadata
 * names the public URL (never an internal SUPABASE_URL), an authorization server only when
 * one publishes RFC 8414 metadata, and a foreign `Host` or `Origin` is refused (DNS
 * rebinding).
 */
import assert from "node:assert/strict";
import { createAgentApp } from "../agent/app.ts";
import { createTokenVerifier } from "../auth.ts";
import { createHistoryApp } from "../history/app.ts";
import { hostPolicyFromEnv } from "../http/host_policy.ts";
import { createToolRegistry } from "../tools/registry.ts";
import { createMcpApp } from "./app.ts";
import { authorizationServerOf, metadataUrlOf } from "./authorization_server.ts";
import { connectFunctionDatabase } from "../../../tests/support/database.ts";

const METADATA_PATH = "/mcp/.well-known/oauth-protected-resource";
/** What `supabase functions serve` gives a function: an address only the gateway can reach. */
const SERVE_ENV = { SUPABASE_URL: "http://kong:8000" };

function envOf(values: Record<string, string>) {
  return { get: (name: string) => values[name] };
}

async function withMcp(
  env: Record<string, string>,
  test: (fetch: (request: Request) => Response | Promise<Response>) => Promise<void>,
) {
  const sql = connectFunctionDatabase(1);
  try {
    const app = createMcpApp({
      sql,
      verifier: createTokenVerifier({ jwks: { keys: [] } }),
      functionUrl: env.MCP_FUNCTION_URL,
      authIssuerUrl: env.AUTH_ISSUER_URL,
      hostPolicy: hostPolicyFromEnv(envOf(env)),
      tools: createToolRegistry({ workflow: {} }),
    });
    await test(app.fetch);
  } finally {
    await sql.end();
  }
}

async function errorCodeOf(response: Response): Promise<string> {
  return (await response.json()).error.code;
}

Deno.test("under functions serve the metadata names the URL the client used, not kong", async () => {
  await withMcp(SERVE_ENV, async (fetch) => {
    const response = await fetch(
      new Request(`http://kong:8000${METADATA_PATH}`, {
        headers: { "X-Forwarded-Host": "127.0.0.1:54321", "X-Forwarded-Proto": "http" },
      }),
    );
    assert.equal(response.status, 200);
    const metadata = await response.json();
    assert.equal(metadata.resource, "http://127.0.0.1:54321/functions/v1/mcp");
    assert.equal("authorization_servers" in metadata, false);
    assert.match(response.headers.get("Vary") ?? "", /X-Forwarded-Host/);

    const challenge = await fetch(
      new Request("http://kong:8000/mcp", {
        method: "POST",
        headers: { "X-Forwarded-Host": "127.0.0.1:54321", "Content-Type": "application/json" },
        body: "{}",
      }),
    );
    assert.equal(challenge.status, 401);
    assert.equal(
      challenge.headers.get("WWW-Authenticate"),
      `Bearer resource_metadata="http://127.0.0.1:54321${
        METADATA_PATH.replace("/mcp", "/functions/v1/mcp")
      }"`,
    );
  });
});

Deno.test("MCP_FUNCTION_URL fixes the resource whatever host the request names", async () => {
  const functionUrl = "https://agent.example.org/functions/v1/mcp";
  await withMcp({ ...SERVE_ENV, MCP_FUNCTION_URL: functionUrl }, async (fetch) => {
    const response = await fetch(
      new Request(`http://agent.example.org${METADATA_PATH}`),
    );
    assert.equal(response.status, 200);
    assert.equal((await response.json()).resource, functionUrl);
  });
});

Deno.test("an issuer that publishes RFC 8414 metadata is named; one that does not is not", async () => {
  let served = true;
  let port = 0;
  const auth: Deno.HttpServer<Deno.NetAddr> = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
  }, (request): Response => {
    const issuer = `http://127.0.0.1:${port}/auth/v1`;
    if (
      served && new URL(request.url).pathname === "/.well-known/oauth-authorization-server/auth/v1"
    ) {
      return Response.json({ issuer, authorization_endpoint: `${issuer}/oauth/authorize` });
    }
    return new Response("not found", { status: 404 });
  });
  port = auth.addr.port;
  try {
    const issuer = `http://127.0.0.1:${auth.addr.port}/auth/v1`;
    assert.equal(
      metadataUrlOf(issuer).href,
      `http://127.0.0.1:${auth.addr.port}/.well-known/oauth-authorization-server/auth/v1`,
    );
    await withMcp({ ...SERVE_ENV, AUTH_ISSUER_URL: issuer }, async (fetch) => {
      const response = await fetch(new Request(`http://localhost${METADATA_PATH}`));
      assert.deepEqual((await response.json()).authorization_servers, [issuer]);
    });
    served = false;
    const missing = `http://127.0.0.1:${auth.addr.port}/other/v1`;
    assert.equal(await authorizationServerOf(missing), undefined);
  } finally {
    await auth.shutdown();
  }
});

Deno.test("a foreign Host is refused by every function; a configured one is served", async () => {
  const sql = connectFunctionDatabase(1);
  const policy = hostPolicyFromEnv(envOf({
    SUPABASE_URL: "https://project-ref.supabase.co",
    ALLOWED_HOSTS: "agent.example.org",
  }));
  const verifier = createTokenVerifier({ jwks: { keys: [] } });
  const tools = createToolRegistry({ workflow: {} });
  const agent = createAgentApp({
    sql,
    verifier,
    tools,
    llm: { baseUrl: "http://127.0.0.1:9", model: "unused", fallbackModels: [] },
    hostPolicy: policy,
  });
  const apps = {
    history: createHistoryApp({ sql, verifier, hostPolicy: policy }).fetch,
    mcp: createMcpApp({ sql, verifier, tools, hostPolicy: policy }).fetch,
    agent: agent.fetch,
  };
  try {
    for (const [name, fetch] of Object.entries(apps)) {
      const path = name === "history" ? "/history/sessions" : `/${name}`;
      for (const host of ["attacker.example", "project-ref.supabase.co.attacker.example"]) {
        const refused = await fetch(new Request(`http://${host}${path}`));
        assert.equal(refused.status, 403, `${name} answered Host ${host}`);
        assert.equal(await errorCodeOf(refused), "forbidden_host");
      }
      // A proxy's X-Forwarded-Host is the host the client used: checked the same way.
      const rebound = await fetch(
        new Request(`http://localhost${path}`, {
          headers: { "X-Forwarded-Host": "attacker.example" },
        }),
      );
      assert.equal(rebound.status, 403, `${name} answered a forwarded foreign host`);
      for (const host of ["project-ref.supabase.co", "agent.example.org", "127.0.0.1:54321"]) {
        const served = await fetch(new Request(`http://${host}${path}`));
        // Past the host check: sign-in (or, for MCP's GET, the stateless server's 405).
        assert.equal(served.status, name === "mcp" ? 405 : 401, `${name} with Host ${host}`);
        await served.body?.cancel();
      }
    }
  } finally {
    await agent.close();
    await sql.end();
  }
});

Deno.test("MCP refuses a foreign Origin and takes its own and the configured ones", async () => {
  const env = { ...SERVE_ENV, ALLOWED_ORIGINS: "http://localhost:5173" };
  await withMcp(env, async (fetch) => {
    const post = (origin: string) =>
      fetch(
        new Request("http://kong:8000/mcp", {
          method: "POST",
          headers: {
            Origin: origin,
            "X-Forwarded-Host": "127.0.0.1:54321",
            "Content-Type": "application/json",
          },
          body: "{}",
        }),
      );
    const foreign = await post("http://attacker.example");
    assert.equal(foreign.status, 403);
    assert.equal(await errorCodeOf(foreign), "forbidden_origin");
    // Past the origin check, the request meets sign-in.
    for (const origin of ["http://127.0.0.1:54321", "http://localhost:5173"]) {
      const allowed = await post(origin);
      assert.equal(allowed.status, 401, `Origin ${origin}`);
      await allowed.body?.cancel();
    }
  });
});
