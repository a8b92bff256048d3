/**
 * @file Learning-rate schedules stepped per iteration (gradient-norm clipping is in clip.ts).
 */

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
