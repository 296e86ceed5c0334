/**
 * What a person does in the app, as Playwright calls: sign in or up, send a message, read the
 * answer. Everything is found by its label or role, so the tests also prove those exist.
 */
import { join } from "node:path";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { PROJECT_ROOT } from "../../scripts/standin/supabase_cli.ts";

export const ARTIFACTS_DIR = join(PROJECT_ROOT, "artifacts", "web");
export const DEMO_PASSWORD = "password123";
const WAIT_MS = 30_000;

export interface AppPage {
  context: BrowserContext;
  page: Page;
  /** Messages the page logged as errors, and uncaught exceptions. */
  problems: string[];
  /** Agent WebSockets the page opened. */
  agentSockets: number;
}

export async function openApp(
  browser: Browser,
  webUrl: string,
  viewport = { width: 1200, height: 800 },
): Promise<AppPage> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const app: AppPage = { context, page, problems: [], agentSockets: 0 };
  page.on("pageerror", (error) => app.problems.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") app.problems.push(`console: ${message.text()}`);
  });
  page.on("websocket", (socket) => {
    if (socket.url().includes("/functions/v1/agent")) app.agentSockets++;
  });
  await page.goto(webUrl);
  return app;
}

export async function signIn(page: Page, email: string, password = DEMO_PASSWORD) {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await waitConnected(page);
}

export async function signUp(page: Page, email: string, password: string) {
  await page.getByRole("button", { name: /Create one/ }).click();
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create an account" }).click();
  await waitConnected(page);
}

export async function waitConnected(page: Page) {
  await page.getByTestId("connection").filter({ hasText: /^Connected$/ }).waitFor();
}

export function composer(page: Page): Locator {
  return page.getByLabel("Message", { exact: true });
}

export async function send(page: Page, text: string) {
  await composer(page).fill(text);
  await composer(page).press("Enter");
}

/** The newest assistant message. */
export function lastAnswer(page: Page): Locator {
  return page.getByTestId("message-assistant").last();
}

export async function waitForAnswerState(page: Page, state: string) {
  await page.locator(`[data-testid="message-assistant"][data-state="${state}"]`).last().waitFor();
}

/** Waits until the newest answer's text matches. */
export async function waitForAnswerText(page: Page, pattern: RegExp) {
  await lastAnswer(page).filter({ hasText: pattern }).waitFor();
}

export async function startNewChat(page: Page) {
  await page.goto(page.url().replace(/#.*$/, "") + "#/chat");
  await composer(page).waitFor();
}

export async function screenshot(page: Page, name: string) {
  await Deno.mkdir(ARTIFACTS_DIR, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS_DIR, `${name}.png`), fullPage: false });
}

/** The current session id from the address (#/chat/<id>). */
export function sessionIdOf(page: Page): string | undefined {
  return /#\/chat\/([0-9a-f-]{36})/.exec(page.url())?.[1];
}
