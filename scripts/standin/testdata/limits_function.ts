/**
 * A stand-in Edge Function for the runtime limits' tests (worker_pool_test.ts): says which
 * process answered, burns CPU, grows its memory or crashes on request, and holds WebSockets
 * that report `beforeunload` to their client before it closes them, as a function with a
 * graceful shutdown would.
 */
import process from "node:process";
import { getHeapStatistics } from "node:v8";

const sockets = new Set<WebSocket>();
addEventListener("beforeunload", () => {
  for (const socket of sockets) {
    socket.send(`beforeunload:${Deno.pid}`);
    socket.close(1001, "going away");
  }
});

/** Spends `ms` of this process's CPU time (not wall time: the machine may be busy). */
function burn(ms: number) {
  const start = process.cpuUsage();
  for (;;) {
    const used = process.cpuUsage(start);
    if ((used.user + used.system) / 1000 >= ms) return;
    for (let i = 0; i < 10_000; i++) Math.sqrt(i);
  }
}

const held: Uint8Array[] = [];

Deno.serve((request) => {
  const url = new URL(request.url);
  const route = url.pathname.split("/")[2];
  if (route === "ws") {
    const { socket, response } = Deno.upgradeWebSocket(request);
    sockets.add(socket);
    socket.onclose = () => sockets.delete(socket);
    socket.onopen = () => socket.send(`pid:${Deno.pid}`);
    socket.onmessage = (event) => {
      const [command, argument] = String(event.data).split(":");
      if (command === "burn") burn(Number(argument));
      socket.send(`done:${command}`);
    };
    return response;
  }
  if (route === "burn") burn(Number(url.searchParams.get("ms")));
  if (route === "grow") {
    // Touched, so the pages are resident.
    held.push(new Uint8Array(Number(url.searchParams.get("mb")) * 1024 * 1024).fill(1));
  }
  if (route === "heap") return Response.json({ limit: getHeapStatistics().heap_size_limit });
  if (route === "crash") Deno.exit(3);
  return Response.json({ pid: Deno.pid });
});
