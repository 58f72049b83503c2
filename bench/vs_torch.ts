// Side-by-side throughput: `keel bench` and the PyTorch peer (../shared/bench/torch_gpt.py),
// interleaved over several rounds in one run so both see the same machine state.
//   node --import tsx bench/vs_torch.ts [--configs tiny,small] [--rounds 3] [--batch 8] [--json]
// Needs Debian's python3-torch and libopenblas0-pthread (peer run with OPENBLAS_NUM_THREADS=2).
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const args = process.argv.slice(2);
const flag = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const configs = flag('configs', 'tiny,small').split(',');
const rounds = Number(flag('rounds', '3'));
const batch = flag('batch', '8');
const python = flag('python', '/usr/bin/python3');
const peer = path.resolve(flag('peer', '../shared/bench/torch_gpt.py'));

function run(cmd: string, argv: string[], env: Record<string, string> = {}): Record<string, number> {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = [];
for (const config of configs) {
  const steps = config === 'tiny' ? '30' : '12';
  const keel: number[] = [];
  const torch: number[] = [];
  let torchVersion = '';
  for (let r = 0; r < rounds; r++) {
    keel.push(run(process.execPath, ['bin/keel.js', 'bench', '--config', config, '--batch', batch, '--steps', steps, '--json']).tokens_per_s);
    const t = run(python, [peer, '--config', config, '--batch', batch, '--steps', steps, '--json'], { OPENBLAS_NUM_THREADS: '2' });
    torch.push(t.tokens_per_s);
    torchVersion = String((t as unknown as { engine: string }).engine);
  }
  const k = median(keel);
  const t = median(torch);
  rows.push({ config, batch: Number(batch), keel_tokens_per_s: k, torch_tokens_per_s: t, ratio: k / t, torch: torchVersion, keel_runs: keel, torch_runs: torch });
}
if (args.includes('--json')) console.log(JSON.stringify(rows));
else {
  console.log('| config | batch | Keel tok/s | PyTorch tok/s | ratio |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.config} | ${r.batch} | ${Math.round(r.keel_tokens_per_s)} | ${Math.round(r.torch_tokens_per_s)} | ${r.ratio.toFixed(2)}× |`);
  }
}
