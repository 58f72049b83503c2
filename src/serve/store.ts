/**
 * `keel serve`'s SQLite store (better-sqlite3 12, WAL): runs with their controller state, every
 * step report with the decision it got, and registered checkpoints. A report and the controller
 * state after it are written in one transaction, so whatever the server acknowledged survives a
 * kill -9 and a restarted server carries on with the same controllers.
 *
 * The schema is versioned with SQLite's user_version; MIGRATIONS[i] takes version i to i + 1.
 */
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
];
export const SCHEMA_VERSION = MIGRATIONS.length;

export interface RunRow {
  id: number;
  name: string;
  created_at: string;
  config: Record<string, unknown>;
  /** Reports stored, and the newest one's step. */
  reports: number;
  last_step: number | null;
}

export class Store {
  private readonly db: Database.Database;
  /** Live controllers by run id, loaded from their stored state on first use. */
  private readonly controllers = new Map<number, Controller>();
  /** Statements of the per-step path, prepared once (after the migrations made their tables). */
  private readonly sql: Record<'findReport' | 'insertReport' | 'saveController' | 'insertCheckpoint' | 'loadController', Database.Statement>;

  constructor(file: string) {
    try {
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
      saveController: this.db.prepare('UPDATE runs SET controller = ? WHERE id = ?'),
      insertCheckpoint: this.db.prepare('INSERT OR REPLACE INTO checkpoints (run_id, step, data, path) VALUES (?, ?, ?, ?)'),
      loadController: this.db.prepare('SELECT controller FROM runs WHERE id = ?'),
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

  /** A new run, or with `resume` the newest run of that name (a restarted job carries on). */
  createRun(name: string, config: Record<string, unknown>, policy: Partial<Policy> & Pick<Policy, 'on_spike'>, facts: RunFacts, resume: boolean): { id: number; resumed: boolean } {
    if (resume) {
      const row = this.db.prepare('SELECT id FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1').get(name) as { id: number } | undefined;
      if (row) return { id: row.id, resumed: true };
    }
    const c = new Controller(policy, facts);
    const info = this.db.prepare('INSERT INTO runs (name, created_at, config, controller) VALUES (?, ?, ?, ?)')
      .run(name, new Date().toISOString(), JSON.stringify(config), JSON.stringify(c.toJSON()));
    const id = Number(info.lastInsertRowid);
    this.controllers.set(id, c);
    return { id, resumed: false };
  }

  controller(id: number): Controller {
    const live = this.controllers.get(id);
    if (live) return live;
    const row = this.sql.loadController.get(id) as { controller: string } | undefined;
    if (!row) throw new NotFound(`no run ${id}`);
    const c = Controller.fromJSON(JSON.parse(row.controller));
    this.controllers.set(id, c);
    return c;
  }

  /**
   * The decisions for a batch of reports, in order. A report already stored (same step and
   * attempt: a client's retry) gets its stored decision back and changes nothing. All or nothing:
   * if one report is refused, none of the batch is kept.
   */
  report(id: number, reports: readonly StepReport[]): Decision[] {
    const c = this.controller(id);
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
    try {
      this.db.transaction(() => {
        c.addRestorePoint({ step, data, ...(path !== undefined ? { path } : {}) });
        this.sql.insertCheckpoint.run(id, step, data, path ?? null);
        this.sql.saveController.run(JSON.stringify(c.toJSON()), id);
      })();
    } catch (e) {
      this.controllers.delete(id);
      throw e;
    }
  }

  runs(): RunRow[] {
    const rows = this.db.prepare(`SELECT r.id, r.name, r.created_at, r.config, COUNT(p.step) AS reports, MAX(p.step) AS last_step
      FROM runs r LEFT JOIN reports p ON p.run_id = r.id GROUP BY r.id ORDER BY r.id`).all() as (Omit<RunRow, 'config'> & { config: string })[];
    return rows.map((r) => ({ ...r, config: JSON.parse(r.config) }));
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
