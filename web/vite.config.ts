/**
 * Vite's configuration for the web client, as a function so the dev script, the build and the
 * browser tests can point the same app at another Supabase URL. Deno runs Vite through its
 * JavaScript API (web/build.ts, scripts/dev.ts, the browser tests); nothing is installed by hand.
 *
 * VITE_SUPABASE_URL and VITE_SUPABASE_PUBLISHABLE_KEY come from the environment or web/.env
 * files as usual in Vite; without them the app talks to the local stand-in (`deno task dev`).
 */
import { fileURLToPath } from "node:url";
import { defineConfig, type InlineConfig, loadEnv } from "vite";
import { LOCAL_PUBLISHABLE_KEY } from "../scripts/standin/keys.ts";

export const WEB_ROOT = fileURLToPath(new URL(".", import.meta.url));
const PROJECT_ROOT = fileURLToPath(new URL("..", import.meta.url));

export const DEFAULT_SUPABASE_URL = "http://127.0.0.1:54321";

export interface WebConfigOptions {
  mode?: "development" | "production";
  /** Overrides VITE_SUPABASE_URL (tests point the app at their own stack). */
  supabaseUrl?: string;
  /** Overrides VITE_SUPABASE_PUBLISHABLE_KEY. */
  publishableKey?: string;
  /** Used when the environment sets no VITE_SUPABASE_* (dev: the stack it just started). */
  fallback?: { supabaseUrl: string; publishableKey: string };
  /** Where `build` writes; default web/dist. */
  outDir?: string;
  /** Dev server port; default 5173, the next free one when taken. */
  port?: number;
}

export function webConfig(options: WebConfigOptions = {}): InlineConfig {
  const mode = options.mode ?? "development";
  const env = loadEnv(mode, WEB_ROOT, "VITE_");
  const supabaseUrl = options.supabaseUrl ?? env.VITE_SUPABASE_URL ??
    options.fallback?.supabaseUrl ?? DEFAULT_SUPABASE_URL;
  const publishableKey = options.publishableKey ?? env.VITE_SUPABASE_PUBLISHABLE_KEY ??
    options.fallback?.publishableKey ?? LOCAL_PUBLISHABLE_KEY;
  return {
    configFile: false,
    root: WEB_ROOT,
    // Pre-bundled dependencies live with the other installed packages (git-ignored, not linted).
    cacheDir: `${PROJECT_ROOT}node_modules/.vite/web`,
    mode,
    clearScreen: false,
    logLevel: "warn",
    // React's automatic runtime through esbuild: no Babel plugin needed.
    esbuild: { jsx: "automatic" },
    define: {
      "import.meta.env.VITE_SUPABASE_URL": JSON.stringify(supabaseUrl),
      "import.meta.env.VITE_SUPABASE_PUBLISHABLE_KEY": JSON.stringify(publishableKey),
    },
    server: {
      host: "127.0.0.1",
      port: options.port ?? 5173,
      strictPort: false,
      // The agent protocol is imported from supabase/functions/_shared (one definition).
      fs: { allow: [PROJECT_ROOT] },
    },
    preview: { host: "127.0.0.1", port: options.port ?? 4173, strictPort: false },
    build: {
      outDir: options.outDir ?? "dist",
      emptyOutDir: true,
      target: "es2022",
      sourcemap: false,
      reportCompressedSize: false,
      // Gzipped size is what counts, and web/build.ts checks it against its budget.
      chunkSizeWarningLimit: 1024,
      rollupOptions: {
        onwarn(warning, warn) {
          // zod's sources carry /*@__PURE__*/ comments Rollup cannot place; harmless noise.
          if (warning.code === "INVALID_ANNOTATION") return;
          warn(warning);
        },
      },
    },
  };
}

export default defineConfig(webConfig());
