/**
 * What `train()` checks before it allocates or writes anything, and what it says at start
 * A refusal here is a UserError (one line, exit 2) and leaves no run directory.
 */
import { UserError } from '../errors.ts';
import { checkOutDir } from '../io/out_dir.ts';
import { defaultPolicy } from '../control/types.ts';
import type { Controller } from '../control/controller.ts';
import type { GPTConfig } from '../model/config.ts';
import { checkMemory, formatBytes, trainingMemory } from './memory.ts';
import type { TrainOptions } from './options.ts';

/** Keel's tokenizer: one token per byte, so the model must have a row for every byte value. */
const BYTE_ALPHABET = 256;

function checkVocab(cfg: GPTConfig): void {
  if (cfg.vocabSize < BYTE_ALPHABET) {
    throw new UserError(
      `vocabSize ${cfg.vocabSize} is smaller than the tokenizer's alphabet: Keel's tokens are bytes (${BYTE_ALPHABET} values); set "vocabSize": ${BYTE_ALPHABET}`,
    );
  }
}

/**
 * Refuses a run that cannot work: a vocabulary smaller than the byte alphabet, a new run's
 * directory that cannot be written, more memory than the machine has.
 */
export function preflight(o: TrainOptions, newRun: boolean, dir: string): void {
  checkVocab(o.config);
  if (newRun) checkOutDir(dir, '--out');
  const policy = defaultPolicy(o.steps, { on_spike: o.onSpike ?? 'none', rollback_steps: o.rollbackSteps });
  const rollbackSteps = policy.on_spike === 'none' ? null : policy.rollback_steps;
  checkMemory(
    (batch) => trainingMemory({ ...o, batch }, rollbackSteps), o.config, o.batch,
    'use a smaller model (nLayer, nEmbd, blockSize) or an optimizer with less state (--optimizer lion or adafactor)',
  );
}

export interface StartInfo {
  params: number;
  /** Tokens per optimizer step at the start (batch × accum × T, or the ramp's first batch). */
  tokensPerStep: number;
  dataName: string;
  dataBytes: number;
  dir: string;
  /** The step a resumed run continues from. */
  resumedAt?: number;
}

/** The one line `keel train` prints at start: what is trained, on what, where. */
export function startLine(s: StartInfo): string {
  const params = s.params >= 1e6 ? `${(s.params / 1e6).toFixed(2)} M` : s.params >= 1e3 ? `${(s.params / 1e3).toFixed(1)} k` : String(s.params);
  const from = s.resumedAt !== undefined ? `resuming at step ${s.resumedAt}; ` : '';
  return `${from}${params} parameters, ${s.tokensPerStep} tokens per step, data ${formatBytes(s.dataBytes)} (${s.dataName}), run ${s.dir}`;
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
