/**
 * Learning-rate / batch-size scaling rules (docs/batch-size.md#how-it-works): the learning rate a
 * batch size B should get, given one tuned at `baseBatch`. Every rule is normalised so that
 * lrForBatch(rule, baseBatch, p) = baseLr: the base is taken as tuned there, and each rule only
 * supplies the SHAPE f(B), lr(B) = baseLr · f(B)/f(baseBatch).
 *
 *   none      f = 1
 *   linear    f = B                                  (SGD at small B; Goyal et al.)
 *   sqrt      f = √B                                 (Adam heuristic)
 *   sgd       f = 1/(1 + B_noise/B)                  (McCandlish et al.: η_opt = η_max/(1 + B_noise/B))
 *   signsgd   f = 1/[½(β_n/β + β/β_n)],  β(B) = (1 + πκ²/(2B))^(−1/2)     (sign descent, mean field)
 *   softsign  f = √(B(B + B_κ))/(C·B + D·B_κ)                            (SoftSign, derived)
 *
 * ## The sign-like rules from one measured number
 *
 * The planner knows B_noise (the measured B_simple, which it also uses as the critical batch
 * E_min/S_min) and, for softsign, ε and the gradient RMS g. The mean-field model
 * (docs/batch-size.md#sign-descent-rules) has two
 * structural numbers beyond that: κ₀² (the average of σ_i²/g_i², ε = 0) and the Hessian
 * alignment ρ = C/D at ε = 0 (C = Σ_ij sign(g_ig_j)H_ij, D = tr H; ρ = 1 for a diagonal H).
 * Keel fixes them by two conditions:
 *
 *   1. The measured B_noise is the critical batch of every rule. For sign updates the model gives
 *      E_min/S_min = B_noise2 = πκ²β_n²/(2(1 + β_n²)) = (π/2)κ₀²/ρ (with β_n² = D/(C − D) =
 *      1/(ρ − 1)), which is also exactly the noise scale B̃ of softsign's ε → ∞ SGD limit
 *      (the SoftSign analysis). So (π/2)κ₀² = ρ·B_noise: softsign then tends to the `sgd` rule with the same
 *      B_noise as ε → ∞, and the three rules form one family.
 *   2. κ² defaults to the surge peak: κ₀² = B_peak. With B_peak = B_κ/(ρ − 2) (the SoftSign analysis) and
 *      condition 1 this gives ρ = 2 + π/2 ≈ 3.571, κ₀² = (1 + 4/π)·B_noise ≈ 2.273·B_noise,
 *      β_n² = 1/(1 + π/2) ≈ 0.389, and the optimal LR of sign updates peaks at
 *      B_peak = (1 + 4/π)·B_noise ≈ 2.27·B_noise — "near B_noise", as the surge paper (Li et al.
 *      2024) reports, and consistent with the sign model's 1/B_noise2 − 1/B_peak = 4/(πκ²).
 *      Override with `kappa2` (κ₀², sequences): then ρ = πκ₀²/(2B_noise), and a surge needs
 *      κ₀² > (4/π)·B_noise (ρ > 2). As κ₀² → ∞ the signsgd shape tends to the surge paper's
 *      η_max/[½(√(B_noise/B) + √(B/B_noise))], peaking at B_noise itself.
 *
 * In these terms (B_κ = πκ²/2 and the common factors dropped):
 *   signsgd   f(B) = √(B(B + ρB_noise)) / (B + B_noise)
 *   softsign  ν² = g²/(g² + ε²) (ν = softsign(g, ε), the mean-field ν_i), κ² = κ₀²ν² (κ² averages
 *             σ²/(g² + ε²)), so B_κ = ρν²B_noise and C/D = ρν²:
 *             f(B) = √(B(B + ρν²B_noise)) / (B + B_noise)
 *   - ε = 0 (ν = 1): exactly signsgd.
 *   - ε → ∞ (ν → 0): f → B/(B + B_noise), exactly sgd.
 *   - a surge (peak at B_peak = ρν²B_noise/(ρν² − 2)) exists iff ρν² > 2, i.e. with the default ρ
 *     iff ε < g·√(ρ/2 − 1) = g·√π/2 ≈ 0.886·g: the surge fades as ε grows past the gradient
 *     RMS, as the SoftSign analysis says it must.
 */
import { UserError } from '../errors.ts';

export const SCALING_RULES = ['none', 'linear', 'sqrt', 'sgd', 'signsgd', 'softsign'] as const;
export type ScalingRule = (typeof SCALING_RULES)[number];
/** The rules `keel plan` tabulates (none is the identity). */
export const PLAN_RULES = ['linear', 'sqrt', 'sgd', 'signsgd', 'softsign'] as const;

export interface RuleParams {
  /** The learning rate tuned at baseBatch. */
  baseLr: number;
  /** The batch (sequences) baseLr was tuned at. */
  baseBatch: number;
  /** The gradient noise scale B_noise (sequences): sgd, signsgd, softsign. */
  bNoise?: number;
  /** Adam/SoftSign ε: softsign (0 means signsgd). */
  eps?: number;
  /** RMS of the true gradient per parameter (g of ν = softsign(g, ε)): softsign with ε > 0. */
  gradRms?: number;
  /** κ₀² in sequences (the mean-field σ²/g² at ε = 0); default (1 + 4/π)·B_noise (see above). */
  kappa2?: number;
}

/** Default κ₀²/B_noise: (1 + 4/π), which puts the sign surge peak at κ₀². */
export const KAPPA2_OVER_BNOISE = 1 + 4 / Math.PI;

function isScalingRule(s: string): s is ScalingRule {
  return (SCALING_RULES as readonly string[]).includes(s);
}

function positive(x: number | undefined, what: string, rule: string): number {
  if (x === undefined || !(Number.isFinite(x) && x > 0)) {
    throw new UserError(`scaling rule ${rule}: ${what} must be a positive number${x === undefined ? ' (missing)' : `, got ${x}`}`);
  }
  return x;
}

/** ρ = C/D at ε = 0 from condition 1: (π/2)κ₀² = ρ·B_noise. */
export function signRho(bNoise: number, kappa2?: number): number {
  const k2 = kappa2 ?? KAPPA2_OVER_BNOISE * bNoise;
  return ((Math.PI / 2) * k2) / bNoise;
}

/** ν² = g²/(g² + ε²): the squared mean-field softsign(g, ε). */
export function softsignNu2(eps: number, gradRms: number): number {
  if (eps === 0) return 1;
  const r = eps / gradRms;
  return 1 / (1 + r * r);
}

/**
 * The batch size where the sign-like rule's LR peaks (sequences), or null when it rises
 * monotonically (no surge): ρν²B_noise/(ρν² − 2) when ρν² > 2. ν² = 1 for signsgd.
 */
export function surgePeak(bNoise: number, nu2 = 1, kappa2?: number): number | null {
  const r = signRho(bNoise, kappa2) * nu2;
  return r > 2 ? (r * bNoise) / (r - 2) : null;
}

/** The unnormalised shape f(B) of a rule (any positive factor is irrelevant). */
function ruleShape(rule: ScalingRule, B: number, p: Omit<RuleParams, 'baseLr' | 'baseBatch'>): number {
  switch (rule) {
    case 'none':
      return 1;
    case 'linear':
      return B;
    case 'sqrt':
      return Math.sqrt(B);
    case 'sgd': {
      const bn = positive(p.bNoise, 'B_noise (--noise-scale)', rule);
      return 1 / (1 + bn / B);
    }
    case 'signsgd':
    case 'softsign': {
      const bn = positive(p.bNoise, 'B_noise (--noise-scale)', rule);
      if (p.kappa2 !== undefined) positive(p.kappa2, 'kappa2', rule);
      let nu2 = 1;
      if (rule === 'softsign') {
        const eps = p.eps;
        if (eps === undefined || !(Number.isFinite(eps) && eps >= 0)) {
          throw new UserError(`scaling rule softsign: eps must be a number ≥ 0${eps === undefined ? ' (missing; --eps)' : `, got ${eps}`}`);
        }
        if (eps > 0) nu2 = softsignNu2(eps, positive(p.gradRms, 'the gradient RMS (--grad-rms)', rule));
      }
      const k = signRho(bn, p.kappa2) * nu2 * bn; // B_κ
      return Math.sqrt(B * (B + k)) / (B + bn);
    }
  }
}

/** The learning rate for batch B under `rule`, equal to p.baseLr at B = p.baseBatch. */
export function lrForBatch(rule: ScalingRule, B: number, p: RuleParams): number {
  if (!isScalingRule(rule)) throw new UserError(`unknown scaling rule "${String(rule)}" (expected ${SCALING_RULES.join(', ')})`);
  positive(B, 'the batch size', rule);
  positive(p.baseBatch, 'the base batch (--base-batch)', rule);
  if (!(Number.isFinite(p.baseLr) && p.baseLr >= 0)) throw new UserError(`scaling rule ${rule}: the base learning rate must be a number ≥ 0, got ${p.baseLr}`);
  if (B === p.baseBatch || rule === 'none') return p.baseLr;
  return (p.baseLr * ruleShape(rule, B, p)) / ruleShape(rule, p.baseBatch, p);
}

/** lr(B)/lr(baseBatch): the factor to multiply a schedule's learning rate by at batch B. */
export function lrScale(rule: ScalingRule, B: number, p: Omit<RuleParams, 'baseLr'>): number {
  return lrForBatch(rule, B, { ...p, baseLr: 1 });
}
