/**
 * @file The competition metric in one place (seed-pipeline.md 4.7 and 6), shared by the classifier's
 * validation, inference and `deno task score`:
 *
 * - {@link aggregateStudy}: a study's crops -> 8 probabilities (sigmoid, max over crops per output, clip to
 *   [0.01, 0.99], as the seed's validation does);
 * - {@link competitionScore}: the weighted log loss, row-normalised per study: weights patient_overall 14 if
 *   positive else 7, each vertebra 2 if positive else 1; L_s = sum_j w_sj BCE(p_sj, y_sj) / sum_j w_sj, score
 *   = mean of L_s over studies.
 *
 * Order of the 8 values everywhere: patient_overall, C1..C7 (data/rsna.ts TARGETS). Pure code, no Deno APIs.
 */
import { TARGETS } from "../data/rsna.ts";

/** The clip range of {@link aggregateStudy} (the seed's validation clip). */
export const PROB_CLIP: [number, number] = [0.01, 0.99];

/** The log(0) guard inside {@link competitionScore}: sklearn's log_loss eps (its default before 1.3). */
export const LOG_EPS = 1e-15;

/** Competition weight of target `j` (0 = patient_overall, 1..7 = C1..C7) with label `y`. */
export function targetWeight(j: number, y: number): number {
  return j === 0 ? (y ? 14 : 7) : (y ? 2 : 1);
}

/** One label's log loss, the probability clamped to [LOG_EPS, 1 - LOG_EPS] as the metric does. */
export function labelLoss(p: number, y: number): number {
  const q = Math.min(1 - LOG_EPS, Math.max(LOG_EPS, p));
  return y ? -Math.log(q) : -Math.log(1 - q);
}

/** The logistic function, without overflow for large |x|. */
export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/**
 * A study's 8 probabilities from the logits of its `k` crops (`logits` row-major [k, 8]): per output the
 * max over crops of the sigmoid (so C3's probability is the max of the C3 output over every crop, all-zero
 * crops of missing vertebrae included), clipped to [0.01, 0.99].
 */
export function aggregateStudy(logits: ArrayLike<number>, k: number): number[] {
  if (!(Number.isInteger(k) && k >= 1)) {
    throw new Error(`aggregateStudy: k must be a positive integer, got ${k}`);
  }
  if (logits.length !== k * 8) {
    throw new Error(`aggregateStudy: ${logits.length} logits, expected k * 8 = ${k * 8}`);
  }
  const out: number[] = [];
  for (let j = 0; j < 8; j++) {
    let m = -Infinity;
    for (let i = 0; i < k; i++) {
      const v = logits[i * 8 + j];
      if (Number.isNaN(v)) throw new Error(`aggregateStudy: logit of crop ${i}, output ${TARGETS[j]} is NaN`);
      if (v > m) m = v;
    }
    // sigmoid is increasing, so the max of the sigmoids is the sigmoid of the max.
    out.push(Math.min(PROB_CLIP[1], Math.max(PROB_CLIP[0], sigmoid(m))));
  }
  return out;
}

/**
 * One study's row-normalised weighted log loss, L_s = sum_j w_sj BCE(p_sj, y_sj) / sum_j w_sj: the term that
 * {@link competitionScore} averages over studies (unchecked: `p` 8 probabilities, `y` 8 labels 0/1).
 */
export function studyLoss(p: ArrayLike<number>, y: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let j = 0; j < 8; j++) {
    const w = targetWeight(j, y[j]);
    num += w * labelLoss(p[j], y[j]), den += w;
  }
  return num / den;
}

/** The result of {@link competitionScore}. */
export interface CompetitionScore {
  /** Mean over studies of each study's row-normalised weighted log loss (lower is better). */
  score: number;
  /** Studies scored. */
  studies: number;
  /**
   * Per target t: the weighted log loss of that target alone over the studies,
   * sum_s w_st BCE(p_st, y_st) / sum_s w_st (sklearn's `log_loss(y, p, sample_weight=w)` on that column).
   */
  perTarget: Record<string, number>;
}

function checkRow(v: ArrayLike<number>, uid: string, what: string, probs: boolean): void {
  if (!v || v.length !== 8) throw new Error(`competitionScore: ${what} of study ${uid} must have 8 values`);
  for (let j = 0; j < 8; j++) {
    const x = v[j];
    if (typeof x !== "number" || !(x >= 0 && x <= 1) || (!probs && x !== 0 && x !== 1)) {
      throw new Error(
        `competitionScore: ${what} of study ${uid}, ${TARGETS[j]} is ${x} (expected ${
          probs ? "a probability in [0, 1]" : "0 or 1"
        })`,
      );
    }
  }
}

/**
 * The competition score of predictions `pred` (uid -> 8 probabilities in [0, 1]) against `truth` (uid -> 8
 * labels 0/1), over the studies of `pred` (every one must be in `truth`; truth studies absent from `pred`
 * are not scored). BCE(p, y) = -(y log p + (1 - y) log(1 - p)) with p clipped to [1e-15, 1 - 1e-15] so p = 0
 * or 1 gives a large finite loss (sklearn's eps), not infinity; this clip is separate from
 * {@link aggregateStudy}'s [0.01, 0.99]. Computed in float64.
 */
export function competitionScore(
  pred: Map<string, ArrayLike<number>>,
  truth: Map<string, ArrayLike<number>>,
): CompetitionScore {
  if (pred.size === 0) throw new Error("competitionScore: no predicted studies");
  const tNum = new Float64Array(8), tDen = new Float64Array(8);
  let total = 0;
  for (const [uid, p] of pred) {
    const y = truth.get(uid);
    if (!y) throw new Error(`competitionScore: study ${uid} is predicted but has no truth labels`);
    checkRow(p, uid, "prediction", true);
    checkRow(y, uid, "truth", false);
    // The study's term as studyLoss computes it (same order of sums), from the same per-target losses.
    let num = 0, den = 0;
    for (let j = 0; j < 8; j++) {
      const w = targetWeight(j, y[j]), l = w * labelLoss(p[j], y[j]);
      tNum[j] += l, tDen[j] += w, num += l, den += w;
    }
    total += num / den;
  }
  const perTarget: Record<string, number> = {};
  TARGETS.forEach((t, j) => perTarget[t] = tNum[j] / tDen[j]);
  return { score: total / pred.size, studies: pred.size, perTarget };
}
