/**
 * Request bodies as JSON, read with a size limit: "too large" and "not JSON" are the first two
 * errors every JSON endpoint answers, and both must be the same everywhere.
 */
import { nestsDeeperThan, tooDeepMessage } from "../json_depth.ts";
import { HttpError } from "./errors.ts";

export const MAX_JSON_BODY_BYTES = 1024 * 1024;

/**
 * The request body parsed as JSON, read at most `maxBytes` far. A declared Content-Length over
 * the limit is refused before reading; a chunked body (no Content-Length) is counted as it
 * arrives and abandoned as soon as it passes the limit, so an endless body costs nothing.
 *
 * Throws `HttpError` 413 `payload_too_large` or 400 `bad_json` (also for JSON nested deeper
 * than `MAX_JSON_DEPTH`, refused before parsing).
 */
export async function readJsonBody(
  request: Request,
  maxBytes: number = MAX_JSON_BODY_BYTES,
): Promise<unknown> {
  const declared = request.headers.get("Content-Length");
  if (declared !== null && Number(declared) > maxBytes) {
    throw tooLarge(maxBytes);
  }
  const bytes = await readAtMost(request.body, maxBytes);
  if (bytes.byteLength === 0) {
    throw new HttpError(400, "bad_json", "The request body is empty; expected a JSON document");
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    throw new HttpError(400, "bad_json", "The request body is not valid UTF-8");
  }
  if (nestsDeeperThan(text)) {
    throw new HttpError(400, "bad_json", tooDeepMessage("The request body"));
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    throw new HttpError(400, "bad_json", `The request body is not valid JSON: ${error.message}`);
  }
}

async function readAtMost(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
): Promise<Uint8Array> {
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel("request body over the size limit");
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

function tooLarge(maxBytes: number): HttpError {
  return new HttpError(
    413,
    "payload_too_large",
    `The request body is larger than ${maxBytes} bytes`,
  );
}
