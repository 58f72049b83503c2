/**
 * Where a client finds `keel serve`: KEEL_URL and KEEL_TOKEN, else the discovery file the server
 * writes, $KEEL_HOME/serve.json (default ~/.keel, mode 0600). python/keel/client.py reads the
 * same places in the same order.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../errors.ts';

export function keelHome(): string {
  return process.env.KEEL_HOME ?? path.join(os.homedir(), '.keel');
}

export function serveFile(): string {
  return path.join(keelHome(), 'serve.json');
}

/** The server's URL and token; `url` (given on the command line) wins over the environment and the file. */
export function findServer(url?: string): { url: string; token: string } {
  let info: { url?: string; token?: string } = {};
  try {
    info = JSON.parse(fs.readFileSync(serveFile(), 'utf8'));
  } catch {
    // no running server wrote its file: the environment must say
  }
  const u = url ?? process.env.KEEL_URL ?? info.url;
  const token = process.env.KEEL_TOKEN ?? info.token;
  if (!u) throw new UserError(`--serve: no keel serve found (${serveFile()} is missing): start one with \`keel serve\`, or give its URL and set KEEL_TOKEN`);
  if (!/^https?:\/\/[^/]+/.test(u)) throw new UserError(`--serve ${u}: expected a URL such as http://127.0.0.1:8080`);
  if (!token) throw new UserError(`--serve ${u}: no token: set KEEL_TOKEN (keel serve prints it, and keeps it in ${serveFile()})`);
  return { url: u.replace(/\/+$/, ''), token };
}
