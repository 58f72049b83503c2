// Side-by-side training throughput: `keel bench` against the PyTorch peer
// (bench/torch_gpt.py), interleaved over several rounds in one run so that every
// engine sees the same machine state; the table shows each engine's median round.
//   node --import tsx bench/vs_torch.ts [--configs tiny,small] [--precisions fp32,bf16] [--rounds 3]
//        [--batch 8] [--threads 2] [--torch2 ~/.torch2/bin/python] [--torch1 /usr/bin/python3] [--json]
// Peers (see the peer's docstring for their setup):
//   fp32: PyTorch 2.x --modern (fused SDPA attention, fused AdamW), and PyTorch 1.13 (Debian,
//         OpenBLAS with OPENBLAS_NUM_THREADS=threads and --threads 1, its best setting) when
//         --torch1's python imports torch;
//   bf16: PyTorch 2.x --modern --bf16 (bf16 autocast) against `keel bench --precision bf16`.
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { median } from '../src/util/stats.ts';
import { flag, opt } from './args.ts';

const configs = opt('configs', 'tiny,small').split(',');
const precisions = opt('precisions', 'fp32,bf16').split(',');
const rounds = Number(opt('rounds', '3'));
const batch = opt('batch', '8');
const threads = opt('threads', '2');
const torch2 = opt('torch2', path.join(os.homedir(), '.torch2/bin/python'));
const torch1 = opt('torch1', '/usr/bin/python3');
const peer = path.resolve(opt('peer', 'bench/torch_gpt.py'));

type Result = Record<string, number | string>;
function run(cmd: string, argv: string[], env: Record<string, string> = {}): Result {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}
const imports = (python: string) => spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;

/** One engine in one configuration: how to run it, and its tokens/s per round. */
interface Entry {
  name: string;
  command: string;
  run: () => Result;
  runs: Result[];
}

function entries(config: string, precision: string): Entry[] {
  const steps = config === 'tiny' ? '30' : '12';
  const keelArgv = ['bin/keel.js', 'bench', '--config', config, '--batch', batch, '--steps', steps, '--precision', precision, '--json'];
  const peerArgv = [peer, '--config', config, '--batch', batch, '--steps', steps, '--json'];
  const list: Entry[] = [
    {
      name: 'keel',
      command: `KEEL_THREADS=${threads} node ${keelArgv.join(' ')}`,
      run: () => run(process.execPath, keelArgv, { KEEL_THREADS: threads }),
      runs: [],
    },
  ];
  const modern = [...peerArgv, '--threads', threads, '--modern', ...(precision === 'bf16' ? ['--bf16'] : [])];
  list.push({ name: 'torch2', command: `${torch2} ${modern.join(' ')}`, run: () => run(torch2, modern), runs: [] });
  if (precision === 'fp32' && imports(torch1)) {
    const old = [...peerArgv, '--threads', '1'];
    list.push({
      name: 'torch1',
      command: `OPENBLAS_NUM_THREADS=${threads} ${torch1} ${old.join(' ')}`,
      run: () => run(torch1, old, { OPENBLAS_NUM_THREADS: threads }),
      runs: [],
    });
  }
  return list;
}

const groups = configs.flatMap((config) => precisions.map((precision) => ({ config, precision, engines: entries(config, precision) })));
for (let r = 0; r < rounds; r++) {
  for (const g of groups) for (const e of g.engines) e.runs.push(e.run());
}

const rows = groups.map(({ config, precision, engines }) => {
  const tps = (e: Entry) => median(e.runs.map((x) => Number(x.tokens_per_s)))!;
  const [keel, ...peers] = engines;
  const k = tps(keel);
  const mid = keel.runs.find((x) => Number(x.tokens_per_s) === k)!;
  return {
    config,
    precision,
    batch: Number(batch),
    threads: Number(threads),
    keel_tokens_per_s: k,
    isa: mid.isa,
    matmul_kernel: mid.matmul_kernel,
    model_peak_fraction: mid.model_peak_fraction,
    matmul_peak_fraction: mid.matmul_peak_fraction,
    peak_gflops: mid.peak_gflops,
    peers: peers.map((p) => ({
      engine: String(p.runs[0].engine),
      tokens_per_s: tps(p),
      ratio: k / tps(p),
      runs: p.runs.map((x) => x.tokens_per_s),
      command: p.command,
    })),
    keel_runs: keel.runs.map((x) => x.tokens_per_s),
    keel_command: keel.command,
  };
});

if (flag('json')) console.log(JSON.stringify(rows));
else {
  const pct = (x: unknown) => `${(100 * Number(x)).toFixed(0)}%`;
  console.log(`${rounds} interleaved rounds, medians; batch ${batch}, ${threads} threads each\n`);
  console.log('| config | precision | Keel tok/s (path, kernel, % of peak: model / matmul) | peer | peer tok/s | Keel ÷ peer |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows) {
    for (const p of r.peers) {
      console.log(
        `| ${r.config} | ${r.precision} | ${Math.round(r.keel_tokens_per_s)} (${r.isa}, ${r.matmul_kernel}, ${pct(r.model_peak_fraction)} / ${pct(r.matmul_peak_fraction)}) | ${p.engine} | ${Math.round(p.tokens_per_s)} | ${p.ratio.toFixed(2)}× |`,
      );
    }
  }
  console.log('\nCommands:');
  for (const r of rows) {
    console.log(`- ${r.keel_command}`);
    for (const p of r.peers) console.log(`- ${p.command}`);
  }
}
