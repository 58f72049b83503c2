/**
 * `keel serve`'s SQLite store (better-sqlite3 12, WAL): runs with their controller state, every
 * step report with the decision it got, and registered checkpoints. A report and the controller
 * state after it are written in one transaction, so whatever the server acknowledged survives a
 * kill -9 and a restarted server carries on with the same controllers.
 *
 * The schema is versioned with SQLite's user_version; MIGRATIONS[i] takes version i to i + 1.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import Database from 'better-sqlite3';
import { UserError } from '../errors.ts';
import { Controller } from '../control/controller.ts';
import type { Decision, Policy, RunFacts, StepReport } from '../control/types.ts';

const MIGRATIONS = [
  `CREATE TABLE runs (
     id INTEGER PRIMARY KEY,
     name TEXT NOT NULL,
     created_at TEXT NOT NULL,
     config TEXT NOT NULL,
     controller TEXT NOT NULL
   );
   CREATE INDEX runs_name ON runs (name, id);
   CREATE TABLE reports (
     run_id INTEGER NOT NULL REFERENCES runs (id),
     step INTEGER NOT NULL,
     attempt INTEGER NOT NULL,
     seq INTEGER NOT NULL,
     report TEXT NOT NULL,
     decision TEXT NOT NULL,
     PRIMARY KEY (run_id, step, attempt)
   );
   CREATE INDEX reports_seq ON reports (run_id, seq);
   CREATE TABLE checkpoints (
     run_id INTEGER NOT NULL REFERENCES runs (id),
     step INTEGER NOT NULL,
     data REAL NOT NULL,
     path TEXT,
     PRIMARY KEY (run_id, step)
   );`,
  // 2: the server's token survives a restart (clients carry on); evaluations; mirrored runs
  // (keel train --serve: the run decides in-process, the server stores what it decided).
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE evals (
     run_id INTEGER NOT NULL REFERENCES runs (id),
     step INTEGER NOT NULL,
     metrics TEXT NOT NULL,
     PRIMARY KEY (run_id, step)
   );
   ALTER TABLE runs ADD COLUMN mirror INTEGER NOT NULL DEFAULT 0;`,
];
export const SCHEMA_VERSION = MIGRATIONS.length;

export interface RunRow {
  id: number;
  name: string;
  created_at: string;
  config: Record<string, unknown>;
  /** The run decides for itself (keel train --serve) and the server only stores. */
  mirror: boolean;
  /** Reports stored, and the newest one's step. */
  reports: number;
  last_step: number | null;
}

export class Store {
  private readonly db: Database.Database;
  /** Live controllers by run id, loaded from their stored state on first use. */
  private readonly controllers = new Map<number, Controller>();
  /** Statements of the per-step path, prepared once (after the migrations made their tables). */
  private readonly sql: Record<
    'findReport' | 'insertReport' | 'replaceReport' | 'saveController' | 'insertCheckpoint' | 'loadController' | 'insertEval',
    Database.Statement
  >;
  /** Mirrored runs by id (their reports carry their decisions). */
  private readonly mirrors = new Map<number, boolean>();

  constructor(file: string) {
    try {
      if (file !== ':memory:') fs.closeSync(fs.openSync(file, 'a', 0o600)); // it holds the token: owner only
      this.db = new Database(file);
    } catch (e) {
      throw new UserError(`cannot open the database ${file}: ${(e as Error).message}`);
    }
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('foreign_keys = ON');
    this.migrate(file);
    this.sql = {
      findReport: this.db.prepare('SELECT decision FROM reports WHERE run_id = ? AND step = ? AND attempt = ?'),
      insertReport: this.db.prepare('INSERT INTO reports (run_id, step, attempt, seq, report, decision) VALUES (?, ?, ?, ?, ?, ?)'),
      replaceReport: this.db.prepare('INSERT OR REPLACE INTO reports (run_id, step, attempt, seq, report, decision) VALUES (?, ?, ?, ?, ?, ?)'),
      insertEval: this.db.prepare('INSERT OR REPLACE INTO evals (run_id, step, metrics) VALUES (?, ?, ?)'),
      saveController: this.db.prepare('UPDATE runs SET controller = ? WHERE id = ?'),
      insertCheckpoint: this.db.prepare('INSERT OR REPLACE INTO checkpoints (run_id, step, data, path) VALUES (?, ?, ?, ?)'),
      loadController: this.db.prepare('SELECT controller, mirror FROM runs WHERE id = ?'),
    };
  }

  private migrate(file: string): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new UserError(`${file} has schema version ${version}, newer than this keel (${SCHEMA_VERSION}): upgrade keel or use another --db`);
    }
    for (let v = version; v < SCHEMA_VERSION; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  /** The server's bearer token: made once per database and kept, so a restarted server's clients carry on. */
  token(fresh: boolean): string {
    const row = this.db.prepare("SELECT value FROM meta WHERE key = 'token'").get() as { value: string } | undefined;
    if (row && !fresh) return row.value;
    const token = crypto.randomBytes(24).toString('hex');
    this.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('token', ?)").run(token);
    return token;
  }

  /** A new run, or with `resume` the newest run of that name (a restarted job carries on). */
  createRun(
    name: string,
    config: Record<string, unknown>,
    policy: Partial<Policy> & Pick<Policy, 'on_spike'>,
    facts: RunFacts,
    resume: boolean,
    mirror = false,
  ): { id: number; resumed: boolean } {
    if (resume) {
      const row = this.db.prepare('SELECT id FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1').get(name) as { id: number } | undefined;
      if (row) return { id: row.id, resumed: true };
    }
    const c = new Controller(policy, facts);
    const info = this.db
      .prepare('INSERT INTO runs (name, created_at, config, controller, mirror) VALUES (?, ?, ?, ?, ?)')
      .run(name, new Date().toISOString(), JSON.stringify(config), JSON.stringify(c.toJSON()), mirror ? 1 : 0);
    const id = Number(info.lastInsertRowid);
    this.controllers.set(id, c);
    this.mirrors.set(id, mirror);
    return { id, resumed: false };
  }

  controller(id: number): Controller {
    const live = this.controllers.get(id);
    if (live) return live;
    const row = this.sql.loadController.get(id) as { controller: string; mirror: number } | undefined;
    if (!row) throw new NotFound(`no run ${id}`);
    const c = Controller.fromJSON(JSON.parse(row.controller));
    this.controllers.set(id, c);
    this.mirrors.set(id, row.mirror === 1);
    return c;
  }

  isMirror(id: number): boolean {
    this.controller(id);
    return this.mirrors.get(id)!;
  }

  /**
   * A mirrored run's reports with the decisions it made itself. A step reported again (a resumed
   * run replays the steps after its last checkpoint) replaces the stored one: the newest pass is
   * what the weights saw.
   */
  mirror(id: number, rows: readonly { report: StepReport; decision: Decision }[]): void {
    if (!this.isMirror(id)) throw new UserError(`run ${id} is controlled by this server: post its reports without decisions`);
    this.db.transaction(() => {
      for (const { report: r, decision: d } of rows) this.sql.replaceReport.run(id, r.step, r.attempt, d.seq, JSON.stringify(r), JSON.stringify(d));
    })();
  }

  /** Evaluation results after `step` (validation loss and the like). */
  evaluation(id: number, step: number, metrics: Record<string, number>): void {
    this.controller(id);
    this.sql.insertEval.run(id, step, JSON.stringify(metrics));
  }

  evals(id: number): { step: number; metrics: Record<string, number> }[] {
    this.controller(id);
    const rows = this.db.prepare('SELECT step, metrics FROM evals WHERE run_id = ? ORDER BY step').all(id) as { step: number; metrics: string }[];
    return rows.map((r) => ({ step: r.step, metrics: JSON.parse(r.metrics) }));
  }

  /**
   * The decisions for a batch of reports, in order. A report already stored (same step and
   * attempt: a client's retry) gets its stored decision back and changes nothing. All or nothing:
   * if one report is refused, none of the batch is kept.
   */
  report(id: number, reports: readonly StepReport[]): Decision[] {
    const c = this.controller(id);
    if (this.mirrors.get(id)) throw new UserError(`run ${id} decides for itself (a mirrored run): post its reports with their decisions`);
    const { findReport: find, insertReport: insert, saveController: save } = this.sql;
    try {
      return this.db.transaction(() => {
        const out: Decision[] = [];
        for (const r of reports) {
          const stored = find.get(id, r.step, r.attempt) as { decision: string } | undefined;
          if (stored) {
            out.push(JSON.parse(stored.decision));
            continue;
          }
          const d = c.report(r);
          insert.run(id, r.step, r.attempt, d.seq, JSON.stringify(r), JSON.stringify(d));
          out.push(d);
        }
        save.run(JSON.stringify(c.toJSON()), id);
        return out;
      })();
    } catch (e) {
      this.controllers.delete(id); // the live controller saw part of the batch: reload the stored one
      throw e;
    }
  }

  /** The run can restore the state after `step` (a checkpoint it wrote). */
  checkpoint(id: number, step: number, data: number, path: string | undefined): void {
    const c = this.controller(id);
    const mirror = this.mirrors.get(id)!; // a mirrored run's restore points live in its own controller
    try {
      this.db.transaction(() => {
        if (!mirror) c.addRestorePoint({ step, data, ...(path !== undefined ? { path } : {}) });
        this.sql.insertCheckpoint.run(id, step, data, path ?? null);
        this.sql.saveController.run(JSON.stringify(c.toJSON()), id);
      })();
    } catch (e) {
      this.controllers.delete(id);
      throw e;
    }
  }

  runs(): RunRow[] {
    const rows = this.db
      .prepare(`SELECT r.id, r.name, r.created_at, r.config, r.mirror, COUNT(p.step) AS reports, MAX(p.step) AS last_step
      FROM runs r LEFT JOIN reports p ON p.run_id = r.id GROUP BY r.id ORDER BY r.id`)
      .all() as (Omit<RunRow, 'config' | 'mirror'> & { config: string; mirror: number })[];
    return rows.map((r) => ({ ...r, config: JSON.parse(r.config), mirror: r.mirror === 1 }));
  }

  /** Step reports with their decisions in the order they came, at most `max` (evenly spaced; decisions other than proceed always kept). */
  metrics(id: number, max: number): { report: StepReport; decision: Decision }[] {
    this.controller(id); // 404 for an unknown run
    const rows = this.db.prepare('SELECT report, decision FROM reports WHERE run_id = ? ORDER BY seq').all(id) as { report: string; decision: string }[];
    const every = Math.max(1, Math.ceil(rows.length / max));
    const out: { report: StepReport; decision: Decision }[] = [];
    rows.forEach((row, i) => {
      const decision = JSON.parse(row.decision) as Decision;
      if (i % every === 0 || i === rows.length - 1 || decision.kind !== 'proceed') out.push({ report: JSON.parse(row.report), decision });
    });
    return out;
  }

  close(): void {
    this.db.close();
  }
}

/** A request for something that does not exist (404). */
export class NotFound extends Error {}
