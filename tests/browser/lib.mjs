// What the browser tests share: the pass/fail tally, an API client, and a
// small SMTP client (one message, every reply checked). Only 127.0.0.1 is
// contacted.
import net from 'node:net';

let passed = 0;
let failed = 0;

export function check(name, ok, detail = '') {
  if (ok) {
    passed++;
    console.log(`ok   ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}${detail ? `: ${detail}` : ''}`);
  }
  return ok;
}

// Prints the tally and exits non-zero on any failure (or none run).
export function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed > 0 || passed === 0 ? 1 : 0);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// `api(method, path, body)` against base URL `http` as the bearer `token`.
export function apiClient(http, token) {
  return async function api(method, p, body) {
    const resp = await fetch(`${http}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: resp.status, json };
  };
}

export function smtpSend(addr, from, rcpt, data) {
  const host = addr.slice(0, addr.lastIndexOf(':'));
  const port = Number(addr.slice(addr.lastIndexOf(':') + 1));
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    sock.setTimeout(20000, () => {
      sock.destroy();
      reject(new Error('SMTP timeout'));
    });
    let buf = '';
    const steps = [
      [null, '220'],
      ['EHLO browser-test.example', '250'],
      [`MAIL FROM:<${from}>`, '250'],
      [`RCPT TO:<${rcpt}>`, '250'],
      ['DATA', '354'],
      [data.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..') + '\r\n.', '250'],
      ['QUIT', '221'],
    ];
    let i = 0;
    const next = () => {
      if (i < steps.length && steps[i][0] !== null) sock.write(`${steps[i][0]}\r\n`);
    };
    sock.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      // A complete reply ends with a line whose 4th character is a space.
      for (;;) {
        const lines = buf.split('\r\n');
        const end = lines.findIndex((l) => /^\d{3}( |$)/.test(l));
        if (end < 0 || end === lines.length - 1) return;
        const reply = lines.slice(0, end + 1).join('\n');
        buf = lines.slice(end + 1).join('\r\n');
        if (!reply.startsWith(steps[i][1])) {
          sock.destroy();
          reject(new Error(`SMTP step ${i}: expected ${steps[i][1]}, got ${reply}`));
          return;
        }
        i++;
        if (i >= steps.length) {
          sock.end();
          resolve(reply);
          return;
        }
        next();
      }
    });
    sock.on('error', reject);
  });
}
