// The live dashboard in a real browser (Debian's chromium driven by playwright-core): the
// one-time login link sets a session, a step posted through the API appears on the page within
// 2 s, a decision other than proceed is listed with its reason, and the panels follow what the
// run sends (validation, noise sums, diagnostics). Skipped, with the reason
// printed, where /usr/bin/chromium is not installed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import type { StepReport } from '../src/control/types.ts';
import { serve, type Serving } from '../src/serve/server.ts';
import { stepReport, tempRoot } from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const skip = fs.existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install chromium)`;
if (skip) console.log(`# skipping the dashboard tests: ${skip}`);

const { fresh } = tempRoot('dashboard');
let s: Serving | undefined;
let close: (() => Promise<void>) | undefined;
after(async () => {
  await close?.();
  await s?.close();
});

const report = (step: number, loss: number, extra: Partial<StepReport> = {}): StepReport =>
  stepReport(step, { loss, grad_norm: 1 + 0.01 * Math.sin(step), tokens: step * 64, batch: 4, ...extra });

async function post(route: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await fetch(`${s!.url}/api/v1${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${s!.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 200);
  return r.json() as Promise<Record<string, unknown>>;
}

test('dashboard: login link, live steps over SSE within 2 s, decisions listed with their reasons', { skip }, async () => {
  const { chromium } = await import('playwright-core');
  const dir = fresh('db');
  fs.mkdirSync(dir, { recursive: true });
  s = await serve({ host: '127.0.0.1', port: 0, db: path.join(dir, 'keel.db') });
  const { id } = await post('/runs', {
    name: 'live',
    policy: { on_spike: 'skip', spike_window: 4 },
    run: { steps: 100, batch: 4, micro_batch: 2, seq_len: 16, params: 10 },
  });
  await post(`/runs/${id}/reports`, { reports: [1, 2, 3, 4, 5].map((n) => report(n, 2 + 0.01 * n)) });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  close = () => browser.close();
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Without the login link: refused.
  const denied = await page.goto(`${s.url}/`);
  assert.equal(denied!.status(), 401);
  await page.goto(s.dashboard);
  assert.equal(new URL(page.url()).search, '', 'the login code leaves the address bar');
  await page.waitForFunction(() => document.getElementById('last')?.textContent === '5', undefined, { timeout: 5000 });
  assert.equal(await page.textContent('#title'), 'live');
  assert.equal((await page.locator('#panels canvas').count()) >= 3, true, 'loss, gradient norm and LR charts');
  // A step posted now shows up within 2 s; a spike that is skipped is listed with its reason.
  const t0 = performance.now();
  await post(`/runs/${id}/reports`, { reports: [report(6, 2.06)] });
  await page.waitForFunction(() => document.getElementById('last')?.textContent === '6', undefined, { timeout: 2000 });
  const ms = performance.now() - t0;
  assert.ok(ms < 2000, `${ms} ms`);
  await post(`/runs/${id}/reports`, { reports: [report(7, 40)] });
  await page.waitForFunction(() => document.getElementById('decisions')?.textContent?.includes('skip'), undefined, { timeout: 2000 });
  assert.match((await page.textContent('#decisions')) ?? '', /7.*skip.*loss spike at step 7/);
  const titles = () => page.$$eval('#panels section', (els) => els.map((e) => (e as HTMLElement).dataset.panel));
  assert.deepEqual(await titles(), ['loss', 'gradient norm', 'learning rate', 'batch size (sequences)']);
  // Noise sums, diagnostics and an evaluation add their panels and series live.
  const noise = { g_small_sq: 2, g_big_sq: 1.2, b_small: 2, b_big: 4 };
  await post(`/runs/${id}/reports`, { reports: [report(8, 2.05, { noise, diag: { diag_update_rms: 0.01, diag_eps_frac: 0.2 } })] });
  await post(`/runs/${id}/evals`, { step: 8, metrics: { val_loss: 2.1 } });
  await page.waitForFunction(() => document.querySelectorAll('#panels section').length === 6, undefined, { timeout: 2000 });
  assert.deepEqual(await titles(), ['loss', 'gradient norm', 'learning rate', 'batch size (sequences)', 'noise scale B_simple (sequences)', 'diagnostics']);
  assert.match((await page.textContent('#panels section[data-panel="diagnostics"]')) ?? '', /diag_update_rms.*diag_eps_frac/s);
  assert.match((await page.textContent('#panels section[data-panel="loss"]')) ?? '', /validation/);
  // The login link is one-time.
  const again = await (await browser.newPage()).goto(s.dashboard);
  assert.equal(again!.status(), 401);
  assert.deepEqual(errors, []);
});
