/**
 * @file The classifier stage's samples (seed-pipeline.md 3, 4.1-4.3, 7): vertebra crops of the full-resolution
 * cube guided by the predicted segmentation, with the seed's labels (visibility rule) and its weighted sampler.
 *
 * Grids: the predicted labels and their metadata (infer/meta.ts) live on the [::2] z grid x G x G (G = 256);
 * `image_full` is [Z, H, W] at the DICOM's size, read at slices [::2] so that z indices match the mask's.
 * The xy box on the G grid (16 px margin) maps onto the full-resolution grid by the real ratio H/G, W/G
 * (the seed assumes 512 = 2x G, wrong for other sizes, 7.1): rows [floor(y0 H / G), ceil(y1 H / G)); the
 * mask crop is resized nearest (cv2 INTER_NEAREST) to the full-resolution crop size, then image and mask go
 * through the same augmentation (LongestMaxSize S, PadIfNeeded S x S, and in training the random steps).
 * Sizes D (slices, 40) and S (size, 256) are parameters so that tiny presets can shrink them.
 *
 * Everything here is pure computation on host arrays (no Deno APIs), for the loader's Workers and tests:
 * the sampling rules live in infer/crops/rules.ts (re-exported here); infer/crops/read.ts reads the
 * boxes from the cache and calls these builders.
 */
import { applyPlan, type AugmentPlan, cropAugment, drawAugment } from "../data/augment.ts";
import { resizeNearestIndex } from "../data/augment/cv.ts";
import type { StudyMeta } from "./meta.ts";
import type { SliceRect } from "../data/rsna.ts";
import {
  checkLabels,
  type ClsCropGeometry,
  type ClsDataOptions,
  cropXY,
  pickVertebra,
  resolveClsOptions,
  type Rnd,
  trainZRange,
  valZRanges,
  visibleLabels,
} from "./crops/rules.ts";

export {
  checkLabels,
  CLS_DEFAULTS,
  type ClsCropGeometry,
  type ClsDataOptions,
  clsValLabels,
  cropXY,
  pickVertebra,
  resolveClsOptions,
  type Rnd,
  trainZRange,
  valZRanges,
  visibleLabels,
  weightedSampler,
} from "./crops/rules.ts";

/** What {@link drawClsTrainSpec} and the readers need to know of a study. */
export interface ClsStudy {
  uid: string;
  /** CSV labels [overall, C1..C7]. */
  labels: number[];
  meta: StudyMeta;
  /** Shape of image_full [Z, H, W]. */
  full: [number, number, number];
  /** Shape of the predicted labels [ceil(Z / 2), G, G]. */
  grid: [number, number, number];
  /** Statistics of the whole 256 cube (cache header mean / std = the seed's meta image_mean / std). */
  mean: number;
  std: number;
  /**
   * Where its fractures are (train_bounding_boxes.csv on image_full's grid): [] for a study without
   * fractures, null or absent where unknown (a fractured study without boxes).
   */
  fractures?: SliceRect[] | null;
}

/** A training sample's recipe: all a Worker needs to read and build it (JSON-serializable). */
export interface ClsTrainSpec {
  uid: string;
  /** null when the study has no candidate vertebra: the sample is all zeros with all-zero labels. */
  crop: ClsCropGeometry | null;
  /** Slices of the crop fed to the model, relative to crop.z[0] (length <= slices). */
  window: [number, number];
  /** Augmentation drawn for the crop's full-resolution slice size. */
  plan: AugmentPlan | null;
  labels: number[];
  sums: number[];
  grid: [number, number, number];
  mean: number;
  std: number;
  slices: number;
  size: number;
  /** Count the crop's voxels for the visibility rule at S x S, as the seed does (see ClsDataOptions). */
  seedVisibility: boolean;
  /** The study's fracture boxes on the window's slices (null: unknown, the sample gets no fracture map). */
  fractures: SliceRect[] | null;
}

/** A built sample: `input` [3, D, S, S] (image, image, mask 0..7), `labels` [overall, C1..C7]. */
export interface ClsSample {
  input: Float32Array;
  labels: Float32Array;
  shape: [number, number, number, number];
  /** The picked vertebra (null: none). */
  vertebra: number | null;
  /** [D, S, S]: 1 inside a fracture box, augmented as the image (null: the study's fractures are unknown). */
  fractures: Uint8Array | null;
}

function clipZ(r: [number, number], Z2: number): [number, number] {
  return [Math.min(r[0], Z2), Math.min(r[1], Z2)];
}

/**
 * Draws a training sample of `study` (seed 4.1): the vertebra ({@link pickVertebra}), its z range
 * ({@link trainZRange}, clipped to the volume), the augmentation (seed 4.4, one draw for every slice), and
 * the D-slice window, uniform over all starts when the crop is longer than D. Draws in that order.
 */
export function drawClsTrainSpec(study: ClsStudy, rnd: Rnd, o: ClsDataOptions = {}): ClsTrainSpec {
  const r = resolveClsOptions(o);
  checkLabels(study.labels, `drawClsTrainSpec(${study.uid})`);
  const base = {
    uid: study.uid,
    labels: [...study.labels],
    sums: [...study.meta.sums],
    grid: study.grid,
    mean: study.mean,
    std: study.std,
    slices: r.slices,
    size: r.size,
    seedVisibility: r.seedVisibility,
    fractures: study.fractures ? [] as SliceRect[] : null,
  };
  const v = pickVertebra(study.meta, study.labels, rnd, r);
  if (v === null) return { ...base, crop: null, window: [0, 0], plan: null };
  const box = study.meta.boxes[String(v)][0];
  const xy = cropXY(box, [study.full[1], study.full[2]], { margin: r.margin, grid: study.grid[1] });
  const z = clipZ(trainZRange(box[0], box[3], r.slices, rnd), study.grid[0]);
  const plan = drawAugment(
    cropAugment({ train: true, size: r.size }),
    rnd,
    xy.yFull[1] - xy.yFull[0],
    xy.xFull[1] - xy.xFull[0],
  );
  const n = z[1] - z[0];
  let window: [number, number] = [0, n];
  if (n > r.slices) {
    const a = Math.min(n - r.slices, Math.floor(rnd() * (n - r.slices + 1)));
    window = [a, a + r.slices];
  }
  // image_full slices 2 (z0 + a) .. 2 (z0 + b - 1): the only boxes the sample can show
  const zs = [2 * (z[0] + window[0]), 2 * (z[0] + window[1])];
  const fractures = study.fractures?.filter((f) => f.z >= zs[0] && f.z < zs[1] && f.z % 2 === 0) ?? null;
  return { ...base, crop: { vertebra: v, z, ...xy }, window, plan, fractures };
}

/** The boxes of `rects` on the window's slices of a crop, as a [w, fh, fw] 0/1 map of its full-resolution box. */
function fractureCrop(
  rects: readonly SliceRect[],
  c: ClsCropGeometry,
  window: [number, number],
): Uint8Array {
  const [a, b] = window, w = b - a;
  const fh = c.yFull[1] - c.yFull[0], fw = c.xFull[1] - c.xFull[0];
  const out = new Uint8Array(w * fh * fw);
  for (const f of rects) {
    const k = f.z / 2 - c.z[0] - a;
    if (!Number.isInteger(k) || k < 0 || k >= w) continue;
    const y0 = Math.max(f.y[0], c.yFull[0]) - c.yFull[0], y1 = Math.min(f.y[1], c.yFull[1]) - c.yFull[0];
    const x0 = Math.max(f.x[0], c.xFull[0]) - c.xFull[0], x1 = Math.min(f.x[1], c.xFull[1]) - c.xFull[0];
    for (let y = y0; y < y1; y++) if (x1 > x0) out.fill(1, (k * fh + y) * fw + x0, (k * fh + y) * fw + x1);
  }
  return out;
}

/** The mask crop [n, mh, mw] on the meta grid resized nearest (cv2 INTER_NEAREST) to [n, fh, fw]. */
export function upsampleMask(
  mask: Uint8Array,
  n: number,
  from: [number, number],
  to: [number, number],
): Uint8Array {
  const [mh, mw] = from, [fh, fw] = to;
  if (mask.length !== n * mh * mw) {
    throw new Error(`upsampleMask: ${mask.length} values, expected [${n}, ${from}]`);
  }
  if (mh === fh && mw === fw) return mask;
  const idx = resizeNearestIndex(mh, mw, fh, fw), out = new Uint8Array(n * fh * fw);
  for (let z = 0; z < n; z++) {
    const src = z * mh * mw, dst = z * fh * fw;
    for (let i = 0; i < idx.length; i++) out[dst + i] = mask[src + idx[i]];
  }
  return out;
}

function cropDims(c: ClsCropGeometry) {
  return {
    n: c.z[1] - c.z[0],
    mh: c.y[1] - c.y[0],
    mw: c.x[1] - c.x[0],
    fh: c.yFull[1] - c.yFull[0],
    fw: c.xFull[1] - c.xFull[0],
  };
}

/**
 * Channels (image, image, mask) of `w` augmented S x S slices into [3, D, S, S], zeros after slice w; into
 * `out` when given (it must hold zeros after slice w of each channel, as a new array does).
 */
function assemble(
  image: Float32Array,
  mask: Uint8Array,
  w: number,
  o: { mean: number; std: number; slices: number; size: number },
  out: Float32Array = new Float32Array(3 * o.slices * o.size * o.size),
): Float32Array {
  const S = o.size, D = o.slices, plane = S * S, vol = D * plane;
  const inv = 1 / o.std;
  for (let i = 0; i < w * plane; i++) {
    const v = (image[i] - o.mean) * inv;
    out[i] = v;
    out[vol + i] = v;
    out[2 * vol + i] = mask[i];
  }
  return out;
}

function checkStats(mean: number, std: number, where: string): void {
  if (!Number.isFinite(mean) || !(std > 0)) throw new Error(`${where}: needs a finite mean and std > 0`);
}

/**
 * Builds a training sample from the raw voxels of its boxes: `image` [w, fh, fw] the full-resolution crop
 * of the window's slices only (w = window length; slices [::2] of image_full), `mask` [n, mh, mw] the
 * predicted labels of every slice of the crop on the meta grid. The mask is resized to fh x fw, both are
 * augmented with the spec's plan, labels follow {@link visibleLabels} on the whole augmented mask, the image
 * is z-scored (padding from PadIfNeeded is raw 0, so -mean/std) and the window zero-padded to D slices.
 */
export function buildClsTrainSample(
  spec: ClsTrainSpec,
  image: ArrayLike<number>,
  mask: Uint8Array,
): ClsSample {
  const S = spec.size, D = spec.slices;
  const shape: [number, number, number, number] = [3, D, S, S];
  if (!spec.crop) {
    return {
      input: new Float32Array(3 * D * S * S),
      labels: visibleLabels(spec.labels, new Array(8).fill(0), spec.sums),
      shape,
      vertebra: null,
      fractures: spec.fractures ? new Uint8Array(D * S * S) : null,
    };
  }
  const where = `buildClsTrainSample(${spec.uid})`;
  checkStats(spec.mean, spec.std, where);
  const { n, mh, mw, fh, fw } = cropDims(spec.crop);
  const [a, b] = spec.window, w = b - a;
  if (!(0 <= a && a <= b && b <= n && w <= D)) {
    throw new Error(`${where}: window [${a}, ${b}) does not fit a crop of ${n} slices and D = ${D}`);
  }
  if (image.length !== w * fh * fw) {
    throw new Error(`${where}: image has ${image.length} values, expected [${w}, ${fh}, ${fw}]`);
  }
  if (mask.length !== n * mh * mw) {
    throw new Error(`${where}: mask has ${mask.length} values, expected [${n}, ${mh}, ${mw}]`);
  }
  const plan = spec.plan;
  if (!plan || plan.height !== fh || plan.width !== fw || plan.outHeight !== S || plan.outWidth !== S) {
    throw new Error(`${where}: the plan must map ${fh}x${fw} slices to ${S}x${S}`);
  }
  const up = upsampleMask(mask, n, [mh, mw], [fh, fw]), fp = fh * fw;
  const win = applyPlan(plan, Float32Array.from(image), up.subarray(a * fp, b * fp), [w, fh, fw]);
  const counts = new Array(8).fill(0);
  const count = (m: Uint8Array) => {
    for (let i = 0; i < m.length; i++) if (m[i] >= 1 && m[i] <= 7) counts[m[i]]++;
  };
  count(win.mask!);
  // The rule counts every slice of the crop, also those outside the window: their masks are augmented
  // with the same plan (a zero image rides along, applyPlan needs one).
  if (n > w) {
    const rest = new Uint8Array((n - w) * fp);
    rest.set(up.subarray(0, a * fp));
    rest.set(up.subarray(b * fp), a * fp);
    count(applyPlan(plan, new Float32Array(rest.length), rest, [n - w, fh, fw]).mask!);
  }
  // LongestMaxSize took the crop's longer side from max(mh, mw) meta-grid pixels to S: undo its area scale
  // so that counts and sums are both meta-grid voxels.
  const toMeta = spec.seedVisibility ? 1 : (Math.max(mh, mw) / S) ** 2;
  let fractures: Uint8Array | null = null;
  if (spec.fractures) {
    // the map rides the plan as a mask (nearest), as the predicted labels do
    const m = fractureCrop(spec.fractures, spec.crop, spec.window);
    fractures = new Uint8Array(D * S * S);
    fractures.set(applyPlan(plan, new Float32Array(m.length), m, [w, fh, fw]).mask!);
  }
  return {
    input: assemble(win.image, win.mask!, w, spec),
    labels: visibleLabels(spec.labels, counts.map((c) => c * toMeta), spec.sums),
    shape,
    vertebra: spec.crop.vertebra,
    fractures,
  };
}

/** One crop of a validation item: a vertebra and its boxes (null: no predicted box, an all-zero crop). */
export interface ClsValCrop {
  vertebra: number;
  crop: ClsCropGeometry | null;
}

/**
 * The crops of a study's validation item (seed 4.2), vertebra by vertebra C1..C7: an all-zero crop when the
 * vertebra has no predicted box, else one crop per range of {@link valZRanges} (clipped to the volume).
 */
export function clsValCrops(study: ClsStudy, o: ClsDataOptions = {}): ClsValCrop[] {
  const r = resolveClsOptions(o);
  const out: ClsValCrop[] = [];
  for (let c = 1; c <= 7; c++) {
    const b = study.meta.boxes[String(c)];
    if (!b) {
      out.push({ vertebra: c, crop: null });
      continue;
    }
    const xy = cropXY(b[0], [study.full[1], study.full[2]], { margin: r.margin, grid: study.grid[1] });
    for (const z of valZRanges(b[0][0], b[0][3], r.slices, r.seedValBug)) {
      out.push({ vertebra: c, crop: { vertebra: c, z: clipZ(z, study.grid[0]), ...xy } });
    }
  }
  return out;
}

/**
 * Builds one validation crop [3, D, S, S] from `image` [n, fh, fw] (full resolution, slices [::2]) and
 * `mask` [n, mh, mw] (meta grid) of its boxes (n <= D): val transforms only (LongestMaxSize S, PadIfNeeded S),
 * z-scored, zero-padded to D slices. A null crop gives zeros. `out` (3 D S S zeros, e.g. a view of a study's
 * crop stack) receives it in place of a new array: a seed-size crop is 31 MB, copied once less.
 */
export function buildClsValCrop(
  crop: ClsCropGeometry | null,
  image: ArrayLike<number>,
  mask: Uint8Array,
  o: { mean: number; std: number; slices: number; size: number },
  out?: Float32Array,
): Float32Array {
  const S = o.size, D = o.slices;
  if (out && out.length !== 3 * D * S * S) {
    throw new Error(`buildClsValCrop: out has ${out.length} values, expected [3, ${D}, ${S}, ${S}]`);
  }
  if (!crop) return out ?? new Float32Array(3 * D * S * S);
  checkStats(o.mean, o.std, "buildClsValCrop");
  const { n, mh, mw, fh, fw } = cropDims(crop);
  if (n > D) throw new Error(`buildClsValCrop: crop of ${n} slices is longer than D = ${D}`);
  if (image.length !== n * fh * fw || mask.length !== n * mh * mw) {
    throw new Error(
      `buildClsValCrop: image/mask have ${image.length}/${mask.length} values, expected [${n}, ${fh}, ${fw}] / [${n}, ${mh}, ${mw}]`,
    );
  }
  // The val transforms draw nothing random.
  const plan = drawAugment(cropAugment({ train: false, size: S }), () => 0, fh, fw);
  const up = upsampleMask(mask, n, [mh, mw], [fh, fw]);
  const r = applyPlan(plan, Float32Array.from(image), up, [n, fh, fw]);
  return assemble(r.image, r.mask!, n, o, out);
}
