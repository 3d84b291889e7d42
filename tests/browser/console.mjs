// The web console (SPEC §11) in a real browser, as people use it. Run by
// console.sh, which starts the gateway and passes (environment):
//   CONSOLE_READY       the server's --ready-file ({"smtp","http"})
//   CONSOLE_OWNER_TOKEN the owner's API token (for checks through the API)
//   CONSOLE_AGENT_LINK  a sign-in link path for the agent (/app/login/…)
//   CONSOLE_ADMIN_LINK  a sign-in link path for the owner
//   CONSOLE_DATA_DIR    the server's data_dir (outbound maildir in sent/)
//   CONSOLE_RECORDS     the stub DNS's records file (JSON {name: text})
//   CONSOLE_ARTIFACTS   where the screenshots go
//   CONSOLE_CHROMIUM    the browser (Debian's chromium)
//   CONSOLE_PROFILE     a fresh user-data-dir
// Only 127.0.0.1 is contacted. Prints `N passed, M failed` last.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { apiClient, check, finish, sleep, smtpSend } from './lib.mjs';

const env = process.env;
const ready = JSON.parse(fs.readFileSync(env.CONSOLE_READY, 'utf8'));
const HTTP = `http://${ready.http}`;
const TOKEN = env.CONSOLE_OWNER_TOKEN;

const api = apiClient(HTTP, TOKEN);

// Waits for `fn` to return a truthy value (polling); the value, or null
// after `ms`.
async function waitFor(fn, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) return null;
    await sleep(100);
  }
}

// Checks every page alike: labels on fields, no horizontal scrolling at
// the current width, no CSP violation, no dialog.
async function pageChecks(page, name, problems) {
  const unlabeled = await page.evaluate(() =>
    [...document.querySelectorAll('input, select, textarea')]
      .filter((el) => !['hidden', 'submit', 'button'].includes(el.type) && !el.hidden)
      .filter((el) => {
        if (el.getAttribute('aria-label') || el.closest('label')) return false;
        return !(el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`));
      })
      .map((el) => el.name || el.id || el.outerHTML.slice(0, 60)),
  );
  check(`${name}: every field has a label`, unlabeled.length === 0, unlabeled.join(', '));
  const csrfless = await page.evaluate(() =>
    [...document.querySelectorAll('form[method=post], form[method=POST]')]
      .filter((f) => !f.querySelector('input[name=csrf]'))
      .map((f) => f.getAttribute('action')),
  );
  check(`${name}: every form carries a CSRF token`, csrfless.length === 0, csrfless.join(', '));
  check(`${name}: no CSP violation, no dialog`, problems.length === 0, problems.join(' | '));
}

async function screenshots(page, name) {
  await page.setViewportSize({ width: 1440, height: 900 });
  const wide = path.join(env.CONSOLE_ARTIFACTS, `console-${name}.png`);
  await page.screenshot({ path: wide, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  const narrow = path.join(env.CONSOLE_ARTIFACTS, `console-${name}-narrow.png`);
  await page.screenshot({ path: narrow, fullPage: true });
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  check(`${name}: no horizontal scrolling at 390px`, overflow <= 0, `${overflow}px`);
  await page.setViewportSize({ width: 1440, height: 900 });
}

async function signIn(page, link, who) {
  await page.goto(`${HTTP}${link}`, { waitUntil: 'load' });
  check(`${who}: the sign-in link asks before it signs in`, (await page.locator('#use-link').count()) === 1);
  await Promise.all([page.waitForURL(`${HTTP}/app/`), page.click('#use-link')]);
  check(`${who}: signed in by link`, page.url() === `${HTTP}/app/`, page.url());
}

function submitButton(page, formSelector, label) {
  return page.locator(`${formSelector} button[type=submit]`, { hasText: label }).first();
}

async function agentPart(context) {
  const page = await context.newPage();
  const problems = [];
  page.on('dialog', async (d) => {
    problems.push(`dialog: ${d.message()}`);
    await d.dismiss();
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy|Refused to/i.test(msg.text())) problems.push(msg.text());
  });

  const parent = await api('PUT', '/api/parents/T-5001', {
    subject: 'Order 5001 has not arrived',
    requester: { name: 'Rita Requester', email: 'rita@customer.example' },
  });
  check('parent upserted through the API', parent.status === 201 || parent.status === 200, JSON.stringify(parent.json));

  await signIn(page, env.CONSOLE_AGENT_LINK, 'agent');
  await pageChecks(page, 'inbox', problems);
  await screenshots(page, 'inbox');

  // Keyboard: the first Tab reaches the skip link, and Enter on it moves
  // focus to the content.
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => document.activeElement && document.activeElement.textContent.trim());
  check('keyboard: Tab reaches "Skip to content" first', first === 'Skip to content', first);

  // Start with two recipients from the parent's page.
  await page.goto(`${HTTP}/app/parents/T-5001`, { waitUntil: 'load' });
  check('the parent page shows the ticket', (await page.locator('body').innerText()).includes('Order 5001 has not arrived'));
  await pageChecks(page, 'parent', problems);
  await page.goto(`${HTTP}/app/parents/T-5001/new`, { waitUntil: 'load' });
  await pageChecks(page, 'start', problems);
  await screenshots(page, 'start');
  await page.fill('[name=to]', 'vic@carrier.example, amy@carrier.example');
  await page.fill('[name=subject]', 'Pallet 7 delayed at the Rotterdam depot');
  await page.fill('[name=body_text]', 'Hello Vic and Amy,\n\nWhere is pallet 7 of order 5001?\n\nThanks,\nAda');
  const share = page.locator('[name=share_portal_link]');
  if ((await share.count()) > 0 && !(await share.isChecked())) await share.check();
  await Promise.all([
    page.waitForURL(/\/app\/side-conversations\/\d+/),
    submitButton(page, 'form', /start|send/i).click(),
  ]);
  const id = Number(page.url().match(/side-conversations\/(\d+)/)[1]);
  check('started: on the new thread', id > 0, page.url());
  const sc = (await api('GET', `/api/side-conversations/${id}`)).json;
  check(
    'two recipients through the API',
    sc.participants && sc.participants.includes('vic@carrier.example') && sc.participants.includes('amy@carrier.example'),
    JSON.stringify(sc.participants),
  );
  await pageChecks(page, 'thread', problems);

  // A vendor reply arrives while the page is open: shown without reload.
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  const reply = [
    'From: Vic Vendor <vic@carrier.example>',
    `To: ${sc.reply_address}`,
    'Subject: Re: Pallet 7 delayed at the Rotterdam depot',
    `Message-ID: <live.${Date.now()}@carrier.example>`,
    `In-Reply-To: ${sc.messages[0].message_id ? `<${sc.messages[0].message_id}>` : ''}`,
    'Content-Type: text/plain; charset=utf-8',
    '',
    'The pallet left Rotterdam at 09:40. <script>alert(1)</script>',
    '',
  ].join('\n');
  await smtpSend(ready.smtp, 'vic@carrier.example', sc.reply_address, reply);
  const shown = await page
    .waitForFunction(() => document.body.innerText.includes('The pallet left Rotterdam at 09:40'), null, { timeout: 30000 })
    .then(() => true)
    .catch(() => false);
  check('the vendor reply appears without a reload', shown);
  check('... in the same document (no navigation)', await page.evaluate(() => window.__sameDocument === true));
  check('hostile markup in the reply shows as text', (await page.locator('body').innerText()).includes('<script>alert(1)</script>'));
  check('no script from mail in the DOM', (await page.evaluate(() => document.querySelectorAll('script:not([src])').length)) === 0);
  await screenshots(page, 'thread');

  // Follow up.
  await page.goto(page.url().split('?')[0], { waitUntil: 'load' });
  const followUp = page.locator('form[action$="/messages"]');
  await followUp.locator('[name=body_text]').fill('Thanks Vic, we will tell the customer.');
  await Promise.all([page.waitForLoadState('load'), followUp.locator('button[type=submit]').first().click()]);
  const afterFollowUp = await waitFor(async () => {
    const t = (await api('GET', `/api/side-conversations/${id}`)).json;
    return t.messages && t.messages.some((m) => m.direction === 'out' && (m.text || '').includes('we will tell the customer')) ? t : null;
  });
  check('the follow-up is on the thread', !!afterFollowUp);

  // Close.
  await page.goto(`${HTTP}/app/side-conversations/${id}`, { waitUntil: 'load' });
  await Promise.all([page.waitForLoadState('load'), page.locator('form[action$="/close"] button[type=submit]').click()]);
  const closed = await waitFor(async () => (await api('GET', `/api/side-conversations/${id}`)).json.status === 'closed');
  check('closed from the console', !!closed);
  check('the page says it is closed', /closed/i.test(await page.locator('body').innerText()));

  // The rest of the agent's pages, for the screenshots.
  for (const [p, name] of [
    ['/app/parents/T-5001', 'parent'],
    ['/app/?filter=vendor', 'waiting'],
    ['/app/reports', 'reports'],
    ['/app/me', 'me'],
  ]) {
    await page.goto(`${HTTP}${p}`, { waitUntil: 'load' });
    await pageChecks(page, name, problems);
    await screenshots(page, name);
  }
  await page.close();
}

async function adminPart(context) {
  const page = await context.newPage();
  const problems = [];
  page.on('dialog', async (d) => {
    problems.push(`dialog: ${d.message()}`);
    await d.dismiss();
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy|Refused to/i.test(msg.text())) problems.push(msg.text());
  });
  await signIn(page, env.CONSOLE_ADMIN_LINK, 'admin');

  // Add a sender address.
  await page.goto(`${HTTP}/app/admin/senders`, { waitUntil: 'load' });
  await pageChecks(page, 'senders', problems);
  await page.fill('[name=email]', 'support@acme.example');
  const name = page.locator('[name=name]');
  if ((await name.count()) > 0) await name.first().fill('Acme Support');
  await Promise.all([
    page.waitForURL(/\/app\/admin\/senders\/.+/),
    submitButton(page, 'form', /add/i).click(),
  ]);
  check('the sender page opens after adding', page.url().includes('support'), page.url());
  await pageChecks(page, 'sender', problems);
  await screenshots(page, 'sender');

  // The records shown, published on the local DNS server.
  const sender = (await api('GET', '/api/senders/support@acme.example')).json;
  // What a person sees: the text and the values of the copy fields.
  const shownText = await page.evaluate(() =>
    document.body.innerText + '\n' + [...document.querySelectorAll('input, textarea')].map((e) => e.value).join('\n'),
  );
  const records = {};
  for (const k of ['spf', 'dkim', 'dmarc']) {
    const c = sender.dns && sender.dns[k];
    if (c && c.record_to_publish) {
      check(`the page shows the ${k} record to publish, at ${c.record_name}`,
        shownText.includes(c.record_to_publish) && shownText.includes(c.record_name));
      records[c.record_name] = c.record_to_publish;
    }
  }
  check('three records to publish', Object.keys(records).length === 3, JSON.stringify(Object.keys(records)));
  fs.writeFileSync(env.CONSOLE_RECORDS, JSON.stringify(records));
  await Promise.all([page.waitForLoadState('load'), page.locator('form[action$="/check"] button[type=submit]').click()]);
  const passing = await waitFor(async () => {
    const s = (await api('GET', '/api/senders/support@acme.example')).json;
    return s.dns && ['spf', 'dkim', 'dmarc'].every((k) => s.dns[k].status === 'pass') ? s : null;
  }, 20000);
  check('after the re-check every record passes', !!passing, JSON.stringify((await api('GET', '/api/senders/support@acme.example')).json.dns));
  await page.goto(`${HTTP}/app/admin/senders/${encodeURIComponent('support@acme.example')}`, { waitUntil: 'load' });
  const badges = await page.locator('.badge.pass').count();
  check('the page shows the passing status', badges >= 3, `${badges} pass badges`);

  // Verify by the code from the verification email.
  const code = await waitFor(() => {
    const dir = path.join(env.CONSOLE_DATA_DIR, 'sent', 'new');
    if (!fs.existsSync(dir)) return null;
    // Adding sent one code and "Check again" a new one; only the newest
    // works.
    const codes = [];
    for (const f of fs.readdirSync(dir).sort()) {
      const raw = fs.readFileSync(path.join(dir, f), 'latin1');
      const m = raw.includes('Delivered-To: support@acme.example') && raw.match(/Verification code: (\d{6})/);
      if (m) codes.push(m[1]);
    }
    return codes.length >= 2 ? codes[codes.length - 1] : null;
  });
  check('the verification email reached the maildir', !!code);
  if (code) {
    await page.fill('[name=code]', code);
    await Promise.all([page.waitForLoadState('load'), page.locator('form:has([name=code]) button[type=submit]').click()]);
    const verified = await waitFor(async () => (await api('GET', '/api/senders/support@acme.example')).json.status === 'verified');
    check('verified by code from the console', !!verified);
  }
  await screenshots(page, 'sender-verified');

  for (const [p, n] of [
    ['/app/unrouted', 'unrouted'],
    ['/app/admin/settings', 'settings'],
    ['/app/admin/templates', 'templates'],
    ['/app/admin/webhooks', 'webhooks'],
    ['/app/admin/users', 'users'],
    ['/app/admin/audit', 'audit'],
  ]) {
    const resp = await page.goto(`${HTTP}${p}`, { waitUntil: 'load' });
    check(`${n}: the page loads`, resp && resp.status() === 200, resp && String(resp.status()));
    await pageChecks(page, n, problems);
    await screenshots(page, n);
  }
  await page.close();
}

async function main() {
  const context = await chromium.launchPersistentContext(env.CONSOLE_PROFILE, {
    executablePath: env.CONSOLE_CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1440, height: 900 },
  });
  try {
    await agentPart(context);
  } catch (e) {
    check('the agent part ran to the end', false, e && e.stack ? e.stack : String(e));
  }
  await context.clearCookies();
  try {
    await adminPart(context);
  } catch (e) {
    check('the admin part ran to the end', false, e && e.stack ? e.stack : String(e));
  }
  await context.close();
}

try {
  await main();
} catch (e) {
  check('browser test ran to the end', false, e && e.stack ? e.stack : String(e));
}
finish();
