// The vendor portal in a real browser. Run by portal.sh, which starts the
// gateway and passes (environment):
//   PORTAL_READY       the server's --ready-file ({"smtp","http"})
//   PORTAL_API_TOKEN   an agent's API token
//   PORTAL_DATA_DIR    the server's data_dir (maildir in sent/)
//   PORTAL_ARTIFACTS   where the screenshots go
//   PORTAL_CHROMIUM    the browser (Debian's chromium)
//   PORTAL_PROFILE     a fresh user-data-dir
// Only 127.0.0.1 is contacted. Prints `N passed, M failed` last.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { apiClient, check, finish, sleep, smtpSend } from './lib.mjs';

const env = process.env;
const ready = JSON.parse(fs.readFileSync(env.PORTAL_READY, 'utf8'));
const HTTP = `http://${ready.http}`;
const TOKEN = env.PORTAL_API_TOKEN;

const api = apiClient(HTTP, TOKEN);

// The portal link, as the vendor gets it: from the outbound mail written to
// <data_dir>/sent/new/ by maildir delivery. A build without the outbox
// worker writes no file; then the same composed bytes are read from
// GET /api/messages/{id}/raw.
// The portal link in `recipient`'s own copy of the mail (each recipient's
// copy carries their own link, SPEC §8).
async function linkFromMail(messageId, recipient) {
  const dir = path.join(env.PORTAL_DATA_DIR, 'sent', 'new');
  let raw = null;
  let source = 'maildir';
  for (let i = 0; i < 50 && raw === null; i++) {
    if (fs.existsSync(dir)) {
      for (const f of fs.readdirSync(dir)) {
        const text = fs.readFileSync(path.join(dir, f), 'latin1');
        if (text.includes('/p/') && text.includes(`Delivered-To: ${recipient}\r\n`)) raw = text;
      }
    }
    if (raw === null) await sleep(100);
  }
  if (raw === null) {
    source = 'GET /api/messages/{id}/raw (no maildir delivery in this build)';
    const resp = await fetch(`${HTTP}/api/messages/${messageId}/raw`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    raw = await resp.text();
  }
  const m = raw.match(/https?:\/\/[^\s"<>]+\/p\/([a-z2-7]{32})/);
  return { link: m ? m[0] : null, token: m ? m[1] : null, source };
}

const HOSTILE_TEXT = 'Hi <script>alert(1)</script> and <img src=x onerror=alert(2)>';
const REPLY_TEXT = 'Thanks, Ada. The pallet left the Rotterdam depot at 09:40 this morning.\nTracking details are in the attached file.';

async function main() {
  // 1. An agent starts a side conversation with a portal link.
  const parent = await api('PUT', '/api/parents/T-4711', {
    subject: 'Order 4711 has not arrived',
    requester: { name: 'Rita Requester', email: 'rita@customer.example' },
  });
  check('parent upserted', parent.status === 201 || parent.status === 200, JSON.stringify(parent.json));
  const started = await api('POST', '/api/parents/T-4711/side-conversations', {
    to: ['vic@carrier.example', 'amy@carrier.example'],
    subject: 'Pallet 7 delayed at the Rotterdam depot',
    body_text:
      'Hello Vic,\n\nOur customer is still waiting for order 4711 (pallet 7).\nCould you tell us where it is and when it will be delivered?\n\nThanks,\nAda',
    share_portal_link: true,
  });
  if (!check('side conversation started', started.status === 201, JSON.stringify(started.json))) return;
  const sc = started.json;
  check('it has a portal link', typeof sc.portal_url === 'string' && sc.portal_url.includes('/p/'));

  // 2. The link as the vendor receives it.
  const mail = await linkFromMail(sc.messages[0].id, 'vic@carrier.example');
  console.log(`     link taken from ${mail.source}`);
  if (!check('the outbound mail carries the portal link', mail.link === sc.portal_url, `${mail.link} vs ${sc.portal_url}`)) return;
  const amy = await linkFromMail(sc.messages[0].id, 'amy@carrier.example');
  const amyLink = (sc.portal_links || []).find((l) => l.email === 'amy@carrier.example');
  check('each recipient\'s copy carries their own link', amy.link !== mail.link && amyLink && amy.link === amyLink.url, `${amy.link} vs ${mail.link}`);
  // public_url cannot name a port bound as :0: same path, bound address.
  const pageUrl = `${HTTP}/p/${mail.token}`;

  // 3. A hostile vendor reply over SMTP, as text and as HTML.
  const boundary = 'b-' + Date.now();
  const message = [
    'From: Vic Vendor <vic@carrier.example>',
    `To: ${sc.reply_address}`,
    'Subject: Re: Pallet 7 delayed at the Rotterdam depot',
    `Message-ID: <hostile.${Date.now()}@carrier.example>`,
    'MIME-Version: 1.0',
    `Content-Type: multipart/alternative; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    '',
    HOSTILE_TEXT,
    'See <a href="javascript:alert(3)">this link</a>.',
    '',
    'On Fri, 21 Nov 2026, Ada Agent <reply@gw.example.com> wrote:',
    '> Our customer is still waiting for order 4711 (pallet 7).',
    '> Could you tell us where it is and when it will be delivered?',
    `--${boundary}`,
    'Content-Type: text/html; charset=utf-8',
    '',
    '<p>Hi <script>alert(1)</script> and <img src=x onerror=alert(2)></p><p><a href="javascript:alert(3)">this link</a></p>',
    `--${boundary}--`,
    '',
  ].join('\n');
  try {
    await smtpSend(ready.smtp, 'vic@carrier.example', sc.reply_address, message);
    check('hostile vendor reply accepted over SMTP', true);
  } catch (e) {
    check('hostile vendor reply accepted over SMTP', false, String(e));
    return;
  }
  let thread = null;
  for (let i = 0; i < 100; i++) {
    thread = (await api('GET', `/api/side-conversations/${sc.id}`)).json;
    if (thread.messages && thread.messages.length >= 2) break;
    await sleep(100);
  }
  check('the reply is on the thread', thread.messages.length >= 2);

  // 4. The page in Chromium.
  const context = await chromium.launchPersistentContext(env.PORTAL_PROFILE, {
    executablePath: env.PORTAL_CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 900 },
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const dialogs = [];
    const cspErrors = [];
    page.on('dialog', async (d) => {
      dialogs.push(d.message());
      await d.dismiss();
    });
    page.on('console', (msg) => {
      if (msg.type() === 'error' && /Content Security Policy|Refused to/i.test(msg.text())) cspErrors.push(msg.text());
    });
    const resp = await page.goto(pageUrl, { waitUntil: 'load' });
    check('the page loads', resp && resp.status() === 200, resp && String(resp.status()));
    const headers = resp ? resp.headers() : {};
    check('CSP header sent', (headers['content-security-policy'] || '').includes("default-src 'none'"));
    check('no-referrer policy', headers['referrer-policy'] === 'no-referrer');
    check('title is the subject', (await page.title()) === 'Pallet 7 delayed at the Rotterdam depot');
    const text = await page.locator('body').innerText();
    check('hostile <script> shows as text', text.includes('<script>alert(1)</script>'));
    check('hostile <img onerror> shows as text', text.includes('<img src=x onerror=alert(2)>'));
    check('javascript: link shows as text', text.includes('<a href="javascript:alert(3)">'));
    const counts = await page.evaluate(() => ({
      scripts: document.querySelectorAll('script').length,
      imgs: document.querySelectorAll('img').length,
      jsLinks: [...document.querySelectorAll('a')].filter((a) => a.href.startsWith('javascript:')).length,
      radius: getComputedStyle(document.querySelector('.msg')).borderTopLeftRadius,
    }));
    check('no script, img or javascript: link in the DOM', counts.scripts === 0 && counts.imgs === 0 && counts.jsLinks === 0, JSON.stringify(counts));
    check('the hashed style sheet applies under the CSP', counts.radius === '14px', counts.radius);
    check('the agent message is shown', text.includes('Our customer is still waiting for order 4711'));
    check('no parent data beyond what was sent', !text.includes('rita@customer.example') && !text.includes('Order 4711 has not arrived'));
    const quoted = await page.evaluate(() => {
      const d = document.querySelector('details');
      return d ? { open: d.open, text: d.textContent } : null;
    });
    check('quoted history is folded away in <details>', quoted && !quoted.open && quoted.text.includes('Ada Agent <reply@gw.example.com> wrote:'), JSON.stringify(quoted));
    await sleep(300);
    check('no dialog fired', dialogs.length === 0, dialogs.join(', '));

    // 5. A reply with an attachment through the form.
    await page.fill('#text', REPLY_TEXT);
    // Vic's own link (SPEC §8): it replies as Vic, with no choice of identity.
    check('no choice of who to reply as', (await page.locator('select#email').count()) === 0);
    check('replying as the link\'s recipient', (await page.locator('form').innerText()).includes('vic@carrier.example'));
    await page.setInputFiles('#files', {
      name: 'tracking.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from('Pallet 7: departed Rotterdam 09:40, ETA 16:00\n'),
    });
    await Promise.all([page.waitForURL(/\?sent=1$/), page.click('button[type=submit]')]);
    check('the form posts and comes back', page.url().endsWith('?sent=1'), page.url());
    check('confirmation shown', (await page.locator('.notice').innerText()).includes('Your reply was sent.'));
    check('the reply is on the page', (await page.locator('body').innerText()).includes('left the Rotterdam depot at 09:40'));
    check('still no dialog', dialogs.length === 0, dialogs.join(', '));
    check('no CSP violation reported', cspErrors.length === 0, cspErrors.join(' | '));

    // 6. On the thread through the API.
    const after = (await api('GET', `/api/side-conversations/${sc.id}`)).json;
    const portalReply = after.messages.find((m) => m.route === 'portal' && m.direction === 'in');
    check('the portal reply is on the thread', !!portalReply);
    if (portalReply) {
      check('from the link\'s recipient, as a reply', portalReply.from.email === 'vic@carrier.example' && portalReply.kind === 'reply');
      check('its text is stored', (portalReply.text || '').includes('left the Rotterdam depot at 09:40'));
      check('its attachment is stored', portalReply.attachments.length === 1 && portalReply.attachments[0].filename === 'tracking.txt');
    }
    const copy = after.messages.find((m) => m.route === 'portal' && m.direction === 'out');
    check('a copy goes to the other participant', !!copy && copy.delivery.length === 1 && copy.delivery[0].recipient === 'amy@carrier.example');

    // 7. Screenshots, desktop and narrow.
    await page.goto(pageUrl, { waitUntil: 'load' });
    // Unfolded, so the screenshot shows the quoted history too.
    await page.locator('details').first().evaluate((d) => (d.open = true)).catch(() => {});
    const desktop = path.join(env.PORTAL_ARTIFACTS, 'portal.png');
    await page.screenshot({ path: desktop, fullPage: true });
    check('desktop screenshot saved', fs.statSync(desktop).size > 10000);
    await page.setViewportSize({ width: 390, height: 844 });
    const narrow = path.join(env.PORTAL_ARTIFACTS, 'portal-narrow.png');
    await page.screenshot({ path: narrow, fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    check('no horizontal scrolling at 390px', overflow <= 0, `${overflow}px`);
    console.log(`     screenshots: ${desktop}, ${narrow}`);
  } finally {
    await context.close();
  }
}

try {
  await main();
} catch (e) {
  check('browser test ran to the end', false, e && e.stack ? e.stack : String(e));
}
finish();
