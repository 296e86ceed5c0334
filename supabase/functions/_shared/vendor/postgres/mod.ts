/**
 * postgres.js, vendored (see README.md beside this file): the package's JavaScript under src/
 * and its own declarations under types/. Every import of "postgres" resolves here, through the
 * root deno.json and each function's deno.json alike.
 */
// @ts-types="./types/index.d.ts"
import postgres from "./src/index.js";

export default postgres;
// `supabase functions deploy` uploads the files a function's import statements name, and a
// @ts-types comment is not one: this statement (it exports nothing) ships the declarations.
export type * from "./types/index.d.ts";
