/** `keel optim replay`: a gradient trace through one optimizer, for cross-framework checks. */
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { UserError } from '../errors.ts';
import { readSafetensors, writeSafetensors } from '../io/safetensors.ts';
import { createOptimizer } from '../optim/registry.ts';
import { replay } from '../optim/replay.ts';
import { addOptimizerFlags, parseOptFlags } from './optimizer.ts';

/** param and grad.1 … grad.N of a trace file, checked. */
function readTrace(file: string): { param: Float32Array; shape: number[]; grads: Float32Array[] } {
  if (!fs.existsSync(file)) throw new UserError(`--trace ${file} does not exist`);
  const f = readSafetensors(file);
  const info = (name: string) => f.infos.find((i) => i.name === name);
  const p = info('param');
  if (!p) throw new UserError(`${file} has no tensor "param" (a trace holds param and grad.1 … grad.N)`);
  const steps = f.infos.filter((i) => /^grad\.\d+$/.test(i.name)).length;
  if (steps === 0) throw new UserError(`${file} has no gradients: expected tensors grad.1 … grad.N`);
  const grads: Float32Array[] = [];
  for (let i = 1; i <= steps; i++) {
    const g = info(`grad.${i}`);
    if (!g) throw new UserError(`${file}: grad.${i} is missing (gradients must be numbered 1 … N without gaps)`);
    if (g.shape.join(',') !== p.shape.join(',')) {
      throw new UserError(`${file}: grad.${i} has shape [${g.shape}] but param has [${p.shape}]`);
    }
    grads.push(f.tensors.get(`grad.${i}`)!);
  }
  return { param: f.tensors.get('param')!, shape: p.shape, grads };
}

export function optimCommand(): Command {
  const optim = new Command('optim').description('optimizer tools');
  const rp = new Command('replay')
    .description('replay a gradient trace (param, grad.1 … grad.N) through one optimizer; writes param.1 … param.N')
    .requiredOption('--trace <in.safetensors>', 'trace: float32 `param` (any shape) and `grad.1` … `grad.N` of the same shape')
    .requiredOption('--out <out.safetensors>', 'output: `param.1` … `param.N`, the parameter after each step')
    .option('--json', 'print a JSON summary');
  addOptimizerFlags(rp).action((o) => {
    const options = parseOptFlags(o.optimizer, o.opt);
    const opt = createOptimizer(o.optimizer, options);
    if (path.resolve(o.out) === path.resolve(o.trace)) throw new UserError('--out must differ from --trace');
    const trace = readTrace(o.trace);
    const out = replay(opt, trace.param, trace.shape, trace.grads);
    writeSafetensors(
      o.out,
      out.map((data, i) => ({ name: `param.${i + 1}`, shape: trace.shape, data })),
      { optimizer: opt.name, options: JSON.stringify(opt.options), trace: path.basename(o.trace) },
    );
    const summary = { optimizer: opt.name, options: opt.options, steps: out.length, shape: trace.shape, out: o.out };
    if (o.json) process.stdout.write(JSON.stringify(summary) + '\n');
    else process.stderr.write(`replayed ${out.length} steps of ${opt.name} on [${trace.shape}] → ${o.out}\n`);
  });
  return optim.addCommand(rp);
}
