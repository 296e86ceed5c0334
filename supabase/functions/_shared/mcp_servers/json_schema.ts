/**
 * Whether a server's tool schema is JSON Schema the model and this project can use: an object
 * schema at the root, and below it only well-formed keywords (a `type` the spec names,
 * `properties` of schemas, `required` of strings, …). Structural, not a validator: the server
 * validates its own arguments. A tool whose schema fails is skipped with a warning naming the
 * place; the server's other tools still work.
 *
 * One check is a validator: arguments the user edits when approving a call
 * (`argumentsProblem`). The model's own arguments still go to the server as they are; an edit
 * is the user's, and a bad one is said to him at once, as for a built-in tool.
 */
import { z } from "zod";

const TYPES = new Set(["object", "array", "string", "number", "integer", "boolean", "null"]);
const MAX_DEPTH = 32;

/** Undefined when `schema` is a usable input schema, else what is wrong and where. */
export function inputSchemaProblem(schema: unknown): string | undefined {
  if (!isObject(schema)) return "inputSchema: not an object";
  if (schema.type !== "object") return 'inputSchema.type: must be "object"';
  return problemIn(schema, "inputSchema", 0);
}

/** Undefined when `schema` is absent or a well-formed schema. */
export function outputSchemaProblem(schema: unknown): string | undefined {
  if (schema === undefined) return undefined;
  if (!isObject(schema)) return "outputSchema: not an object";
  return problemIn(schema, "outputSchema", 0);
}

/** Where `args` fails a tool's input schema, and why; undefined when it fits. */
export interface ArgumentsProblem {
  /** From the arguments' root, e.g. `["items", 0, "name"]`. */
  path: PropertyKey[];
  message: string;
}

/**
 * Checks arguments against a tool's (structurally usable) input schema. A schema that cannot
 * be turned into a check (a keyword zod's converter does not take, say) fails closed: the
 * edit is refused with why, and the call may still be approved as the model asked.
 */
export function argumentsProblem(
  schema: Record<string, unknown>,
  args: unknown,
): ArgumentsProblem | undefined {
  let check: z.ZodType;
  try {
    check = z.fromJSONSchema(schema as Parameters<typeof z.fromJSONSchema>[0]);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    return {
      path: [],
      message: `cannot be checked against this tool's schema (${why.slice(0, 200)}); ` +
        "approve it unedited, or deny it",
    };
  }
  const checked = check.safeParse(args);
  if (checked.success) return undefined;
  const [issue] = checked.error.issues;
  return { path: issue.path, message: issue.message };
}

function problemIn(schema: unknown, path: string, depth: number): string | undefined {
  if (typeof schema === "boolean") return undefined;
  if (!isObject(schema)) return `${path}: a schema must be an object or a boolean`;
  if (depth > MAX_DEPTH) return `${path}: nested deeper than ${MAX_DEPTH}`;
  const { type, properties, required, items, enum: values } = schema;
  if (type !== undefined) {
    const types = Array.isArray(type) ? type : [type];
    const bad = types.find((t) => typeof t !== "string" || !TYPES.has(t));
    if (bad !== undefined || types.length === 0) {
      return `${path}.type: ${JSON.stringify(bad ?? type)} is not a JSON Schema type`;
    }
  }
  if (properties !== undefined) {
    if (!isObject(properties)) return `${path}.properties: must be an object`;
    for (const [key, value] of Object.entries(properties)) {
      const problem = problemIn(value, `${path}.properties.${key}`, depth + 1);
      if (problem) return problem;
    }
  }
  if (required !== undefined) {
    if (!Array.isArray(required) || required.some((r) => typeof r !== "string")) {
      return `${path}.required: must be an array of strings`;
    }
  }
  if (values !== undefined && !Array.isArray(values)) return `${path}.enum: must be an array`;
  if (items !== undefined) {
    const list = Array.isArray(items) ? items : [items];
    for (const [index, item] of list.entries()) {
      const problem = problemIn(
        item,
        `${path}.items${Array.isArray(items) ? `[${index}]` : ""}`,
        depth + 1,
      );
      if (problem) return problem;
    }
  }
  for (const keyword of ["additionalProperties", "not"] as const) {
    const value = schema[keyword];
    if (value !== undefined && typeof value !== "boolean") {
      const problem = problemIn(value, `${path}.${keyword}`, depth + 1);
      if (problem) return problem;
    }
  }
  for (const keyword of ["anyOf", "oneOf", "allOf"] as const) {
    const value = schema[keyword];
    if (value === undefined) continue;
    if (!Array.isArray(value)) return `${path}.${keyword}: must be an array`;
    for (const [index, item] of value.entries()) {
      const problem = problemIn(item, `${path}.${keyword}[${index}]`, depth + 1);
      if (problem) return problem;
    }
  }
  return undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
