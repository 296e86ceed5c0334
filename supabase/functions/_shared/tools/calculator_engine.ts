/**
 * The pure engine behind the agent's `calculator` tool: exact rational arithmetic on an
 * expression string. Floating point would make an LLM's arithmetic tool wrong in exactly the
 * cases people check (`0.1 + 0.2`), so every value is a BigInt fraction, and the expression is
 * read by a small tokenizer and recursive-descent parser (never `eval`/`Function`: the input is
 * model-written and untrusted).
 *
 * Grammar (whitespace allowed between tokens):
 *
 *   expression = term { ("+" | "-") term }
 *   term       = unary { ("*" | "/") unary }
 *   unary      = ("+" | "-") unary | power
 *   power      = primary [ "^" unary ]            (so ^ is right-associative, -2^2 = -4)
 *   primary    = number | "(" expression ")"
 *   number     = digits ["." [digits]] [exponent] | "." digits [exponent]
 *   exponent   = ("e" | "E") ["+" | "-"] digits
 *
 * Every failure is returned as a value with a stable `code`; `evaluate` never throws for any
 * input string. Positions are 0-based UTF-16 indexes into the original expression.
 */

/** A normalised fraction: gcd(|num|, den) = 1, den > 0, the sign lives in `num`. */
export interface Rational {
  readonly num: bigint;
  readonly den: bigint;
}

export type CalculationErrorCode =
  | "empty_expression"
  | "unexpected_character"
  | "unexpected_token"
  | "unexpected_end"
  | "division_by_zero"
  | "non_integer_exponent"
  | "result_too_large"
  | "expression_too_long"
  | "too_deeply_nested"
  | "too_much_work";

export type CalculationResult =
  | { ok: true; value: Rational; decimal: string; fraction: string; exact: boolean }
  | { ok: false; code: CalculationErrorCode; message: string; position?: number };

/**
 * Bounds that keep one call cheap whatever the model sends: a 1,000-character expression can
 * otherwise ask for `9^9^9`, whose digits would not fit in memory.
 */
export const CALCULATOR_LIMITS = {
  maxExpressionLength: 1_000,
  /** Counts parentheses, prefix signs and exponents: each adds one level to the tree. */
  maxNestingDepth: 200,
  /** Largest |exponent| of `^`, except for the bases 0, 1 and -1 whose powers stay tiny. */
  maxExponent: 10_000,
  /** Largest number of decimal digits in any numerator or denominator, intermediate or final. */
  maxDigits: 10_000,
  /** Significant digits shown when the decimal expansion does not terminate. */
  significantDigits: 30,
  /**
   * The most big-number work one expression may need, in units of a gcd of two 1,024-bit
   * numbers (its cost grows with the product of the widths): about two reductions of fractions
   * at the digit limit, some 100–200 ms of CPU, so no expression can hold a worker for long.
   */
  maxWorkUnits: 2_048,
} as const;

const DIGIT_LIMIT = 10n ** BigInt(CALCULATOR_LIMITS.maxDigits);
/** floor(log2(10^maxDigits)): a power whose result has more bits than this is surely too big. */
const DIGIT_LIMIT_BITS = DIGIT_LIMIT.toString(2).length - 1;

/** Builds a normalised Rational. Throws RangeError on a zero denominator (a caller's bug). */
export function rational(num: bigint, den: bigint = 1n): Rational {
  if (den === 0n) throw new RangeError("Rational denominator must not be zero");
  if (den < 0n) {
    num = -num;
    den = -den;
  }
  const divisor = gcd(abs(num), den);
  return { num: num / divisor, den: den / divisor };
}

/** "7" for integers, otherwise "num/den" with the sign on the numerator ("-1/3"). */
export function formatFraction(value: Rational): string {
  return value.den === 1n ? value.num.toString() : `${value.num}/${value.den}`;
}

/**
 * Plain decimal notation, never exponent notation, never trailing zeros.
 *
 * If the denominator has only the prime factors 2 and 5 the expansion terminates and is printed
 * in full (`exact: true`). Otherwise it is rounded half-up (away from zero) to
 * `significantDigits` significant digits, never rounding away integer digits (`exact: false`).
 * The rounding mode cannot matter: an exact tie would need a denominator made only of 2s and
 * 5s, and those take the exact branch.
 */
export function formatDecimal(value: Rational): { decimal: string; exact: boolean } {
  const sign = value.num < 0n ? "-" : "";
  const num = abs(value.num);
  const den = value.den;

  let twos = 0n;
  let fives = 0n;
  let rest = den;
  while (rest % 2n === 0n) {
    rest /= 2n;
    twos++;
  }
  while (rest % 5n === 0n) {
    rest /= 5n;
    fives++;
  }
  if (rest === 1n) {
    const places = twos > fives ? twos : fives;
    const scaled = (num * 10n ** places) / den;
    return { decimal: sign + placePoint(scaled, Number(places)), exact: true };
  }

  const places = fractionPlacesFor(num, den);
  const scaled = num * 10n ** BigInt(places);
  let digits = scaled / den;
  if (2n * (scaled % den) >= den) digits++;
  return { decimal: sign + placePoint(digits, places), exact: false };
}

/**
 * Counts the arithmetic an evaluation did on numbers wider than a machine word (the costly
 * kind: BigInt products and gcds); for tests and benchmarks.
 */
export interface CalculationMeter {
  bigOperations: number;
}

/** Evaluates `expression` exactly. Never throws: every failure is a `{ ok: false }` value. */
export function evaluate(expression: string, meter?: CalculationMeter): CalculationResult {
  try {
    if (expression.length > CALCULATOR_LIMITS.maxExpressionLength) {
      throw new CalculationFailure(
        "expression_too_long",
        `The expression has ${expression.length} characters; the limit is ` +
          `${CALCULATOR_LIMITS.maxExpressionLength}.`,
      );
    }
    if (expression.trim() === "") {
      throw new CalculationFailure("empty_expression", "The expression is empty.");
    }
    const tree = new Parser(tokenize(expression), expression.length).parse();
    // Sizes and work are bounded from the tree before any big number is computed.
    checkWork(tree);
    const value = evaluateNode(tree, meter ?? { bigOperations: 0 });
    return { ok: true, value, fraction: formatFraction(value), ...formatDecimal(value) };
  } catch (error) {
    if (!(error instanceof CalculationFailure)) throw error;
    const failure: CalculationResult = { ok: false, code: error.code, message: error.message };
    if (error.position !== undefined) failure.position = error.position;
    return failure;
  }
}

// ---------------------------------------------------------------------------------------------
// Internals

/** Thrown inside the engine only; `evaluate` turns it into a result value. */
class CalculationFailure extends Error {
  constructor(
    readonly code: CalculationErrorCode,
    message: string,
    readonly position?: number,
  ) {
    super(message);
  }
}

type Operator = "+" | "-" | "*" | "/" | "^";

/** value = mantissa * 10^scale; kept unevaluated so syntax errors are reported before size. */
interface NumberLiteral {
  mantissa: bigint;
  mantissaDigits: number;
  scale: bigint;
}

type Token =
  | { kind: "number"; text: string; literal: NumberLiteral; position: number }
  | { kind: "operator"; operator: Operator; position: number }
  | { kind: "open"; position: number }
  | { kind: "close"; position: number }
  | { kind: "end"; position: number };

type Node =
  | { kind: "number"; literal: NumberLiteral; position: number }
  | { kind: "negate"; operand: Node; position: number }
  | { kind: "binary"; operator: Operator; left: Node; right: Node; position: number };

const OPERATORS = new Set<string>(["+", "-", "*", "/", "^"]);

function isDigit(char: string | undefined): boolean {
  return char !== undefined && char >= "0" && char <= "9";
}

function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const char = source[i];
    if (/\s/.test(char)) {
      i++;
    } else if (OPERATORS.has(char)) {
      tokens.push({ kind: "operator", operator: char as Operator, position: i });
      i++;
    } else if (char === "(") {
      tokens.push({ kind: "open", position: i });
      i++;
    } else if (char === ")") {
      tokens.push({ kind: "close", position: i });
      i++;
    } else if (isDigit(char) || char === ".") {
      const token = readNumber(source, i);
      tokens.push(token);
      i += token.text.length;
    } else {
      const shown = String.fromCodePoint(source.codePointAt(i)!);
      throw new CalculationFailure(
        "unexpected_character",
        `Unexpected character ${JSON.stringify(shown)} at position ${i}; only numbers, ` +
          `+ - * / ^, parentheses and spaces are allowed.`,
        i,
      );
    }
  }
  tokens.push({ kind: "end", position: source.length });
  return tokens;
}

function readNumber(source: string, start: number): Token & { kind: "number" } {
  let i = start;
  while (isDigit(source[i])) i++;
  const integerDigits = source.slice(start, i);
  let fractionDigits = "";
  if (source[i] === ".") {
    const fractionStart = ++i;
    while (isDigit(source[i])) i++;
    fractionDigits = source.slice(fractionStart, i);
  }
  if (integerDigits === "" && fractionDigits === "") {
    throw new CalculationFailure(
      "unexpected_character",
      `Unexpected "." at position ${start}; a number needs at least one digit.`,
      start,
    );
  }
  let exponent = 0n;
  if (source[i] === "e" || source[i] === "E") {
    let j = i + 1;
    if (source[j] === "+" || source[j] === "-") j++;
    if (!isDigit(source[j])) {
      throw new CalculationFailure(
        "unexpected_character",
        `The exponent marker ${JSON.stringify(source[i])} at position ${i} must be followed ` +
          `by digits, as in 1e3 or 2.5e-2.`,
        i,
      );
    }
    while (isDigit(source[j])) j++;
    exponent = BigInt(source.slice(i + 1, j));
    i = j;
  }
  const mantissaText = (integerDigits + fractionDigits).replace(/^0+(?=\d)/, "");
  return {
    kind: "number",
    text: source.slice(start, i),
    literal: {
      mantissa: BigInt(mantissaText),
      mantissaDigits: mantissaText.length,
      scale: exponent - BigInt(fractionDigits.length),
    },
    position: start,
  };
}

function describe(token: Token): string {
  switch (token.kind) {
    case "number":
      return `number ${JSON.stringify(token.text)}`;
    case "operator":
      return `"${token.operator}"`;
    case "open":
      return `"("`;
    case "close":
      return `")"`;
    case "end":
      return "the end of the expression";
  }
}

class Parser {
  private index = 0;
  private depth = 0;

  constructor(private readonly tokens: Token[], private readonly sourceLength: number) {}

  parse(): Node {
    const tree = this.expression();
    const next = this.peek();
    if (next.kind !== "end") throw this.unexpectedAfterOperand(next);
    return tree;
  }

  private peek(): Token {
    return this.tokens[this.index];
  }

  private next(): Token {
    return this.tokens[this.index++];
  }

  private peekOperator(...operators: Operator[]): Operator | undefined {
    const token = this.peek();
    return token.kind === "operator" && operators.includes(token.operator)
      ? token.operator
      : undefined;
  }

  /** Wraps one level of nesting so the tree's depth stays within the limit. */
  private nested<T>(position: number, parse: () => T): T {
    if (++this.depth > CALCULATOR_LIMITS.maxNestingDepth) {
      throw new CalculationFailure(
        "too_deeply_nested",
        `The expression nests more than ${CALCULATOR_LIMITS.maxNestingDepth} levels deep ` +
          `(parentheses, signs and exponents) at position ${position}.`,
        position,
      );
    }
    const result = parse();
    this.depth--;
    return result;
  }

  private expression(): Node {
    let left = this.term();
    for (let op = this.peekOperator("+", "-"); op; op = this.peekOperator("+", "-")) {
      const position = this.next().position;
      left = { kind: "binary", operator: op, left, right: this.term(), position };
    }
    return left;
  }

  private term(): Node {
    let left = this.unary();
    for (let op = this.peekOperator("*", "/"); op; op = this.peekOperator("*", "/")) {
      const position = this.next().position;
      left = { kind: "binary", operator: op, left, right: this.unary(), position };
    }
    return left;
  }

  private unary(): Node {
    const sign = this.peekOperator("+", "-");
    if (!sign) return this.power();
    const position = this.next().position;
    const operand = this.nested(position, () => this.unary());
    return sign === "+" ? operand : { kind: "negate", operand, position };
  }

  private power(): Node {
    const base = this.primary();
    if (!this.peekOperator("^")) return base;
    const position = this.next().position;
    const exponent = this.nested(position, () => this.unary());
    return { kind: "binary", operator: "^", left: base, right: exponent, position };
  }

  private primary(): Node {
    const token = this.next();
    if (token.kind === "number") {
      return { kind: "number", literal: token.literal, position: token.position };
    }
    if (token.kind === "open") {
      return this.nested(token.position, () => {
        const inner = this.expression();
        const close = this.next();
        if (close.kind === "close") return inner;
        if (close.kind === "end") {
          throw new CalculationFailure(
            "unexpected_end",
            `The expression ends at position ${close.position} without the ")" that ` +
              `closes "(" at position ${token.position}.`,
            close.position,
          );
        }
        throw new CalculationFailure(
          "unexpected_token",
          `Expected ")" to close "(" at position ${token.position}, found ` +
            `${describe(close)} at position ${close.position}.`,
          close.position,
        );
      });
    }
    if (token.kind === "end") {
      throw new CalculationFailure(
        "unexpected_end",
        `The expression ends at position ${token.position} where a number or "(" was expected.`,
        token.position,
      );
    }
    const previous = this.tokens[this.index - 2];
    const hint = token.kind === "operator" && token.operator === "*" &&
        previous?.kind === "operator" && previous.operator === "*"
      ? ' Use "^" for powers.'
      : "";
    throw new CalculationFailure(
      "unexpected_token",
      `Expected a number or "(" at position ${token.position}, found ${describe(token)}.${hint}`,
      token.position,
    );
  }

  /** A complete expression was read but something other than the end follows it. */
  private unexpectedAfterOperand(token: Token): CalculationFailure {
    const where = `at position ${token.position}`;
    const message = token.kind === "close"
      ? `Unexpected ")" ${where}: it has no matching "(".`
      : token.kind === "open" || token.kind === "number"
      ? `Expected an operator ${where}, found ${describe(token)}. Implicit multiplication ` +
        `is not supported; write "*".`
      : `Unexpected ${describe(token)} ${where}.`;
    return new CalculationFailure("unexpected_token", message, token.position);
  }
}

/**
 * Upper bounds of log2 of a node's numerator and denominator before any reduction (a gcd only
 * makes them smaller), and its exact value while that fits a machine word (exponents and the
 * bases 0, 1 and -1 need it; computing it is free).
 */
interface SizeBound {
  numLog2: number;
  denLog2: number;
  value?: Rational;
}

const LOG2_10 = Math.log2(10);
/** log2(10^maxDigits): a part at or above it has too many digits. */
const DIGIT_LIMIT_LOG2 = CALCULATOR_LIMITS.maxDigits * LOG2_10;
/** Room for rounding in the bounds; the exact limit is enforced on the evaluated values. */
const BOUND_SLACK_LOG2 = 2;
const SMALL_LOG2 = 63;
const WORK_UNIT_LOG2 = 1024;

/**
 * Refuses, before evaluating, an expression whose any intermediate result could exceed the
 * digit limit unreduced (`result_too_large`), or whose big-number work adds up to more than
 * `maxWorkUnits` (`too_much_work`). The bounds are safe (never below the real sizes), so an
 * expression that passes cannot make the evaluation costlier than the budget; the price is
 * that a sum whose unreduced form is too large is refused even if it would reduce.
 */
function checkWork(tree: Node): void {
  let work = 0;
  const visit = (node: Node): SizeBound => {
    switch (node.kind) {
      case "number":
        return literalBound(node.literal);
      case "negate": {
        const operand = visit(node.operand);
        const value = operand.value && { num: -operand.value.num, den: operand.value.den };
        return { ...operand, value };
      }
      case "binary": {
        const bound = operatorBound(node.operator, visit(node.left), visit(node.right));
        const width = Math.max(bound.numLog2, bound.denLog2);
        if (width > DIGIT_LIMIT_LOG2 + BOUND_SLACK_LOG2) {
          throw tooLarge(
            `The result of "${node.operator}" at position ${node.position}`,
            node.position,
          );
        }
        // The gcd that reduces the result dominates: its cost grows with the product of the
        // parts' widths (an integer's is trivial); products and sums are linear by comparison.
        if (width > SMALL_LOG2) {
          work += (bound.numLog2 / WORK_UNIT_LOG2) * (bound.denLog2 / WORK_UNIT_LOG2) +
            width / (16 * WORK_UNIT_LOG2);
        }
        if (work > CALCULATOR_LIMITS.maxWorkUnits) {
          throw new CalculationFailure(
            "too_much_work",
            `The expression needs more big-number arithmetic than one calculation may do ` +
              `(at "${node.operator}", position ${node.position}); split it into smaller parts.`,
            node.position,
          );
        }
        return bound;
      }
    }
  };
  visit(tree);
}

/** log2 of |value|, rounded up a little; 0 for 0 and 1. */
function log2Of(value: bigint): number {
  const magnitude = abs(value);
  if (magnitude <= 1n) return 0;
  const bits = magnitude.toString(2).length;
  if (bits > 1000) return bits;
  return Math.log2(Number(magnitude)) * (1 + 1e-12);
}

function exactBound(value: Rational): SizeBound {
  return { numLog2: log2Of(value.num), denLog2: log2Of(value.den), value };
}

function literalBound(literal: NumberLiteral): SizeBound {
  const scale = Number(literal.scale);
  // Literals too large for the limit are refused at evaluation, before any work.
  if (Math.abs(scale) > CALCULATOR_LIMITS.maxDigits * 2) return { numLog2: 0, denLog2: 0 };
  const mantissaLog2 = log2Of(literal.mantissa);
  const bound = scale >= 0
    ? { numLog2: mantissaLog2 + scale * LOG2_10, denLog2: 0 }
    : { numLog2: mantissaLog2, denLog2: -scale * LOG2_10 };
  if (Math.max(bound.numLog2, bound.denLog2) > SMALL_LOG2) return bound;
  return exactBound(literalValue(literal, 0));
}

function operatorBound(op: Operator, a: SizeBound, b: SizeBound): SizeBound {
  let bound: SizeBound;
  switch (op) {
    case "+":
    case "-":
      bound = {
        numLog2: Math.max(a.numLog2 + b.denLog2, b.numLog2 + a.denLog2) + 1,
        denLog2: a.denLog2 + b.denLog2,
      };
      break;
    case "*":
      bound = { numLog2: a.numLog2 + b.numLog2, denLog2: a.denLog2 + b.denLog2 };
      break;
    case "/":
      if (b.value?.num === 0n) return { numLog2: 0, denLog2: 0 }; // refused at evaluation
      bound = { numLog2: a.numLog2 + b.denLog2, denLog2: a.denLog2 + b.numLog2 };
      break;
    case "^":
      return powerBound(a, b);
  }
  if (a.value && b.value && Math.max(bound.numLog2, bound.denLog2) <= SMALL_LOG2) {
    return exactBound(applyOperator(op, a.value, b.value, 0));
  }
  return bound;
}

function powerBound(base: SizeBound, exponent: SizeBound): SizeBound {
  const e = exponent.value;
  const b = base.value;
  // A non-integer or too large exponent, or 0 to a negative power, is refused at evaluation.
  if (e && (e.den !== 1n || abs(e.num) > BigInt(CALCULATOR_LIMITS.maxExponent))) {
    return { numLog2: 0, denLog2: 0 };
  }
  if (b && b.num === 0n) return e && e.num < 0n ? { numLog2: 0, denLog2: 0 } : exactBound(b);
  if (b && b.den === 1n && abs(b.num) === 1n) {
    return e ? exactBound(power(b, e, "", 0)) : { numLog2: 0, denLog2: 0 };
  }
  // Without the exponent's value, assume the largest one allowed.
  const magnitude = e ? Number(abs(e.num)) : CALCULATOR_LIMITS.maxExponent;
  const [top, bottom] = e && e.num < 0n
    ? [base.denLog2, base.numLog2]
    : [base.numLog2, base.denLog2];
  const bound = { numLog2: top * magnitude, denLog2: bottom * magnitude };
  if (b && e && Math.max(bound.numLog2, bound.denLog2) <= SMALL_LOG2) {
    return exactBound(power(b, e, "", 0));
  }
  return bound;
}

function evaluateNode(node: Node, meter: CalculationMeter): Rational {
  switch (node.kind) {
    case "number":
      return literalValue(node.literal, node.position);
    case "negate": {
      const operand = evaluateNode(node.operand, meter);
      return { num: -operand.num, den: operand.den };
    }
    case "binary": {
      const left = evaluateNode(node.left, meter);
      const right = evaluateNode(node.right, meter);
      if ([left.num, left.den, right.num, right.den].some((part) => abs(part) > WORD)) {
        meter.bigOperations++;
      }
      return applyOperator(node.operator, left, right, node.position);
    }
  }
}

/** Numbers up to this fit a machine word: arithmetic on them is cheap whatever it does. */
const WORD = 2n ** 64n;

function literalValue(literal: NumberLiteral, position: number): Rational {
  const { mantissa, scale } = literal;
  if (mantissa === 0n) return rational(0n);
  // Reject before computing 10^scale: the literal's exponent may have hundreds of digits.
  const maxDigits = BigInt(CALCULATOR_LIMITS.maxDigits);
  if (scale >= maxDigits || -scale > maxDigits + BigInt(literal.mantissaDigits)) {
    throw tooLarge(`The number at position ${position}`, position);
  }
  const value = scale >= 0n ? rational(mantissa * 10n ** scale) : rational(mantissa, 10n ** -scale);
  return checkSize(value, `The number at position ${position}`, position);
}

function applyOperator(op: Operator, a: Rational, b: Rational, position: number): Rational {
  const what = `The result of "${op}" at position ${position}`;
  switch (op) {
    case "+":
      return checkSize(rational(a.num * b.den + b.num * a.den, a.den * b.den), what, position);
    case "-":
      return checkSize(rational(a.num * b.den - b.num * a.den, a.den * b.den), what, position);
    case "*":
      return checkSize(rational(a.num * b.num, a.den * b.den), what, position);
    case "/":
      if (b.num === 0n) {
        throw new CalculationFailure(
          "division_by_zero",
          `Division by zero at position ${position}.`,
          position,
        );
      }
      return checkSize(rational(a.num * b.den, a.den * b.num), what, position);
    case "^":
      return power(a, b, what, position);
  }
}

function power(base: Rational, exponent: Rational, what: string, position: number): Rational {
  if (exponent.den !== 1n) {
    throw new CalculationFailure(
      "non_integer_exponent",
      `The exponent ${formatFraction(exponent)} of "^" at position ${position} is not an ` +
        `integer; only integer powers can be computed exactly.`,
      position,
    );
  }
  const n = exponent.num;
  // 0, 1 and -1 have tiny powers for any exponent, so they skip the exponent limit.
  if (base.num === 0n) {
    if (n < 0n) {
      throw new CalculationFailure(
        "division_by_zero",
        `Zero raised to the negative power ${n} at position ${position} divides by zero.`,
        position,
      );
    }
    return rational(n === 0n ? 1n : 0n);
  }
  if (base.den === 1n && abs(base.num) === 1n) {
    return rational(base.num === -1n && n % 2n !== 0n ? -1n : 1n);
  }
  const magnitude = abs(n);
  if (magnitude > BigInt(CALCULATOR_LIMITS.maxExponent)) {
    throw new CalculationFailure(
      "result_too_large",
      `The exponent ${n} of "^" at position ${position} is larger in magnitude than ` +
        `${CALCULATOR_LIMITS.maxExponent}.`,
      position,
    );
  }
  const [top, bottom] = n < 0n ? [base.den, base.num] : [base.num, base.den];
  // A part with b bits raised to k has more than (b - 1) * k bits: refuse before computing.
  for (const part of [top, bottom]) {
    if (BigInt(bitLength(part) - 1) * magnitude > BigInt(DIGIT_LIMIT_BITS)) {
      throw tooLarge(what, position);
    }
  }
  return checkSize(rational(top ** magnitude, bottom ** magnitude), what, position);
}

function checkSize(value: Rational, what: string, position: number): Rational {
  if (abs(value.num) >= DIGIT_LIMIT || value.den >= DIGIT_LIMIT) throw tooLarge(what, position);
  return value;
}

function tooLarge(what: string, position: number): CalculationFailure {
  return new CalculationFailure(
    "result_too_large",
    `${what} would have more than ${CALCULATOR_LIMITS.maxDigits} digits.`,
    position,
  );
}

function abs(value: bigint): bigint {
  return value < 0n ? -value : value;
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

function bitLength(value: bigint): number {
  return abs(value).toString(2).length;
}

function digitCount(value: bigint): number {
  return value.toString().length;
}

/**
 * How many fraction digits give `significantDigits` significant digits for num/den (> 0),
 * but never fewer than zero: integer digits are always kept.
 */
function fractionPlacesFor(num: bigint, den: bigint): number {
  const significant = CALCULATOR_LIMITS.significantDigits;
  const integerPart = num / den;
  if (integerPart > 0n) return Math.max(0, significant - digitCount(integerPart));
  // The first significant digit sits at fraction place p: den <= num * 10^p < 10 * den.
  // Comparing digit counts gets p to within one.
  let place = Math.max(1, digitCount(den) - digitCount(num));
  if (num * 10n ** BigInt(place) < den) place++;
  return place - 1 + significant;
}

/** Writes `digits / 10^places` in plain notation without trailing fraction zeros. */
function placePoint(digits: bigint, places: number): string {
  const text = digits.toString().padStart(places + 1, "0");
  const integer = text.slice(0, text.length - places);
  const fraction = text.slice(text.length - places).replace(/0+$/, "");
  return fraction === "" ? integer : `${integer}.${fraction}`;
}
