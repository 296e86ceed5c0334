/**
 * Where a function reads its settings: `Deno.env` in production, a plain map in tests.
 * Every `…FromEnv` reader takes one.
 */
export interface Env {
  get(name: string): string | undefined;
}
