/**
 * The embedded Postgres' own failure modes: each must end in a clear error, never a hang or
 * a half-started cluster.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import postgres from "postgres";
import {
  applyMigrations,
  ensurePortFree,
  freePort,
  LocalDatabaseError,
  startPostgres,
} from "./postgres.ts";

async function rejectsWith(promise: Promise<unknown>, code: string, pattern: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof LocalDatabaseError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("a taken port is named, and another is offered", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  try {
    assert.throws(() => ensurePortFree(port), (error: unknown) => {
      assert.ok(error instanceof LocalDatabaseError);
      assert.equal(error.code, "port_in_use");
      assert.match(error.message, new RegExp(`Port ${port} is already taken`));
      const offered = Number(error.message.match(/--port (\d+)/)?.[1]);
      assert.ok(offered > 0 && offered !== port);
      return true;
    });
    await rejectsWith(startPostgres({ dataDir: "/nonexistent", port }), "port_in_use", /taken/);
  } finally {
    listener.close();
  }
});

Deno.test("a data directory of an older layout (postgres a superuser) must be reset", async () => {
  const dataDir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dataDir, "PG_VERSION"), "17\n");
    await Deno.writeTextFile(
      join(dataDir, "supabase-agent.json"),
      JSON.stringify({ project: "supabase-agent", created_at: "2026-11-22T00:00:00Z" }),
    );
    await rejectsWith(
      startPostgres({ dataDir, port: freePort() }),
      "outdated_data_dir",
      /older version of this project[\s\S]*--reset/,
    );
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("a foreign data directory is refused before anything starts", async () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    ["not Postgres", { "notes.txt": "hello" }, /not a PostgreSQL data directory/],
    ["another version", { PG_VERSION: "16\n" }, /created by PostgreSQL 16/],
    ["another tool's cluster", { PG_VERSION: "17\n" }, /did not create/],
  ];
  for (const [label, files, pattern] of cases) {
    const dataDir = await Deno.makeTempDir();
    try {
      for (const [name, text] of Object.entries(files)) {
        await Deno.writeTextFile(join(dataDir, name), text);
      }
      await rejectsWith(startPostgres({ dataDir, port: freePort() }), "foreign_data_dir", pattern)
        .catch((error) => {
          throw new Error(`${label}: ${error}`);
        });
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  }
});

Deno.test("a failing migration is reported with its file and line", async () => {
  const serverUrl = Deno.env.get("SUPABASE_DB_URL");
  assert.ok(serverUrl, "run with `deno task test`");
  const workdir = await Deno.makeTempDir();
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  const database = `broken_${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.mkdir(join(workdir, "supabase", "migrations"), { recursive: true });
    await Deno.writeTextFile(
      join(workdir, "supabase", "migrations", "20260101000000_broken.sql"),
      "create table fine (id int);\n\ncreate table broken (\n  id int,\n  x no_such_type\n);\n",
    );
    await admin.unsafe(`create database ${database}`);
    const url = new URL(serverUrl);
    url.pathname = `/${database}`;
    await rejectsWith(
      applyMigrations(url.href, workdir),
      "migration_failed",
      /^supabase\/migrations\/20260101000000_broken\.sql:5: [\s\S]*no_such_type/,
    );
  } finally {
    await admin.unsafe(`drop database if exists ${database} with (force)`);
    await admin.end();
    await Deno.remove(workdir, { recursive: true });
  }
});

Deno.test("data persists across restarts; a live or stale postmaster.pid is handled", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "supabase-agent-pg-test-" });
  try {
    const lines: string[] = [];
    const first = await startPostgres({ dataDir, port: freePort(), log: (l) => lines.push(l) });
    assert.equal(first.created, true);
    // initdb's transcript stays out of the log unless asked for (verbose) or initdb fails.
    assert.ok(lines.some((line) => line.startsWith("initialised a new Postgres cluster")));
    assert.equal(
      lines.filter((line) => /database system will be owned|Success\. You can now/.test(line))
        .length,
      0,
      lines.join("\n"),
    );
    const sql = postgres(first.url, { max: 1, onnotice: () => {} });
    // The developer's data is flushed to disk unless a caller opts out (throwaway clusters).
    const [{ fsync }] = await sql`show fsync`;
    assert.equal(fsync, "on");
    await sql`create table kept (note text)`;
    await sql`insert into kept values ('still here')`;
    await sql.end();
    try {
      await rejectsWith(
        startPostgres({ dataDir, port: freePort() }),
        "data_dir_in_use",
        /in use by a running postgres \(pid \d+\)/,
      );
    } finally {
      await first.stop();
    }

    const exited = new Deno.Command("true").spawn();
    await exited.status;
    await Deno.writeTextFile(join(dataDir, "postmaster.pid"), `${exited.pid}\n${dataDir}\n`);
    const second = await startPostgres({ dataDir, port: freePort() });
    try {
      assert.equal(second.created, false);
      const again = postgres(second.url, { max: 1, onnotice: () => {} });
      const rows = await again`select note from kept`;
      await again.end();
      assert.deepEqual(rows.map((r) => r.note), ["still here"]);
    } finally {
      await second.stop();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
