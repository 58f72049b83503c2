// Keel as a package: `npm pack`, installed into a fresh directory (dependencies from the npm
// registry or its cache, the native addon compiled by the install), then used as a user would:
// plain Node imports it, a TypeScript consumer with a NodeNext tsconfig type-checks against its
// .d.ts, and `npx keel` runs the compiled CLI. Slow (the install compiles C++): about 2 minutes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { REPO, tempRoot } from './helpers.ts';

const { fresh } = tempRoot('package');
const run = (cmd: string, args: string[], cwd: string, timeout = 600_000) => {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    timeout,
    env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' },
  });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} in ${cwd}: exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
};

test('the packed tarball installs into a fresh directory: plain-Node import, TypeScript types, npx keel', () => {
  const packs = fresh('pack');
  fs.mkdirSync(packs, { recursive: true });
  const name = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', packs], REPO))[0];
  const files: string[] = name.files.map((f: { path: string }) => f.path);
  assert.ok(files.includes('dist/index.js') && files.includes('dist/index.d.ts') && files.includes('data/sotu.txt.br'));
  assert.ok(!files.some((f) => f.startsWith('src/') || f.startsWith('test/')), 'sources and tests stay out');
  const app = fresh('app');
  fs.mkdirSync(app, { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));
  run('npm', ['install', '--prefer-offline', path.join(packs, name.filename)], app);
  assert.ok(!fs.existsSync(path.join(app, 'node_modules', 'tsx')), 'tsx is not a runtime dependency');
  assert.ok(!fs.existsSync(path.join(app, 'node_modules', '@stdlib')), 'no dataset package');

  // Plain Node: the optimizers and the controller, on the user's own arrays.
  fs.writeFileSync(
    path.join(app, 'use.js'),
    `
    import { adamw, Controller } from 'keel';
    const p = new Float32Array([1, 2]), g = new Float32Array([0.5, -0.5]);
    const opt = adamw({ lr: 0.1 });
    const state = opt.init(p);
    opt.step(p, g, state, {});
    const c = new Controller({ on_spike: 'skip' }, { steps: 10, batch: 4, micro_batch: 4, seq_len: 8, params: 2 });
    console.log(JSON.stringify({ p: Array.from(p), kind: c.report({ v: 1, step: 1, attempt: 0, loss: 2, grad_norm: 1, nonfinite: { loss: false, grad: false }, lr: 0.1, tokens: 32, batch: 4, data: [0, 1] }).kind }));
  `,
  );
  const used = JSON.parse(run(process.execPath, ['use.js'], app));
  assert.equal(used.kind, 'proceed');
  assert.ok(used.p[0] < 1 && used.p[1] > 2, JSON.stringify(used.p));

  // TypeScript, default NodeNext settings: the types come from dist/*.d.ts.
  fs.writeFileSync(
    path.join(app, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { module: 'nodenext', target: 'es2022', strict: true, skipLibCheck: true, noEmit: true } }),
  );
  fs.writeFileSync(
    path.join(app, 'use.ts'),
    `
    import { adamw, type Decision, type Policy } from 'keel';
    const policy: Policy = { on_spike: 'rollback', max_skips: 1, rollback_steps: 5, skip_batches: 10, max_rollbacks: 3, lr_cut: 0.1, max_lr_cuts: 2 };
    const kind: Decision['kind'] = 'skip';
    export const lr: number = adamw({ lr: 0.1 }).options.lr as number;
    export { policy, kind };
  `,
  );
  run(process.execPath, [path.join(REPO, 'node_modules/typescript/bin/tsc'), '-p', '.'], app);
  fs.writeFileSync(path.join(app, 'bad.ts'), `import { adamw } from 'keel';\nexport const x: string = adamw;\n`);
  const bad = spawnSync(process.execPath, [path.join(REPO, 'node_modules/typescript/bin/tsc'), '-p', '.'], { cwd: app, encoding: 'utf8' });
  assert.notEqual(bad.status, 0, 'a wrong use is a type error: the types are real');
  fs.rmSync(path.join(app, 'bad.ts'));

  const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8'));
  assert.equal(run('npx', ['--no-install', 'keel', '--version'], app).trim(), pkg.version);
  assert.match(run('npx', ['--no-install', 'keel', 'train', '--help'], app), /--auto-resume/);
  // The main job from the compiled CLI, with every asset it reads (the report's styles and script).
  fs.writeFileSync(path.join(app, 'micro.json'), JSON.stringify({ nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 16, vocabSize: 256 }));
  run('npx', ['--no-install', 'keel', 'train', '--config', 'micro.json', '--steps', '3', '--batch', '2', '--eval-tokens', '257', '--out', 'run'], app);
  assert.match(fs.readFileSync(path.join(app, 'run', 'report.html'), 'utf8'), /uPlot/);
});
