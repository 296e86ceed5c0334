/**
 * How a connected server's tool is named to the model and in `permissions`: `<slug>__<name>`.
 * `slug` is the user's short name for the server (`[a-z][a-z0-9]{0,15}`); `name` is the tool's
 * own name lowercased with every character outside `[a-z0-9_]` mapped to `_`, cut so the whole
 * fits 64 characters (OpenAI's limit on function names, and permissions.tool's), with a 6-hex
 * hash of the original name appended when it was cut or when another tool of the server maps
 * to the same name. The original name is kept and is what the server is called with.
 */

export const SLUG_PATTERN = /^[a-z][a-z0-9]{0,15}$/;
export const MAX_TOOL_NAME = 64;
const SEPARATOR = "__";
const HASH_LENGTH = 6;

/** `<slug>__*`: the permissions row that covers every tool of one server. */
export function serverWildcard(slug: string): string {
  return `${slug}${SEPARATOR}*`;
}

/** The `<slug>__*` row that could cover `tool`, or undefined when it names no server. */
export function serverWildcardOf(tool: string): string | undefined {
  const at = tool.indexOf(SEPARATOR);
  if (at <= 0) return undefined;
  const slug = tool.slice(0, at);
  return SLUG_PATTERN.test(slug) ? serverWildcard(slug) : undefined;
}

/**
 * The offered names of a server's tools, in the order given: one per original name, unique
 * among them. Deterministic, so a rediscovery names the same tool the same way.
 */
export async function offeredToolNames(
  slug: string,
  originalNames: readonly string[],
): Promise<string[]> {
  const prefix = `${slug}${SEPARATOR}`;
  const room = MAX_TOOL_NAME - prefix.length;
  const plain = originalNames.map((name) => name.toLowerCase().replace(/[^a-z0-9_]/g, "_"));
  const counts = new Map<string, number>();
  for (const name of plain) {
    const fitted = name.slice(0, room);
    counts.set(fitted, (counts.get(fitted) ?? 0) + 1);
  }
  return await Promise.all(plain.map(async (name, index) => {
    const fitted = name.slice(0, room);
    if (name.length <= room && counts.get(fitted) === 1 && fitted !== "") {
      return prefix + fitted;
    }
    const hash = await shortHash(originalNames[index]);
    return `${prefix}${name.slice(0, room - HASH_LENGTH - 1)}_${hash}`;
  }));
}

async function shortHash(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest).slice(0, 3)].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}
