/**
 * Model weights <-> safetensors with nanoGPT's names and nn.Linear layouts. The config is
 * stored in `__metadata__.config` with nanoGPT's GPTConfig field names, so a PyTorch user
 * can rebuild the model with `GPTConfig(**json.loads(meta["config"]))` (a QK-layernorm model adds
 * `qk_norm: true`, which needs a GPTConfig/attention with that extension).
 */
import { UserError } from '../errors.ts';
import { readSafetensors, writeSafetensors } from '../io/safetensors.ts';
import { validateConfig, type GPTConfig } from './config.ts';
import { paramLayout, type ParamLayout } from './params.ts';

/**
 * `qk_norm: true` is written only for a QK-layernorm model (Keel's extension of nanoGPT's
 * GPTConfig; a missing key reads back as false), so other checkpoints' metadata is unchanged.
 */
export function configToMetadata(cfg: GPTConfig): string {
  return JSON.stringify({
    n_layer: cfg.nLayer,
    n_head: cfg.nHead,
    n_embd: cfg.nEmbd,
    block_size: cfg.blockSize,
    vocab_size: cfg.vocabSize,
    bias: true,
    ...(cfg.qkNorm ? { qk_norm: true } : {}),
  });
}

export function configFromMetadata(text: string | undefined, source: string): GPTConfig {
  if (text === undefined) throw new UserError(`${source} has no model config in its metadata; is it a Keel checkpoint?`);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new UserError(`${source}: the config in its metadata is not valid JSON`);
  }
  return validateConfig(
    {
      nLayer: raw.n_layer,
      nHead: raw.n_head,
      nEmbd: raw.n_embd,
      blockSize: raw.block_size,
      vocabSize: raw.vocab_size,
      ...(raw.qk_norm !== undefined ? { qkNorm: raw.qk_norm } : {}),
    },
    `${source} (metadata config)`,
  );
}

/**
 * The metadata of a Keel weights file: nanoGPT's config, the tokenizer its ids belong to
 * (src/data/tokenizer.ts; a file without one is bytes) and the step.
 */
export function modelMetadata(cfg: GPTConfig, tokenizer: string | undefined, step: number): Record<string, string> {
  return { format: 'pt', config: configToMetadata(cfg), tokenizer: tokenizer ?? 'bytes', step: String(step) };
}

/** Tensors of a flat buffer laid out by `layout`, named `name + suffix`, for writeSafetensors. */
export function namedTensors(layout: ParamLayout, flat: Float32Array, suffix = '') {
  return layout.tensors.map((t) => ({ name: t.name + suffix, shape: t.shape, data: flat.subarray(t.offset, t.offset + t.size) }));
}

export function saveModel(path: string, cfg: GPTConfig, params: Float32Array, extra: Record<string, string> = {}): void {
  writeSafetensors(path, namedTensors(paramLayout(cfg), params), { format: 'pt', config: configToMetadata(cfg), ...extra });
}

type SafetensorsFile = ReturnType<typeof readSafetensors>;

/**
 * Copies every tensor of `layout` (named `name + suffix`) from a read safetensors file into
 * `flat`, checking names and shapes: a checkpoint of another architecture is a UserError.
 */
export function copyTensors(file: SafetensorsFile, path: string, layout: ParamLayout, flat: Float32Array, suffix = ''): void {
  for (const t of layout.tensors) {
    const name = t.name + suffix;
    const info = file.infos.find((i) => i.name === name);
    if (!info) throw new UserError(`${path} has no tensor "${name}": it is a checkpoint of another architecture`);
    if (info.shape.join(',') !== t.shape.join(',')) {
      throw new UserError(`${path}: "${name}" has shape [${info.shape}] but the model expects [${t.shape}]: a checkpoint of another architecture`);
    }
    flat.set(file.tensors.get(name)!, t.offset);
  }
}

/** Reads a model checkpoint: its config (from metadata) and its flat parameter buffer. */
export function loadModel(path: string): { config: GPTConfig; params: Float32Array; metadata: Record<string, string> } {
  const file = readSafetensors(path);
  const config = configFromMetadata(file.metadata.config, path);
  const layout = paramLayout(config);
  const params = new Float32Array(layout.total);
  copyTensors(file, path, layout, params);
  return { config, params, metadata: file.metadata };
}
