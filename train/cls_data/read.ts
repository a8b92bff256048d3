/**
 * @file The classifier samples' file side: reads a study's geometry and statistics (cache header +
 * seg_meta.json) and only the boxes a crop needs (image_full at slices [::2], the predicted labels), then
 * builds with the pure code of train/cls_data.ts.
 */
import { readCube, readHeader } from "../../data/cache.ts";
import { readSegMetaFile, segPaths } from "../../infer/meta.ts";
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
} from "../cls_data.ts";

/**
 * A study's geometry and statistics for the classifier: image_full's shape and the whole 256 cube's
 * mean/std from header.json, the prediction's shape and metadata from seg_meta.json, with `labels` (CSV
 * [overall, C1..C7]). The prediction must cover ceil(Z / 2) slices of the cube.
 */
export async function readClsStudy(cache: string, uid: string, labels: number[]): Promise<ClsStudy> {
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
  };
}

/** Reads the box z x y x x of a study's predicted labels [Z2, G, G] (uint8), row block by row block. */
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
  const ny = y1 - y0, nx = x1 - x0, out = new Uint8Array((z1 - z0) * ny * nx), block = new Uint8Array(ny * X);
  const file = await Deno.open(path, { read: true }).catch((e) => {
    throw new Error(`${path}: cannot open the predicted labels (${(e as Error).message})`);
  });
  try {
    for (let z = z0; z < z1; z++) {
      await file.seek((z * Y + y0) * X, Deno.SeekMode.Start);
      for (let got = 0; got < block.length;) {
        const n = await file.read(block.subarray(got));
        if (n === null) throw new Error(`${path}: truncated (slice ${z})`);
        got += n;
      }
      for (let r = 0; r < ny; r++) out.set(block.subarray(r * X + x0, r * X + x1), ((z - z0) * ny + r) * nx);
    }
  } finally {
    file.close();
  }
  return out;
}

/** Reads image_full at slices [::2] z of the crop (prediction-grid indices), rows/cols of the full box. */
async function readImageBox(cache: string, uid: string, c: ClsCropGeometry, z: [number, number], n: number) {
  const img = await readCube(cache, uid, "image_full", {
    z: [2 * z[0], 2 * z[1]],
    y: c.yFull,
    x: c.xFull,
    zStep: 2,
  });
  const want = [n, c.yFull[1] - c.yFull[0], c.xFull[1] - c.xFull[0]];
  if (img.shape.join() !== want.join()) {
    throw new Error(`${cache}/${uid}/image_full.raw: read [${img.shape}] for a crop of [${want}]`);
  }
  return img.data;
}

/**
 * Reads and builds a training sample drawn by `drawClsTrainSpec` (this runs in the loader's Workers): the
 * image for the window's slices only, the predicted labels for every slice of the crop (the visibility rule
 * counts them all).
 */
export async function readClsTrainSample(cache: string, spec: ClsTrainSpec): Promise<ClsSample> {
  const c = spec.crop;
  if (!c) return buildClsTrainSample(spec, [], new Uint8Array(0));
  const [a, b] = spec.window;
  const image = await readImageBox(cache, spec.uid, c, [c.z[0] + a, c.z[0] + b], b - a);
  const mask = await readPredictionBox(cache, spec.uid, spec.grid, c);
  return buildClsTrainSample(spec, image, mask);
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

/** Reads and builds a study's validation item (seed 4.2; see `clsValCrops`). */
export async function readClsValItem(
  cache: string,
  study: ClsStudy,
  o: ClsDataOptions = {},
): Promise<ClsValItem> {
  const D = o.slices ?? CLS_DEFAULTS.slices, S = o.size ?? CLS_DEFAULTS.size;
  const crops = clsValCrops(study, o), per = 3 * D * S * S;
  const input = new Float32Array(crops.length * per);
  for (const [i, { crop }] of crops.entries()) {
    if (!crop) continue;
    const n = crop.z[1] - crop.z[0];
    const image = await readImageBox(cache, study.uid, crop, crop.z, n);
    const mask = await readPredictionBox(cache, study.uid, study.grid, crop);
    input.set(
      buildClsValCrop(crop, image, mask, { mean: study.mean, std: study.std, slices: D, size: S }),
      i * per,
    );
  }
  return {
    input,
    shape: [crops.length, 3, D, S, S],
    vertebrae: crops.map((c) => c.vertebra),
    labels: clsValLabels(study.labels),
  };
}
