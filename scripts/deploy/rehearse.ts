/**
 * `deno task deploy:rehearse`: the deploy, rehearsed without a Supabase account.
 *
 * 1. The real CLI (`supabase functions deploy <every function> --use-api`, the version
 *    scripts/standin/supabase_cli.ts pins) uploads to a local double of the Management API
 *    (./management_api_double.ts), reached through a profile file whose `api_url` is the
 *    double's.
 * 2. Each upload is checked against the function: its metadata (entrypoint, its own deno.json as
 *    import map, `verify_jwt = false` as config.toml says) and its files, which must be exactly
 *    the local modules of the function's graph (./function_graph.ts) plus that deno.json.
 * 3. Each function's tree is rebuilt from its upload alone in a temporary folder, then
 *    type-checked and booted on Deno 2.1.4, the Deno the hosted Edge Runtime embeds, without
 *    write, subprocess or FFI permission and with only the environment Supabase injects. An
 *    unauthenticated request must get our 401. Deno 2.1.4 always listens on port 8000, so the
 *    functions boot one after another.
 *
 * Deno 2.1.4 downloads its npm packages into `.cache/deno-2.1.4` (git-ignored), kept between
 * runs. Ends with `deploy rehearsal: passed` or the list of what failed, and exits 1 on failure.
 */
import { join } from "node:path";
import { parse } from "smol-toml";
import { PROJECT_ROOT, runSupabaseCli, SUPABASE_CLI_VERSION } from "../standin/supabase_cli.ts";
import { type FunctionGraph, functionGraph, functionNames } from "./function_graph.ts";
import { type RecordedUpload, startManagementApiDouble } from "./management_api_double.ts";
import { formatBytes } from "./size_budget.ts";

export const HOSTED_DENO_VERSION = "2.1.4";
/** The port Deno 2.1.4's `Deno.serve` takes whatever DENO_SERVE_ADDRESS says. */
const HOSTED_DENO_PORT = 8000;
const DENO_DIR = join(PROJECT_ROOT, ".cache", `deno-${HOSTED_DENO_VERSION}`);
/** Shaped as the CLI requires: `sbp_` and 40 hex digits; a project ref of 20 lowercase letters. */
const ACCESS_TOKEN = `sbp_${"0123456789abcdef".repeat(3).slice(0, 40)}`;
const PROJECT_REF = "rehearsedeployxyzabc";

/** What each function's first unauthenticated request is: the route a client calls first. */
const PROBES: Record<string, { method: string; path: string; body?: string }> = {
  agent: { method: "GET", path: "/agent" },
  connections: { method: "GET", path: "/connections" },
  // GET /history has no route; the session list is the first call the web app makes.
  history: { method: "GET", path: "/history/sessions" },
  // A stateless MCP server answers GET with 405 by design; clients begin with POST initialize.
  mcp: {
    method: "POST",
    path: "/mcp",
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: "deploy-rehearsal", version: "1" },
      },
    }),
  },
};

/**
 * What is wrong with one function's upload: its metadata, and its files against the graph's
 * local modules plus its import map (duplicates, missing files, extra files).
 */
export function checkUpload(
  upload: RecordedUpload | undefined,
  graph: FunctionGraph,
  verifyJwt: boolean,
): string[] {
  const name = graph.name;
  if (!upload) return [`${name}: the CLI uploaded nothing`];
  const problems: string[] = [];
  const expect = (field: string, actual: unknown, expected: unknown) => {
    if (actual !== expected) {
      problems.push(
        `${name}: metadata ${field} is ${JSON.stringify(actual)}, not ${JSON.stringify(expected)}`,
      );
    }
  };
  expect("name", upload.metadata.name, name);
  expect("entrypoint_path", upload.metadata.entrypoint_path, graph.entrypoint);
  expect("import_map_path", upload.metadata.import_map_path, graph.importMap);
  expect("verify_jwt", upload.metadata.verify_jwt, verifyJwt);
  const uploaded = upload.files.map((file) => file.path);
  const expected = new Set([...graph.localFiles, graph.importMap]);
  const seen = new Set<string>();
  for (const path of uploaded) {
    if (seen.has(path)) problems.push(`${name}: ${path} uploaded twice`);
    seen.add(path);
    if (!expected.has(path)) problems.push(`${name}: ${path} uploaded but not in its graph`);
  }
  for (const path of expected) {
    if (!seen.has(path)) problems.push(`${name}: ${path} is in its graph but was not uploaded`);
  }
  return problems;
}

/** Writes the uploaded files, and nothing else, under `dir`. */
export async function rebuildTree(upload: RecordedUpload, dir: string): Promise<void> {
  for (const file of upload.files) {
    if (file.path.startsWith("/") || file.path.split("/").includes("..")) {
      throw new Error(`${upload.slug}: uploaded path ${file.path} leaves the project`);
    }
    const target = join(dir, file.path);
    await Deno.mkdir(join(target, ".."), { recursive: true });
    await Deno.writeFile(target, file.bytes);
  }
}

interface Run {
  code: number;
  output: string;
}

/** Runs a command to its end, or kills it after `timeoutMs`; output is stdout and stderr. */
async function run(
  command: string,
  args: string[],
  options: { cwd: string; env: Record<string, string>; timeoutMs: number },
): Promise<Run> {
  const child = new Deno.Command(command, {
    args,
    cwd: options.cwd,
    env: options.env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // It ended as the time ran out.
    }
  }, options.timeoutMs);
  const output = await child.output();
  clearTimeout(timer);
  const decoder = new TextDecoder();
  return {
    code: output.code,
    output: decoder.decode(output.stdout) + decoder.decode(output.stderr),
  };
}

/**
 * The environment Deno 2.1.4 runs with: nothing of ours but PATH, HOME, proxies and CA files.
 * DENO_TLS_CA_STORE adds the system's CAs (SSL_CERT_FILE), which a TLS-inspecting proxy needs;
 * Deno 2.1.4 trusts only Mozilla's by default.
 */
function hostedDenoEnv(extra: Record<string, string> = {}): Record<string, string> {
  const passed = [
    "PATH",
    "HOME",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
  ];
  const env: Record<string, string> = {};
  for (const name of passed) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return {
    ...env,
    DENO_DIR,
    DENO_TLS_CA_STORE: "mozilla,system",
    DENO_NO_UPDATE_CHECK: "1",
    NO_COLOR: "1",
    ...extra,
  };
}

/**
 * The Deno 2.1.4 binary npm's `deno` package holds, so it can be run and killed directly. Run
 * in `cwd` outside the project, whose deno.lock (version 5) Deno 2.1.4 cannot read.
 */
async function hostedDeno(cwd: string): Promise<string> {
  const result = await run(
    "npx",
    [
      "--yes",
      `deno@${HOSTED_DENO_VERSION}`,
      "eval",
      "console.log(Deno.execPath(), Deno.version.deno)",
    ],
    { cwd, env: hostedDenoEnv(), timeoutMs: 120_000 },
  );
  const [path, version] = result.output.trim().split("\n").at(-1)?.split(" ") ?? [];
  if (result.code !== 0 || version !== HOSTED_DENO_VERSION) {
    throw new Error(`npx deno@${HOSTED_DENO_VERSION} did not run:\n${result.output}`);
  }
  return path;
}

/** What Supabase injects into every function, with addresses nothing needs to answer. */
async function injectedEnv(): Promise<Record<string, string>> {
  const { publicKey } = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    ["sign", "verify"],
  );
  const jwk = await crypto.subtle.exportKey("jwk", publicKey);
  return {
    SUPABASE_URL: `https://${PROJECT_REF}.supabase.co`,
    SUPABASE_DB_URL: "postgresql://postgres:postgres@127.0.0.1:9/postgres",
    SUPABASE_JWKS: JSON.stringify({
      keys: [{ ...jwk, kid: "rehearsal", alg: "ES256", use: "sig" }],
    }),
    SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: "sb_publishable_rehearsal" }),
    SUPABASE_ANON_KEY: "sb_publishable_rehearsal",
    SB_REGION: "us-east-1",
  };
}

async function portInUse(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

/** Boots one rebuilt function on Deno 2.1.4 and sends it its probe; problems, if any. */
async function bootAndProbe(
  deno: string,
  tree: string,
  graph: FunctionGraph,
  env: Record<string, string>,
): Promise<string[]> {
  const name = graph.name;
  if (!await waitFor(async () => !await portInUse(HOSTED_DENO_PORT), 15_000)) {
    return [`${name}: port ${HOSTED_DENO_PORT} stayed busy (another process holds it)`];
  }
  const child = new Deno.Command(deno, {
    args: [
      "run",
      "--no-lock",
      "--deny-write",
      "--deny-run",
      "--deny-ffi",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--config",
      graph.importMap,
      graph.entrypoint,
    ],
    cwd: tree,
    env: hostedDenoEnv(env),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = Promise.all(
    [child.stdout, child.stderr].map((stream) => new Response(stream).text()),
  )
    .then((texts) => texts.join(""));
  let exited = false;
  const status = child.status.then((status) => {
    exited = true;
    return status;
  });
  const stop = (signal: Deno.Signal) => {
    try {
      child.kill(signal);
    } catch {
      // It exited between the check and the kill: nothing left to stop.
    }
  };
  const problems: string[] = [];
  try {
    const listening = await waitFor(
      async () => exited || await portInUse(HOSTED_DENO_PORT),
      60_000,
    );
    if (exited || !listening) {
      stop("SIGKILL");
      problems.push(`${name}: did not boot on Deno ${HOSTED_DENO_VERSION}:\n${await output}`);
      return problems;
    }
    const probe = PROBES[name] ?? { method: "GET", path: `/${name}` };
    const response = await fetch(`http://127.0.0.1:${HOSTED_DENO_PORT}${probe.path}`, {
      method: probe.method,
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: probe.body,
    });
    const body = await response.text();
    const challenge = response.headers.get("www-authenticate") ?? "";
    if (response.status !== 401 || !challenge.startsWith("Bearer")) {
      problems.push(
        `${name}: ${probe.method} ${probe.path} without a token answered ${response.status} ` +
          `(WWW-Authenticate "${challenge}"), not 401 Bearer: ${body.slice(0, 300)}`,
      );
    } else {
      console.log(`  ${name}: ${probe.method} ${probe.path} without a token -> 401 ${challenge}`);
    }
  } catch (error) {
    problems.push(`${name}: probing failed: ${error}\n${await output}`);
  } finally {
    stop("SIGTERM");
    await status;
  }
  const logged = await output;
  // Permission prompts cannot show (stdin is null): a denied write or subprocess is an error.
  if (/NotCapable|PermissionDenied|Requires (write|run|ffi) access/.test(logged)) {
    problems.push(`${name}: asked for a denied permission:\n${logged}`);
  }
  return problems;
}

async function rehearse(): Promise<string[]> {
  const started = performance.now();
  const seconds = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;
  const names = await functionNames();
  const graphs = await Promise.all(names.map((name) => functionGraph(name)));
  const config = parse(await Deno.readTextFile(join(PROJECT_ROOT, "supabase/config.toml"))) as {
    functions?: Record<string, { verify_jwt?: boolean }>;
  };
  const problems: string[] = [];
  for (const name of names) {
    // The functions verify tokens themselves (WebSocket, MCP's 401); the gateway must not.
    if (config.functions?.[name]?.verify_jwt !== false) {
      problems.push(`${name}: supabase/config.toml does not set verify_jwt = false`);
    }
  }

  const workspace = await Deno.makeTempDir({ prefix: "deploy-rehearsal-" });
  const api = startManagementApiDouble({ projectRef: PROJECT_REF, accessToken: ACCESS_TOKEN });
  try {
    // A profile file is how the CLI is pointed at another Management API
    // (`internal/utils/profile.go`); the 3.x wrapper reads it as YAML.
    const profile = join(workspace, "profile.yaml");
    await Deno.writeTextFile(
      profile,
      `name: deploy-rehearsal\napi_url: ${api.url}\ndashboard_url: ${api.url}/dashboard\n` +
        `project_host: supabase.red\n`,
    );
    console.log(`supabase@${SUPABASE_CLI_VERSION} functions deploy ${names.join(" ")} --use-api`);
    const cli = await runSupabaseCli(
      [
        "functions",
        "deploy",
        ...names,
        "--use-api",
        "--yes",
        `--remote=${PROJECT_REF}`,
        "--profile",
        profile,
      ],
      PROJECT_ROOT,
      { SUPABASE_ACCESS_TOKEN: ACCESS_TOKEN },
    );
    if (cli.code !== 0) {
      return [...problems, `the CLI failed (exit ${cli.code}):\n${cli.stderr}\n${cli.stdout}`];
    }
    console.log(`  uploaded in ${seconds()}; requests: ${api.requests.join(", ")}`);
    problems.push(...api.unexpected.map((request) => `the double refused ${request}`));
    for (const graph of graphs) {
      const uploads = api.uploads.filter((upload) => upload.slug === graph.name);
      if (uploads.length > 1) problems.push(`${graph.name}: uploaded ${uploads.length} times`);
      problems.push(...checkUpload(uploads[0], graph, false));
      if (names.length > 1 && !api.activated.includes(graph.name)) {
        problems.push(`${graph.name}: never activated (PUT /functions)`);
      }
      if (uploads[0]) {
        console.log(
          `  ${graph.name}: ${uploads[0].files.length} files, ` +
            `${formatBytes(uploads[0].bodyBytes)} multipart, ` +
            `metadata ${JSON.stringify(uploads[0].metadata)}`,
        );
      }
    }
    // Whatever was uploaded goes on to Deno 2.1.4, so one run reports every problem.
    const uploaded = graphs.filter((graph) => api.uploads.some((u) => u.slug === graph.name));
    const deno = await hostedDeno(workspace);
    const trees = new Map<string, string>();
    for (const graph of uploaded) {
      const tree = join(workspace, graph.name);
      await rebuildTree(api.uploads.find((upload) => upload.slug === graph.name)!, tree);
      trees.set(graph.name, tree);
    }
    // The type checks are independent: run them together.
    const checks = await Promise.all(
      uploaded.map((graph) =>
        run(deno, ["check", "--no-lock", "--config", graph.importMap, graph.entrypoint], {
          cwd: trees.get(graph.name)!,
          env: hostedDenoEnv(),
          timeoutMs: 300_000,
        })
      ),
    );
    uploaded.forEach((graph, i) => {
      if (checks[i].code !== 0) {
        problems.push(
          `${graph.name}: deno ${HOSTED_DENO_VERSION} check failed:\n` +
            // The first lines name the error; a compiler crash adds a long stack after them.
            checks[i].output.split("\n").slice(0, 12).join("\n"),
        );
      }
    });
    console.log(`  type-checked on Deno ${HOSTED_DENO_VERSION} by ${seconds()}`);
    const env = await injectedEnv();
    for (const graph of uploaded) {
      problems.push(...await bootAndProbe(deno, trees.get(graph.name)!, graph, env));
    }
    console.log(`  booted on Deno ${HOSTED_DENO_VERSION} by ${seconds()}`);
    return problems;
  } finally {
    await api.close();
    await Deno.remove(workspace, { recursive: true });
  }
}

if (import.meta.main) {
  const started = performance.now();
  const problems = await rehearse().catch((error: Error) => [error.message]);
  const took = `${((performance.now() - started) / 1000).toFixed(1)} s`;
  if (problems.length > 0) {
    console.error(`deploy rehearsal: FAILED in ${took}\n- ${problems.join("\n- ")}`);
    Deno.exit(1);
  }
  console.log(`deploy rehearsal: passed in ${took}`);
}
