/**
 * The rehearsal's own parts: the Management API double records an upload shaped as the CLI
 * sends it and refuses what it does not know; `checkUpload` names every way an upload can
 * differ from the function's graph.
 */
import assert from "node:assert/strict";
import type { FunctionGraph } from "./function_graph.ts";
import { type RecordedUpload, startManagementApiDouble } from "./management_api_double.ts";
import { checkUpload } from "./rehearse.ts";

const TOKEN = `sbp_${"a".repeat(40)}`;
const REF = "abcdefghijklmnopqrst";

Deno.test("management API double: records the CLI's multipart upload and answers 201", async () => {
  const api = startManagementApiDouble({ projectRef: REF, accessToken: TOKEN });
  try {
    const form = new FormData();
    form.append("metadata", JSON.stringify({ name: "fn", verify_jwt: false }));
    form.append("file", new Blob(["{}"]), "supabase/functions/fn/deno.json");
    form.append(
      "file",
      new Blob(["Deno.serve(() => new Response())"]),
      "supabase/functions/fn/index.ts",
    );
    const response = await fetch(
      `${api.url}/v1/projects/${REF}/functions/deploy?slug=fn&bundleOnly=true`,
      {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}` },
        body: form,
      },
    );
    assert.equal(response.status, 201);
    assert.equal((await response.json()).slug, "fn");
    assert.equal(api.uploads.length, 1);
    const [upload] = api.uploads;
    assert.deepEqual(upload.metadata, { name: "fn", verify_jwt: false });
    assert.equal(upload.bundleOnly, true);
    assert.deepEqual(upload.files.map((file) => file.path), [
      "supabase/functions/fn/deno.json",
      "supabase/functions/fn/index.ts",
    ]);
    assert.equal(new TextDecoder().decode(upload.files[0].bytes), "{}");

    const activate = await fetch(`${api.url}/v1/projects/${REF}/functions`, {
      method: "PUT",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify([{ slug: "fn" }]),
    });
    assert.equal(activate.status, 200);
    assert.deepEqual(api.activated, ["fn"]);
    assert.deepEqual(api.unexpected, []);
  } finally {
    await api.close();
  }
});

Deno.test("management API double: refuses a wrong token, another project and unknown routes", async () => {
  const api = startManagementApiDouble({ projectRef: REF, accessToken: TOKEN });
  try {
    const statuses = [];
    for (
      const [path, token] of [
        [`/v1/projects/${REF}`, "sbp_wrong"],
        [`/v1/projects/bcdefghijklmnopqrstu`, TOKEN],
        [`/v1/projects/${REF}/secrets`, TOKEN],
      ]
    ) {
      const response = await fetch(`${api.url}${path}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      await response.body?.cancel();
      statuses.push(response.status);
    }
    assert.deepEqual(statuses, [401, 404, 404]);
    assert.equal(api.unexpected.length, 3);
  } finally {
    await api.close();
  }
});

Deno.test("checkUpload: names wrong metadata, missing, extra and duplicated files", () => {
  const graph: FunctionGraph = {
    name: "fn",
    importMap: "supabase/functions/fn/deno.json",
    entrypoint: "supabase/functions/fn/index.ts",
    localFiles: ["supabase/functions/_shared/a.ts", "supabase/functions/fn/index.ts"],
    otherModules: [],
    npmPackages: [],
    inlineSpecifiers: [],
    unresolved: [],
  };
  const file = (path: string) => ({ path, bytes: new Uint8Array() });
  const upload: RecordedUpload = {
    slug: "fn",
    bundleOnly: true,
    metadata: {
      name: "fn",
      entrypoint_path: graph.entrypoint,
      import_map_path: graph.importMap,
      verify_jwt: false,
    },
    files: [graph.importMap, ...graph.localFiles].map(file),
    bodyBytes: 0,
  };
  assert.deepEqual(checkUpload(upload, graph, false), []);
  assert.deepEqual(
    checkUpload(
      {
        ...upload,
        metadata: { ...upload.metadata, verify_jwt: true, import_map_path: "deno.json" },
        files: [graph.importMap, graph.entrypoint, graph.entrypoint, "scripts/x.ts"].map(file),
      },
      graph,
      false,
    ),
    [
      `fn: metadata import_map_path is "deno.json", not "supabase/functions/fn/deno.json"`,
      "fn: metadata verify_jwt is true, not false",
      "fn: supabase/functions/fn/index.ts uploaded twice",
      "fn: scripts/x.ts uploaded but not in its graph",
      "fn: supabase/functions/_shared/a.ts is in its graph but was not uploaded",
    ],
  );
  assert.deepEqual(checkUpload(undefined, graph, false), ["fn: the CLI uploaded nothing"]);
});
