/**
 * @file How far a score's difference from its baseline can be trusted: a paired bootstrap over studies. The
 * competition score is a mean of per-study losses (infer/metric.ts studyLoss), so resampling the studies with
 * replacement and averaging each resample's per-study differences gives the difference's spread; an interval
 * that holds 0 means the scored studies cannot tell the model from the baseline.
 */
import { mulberry32 } from "../core/random.ts";

/** A mean difference with its percentile bootstrap interval. */
export interface PairedInterval {
  /** mean(a) - mean(b) over the studies. */
  difference: number;
  /** Lower and upper ends of the `level` percentile interval of the resampled differences. */
  low: number;
  high: number;
  /** Coverage of [low, high], e.g. 0.95. */
  level: number;
  resamples: number;
  studies: number;
}

/**
 * The paired percentile bootstrap of mean(a - b): `resamples` draws of n studies with replacement (a
 * seeded generator, so the interval repeats), the interval between the (1 - level) / 2 and (1 + level) / 2
 * quantiles of their mean differences (nearest rank).
 */
export function pairedBootstrap(
  a: readonly number[],
  b: readonly number[],
  o: { resamples?: number; level?: number; seed?: number } = {},
): PairedInterval {
  const n = a.length, resamples = o.resamples ?? 2000, level = o.level ?? 0.95;
  if (n === 0 || b.length !== n) {
    throw new Error(
      `pairedBootstrap: needs two equal, non-empty lists of per-study values (${n} and ${b.length})`,
    );
  }
  if (!(level > 0 && level < 1) || !(Number.isInteger(resamples) && resamples >= 1)) {
    throw new Error(`pairedBootstrap: level must be in (0, 1) and resamples a positive integer`);
  }
  const d = a.map((v, i) => v - b[i]);
  const rng = mulberry32(o.seed ?? 0);
  const means = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += d[Math.floor(rng() * n)];
    means[r] = s / n;
  }
  means.sort();
  const at = (q: number) => means[Math.min(resamples - 1, Math.max(0, Math.round(q * (resamples - 1))))];
  return {
    difference: d.reduce((x, y) => x + y, 0) / n,
    low: at((1 - level) / 2),
    high: at((1 + level) / 2),
    level,
    resamples,
    studies: n,
  };
}

/** A round-off difference (a calibration that fell back to the constant) is no difference. */
const NO_DIFFERENCE = 1e-9;

function signed(v: number): string {
  const r = Number(v.toFixed(3)); // -0.0001 prints as +0.000, not -0.000
  return `${r < 0 ? "-" : "+"}${Math.abs(r).toFixed(3)}`;
}

/**
 * "difference -0.041, 95 % interval -0.080 to -0.004 over 32 studies: better than the constant" ("within the
 * noise" when the interval holds 0, "worse than the constant" when it lies above 0).
 */
export function differenceText(d: PairedInterval): string {
  const verdict = d.high < 0
    ? "better than the constant"
    : d.low > 0
    ? "worse than the constant"
    : Math.abs(d.low) < NO_DIFFERENCE && Math.abs(d.high) < NO_DIFFERENCE
    ? "the constant's own score"
    : "within the noise";
  return `difference ${signed(d.difference)}, ${Math.round(d.level * 100)} % interval ${signed(d.low)} to ${
    signed(d.high)
  } over ${d.studies} studies: ${verdict}`;
}
