/**
 * Where a validation issue is, written the way a client reads it: zod's
 * `["messages", 3, "role"]` becomes `messages[3].role`. Error values name fields this way
 * (the history API's `path`, the agent protocol's `bad_request`).
 */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out;
}
