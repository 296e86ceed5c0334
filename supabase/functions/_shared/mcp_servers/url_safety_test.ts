import assert from "node:assert/strict";
import { checkServerUrl, isPublicAddress, type UrlPolicy } from "./url_safety.ts";

const dns = (answers: Record<string, string[]>): UrlPolicy["resolveDns"] => (host, type) =>
  Promise.resolve((answers[`${host}/${type}`] ?? []).slice());

Deno.test("url safety: private, loopback, link-local and reserved addresses are not public", () => {
  for (
    const address of [
      "127.0.0.1",
      "10.1.2.3",
      "172.16.0.1",
      "192.168.1.1",
      "169.254.169.254",
      "100.64.0.1",
      "0.0.0.0",
      "224.0.0.1",
      "::1",
      "::",
      "fe80::1",
      "fd00::1",
      "::ffff:127.0.0.1",
      "::ffff:7f00:1",
      "64:ff9b::a9fe:a9fe",
    ]
  ) assert.equal(isPublicAddress(address), false, address);
  for (const address of ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"]) {
    assert.equal(isPublicAddress(address), true, address);
  }
});

Deno.test("url safety: https to public addresses only; http only to 127/8 with MCP_ALLOW_LOOPBACK", async () => {
  const hosted: UrlPolicy = {
    allowLoopback: false,
    resolveDns: dns({
      "public.example/A": ["93.184.216.34"],
      "rebind.example/A": ["93.184.216.34"],
      "rebind.example/AAAA": ["fd00::1"],
      "inside.example/A": ["127.0.0.1"],
    }),
  };
  const local: UrlPolicy = { ...hosted, allowLoopback: true };
  const verdict = async (url: string, policy: UrlPolicy) => {
    const checked = await checkServerUrl(url, policy);
    return checked.ok ? "ok" : checked.code;
  };
  assert.equal(await verdict("https://public.example/mcp", hosted), "ok");
  assert.equal(await verdict("http://public.example/mcp", hosted), "url_not_allowed");
  assert.equal(await verdict("https://rebind.example/mcp", hosted), "url_not_allowed");
  assert.equal(await verdict("https://inside.example/mcp", hosted), "url_not_allowed");
  assert.equal(await verdict("http://127.0.0.1:8000/mcp", hosted), "url_not_allowed");
  assert.equal(await verdict("http://169.254.169.254/", local), "url_not_allowed");
  assert.equal(await verdict("http://127.0.0.1:8000/mcp", local), "ok");
  assert.equal(await verdict("http://inside.example/mcp", local), "ok");
  assert.equal(await verdict("http://public.example/mcp", local), "url_not_allowed");
  assert.equal(await verdict("https://user:pw@public.example/", hosted), "url_not_allowed");
  assert.equal(await verdict("ftp://public.example/", hosted), "url_not_allowed");
  assert.equal(await verdict("https://nowhere.example/", hosted), "server_unreachable");
  assert.equal(await verdict("not a url", hosted), "url_not_allowed");
});
