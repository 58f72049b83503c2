/**
 * `keel serve`: the controller (src/control) behind HTTP for training runs that are not Keel's
 * own (PyTorch under torchrun, say), on node:http — the API is a handful of JSON routes, so a
 * framework would add more than it saves. API v1 (every call needs `Authorization: Bearer TOKEN`):
 *
 *   GET  /api/v1/health                     {ok, version, schema}
 *   POST /api/v1/runs                       {name, config?, policy, run, resume?, mirror?} → {id, resumed, attempt, batch, lr_multiplier}
 *   GET  /api/v1/runs                       {runs: [{id, name, created_at, config, mirror, reports, last_step}]}
 *   POST /api/v1/runs/:id/reports           {reports: [StepReport…]} → {decisions: [Decision…]} (idempotent per step and attempt)
 *   POST /api/v1/runs/:id/log               {rows: [{report, decision}…]} → {ok}: a mirrored run's own decisions (keel train --serve)
 *   POST /api/v1/runs/:id/checkpoints       {step, data, path?} → {ok}
 *   POST /api/v1/runs/:id/evals             {step, metrics: {val_loss, …}} → {ok}
 *   GET  /api/v1/runs/:id/metrics?max=N     {rows: [{report, decision}…], evals: [{step, metrics}…]} (rows downsampled to about N)
 *   GET  /api/v1/runs/:id/events            Server-Sent Events: {rows} and {evals} as they arrive
 *
 * The dashboard (/ and its scripts) logs a browser in with the one-time link keel serve prints,
 * which sets a session cookie; the API accepts that cookie in place of the token.
 *
 * Safety: loopback unless the host is given explicitly; the token compared in constant time;
 * Host (and Origin, when sent) must name this server, against DNS rebinding; bodies over
 * MAX_BODY are refused; a malformed request gets 400 naming the field, never a crash.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TSchema } from '@sinclair/typebox';
import { UserError } from '../errors.ts';
import type { Decision, StepReport } from '../control/types.ts';
import {
  CheckpointSchema,
  CreateRunSchema,
  EvalSchema,
  firstError,
  LogSchema,
  ReportsSchema,
  type CheckpointBody,
  type CreateRun,
  type EvalBody,
  type Log,
  type Reports,
} from './schemas.ts';
import { NotFound, SCHEMA_VERSION, Store } from './store.ts';
import { uplotAssets } from '../report/html.ts';

const API_VERSION = 1;
const MAX_BODY = 4 * 1024 * 1024;

export interface ServeOptions {
  host: string;
  port: number;
  db: string;
  /** Default: the database's token (made on first use and kept, so clients survive a restart). */
  token?: string;
  /** Replace the database's token with a fresh one. */
  newToken?: boolean;
}

export interface Serving {
  url: string;
  token: string;
  /** The dashboard's one-time login URL (it sets a session cookie, then stops working). */
  dashboard: string;
  server: http.Server;
  store: Store;
  /** Finishes in-flight requests, then closes the database. */
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The routes and their state: tokens, dashboard sessions, live event streams. */
class Api {
  allowedHosts = new Set<string>();
  readonly loginCodes = new Set<string>([crypto.randomBytes(16).toString('hex')]);
  private readonly sessions = new Set<string>();
  /** Live event streams per run id. */
  readonly streams = new Map<number, Set<http.ServerResponse>>();

  constructor(
    private readonly store: Store,
    private readonly tokenHash: Buffer,
  ) {}

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (!this.allowedHosts.has(String(req.headers.host ?? '').toLowerCase())) throw new HttpError(421, 'Host header does not name this server');
    const origin = req.headers.origin;
    if (origin !== undefined && !this.allowedHosts.has(origin.replace(/^https?:\/\//, '').toLowerCase())) throw new HttpError(403, 'Origin is not this server');
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] !== 'api') return this.page(req, res, url);
    const auth = String(req.headers.authorization ?? '');
    const given = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    if (!crypto.timingSafeEqual(sha256(given), this.tokenHash) && !this.hasSession(req)) throw new HttpError(401, 'missing or wrong bearer token');
    if (parts[1] !== `v${API_VERSION}`) throw new HttpError(404, `no route ${url.pathname} (API: /api/v${API_VERSION}/…)`);
    const route = parts.slice(2);
    const method = req.method ?? 'GET';
    if (method === 'GET' && route[0] === 'runs' && route[2] === 'events' && route.length === 3) return this.subscribe(req, res, Number(route[1]));
    const body = method === 'POST' ? await readJson(req) : undefined;
    reply(req, res, 200, this.dispatch(method, route, body, url.searchParams));
  }

  private dispatch(method: string, route: string[], body: unknown, query: URLSearchParams): unknown {
    const [a, idText, b] = route;
    const only = (m: string) => {
      if (method !== m) throw new HttpError(405, `${method} not allowed here (use ${m})`);
    };
    if (a === 'health' && route.length === 1) {
      only('GET');
      return { ok: true, version: API_VERSION, schema: SCHEMA_VERSION };
    }
    if (a !== 'runs') throw new HttpError(404, `no route /${route.join('/')}`);
    if (route.length === 1) {
      if (method === 'GET') return { runs: this.store.runs() };
      only('POST');
      const r = check<CreateRun>(CreateRunSchema, body);
      const { id, resumed } = userErrors(() => this.store.createRun(r.name, r.config ?? {}, r.policy, r.run, r.resume === true, r.mirror === true));
      const c = this.store.controller(id);
      return { id, resumed, batch: c.inEffect.batch, lr_multiplier: c.inEffect.lr_multiplier, attempt: c.attempt };
    }
    const id = Number(idText);
    if (!/^\d+$/.test(idText ?? '') || route.length !== 3) throw new HttpError(404, `no route /${route.join('/')}`);
    if (b === 'reports') {
      only('POST');
      const r = check<Reports>(ReportsSchema, body);
      const decisions = userErrors(() => this.store.report(id, r.reports));
      this.publish(id, { rows: r.reports.map((report, i) => ({ report, decision: decisions[i] })) });
      return { decisions };
    }
    if (b === 'log') {
      only('POST');
      const r = check<Log>(LogSchema, body);
      userErrors(() => this.store.mirror(id, r.rows as { report: StepReport; decision: Decision }[]));
      this.publish(id, { rows: r.rows });
      return { ok: true };
    }
    if (b === 'evals') {
      only('POST');
      const r = check<EvalBody>(EvalSchema, body);
      userErrors(() => this.store.evaluation(id, r.step, r.metrics));
      this.publish(id, { evals: [r] });
      return { ok: true };
    }
    if (b === 'checkpoints') {
      only('POST');
      const r = check<CheckpointBody>(CheckpointSchema, body);
      userErrors(() => this.store.checkpoint(id, r.step, r.data, r.path));
      return { ok: true };
    }
    if (b === 'metrics') {
      only('GET');
      const max = Number(query.get('max') ?? 2000);
      if (!(Number.isInteger(max) && max >= 1)) throw new HttpError(400, 'max: expected an integer ≥ 1');
      return { rows: userErrors(() => this.store.metrics(id, max)), evals: this.store.evals(id) };
    }
    throw new HttpError(404, `no route /${route.join('/')}`);
  }

  private hasSession(req: http.IncomingMessage): boolean {
    const m = /(?:^|;\s*)keel_session=([0-9a-f]+)/.exec(String(req.headers.cookie ?? ''));
    return m !== null && this.sessions.has(m[1]);
  }

  /** The dashboard: its login (a one-time code for a session cookie), the page and its scripts. */
  private page(req: http.IncomingMessage, res: http.ServerResponse, url: URL): void {
    const code = url.searchParams.get('login');
    if (url.pathname === '/' && code !== null) {
      if (!this.loginCodes.delete(code)) throw new HttpError(401, 'this login link was used already: restart keel serve for a new one');
      const session = crypto.randomBytes(24).toString('hex');
      this.sessions.add(session);
      res.writeHead(303, { location: '/', 'set-cookie': `keel_session=${session}; HttpOnly; SameSite=Strict; Path=/` });
      res.end();
      return;
    }
    if (!this.hasSession(req)) throw new HttpError(401, 'open the dashboard link keel serve printed (it logs this browser in)');
    const asset = DASHBOARD_ASSETS[url.pathname];
    if (!asset) throw new HttpError(404, `no page ${url.pathname}`);
    const [type, text] = asset();
    res.writeHead(200, {
      'content-type': type,
      'cache-control': 'no-store',
      'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'",
    });
    res.end(text);
  }

  /** Server-Sent Events: every report stored for the run from now on, with its decision. */
  private subscribe(req: http.IncomingMessage, res: http.ServerResponse, id: number): void {
    userErrors(() => this.store.controller(id));
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write(': keel\n\n');
    const set = this.streams.get(id) ?? new Set();
    this.streams.set(id, set.add(res));
    const beat = setInterval(() => res.write(': beat\n\n'), 15_000);
    req.on('close', () => {
      clearInterval(beat);
      set.delete(res);
    });
  }

  private publish(id: number, event: { rows?: unknown[]; evals?: unknown[] }): void {
    const text = `data: ${JSON.stringify(event)}\n\n`;
    for (const res of this.streams.get(id) ?? []) res.write(text);
  }
}

export async function serve(o: ServeOptions): Promise<Serving> {
  const store = new Store(o.db);
  const token = o.token ?? store.token(o.newToken === true);
  const api = new Api(store, sha256(token));
  const server = http.createServer((req, res) => {
    api.handle(req, res).catch((e: unknown) => {
      if (e instanceof HttpError) return reply(req, res, e.status, { error: e.message });
      process.stderr.write(`keel serve: ${req.method} ${req.url}: ${(e as Error).stack ?? String(e)}\n`); // a bug: say so, stay up
      reply(req, res, 500, { error: 'internal error' });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new UserError(`cannot listen on ${o.host}:${o.port}: ${e.code ?? e.message}`)));
    server.listen(o.port, o.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const hostPart = o.host.includes(':') ? `[${o.host}]` : o.host;
  const loopback = ['127.0.0.1', 'localhost', '::1'].includes(o.host);
  api.allowedHosts = new Set((loopback ? ['127.0.0.1', 'localhost', '[::1]'] : [hostPart]).map((h) => `${h}:${port}`.toLowerCase()));
  const base = `http://${hostPart}:${port}`;
  return {
    url: base,
    token,
    dashboard: `${base}/?login=${[...api.loginCodes][0]}`,
    server,
    store,
    close: () =>
      new Promise<void>((resolve) => {
        for (const set of api.streams.values()) for (const res of set) res.end();
        server.close(() => {
          store.close();
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}

const DASHBOARD_ASSETS: Record<string, () => [string, string]> = {
  '/': () => ['text/html; charset=utf-8', DASHBOARD_HTML],
  '/dashboard.js': () => ['text/javascript', fs.readFileSync(new URL('./dashboard.js', import.meta.url), 'utf8')],
  '/uplot.js': () => ['text/javascript', uplotAssets().js],
  '/uplot.css': () => ['text/css', uplotAssets().css],
};

const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keel: live runs</title>
<link rel="stylesheet" href="/uplot.css">
<style>body{font:14px system-ui,sans-serif;margin:0;display:flex}nav{width:16rem;padding:1rem;border-right:1px solid #e5e7eb}
nav li{cursor:pointer;padding:.2rem 0}main{flex:1;padding:1rem}table{border-collapse:collapse}td{padding:.1rem .5rem;border-bottom:1px solid #f1f5f9}</style>
</head><body><nav><h1>Keel</h1><ul id="runs"></ul></nav>
<main><h1 id="title">no run yet</h1><p id="status"></p><p>reports shown: <span id="last">0</span></p><div id="panels"></div>
<h2>Decisions</h2><table><thead><tr><th>step</th><th>attempt</th><th>decision</th><th>reason</th></tr></thead><tbody id="decisions"></tbody></table></main>
<script src="/uplot.js"></script><script type="module" src="/dashboard.js"></script></body></html>`;

function check<T>(schema: TSchema, body: unknown): T {
  const err = firstError(schema, body);
  if (err) throw new HttpError(400, err);
  return body as T;
}

/** The controller's and the store's refusals are the caller's mistakes: 400 (404 for an unknown run). */
function userErrors<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof NotFound) throw new HttpError(404, e.message);
    if (e instanceof UserError) throw new HttpError(400, e.message);
    throw e;
  }
}

function readJson(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        // Refuse; reply() discards the rest and closes the connection.
        reject(new HttpError(413, `body over ${MAX_BODY} bytes`));
        req.removeAllListeners('data');
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(new HttpError(400, 'body: not valid JSON'));
      }
    });
    req.on('error', reject);
  });
}

/** Answers; a request refused before its body was read has the rest discarded and its connection closed. */
function reply(req: http.IncomingMessage, res: http.ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const unread = !req.readableEnded;
  if (unread) req.resume();
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...(unread ? { connection: 'close' } : {}),
  });
  res.end(text);
}

function sha256(s: string): Buffer {
  return crypto.createHash('sha256').update(s).digest();
}
