/**
 * PostgREST's horizontal filtering for the REST stand-in: `col=[not.]op.value` and the
 * logic trees `or=(…)`, `and=(…)`, `not.or=(…)`, `not.and=(…)`, nested, read with the same
 * grammar PostgREST uses (src/PostgREST/ApiRequest/QueryParams.hs): at the top level a value
 * is the rest of the parameter, verbatim; inside a logic tree or an `in` list it ends at `,`
 * or `)` unless double-quoted (backslash escapes). `like`/`ilike` take `*` for `%`.
 *
 * Operators: eq, neq, gt, gte, lt, lte, like, ilike, in, is (null, true, false, unknown).
 * PostgREST's other operators (cs, cd, ov, sl, sr, nxr, nxl, adj, match, imatch, the fts
 * family) are refused with PGRST100; an unknown operator gets PostgREST's own parse error.
 */

/** Thrown for anything the request got wrong or the stand-in does not implement. */
export class FilterError extends Error {
  constructor(
    readonly code: "PGRST100" | "42703",
    message: string,
    readonly details: string | null = null,
  ) {
    super(message);
  }
}

export const COMPARISONS: Record<string, string> = {
  eq: "=",
  neq: "<>",
  gt: ">",
  gte: ">=",
  lt: "<",
  lte: "<=",
  like: "like",
  ilike: "ilike",
};
const UNSUPPORTED = new Set([
  "cs",
  "cd",
  "ov",
  "sl",
  "sr",
  "nxr",
  "nxl",
  "adj",
  "match",
  "imatch",
  "fts",
  "plfts",
  "phfts",
  "wfts",
]);
const TRILEAN = new Set(["null", "true", "false", "unknown"]);
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

export interface FilterContext {
  /** The quoted column, or a FilterError (42703) when the table has no such column. */
  column(name: string): string;
  /** Binds a value, returning its placeholder. */
  bind(value: string): string;
}

/** `col=<expression>` at the top level. */
export function compileFilter(name: string, expression: string, context: FilterContext): string {
  const cursor = new Cursor(expression, `filter (${expression})`);
  const target = context.column(name);
  const condition = operation(cursor, target, context, false);
  cursor.expectEnd();
  return condition;
}

/** `or=<value>` (key "or", "and", "not.or" or "not.and"). */
export function compileLogicTree(key: string, value: string, context: FilterContext): string {
  const cursor = new Cursor(key + value, `logic tree (${value})`);
  const condition = logicTree(cursor, context);
  cursor.expectEnd();
  return condition;
}

class Cursor {
  position = 0;
  constructor(readonly text: string, readonly what: string) {}

  get rest(): string {
    return this.text.slice(this.position);
  }

  take(literal: string): boolean {
    if (!this.text.startsWith(literal, this.position)) return false;
    this.position += literal.length;
    return true;
  }

  skipSpaces() {
    while (this.text[this.position] === " " || this.text[this.position] === "\t") this.position++;
  }

  expect(literal: string) {
    if (!this.take(literal)) this.fail(`expecting "${literal}"`);
  }

  expectEnd() {
    if (this.position < this.text.length) this.fail("expecting end of input");
  }

  /** Characters up to (not including) the first of `stops`, or to the end. */
  until(stops: string): string {
    const start = this.position;
    while (this.position < this.text.length && !stops.includes(this.text[this.position])) {
      this.position++;
    }
    return this.text.slice(start, this.position);
  }

  /** `"…"` with backslash escapes, when it is followed by `,` or `)` (or the end). */
  quoted(): string | undefined {
    if (this.text[this.position] !== '"') return undefined;
    let value = "";
    let at = this.position + 1;
    while (at < this.text.length && this.text[at] !== '"') {
      if (this.text[at] === "\\" && at + 1 < this.text.length) at++;
      value += this.text[at++];
    }
    const next = this.text[at + 1];
    if (at >= this.text.length || (next !== undefined && next !== "," && next !== ")")) {
      return undefined;
    }
    this.position = at + 1;
    return value;
  }

  fail(details: string): never {
    const found = this.position < this.text.length
      ? `unexpected ${JSON.stringify(this.text[this.position])}`
      : "unexpected end of input";
    throw new FilterError(
      "PGRST100",
      `"failed to parse ${this.what}" (line 1, column ${this.position + 1})`,
      `${found} ${details}`,
    );
  }
}

function logicTree(cursor: Cursor, context: FilterContext): string {
  const negated = cursor.take("not.");
  const operator = cursor.take("and") ? "and" : cursor.take("or") ? "or" : undefined;
  if (!operator) cursor.fail("expecting logic operator (and, or)");
  cursor.skipSpaces();
  cursor.expect("(");
  const terms: string[] = [];
  do {
    cursor.skipSpaces();
    terms.push(
      /^(not\.)?(and|or)\(/.test(cursor.rest)
        ? logicTree(cursor, context)
        : logicFilter(cursor, context),
    );
    cursor.skipSpaces();
  } while (cursor.take(","));
  cursor.expect(")");
  const joined = `(${terms.join(` ${operator} `)})`;
  return negated ? `not ${joined}` : joined;
}

function logicFilter(cursor: Cursor, context: FilterContext): string {
  const start = cursor.position;
  const name = cursor.until(".,()").trim();
  if (name === "") cursor.fail("expecting field name (* or [a..z0..9_$])");
  if (!IDENTIFIER.test(name)) {
    cursor.position = start;
    throw new FilterError(
      "PGRST100",
      `"${name}" in a logic tree: the local REST stand-in filters plain columns only`,
    );
  }
  cursor.expect(".");
  return operation(cursor, context.column(name), context, true);
}

/** `[not.]op.value` after the column; inside a logic tree the value stops at `,` or `)`. */
function operation(
  cursor: Cursor,
  target: string,
  context: FilterContext,
  inLogicTree: boolean,
): string {
  const negated = cursor.take("not.");
  const operatorStart = cursor.position;
  const operator = cursor.until(".(");
  if (UNSUPPORTED.has(operator)) {
    throw new FilterError(
      "PGRST100",
      `the local REST stand-in does not implement the "${operator}" operator`,
      `supported: ${Object.keys(COMPARISONS).join(", ")}, in, is, not.<operator>, or, and`,
    );
  }
  if (!cursor.take(".")) {
    cursor.position = operatorStart;
    cursor.fail("expecting operator (eq, gt, ...)");
  }
  let condition: string;
  if (operator === "in") {
    const values = listValue(cursor);
    condition = values.length === 0
      ? "false"
      : `${target} in (${values.map((value) => context.bind(value)).join(", ")})`;
  } else if (operator === "is") {
    const valueStart = cursor.position;
    const value = (inLogicTree ? cursor.until(",)") : cursor.until("")).toLowerCase();
    if (!TRILEAN.has(value)) {
      cursor.position = valueStart;
      cursor.fail("expecting null or trilean value (unknown, true, false)");
    }
    condition = `${target} is ${value}`;
  } else if (operator in COMPARISONS) {
    let value = inLogicTree ? singleValue(cursor) : cursor.until("");
    if (operator === "like" || operator === "ilike") value = value.replaceAll("*", "%");
    condition = `${target} ${COMPARISONS[operator]} ${context.bind(value)}`;
  } else {
    cursor.position = operatorStart;
    throw new FilterError(
      "PGRST100",
      `"failed to parse ${cursor.what}" (line 1, column ${operatorStart + operator.length + 2})`,
      `unknown single value operator ${operator}`,
    );
  }
  return negated ? `not (${condition})` : condition;
}

/** A value inside a logic tree: quoted, a `{…}` array literal, or up to `,`/`)`. */
function singleValue(cursor: Cursor): string {
  const quoted = cursor.quoted();
  if (quoted !== undefined) return quoted;
  const array = /^\{[^{}]*\}/.exec(cursor.rest);
  if (array) {
    cursor.position += array[0].length;
    return array[0];
  }
  return cursor.until(",)");
}

/** `(a,"b,c",d)`; `()` is the empty list. */
function listValue(cursor: Cursor): string[] {
  cursor.skipSpaces();
  cursor.expect("(");
  cursor.skipSpaces();
  if (cursor.take(")")) return [];
  const values: string[] = [];
  do {
    values.push(cursor.quoted() ?? cursor.until(",)"));
  } while (cursor.take(","));
  cursor.skipSpaces();
  cursor.expect(")");
  return values;
}
