/**
 * `deno task build`: the production build of the web client into web/dist, then the size of
 * the JavaScript a first visit loads (gzipped), which must stay within FIRST_LOAD_BUDGET_BYTES.
 */
import { build } from "vite";
import { webConfig } from "./vite.config.ts";
import { FIRST_LOAD_BUDGET_BYTES, measureFirstLoad } from "./bundle_size.ts";

const started = performance.now();
await build(webConfig({ mode: "production" }));
const size = await measureFirstLoad(new URL("./dist/", import.meta.url));
const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
console.log(
  `web/dist built in ${((performance.now() - started) / 1000).toFixed(1)} s: first load ` +
    `${kib(size.gzipBytes)} of JavaScript gzipped (${size.files.length} files; budget ` +
    `${kib(FIRST_LOAD_BUDGET_BYTES)}), ${kib(size.lazyGzipBytes)} more loaded on demand`,
);
if (size.gzipBytes > FIRST_LOAD_BUDGET_BYTES) {
  console.error("error[bundle_over_budget]: the first load is over its budget");
  Deno.exit(1);
}
