/**
 * The inputs of `keel average` (src/average/stream.ts): safetensors files, or directories
 * holding model.safetensors or a sharded checkpoint's index, opened and checked against each
 * other; and the k latest checkpoints of a Keel run for `keel average --lawa`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { checkpointDir, listCheckpoints } from '../io/run_layout.ts';
import { openSafetensors, type SafetensorsReader, type TensorInfo } from '../io/safetensors.ts';

export const INDEX_FILE = 'model.safetensors.index.json';
const MODEL_FILE = 'model.safetensors';

export interface Located {
  reader: SafetensorsReader;
  info: TensorInfo;
}

export interface Source {
  /** As given, for messages. */
  spec: string;
  /** Index of the input (1-based in messages). */
  position: number;
  /** Set for a sharded checkpoint. */
  index?: { file: string; metadata: Record<string, unknown>; weightMap: Record<string, string> };
  /** Shard file names (sorted) and their readers; one unnamed entry for a single file. */
  shards: { name: string; reader: SafetensorsReader }[];
  tensors: Map<string, Located>;
  /** Tensor names in file order (shard by shard). */
  order: string[];
  /** Every path the input consists of (files, and its directory if one was given). */
  paths: string[];
}

export const label = (s: Source) => `input ${s.position + 1} (${s.spec})`;

export function openInput(spec: string, opened: SafetensorsReader[]): Source {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(spec);
  } catch {
    throw new UserError(`input ${spec} does not exist`);
  }
  let file = spec;
  const paths = [path.resolve(spec)];
  if (stat.isDirectory()) {
    const index = path.join(spec, INDEX_FILE);
    const single = path.join(spec, MODEL_FILE);
    if (fs.existsSync(index)) file = index;
    else if (fs.existsSync(single)) file = single;
    else throw new UserError(`input ${spec} is a directory without ${MODEL_FILE} or ${INDEX_FILE}`);
    paths.push(path.resolve(file));
  }
  return file.endsWith('.index.json') ? openSharded(spec, file, opened, paths) : openSingle(spec, file, opened, paths);
}

function openSingle(spec: string, file: string, opened: SafetensorsReader[], paths: string[]): Source {
  const reader = openSafetensors(file);
  opened.push(reader);
  const tensors = new Map(reader.infos.map((info) => [info.name, { reader, info }]));
  return { spec, position: 0, shards: [{ name: '', reader }], tensors, order: reader.infos.map((t) => t.name), paths };
}

function openSharded(spec: string, indexFile: string, opened: SafetensorsReader[], paths: string[]): Source {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${indexFile}: ${code ? `cannot read (${code})` : 'not valid JSON (truncated?)'}`);
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(index) || !isObject(index.weight_map)) throw new UserError(`${indexFile}: no "weight_map" object (not a sharded checkpoint index?)`);
  if (index.metadata !== undefined && index.metadata !== null && !isObject(index.metadata)) {
    throw new UserError(`${indexFile}: "metadata" must be an object`);
  }
  const weightMap = index.weight_map as Record<string, unknown>;
  const names = new Set<string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string') throw new UserError(`${indexFile}: weight_map["${tensor}"] must be a file name, got ${JSON.stringify(shard)}`);
    if (shard === '' || shard === '.' || shard === '..' || shard !== path.basename(shard) || shard.includes('\\')) {
      throw new UserError(`${indexFile}: shard ${JSON.stringify(shard)} must be a plain file name next to the index`);
    }
    names.add(shard);
  }
  const dir = path.dirname(indexFile);
  const shards = [...names].sort().map((name) => {
    const reader = openSafetensors(path.join(dir, name));
    opened.push(reader);
    paths.push(path.resolve(dir, name));
    return { name, reader };
  });
  const tensors = new Map<string, Located>();
  const order: string[] = [];
  for (const { name, reader } of shards) {
    for (const info of reader.infos) {
      const listed = Object.hasOwn(weightMap, info.name) ? weightMap[info.name] : undefined;
      if (listed !== name) {
        const where = listed === undefined ? 'does not list it' : `puts it in ${listed}`;
        throw new UserError(`${indexFile}: shard ${name} holds tensor "${info.name}" but the index ${where}`);
      }
      tensors.set(info.name, { reader, info });
      order.push(info.name);
    }
  }
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (!tensors.has(tensor)) throw new UserError(`${indexFile}: tensor "${tensor}" is listed in ${shard as string}, which does not hold it`);
  }
  const metadata = (index.metadata ?? {}) as Record<string, unknown>;
  return { spec, position: 0, index: { file: indexFile, metadata, weightMap: weightMap as Record<string, string> }, shards, tensors, order, paths };
}

/** Same names, shapes and dtypes in every input; the first difference is named. */
export function checkCompatible(sources: Source[]): void {
  const first = sources[0];
  for (const s of sources.slice(1)) {
    for (const name of first.order) {
      const a = first.tensors.get(name)!.info;
      const b = s.tensors.get(name)?.info;
      if (!b) throw new UserError(`tensor "${name}" is in ${label(first)} but not in ${label(s)}`);
      if (a.shape.length !== b.shape.length || a.shape.some((d, j) => d !== b.shape[j])) {
        throw new UserError(`tensor "${name}" has shape [${a.shape}] in ${label(first)} but [${b.shape}] in ${label(s)}`);
      }
      if (a.dtype !== b.dtype) throw new UserError(`tensor "${name}" is ${a.dtype} in ${label(first)} but ${b.dtype} in ${label(s)}`);
    }
    const extra = s.order.find((n) => !first.tensors.has(n));
    if (extra !== undefined) throw new UserError(`tensor "${extra}" is in ${label(s)} but not in ${label(first)}`);
  }
}

export interface LawaInputs {
  /** model.safetensors of the chosen checkpoints, newest first (the first's metadata is kept). */
  inputs: string[];
  /** Their steps, newest first. */
  steps: number[];
  /** Default output: RUN_DIR/lawa-<oldest>-<newest>.safetensors. */
  out: string;
}

/** The k latest checkpoints of a Keel run (RUN_DIR/checkpoints/step-N/model.safetensors). */
export function lawaInputs(runDir: string, k: number): LawaInputs {
  if (!Number.isSafeInteger(k) || k < 1) throw new UserError(`--k must be a positive integer, got ${k}`);
  if (!fs.existsSync(runDir) || !fs.statSync(runDir).isDirectory()) throw new UserError(`run directory ${runDir} does not exist`);
  const all = listCheckpoints(runDir);
  if (all.length === 0) throw new UserError(`${runDir} has no checkpoints (expected ${path.join(runDir, 'checkpoints', 'step-N')})`);
  if (k > all.length) {
    throw new UserError(`--k ${k}: ${runDir} has only ${all.length} checkpoint${all.length === 1 ? '' : 's'} (steps ${all.join(', ')})`);
  }
  const steps = all.slice(-k).reverse();
  const inputs = steps.map((s) => path.join(checkpointDir(runDir, s), MODEL_FILE));
  for (const f of inputs) if (!fs.existsSync(f)) throw new UserError(`checkpoint ${path.dirname(f)} is incomplete: ${MODEL_FILE} is missing`);
  return { inputs, steps, out: path.join(runDir, `lawa-${steps[steps.length - 1]}-${steps[0]}.safetensors`) };
}
