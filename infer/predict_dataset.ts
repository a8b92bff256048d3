/**
 * @file Segmentation of every study of the preprocessing cache (seed steps 3 and 4, `predict_segmentation.py`
 * then `compute_meta.py`): the [::2] 256 cube z-scored with its own statistics, the sliding-window
 * prediction, each level's largest connected component (meta.ts SegPostprocess), the metadata with the full
 * cube's statistics, both stored beside the study. Resumable.
 */
import type { models } from "../mod.ts";
import { readCube, readHeader } from "../data/mod.ts";
import { predictVolume } from "./segment.ts";
import {
  computeMeta,
  DEFAULT_POSTPROCESS,
  postprocessLabels,
  readSegMetaFile,
  type SegPostprocess,
  writeSegPrediction,
} from "./meta.ts";

/** Options of {@link predictDataset}. */
export interface PredictDatasetOptions {
  /** The preprocessing cache folder. */
  cache: string;
  /** Studies to predict. */
  uids: string[];
  /** The ensemble, in eval mode. */
  models: models.CSNUNet[];
  /** What predicts (checkpoint names), stored with each prediction; a study predicted with the same list
   * and post-processing is skipped. */
  weights: string[];
  /** The models' in-plane size when it is not 256 (slices resized bilinearly, labels back nearest). */
  size?: number;
  /** z window (default 384) and overlap (default 128). */
  window?: number;
  overlap?: number;
  /** How the argmax is cleaned before the metadata (default "largest", see {@link SegPostprocess}). */
  postprocess?: SegPostprocess;
  /** Predict again even when a prediction with the same weights and post-processing exists. */
  force?: boolean;
  /** Progress after each study. */
  onStudy?: (p: { uid: string; done: number; total: number; skipped: boolean; seconds: number }) => void;
}

/** Predicts, describes and stores every study; returns which were predicted and which skipped. */
export async function predictDataset(
  o: PredictDatasetOptions,
): Promise<{ predicted: string[]; skipped: string[] }> {
  if (!Array.isArray(o.weights) || o.weights.some((w) => typeof w !== "string")) {
    throw new Error("predictDataset: weights must be a list of strings (what predicts)");
  }
  const predicted: string[] = [], skipped: string[] = [], post = o.postprocess ?? DEFAULT_POSTPROCESS;
  for (let i = 0; i < o.uids.length; i++) {
    const uid = o.uids[i];
    const t0 = performance.now();
    if (!o.force && await samePrediction(o.cache, uid, o.weights, post)) {
      skipped.push(uid);
      o.onStudy?.({ uid, done: i + 1, total: o.uids.length, skipped: true, seconds: 0 });
      continue;
    }
    const h = await readHeader(o.cache, uid);
    const img = await readCube(o.cache, uid, "image_256", { zStep: 2 });
    const pred = await predictVolume(o.models, img, {
      mean: h.mean2,
      std: h.std2,
      window: o.window ?? 384,
      overlap: o.overlap ?? 128,
      padMultiple: 32,
      size: o.size,
    });
    const labels = postprocessLabels(pred.labels, pred.shape, post);
    const meta = computeMeta(labels, pred.shape, { mean: h.mean, std: h.std });
    await writeSegPrediction(o.cache, uid, labels, pred.shape, meta, o.weights, post);
    predicted.push(uid);
    o.onStudy?.({
      uid,
      done: i + 1,
      total: o.uids.length,
      skipped: false,
      seconds: (performance.now() - t0) / 1000,
    });
  }
  return { predicted, skipped };
}

async function samePrediction(
  cache: string,
  uid: string,
  weights: string[],
  post: SegPostprocess,
): Promise<boolean> {
  const f = await readSegMetaFile(cache, uid).catch(() => null);
  return !!f && JSON.stringify(f.weights) === JSON.stringify(weights) && (f.postprocess ?? "none") === post;
}
