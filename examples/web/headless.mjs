#!/usr/bin/env node
/**
 * Drive pages in headless Chromium with puppeteer-core: the browser tests' remote control (tests/test_web.py).
 *
 *   cd examples/web && PUPPETEER_SKIP_DOWNLOAD=1 npm ci
 *   node headless.mjs [--browser /usr/bin/chromium]
 *
 * Reads one JSON command per line on stdin, answers one JSON line on stdout: {"ok": true, "value": ...}
 * or {"ok": false, "error": "..."}. Commands (one page, reused):
 *   {"cmd": "goto", "url": U}                          load U and wait until <body data-state> is not "loading"/"busy"
 *   {"cmd": "eval", "js": EXPR}                        the (awaited) value of a JavaScript expression in the page
 *   {"cmd": "wait", "js": EXPR, "timeout": MS}         until EXPR is truthy
 *   {"cmd": "type", "selector": S, "text": T, "enter": true}   replace an input's text like a user, then Enter
 *   {"cmd": "select", "selector": S, "value": V}       choose an option of a <select>
 *   {"cmd": "screenshot", "path": P}                   a PNG of the viewport
 *   {"cmd": "log"}                                     console messages and page errors so far (then cleared)
 * The browser is the system's (never downloaded), started with a fresh profile and every background
 * service off, so it makes no connection but to the page's own origin.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import puppeteer from "puppeteer-core";

const { values } = parseArgs({ options: { browser: { type: "string", default: "/usr/bin/chromium" } } });
const SETTLED = `["ready", "error"].includes(document.body?.dataset.state)`;
const profile = mkdtempSync(join(tmpdir(), "edgevae-chromium-"));
const log = [];

let browser;
try {
  browser = await puppeteer.launch({
    executablePath: values.browser,
    headless: true, // --headless
    userDataDir: profile, // a fresh --user-data-dir
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
    defaultViewport: { width: 1280, height: 900 },
  });
} catch (e) {
  rmSync(profile, { recursive: true, force: true });
  console.error(`cannot start ${values.browser}: ${String(e.message).split("\n")[0]}`);
  process.exit(1);
}
const page = await browser.newPage();
page.on("console", (m) => log.push(`console.${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
page.on("requestfailed", (r) => log.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));

const commands = {
  goto: async ({ url, timeout = 60000 }) => {
    await page.goto(url, { waitUntil: "load", timeout });
    await page.waitForFunction(SETTLED, { timeout, polling: 50 });
  },
  eval: async ({ js }) => page.evaluate(`(async () => (${js}))()`),
  wait: async ({ js, timeout = 60000 }) => {
    await page.waitForFunction(js, { timeout, polling: 50 });
  },
  type: async ({ selector, text, enter = false }) => {
    await page.$eval(selector, (input) => {
      input.focus();
      input.value = ""; // as after select-all and delete
    });
    await page.type(selector, text);
    if (enter) await page.keyboard.press("Enter");
  },
  select: async ({ selector, value }) => page.select(selector, value),
  screenshot: async ({ path }) => {
    await page.screenshot({ path });
  },
  log: async () => log.splice(0),
};

async function close() {
  await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  let reply;
  try {
    const command = JSON.parse(line);
    const run = commands[command.cmd];
    if (!run) throw new Error(`unknown command ${JSON.stringify(command.cmd)}`);
    reply = { ok: true, value: (await run(command)) ?? null };
  } catch (e) {
    reply = { ok: false, error: String(e.message ?? e).split("\n")[0] };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
await close();
