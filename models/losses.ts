/**
 * @file The task's losses, built from `F` ops: the RSNA 2022 competition loss (row-weighted BCE) and the
 * seed segmentor's loss (focal + 0.1 x soft Jaccard with the min-pixels rule, see
 * shared/docs/seed-pipeline.md section 2.3).
 */
import type { Tensor } from "../core/tensor.ts";
import { arange } from "../kernels/creation.ts";
import { add, cast, div, eq, exp, gt, maximum, mul, ne, neg, pow, sub } from "../kernels/elementwise/mod.ts";
import { bceWithLogits, nllLoss } from "../kernels/loss.ts";
import { mean, sum } from "../kernels/reduce.ts";
import { narrow } from "../kernels/slice.ts";
import { logSoftmax } from "../kernels/softmax.ts";

/**
 * The RSNA 2022 competition loss on logits [B, 8] (patient_overall, C1..C7) and 0/1 targets: per row,
 * weighted BCE with weights 7 / 14 (overall, negative / positive) and 1 / 2 (vertebrae), divided by the row's
 * weight sum, then averaged over rows.
 */
export function rsnaLoss(logits: Tensor, target: Tensor): Tensor {
  const op = "models.rsnaLoss";
  if (logits.ndim !== 2 || logits.shape[1] !== 8) {
    throw new Error(`${op}: logits must be [B, 8], got [${logits.shape}]`);
  }
  const bce = bceWithLogits(logits, target, { reduction: "none" });
  // weight = (1 + t) * (7 for column 0, else 1), built on the GPU.
  const col0 = cast(eq(arange(8, { device: logits.device, dtype: "i32" }), 0), "f32");
  const colScale = add(mul(col0, 6), 1);
  const w = mul(add(target, 1), colScale);
  const row = div(sum(mul(w, bce), 1), sum(w, 1));
  return mean(row);
}

/** Options of {@link segLoss}. */
export interface SegLossOptions {
  /** Focal exponent (default 2). */
  gamma?: number;
  /** Weight of the Jaccard term (default 0.1). */
  jaccardWeight?: number;
  /** A class counts in the Jaccard term only if it has more target voxels than this (default 16). */
  minPixels?: number;
  /** Smoothing of the Jaccard ratio (default 1e-4). */
  eps?: number;
  /** Ignored target value (default 255). */
  ignoreIndex?: number;
  /**
   * Weight of the focal term at foreground voxels (target > 0; default 1, the seed's). Above 1 it keeps the
   * few vertebra voxels from being drowned by the background in a short training run.
   */
  fgWeight?: number;
}

/**
 * The seed segmentor's loss on logits [N, C, D, H, W] and i32 labels [N, D, H, W] (0 = background):
 * focal loss (mean over non-ignored voxels of -w (1 - p_t)^gamma log p_t, w = fgWeight at vertebra voxels,
 * 1 elsewhere) + jaccardWeight x the soft Jaccard
 * loss over classes 1..C-1, where per sample only classes with more than minPixels target voxels count, a
 * sample without any is dropped, and the batch term is 0 if every sample is dropped.
 */
export function segLoss(logits: Tensor, target: Tensor, opts: SegLossOptions = {}): Tensor {
  const op = "models.segLoss";
  if (logits.ndim < 3) throw new Error(`${op}: logits must be [N, C, ...], got [${logits.shape}]`);
  const gamma = opts.gamma ?? 2, jw = opts.jaccardWeight ?? 0.1, minPixels = opts.minPixels ?? 16;
  const eps = opts.eps ?? 1e-4, ignore = opts.ignoreIndex ?? 255;
  const [N, C] = logits.shape;
  const S = logits.numel() / (N * C);
  const logp = logSoftmax(logits, 1);
  // log p_t, 0 at ignored voxels (negation is exact).
  const lpt = neg(nllLoss(logp, target, { ignoreIndex: ignore, reduction: "none" }));
  const valid = cast(ne(target, ignore), "f32");
  const fgW = opts.fgWeight ?? 1;
  const weight = fgW === 1 ? valid : mul(valid, add(1, mul(cast(gt(target, 0), "f32"), fgW - 1)));
  const focalTerms = mul(mul(pow(sub(1, exp(lpt)), gamma), lpt), weight);
  const focal = div(neg(sum(focalTerms)), maximum(sum(valid), 1));
  const p = exp(logp).reshape([N, C, S]);
  const t3 = target.reshape([N, 1, S]);
  const onehot = cast(eq(t3, arange(C, { device: logits.device, dtype: "i32" }).reshape([1, C, 1])), "f32");
  const pv = mul(p, valid.reshape([N, 1, S]));
  const I = sum(mul(pv, onehot), 2);
  const P = sum(pv, 2);
  const T = sum(onehot, 2);
  const J = sub(1, div(add(I, eps), add(sub(add(P, T), I), eps)));
  const Jc = narrow(J, 1, 1, C - 1), Tc = narrow(T, 1, 1, C - 1);
  const m = cast(gt(Tc, minPixels), "f32");
  const k = sum(m, 1);
  const per = div(sum(mul(m, Jc), 1), maximum(k, 1));
  const v = cast(gt(k, 0), "f32");
  const jac = div(sum(mul(v, per)), maximum(sum(v), 1));
  return add(focal, mul(jac, jw));
}
