/**
 * @file The task's losses, built from `F` ops: the RSNA 2022 competition loss (row-weighted BCE) and the
 * seed segmentor's loss (focal + 0.1 x soft Jaccard with the min-pixels rule, see
 * shared/docs/seed-pipeline.md section 2.3).
 */
import type { Tensor } from "../core/tensor.ts";
import { arange } from "../kernels/creation.ts";
import { add, cast, div, eq, mul } from "../kernels/elementwise/mod.ts";
import { focalJaccardLoss, type FocalJaccardOptions } from "../kernels/focal_jaccard.ts";
import { bceWithLogits } from "../kernels/loss.ts";
import { mean, sum } from "../kernels/reduce.ts";

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

/** Options of {@link segLoss} (fgWeight above 1 keeps the few vertebra voxels from being drowned by the
 * background in a short training run; the seed's is 1). */
export type SegLossOptions = FocalJaccardOptions;

/**
 * The seed segmentor's loss on logits [N, C, D, H, W] and i32 labels [N, D, H, W] (0 = background):
 * focal loss (mean over non-ignored voxels of -w (1 - p_t)^gamma log p_t, w = fgWeight at vertebra voxels,
 * 1 elsewhere) + jaccardWeight x the soft Jaccard
 * loss over classes 1..C-1, where per sample only classes with more than minPixels target voxels count, a
 * sample without any is dropped, and the batch term is 0 if every sample is dropped. Fused: four dispatches
 * (kernels/focal_jaccard.ts).
 */
export function segLoss(logits: Tensor, target: Tensor, opts: SegLossOptions = {}): Tensor {
  return focalJaccardLoss(logits, target, opts);
}
