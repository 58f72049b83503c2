/** What `keel average` writes: each output file's header, and a sharded output's index. */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { encodeHeader, type DType, type EncodedHeader } from '../io/safetensors.ts';
import { label, type Source } from './inputs.ts';

export type OutputDtype = 'keep' | 'f32' | 'bf16' | 'f16';
export const OUTPUT_DTYPES: readonly OutputDtype[] = ['keep', 'f32', 'bf16', 'f16'];

export interface OutFile {
  /** Shard file name; '' for a single-file output. */
  name: string;
  header: EncodedHeader;
}

export interface Plan {
  sharded: boolean;
  files: OutFile[];
  /** Sharded: the index to write. */
  index?: { metadata: Record<string, unknown>; weight_map: Record<string, string> };
}

const OUT_DTYPE: Record<Exclude<OutputDtype, 'keep'>, DType> = { f32: 'F32', bf16: 'BF16', f16: 'F16' };

export function planOutput(first: Source, dtype: OutputDtype): Plan {
  const files = first.shards.map(({ name, reader }) => {
    const entries = reader.infos.map((t) => ({ name: t.name, shape: t.shape, dtype: dtype === 'keep' ? t.dtype : OUT_DTYPE[dtype] }));
    const meta = Object.keys(reader.metadata).length > 0 ? reader.metadata : undefined;
    return { name, header: encodeHeader(entries, meta) };
  });
  if (!first.index) return { sharded: false, files };
  const totalSize = files.reduce((a, f) => a + f.header.dataSize, 0);
  return {
    sharded: true,
    files,
    index: { metadata: { ...first.index.metadata, total_size: totalSize }, weight_map: { ...first.index.weightMap } },
  };
}

/** OUT must not be (or contain) an input, and must not exist as the other kind of thing. */
export function checkOutPath(out: string, sharded: boolean, sources: Source[]): string {
  const target = path.resolve(out);
  for (const s of sources) {
    for (const p of s.paths) {
      if (p === target || (sharded && p.startsWith(target + path.sep))) {
        throw new UserError(`the output ${out} would overwrite ${label(s)}: choose another path`);
      }
    }
  }
  let stat: fs.Stats | undefined;
  try {
    stat = fs.statSync(target);
  } catch {
    stat = undefined;
  }
  if (stat && sharded && !stat.isDirectory()) {
    throw new UserError(`the output ${out} exists and is not a directory; a sharded input makes a directory of shards`);
  }
  if (stat && !sharded && !stat.isFile()) {
    throw new UserError(`the output ${out} exists and is not a file; a single-file input makes a .safetensors file`);
  }
  return target;
}
