/**
 * `keel serve [--host 127.0.0.1] [--port 0] [--db FILE] [--json]`: the controller as a local
 * service (src/serve/server.ts). Prints where it listens and its token, and writes both to
 * $KEEL_HOME/serve.json (default ~/.keel; mode 0600) so clients on this machine find it (the
 * token is kept in the database, so a restarted server's clients carry on; --new-token replaces it);
 * KEEL_URL and KEEL_TOKEN override that file on the client side. SIGTERM/SIGINT: finish
 * in-flight requests, close the database, exit 0.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { UserError } from '../errors.ts';
import { keelHome, serveFile } from '../serve/home.ts';
import { int } from './args.ts';
import { makeDirs } from '../io/out_dir.ts';

export function serveCommand(): Command {
  return new Command('serve')
    .description('serve the controller over HTTP for PyTorch (or any) runs: runs in SQLite, a token, loopback by default')
    .option('--host <addr>', 'interface to listen on; anything but loopback must be given explicitly', '127.0.0.1')
    .option('--port <n>', 'port (0: any free one)', int(0), 0)
    .option('--db <file>', 'SQLite database (default: $KEEL_HOME/keel.db)')
    .option('--new-token', 'replace the token kept in the database (clients of the old one go offline)')
    .option('--json', 'print one JSON line {url, token, dashboard, pid, db} once listening')
    .action(async (o: { host: string; port: number; db?: string; newToken?: boolean; json?: boolean }) => {
      if (o.port > 65535) throw new UserError(`--port ${o.port}: expected 0–65535`);
      const home = keelHome();
      const existed = fs.existsSync(home);
      makeDirs(home, 'KEEL_HOME'); // not mkdirSync's recursive mode: it spins forever under /proc
      if (!existed) fs.chmodSync(home, 0o700);
      const db = path.resolve(o.db ?? path.join(home, 'keel.db'));
      const { serve } = await import('../serve/server.ts'); // SQLite and the schemas: loaded only to serve
      const s = await serve({ host: o.host, port: o.port, db, newToken: o.newToken === true });
      const info = { url: s.url, token: s.token, dashboard: s.dashboard, pid: process.pid, db };
      const file = serveFile();
      fs.writeFileSync(`${file}.tmp`, JSON.stringify(info) + '\n', { mode: 0o600 });
      fs.renameSync(`${file}.tmp`, file);
      if (o.json) process.stdout.write(JSON.stringify(info) + '\n');
      else process.stderr.write(`keel serve: ${s.url}/api/v1 (token in ${file})\ntoken: ${s.token}\ndashboard: ${s.dashboard}\ndatabase: ${db}\n`);
      const stop = () => {
        s.close().then(() => {
          try {
            if (JSON.parse(fs.readFileSync(file, 'utf8')).pid === process.pid) fs.rmSync(file);
          } catch {
            // another server took the file over, or it is gone: leave it
          }
          process.exit(0);
        });
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
}
