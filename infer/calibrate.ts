/**
 * @file The two things a log-loss score is judged by beside the model: the best constant prediction (the 8
 * probabilities that minimise the competition metric over a set of labels, in closed form) and the
 * calibration of a classifier's study probabilities on its validation fold, which keeps of the model's
 * logits only as much as the fold says they are worth.
 *
 * Both use that the metric separates over targets: a study's row weight sum W_s depends on its labels only,
 * so the score is sum_j sum_s (w_sj / W_s) BCE(p_sj, y_sj) / N, one weighted log loss per target.
 *
 * Calibration, per group g (patient_overall; the seven vertebrae together), with pi_j the best constant of
 * the run's labels (train/calibrate.ts: both folds) and m_j the mean logit the model gave target j on the fold:
 * logit q_j = logit pi_j + a_g (logit p_j - m_j), a_g >= 0. The level comes from the labels, the
 * fold decides only how far a study's own output may move it: a = 0 is the best constant exactly, so a
 * model with nothing to say on its fold falls back to the constant instead of scoring worse than it. The
 * slope is one weighted logistic regression parameter per group, solved by Newton's method. No intercept is
 * fitted: on a fold of ~25 studies it would chase the fold's own prevalence (leave-one-study-out on the main
 * job's fold: 0.599 with an intercept, 0.574 without, the best constant 0.558). Pure code, no Deno APIs.
 */
import { TARGETS } from "../data/rsna.ts";
import { labelLoss, PROB_CLIP, sigmoid, targetWeight } from "./metric.ts";

/** A classifier's calibration (see the file's description), as stored in its checkpoint's metadata. */
export interface Calibration {
  /** pi: the best constant of the classifier run's labels (patient_overall, C1..C7). */
  prior: number[];
  /** m: the mean logit of the model per target on the studies it was fitted on. */
  center: number[];
  /** a per group: patient_overall, and the seven vertebrae. */
  slope: { overall: number; vertebrae: number };
  /** Studies it was fitted on (a reader's yardstick). */
  studies: number;
}

const clip = (p: number) => Math.min(PROB_CLIP[1], Math.max(PROB_CLIP[0], p));
const logit = (p: number) => Math.log(p / (1 - p));

/** Each label's share of its study's loss: w_sj / W_s (rows of 8 labels, order patient_overall, C1..C7). */
function rowShares(y: ArrayLike<number>): number[] {
  const w = Array.from({ length: 8 }, (_, j) => targetWeight(j, y[j]));
  const W = w.reduce((a, v) => a + v, 0);
  return w.map((v) => v / W);
}

/**
 * The constant 8 probabilities with the lowest competition score over `labels` (rows of 8 labels 0/1,
 * order patient_overall, C1..C7): per target the positive rate weighted by each label's share of its
 * study's loss, sum_s u_sj y_sj / sum_s u_sj with u_sj = w_sj / W_s, clipped to [0.01, 0.99] like the
 * model's outputs. The metric weighs positives twice, so this sits above the plain positive rate.
 */
export function bestConstant(labels: ArrayLike<number>[]): number[] {
  if (!labels.length) throw new Error("bestConstant: no labels");
  const num = new Float64Array(8), den = new Float64Array(8);
  for (const y of labels) {
    const u = rowShares(y);
    for (let j = 0; j < 8; j++) {
      den[j] += u[j];
      if (y[j]) num[j] += u[j];
    }
  }
  return TARGETS.map((_, j) => clip(num[j] / den[j]));
}

/** One group's weighted samples: offset logit pi, centred model logit z, label, weight. */
interface Samples {
  off: number[];
  z: number[];
  y: number[];
  u: number[];
}

function groupLoss(s: Samples, a: number): number {
  let l = 0;
  for (let i = 0; i < s.z.length; i++) {
    const t = s.off[i] + a * s.z[i];
    // BCE with logits, stable: log(1 + e^t) - y t.
    l += s.u[i] * (Math.max(t, 0) + Math.log1p(Math.exp(-Math.abs(t))) - s.y[i] * t);
  }
  return l;
}

/**
 * The slope a >= 0 minimising the group's weighted log loss plus `ridge` x (its weight) x a^2 / 2: Newton's
 * method with a backtracking line search on a convex function of one variable. The ridge keeps a finite when
 * the fold's studies are separated perfectly.
 */
function fitSlope(s: Samples, ridge: number): number {
  const lam = ridge * s.u.reduce((x, v) => x + v, 0);
  const f = (a: number) => groupLoss(s, a) + 0.5 * lam * a * a;
  let a = 0;
  for (let it = 0; it < 100; it++) {
    let g = lam * a, h = lam;
    for (let i = 0; i < s.z.length; i++) {
      const q = sigmoid(s.off[i] + a * s.z[i]);
      g += s.u[i] * (q - s.y[i]) * s.z[i];
      h += s.u[i] * q * (1 - q) * s.z[i] * s.z[i];
    }
    if (h <= 0) break; // every z is 0: the model said the same for every study, nothing to fit
    const f0 = f(a), d = -g / h;
    let step = 1;
    while (step > 1e-12 && f(Math.max(0, a + step * d)) > f0) step /= 2;
    const next = Math.max(0, a + step * d);
    if (Math.abs(next - a) < 1e-12) break;
    a = next;
  }
  return a;
}

/** The ridge of {@link fitCalibration}: small against a fold's weight, enough to keep a slope finite. */
export const CALIBRATION_RIDGE = 1e-3;

/**
 * Fits a {@link Calibration} to a classifier's study probabilities `pred` (uid -> 8 probabilities, as
 * `aggregateStudy` gives them) against `truth` (uid -> 8 labels) on its validation fold, around `prior`
 * (the best constant of the labels, {@link bestConstant}).
 */
export function fitCalibration(
  pred: Map<string, ArrayLike<number>>,
  truth: Map<string, ArrayLike<number>>,
  prior: readonly number[],
  ridge = CALIBRATION_RIDGE,
): Calibration {
  if (!pred.size) throw new Error("fitCalibration: no studies");
  if (prior.length !== 8) throw new Error(`fitCalibration: prior must have 8 values, got ${prior.length}`);
  const center = new Array(8).fill(0);
  for (const p of pred.values()) {
    if (p.length !== 8) {
      throw new Error(`fitCalibration: 8 probabilities per study expected, got ${p.length}`);
    }
    for (let j = 0; j < 8; j++) center[j] += logit(clip(p[j])) / pred.size;
  }
  const groups: Samples[] = [0, 1].map(() => ({ off: [], z: [], y: [], u: [] }));
  for (const [uid, p] of pred) {
    const y = truth.get(uid);
    if (!y) throw new Error(`fitCalibration: no labels for study ${uid}`);
    const u = rowShares(y);
    for (let j = 0; j < 8; j++) {
      const g = groups[j === 0 ? 0 : 1];
      g.off.push(logit(clip(prior[j])));
      g.z.push(logit(clip(p[j])) - center[j]);
      g.y.push(y[j] ? 1 : 0);
      g.u.push(u[j]);
    }
  }
  return {
    prior: prior.map(clip),
    center,
    slope: { overall: fitSlope(groups[0], ridge), vertebrae: fitSlope(groups[1], ridge) },
    studies: pred.size,
  };
}

/**
 * The competition score of `pred` split by calibration group: [patient_overall's part, the vertebrae's part],
 * which add up to `competitionScore(pred, truth).score` (the metric separates over targets, see above).
 */
export function groupScores(
  pred: Map<string, ArrayLike<number>>,
  truth: Map<string, ArrayLike<number>>,
): [number, number] {
  if (!pred.size) throw new Error("groupScores: no studies");
  const parts: [number, number] = [0, 0];
  for (const [uid, p] of pred) {
    const y = truth.get(uid);
    if (!y) throw new Error(`groupScores: no labels for study ${uid}`);
    const u = rowShares(y);
    for (let j = 0; j < 8; j++) {
      parts[j === 0 ? 0 : 1] += u[j] * labelLoss(p[j], y[j]) / pred.size;
    }
  }
  return parts;
}

/**
 * `c` with the slope of each group set to 0 (the constant) unless its out-of-sample part of the score
 * (`outOfSample`, e.g. {@link groupScores} of leave-one-study-out predictions) is below the constant's
 * (`constant`): a slope fitted on ~25 studies has to show that it carries something before it is used.
 */
export function confirmSlopes(
  c: Calibration,
  outOfSample: readonly [number, number],
  constant: readonly [number, number],
): Calibration {
  return {
    ...c,
    slope: {
      overall: outOfSample[0] < constant[0] ? c.slope.overall : 0,
      vertebrae: outOfSample[1] < constant[1] ? c.slope.vertebrae : 0,
    },
  };
}

/** A study's 8 probabilities through a {@link Calibration}, clipped to [0.01, 0.99]. */
export function applyCalibration(p: ArrayLike<number>, c: Calibration): number[] {
  if (p.length !== 8) throw new Error(`applyCalibration: 8 probabilities expected, got ${p.length}`);
  return Array.from({ length: 8 }, (_, j) => {
    const a = j === 0 ? c.slope.overall : c.slope.vertebrae;
    return clip(sigmoid(logit(c.prior[j]) + a * (logit(clip(p[j])) - c.center[j])));
  });
}

/** Checks a calibration read from a checkpoint's metadata; `where` names the file in the error. */
export function parseCalibration(v: unknown, where: string): Calibration {
  const c = v as Calibration;
  const num = (x: unknown): x is number => typeof x === "number" && Number.isFinite(x);
  const eight = (x: unknown) => Array.isArray(x) && x.length === 8 && x.every(num);
  if (
    !c || !eight(c.prior) || !c.prior.every((p) => p > 0 && p < 1) || !eight(c.center) || !c.slope ||
    !num(c.slope.overall) || !num(c.slope.vertebrae) || !(c.slope.overall >= 0 && c.slope.vertebrae >= 0)
  ) {
    throw new Error(`${where}: malformed calibration in its metadata (${JSON.stringify(v)?.slice(0, 200)})`);
  }
  return { prior: c.prior, center: c.center, slope: c.slope, studies: Number(c.studies) || 0 };
}
