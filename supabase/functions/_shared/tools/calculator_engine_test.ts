import assert from "node:assert/strict";
import {
  type CalculationErrorCode,
  type CalculationMeter,
  type CalculationResult,
  CALCULATOR_LIMITS,
  evaluate,
  formatDecimal,
  formatFraction,
  type Rational,
  rational,
} from "./calculator_engine.ts";
import { heavyExpression } from "../../../tests/support/heavy_expression.ts";

type Success = Extract<CalculationResult, { ok: true }>;
type Failure = Extract<CalculationResult, { ok: false }>;

function succeed(expression: string): Success {
  const result = evaluate(expression);
  if (!result.ok) {
    assert.fail(`${JSON.stringify(expression)} failed: ${result.code}: ${result.message}`);
  }
  return result;
}

function fail(expression: string, code: CalculationErrorCode, position?: number): Failure {
  const result = evaluate(expression);
  if (result.ok) assert.fail(`${JSON.stringify(expression)} gave ${result.fraction}, not ${code}`);
  assert.equal(result.code, code, `${JSON.stringify(expression)}: ${result.message}`);
  assert.equal(result.position, position, `${JSON.stringify(expression)}: ${result.message}`);
  assert.ok(result.message.length > 0);
  if (position !== undefined) assert.match(result.message, new RegExp(`position ${position}\\b`));
  return result;
}

function fractionOf(expression: string): string {
  return succeed(expression).fraction;
}

Deno.test("precedence: * and / bind tighter than + and -, ^ tighter than both", () => {
  assert.equal(fractionOf("1+2*3"), "7");
  assert.equal(fractionOf("(1+2)*3"), "9");
  assert.equal(fractionOf("2*3^2"), "18");
  assert.equal(fractionOf("(2*3)^2"), "36");
  assert.equal(fractionOf("1+6/3-2"), "1");
  assert.equal(fractionOf("2+3^2*2"), "20");
});

Deno.test("associativity: + - * / fold left, ^ folds right", () => {
  assert.equal(fractionOf("10-4-3"), "3");
  assert.equal(fractionOf("100/10/5"), "2");
  assert.equal(fractionOf("2/3*3"), "2");
  assert.equal(fractionOf("2^3^2"), "512");
  assert.equal(fractionOf("(2^3)^2"), "64");
  assert.equal(fractionOf("2^-2^2"), "1/16");
  // Left-folded this would be (2^2)^-1 = 1/4; right-folded it is 2^(1/2).
  fail("2^2^-1", "non_integer_exponent", 1);
});

Deno.test("unary minus and plus", () => {
  assert.equal(fractionOf("-2^2"), "-4");
  assert.equal(fractionOf("(-2)^2"), "4");
  assert.equal(fractionOf("(-2)^3"), "-8");
  assert.equal(fractionOf("2^-1"), "1/2");
  assert.equal(fractionOf("-2^-2"), "-1/4");
  assert.equal(fractionOf("--3"), "3");
  assert.equal(fractionOf("-+-3"), "3");
  assert.equal(fractionOf("+5"), "5");
  assert.equal(fractionOf("3--3"), "6");
  assert.equal(fractionOf("2*-3"), "-6");
  assert.equal(fractionOf("-(1+2)*3"), "-9");
  assert.equal(fractionOf("-3*-3"), "9");
});

Deno.test("number literals: integers, decimals, leading dot and exponents", () => {
  assert.equal(fractionOf("12"), "12");
  assert.equal(fractionOf("007"), "7");
  assert.equal(fractionOf("0.5"), "1/2");
  assert.equal(fractionOf(".5"), "1/2");
  assert.equal(fractionOf("1."), "1");
  assert.equal(fractionOf("1e3"), "1000");
  assert.equal(fractionOf("2.5E-2"), "1/40");
  assert.equal(fractionOf("1.5e+2"), "150");
  assert.equal(fractionOf(".25e1"), "5/2");
  assert.equal(fractionOf("0e99999999999999999999"), "0");
  assert.equal(succeed("2.5E-2").decimal, "0.025");
});

Deno.test("0.1 + 0.2 is exactly 0.3", () => {
  const sum = succeed("0.1 + 0.2");
  assert.deepEqual(sum.value, { num: 3n, den: 10n });
  assert.deepEqual(sum.value, succeed("0.3").value);
  assert.equal(sum.decimal, "0.3");
  assert.equal(sum.fraction, "3/10");
  assert.equal(sum.exact, true);
  assert.equal(succeed("0.1 + 0.2 - 0.3").fraction, "0");
});

Deno.test("terminating decimals are printed exactly without trailing zeros", () => {
  const negative = succeed("-12.125");
  assert.equal(negative.decimal, "-12.125");
  assert.equal(negative.fraction, "-97/8");
  assert.equal(negative.exact, true);
  assert.equal(succeed("1.50 * 2").decimal, "3");
  assert.equal(succeed("2^-10").decimal, "0.0009765625");
  assert.equal(succeed("1/1024/5^3").decimal, "0.0000078125");
  assert.equal(succeed("0").decimal, "0");
  const tiny = succeed("2^-100");
  assert.equal(tiny.exact, true);
  assert.equal(tiny.decimal, `0.${(5n ** 100n).toString().padStart(100, "0")}`);
});

Deno.test("1/3 and other non-terminating values round to 30 significant digits", () => {
  const third = succeed("1/3");
  assert.equal(third.fraction, "1/3");
  assert.equal(third.decimal, "0." + "3".repeat(30));
  assert.equal(third.exact, false);
  assert.deepEqual(third.value, { num: 1n, den: 3n });
  assert.equal(succeed("2/3").decimal, "0." + "6".repeat(29) + "7");
  assert.equal(succeed("-2/3").decimal, "-0." + "6".repeat(29) + "7");
  assert.equal(succeed("1000/3").decimal, "333." + "3".repeat(27));
  assert.equal(succeed("1/300").decimal, "0.00" + "3".repeat(30));
  assert.equal(succeed("4/3").decimal, "1." + "3".repeat(29));
  // Integer digits are never rounded away, even beyond 30 of them.
  assert.equal(succeed("10^40/3").decimal, "3".repeat(40));
  assert.equal(succeed("2*10^40/3").decimal, "6".repeat(39) + "7");
  // Rounding may carry into the integer part.
  assert.equal(succeed("1 - 1/(3*10^40)").decimal, "1");
});

Deno.test("big integers stay exact", () => {
  const power = succeed("2^200");
  assert.equal(power.fraction, (2n ** 200n).toString());
  assert.equal(power.decimal, (2n ** 200n).toString());
  assert.equal(power.exact, true);
  const a = 123456789012345678901234567890n;
  const b = 987654321098765432109876543210n;
  assert.equal(fractionOf(`${a} * ${b} - ${b}`), (a * b - b).toString());
  assert.equal(fractionOf("(2^64 + 1)^3"), ((2n ** 64n + 1n) ** 3n).toString());
});

Deno.test("negative exponents give reciprocals", () => {
  assert.equal(fractionOf("2^-3"), "1/8");
  assert.equal(succeed("2^-3").decimal, "0.125");
  assert.equal(fractionOf("(2/3)^-2"), "9/4");
  assert.equal(fractionOf("(-2)^-3"), "-1/8");
  assert.equal(fractionOf("5^0"), "1");
  assert.equal(fractionOf("0^0"), "1");
  assert.equal(fractionOf("0^5"), "0");
  assert.equal(fractionOf("2^(6/3)"), "4");
});

Deno.test("the bases 0, 1 and -1 accept exponents beyond the limit", () => {
  assert.equal(fractionOf("1^1000000"), "1");
  assert.equal(fractionOf("(-1)^1000001"), "-1");
  assert.equal(fractionOf("(-1)^-1000000"), "1");
  assert.equal(fractionOf("0^1000000"), "0");
});

Deno.test("whitespace is allowed anywhere between tokens and counts in positions", () => {
  assert.equal(fractionOf(" \t1 +\n2 * ( 3 )\r\n"), "7");
  assert.equal(fractionOf("- 2 ^ 2"), "-4");
  fail("  1 +  $", "unexpected_character", 7);
  fail("1 2", "unexpected_token", 2);
  fail("1.5 e3", "unexpected_character", 4);
});

Deno.test("error: empty_expression", () => {
  fail("", "empty_expression");
  fail("   \n\t ", "empty_expression");
});

Deno.test("error: unexpected_character, with its position", () => {
  fail("2 $ 3", "unexpected_character", 2);
  fail("2x", "unexpected_character", 1);
  fail("sqrt(4)", "unexpected_character", 0);
  fail("2 × 3", "unexpected_character", 2);
  fail("1,000", "unexpected_character", 1);
  fail(".", "unexpected_character", 0);
  fail("1 + .e5", "unexpected_character", 4);
  fail("1e", "unexpected_character", 1);
  fail("3 * 1e+", "unexpected_character", 5);
  const emoji = fail("1 + 😀", "unexpected_character", 4);
  assert.match(emoji.message, /😀/);
});

Deno.test("error: unexpected_token, with its position", () => {
  fail("*2", "unexpected_token", 0);
  fail("1 + * 2", "unexpected_token", 4);
  fail("()", "unexpected_token", 1);
  fail("1+2)", "unexpected_token", 3);
  fail("2(3)", "unexpected_token", 1);
  fail("(1 2)", "unexpected_token", 3);
  fail("1..2", "unexpected_token", 2);
  const doubleStar = fail("2**3", "unexpected_token", 2);
  assert.match(doubleStar.message, /\^/);
});

Deno.test("error: unexpected_end, at the end of the expression", () => {
  fail("1+", "unexpected_end", 2);
  fail("-", "unexpected_end", 1);
  fail("2^", "unexpected_end", 2);
  const unclosed = fail("(1+2", "unexpected_end", 4);
  assert.match(unclosed.message, /position 0/);
  fail("((1)", "unexpected_end", 4);
});

Deno.test("error: division_by_zero, at the operator", () => {
  fail("1/0", "division_by_zero", 1);
  fail("5 + 1/(2-2)", "division_by_zero", 5);
  fail("0^-1", "division_by_zero", 1);
  fail("(1-1)^-2", "division_by_zero", 5);
});

Deno.test("error: non_integer_exponent, at the operator", () => {
  fail("2^0.5", "non_integer_exponent", 1);
  fail("4 ^ (1/2)", "non_integer_exponent", 2);
  fail("1^0.5", "non_integer_exponent", 1);
});

Deno.test("error: result_too_large, for exponents and digit counts", () => {
  const { maxDigits, maxExponent } = CALCULATOR_LIMITS;
  assert.equal(fractionOf(`10^${maxDigits - 1}`).length, maxDigits);
  fail(`10^${maxDigits}`, "result_too_large", 2);
  fail(`10^-${maxDigits}`, "result_too_large", 2);
  fail(`2^${maxExponent + 1}`, "result_too_large", 1);
  fail(`2^-${maxExponent + 1}`, "result_too_large", 1);
  // 9^9 is fine; 9^(9^9) trips the exponent limit at the first "^".
  fail("9^9^9", "result_too_large", 1);
  fail(`(10^5000) * (10^5000)`, "result_too_large", 10);
  const sum = `1 + 10^${maxDigits - 1} * 9 + 10^${maxDigits - 1}`;
  fail(sum, "result_too_large", sum.lastIndexOf("+"));
  fail(`1 / 10^5000 / 10^5000`, "result_too_large", 12);
  assert.equal(fractionOf(`1e${maxDigits - 1}`).length, maxDigits);
  fail(`1 + 1e${maxDigits}`, "result_too_large", 4);
  fail(`1e-${maxDigits}`, "result_too_large", 0);
  fail(`1e${"9".repeat(200)}`, "result_too_large", 0);
  fail(`1e-${"9".repeat(200)}`, "result_too_large", 0);
  // The exact bound for a negative literal exponent: 1000 * 10^-(maxDigits + 2) has a
  // denominator of 10^(maxDigits - 1) after reduction.
  assert.equal(
    fractionOf(`1000e-${maxDigits + 2}`),
    `1/${10n ** BigInt(maxDigits - 1)}`,
  );
});

Deno.test("error: expression_too_long", () => {
  const max = CALCULATOR_LIMITS.maxExpressionLength;
  const longest = "1+".repeat(max / 2 - 1) + "11";
  assert.equal(longest.length, max);
  assert.equal(fractionOf(longest), String(max / 2 - 1 + 11));
  fail(longest + "1", "expression_too_long");
  fail(" ".repeat(max + 1), "expression_too_long");
});

Deno.test("error: too_deeply_nested, at the opening that goes too deep", () => {
  const limit = CALCULATOR_LIMITS.maxNestingDepth;
  const nested = (depth: number) => "(".repeat(depth) + "7" + ")".repeat(depth);
  assert.equal(fractionOf(nested(limit)), "7");
  fail(nested(limit + 1), "too_deeply_nested", limit);
  assert.equal(fractionOf("-".repeat(limit) + "7"), "7");
  fail("-".repeat(limit + 1) + "7", "too_deeply_nested", limit);
  // Syntax is checked before nesting could be: the depth error wins over a missing ")".
  fail("(".repeat(limit + 1), "too_deeply_nested", limit);
});

Deno.test("syntax errors are reported before evaluation errors", () => {
  fail("1/0 +", "unexpected_end", 5);
  fail("10^100000 $", "unexpected_character", 10);
  // Evaluation reports the first failing operation from the left.
  fail("1/0 + 2^0.5", "division_by_zero", 1);
});

Deno.test("rational normalises by gcd with the sign on the numerator", () => {
  assert.deepEqual(rational(6n, -4n), { num: -3n, den: 2n });
  assert.deepEqual(rational(0n, -5n), { num: 0n, den: 1n });
  assert.deepEqual(rational(-7n), { num: -7n, den: 1n });
  assert.throws(() => rational(1n, 0n), RangeError);
  assert.equal(formatFraction(rational(-2n, 6n)), "-1/3");
  assert.equal(formatFraction(rational(14n, 2n)), "7");
  assert.deepEqual(formatDecimal(rational(-1n, 8n)), { decimal: "-0.125", exact: true });
  assert.deepEqual(formatDecimal(rational(1n, 7n)), {
    decimal: "0.142857142857142857142857142857",
    exact: false,
  });
});

// ---------------------------------------------------------------------------------------------
// Property-style tests: random trees, rendered to text, checked against an independent
// evaluation of the same tree.

/** mulberry32: a tiny seeded generator so a failure names a reproducible seed. */
function randomSource(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Tree =
  | { kind: "leaf"; value: bigint }
  | { kind: "negate"; operand: Tree }
  | { kind: "binary"; operator: "+" | "-" | "*" | "/"; left: Tree; right: Tree };

function randomTree(random: () => number, depth: number, operators: string): Tree {
  const pick = (n: number) => Math.floor(random() * n);
  if (depth === 0 || random() < 0.25) {
    const digits = 1 + pick(random() < 0.8 ? 3 : 25);
    let text = String(1 + pick(9));
    for (let i = 1; i < digits; i++) text += String(pick(10));
    const value = random() < 0.1 ? 0n : BigInt(text);
    return { kind: "leaf", value: random() < 0.2 ? -value : value };
  }
  if (random() < 0.1) return { kind: "negate", operand: randomTree(random, depth - 1, operators) };
  return {
    kind: "binary",
    operator: operators[pick(operators.length)] as "+" | "-" | "*" | "/",
    left: randomTree(random, depth - 1, operators),
    right: randomTree(random, depth - 1, operators),
  };
}

const PRECEDENCE = { "+": 1, "-": 1, "*": 2, "/": 2 } as const;

/** Renders with only the parentheses precedence requires (plus some spare ones and spaces). */
function render(tree: Tree, random: () => number): string {
  const space = () => (random() < 0.3 ? " " : "");
  const wrap = (text: string) => `(${space()}${text}${space()})`;
  let text: string;
  switch (tree.kind) {
    case "leaf":
      text = tree.value.toString();
      break;
    case "negate": {
      const operand = render(tree.operand, random);
      text = "-" + space() + (tree.operand.kind === "binary" ? wrap(operand) : operand);
      break;
    }
    case "binary": {
      const precedence = PRECEDENCE[tree.operator];
      let left = render(tree.left, random);
      let right = render(tree.right, random);
      if (tree.left.kind === "binary" && PRECEDENCE[tree.left.operator] < precedence) {
        left = wrap(left);
      }
      if (tree.right.kind === "binary" && PRECEDENCE[tree.right.operator] <= precedence) {
        right = wrap(right);
      }
      text = `${left}${space()}${tree.operator}${space()}${right}`;
      break;
    }
  }
  return random() < 0.05 ? wrap(text) : text;
}

/** Integer evaluation with plain BigInt arithmetic (trees without "/"). */
function evaluateWithBigInt(tree: Tree): bigint {
  switch (tree.kind) {
    case "leaf":
      return tree.value;
    case "negate":
      return -evaluateWithBigInt(tree.operand);
    case "binary": {
      const left = evaluateWithBigInt(tree.left);
      const right = evaluateWithBigInt(tree.right);
      if (tree.operator === "+") return left + right;
      if (tree.operator === "-") return left - right;
      if (tree.operator === "*") return left * right;
      throw new Error("evaluateWithBigInt does not divide");
    }
  }
}

/** Unreduced fractions, so this reference shares no normalisation code with the engine. */
function evaluateAsPair(tree: Tree): [bigint, bigint] | "division_by_zero" {
  switch (tree.kind) {
    case "leaf":
      return [tree.value, 1n];
    case "negate": {
      const operand = evaluateAsPair(tree.operand);
      return operand === "division_by_zero" ? operand : [-operand[0], operand[1]];
    }
    case "binary": {
      const left = evaluateAsPair(tree.left);
      if (left === "division_by_zero") return left;
      const right = evaluateAsPair(tree.right);
      if (right === "division_by_zero") return right;
      const [a, b] = left;
      const [c, d] = right;
      switch (tree.operator) {
        case "+":
          return [a * d + c * b, b * d];
        case "-":
          return [a * d - c * b, b * d];
        case "*":
          return [a * c, b * d];
        case "/":
          return c === 0n ? "division_by_zero" : [a * d, b * c];
      }
    }
  }
}

function isNormalised(value: Rational): boolean {
  let [a, b] = [value.num < 0n ? -value.num : value.num, value.den];
  while (b !== 0n) [a, b] = [b, a % b];
  return value.den > 0n && a === 1n;
}

function randomRenderedTrees(seed: number, count: number, operators: string) {
  const random = randomSource(seed);
  const cases: { tree: Tree; text: string }[] = [];
  while (cases.length < count) {
    const tree = randomTree(random, 1 + Math.floor(random() * 6), operators);
    const text = render(tree, random);
    if (text.length <= CALCULATOR_LIMITS.maxExpressionLength) cases.push({ tree, text });
  }
  return cases;
}

Deno.test("property: + - * on random integer trees agrees with BigInt arithmetic", () => {
  const seed = 20240611;
  for (const { tree, text } of randomRenderedTrees(seed, 500, "+-*")) {
    const expected = evaluateWithBigInt(tree);
    const result = succeed(text);
    assert.deepEqual(result.value, { num: expected, den: 1n }, `seed ${seed}: ${text}`);
    assert.equal(result.fraction, expected.toString(), `seed ${seed}: ${text}`);
    assert.equal(result.decimal, expected.toString(), `seed ${seed}: ${text}`);
    assert.equal(result.exact, true);
  }
});

Deno.test("property: + - * / on random trees agrees with unreduced fraction arithmetic", () => {
  const seed = 7;
  let divisionsByZero = 0;
  for (const { tree, text } of randomRenderedTrees(seed, 500, "+-*/")) {
    const expected = evaluateAsPair(tree);
    const result = evaluate(text);
    if (expected === "division_by_zero") {
      divisionsByZero++;
      assert.equal(result.ok ? "ok" : result.code, "division_by_zero", `seed ${seed}: ${text}`);
      continue;
    }
    if (!result.ok) assert.fail(`seed ${seed}: ${text}: ${result.code} ${result.message}`);
    const [num, den] = expected;
    assert.ok(isNormalised(result.value), `seed ${seed}: ${text} → ${result.fraction}`);
    assert.equal(result.value.num * den, num * result.value.den, `seed ${seed}: ${text}`);
  }
  // The generator must exercise the error path too, or this test proves less than it says.
  assert.ok(divisionsByZero > 0);
});

Deno.test("property: arbitrary strings never make evaluate throw", () => {
  const random = randomSource(99);
  const alphabet = "0123456789.eE+-*/^() \t$x,";
  const codes = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    let text = "";
    const length = Math.floor(random() * 20);
    for (let j = 0; j < length; j++) text += alphabet[Math.floor(random() * alphabet.length)];
    const result = evaluate(text);
    if (result.ok) {
      assert.ok(isNormalised(result.value), text);
    } else {
      codes.add(result.code);
      assert.ok(result.message.length > 0, text);
      if (result.position !== undefined) {
        assert.ok(result.position >= 0 && result.position <= text.length, text);
      }
    }
  }
  assert.ok(codes.has("unexpected_character") && codes.has("unexpected_token"));
});

Deno.test("a heavy expression is refused before any big-number operation runs", () => {
  const expression = heavyExpression();
  assert.ok(expression.length <= CALCULATOR_LIMITS.maxExpressionLength);
  const meter: CalculationMeter = { bigOperations: 0 };
  const result = evaluate(expression, meter);
  assert.equal(result.ok, false);
  assert.equal(meter.bigOperations, 0);
});

Deno.test("a heavy expression is refused quickly and says why", () => {
  const result = evaluate(heavyExpression());
  assert.equal(result.ok, false);
  if (!result.ok) assert.equal(result.code, "result_too_large");
});

Deno.test("big-number work has a budget per expression; within it, results are exact", () => {
  // Each term reduces a 9,500-bit by 16,800-bit fraction (then ^0 makes it 1): small results,
  // but each reduction is a costly gcd. A dozen fit the budget; twenty do not.
  const terms = (count: number) => Array(count).fill("(3^6000/7^6000)^0").join("+");
  const within = evaluate(terms(10));
  assert.deepEqual(within.ok && within.fraction, "10");
  const meter: CalculationMeter = { bigOperations: 0 };
  const over = evaluate(terms(20), meter);
  assert.equal(over.ok, false);
  if (!over.ok) assert.equal(over.code, "too_much_work");
  assert.equal(meter.bigOperations, 0, "refused before any big-number operation");
});
