import assert from "node:assert/strict";
import { decryptCredential, encryptCredential, importCredentialKey } from "./credentials.ts";

const keyText = () => btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));

Deno.test("credentials: sealed for one server, opened only with the same key and server", async () => {
  const key = await importCredentialKey(keyText());
  const server = crypto.randomUUID();
  const credential = { kind: "header" as const, name: "Authorization", value: "Bearer s3cret" };
  const sealed = await encryptCredential(key, server, credential);
  assert.ok(!new TextDecoder().decode(sealed).includes("s3cret"));
  assert.deepEqual(await decryptCredential(key, server, sealed), credential);
  await assert.rejects(decryptCredential(key, crypto.randomUUID(), sealed));
  await assert.rejects(decryptCredential(await importCredentialKey(keyText()), server, sealed));
  await assert.rejects(importCredentialKey(btoa("short")), /32 bytes/);
});
