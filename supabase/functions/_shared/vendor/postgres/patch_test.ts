/**
 * The vendored postgres.js's patch (README.md), against the test database: a connection whose
 * server session ends under a transaction or a reservation fails what was in flight with
 * CONNECTION_CLOSED, throws nothing from a timer, and leaves the pool able to serve the next
 * query. Unpatched 3.4.9 dies of `Cannot read properties of null (reading 'write')` in the
 * first two, and loses a pool connection for good in the third.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { testDatabaseUrl } from "../../../../tests/support/database.ts";

const connect = (max: number, onclose?: () => void) =>
  postgres(testDatabaseUrl(), { max, onnotice: () => {}, onclose });

/** Ends a server session as an admin or a crashed backend would, from another connection. */
async function terminate(pid: number): Promise<void> {
  const killer = connect(1);
  try {
    const [{ done }] = await killer`select pg_terminate_backend(${pid}) as done`;
    assert.equal(done, true);
  } finally {
    await killer.end();
  }
}

function codeOf(error: unknown): unknown {
  return (error as { code?: unknown }).code;
}

Deno.test("a transaction whose session ends fails with CONNECTION_CLOSED; the pool goes on", async () => {
  const sql = connect(1);
  try {
    let failed: unknown;
    await sql.begin(async (tx) => {
      const [{ pid }] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid`;
      const sleeping = tx`select pg_sleep(30)`.execute();
      await terminate(pid);
      await sleeping;
    }).catch((error) => failed = error);
    // The begin's rollback, issued after the socket closed, is refused rather than written.
    assert.equal(codeOf(failed), "CONNECTION_CLOSED", String(failed));
    const [{ one }] = await sql`select 1 as one`;
    assert.equal(one, 1);
  } finally {
    await sql.end();
  }
});

Deno.test("a reservation whose session ended refuses its queries, and release returns nothing dead to the pool", async () => {
  const max = 2;
  let closed = () => {};
  const sql = connect(max, () => closed());
  try {
    // More rounds than connections: each dead reservation handed back would cost one for good.
    for (let round = 0; round < max + 1; round++) {
      const reserved = await sql.reserve();
      const [{ pid }] = await reserved<{ pid: number }[]>`select pg_backend_pid() as pid`;
      const socketClosed = new Promise<void>((resolve) => closed = resolve);
      await terminate(pid);
      await socketClosed;
      const failed = await reserved`select 1`.then(() => undefined, (error) => error);
      assert.equal(codeOf(failed), "CONNECTION_CLOSED", String(failed));
      reserved.release();
    }
    const answers = await Promise.all(
      Array.from({ length: max }, (_, i) => sql<{ n: number }[]>`select ${i}::int as n`),
    );
    assert.deepEqual(answers.map(([{ n }]) => n), [0, 1]);
  } finally {
    await sql.end();
  }
});

Deno.test("a begin whose connection takes no more pipelined queries still reserves it for its transaction", async () => {
  // `max_pipeline: 0`: no query may be pipelined behind another, so every BEGIN is one that
  // fills its connection's pipeline (as the hundredth queued on a busy connection does, or one
  // meeting a socket under backpressure). Upstream then skips the reservation: the transaction
  // fails with UNSAFE_TRANSACTION (porsager/postgres#1210), the server left inside it.
  // `max_pipeline` is an option the package's types leave out.
  const options = { max: 2, max_pipeline: 0, onnotice: () => {} };
  const sql = postgres(testDatabaseUrl(), options);
  try {
    const results = await Promise.all(
      Array.from({ length: 4 }, (_, i) =>
        sql.begin(async (tx) => {
          const [{ n }] = await tx<{ n: number }[]>`select ${i}::int as n`;
          return n;
        })),
    );
    assert.deepEqual(results, [0, 1, 2, 3]);
    const [{ one }] = await sql<{ one: number }[]>`select 1 as one`;
    assert.equal(one, 1);
  } finally {
    await sql.end();
  }
});
