/**
 * What `train()` checks before it allocates or writes anything, and what it says at start
 * A refusal here is a UserError (one line, exit 2) and leaves no run directory.
 */
import { UserError } from '../errors.ts';
import { checkOutDir } from '../io/out_dir.ts';
import { defaultPolicy } from '../control/types.ts';
import type { Controller } from '../control/controller.ts';
import type { GPTConfig } from '../model/config.ts';
import { tokenizerOf, type Tokenizer, type TokenizerName } from '../data/tokenizer.ts';
import { checkMemory, formatBytes, trainingMemory } from './memory.ts';
import type { TrainOptions } from './options.ts';

/** The model must have an embedding row for every id the tokenizer produces. */
function checkVocab(cfg: GPTConfig, tokenizer: Tokenizer): void {
  if (cfg.vocabSize < tokenizer.alphabet) {
    throw new UserError(
      `vocabSize ${cfg.vocabSize} is smaller than the tokenizer's alphabet: ${tokenizer.name} tokens take ${tokenizer.alphabet} values; set "vocabSize": ${tokenizer.vocabSize}`,
    );
  }
}

/**
 * Refuses a run that cannot work: a vocabulary smaller than the tokenizer's alphabet, a new run's
 * directory that cannot be written, more memory than the machine has.
 */
export function preflight(o: TrainOptions, newRun: boolean, dir: string): void {
  checkVocab(o.config, tokenizerOf(o.tokenizer ?? 'bytes')); // train() resolved it from the data
  if (newRun) checkOutDir(dir, '--out');
  const policy = defaultPolicy(o.steps, { on_spike: o.onSpike ?? 'none', rollback_steps: o.rollbackSteps });
  const rollbackSteps = policy.on_spike === 'none' ? null : policy.rollback_steps;
  checkMemory(
    (batch) => trainingMemory({ ...o, batch }, rollbackSteps),
    o.config,
    o.batch,
    'use a smaller model (nLayer, nEmbd, blockSize) or an optimizer with less state (--optimizer lion or adafactor)',
  );
}

export interface StartInfo {
  params: number;
  /** Tokens per optimizer step at the start (batch × accum × T, or the ramp's first batch). */
  tokensPerStep: number;
  dataName: string;
  /** Tokens in the corpus (for bytes: its size in bytes). */
  dataTokens: number;
  tokenizer: TokenizerName;
  dir: string;
  /** The step a resumed run continues from. */
  resumedAt?: number;
}

/** The one line `keel train` prints at start: what is trained, on what, where. */
export function startLine(s: StartInfo): string {
  const from = s.resumedAt !== undefined ? `resuming at step ${s.resumedAt}; ` : '';
  const data = s.tokenizer === 'bytes' ? formatBytes(s.dataTokens) : `${formatCount(s.dataTokens)} ${s.tokenizer} tokens`;
  return `${from}${formatCount(s.params)} parameters, ${s.tokensPerStep} tokens per step, data ${data} (${s.dataName}), run ${s.dir}`;
}

function formatCount(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : String(n);
}

/**
 * With recovery on and the detectors not armed yet, when they will test: a shorter warm-up window (the run
 * is too short for the full one), or none at all (the run ends before it fills). Null when
 * recovery is off or the full window fits the run.
 */
export function protectionNote(controller: Controller, startStep: number): string | null {
  const { on_spike } = controller.policy;
  const warmup = controller.detectorWarmup;
  const window = controller.detectorWindow;
  const steps = controller.run.steps;
  if (on_spike === 'none' || startStep >= warmup) return null; // off, or armed already (a resumed run)
  if (warmup >= steps) {
    return `spike protection (--on-spike ${on_spike}) cannot arm in this ${steps}-step run: the detectors need ${warmup} steps of history first`;
  }
  if (warmup < window) {
    return `spike protection (--on-spike ${on_spike}) arms after step ${warmup}: the ${window}-step --spike-window is longer than this ${steps}-step run allows, so the detectors warm up on ${warmup} steps`;
  }
  return `spike protection (--on-spike ${on_spike}) arms after step ${warmup}, once the --spike-window fills`;
}
