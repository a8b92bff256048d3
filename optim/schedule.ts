/**
 * @file Learning-rate schedules stepped per iteration, and global gradient-norm clipping.
 */
import type { Tensor } from "../core/tensor.ts";
import { keep } from "../core/scope.ts";
import { noGrad } from "../core/autograd.ts";
import { add, clamp, div, mul, sqrt } from "../kernels/elementwise/mod.ts";
import { sum } from "../kernels/reduce.ts";

/** Options of {@link cosineSchedule}. */
export interface CosineOptions {
  lrMax: number;
  etaMin?: number;
  /** T_max: steps from the end of warmup to etaMin. */
  totalSteps: number;
  /** Linear warmup steps from 0 to lrMax (default 0). */
  warmup?: number;
}

/**
 * lr(t) = etaMin + (lrMax - etaMin) (1 + cos(pi t / T)) / 2 after an optional linear warmup, as
 * `CosineAnnealingLR` stepped once per iteration (the seed's "cosine, mode step"). Past T it follows the
 * cosine back up, as PyTorch's does.
 */
export function cosineSchedule(o: CosineOptions): (step: number) => number {
  const etaMin = o.etaMin ?? 0, warm = o.warmup ?? 0;
  if (!(o.totalSteps > 0)) {
    throw new Error(`cosineSchedule: totalSteps must be positive, got ${o.totalSteps}`);
  }
  return (step: number) => {
    if (step < warm) return (o.lrMax * (step + 1)) / warm;
    const t = step - warm;
    return etaMin + ((o.lrMax - etaMin) * (1 + Math.cos((Math.PI * t) / o.totalSteps))) / 2;
  };
}

/**
 * Scales all gradients in place so that their global L2 norm is at most `maxNorm` (PyTorch's
 * `clip_grad_norm_`: coefficient maxNorm / (norm + 1e-6), clamped to 1). Returns the norm before clipping as
 * a 1-element tensor (read it only when needed: every read waits for the GPU).
 */
export function clipGradNorm(params: Tensor[], maxNorm: number): Tensor {
  return noGrad(() => {
    const gs = params.map((p) => p.grad).filter((g): g is Tensor => !!g);
    if (!gs.length) throw new Error("clipGradNorm: no parameter has a gradient");
    let total: Tensor | null = null;
    for (const g of gs) {
      const s = sum(mul(g, g));
      total = total ? add(total, s) : s;
    }
    const norm = sqrt(total!);
    const coef = clamp(div(maxNorm, add(norm, 1e-6)), null, 1);
    for (const g of gs) {
      const scaled = mul(g, coef);
      g.assign(scaled);
      scaled.dispose();
    }
    return keep(norm);
  });
}
