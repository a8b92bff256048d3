/**
 * @file The classifier samples' reading side: a study's geometry and statistics (cache header +
 * seg_meta.json, or an in-memory study), and only the boxes a crop needs (image_full at slices [::2], the
 * predicted labels) read through a `CubeSource` (infer/cube_source.ts: the cache or memory), then built with
 * the pure code of infer/crops.ts. The cache-based entry points are thin wrappers over the source-based
 * ones.
 */
import { readHeader } from "../../data/cache.ts";
import { type BoundingBox, boxRects } from "../../data/rsna.ts";
import { readSegMetaFile, segPaths, type StudyMeta } from "../meta.ts";
import { type BoxReader, cacheBoxReader, type CubeSource, memorySource, readRawBox } from "../cube_source.ts";
import type { InMemoryStudy } from "../study.ts";
import {
  buildClsTrainSample,
  buildClsValCrop,
  CLS_DEFAULTS,
  type ClsCropGeometry,
  type ClsDataOptions,
  type ClsSample,
  type ClsStudy,
  type ClsTrainSpec,
  clsValCrops,
  clsValLabels,
} from "../crops.ts";

/**
 * A study's geometry and statistics for the classifier: image_full's shape and the whole 256 cube's
 * mean/std from header.json, the prediction's shape and metadata from seg_meta.json, with `labels` (CSV
 * [overall, C1..C7]). The prediction must cover ceil(Z / 2) slices of the cube. With `boxes` (its rows of
 * train_bounding_boxes.csv; null: the file has none for it) the study knows where its fractures are: a
 * study without fractures has none, a fractured one those boxes, or unknown without them.
 */
export async function readClsStudy(
  cache: string,
  uid: string,
  labels: number[],
  boxes?: BoundingBox[] | null,
): Promise<ClsStudy> {
  const h = await readHeader(cache, uid);
  const full = h.cubes.image_full;
  if (!full) throw new Error(`${cache}/${uid}/header.json: study ${uid} has no image_full cube`);
  const f = await readSegMetaFile(cache, uid);
  const path = segPaths(cache, uid).meta;
  if (f.shape[0] !== Math.ceil(full[0] / 2) || f.shape[1] !== f.shape[2]) {
    throw new Error(
      `${path}: prediction shape [${f.shape}] does not fit image_full [${full}] (needs [ceil(Z / 2), G, G])`,
    );
  }
  return {
    uid,
    labels: [...labels],
    meta: f.meta,
    full: [...full],
    grid: [...f.shape],
    mean: h.mean,
    std: h.std,
    ...(boxes === undefined ? {} : {
      fractures: labels[0] === 0 ? [] : boxes ? boxRects(uid, boxes, full, h.sliceNumbers) : null,
    }),
  };
}

/** Reads the box z x y x x of a study's predicted labels [Z2, G, G] (uint8) from the cache. */
export async function readPredictionBox(
  cache: string,
  uid: string,
  grid: readonly [number, number, number],
  c: Pick<ClsCropGeometry, "z" | "y" | "x">,
): Promise<Uint8Array> {
  const path = segPaths(cache, uid).raw;
  const [Z, Y, X] = grid, [z0, z1] = c.z, [y0, y1] = c.y, [x0, x1] = c.x;
  if (!(0 <= z0 && z0 <= z1 && z1 <= Z && 0 <= y0 && y0 <= y1 && y1 <= Y && 0 <= x0 && x0 <= x1 && x1 <= X)) {
    throw new Error(`${path}: box z [${c.z}) y [${c.y}) x [${c.x}) is outside the prediction [${grid}]`);
  }
  return (await readRawBox(path, [Z, Y, X], { z: c.z, y: c.y, x: c.x })).data as Uint8Array;
}

/** Reads image_full at slices [::2] z of the crop (prediction-grid indices), rows/cols of the full box. */
async function readImageBox(src: BoxReader, c: ClsCropGeometry, z: [number, number], n: number) {
  const img = await src.readBox("image_full", {
    z: [2 * z[0], 2 * z[1]],
    y: c.yFull,
    x: c.xFull,
    zStep: 2,
  });
  const want = [n, c.yFull[1] - c.yFull[0], c.xFull[1] - c.xFull[0]];
  if (img.shape.join() !== want.join()) {
    throw new Error(`${src.name}: image_full: read [${img.shape}] for a crop of [${want}]`);
  }
  return img.data;
}

/** Reads the predicted labels of every slice of the crop (the meta grid box). */
async function readMaskBox(src: BoxReader, c: ClsCropGeometry): Promise<Uint8Array> {
  const m = await src.readBox("pred", { z: c.z, y: c.y, x: c.x });
  const want = [c.z[1] - c.z[0], c.y[1] - c.y[0], c.x[1] - c.x[0]];
  if (m.shape.join() !== want.join() || !(m.data instanceof Uint8Array)) {
    throw new Error(
      `${src.name}: predicted labels: read [${m.shape}] for a box z [${c.z}) y [${c.y}) x [${c.x}) of [${want}]`,
    );
  }
  return m.data;
}

/**
 * Reads and builds a training sample drawn by `drawClsTrainSpec` from any source (only its `readBox` is
 * used): the image for the window's slices only, the predicted labels for every slice of the crop (the
 * visibility rule counts them all).
 */
export async function readClsTrainSampleFrom(src: BoxReader, spec: ClsTrainSpec): Promise<ClsSample> {
  const c = spec.crop;
  if (!c) return buildClsTrainSample(spec, [], new Uint8Array(0));
  const [a, b] = spec.window;
  const image = await readImageBox(src, c, [c.z[0] + a, c.z[0] + b], b - a);
  const mask = await readMaskBox(src, c);
  return buildClsTrainSample(spec, image, mask);
}

/** {@link readClsTrainSampleFrom} the cache (this runs in the loader's Workers). */
export async function readClsTrainSample(cache: string, spec: ClsTrainSpec): Promise<ClsSample> {
  return await readClsTrainSampleFrom(cacheBoxReader(cache, spec.uid, spec.grid), spec);
}

/** A study's validation item: `input` [k, 3, D, S, S], one crop per entry of `vertebrae`. */
export interface ClsValItem {
  input: Float32Array;
  shape: [number, number, number, number, number];
  /** The vertebra of each crop (C1..C7 each once, twice when longer than D). */
  vertebrae: number[];
  /** [overall, C1..C7]: C1..C7 from the CSV, overall = any. */
  labels: Float32Array;
}

/**
 * Crop stacks kept for the next study. A study's seed-size crops are 7 or more of 31 MB, and in a fresh
 * allocation the page faults of their first touch cost more than cutting them (on a 2-core VM 0.6 of the
 * 0.8 s that 7 crops took; a reused stack is written in 0.02 s). `take` hands out zeros, `give` takes a
 * stack back once nothing reads it; a stack not given back is simply collected.
 */
export class CropStacks {
  #free: Float32Array<ArrayBuffer>[] = [];

  constructor(readonly keep = 2) {}

  /** `n` zeros: a kept stack large enough, cleared, or a new one. */
  take(n: number): Float32Array<ArrayBuffer> {
    const i = this.#free.findIndex((a) => a.length >= n);
    if (i < 0) return new Float32Array(n);
    const a = this.#free.splice(i, 1)[0].subarray(0, n);
    a.fill(0);
    return a;
  }

  /** Keeps the whole buffer under `a` for a later `take` (up to `keep` of them). */
  give(a: Float32Array): void {
    const b = a.buffer;
    if (!(b instanceof ArrayBuffer) || this.#free.length >= this.keep) return;
    if (this.#free.some((f) => f.buffer === b)) return;
    this.#free.push(new Float32Array(b, 0, b.byteLength / 4));
  }
}

/**
 * Reads and builds a study's validation item (seed 4.2; see `clsValCrops`) from any source (only its
 * `readBox` is used); its crop stack comes from `stacks` when given.
 */
export async function readClsValItemFrom(
  src: BoxReader,
  study: ClsStudy,
  o: ClsDataOptions = {},
  stacks?: CropStacks,
): Promise<ClsValItem> {
  const D = o.slices ?? CLS_DEFAULTS.slices, S = o.size ?? CLS_DEFAULTS.size;
  const crops = clsValCrops(study, o), per = 3 * D * S * S;
  const input = stacks ? stacks.take(crops.length * per) : new Float32Array(crops.length * per);
  for (const [i, { crop }] of crops.entries()) {
    if (!crop) continue;
    const n = crop.z[1] - crop.z[0];
    const image = await readImageBox(src, crop, crop.z, n);
    const mask = await readMaskBox(src, crop);
    const o = { mean: study.mean, std: study.std, slices: D, size: S };
    buildClsValCrop(crop, image, mask, o, input.subarray(i * per, (i + 1) * per));
  }
  return {
    input,
    shape: [crops.length, 3, D, S, S],
    vertebrae: crops.map((c) => c.vertebra),
    labels: clsValLabels(study.labels),
  };
}

/** {@link readClsValItemFrom} the cache. */
export async function readClsValItem(
  cache: string,
  study: ClsStudy,
  o: ClsDataOptions = {},
): Promise<ClsValItem> {
  return await readClsValItemFrom(cacheBoxReader(cache, study.uid, study.grid), study, o);
}

/**
 * A {@link ClsStudy} of a source with a prediction: image_full's shape and the 256 cube's mean/std from its
 * header, the prediction's shape from `grid`, `meta` its compute_meta, `labels` [overall, C1..C7] (all 0
 * when unknown, as at inference).
 */
export function clsStudyFromSource(
  src: CubeSource,
  meta: StudyMeta,
  labels: number[] = [0, 0, 0, 0, 0, 0, 0, 0],
): ClsStudy {
  const g = src.grid;
  if (!g) throw new Error(`${src.name}: no predicted labels`);
  if (g[0] !== Math.ceil(src.full[0] / 2) || g[1] !== g[2]) {
    throw new Error(
      `${src.name}: prediction shape [${g}] does not fit image_full [${src.full}] (needs [ceil(Z / 2), G, G])`,
    );
  }
  return {
    uid: src.uid,
    labels: [...labels],
    meta,
    full: [...src.full],
    grid: [...g],
    mean: src.header.mean,
    std: src.header.std,
  };
}

/**
 * A study's validation item straight from memory (inference without a cache): `study` from `loadStudy`,
 * `labels` its predicted labels [ceil(Z/2), S, S] (the [::2] grid of image_256), `meta` their
 * compute_meta. `o.labels` are the CSV labels when known (default all 0; only `item.labels` uses them).
 */
export async function clsValItemFromMemory(
  study: InMemoryStudy,
  labels: Uint8Array,
  meta: StudyMeta,
  o: ClsDataOptions & { labels?: number[] } = {},
  stacks?: CropStacks,
): Promise<ClsValItem> {
  const { labels: csv, ...data } = o;
  const src = memorySource(study, { labels });
  return await readClsValItemFrom(src, clsStudyFromSource(src, meta, csv), data, stacks);
}
