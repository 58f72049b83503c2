/**
 * `keel serve`: the controller (src/control) behind HTTP for training runs that are not Keel's
 * own (PyTorch under torchrun, say), on node:http — the API is a handful of JSON routes, so a
 * framework would add more than it saves. API v1 (every call needs `Authorization: Bearer TOKEN`):
 *
 *   GET  /api/v1/health                     {ok, version, schema}
 *   POST /api/v1/runs                       {name, config?, policy, run, resume?} → {id, resumed, batch, lr_multiplier}
 *   GET  /api/v1/runs                       {runs: [{id, name, created_at, config, reports, last_step}]}
 *   POST /api/v1/runs/:id/reports           {reports: [StepReport…]} → {decisions: [Decision…]} (idempotent per step and attempt)
 *   POST /api/v1/runs/:id/checkpoints       {step, data, path?} → {ok}
 *   GET  /api/v1/runs/:id/metrics?max=N     {rows: [{report, decision}…]} (downsampled to about N)
 *
 * Safety: loopback unless the host is given explicitly; the token compared in constant time;
 * Host (and Origin, when sent) must name this server, against DNS rebinding; bodies over
 * MAX_BODY are refused; a malformed request gets 400 naming the field, never a crash.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TSchema } from '@sinclair/typebox';
import { UserError } from '../errors.ts';
import { CheckpointSchema, CreateRunSchema, firstError, ReportsSchema, type CheckpointBody, type CreateRun, type Reports } from './schemas.ts';
import { NotFound, SCHEMA_VERSION, Store } from './store.ts';

export const API_VERSION = 1;
export const MAX_BODY = 4 * 1024 * 1024;

export interface ServeOptions {
  host: string;
  port: number;
  db: string;
  /** Default: a fresh random token. */
  token?: string;
}

export interface Serving {
  url: string;
  token: string;
  server: http.Server;
  store: Store;
  /** Finishes in-flight requests, then closes the database. */
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export async function serve(o: ServeOptions): Promise<Serving> {
  const store = new Store(o.db);
  const token = o.token ?? crypto.randomBytes(24).toString('hex');
  const tokenHash = sha256(token);
  let allowedHosts = new Set<string>();
  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (e instanceof HttpError) return reply(req, res, e.status, { error: e.message });
      process.stderr.write(`keel serve: ${req.method} ${req.url}: ${(e as Error).stack ?? String(e)}\n`); // a bug: say so, stay up
      reply(req, res, 500, { error: 'internal error' });
    });
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (!allowedHosts.has(String(req.headers.host ?? '').toLowerCase())) throw new HttpError(421, 'Host header does not name this server');
    const origin = req.headers.origin;
    if (origin !== undefined && !allowedHosts.has(origin.replace(/^https?:\/\//, '').toLowerCase())) throw new HttpError(403, 'Origin is not this server');
    const auth = String(req.headers.authorization ?? '');
    const given = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    if (!crypto.timingSafeEqual(sha256(given), tokenHash)) throw new HttpError(401, 'missing or wrong bearer token');
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] !== 'api' || parts[1] !== `v${API_VERSION}`) throw new HttpError(404, `no route ${url.pathname} (API: /api/v${API_VERSION}/…)`);
    const route = parts.slice(2);
    const method = req.method ?? 'GET';
    const body = method === 'POST' ? await readJson(req) : undefined;
    reply(req, res, 200, dispatch(method, route, body, url.searchParams));
  }

  function dispatch(method: string, route: string[], body: unknown, query: URLSearchParams): unknown {
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
      if (method === 'GET') return { runs: store.runs() };
      only('POST');
      const r = check<CreateRun>(CreateRunSchema, body);
      const { id, resumed } = userErrors(() => store.createRun(r.name, r.config ?? {}, r.policy, r.run, r.resume === true));
      const c = store.controller(id);
      return { id, resumed, batch: c.inEffect.batch, lr_multiplier: c.inEffect.lr_multiplier, attempt: c.attempt };
    }
    const id = Number(idText);
    if (!/^\d+$/.test(idText ?? '') || route.length !== 3) throw new HttpError(404, `no route /${route.join('/')}`);
    if (b === 'reports') {
      only('POST');
      const r = check<Reports>(ReportsSchema, body);
      return { decisions: userErrors(() => store.report(id, r.reports)) };
    }
    if (b === 'checkpoints') {
      only('POST');
      const r = check<CheckpointBody>(CheckpointSchema, body);
      userErrors(() => store.checkpoint(id, r.step, r.data, r.path));
      return { ok: true };
    }
    if (b === 'metrics') {
      only('GET');
      const max = Number(query.get('max') ?? 2000);
      if (!(Number.isInteger(max) && max >= 1)) throw new HttpError(400, 'max: expected an integer ≥ 1');
      return { rows: userErrors(() => store.metrics(id, max)) };
    }
    throw new HttpError(404, `no route /${route.join('/')}`);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new UserError(`cannot listen on ${o.host}:${o.port}: ${e.code ?? e.message}`)));
    server.listen(o.port, o.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const hostPart = o.host.includes(':') ? `[${o.host}]` : o.host;
  const loopback = ['127.0.0.1', 'localhost', '::1'].includes(o.host);
  allowedHosts = new Set((loopback ? ['127.0.0.1', 'localhost', '[::1]'] : [hostPart]).map((h) => `${h}:${port}`.toLowerCase()));
  return {
    url: `http://${hostPart}:${port}`,
    token,
    server,
    store,
    close: () => new Promise<void>((resolve) => {
      server.close(() => {
        store.close();
        resolve();
      });
      server.closeIdleConnections();
    }),
  };
}

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
    'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store',
    ...(unread ? { connection: 'close' } : {}),
  });
  res.end(text);
}

function sha256(s: string): Buffer {
  return crypto.createHash('sha256').update(s).digest();
}
