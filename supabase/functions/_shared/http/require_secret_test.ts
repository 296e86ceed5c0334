import assert from "node:assert/strict";
import { createFunctionApp } from "./function_app.ts";
import { requireSecret } from "./require_secret.ts";

function appWith(secret: string | undefined) {
  const app = createFunctionApp("fn");
  app.post(
    "/sweep",
    requireSecret({ secret, settingName: "SWEEP_SECRET" }),
    (c) => c.text("swept"),
  );
  return app;
}

async function post(app: ReturnType<typeof appWith>, authorization?: string) {
  const headers: Record<string, string> = authorization ? { Authorization: authorization } : {};
  const response = await app.fetch(
    new Request("http://localhost/fn/sweep", { method: "POST", headers }),
  );
  return { status: response.status, text: await response.text() };
}

Deno.test("requireSecret: only the configured secret opens the route", async () => {
  const app = appWith("s3cret-value");
  assert.deepEqual(await post(app, "Bearer s3cret-value"), { status: 200, text: "swept" });

  for (const wrong of [undefined, "Bearer s3cret", "Bearer s3cret-value-and-more", "Basic x"]) {
    const { status, text } = await post(app, wrong);
    assert.equal(status, 401, `refused: ${wrong}`);
    assert.equal(JSON.parse(text).error.code, "invalid_secret");
  }
});

Deno.test("requireSecret: a route without a configured secret stays shut", async () => {
  for (const secret of [undefined, ""]) {
    const { status, text } = await post(appWith(secret), "Bearer ");
    assert.equal(status, 503);
    const error = JSON.parse(text).error;
    assert.equal(error.code, "not_configured");
    assert.match(error.message, /SWEEP_SECRET/);
  }
});
