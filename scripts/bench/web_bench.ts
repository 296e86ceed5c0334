/**
 * The web client: the gzipped JavaScript of a first visit (budget 250 KB), and typing while
 * an answer streams at ~100 tokens/s in Debian's Chromium — long tasks, keydown → next frame,
 * and renders of the message list (it must not re-render per token). Runs against its own
 * ephemeral stack and the production build (web/e2e/web_stack.ts).
 */
import { FIRST_LOAD_BUDGET_BYTES, measureFirstLoad } from "../../web/bundle_size.ts";
import { launchChromium, skipBrowserTests } from "../../web/e2e/browser.ts";
import { measureStreamingWhileTyping } from "../../web/e2e/streaming_perf.ts";
import { startWebStack } from "../../web/e2e/web_stack.ts";
import { percentile } from "./stats.ts";
import type { BenchContext, BenchResult } from "./types.ts";

export async function webBench(ctx: BenchContext): Promise<BenchResult[]> {
  const web = await startWebStack();
  try {
    const size = await measureFirstLoad(new URL(`file://${web.distDir}/`));
    const results: BenchResult[] = [
      {
        name: "first-load JavaScript, gzipped",
        value: size.gzipBytes / 1000,
        unit: "KB",
        target: `<= ${FIRST_LOAD_BUDGET_BYTES / 1000}`,
        pass: size.gzipBytes <= FIRST_LOAD_BUDGET_BYTES,
        detail: `${size.files.length} file(s); ${(size.lazyGzipBytes / 1000).toFixed(1)} KB more ` +
          "on demand (usage view + chart)",
      },
    ];
    // Without Chromium outside CI, the size is all this bench can tell (the reason is printed).
    if (skipBrowserTests()) return results;
    const browser = await launchChromium();
    try {
      const tokens = ctx.smoke ? 60 : 600;
      const perf = await measureStreamingWhileTyping(web, browser, {
        tokens,
        email: "alice@example.com",
      });
      const stream = `${tokens} tokens at ${perf.tokensPerSecond.toFixed(0)}/s, ` +
        `${perf.keystrokes} keystrokes`;
      results.push(
        {
          name: "long tasks while streaming and typing",
          value: perf.longTasks,
          unit: "tasks",
          detail: `${perf.longTaskTotalMs.toFixed(0)} ms in all; ${stream}`,
        },
        {
          name: "keydown → next frame while streaming, p95",
          value: percentile(perf.keyToFrameMs, 95),
          unit: "ms",
          detail: `p50 ${percentile(perf.keyToFrameMs, 50).toFixed(1)} ms, max ${
            (perf.keyToFrameMs.at(-1) ?? NaN).toFixed(1)
          } ms`,
        },
        {
          name: "message list renders during the stream",
          value: perf.messageListRenders,
          unit: "renders",
          detail: `answer (message items) ${perf.messageItemRenders}, composer ` +
            `${perf.composerRenders}, for ${tokens} tokens`,
        },
      );
      return results;
    } finally {
      await browser.close();
    }
  } finally {
    await web.stop();
  }
}
