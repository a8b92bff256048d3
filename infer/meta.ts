/**
 * @file Per-study metadata from a predicted label volume (seed spec 3, `compute_meta.py`) and its storage
 * beside the study in the preprocessing cache:
 *
 *   <cache>/<uid>/seg_pred.raw   uint8 labels [ceil(Z/2), 256, 256] (the [::2] grid)
 *   <cache>/<uid>/seg_meta.json  {shape, meta, weights, created}
 *
 * Both are written atomically (temporary file renamed into place); seg_meta.json is written last, so its
 * presence marks a complete prediction.
 */
import { keepLargestComponents, labelBoxes } from "../data/mod.ts";
import { writeFileAtomic } from "../io/files.ts";

/** Bounding box [z0, y0, x0, z1, y1, x1] (upper bounds exclusive) and voxel count of one label. */
export type MetaBox = [[number, number, number, number, number, number], number];

/** The seed's meta.json entry of one study (same key names). */
export interface StudyMeta {
  /** Voxel count of labels 1..7 (sums[0] = 0). */
  sums: number[];
  /** Per label value present (key "1".."7"): every voxel of the label forms one region. */
  boxes: Record<string, MetaBox>;
  /** Mean and std of the full-Z 256 image cube. */
  image_mean: number;
  image_std: number;
}

/** Contents of seg_meta.json. */
export interface SegMetaFile {
  shape: [number, number, number];
  meta: StudyMeta;
  /** What predicted it (checkpoint names). */
  weights: string[];
  /** How the argmax was cleaned before the metadata (absent in files written before: "none"). */
  postprocess?: SegPostprocess;
  /** ISO time of writing. */
  created: string;
}

function checkVolume(labels: Uint8Array, shape: readonly number[], where: string): [number, number, number] {
  if (!(labels instanceof Uint8Array)) throw new Error(`${where}: labels must be a Uint8Array`);
  if (!Array.isArray(shape) || shape.length !== 3 || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`${where}: shape must be [Z, H, W] of non-negative integers, got [${shape}]`);
  }
  if (labels.length !== shape[0] * shape[1] * shape[2]) {
    throw new Error(`${where}: ${labels.length} labels do not fill shape [${shape}]`);
  }
  return shape as [number, number, number];
}

/**
 * The seed's compute_meta for one study: voxel counts of labels 1..7, and per non-zero label value present
 * its bounding box (all voxels of the label as one region, like skimage regionprops on the label volume)
 * and area, plus the image statistics given.
 */
export function computeMeta(
  labels: Uint8Array,
  shape: readonly number[],
  imageStats: { mean: number; std: number },
): StudyMeta {
  const shp = checkVolume(labels, shape, "computeMeta");
  const found = labelBoxes(labels, shp);
  const sums = [0];
  for (let c = 1; c <= 7; c++) sums.push(found.get(c)?.area ?? 0);
  const boxes: Record<string, MetaBox> = {};
  for (const v of [...found.keys()].sort((a, b) => a - b)) {
    const b = found.get(v)!;
    boxes[String(v)] = [[b.z0, b.y0, b.x0, b.z1, b.y1, b.x1], b.area];
  }
  return { sums, boxes, image_mean: imageStats.mean, image_std: imageStats.std };
}

/**
 * How a predicted label volume is cleaned before its metadata and crops: "largest" keeps each level's
 * largest 26-connected component (MONAI's `KeepLargestConnectedComponent`), so islands of a level's label on
 * its neighbours no longer stretch its box and move its crop onto another vertebra (on 300 unseen phantoms
 * the box centre lands in its level for 97 % of vertebrae instead of 80 %, docs/recipe.md); "none" keeps
 * the argmax as it is, as the seed does.
 */
export type SegPostprocess = "largest" | "none";

/** The post-processing predict-seg and infer apply unless told otherwise (`--all-components`: "none"). */
export const DEFAULT_POSTPROCESS: SegPostprocess = "largest";

/** Applies a {@link SegPostprocess} to labels [Z, H, W]; "none" returns `labels` itself. */
export function postprocessLabels(
  labels: Uint8Array,
  shape: readonly number[],
  how: SegPostprocess,
): Uint8Array {
  if (how === "none") return labels;
  if (how !== "largest") throw new Error(`postprocessLabels: unknown post-processing "${how}"`);
  return keepLargestComponents(labels, checkVolume(labels, shape, "postprocessLabels"));
}

/** Paths of a study's prediction files. */
export function segPaths(cache: string, uid: string): { raw: string; meta: string } {
  return { raw: `${cache}/${uid}/seg_pred.raw`, meta: `${cache}/${uid}/seg_meta.json` };
}

/**
 * Stores a predicted label volume and its metadata beside the study in the cache (the study folder must
 * exist): seg_pred.raw first, then seg_meta.json, each written atomically. `postprocess` records how the
 * labels were cleaned (default "none").
 */
export async function writeSegPrediction(
  cache: string,
  uid: string,
  labels: Uint8Array,
  shape: readonly number[],
  meta: StudyMeta,
  weights: string[],
  postprocess: SegPostprocess = "none",
): Promise<void> {
  const shp = checkVolume(labels, shape, `writeSegPrediction(${uid})`);
  const p = segPaths(cache, uid);
  const dir = `${cache}/${uid}`;
  const st = await Deno.stat(dir).catch(() => null);
  if (!st?.isDirectory) throw new Error(`${dir}: study folder does not exist in the cache`);
  await writeFileAtomic(p.raw, labels, "predicted labels");
  const file: SegMetaFile = {
    shape: [...shp],
    meta,
    weights: [...weights],
    postprocess,
    created: new Date().toISOString(),
  };
  await writeFileAtomic(p.meta, new TextEncoder().encode(JSON.stringify(file)), "prediction metadata");
}

/** Reads a study's seg_meta.json; errors name the path. */
export async function readSegMetaFile(cache: string, uid: string): Promise<SegMetaFile> {
  const path = segPaths(cache, uid).meta;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: no segmentation prediction for study ${uid} (${(e as Error).message})`);
  }
  let f: SegMetaFile;
  try {
    f = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (
    !Array.isArray(f?.shape) || f.shape.length !== 3 || !f.meta || !Array.isArray(f.meta.sums) ||
    !Array.isArray(f.weights)
  ) {
    throw new Error(`${path}: missing shape, meta or weights`);
  }
  return f;
}

/** Reads a stored prediction: labels [Z, H, W] with its shape and metadata. */
export async function readSegPrediction(
  cache: string,
  uid: string,
): Promise<{ labels: Uint8Array; shape: [number, number, number]; meta: StudyMeta }> {
  const f = await readSegMetaFile(cache, uid);
  const path = segPaths(cache, uid).raw;
  const labels = await Deno.readFile(path).catch((e) => {
    throw new Error(`${path}: cannot read the predicted labels (${(e as Error).message})`);
  });
  const n = f.shape[0] * f.shape[1] * f.shape[2];
  if (labels.length !== n) {
    throw new Error(`${path}: ${labels.length} bytes, seg_meta.json shape [${f.shape}] needs ${n}`);
  }
  return { labels, shape: f.shape, meta: f.meta };
}

/** The seed's meta.json entry of one study, from its seg_meta.json. */
export async function readStudyMeta(cache: string, uid: string): Promise<StudyMeta> {
  return (await readSegMetaFile(cache, uid)).meta;
}
