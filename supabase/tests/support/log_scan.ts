/**
 * What an operator's log drain would get from a stack must hold nothing secret or private: no
 * token, key or password, nothing a user wrote. Every stack test collects its stack's output
 * (functions, gateway, stand-ins) and scans it with this.
 */
import assert from "node:assert/strict";
import type { RunningStack } from "../../../scripts/standin/stack.ts";

/** The stack's own secrets: its secret API key, its signing key, the JWT service-role key. */
export function secretsOf(stack: RunningStack): string[] {
  const { d, k } = stack.signingKey.privateJwk;
  return [
    stack.secretKey,
    ...[d, k].filter((part): part is string => typeof part === "string"),
    ...(stack.legacyKeys ? [stack.legacyKeys.serviceRole] : []),
    // The seeded users' password.
    "password123",
  ];
}

export function assertNothingSecretIn(
  logs: readonly string[],
  forbidden: { secrets: readonly string[]; contents: readonly string[] },
): void {
  assert.ok(
    logs.some((line) => /^\[(agent|mcp|history)\] \{/.test(line)),
    "the functions' output was not collected",
  );
  for (const line of logs) {
    for (const secret of forbidden.secrets) {
      assert.ok(!line.includes(secret), `a secret in the log: ${line.slice(0, 200)}`);
    }
    for (const content of forbidden.contents) {
      assert.ok(!line.includes(content), `message content in the log: ${line}`);
    }
  }
}
