/** `calculator`: exact arithmetic for the model, which is bad at it. */
import { z } from "zod";
import { CALCULATOR_LIMITS, evaluate } from "./calculator_engine.ts";
import { READ_ONLY_ANNOTATIONS, type ToolDefinition } from "./types.ts";

const input = z.object({
  // The engine enforces the length limit itself, so an over-long expression gets its code.
  expression: z.string().describe(
    `An arithmetic expression with + - * / ^ and parentheses, e.g. "(0.1 + 0.2) * 3^2". ` +
      `At most ${CALCULATOR_LIMITS.maxExpressionLength} characters.`,
  ),
});

const output = z.object({
  value: z.string().describe("The result in decimal notation (rounded when not exact)."),
  fraction: z.string().describe('The exact result as a fraction, e.g. "1/3".'),
  exact: z.boolean().describe("Whether `value` is the exact result."),
});

export const calculatorTool: ToolDefinition<typeof input, typeof output> = {
  name: "calculator",
  title: "Calculator",
  description: "Evaluates an arithmetic expression exactly (rational arithmetic, no rounding " +
    "errors) and returns the decimal value and the exact fraction.",
  input,
  output,
  annotations: READ_ONLY_ANNOTATIONS,
  permission: "calculator",
  run({ expression }) {
    const result = evaluate(expression);
    if (!result.ok) {
      const where = result.position === undefined ? "" : ` (at position ${result.position})`;
      return Promise.resolve({
        ok: false,
        error: { code: result.code, message: result.message + where },
      });
    }
    return Promise.resolve({
      ok: true,
      output: { value: result.decimal, fraction: result.fraction, exact: result.exact },
    });
  },
};
