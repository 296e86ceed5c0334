/**
 * The Deno APIs a function must not use because the hosted Edge Runtime refuses them or they
 * mean something else there: no subprocess, no listener of its own (only `Deno.serve`), no file
 * written (the bundle is read-only and nothing outlives the isolate), no environment set (it
 * would leak across requests of one isolate), no worker, no KV, no signal handler (the runtime
 * announces shutdown with `beforeunload`), and no file found through the module's own location
 * (on hosted it is a path inside the bundle, with no files beside it).
 *
 * Matched on the source with comments blanked out, so a comment may name these APIs.
 */

export interface Rule {
  name: string;
  pattern: RegExp;
  why: string;
  /** For calls whose options decide (Deno.open): the finding stands only if this matches them. */
  argumentsMatch?: RegExp;
}

const WRITES =
  "writeFile|writeTextFile|mkdir|remove|makeTempDir|makeTempFile|create|truncate|rename|copyFile|symlink|link|chmod|chown|utime";

export const RULES: readonly Rule[] = [
  {
    name: "Deno.Command",
    pattern: /\bDeno\s*\.\s*Command\b/g,
    why: "the Edge Runtime runs no subprocess",
  },
  { name: "Deno.run", pattern: /\bDeno\s*\.\s*run\b/g, why: "the Edge Runtime runs no subprocess" },
  {
    name: "Deno.listen",
    pattern: /\bDeno\s*\.\s*listen(Tls|Datagram)?\b/g,
    why: "a function serves only through Deno.serve",
  },
  {
    name: "file write",
    pattern: new RegExp(`\\bDeno\\s*\\.\\s*(${WRITES})(Sync)?\\b`, "g"),
    why: "the bundle is read-only and no file outlives the isolate",
  },
  {
    name: "Deno.open for writing",
    pattern: /\bDeno\s*\.\s*open(Sync)?\b/g,
    argumentsMatch: /\b(write|append|create|createNew|truncate)\s*:\s*true\b/,
    why: "the bundle is read-only and no file outlives the isolate",
  },
  {
    name: "Deno.env.set",
    pattern: /\bDeno\s*\.\s*env\s*\.\s*(set|delete)\b/g,
    why: "secrets are set on the project, and one isolate serves many requests",
  },
  {
    name: "new Worker",
    pattern: /\bnew\s+(Shared)?Worker\b/g,
    why: "no workers on the Edge Runtime",
  },
  { name: "Deno.openKv", pattern: /\bDeno\s*\.\s*openKv\b/g, why: "Deno KV is not on Supabase" },
  {
    name: "Deno.addSignalListener",
    pattern: /\bDeno\s*\.\s*addSignalListener\b/g,
    why: "the Edge Runtime announces shutdown with the beforeunload event, not a signal",
  },
  {
    name: "import.meta location",
    pattern: /\bimport\s*\.\s*meta\s*\.\s*(url|dirname|filename|resolve)\b/g,
    why: "on hosted the module's location is inside the bundle, with no files beside it",
  },
  {
    name: "node: process, worker or file module",
    pattern:
      /\b(from|import|require)\s*\(?\s*["'](node:)?(child_process|worker_threads|cluster|fs|fs\/promises)["']/g,
    why: "subprocesses, workers and files are refused on the Edge Runtime",
  },
];

export interface Finding {
  file: string;
  line: number;
  rule: string;
  why: string;
}

/** `file:line: rule (why)`, the form a failing test prints. */
export function formatFinding({ file, line, rule, why }: Finding): string {
  return `${file}:${line}: ${rule} (${why})`;
}

export function lintSource(file: string, source: string): Finding[] {
  const code = blankComments(source);
  const findings: Finding[] = [];
  for (const rule of RULES) {
    for (const match of code.matchAll(rule.pattern)) {
      if (rule.argumentsMatch && !rule.argumentsMatch.test(callArguments(code, match.index))) {
        continue;
      }
      const line = code.slice(0, match.index).split("\n").length;
      findings.push({ file, line, rule: rule.name, why: rule.why });
    }
  }
  return findings.sort((a, b) => a.line - b.line || a.rule.localeCompare(b.rule));
}

/** The text of the call's parentheses that follow `from`, or "" if no call follows. */
function callArguments(code: string, from: number): string {
  const open = code.indexOf("(", from);
  if (open < 0) return "";
  let depth = 0;
  for (let i = open; i < code.length; i++) {
    if (code[i] === "(") depth++;
    else if (code[i] === ")" && --depth === 0) return code.slice(open, i + 1);
  }
  return code.slice(open);
}

/**
 * The source with every comment replaced by spaces (line breaks kept, so line numbers hold);
 * strings and template literals are stepped over so `"https://…"` is not taken for a comment.
 */
export function blankComments(source: string): string {
  let out = "";
  let i = 0;
  while (i < source.length) {
    const two = source.slice(i, i + 2);
    const char = source[i];
    if (two === "//" || two === "/*") {
      const end = two === "//"
        ? (source.indexOf("\n", i) + 1 || source.length + 1) - 1
        : (source.indexOf("*/", i + 2) + 1 || source.length - 1) + 1;
      out += source.slice(i, end).replace(/[^\n]/g, " ");
      i = end;
    } else if (char === '"' || char === "'" || char === "`") {
      let j = i + 1;
      while (j < source.length && source[j] !== char) j += source[j] === "\\" ? 2 : 1;
      out += source.slice(i, j + 1);
      i = j + 1;
    } else {
      out += char;
      i++;
    }
  }
  return out;
}
