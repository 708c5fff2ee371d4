// Drives the steering playground of `train-vector serve` in headless Chromium, as a person
// would: types a prompt, moves the multiplier slider with the keyboard, types an exact
// multiplier, generates, and reads the baseline and steered columns.
//
// Usage: node browser.mjs URL SCREENSHOT.png
//
// playwright-core is found through $TRAIN_VECTOR_NODE_MODULES (an npm --prefix directory or
// its node_modules) or Node's normal resolution; the browser is $CHROMIUM or /usr/bin/chromium.
// With $TRAIN_VECTOR_API_KEY set (a server started with --api-key) it types the key into the
// page's key box first.
//
// Exit codes: 0 and one JSON object on stdout
//   {"baseline": ..., "steered": ..., "multiplier": "1.5", "slider": "1.5", "title": ...};
// 1 when a check fails (the reason on stderr); 3 when Chromium or playwright-core is missing
// ("skipped: <why>" on stderr).

import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const PROMPT = "Mira put the red ball in the basket";
const MAX_TOKENS = "12";
const SEED = "3";
const EXACT = "1.5";
const ARROW_PRESSES = 4; // 0.5 + 4 × 0.05
const VIEWPORT = { width: 1366, height: 768 };
const DONE_TIMEOUT_MS = 60_000;
const OVERALL_TIMEOUT_MS = 150_000;

class Skip extends Error {}

function fail(message) {
  throw new Error(message);
}

function loadPlaywright() {
  const require = createRequire(import.meta.url);
  const dir = process.env.TRAIN_VECTOR_NODE_MODULES;
  const tries = [];
  if (dir) {
    tries.push(() => require(require.resolve("playwright-core", { paths: [path.resolve(dir)] })));
    tries.push(() => require(path.resolve(dir, "playwright-core")));
  }
  tries.push(() => require("playwright-core"));
  const errors = [];
  for (const t of tries) {
    try {
      return t();
    } catch (e) {
      errors.push(e.code || e.message);
    }
  }
  throw new Skip(
    "playwright-core not found (set TRAIN_VECTOR_NODE_MODULES to where `npm install --prefix DIR playwright-core` put it): " +
      errors.join("; "),
  );
}

async function run(url, screenshot) {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!fs.existsSync(executablePath)) throw new Skip(`no Chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM)`);
  const { chromium } = loadPlaywright();

  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const context = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1 });
    const page = await context.newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error") process.stderr.write(`browser console: ${m.text()}\n`);
    });

    const response = await page.goto(url, { waitUntil: "load" });
    if (!response || !response.ok()) fail(`GET ${url} answered ${response ? response.status() : "nothing"}`);

    // A server started with --api-key asks for it first; the page keeps it for the session.
    await page.waitForSelector(".vector-row, #key-box.needed", { timeout: 15_000 }).catch(() => {});
    if (await page.isVisible("#key-box.needed")) {
      const key = process.env.TRAIN_VECTOR_API_KEY;
      if (!key) fail("the server asks for an API key; set TRAIN_VECTOR_API_KEY");
      await page.fill("#api-key", key);
      await page.click("#key-save");
    }

    // The vector list has loaded once a row exists.
    await page.waitForSelector(".vector-row", { timeout: 15_000 }).catch(async () => {
      fail(`no .vector-row appeared; #status says ${JSON.stringify(await page.textContent("#status"))}`);
    });

    if (await page.isChecked("#chat")) await page.uncheck("#chat");
    await page.fill("#prompt", PROMPT);
    await page.fill("#max-tokens", MAX_TOKENS);
    await page.fill("#temperature", "0");
    await page.fill("#seed", SEED);

    const row = page.locator(".vector-row").first();
    const slider = row.locator(".mult-slider");
    const number = row.locator(".mult-number");
    const vector = await row.locator("select.vector").inputValue();
    if (vector !== "tom") fail(`the first row's vector is ${JSON.stringify(vector)}, not "tom"`);

    // The slider, moved with the keyboard: the number follows it.
    const before = await slider.inputValue();
    await slider.focus();
    for (let i = 0; i < ARROW_PRESSES; i++) await page.keyboard.press("ArrowRight");
    const moved = await slider.inputValue();
    const expected = Math.round((parseFloat(before) + ARROW_PRESSES * 0.05) * 100) / 100;
    if (Math.abs(parseFloat(moved) - expected) > 1e-9)
      fail(`ArrowRight ×${ARROW_PRESSES} moved the slider from ${before} to ${moved}, not ${expected}`);
    const numberAfterKeys = await number.inputValue();
    if (numberAfterKeys !== moved)
      fail(`after the arrow keys the number reads ${JSON.stringify(numberAfterKeys)}, the slider ${JSON.stringify(moved)}`);

    // The exact number, typed: the slider follows it.
    await number.click();
    await page.keyboard.press("Control+A");
    await page.keyboard.type(EXACT);
    const multiplier = await number.inputValue();
    const sliderValue = await slider.inputValue();
    if (multiplier !== EXACT) fail(`the number reads ${JSON.stringify(multiplier)} after typing ${EXACT}`);
    if (sliderValue !== EXACT) fail(`the slider reads ${JSON.stringify(sliderValue)} after typing ${EXACT} in the number`);

    await page.click("#generate");
    try {
      await page.waitForFunction(
        () => {
          const s = document.getElementById("status");
          return s.textContent === "done" || s.classList.contains("error");
        },
        null,
        { timeout: DONE_TIMEOUT_MS },
      );
    } catch (e) {
      fail(`#status did not read "done" within ${DONE_TIMEOUT_MS / 1000} s; it says ${JSON.stringify(await page.textContent("#status"))}`);
    }
    const status = await page.textContent("#status");
    if (status !== "done") fail(`#status says ${JSON.stringify(status)}`);

    const columns = await page.$$eval("#outputs .column", (cols) =>
      cols.map((c) => ({
        kind: c.dataset.kind,
        done: c.dataset.done,
        title: c.querySelector("h2").textContent,
        text: c.querySelector(".text").textContent,
        meta: c.querySelector(".meta").textContent,
      })),
    );
    if (columns.length !== 2) fail(`expected 2 columns, found ${columns.length}: ${JSON.stringify(columns)}`);
    const baseline = columns.find((c) => c.kind === "baseline");
    const steered = columns.find((c) => c.kind === "steered");
    if (!baseline || !steered) fail(`expected a baseline and a steered column: ${JSON.stringify(columns)}`);
    for (const c of columns)
      if (c.done !== "1") fail(`the ${c.kind} column is not marked done: ${JSON.stringify(c)}`);
    if (baseline.text === steered.text)
      fail(`the baseline and the steered (×${EXACT}) columns read the same: ${JSON.stringify(baseline.text)}`);
    if (!steered.title.includes(EXACT)) fail(`the steered column's header ${JSON.stringify(steered.title)} does not show ${EXACT}`);
    if (pageErrors.length) fail(`the page threw: ${pageErrors.join("; ")}`);

    await page.screenshot({ path: screenshot, fullPage: true });

    return {
      baseline: baseline.text,
      steered: steered.text,
      multiplier,
      slider: sliderValue,
      title: steered.title,
    };
  } finally {
    await browser.close();
  }
}

async function main() {
  const [url, screenshot] = process.argv.slice(2);
  if (!url || !screenshot) {
    process.stderr.write("usage: node browser.mjs URL SCREENSHOT.png\n");
    return 1;
  }
  const guard = setTimeout(() => {
    process.stderr.write(`browser: gave up after ${OVERALL_TIMEOUT_MS / 1000} s\n`);
    process.exit(1);
  }, OVERALL_TIMEOUT_MS);
  guard.unref();
  try {
    const result = await run(url, screenshot);
    process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  } catch (e) {
    if (e instanceof Skip) {
      process.stderr.write(`skipped: ${e.message}\n`);
      return 3;
    }
    process.stderr.write(`browser: ${e.message}\n`);
    return 1;
  }
}

process.exitCode = await main();
