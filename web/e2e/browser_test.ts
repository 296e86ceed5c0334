/**
 * The web app in a real browser (Debian's Chromium through playwright-core) against its own
 * ephemeral stack and the production build. One test with a step per scenario, sharing the
 * stack and the browser: starting them is most of the cost. Screenshots of each step go to
 * artifacts/web/. Nothing here is timed; the performance numbers are in the web benchmark.
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { FIRST_LOAD_BUDGET_BYTES, measureFirstLoad } from "../bundle_size.ts";
import {
  type AppPage,
  composer,
  lastAnswer,
  openApp,
  screenshot,
  send,
  sessionIdOf,
  signIn,
  signUp,
  startNewChat,
  waitConnected,
  waitForAnswerState,
  waitForAnswerText,
} from "./app_driver.ts";
import { launchChromium, skipBrowserTests } from "./browser.ts";
import { fixtureArg } from "../../scripts/standin/llm_fixture.ts";
import { startMcpServerDouble } from "../../scripts/standin/mcp_server_double.ts";
import { connect } from "../../supabase/functions/_shared/db/client.ts";
import { startWebStack } from "./web_stack.ts";

const SESSION_URL = /#\/chat\/[0-9a-f-]{36}$/;

Deno.test({
  name: "web app in Chromium",
  ignore: skipBrowserTests(),
  // The stack's pools and Vite's server outlive single steps; stop() closes them at the end.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    // The browser first: without one (under CI=true) this fails at once, before any build.
    const browser = await launchChromium();
    const web = await startWebStack().catch(async (error) => {
      await browser.close();
      throw error;
    });
    const pages: AppPage[] = [];
    const open = async (viewport?: { width: number; height: number }) => {
      const app = await openApp(browser, web.webUrl, viewport);
      pages.push(app);
      return app;
    };
    const waitForTurnState = async (sessionId: string, state: string) => {
      const sql = connect(web.stack.dbUrl, { max: 1 });
      try {
        for (let tries = 0; tries < 300; tries++) {
          const [row] = await sql`select t.state from public.agent_turns t
            where t.session_id = ${sessionId}::uuid order by t.created_at desc limit 1`;
          if (row?.state === state) return;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        throw new Error(`the turn of session ${sessionId} never reached ${state}`);
      } finally {
        await sql.end();
      }
    };
    const email = `e2e-${crypto.randomUUID().slice(0, 8)}@example.com`;
    const password = "correct horse battery";
    let main: AppPage | undefined;
    const mainPage = (): Page => {
      if (!main) throw new Error("the sign-up step did not leave a signed-in page");
      return main.page;
    };

    try {
      await t.step(
        "the production build's first load fits 250 KB of gzipped JavaScript",
        async () => {
          const size = await measureFirstLoad(new URL(`file://${web.distDir}/`));
          assert.ok(
            size.gzipBytes <= FIRST_LOAD_BUDGET_BYTES,
            `first load is ${size.gzipBytes} bytes gzipped (${size.files.join(", ")})`,
          );
          assert.ok(size.lazyGzipBytes > 0, "the usage view (and its chart) load on demand");
        },
      );

      await t.step("sign up, then chat with a tool call", async () => {
        main = await open();
        await signUp(main.page, email, password);
        await screenshot(main.page, "01-signed-up");
        await send(main.page, "what is 6*7?");
        await main.page.waitForURL(SESSION_URL);
        await waitForAnswerState(main.page, "complete");
        const card = lastAnswer(main.page).getByTestId("tool-call");
        assert.equal(await card.getAttribute("data-status"), "done");
        assert.match(await card.innerText(), /calculator[\s\S]*"value": "42"/);
        assert.match(await lastAnswer(main.page).innerText(), /6\*7 = 42\./);
        // The session list shows the new chat, live.
        await main.page.getByTestId("session-list").getByText("what is 6*7?").waitFor();
        await screenshot(main.page, "02-tool-call");
      });

      await t.step("a tool that asks first: the approval prompt, allowed once", async () => {
        const bob = await open();
        await signIn(bob.page, "bob@example.com");
        await send(bob.page, "what is (2+3)*4?");
        const allow = bob.page.getByRole("button", { name: "Allow once" });
        await allow.waitFor();
        await screenshot(bob.page, "03-approval-prompt");
        assert.equal(
          await lastAnswer(bob.page).getByTestId("tool-call").getAttribute("data-status"),
          "awaiting_approval",
        );
        await allow.click();
        await waitForAnswerState(bob.page, "complete");
        assert.match(
          await lastAnswer(bob.page).getByTestId("tool-call").innerText(),
          /"value": "20"/,
        );
        await screenshot(bob.page, "04-approved");

        await bob.page.getByRole("link", { name: "Permissions" }).click();
        const calculator = bob.page.locator(
          '[data-testid="permissions-table"] tr[data-tool="calculator"]',
        );
        assert.equal(await calculator.getAttribute("data-mode"), "ask");
        await screenshot(bob.page, "05-permissions");
        await bob.context.close();
      });

      await t.step(
        "a turn parked on an approval outlives every agent worker; another context approves it",
        async () => {
          // Bob's calculator grant is `ask` (the step above saw it in the Permissions view).
          const first = await open();
          await signIn(first.page, "bob@example.com");
          await send(first.page, "what is (2+3)*4?");
          await first.page.waitForURL(SESSION_URL);
          const sessionId = sessionIdOf(first.page)!;
          await first.page.getByRole("button", { name: "Allow once" }).waitFor();
          await waitForTurnState(sessionId, "parked");

          const agent = web.stack.functions.get("agent")!;
          const killedPids = agent.workers.map((worker) => worker.pid);
          assert.ok(await web.stack.killFunctionWorkers("agent") >= 1, "agent workers were up");
          // Reloaded while nothing runs the turn: the prompt and Stop come back from Postgres.
          await first.page.reload();
          await waitConnected(first.page);
          await first.page.getByRole("button", { name: "Allow once" }).waitFor();
          await first.page.getByRole("button", { name: "Stop" }).waitFor();
          await screenshot(first.page, "parked-01-reloaded-after-kill");

          const second = await open();
          await signIn(second.page, "bob@example.com");
          await second.page.goto(`${web.webUrl}#/chat/${sessionId}`);
          const allow = second.page.getByRole("button", { name: "Allow once" });
          await allow.waitFor();
          await second.page.getByRole("button", { name: "Stop" }).waitFor();
          const fresh = agent.workers.map((worker) => worker.pid);
          assert.ok(fresh.length > 0 && fresh.every((pid) => !killedPids.includes(pid)));
          await allow.click();
          for (const { page } of [second, first]) {
            await waitForAnswerState(page, "complete");
            assert.equal(
              await lastAnswer(page).getByTestId("tool-call").getAttribute("data-status"),
              "done",
            );
            assert.match(await lastAnswer(page).innerText(), /\(2\+3\)\*4 = 20\./);
            assert.equal(await page.getByRole("button", { name: "Stop" }).count(), 0);
          }
          await screenshot(first.page, "parked-02-approved-elsewhere");
          await waitForTurnState(sessionId, "complete");
          await first.context.close();
          await second.context.close();
        },
      );

      await t.step("a tab replaced by a newer connection says so and disables Send", async () => {
        const sql = connect(web.stack.dbUrl, { max: 1 });
        const [{ id: bob, max_connections: before }] = await sql`select u.id, l.max_connections
          from auth.users u join public.user_limits l on l.user_id = u.id
          where u.email = 'bob@example.com'`;
        await sql`update public.user_limits set max_connections = 1 where user_id = ${bob}`;
        const older = await open();
        try {
          await signIn(older.page, "bob@example.com");
          await composer(older.page).fill("written before another tab opened");
          const newer = await open();
          await signIn(newer.page, "bob@example.com");
          await older.page.getByTestId("replaced-notice").waitFor();
          assert.ok(await older.page.getByRole("button", { name: "Send" }).isDisabled());
          await screenshot(older.page, "replaced-01-older-tab");
          await composer(newer.page).fill("the newer tab may send");
          assert.ok(await newer.page.getByRole("button", { name: "Send" }).isEnabled());
          await newer.context.close();
        } finally {
          await older.context.close();
          await sql`update public.user_limits set max_connections = ${before} where user_id = ${bob}`;
          await sql.end();
        }
      });

      await t.step("connect an MCP server; its tools ask first; a chat uses one", async () => {
        const page = mainPage();
        const double = startMcpServerDouble();
        try {
          await page.getByRole("link", { name: "Connections" }).click();
          await page.getByLabel("Server URL").fill(double.url);
          await page.getByLabel("Short name").fill("dbl");
          await page.getByRole("button", { name: "Connect" }).click();
          const server = page.locator('[data-testid="connection"][data-slug="dbl"]');
          await server.locator('li[data-tool="dbl__echo"]').waitFor();
          assert.match(
            await server.getByTestId("connection-warning").innerText(),
            /bad_schema skipped/,
          );
          await screenshot(page, "connections-01-added");

          await page.getByRole("link", { name: "Permissions" }).click();
          const echo = page.locator('[data-testid="server-tools-table"] tr[data-tool="dbl__echo"]');
          await echo.waitFor();
          assert.equal(await echo.getAttribute("data-mode"), "ask");

          await page.getByRole("link", { name: "Chat" }).click();
          await startNewChat(page);
          const args = fixtureArg(JSON.stringify({ text: "hello hub" }));
          await send(page, `[[fixture:tool_call tool=dbl__echo args=${args}]] echo`);
          const allow = page.getByRole("button", { name: "Allow once" });
          await allow.waitFor();
          await allow.click();
          await waitForAnswerState(page, "complete");
          const card = lastAnswer(page).getByTestId("tool-call");
          assert.equal(await card.getAttribute("data-status"), "done");
          assert.match(await card.innerText(), /dbl__echo[\s\S]*hello hub/);
          await screenshot(page, "connections-02-tool-call");

          const sql = connect(web.stack.dbUrl, { max: 1 });
          try {
            const rows = await sql`select u.status from public.usage_metrics u
              join auth.users a on a.id = u.user_id
              where a.email = ${email} and u.kind = 'tool' and u.name = 'dbl__echo'`;
            assert.deepEqual(rows.map((r) => r.status), ["ok"]);
          } finally {
            await sql.end();
          }
        } finally {
          await double.close();
        }
      });

      await t.step(
        "sign in to an OAuth MCP server in a popup; its tools ask; a revoked grant shows live",
        async () => {
          const page = mainPage();
          // The double's authorization server shows a consent page with an "Allow" button, and
          // takes client-id metadata documents as well as registration: the function picks the
          // document, which the double fetches from the stand-in's connections function.
          const double = startMcpServerDouble({
            oauth: {
              autoConsent: false,
              clientRegistration: ["dynamic", "metadata_document"],
              allowLoopbackClientIds: true,
            },
          });
          try {
            await page.getByRole("link", { name: "Connections" }).click();
            await page.getByLabel("Server URL").fill(double.url);
            await page.getByLabel("Short name").fill("sso");
            await page.getByLabel("Authentication").selectOption("oauth");
            const popupOpened = page.waitForEvent("popup");
            await page.getByRole("button", { name: "Sign in", exact: true }).click();
            const popup = await popupOpened;
            await popup.getByRole("button", { name: "Allow" }).click();
            const server = page.locator('[data-testid="connection"][data-slug="sso"]');
            await server.locator('li[data-tool="sso__echo"]').waitFor();
            assert.equal(await server.getAttribute("data-status"), "connected");
            // The callback page told the app, then closed itself (maybe already).
            for (let i = 0; i < 100 && !popup.isClosed(); i++) {
              await new Promise((resolve) => setTimeout(resolve, 50));
            }
            assert.ok(popup.isClosed(), "the sign-in popup closed itself");
            // Read for the consent page, the "Allow" form and the code exchange.
            assert.equal(double.oauth!.metadataDocumentFetches, 3);
            await screenshot(page, "connections-03-oauth");

            await page.getByRole("link", { name: "Permissions" }).click();
            const echo = page.locator(
              '[data-testid="server-tools-table"] tr[data-tool="sso__echo"]',
            );
            await echo.waitFor();
            assert.equal(await echo.getAttribute("data-mode"), "ask");

            // The grant is revoked (as a failed refresh marks it): the screen shows it live.
            await page.getByRole("link", { name: "Connections" }).click();
            const sql = connect(web.stack.dbUrl, { max: 1 });
            try {
              await sql`update public.mcp_servers set status = 'needs_sign_in'
                      where slug = 'sso' and user_id =
                        (select id from auth.users where email = ${email})`;
            } finally {
              await sql.end();
            }
            await page.locator(
              '[data-testid="connection"][data-slug="sso"][data-status="needs_sign_in"]',
            )
              .waitFor();
            const again = page.waitForEvent("popup");
            await server.getByRole("button", { name: "Sign in again" }).click();
            await (await again).getByRole("button", { name: "Allow" }).click();
            await page.locator(
              '[data-testid="connection"][data-slug="sso"][data-status="connected"]',
            )
              .waitFor();
            assert.equal(double.oauth!.tokenRequests, 2);
            await screenshot(page, "connections-04-signed-in-again");
          } finally {
            await double.close();
          }
        },
      );

      await t.step("stop a turn", async () => {
        const page = mainPage();
        await startNewChat(page);
        await send(page, "[[fixture:slow count=400 delay=50]] go slowly");
        await waitForAnswerText(page, /word3 /);
        await page.getByRole("button", { name: "Stop" }).click();
        await waitForAnswerState(page, "stopped");
        // In the same render: an answer that says "Stopped" never sits beside a Stop button.
        assert.equal(await page.getByRole("button", { name: "Stop" }).count(), 0);
        const text = await lastAnswer(page).innerText();
        assert.ok(!text.includes("word399"), "the answer was cut short");
        await screenshot(page, "06-stopped");
        // What was stored says so too: after a reload the row reads "Stopped", not Interrupted.
        await page.reload();
        await waitConnected(page);
        await waitForAnswerState(page, "stopped");
      });

      await t.step("the gateway drops the socket mid-turn: reconnect, resume, finish", async () => {
        const app = main!;
        const page = app.page;
        await startNewChat(page);
        const socketsBefore = app.agentSockets;
        await send(page, "[[fixture:slow count=60 delay=40]] then drop");
        await waitForAnswerText(page, /word5 /);
        assert.ok(web.stack.dropFunctionWebSockets() >= 1, "the gateway held the agent socket");
        await page.getByTestId("connection").filter({ hasText: /Connection lost|Reconnecting/ })
          .waitFor();
        await screenshot(page, "07-connection-lost");
        await waitForAnswerState(page, "complete");
        await waitConnected(page);
        assert.equal(app.agentSockets, socketsBefore + 1, "one new socket after the drop");
        const words = (await lastAnswer(page).innerText()).match(/word\d+/g) ?? [];
        assert.deepEqual(words, Array.from({ length: 60 }, (_, i) => `word${i}`));
        await screenshot(page, "08-resumed");
      });

      let second: AppPage | undefined;
      await t.step("a second browser context follows the running turn", async () => {
        const page = mainPage();
        const sessionId = sessionIdOf(page);
        assert.ok(sessionId, "the main page is in a session");
        second = await open();
        await signIn(second.page, email, password);
        await second.page.goto(`${web.webUrl}#/chat/${sessionId}`);
        const answers = second.page.getByTestId("message-assistant");
        await answers.first().waitFor();
        const earlier = await answers.count();
        await send(page, "[[fixture:slow count=40 delay=150]] watch this");
        // It follows the turn it sees streaming (resume over its own socket): live text, and
        // Stop, as in the tab that sent it.
        const answer = answers.nth(earlier);
        await answer.filter({ hasText: /word\d+ / }).waitFor();
        assert.equal(await answer.getAttribute("data-state"), "streaming");
        await second.page.getByRole("button", { name: "Stop" }).waitFor();
        // Reloaded mid-answer, the tab finds the running turn again: live text and Stop.
        await second.page.reload();
        await waitConnected(second.page);
        await second.page.getByRole("button", { name: "Stop" }).waitFor();
        assert.ok(!(await answer.innerText()).includes("word39"), "seen before the end");
        await screenshot(second.page, "09-second-tab-streaming");
        await answer.filter({ hasText: /word39/ }).waitFor();
        await second.page.locator(
          `[data-testid="message-assistant"][data-state="complete"] >> nth=${earlier}`,
        ).waitFor();
        await screenshot(second.page, "10-second-tab-complete");
      });

      await t.step("the usage chart changes after a turn", async () => {
        const watcher = second!.page;
        await watcher.getByRole("link", { name: "Usage" }).click();
        const usage = watcher.getByTestId("usage");
        await watcher.getByTestId("usage-chart").waitFor();
        const before = Number(await usage.getAttribute("data-total-tokens"));
        const callsBefore = Number(await usage.getAttribute("data-total-calls"));
        assert.ok(before > 0, "earlier turns are counted");
        await screenshot(watcher, "11-usage-before");
        await send(mainPage(), "hello again");
        // Evaluated in the page (as text: this file is type-checked without the DOM library).
        await watcher.waitForFunction(
          `Number(document.querySelector("[data-testid=usage]")?.dataset.totalTokens) > ${before}`,
        );
        assert.ok(Number(await usage.getAttribute("data-total-calls")) > callsBefore);
        await screenshot(watcher, "12-usage-after");
        await second!.context.close();
      });

      await t.step(
        "streaming tokens re-render the answer, not the list or the composer",
        async () => {
          const page = mainPage();
          await startNewChat(page);
          await page.evaluate(() => {
            const renders = (globalThis as { __renders?: Record<string, number> }).__renders!;
            for (const key of Object.keys(renders)) renders[key] = 0;
          });
          const tokens = 300;
          await send(page, `[[fixture:tokens count=${tokens} delay=10]] stream`);
          await waitForAnswerState(page, "streaming");
          await composer(page).pressSequentially("typing while it streams", { delay: 20 });
          await waitForAnswerState(page, "complete");
          const renders = await page.evaluate(() =>
            (globalThis as { __renders?: Record<string, number> }).__renders!
          );
          // A handful of list renders (the chat appears, is stored, starts, ends), not one per
          // token; the answer itself re-renders at most once per store flush.
          assert.ok(renders.messageList < 20, `message list rendered ${renders.messageList} times`);
          assert.ok(renders.messageItem < tokens, `messages rendered ${renders.messageItem} times`);
          assert.equal(await composer(page).inputValue(), "typing while it streams");
        },
      );

      await t.step(
        "usable at 375 px: nothing scrolls sideways, chats open in a drawer",
        async () => {
          const phone = await open({ width: 375, height: 740 });
          await signIn(phone.page, email, password);
          const overflow = () =>
            phone.page.evaluate<number>("document.documentElement.scrollWidth - innerWidth");
          assert.equal(await overflow(), 0);
          const toggle = phone.page.getByRole("button", { name: "Chats" });
          assert.equal(await toggle.getAttribute("aria-expanded"), "false");
          // The drawer closes with Escape, a tap on the backdrop and its close button.
          await toggle.click();
          await phone.page.keyboard.press("Escape");
          assert.equal(await toggle.getAttribute("aria-expanded"), "false", "Escape closes it");
          await toggle.click();
          await phone.page.getByTestId("drawer-backdrop").click({ position: { x: 360, y: 400 } });
          assert.equal(await toggle.getAttribute("aria-expanded"), "false", "the backdrop too");
          await toggle.click();
          await phone.page.getByRole("button", { name: "Close the chat list" }).click();
          assert.equal(await toggle.getAttribute("aria-expanded"), "false", "and its button");
          await toggle.click();
          await phone.page.getByRole("link", { name: "what is 6*7?" }).click();
          await waitForAnswerState(phone.page, "complete");
          assert.equal(await toggle.getAttribute("aria-expanded"), "false", "picking closes it");
          assert.equal(await overflow(), 0);
          await screenshot(phone.page, "13-phone-chat");
          await phone.page.getByRole("link", { name: "Usage" }).click();
          await phone.page.getByTestId("usage-chart").waitFor();
          assert.equal(await overflow(), 0);
          await screenshot(phone.page, "14-phone-usage");
          await phone.context.close();
        },
      );

      await t.step("keyboard only: sign out and back in", async () => {
        const page = mainPage();
        await page.getByRole("button", { name: "Sign out" }).focus();
        await page.keyboard.press("Enter");
        await page.getByRole("heading", { name: "Sign in" }).waitFor();
        await page.getByLabel("Email").focus();
        await page.keyboard.type(email);
        await page.keyboard.press("Tab");
        await page.keyboard.type(password);
        await page.keyboard.press("Enter");
        await waitConnected(page);
      });

      await t.step("no page logged an error", () => {
        const problems = pages.flatMap((app) => app.problems)
          // The browser reports the dropped socket itself; that drop was on purpose.
          .filter((problem) => !/WebSocket connection .* failed|ERR_CONNECTION/.test(problem));
        assert.deepEqual(problems, []);
      });
    } finally {
      await browser.close();
      await web.stop();
    }
  },
});

Deno.test({
  name: "web app in Chromium on a project with the legacy JWT secret",
  ignore: skipBrowserTests(),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const browser = await launchChromium();
    // Tokens are HS256 without a kid, the public JWKS is empty: the functions ask Auth.
    const web = await startWebStack({ jwt: "legacy" }).catch(async (error) => {
      await browser.close();
      throw error;
    });
    try {
      const alice = await openApp(browser, web.webUrl);
      await signIn(alice.page, "alice@example.com");
      await send(alice.page, "what is 6*7?");
      await alice.page.waitForURL(SESSION_URL);
      await waitForAnswerState(alice.page, "complete");
      assert.match(await lastAnswer(alice.page).innerText(), /6\*7 = 42\./);
      // The session list is live through Realtime, which checks the same legacy token.
      await alice.page.getByTestId("session-list").getByText("what is 6*7?").waitFor();
      await screenshot(alice.page, "legacy-01-chat");
      assert.deepEqual(alice.problems, []);
    } finally {
      await browser.close();
      await web.stop();
    }
  },
});
