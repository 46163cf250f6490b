// A real browser walks the single sign-on login (tests/e2e/test_sso_browser.py runs this).
//
//   node login.mjs PAGE_URL SCREENSHOT_PATH EXPECTED_TEXT [SESSION_COOKIE_NAME]
//
// Opens PAGE_URL (a protected page on the gateway) in Debian's Chromium (/usr/bin/chromium,
// driven by playwright-core, headless, a fresh profile), lets it follow the gateway's redirect
// to the test provider and back through the callback, waits for the origin's page, checks that
// its #who element shows EXPECTED_TEXT, saves a screenshot, and prints one JSON line:
// {"ok", "error", "final_url", "who", "title", "navigations": [{url, status}], "cookies": [...]}.
// Exit status 0 when ok. Every request to a host other than 127.0.0.1 or localhost is aborted.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [pageUrl, shotPath, expected, sessionCookie = 'portcullis_session'] = process.argv.slice(2);
if (!pageUrl || !shotPath || !expected) {
  console.error('usage: node login.mjs PAGE_URL SCREENSHOT_PATH EXPECTED_TEXT [SESSION_COOKIE_NAME]');
  process.exit(2);
}

const LOCAL = new Set(['127.0.0.1', 'localhost']);
const result = { ok: false, error: null, final_url: null, who: null, title: null, navigations: [], cookies: [], blocked: [] };
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-chromium-'));
let context;
let page;
const watchdog = setTimeout(() => {
  result.error = 'watchdog: the walk took more than 60 s';
  console.log(JSON.stringify(result));
  process.exit(1);
}, 60_000);

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: 30_000,
    viewport: { width: 1000, height: 700 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  // Nothing leaves this machine: only 127.0.0.1 and localhost are let through.
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    if (LOCAL.has(host)) return route.continue();
    result.blocked.push(route.request().url());
    return route.abort();
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('response', (resp) => {
    const req = resp.request();
    if (req.isNavigationRequest() && req.frame() === page.mainFrame()) {
      result.navigations.push({ url: resp.url(), status: resp.status(), location: resp.headers()['location'] ?? null });
    }
  });

  const resp = await page.goto(pageUrl, { waitUntil: 'load', timeout: 20_000 });
  await page.waitForSelector('#who', { timeout: 15_000 });
  result.final_url = page.url();
  result.title = await page.title();
  result.who = (await page.textContent('#who'))?.trim() ?? null;
  result.status = resp ? resp.status() : null;
  result.cookies = (await context.cookies()).map((c) => ({
    name: c.name, domain: c.domain, path: c.path, httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite,
    value_length: c.value.length,
  }));
  await page.screenshot({ path: shotPath, fullPage: true });

  const problems = [];
  if (!result.who || !result.who.includes(expected)) problems.push(`#who says ${JSON.stringify(result.who)}, expected ${JSON.stringify(expected)}`);
  if (result.final_url !== pageUrl) problems.push(`ended on ${result.final_url}, not ${pageUrl}`);
  const session = result.cookies.find((c) => c.name === sessionCookie);
  if (!session) problems.push(`no ${sessionCookie} cookie in the browser`);
  else if (!session.httpOnly || !session.secure || session.sameSite !== 'Lax') problems.push(`${sessionCookie} cookie attributes: ${JSON.stringify(session)}`);
  if (result.blocked.length) problems.push(`requests off this machine: ${result.blocked.join(', ')}`);
  result.ok = problems.length === 0;
  result.error = problems.join('; ') || null;
} catch (e) {
  result.error = String(e && e.stack || e);
  result.final_url = page ? page.url() : null;
  if (page) await page.screenshot({ path: shotPath, fullPage: true }).catch(() => {}); // what the browser saw
} finally {
  if (context) await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  clearTimeout(watchdog);
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
