// Shared fixtures for the trainer and CLI tests: a temp root removed at exit, a micro model
// config, a generated English-like corpus, a TrainOptions builder and a CLI runner.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StepReport } from '../src/control/types.ts';
import type { GPTConfig } from '../src/model/config.ts';
import type { TrainOptions } from '../src/train/trainer.ts';
import { Rng } from '../src/util/rng.ts';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const KEEL = path.join(REPO, 'bin', 'keel.js');

/** 1 layer, 2 heads, C 16, T 16, bytes: ~8k parameters, a step is well under a millisecond. */
export const MICRO: GPTConfig = { nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 16, vocabSize: 256 };

/** A fresh temporary root for one test file, deleted when the process exits. */
export function tempRoot(tag: string): { root: string; fresh: (name: string) => string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `keel-${tag}-`));
  process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
  let n = 0;
  return { root, fresh: (name: string) => path.join(root, `${name}-${n++}`) };
}

export function writeJson(file: string, value: unknown): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(value) + '\n');
  return file;
}

const WORDS = (
  'the a one every some model data train step loss learns slowly quickly over under small large ' +
  'network gradient token window river stone light house garden morning evening reads writes ' +
  'and but so then while because of in on with from into'
).split(' ');

/** Deterministic English-like text of about `bytes` bytes: sentences of random words. */
export function englishText(bytes: number, seed = 1): string {
  const rng = new Rng(seed);
  const out: string[] = [];
  let size = 0;
  while (size < bytes) {
    const n = 4 + rng.int(9);
    const words = Array.from({ length: n }, () => WORDS[rng.int(WORDS.length)]);
    const s = words[0][0].toUpperCase() + words.join(' ').slice(1) + (rng.int(5) === 0 ? '.\n' : '. ');
    out.push(s);
    size += s.length;
  }
  return out.join('');
}

/** A corpus file (English-like text by default) in `dir`. */
export function writeCorpus(dir: string, text = englishText(30_000), name = 'corpus.txt'): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** TrainOptions for a quick micro run; override what the test is about. */
export function trainOptions(out: string, data: string, over: Partial<TrainOptions> = {}): TrainOptions {
  return {
    configName: 'micro',
    config: MICRO,
    data,
    steps: 8,
    batch: 4,
    accum: 1,
    lr: 3e-3,
    minLr: 3e-4,
    warmup: 2,
    schedule: 'cosine',
    optimizer: 'adamw',
    optimizerOptions: {},
    clip: 1,
    evalEvery: 0,
    evalTokens: 257,
    checkpointEvery: 0,
    keep: 3,
    out,
    seed: 1337,
    ...over,
  };
}

/** A healthy step's report to the controller (loss 2, grad norm 1, batch 8, data [step − 1, step]); override what the test is about. */
export function stepReport(step: number, over: Partial<StepReport> = {}): StepReport {
  return {
    v: 1,
    step,
    attempt: 0,
    loss: 2,
    grad_norm: 1,
    nonfinite: { loss: false, grad: false },
    lr: 1e-3,
    tokens: step,
    batch: 8,
    data: [step - 1, step],
    ...over,
  };
}

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A command-line word as it is, or flags: `{ evalTokens: 257, json: true, opt: ['a=1', 'b=2'] }` → `--eval-tokens 257 --json --opt a=1 --opt b=2`. */
export type Arg = string | Record<string, string | number | boolean | (string | number)[]>;

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** The argv that `args` spell, flags in their objects' key order. */
export function argv(args: Arg[]): string[] {
  return args.flatMap((a) =>
    typeof a === 'string'
      ? [a]
      : Object.entries(a).flatMap(([k, v]) => {
          const flag = `--${kebab(k)}`;
          if (v === true) return [flag];
          if (v === false) return [];
          return (Array.isArray(v) ? v : [v]).flatMap((x) => [flag, String(x)]);
        }),
  );
}

/** Runs `node bin/keel.js ...args` to completion. */
export function keel(args: Arg[], opts: { cwd?: string; env?: Record<string, string> } = {}): CliResult {
  const r = spawnSync(process.execPath, [KEEL, ...argv(args)], {
    encoding: 'utf8',
    cwd: opts.cwd ?? REPO,
    timeout: 60_000,
    env: { ...process.env, ...opts.env },
  });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * `keel train --steps 2` on a micro config and corpus, once per case with the case's flags added:
 * each is a usage error (exit 2) whose stderr matches, and writes nothing to its fresh --out.
 */
export function assertTrainRefuses(run: { config: string; data: string; fresh: (name: string) => string }, cases: [string[], RegExp][]): void {
  for (const [args, re] of cases) {
    const out = run.fresh('bad');
    const r = keel(['train', { config: run.config, data: run.data, steps: 2, out }, ...args]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, re);
    assert.ok(!fs.existsSync(out), `${args.join(' ')}: nothing written`);
  }
}

/** `keel sample --json`: one seed twice gives the same text, the other seed other text; `tokens` tokens each. */
export function assertSeededSampling(checkpoint: string, prompt: string, tokens: number, [seed, other]: [number, number]): void {
  const args = ['sample', { checkpoint, prompt, tokens, json: true }];
  const a = JSON.parse(keel([...args, { seed }]).stdout);
  const b = JSON.parse(keel([...args, { seed }]).stdout);
  const c = JSON.parse(keel([...args, { seed: other }]).stdout);
  assert.equal(a.text, b.text);
  assert.notEqual(a.text, c.text);
  assert.equal(a.tokens, tokens);
}

/** Starts `node bin/keel.js ...args` in the background (for Ctrl-C tests). */
export function keelAsync(args: Arg[], env: Record<string, string> = {}): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [KEEL, ...argv(args)], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
  return { child, done };
}

/** The records of a metrics.jsonl (blank and unparsable lines skipped). */
export function metrics(runDir: string): Record<string, unknown>[] {
  const file = path.join(runDir, 'metrics.jsonl');
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

/** Training lines ({step, loss, ...}) of a metrics.jsonl. */
export function trainLines(runDir: string): Record<string, number>[] {
  return metrics(runDir).filter((r) => typeof r.loss === 'number' || (r.loss === null && 'grad_norm' in r)) as Record<string, number>[];
}

/** Every path below `dir` (relative, '/'-separated), files and directories. */
export function walk(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    out.push(rel);
    if (e.isDirectory()) out.push(...walk(dir, rel));
  }
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface ServerChild {
  child: ChildProcess;
  info: { url: string; token: string; pid: number };
}

/** `keel serve --json` in a child process (to kill -9 and restart); resolves once it listens. */
export function startServer(dbFile: string, home: string, port = 0): Promise<ServerChild> {
  const child = spawn(process.execPath, [KEEL, 'serve', '--json', '--db', dbFile, '--port', String(port)], {
    cwd: REPO,
    env: { ...process.env, KEEL_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
    child.stdout!.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      if (out.includes('\n')) resolve({ child, info: JSON.parse(out.split('\n')[0]) });
    });
    child.once('exit', (code) => reject(new Error(`keel serve exited with ${code}: ${err}`)));
  });
}

/** Exit code 2, exactly one line on stderr matching `why`, no stack trace. */
export function assertUserError(r: CliResult, why: RegExp): void {
  assert.equal(r.status, 2, `exit ${r.status} (${r.signal}); stderr:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /^ {4}at /m, `a stack trace:\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], why);
}
