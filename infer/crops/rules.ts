/**
 * @file The classifier stage's sampling rules (seed-pipeline.md 3, 4.1-4.3, 7): which vertebra a training
 * crop shows, its xy box on the meta and full-resolution grids, the train and validation z ranges, the
 * visibility rule on the labels, and the weighted sampler. Pure functions on boxes, labels and counts (no
 * voxel data, no Deno APIs); infer/crops.ts builds the samples with them.
 */
import type { StudyMeta } from "../meta.ts";

/** Uniform random numbers in [0, 1). */
export type Rnd = () => number;

/** Options of the classifier's data; defaults are the seed's. */
export interface ClsDataOptions {
  /** Slices per crop D (40). */
  slices?: number;
  /** In-plane size S of a crop after LongestMaxSize + PadIfNeeded (256). */
  size?: number;
  /** Margin around the vertebra's box on the meta grid, in pixels (16). */
  margin?: number;
  /** Candidates for training crops need more predicted voxels than this (512). */
  minArea?: number;
  /** Probability of picking among the fractured candidates (0.7). */
  pFractured?: number;
  /** Validation crops of vertebrae longer than D: both the first D slices, as the seed's bug (7.3) does. */
  seedValBug?: boolean;
  /**
   * The visibility rule as the seed codes it (7.4): crop voxels counted at S x S against the study's voxels on
   * the meta grid. Off (default), the crop's count is first scaled back to meta-grid voxels, so the rule means
   * "30 % of the vertebra in the crop" at any S (the seed's way keeps ~4 % at S = 256 and drops half of the
   * fractured labels at S = 64).
   */
  seedVisibility?: boolean;
}

/** The seed's values of {@link ClsDataOptions}. */
export const CLS_DEFAULTS: Required<ClsDataOptions> = {
  slices: 40,
  size: 256,
  margin: 16,
  minArea: 512,
  pFractured: 0.7,
  seedValBug: false,
  seedVisibility: false,
};

/** The options with the seed's defaults filled in, checked. */
export function resolveClsOptions(o: ClsDataOptions = {}): Required<ClsDataOptions> {
  const r = { ...CLS_DEFAULTS, ...o };
  for (const k of ["slices", "size"] as const) {
    if (!(Number.isInteger(r[k]) && r[k] >= 1)) throw new Error(`cls data: ${k} must be a positive integer`);
  }
  if (!(Number.isInteger(r.margin) && r.margin >= 0)) {
    throw new Error("cls data: margin must be an integer >= 0");
  }
  if (!(r.pFractured >= 0 && r.pFractured <= 1)) throw new Error("cls data: pFractured must be in [0, 1]");
  return r;
}

/** Throws unless `labels` are 8 values 0/1 ([overall, C1..C7]); `where` names the caller. */
export function checkLabels(labels: ArrayLike<number>, where: string): void {
  if (labels.length !== 8 || Array.from(labels).some((v) => v !== 0 && v !== 1)) {
    throw new Error(
      `${where}: labels must be 8 values 0/1 (patient_overall, C1..C7), got [${Array.from(labels)}]`,
    );
  }
}

/**
 * The vertebra of a training crop (seed 4.1 step 1): candidates are the labels 1..7 whose predicted area
 * exceeds `minArea`, split by the CSV label (`labels` = [overall, C1..C7]); with probability `pFractured`
 * (one `rnd()` draw) uniformly among the fractured ones if there are any, else uniformly among the others.
 * Where the seed crashes (7.8: the draw falls through to an empty non-fractured list) the fractured list is
 * used instead. Null when there is no candidate.
 */
export function pickVertebra(
  meta: StudyMeta,
  labels: ArrayLike<number>,
  rnd: Rnd,
  o: { minArea?: number; pFractured?: number } = {},
): number | null {
  checkLabels(labels, "pickVertebra");
  const minArea = o.minArea ?? CLS_DEFAULTS.minArea, p = o.pFractured ?? CLS_DEFAULTS.pFractured;
  const cand: number[] = [];
  for (let c = 1; c <= 7; c++) if ((meta.boxes[String(c)]?.[1] ?? 0) > minArea) cand.push(c);
  if (!cand.length) return null;
  const frac = cand.filter((c) => labels[c] === 1), non = cand.filter((c) => labels[c] !== 1);
  let list = rnd() < p && frac.length ? frac : non;
  if (!list.length) list = frac;
  return list[Math.min(list.length - 1, Math.floor(rnd() * list.length))];
}

/** A crop's boxes: z on the [::2] grid (clipped to the volume), y/x on the meta grid and on the full grid. */
export interface ClsCropGeometry {
  vertebra: number;
  z: [number, number];
  y: [number, number];
  x: [number, number];
  yFull: [number, number];
  xFull: [number, number];
}

/**
 * The xy box of a vertebra (seed 4.1 step 3): on the meta grid (size `grid`) [max(y0 - margin, 0),
 * min(y1 + margin, grid)), same for x; on the full grid [floor(a H / grid), ceil(b H / grid)) (exactly the
 * doubled box when H = 2 grid), same for x with W.
 */
export function cropXY(
  box: readonly number[],
  full: readonly [number, number],
  o: { margin?: number; grid?: number } = {},
): Pick<ClsCropGeometry, "y" | "x" | "yFull" | "xFull"> {
  const margin = o.margin ?? CLS_DEFAULTS.margin, grid = o.grid ?? 256;
  const [, y0, x0, , y1, x1] = box;
  if (box.length !== 6 || !(0 <= y0 && y0 < y1 && y1 <= grid && 0 <= x0 && x0 < x1 && x1 <= grid)) {
    throw new Error(`cropXY: box [${box}] is not a non-empty [z0, y0, x0, z1, y1, x1] inside a ${grid} grid`);
  }
  const [H, W] = full;
  if (!(Number.isInteger(H) && Number.isInteger(W) && H >= 1 && W >= 1)) {
    throw new Error(`cropXY: full-resolution size must be positive integers, got ${H}x${W}`);
  }
  const y: [number, number] = [Math.max(y0 - margin, 0), Math.min(y1 + margin, grid)];
  const x: [number, number] = [Math.max(x0 - margin, 0), Math.min(x1 + margin, grid)];
  // Integer products divided once: exact for every size, so H = 2 grid gives exactly 2a, 2b.
  const map = (r: [number, number], n: number): [number, number] => [
    Math.floor((r[0] * n) / grid),
    Math.min(n, Math.ceil((r[1] * n) / grid)),
  ];
  return { y, x, yFull: map(y, H), xFull: map(x, W) };
}

/**
 * The training z range of a vertebra spanning [z0, z1) (seed 4.1 step 4): unchanged when it spans at least
 * `slices`; otherwise start uniform over the integers [max(z1 - slices, 0), z0] (one `rnd()` draw) and end =
 * start + slices, which may run past the volume (the caller clips).
 */
export function trainZRange(z0: number, z1: number, slices: number, rnd: Rnd): [number, number] {
  if (!(Number.isInteger(z0) && Number.isInteger(z1) && 0 <= z0 && z0 < z1)) {
    throw new Error(`trainZRange: [${z0}, ${z1}) is not a non-empty slice range`);
  }
  if (z1 - z0 >= slices) return [z0, z1];
  const lo = Math.max(z1 - slices, 0), n = z0 - lo + 1;
  const start = lo + Math.min(n - 1, Math.floor(rnd() * n));
  return [start, start + slices];
}

/**
 * The validation z ranges of a vertebra spanning [z0, z1) (seed 4.2): shorter than `slices`, one centred
 * range start = max(0, z0 - floor((slices - span) / 2)), end = start + slices (may run past the volume);
 * exactly `slices`, [z0, z1); longer, two: the first and the last `slices` slices (with `seedValBug`, the
 * first twice, as the seed computes it, 7.3).
 */
export function valZRanges(z0: number, z1: number, slices: number, seedValBug = false): [number, number][] {
  if (!(Number.isInteger(z0) && Number.isInteger(z1) && 0 <= z0 && z0 < z1)) {
    throw new Error(`valZRanges: [${z0}, ${z1}) is not a non-empty slice range`);
  }
  const span = z1 - z0;
  if (span < slices) {
    const start = Math.max(0, z0 - Math.floor((slices - span) / 2));
    return [[start, start + slices]];
  }
  if (span === slices) return [[z0, z1]];
  const first: [number, number] = [z0, z0 + slices];
  return [first, seedValBug ? [...first] : [z1 - slices, z1]];
}

/**
 * The seed's visibility rule (section 3 / 7.4): each positive vertebra c is set to 0 when
 * counts[c] / (sums[c] + 100) < 0.3, counts[c] being its voxels in the augmented crop mask over every slice
 * of the crop (before the D-slice cut) and sums[c] its predicted voxels in the whole study (meta grid);
 * then patient_overall = any(C1..C7). The caller chooses the units of counts (see
 * {@link ClsDataOptions.seedVisibility}). Returns [overall, C1..C7].
 */
export function visibleLabels(
  labels: ArrayLike<number>,
  counts: ArrayLike<number>,
  sums: ArrayLike<number>,
): Float32Array {
  checkLabels(labels, "visibleLabels");
  const out = new Float32Array(8);
  for (let c = 1; c <= 7; c++) {
    if (labels[c] !== 1) continue;
    const ratio = (counts[c] ?? 0) / ((sums[c] ?? 0) + 100);
    out[c] = ratio < 0.3 ? 0 : 1;
  }
  out[0] = out.subarray(1).some((v) => v === 1) ? 1 : 0;
  return out;
}

/**
 * Validation labels (seed 4.2): C1..C7 from the CSV, patient_overall = any of them. Returns [overall, C1..C7].
 */
export function clsValLabels(labels: ArrayLike<number>): Float32Array {
  checkLabels(labels, "clsValLabels");
  const out = Float32Array.from(labels);
  out[0] = out.subarray(1).some((v) => v === 1) ? 1 : 0;
  return out;
}

/**
 * Indices drawn with replacement (seed 4.3) from the items of the multiplied train list, item i having weight
 * N / N_pos when overall[i] = 1 and N / N_neg otherwise (N = overall.length), so that positive and negative
 * studies are about 50/50. One `rnd()` per index.
 */
export function weightedSampler(overall: ArrayLike<number>, n: number, rnd: Rnd): number[] {
  const N = overall.length;
  if (!(Number.isInteger(n) && n >= 0)) {
    throw new Error(`weightedSampler: n must be an integer >= 0, got ${n}`);
  }
  if (N === 0) {
    if (n > 0) throw new Error("weightedSampler: no items to draw from");
    return [];
  }
  let pos = 0;
  for (let i = 0; i < N; i++) if (overall[i] === 1) pos++;
  const wPos = N / pos, wNeg = N / (N - pos);
  const cum = new Float64Array(N);
  let acc = 0;
  for (let i = 0; i < N; i++) cum[i] = acc += overall[i] === 1 ? wPos : wNeg;
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const u = rnd() * acc;
    let lo = 0, hi = N - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cum[mid] > u) hi = mid;
      else lo = mid + 1;
    }
    out.push(lo);
  }
  return out;
}
