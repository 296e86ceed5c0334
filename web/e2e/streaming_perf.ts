/**
 * How the app holds up while an answer streams at ~100 tokens/s and the user types: long
 * tasks (main-thread work over 50 ms, PerformanceObserver "longtask"), the time from each
 * keydown to the next animation frame, and how often the message list and the answer
 * rendered (the app's render counters). Used by the web benchmark; nothing here asserts.
 */
import type { Browser } from "playwright-core";
import { composer, openApp, send, signIn, waitForAnswerState } from "./app_driver.ts";
import type { WebStack } from "./web_stack.ts";

export interface StreamingPerf {
  tokens: number;
  /** Tokens per second as observed from the test (start of streaming → complete). */
  tokensPerSecond: number;
  keystrokes: number;
  longTasks: number;
  longTaskTotalMs: number;
  /** keydown → next animation frame, sorted, ms. */
  keyToFrameMs: number[];
  messageListRenders: number;
  messageItemRenders: number;
  composerRenders: number;
}

/** Installed in the page before the stream starts. */
const OBSERVE = `(() => {
  const perf = { longTasks: [], keyToFrame: [] };
  globalThis.__perf = perf;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) perf.longTasks.push(entry.duration);
  }).observe({ type: "longtask" });
  addEventListener("keydown", (event) => {
    requestAnimationFrame(() => perf.keyToFrame.push(performance.now() - event.timeStamp));
  }, true);
  for (const key of Object.keys(globalThis.__renders)) globalThis.__renders[key] = 0;
})()`;

export async function measureStreamingWhileTyping(
  web: WebStack,
  browser: Browser,
  options: { tokens: number; email: string },
): Promise<StreamingPerf> {
  const app = await openApp(browser, web.webUrl);
  try {
    await signIn(app.page, options.email);
    await app.page.evaluate(OBSERVE);
    const text = "typing while the agent streams its answer ";
    // ~100 tokens/s: the fixture waits 7 ms between tokens, timers and relaying add the rest.
    await send(app.page, `[[fixture:tokens count=${options.tokens} delay=7]] stream`);
    await waitForAnswerState(app.page, "streaming");
    const started = performance.now();
    let keystrokes = 0;
    const typing = (async () => {
      while (
        await app.page.locator('[data-testid="message-assistant"][data-state="streaming"]')
          .count() > 0
      ) {
        await composer(app.page).pressSequentially(text.slice(0, 10), { delay: 25 });
        keystrokes += 10;
      }
    })();
    await waitForAnswerState(app.page, "complete");
    const seconds = (performance.now() - started) / 1000;
    await typing;
    const measured = await app.page.evaluate<{
      longTasks: number[];
      keyToFrame: number[];
      renders: Record<string, number>;
    }>("({ ...globalThis.__perf, renders: globalThis.__renders })");
    return {
      tokens: options.tokens,
      tokensPerSecond: options.tokens / seconds,
      keystrokes,
      longTasks: measured.longTasks.length,
      longTaskTotalMs: measured.longTasks.reduce((sum, ms) => sum + ms, 0),
      keyToFrameMs: measured.keyToFrame.sort((a, b) => a - b),
      messageListRenders: measured.renders.messageList,
      messageItemRenders: measured.renders.messageItem,
      composerRenders: measured.renders.composer,
    };
  } finally {
    await app.context.close();
  }
}
