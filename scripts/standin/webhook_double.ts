/**
 * A stand-in for an n8n instance's production webhooks: `POST /webhook/<workflow id>` with a
 * JSON body, answered by a handler the caller supplies. Tests start it on port 0 and script
 * each workflow (slow, failing, not JSON…); run directly it echoes, for local development:
 *
 *   deno run -A scripts/standin/webhook_double.ts [--port 5678]
 */

export interface WebhookCall {
  workflowId: string;
  headers: Headers;
  /** The parsed JSON body, or the raw text when it is not JSON. */
  body: unknown;
  /** Aborts when the caller gives up on the request (timeout, cancel). */
  signal: AbortSignal;
}

export type WebhookHandler = (call: WebhookCall) => Response | Promise<Response>;

export interface WebhookDouble {
  /** The base URL, as N8N_BASE_URL would be. */
  url: string;
  /** Every webhook call received, in order. */
  calls: WebhookCall[];
  close(): Promise<void>;
}

const WEBHOOK_PATH = /^\/webhook\/([^/]+)$/;

export function startWebhookDouble(handler: WebhookHandler, port = 0): WebhookDouble {
  const calls: WebhookCall[] = [];
  const server = Deno.serve({ port, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const match = new URL(req.url).pathname.match(WEBHOOK_PATH);
    if (req.method !== "POST" || !match) {
      return Response.json({ code: 404, message: "The requested webhook is not registered." }, {
        status: 404,
      });
    }
    const text = await req.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // n8n accepts any body; keep the text so a test can see what was sent.
    }
    const call: WebhookCall = {
      workflowId: decodeURIComponent(match[1]),
      headers: req.headers,
      body,
      signal: req.signal,
    };
    calls.push(call);
    return await handler(call);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    calls,
    close: () => server.shutdown(),
  };
}

/** Answers every workflow with what it was sent. */
export function echoWorkflow(call: WebhookCall): Response {
  return Response.json({ workflow_id: call.workflowId, received: call.body });
}

if (import.meta.main) {
  const portFlag = Deno.args.indexOf("--port");
  const port = portFlag >= 0 ? Number(Deno.args[portFlag + 1]) : 5678;
  const double = startWebhookDouble(echoWorkflow, port);
  console.log(`webhook double (echo) listening at ${double.url}/webhook/<workflow id>`);
}
