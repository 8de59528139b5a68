// make test-clients: /docs in a real browser. Headless Chromium (Debian's, $CHROMIUM) opens
// the page with no network but the server, finds every operation of /openapi.json rendered,
// creates a task through "Try it out", and saves a screenshot. Any console error, page error
// or content-security-policy violation fails it, as does a request to any other origin.
//
//   node scripts/clients/browser.mjs http://127.0.0.1:PORT SCREENSHOT.png
//
// Prints a line per check, then `N passed, N failed`.
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
let passed = 0;
let failed = 0;
function check(name, ok, detail = "") {
  if (ok) passed += 1;
  else failed += 1;
  console.log(`${ok ? "ok  " : "FAIL"}  browser: ${name}${ok || !detail ? "" : `: ${detail}`}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"], // CI runs as root
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  const offsite = [];
  page.on("console", (message) => message.type() === "error" && errors.push(message.text()));
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.addInitScript(() => {
    window.violations = [];
    document.addEventListener("securitypolicyviolation", (event) =>
      window.violations.push(`${event.violatedDirective} ${event.blockedURI}`));
  });
  await page.route("**/*", (route) => {
    if (new URL(route.request().url()).origin === base) return route.continue();
    offsite.push(route.request().url());
    return route.abort();
  });

  const loads = [];
  page.on("requestfinished", (request) => loads.push(request.sizes()));

  const document = await (await fetch(`${base}/openapi.json`)).json();
  const operations = Object.entries(document.paths).flatMap(([path, item]) =>
    Object.keys(item).filter((key) => key !== "parameters")
      .map((method) => `${method.toUpperCase()} ${path}`));
  await page.goto(`${base}/docs`);
  await page.waitForSelector(".opblock", { timeout: 20000 });
  const rendered = await page.$$eval(".opblock", (blocks) => blocks.map((block) =>
    `${block.querySelector(".opblock-summary-method")?.textContent} ` +
    `${block.querySelector(".opblock-summary-path")?.getAttribute("data-path")}`));
  const missing = operations.filter((operation) => !rendered.includes(operation));
  check(`all ${operations.length} operations rendered`, missing.length === 0, missing.join(", "));
  const sizes = await Promise.all(loads);
  const wire = sizes.reduce((sum, size) => sum + size.responseHeadersSize + size.responseBodySize, 0);
  check(`first load ${wire} bytes on the wire in ${sizes.length} responses (at most 600 KB)`,
    wire <= 600 * 1024);

  // "Try it out" on POST /tasks: the page sends the request, the server stores the task.
  const title = `from the browser ${Date.now()}`;
  const create = page.locator("#operations-tasks-createTask");
  await create.locator(".opblock-summary").click();
  await create.locator(".try-out__btn").click();
  // The example body arrives a moment after "Try it out": replace it once it is there.
  const body = create.locator("textarea.body-param__text");
  await page.waitForFunction((area) => area.value.includes("title"), await body.elementHandle());
  await body.fill(JSON.stringify({ title }));
  await create.locator("button.execute").click();
  const status = create.locator(".live-responses-table tbody .response-col_status");
  await status.waitFor({ timeout: 10000 });
  check("Try it out: POST /tasks answers 201", (await status.textContent()).trim() === "201",
    await status.textContent());
  const tasks = await (await fetch(`${base}/tasks?limit=100`)).json();
  check("the task it created is stored", tasks.some((task) => task.title === title));

  // The README's picture: the page's top, the operations listed.
  await create.locator(".opblock-summary").click();
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: screenshot });
  const violations = await page.evaluate(() => window.violations);
  check("0 content-security-policy violations", violations.length === 0, violations.join("; "));
  check("0 console errors", errors.length === 0, errors.join("; "));
  check("0 requests to any other origin", offsite.length === 0, offsite.join(", "));
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
