/**
 * How deep a JSON text nests, measured on the text before it is parsed: validators (zod) and
 * every other recursive walk over a parsed value would overflow the stack on input nested a
 * few thousand levels deep, a crash a 10 KB body can cause. One pass, no recursion.
 */

/** Deeper than any document the functions take (their schemas nest a handful of levels). */
export const MAX_JSON_DEPTH = 64;

/** Whether `text` opens more than `maxDepth` arrays and objects inside one another. */
export function nestsDeeperThan(text: string, maxDepth: number = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (inString) {
      if (code === 0x5c) i++; // backslash: skip the escaped character
      else if (code === 0x22) inString = false;
    } else if (code === 0x22) {
      inString = true;
    } else if (code === 0x5b || code === 0x7b) {
      if (++depth > maxDepth) return true;
    } else if (code === 0x5d || code === 0x7d) {
      depth--;
    }
  }
  return false;
}

export function tooDeepMessage(what: string, maxDepth: number = MAX_JSON_DEPTH): string {
  return `${what} nests deeper than ${maxDepth} levels`;
}
