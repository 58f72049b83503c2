/** GPT-2 model configuration: the named presets and validation of user-supplied JSON. */
import fs from 'node:fs';
import { UserError } from '../errors.ts';

export interface GPTConfig {
  /** Transformer blocks. */
  nLayer: number;
  /** Attention heads; nEmbd must be divisible by it. */
  nHead: number;
  /** Channels C (residual stream width). */
  nEmbd: number;
  /** Context length T (positional embeddings). */
  blockSize: number;
  /** Vocabulary size V: at least the tokenizer's alphabet (256 bytes; GPT-2's 50,257, padded to 50,304). */
  vocabSize: number;
  /**
   * QK-layernorm (Wortsman et al. 2023, docs/stability.md#qk-layernorm): LayerNorm on each head's
   * queries and keys (over hs = nEmbd/nHead) before the attention dot product, with a learned
   * gain and bias per layer. Optional, default false; a clean config carries the key only when
   * it is true (so configs, and their JSON, without it are unchanged).
   */
  qkNorm?: boolean;
}

export const CONFIGS: Record<string, GPTConfig> = {
  tiny: { nLayer: 4, nHead: 4, nEmbd: 128, blockSize: 128, vocabSize: 256 },
  small: { nLayer: 6, nHead: 6, nEmbd: 384, blockSize: 256, vocabSize: 256 },
};

type SizeKey = 'nLayer' | 'nHead' | 'nEmbd' | 'blockSize' | 'vocabSize';
const KEYS: SizeKey[] = ['nLayer', 'nHead', 'nEmbd', 'blockSize', 'vocabSize'];
const OPTIONAL_KEYS = ['qkNorm'];

/** Checks a config object and returns a clean copy; throws UserError naming the problem. */
export function validateConfig(raw: unknown, source = 'config'): GPTConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new UserError(`${source}: expected a JSON object with keys ${KEYS.join(', ')} (optional: ${OPTIONAL_KEYS.join(', ')})`);
  }
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!(KEYS as string[]).includes(key) && !OPTIONAL_KEYS.includes(key)) {
      throw new UserError(`${source}: unknown key "${key}" (allowed: ${[...KEYS, ...OPTIONAL_KEYS].join(', ')})`);
    }
  }
  const out = {} as GPTConfig;
  for (const key of KEYS) {
    const v = obj[key];
    if (v === undefined) throw new UserError(`${source}: missing key "${key}"`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      throw new UserError(`${source}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
    }
    out[key] = v;
  }
  if (obj.qkNorm !== undefined) {
    if (typeof obj.qkNorm !== 'boolean') {
      throw new UserError(`${source}: "qkNorm" must be true or false, got ${JSON.stringify(obj.qkNorm)}`);
    }
    if (obj.qkNorm) out.qkNorm = true;
  }
  if (out.nEmbd % out.nHead !== 0) {
    throw new UserError(`${source}: nEmbd (${out.nEmbd}) must be divisible by nHead (${out.nHead})`);
  }
  return out;
}

/**
 * `--config NAME|FILE.json`: a preset name or a JSON file holding a full config. A preset's
 * vocabulary is the tokenizer's (`vocabSize`, default: the presets' 256 bytes); a file's is its own.
 */
export function resolveConfig(spec: string, vocabSize?: number): GPTConfig {
  if (Object.hasOwn(CONFIGS, spec)) return { ...CONFIGS[spec], ...(vocabSize !== undefined ? { vocabSize } : {}) };
  if (!spec.endsWith('.json') && !fs.existsSync(spec)) {
    throw new UserError(`unknown config "${spec}": use one of ${Object.keys(CONFIGS).join(', ')} or a JSON file`);
  }
  let text: string;
  try {
    text = fs.readFileSync(spec, 'utf8');
  } catch (err) {
    throw new UserError(`cannot read config file ${spec}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new UserError(`config file ${spec} is not valid JSON`);
  }
  return validateConfig(raw, spec);
}
