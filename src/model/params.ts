/**
 * The parameter layout: every tensor of the model as a view into ONE flat buffer (llm.c
 * style), named as nanoGPT's state dict so checkpoints load into PyTorch directly.
 * Optimizers, clipping and averaging run over the flat buffer; the model uses the views.
 *
 * With `qkNorm` each layer also has `attn.q_norm.{weight,bias}` and `attn.k_norm.{weight,bias}`,
 * right after `attn.c_attn.bias`: the LayerNorms of the queries and keys, each of shape [hs]
 * (hs = C/NH) and SHARED by all heads of the layer (the norm runs per head over hs, as in
 * Wortsman et al. 2023; one gain/bias per layer keeps the heads interchangeable and matches a
 * PyTorch `nn.LayerNorm(hs)` applied to q.view(B, T, NH, hs)). Without it the layout is
 * exactly nanoGPT's.
 */
import type { GPTConfig } from './config.ts';

export type ParamKind = 'embedding' | 'weight' | 'bias' | 'gain';

export interface ParamSpec {
  name: string;
  shape: number[];
  kind: ParamKind;
  /** Offset (in elements) into the flat buffer. */
  offset: number;
  size: number;
}

export interface ParamLayout {
  tensors: ParamSpec[];
  byName: Map<string, ParamSpec>;
  total: number;
}

export function paramLayout(cfg: GPTConfig): ParamLayout {
  const C = cfg.nEmbd;
  const tensors: ParamSpec[] = [];
  let offset = 0;
  const add = (name: string, shape: number[], kind: ParamKind) => {
    const size = shape.reduce((a, b) => a * b, 1);
    tensors.push({ name, shape, kind, offset, size });
    offset += size;
  };
  add('transformer.wte.weight', [cfg.vocabSize, C], 'embedding');
  add('transformer.wpe.weight', [cfg.blockSize, C], 'embedding');
  for (let i = 0; i < cfg.nLayer; i++) {
    const p = `transformer.h.${i}.`;
    add(p + 'ln_1.weight', [C], 'gain');
    add(p + 'ln_1.bias', [C], 'bias');
    add(p + 'attn.c_attn.weight', [3 * C, C], 'weight');
    add(p + 'attn.c_attn.bias', [3 * C], 'bias');
    if (cfg.qkNorm) {
      const hs = C / cfg.nHead;
      add(p + 'attn.q_norm.weight', [hs], 'gain');
      add(p + 'attn.q_norm.bias', [hs], 'bias');
      add(p + 'attn.k_norm.weight', [hs], 'gain');
      add(p + 'attn.k_norm.bias', [hs], 'bias');
    }
    add(p + 'attn.c_proj.weight', [C, C], 'weight');
    add(p + 'attn.c_proj.bias', [C], 'bias');
    add(p + 'ln_2.weight', [C], 'gain');
    add(p + 'ln_2.bias', [C], 'bias');
    add(p + 'mlp.c_fc.weight', [4 * C, C], 'weight');
    add(p + 'mlp.c_fc.bias', [4 * C], 'bias');
    add(p + 'mlp.c_proj.weight', [C, 4 * C], 'weight');
    add(p + 'mlp.c_proj.bias', [C], 'bias');
  }
  add('transformer.ln_f.weight', [C], 'gain');
  add('transformer.ln_f.bias', [C], 'bias');
  return { tensors, byName: new Map(tensors.map((t) => [t.name, t])), total: offset };
}

/** Views of each tensor into a flat buffer laid out by `layout`. */
export function views<F extends Float32Array | Float64Array>(layout: ParamLayout, flat: F): Map<string, F> {
  const out = new Map<string, F>();
  for (const t of layout.tensors) out.set(t.name, flat.subarray(t.offset, t.offset + t.size) as F);
  return out;
}
