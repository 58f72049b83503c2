// @ts-check
/* The sending side of keel train --serve (src/serve/mirror.ts starts it): a worker thread, so
   the HTTP exchanges go on while the training thread computes a step (a fetch on the training
   thread would only advance between steps). Plain JavaScript: a worker does not inherit the
   TypeScript loader. Messages in: start {create}, step {row}, eval {body}, checkpoint {body},
   close {ms}; out: warn {line}, closed {unsent}. */
import { parentPort, workerData } from 'node:worker_threads';

const TIMEOUT_MS = 2000;
const MAX_ROWS = 500; // per request (the server takes up to 1000)
const MAX_QUEUED = 100_000; // rows kept for a server that is away; older ones are dropped beyond

/** @type {{url: string, token: string}} */
const { url, token } = workerData;
/** @typedef {{route: 'log', rows: unknown[]} | {route: 'evals' | 'checkpoints', body: unknown}} Job */
/** @type {Job[]} */
const jobs = [];
/** @type {unknown} */
let create = null;
/** @type {number | null} */
let id = null;
let queued = 0;
let dropped = 0;
let sending = false;
let retryAt = 0;
let backoffMs = 1000;
let warned = false;
/** @type {string | null} */
let refused = null;
/** @type {NodeJS.Timeout | null} */
let timer = null;

class Refused extends Error {}

const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);
port.on('message', (/** @type {any} */ m) => {
  if (m.t === 'start') create = m.create;
  else if (m.t === 'step') addRow(m.row);
  else if (m.t === 'eval') jobs.push({ route: 'evals', body: m.body });
  else if (m.t === 'checkpoint') jobs.push({ route: 'checkpoints', body: m.body });
  else if (m.t === 'close') return close(m.ms);
  kick();
});

/** @param {unknown} row */
function addRow(row) {
  const last = jobs.at(-1);
  if (last && last.route === 'log' && last.rows.length < MAX_ROWS && !(sending && last === jobs[0])) last.rows.push(row);
  else jobs.push({ route: 'log', rows: [row] });
  queued += 1;
  if (queued > MAX_QUEUED && !sending) dropOldest();
}

function dropOldest() {
  const first = jobs.find((j) => j.route === 'log');
  if (first?.route !== 'log') return;
  first.rows.shift();
  if (first.rows.length === 0) jobs.splice(jobs.indexOf(first), 1);
  queued -= 1;
  dropped += 1;
}

function kick() {
  if (sending || refused !== null || create === null || (jobs.length === 0 && id !== null)) return;
  const wait = retryAt - performance.now();
  if (wait > 0) {
    timer ??= setTimeout(() => {
      timer = null;
      kick();
    }, wait);
    return;
  }
  sending = true;
  pump().finally(() => {
    sending = false;
    if (jobs.length > 0 && retryAt <= performance.now()) kick();
  });
}

/** Sends jobs in order until the queue is empty or the server fails (then back off). */
async function pump() {
  try {
    if (id === null) id = /** @type {{id: number}} */ (await post('/api/v1/runs', create)).id;
    while (jobs.length > 0) {
      const job = jobs[0];
      if (job.route === 'log') await post(`/api/v1/runs/${id}/log`, { rows: job.rows });
      else
        await post(`/api/v1/runs/${id}/${job.route}`, job.body).catch((e) => {
          if (!(e instanceof Refused)) throw e;
          warn(`keel serve at ${url} refused a ${job.route} entry (${e.message}); left out`); // the steps still go
        });
      jobs.shift();
      if (job.route === 'log') queued -= job.rows.length;
    }
    backoffMs = 1000;
  } catch (e) {
    if (e instanceof Refused) {
      refused = e.message;
      warn(`keel serve at ${url} refused the run's reports (${e.message}); training on without the dashboard`);
      return;
    }
    if (!warned) warn(`keel serve at ${url} is not answering (${/** @type {Error} */ (e).message}); training on, reports kept and sent when it is back`);
    warned = true;
    retryAt = performance.now() + backoffMs;
    backoffMs = Math.min(60_000, backoffMs * 2);
  }
}

/** @param {string} route @param {unknown} body */
async function post(route, body) {
  const res = await fetch(url + route, {
    method: 'POST',
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
  });
  const text = await res.text();
  if (res.status === 400 || res.status === 401 || res.status === 404) throw new Refused(`HTTP ${res.status}: ${text.slice(0, 300)}`);
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return JSON.parse(text);
}

/** @param {string} line */
function warn(line) {
  port.postMessage({ t: 'warn', line });
}

/** One last try to send what is queued (bounded by `ms`), then reports what was not sent. @param {number} ms */
async function close(ms) {
  const deadline = performance.now() + ms;
  if (timer) clearTimeout(timer);
  const idle = () => new Promise((r) => setTimeout(r, 10));
  while (sending) await idle();
  while (create !== null && refused === null && (jobs.length > 0 || id === null) && performance.now() < deadline) {
    retryAt = 0;
    kick();
    while (sending) await idle();
    if (retryAt > performance.now()) break; // the server is away: the run does not wait for it
  }
  port.postMessage({ t: 'closed', unsent: queued + dropped });
}
