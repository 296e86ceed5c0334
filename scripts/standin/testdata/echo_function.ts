/** A stand-in Edge Function for the gateway's tests: echoes what the gateway hands it. */
Deno.serve((request) => {
  const url = new URL(request.url);
  const [, name, route] = url.pathname.split("/");
  if (route === "sse") {
    const body = new ReadableStream<string>({
      async start(controller) {
        for (const n of [1, 2, 3]) {
          controller.enqueue(`data: ${n}\n\n`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        controller.close();
      },
    }).pipeThrough(new TextEncoderStream());
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  }
  if (route === "ws") {
    const authorization = request.headers.get("authorization");
    if (authorization !== "Bearer let-me-in") {
      return Response.json({ error: "unauthorized" }, { status: 401 });
    }
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("upgrade required", { status: 426 });
    }
    const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",")
      .map((p) => p.trim()).find((p) => p.startsWith("jwt-"));
    const { socket, response } = Deno.upgradeWebSocket(request, { protocol: offered });
    socket.onopen = () => {
      socket.send(JSON.stringify({ hello: name, protocol: offered ?? null }));
      // As the agent refusing a socket it cannot set up: a frame, then the close, at once.
      if (url.searchParams.has("refuse")) socket.close(4004, "refused at once");
    };
    socket.onmessage = (event) => {
      if (event.data === "close-please") socket.close(4001, "replaced by a newer connection");
      else socket.send(`echo:${event.data}`);
    };
    return response;
  }
  return Response.json({
    name,
    path: url.pathname,
    search: url.search,
    method: request.method,
    authorization: request.headers.get("authorization"),
    apikey: request.headers.get("apikey"),
    body: request.body ? undefined : null,
  });
});
