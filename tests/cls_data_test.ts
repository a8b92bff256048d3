/**
 * The classifier's data (infer/crops.ts, infer/crops/read.ts) against hand-computed cases of
 * seed-pipeline.md 3, 4.1-4.3 and 7: crop geometry (16 px margin, full grid by the real ratio, also 128, 300
 * and non-square), the train and val z rules (centred start, first and last D slices, the seed-bug flag),
 * the visibility rule on a hand-painted prediction (boundary 0.3, slices outside the D window counted, z
 * outside the crop not), the vertebra pick (never crashes; 70/30 within a stated tolerance), the weighted
 * sampler (~50/50), shapes and zero padding, and the readers on a hand-written cache (128-style ratio 0.5, odd Z).
 */
import {
  buildClsTrainSample,
  buildClsValCrop,
  type ClsStudy,
  clsValCrops,
  clsValLabels,
  cropXY,
  drawClsTrainSpec,
  pickVertebra,
  trainZRange,
  upsampleMask,
  valZRanges,
  visibleLabels,
  weightedSampler,
} from "../infer/crops.ts";
import { readClsStudy, readClsTrainSample, readClsValItem } from "../infer/crops/read.ts";
import { applyPlan } from "../data/augment.ts";
import type { CacheHeader } from "../data/cache.ts";
import { computeMeta, type StudyMeta, writeSegPrediction } from "../infer/meta.ts";
import { mulberry32 } from "../core/random.ts";
import { assertRejectsWith, assertThrows } from "./helpers.ts";

function eq(a: unknown, b: unknown, what: string): void {
  const sa = JSON.stringify(a), sb = JSON.stringify(b);
  if (sa !== sb) throw new Error(`${what}:\n got      ${sa}\n expected ${sb}`);
}

function eqArrays(a: ArrayLike<number>, b: ArrayLike<number>, what: string, tol = 0): void {
  if (a.length !== b.length) throw new Error(`${what}: length ${a.length} != ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (!(Math.abs(a[i] - b[i]) <= tol)) {
      throw new Error(`${what}: element ${i}: ${a[i]} != expected ${b[i]}`);
    }
  }
}

/** A scripted generator: the given values, then `rest` forever. */
function script(values: number[], rest = 0.99): () => number {
  let i = 0;
  return () => (i < values.length ? values[i++] : rest);
}

/** Paints label `v` into the box [z0, z1) x [y0, y1) x [x0, x1) of a [Z, G, G] volume. */
function paint(
  vol: Uint8Array,
  G: number,
  z: [number, number],
  y: [number, number],
  x: [number, number],
  v: number,
) {
  for (let k = z[0]; k < z[1]; k++) {
    for (let j = y[0]; j < y[1]; j++) for (let i = x[0]; i < x[1]; i++) vol[(k * G + j) * G + i] = v;
  }
}

/** Cuts [z0, z1) x [y0, y1) x [x0, x1) out of a [Z, H, W] volume, slices stepping by `zStep`. */
function cut(
  vol: ArrayLike<number>,
  H: number,
  W: number,
  z: [number, number],
  y: [number, number],
  x: [number, number],
  zStep = 1,
): number[] {
  const out: number[] = [];
  for (let k = z[0]; k < z[1]; k += zStep) {
    for (let j = y[0]; j < y[1]; j++) for (let i = x[0]; i < x[1]; i++) out.push(vol[(k * H + j) * W + i]);
  }
  return out;
}

function metaWith(areas: Record<number, number>): StudyMeta {
  const boxes: StudyMeta["boxes"] = {};
  const sums = [0, 0, 0, 0, 0, 0, 0, 0];
  for (const [c, a] of Object.entries(areas)) {
    boxes[c] = [[0, 10, 10, 20, 50, 50], a];
    sums[Number(c)] = a;
  }
  return { sums, boxes, image_mean: 0, image_std: 1 };
}

Deno.test("cls data: crop geometry", () => {
  const box = [10, 50, 60, 30, 150, 250];
  // y: [50 - 16, 150 + 16) = [34, 166); x: [60 - 16, min(250 + 16, 256)) = [44, 256).
  // 512: doubled, [68, 332) and [88, 512).
  eq(cropXY(box, [512, 512]), { y: [34, 166], x: [44, 256], yFull: [68, 332], xFull: [88, 512] }, "512");
  // 128 (ratio 0.5): [34 / 2, 166 / 2) = [17, 83); [44 / 2, 256 / 2) = [22, 128).
  eq(cropXY(box, [128, 128]), { y: [34, 166], x: [44, 256], yFull: [17, 83], xFull: [22, 128] }, "128");
  // 300 x 400: y floor(34 * 300 / 256) = floor(39.84) = 39, ceil(166 * 300 / 256) = ceil(194.53) = 195;
  // x floor(44 * 400 / 256) = floor(68.75) = 68, ceil(256 * 400 / 256) = 400.
  eq(cropXY(box, [300, 400]), { y: [34, 166], x: [44, 256], yFull: [39, 195], xFull: [68, 400] }, "300x400");
  // Near the border: y0 = 5 -> max(5 - 16, 0) = 0; x0 = 7 -> 0; y1 = 20 -> 36; x1 = 30 -> 46.
  eq(cropXY([0, 5, 7, 4, 20, 30], [512, 512]).y, [0, 36], "border y");
  eq(cropXY([0, 5, 7, 4, 20, 30], [512, 512]).x, [0, 46], "border x");
  // Another grid and margin (tiny presets): grid 16, margin 2, box y [4, 8) -> [2, 10), full 32 -> [4, 20).
  eq(cropXY([0, 4, 4, 4, 8, 8], [32, 32], { margin: 2, grid: 16 }).yFull, [4, 20], "grid 16");
  assertThrows(() => cropXY([0, 50, 60, 30, 40, 250], [512, 512]), "not a non-empty");
  assertThrows(() => cropXY([0, 50, 60, 30, 300, 250], [512, 512]), "256 grid");
  assertThrows(() => cropXY(box, [0, 512]), "positive integers");
});

Deno.test("cls data: train z rule", () => {
  // Span >= 40: unchanged, no draw.
  eq(trainZRange(10, 60, 40, () => 0.5), [10, 60], "long");
  eq(trainZRange(10, 50, 40, () => 0.5), [10, 50], "exactly 40");
  // [10, 30), span 20: start uniform over [max(30 - 40, 0), 10] = [0, 10], 11 values.
  eq(trainZRange(10, 30, 40, () => 0), [0, 40], "lowest start");
  eq(trainZRange(10, 30, 40, () => 0.999999), [10, 50], "highest start");
  eq(trainZRange(10, 30, 40, () => 0.5), [5, 45], "floor(0.5 * 11) = 5");
  // [50, 70): starts [70 - 40, 50] = [30, 50]; D = 16 (tiny preset), [3, 10): starts [0, 3].
  eq(trainZRange(50, 70, 40, () => 0), [30, 70], "starts at z1 - 40");
  eq(trainZRange(3, 10, 16, () => 0.999999), [3, 19], "D 16");
  const r = mulberry32(11), hist = new Array(11).fill(0);
  for (let i = 0; i < 11000; i++) hist[trainZRange(10, 30, 40, r)[0]]++;
  // Each start 1000 expected, binomial sd ~ 30: +-150 is 5 sd.
  hist.forEach((h, s) => {
    if (Math.abs(h - 1000) > 150) throw new Error(`start ${s} drawn ${h} times of 11000`);
  });
  assertThrows(() => trainZRange(5, 5, 40, () => 0), "non-empty");
});

Deno.test("cls data: val z rule", () => {
  // [10, 30): span 20, start = max(0, 10 - floor((40 - 20) / 2)) = max(0, 0) = 0.
  eq(valZRanges(10, 30, 40), [[0, 40]], "centred at the top");
  // [100, 125): span 25, start = 100 - floor(15 / 2) = 93; [100, 126): 100 - floor(14 / 2) = 93.
  eq(valZRanges(100, 125, 40), [[93, 133]], "centred 25");
  eq(valZRanges(100, 126, 40), [[93, 133]], "centred 26");
  eq(valZRanges(5, 45, 40), [[5, 45]], "exactly 40");
  // Span 41: first 40 [5, 45) and last 40 [6, 46); the seed's bug gives the first twice.
  eq(valZRanges(5, 46, 40), [[5, 45], [6, 46]], "first and last");
  eq(valZRanges(5, 46, 40, true), [[5, 45], [5, 45]], "seed bug");
  eq(valZRanges(0, 100, 40), [[0, 40], [60, 100]], "span 100");
});

Deno.test("cls data: vertebra pick", () => {
  // Areas: C1 600 (fractured), C2 513, C3 512 (not > 512: no candidate), C5 1000 (fractured), C6 2000, C7 100.
  const meta = metaWith({ 1: 600, 2: 513, 3: 512, 5: 1000, 6: 2000, 7: 100 });
  const labels = [1, 1, 0, 1, 0, 1, 0, 0];
  // Coin 0.69 < 0.7 -> fractured [1, 5], choice 0 -> C1; coin 0.7 -> non-fractured [2, 6], 0.99 -> C6.
  eq(pickVertebra(meta, labels, script([0.69, 0])), 1, "fractured");
  eq(pickVertebra(meta, labels, script([0.7, 0.99])), 6, "non-fractured");
  const r = mulberry32(5), n = 20000, hist = new Array(8).fill(0);
  for (let i = 0; i < n; i++) hist[pickVertebra(meta, labels, r)!]++;
  // P(fractured) = 0.7, each fractured 0.35, each other 0.15; sd of a frequency <= 0.0035, tolerance 0.02.
  const f = hist.map((h) => h / n);
  if (Math.abs(f[1] + f[5] - 0.7) > 0.02) throw new Error(`fractured share ${f[1] + f[5]}`);
  for (const [c, p] of [[1, 0.35], [5, 0.35], [2, 0.15], [6, 0.15]]) {
    if (Math.abs(f[c] - p) > 0.02) throw new Error(`C${c} share ${f[c]}, expected ${p}`);
  }
  if (hist[3] || hist[4] || hist[7]) throw new Error(`non-candidates picked: ${hist}`);
  // Every candidate fractured: the seed crashes when the 0.7 draw fails (7.8); here the fractured list is used.
  const allFrac = [1, 1, 1, 0, 0, 1, 1, 0];
  eq(pickVertebra(meta, allFrac, script([0.9, 0.0])), 1, "fall back to fractured");
  for (let i = 0; i < 2000; i++) {
    const v = pickVertebra(meta, allFrac, r);
    if (![1, 2, 5, 6].includes(v!)) throw new Error(`picked ${v}`);
  }
  // No fractured candidate: always among the others, whatever the coin.
  eq(pickVertebra(meta, [0, 0, 0, 1, 0, 0, 0, 1], script([0.1, 0.99])), 6, "no fractured candidate");
  // No candidate at all -> null; a lower threshold (tiny grids) admits C3 (512) and C7 (100 is not > 100).
  eq(pickVertebra(metaWith({ 1: 512, 4: 3 }), labels, r), null, "no candidate");
  eq(pickVertebra(meta, [0, 0, 0, 1, 0, 0, 0, 1], script([0.1, 0]), { minArea: 100 }), 3, "minArea 100");
  eq(pickVertebra(meta, [0, 0, 0, 0, 0, 0, 0, 1], script([0.1, 0.99]), { minArea: 99 }), 7, "minArea 99");
  assertThrows(() => pickVertebra(meta, [1, 0, 0], r), "8 values");
});

Deno.test("cls data: weighted sampler", () => {
  // 10 positive and 90 negative items: weights 100 / 10 = 10 and 100 / 90, so positives are drawn half the time.
  const overall = Array.from({ length: 100 }, (_, i) => (i % 10 === 3 ? 1 : 0));
  const r = mulberry32(9), n = 40000;
  const idx = weightedSampler(overall, n, r);
  if (idx.length !== n || idx.some((i) => !(i >= 0 && i < 100 && Number.isInteger(i)))) {
    throw new Error("indices");
  }
  const pos = idx.filter((i) => overall[i] === 1).length / n;
  // sd 0.0025; tolerance 0.02.
  if (Math.abs(pos - 0.5) > 0.02) throw new Error(`positive share ${pos}`);
  // Within a class uniform: each positive item ~ 0.05 of the draws (sd 0.0011).
  const perItem = new Array(100).fill(0);
  for (const i of idx) perItem[i]++;
  for (let i = 3; i < 100; i += 10) {
    if (Math.abs(perItem[i] / n - 0.05) > 0.008) throw new Error(`item ${i} share ${perItem[i] / n}`);
  }
  // With replacement: the 10 positives are drawn far more than once each.
  if (perItem[3] < 100) throw new Error("not drawn with replacement");
  // One class only, and degenerate sizes.
  const neg = weightedSampler([0, 0, 0], 30, r);
  if (neg.length !== 30 || neg.some((i) => i > 2)) throw new Error("negatives only");
  eq(weightedSampler([1, 0], 0, r), [], "n = 0");
  assertThrows(() => weightedSampler([], 3, r), "no items");
});

Deno.test("cls data: visibility rule", () => {
  // sums[2] = 50: 45 / (50 + 100) = 0.3 is kept (not < 0.3); 44 / 150 = 0.293 is dropped. C1 negative stays 0
  // whatever is visible.
  eqArrays(
    visibleLabels([1, 0, 1, 1, 0, 0, 0, 0], [0, 500, 45, 44, 0, 0, 0, 0], [0, 400, 50, 50, 0, 0, 0, 0]),
    [
      1,
      0,
      1,
      0,
      0,
      0,
      0,
      0,
    ],
    "boundary",
  );
  // Nothing visible: every positive dropped, and patient_overall follows (any of C1..C7).
  eqArrays(visibleLabels([1, 1, 0, 0, 0, 0, 0, 1], new Array(8).fill(0), [0, 10, 0, 0, 0, 0, 0, 0]), [
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ], "all dropped");
  // The counts may exceed the study's sums (crop resized up): still only the threshold matters.
  eqArrays(visibleLabels([1, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 900], [0, 0, 0, 0, 0, 0, 0, 200]), [
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    1,
  ], "inflated");
  eqArrays(clsValLabels([0, 0, 1, 0, 0, 0, 0, 0]), [1, 0, 1, 0, 0, 0, 0, 0], "val labels: overall = any");
});

/** Hand-painted prediction of case A: grid 16, [6, 16, 16] slices; label 3 will be the crop. */
function caseA(c1Voxels: 43 | 42) {
  const G = 16, Z2 = 6, vol = new Uint8Array(Z2 * G * G);
  paint(vol, G, [0, 4], [4, 8], [4, 8], 3); // 4 * 4 * 4 = 64 voxels, box z [0,4) y [4,8) x [4,8)
  paint(vol, G, [0, 4], [2, 4], [2, 10], 2); // 4 * 2 * 8 = 64, CSV negative
  paint(vol, G, [0, 3], [8, 10], [2, 9], 1); // 3 * 2 * 7 = 42
  if (c1Voxels === 43) paint(vol, G, [3, 4], [8, 9], [2, 3], 1); // + 1 = 43
  paint(vol, G, [3, 4], [4, 9], [8, 10], 4); // 1 * 5 * 2 = 10 inside the crop
  paint(vol, G, [0, 5], [12, 16], [11, 16], 4); // 5 * 4 * 5 = 100 outside the crop (y >= 10)
  paint(vol, G, [5, 6], [4, 8], [4, 8], 5); // 16, inside the xy crop but below its z range [0, 4)
  return { vol, G, Z2 };
}

function study(uid: string, vol: Uint8Array, grid: [number, number, number], full: [number, number, number]) {
  return {
    uid,
    labels: [1, 1, 0, 1, 1, 1, 0, 0],
    meta: computeMeta(vol, grid, { mean: 100, std: 20 }),
    full,
    grid,
    mean: 100,
    std: 20,
  } satisfies ClsStudy;
}

Deno.test("cls data: train sample, visibility on a painted prediction (identity augmentation)", () => {
  for (const c1 of [43, 42] as const) {
    const { vol, G, Z2 } = caseA(c1);
    // Full resolution = the grid (ratio 1): 12 slices, [::2] gives the 6 of the prediction.
    const s = study("a", vol, [Z2, G, G], [12, G, G]);
    eq(s.meta.sums, [0, c1, 64, 64, 110, 16, 0, 0], "sums");
    eq(s.meta.boxes["3"], [[0, 4, 4, 4, 8, 8], 64], "box of C3");
    // minArea 50: candidates C2 (64), C3 (64), C4 (110); fractured C3, C4. Coin 0.1 -> fractured, choice 0
    // -> C3. Then every draw 0.99: no augmentation step fires (LongestMaxSize 8 of 8 x 8 is a no-op).
    const spec = drawClsTrainSpec(s, script([0.1, 0]), { slices: 4, size: 8, margin: 2, minArea: 50 });
    eq(spec.crop, { vertebra: 3, z: [0, 4], y: [2, 10], x: [2, 10], yFull: [2, 10], xFull: [2, 10] }, "crop");
    eq(spec.window, [0, 4], "window");
    eq(spec.plan!.steps, [], "identity plan");
    const img = Float32Array.from({ length: 4 * 8 * 8 }, (_, i) => (i * 37) % 301);
    const mask = Uint8Array.from(cut(vol, G, G, [0, 4], [2, 10], [2, 10]));
    const out = buildClsTrainSample(spec, img, mask);
    // C1: 43 / (43 + 100) = 0.3007 kept, 42 / 142 = 0.2958 dropped; C3: 64 / 164 = 0.39 kept;
    // C4: 10 / (110 + 100) = 0.048 dropped; C5: 0 / (16 + 100) = 0 dropped; C2 negative in the CSV.
    eqArrays(
      out.labels,
      c1 === 43 ? [1, 1, 0, 1, 0, 0, 0, 0] : [1, 0, 0, 1, 0, 0, 0, 0],
      `labels (C1 ${c1})`,
    );
    eq(out.shape, [3, 4, 8, 8], "shape");
    const vol1 = 4 * 64;
    eqArrays(
      out.input.subarray(0, vol1),
      Array.from(img, (v) => Math.fround((v - 100) * (1 / 20))),
      "image",
      1e-6,
    );
    eqArrays(out.input.subarray(vol1, 2 * vol1), out.input.subarray(0, vol1), "channel 1 = channel 0");
    eqArrays(out.input.subarray(2 * vol1), mask, "mask channel: raw labels");
  }
});

Deno.test("cls data: the visibility rule counts meta-grid voxels at any crop size (the seed's at S x S)", () => {
  const { vol, G, Z2 } = caseA(43);
  const s = study("v", vol, [Z2, G, G], [12, G, G]);
  const img = Float32Array.from({ length: 4 * 8 * 8 }, (_, i) => i % 17);
  const mask = Uint8Array.from(cut(vol, G, G, [0, 4], [2, 10], [2, 10]));
  const labels = (size: number, seedVisibility: boolean) => {
    const o = { slices: 4, size, margin: 2, minArea: 50, seedVisibility };
    const spec = drawClsTrainSpec(s, script([0.1, 0]), o);
    eq(spec.crop!.vertebra, 3, "picked C3");
    return Array.from(buildClsTrainSample(spec, img, mask).labels);
  };
  // S = 8 = the crop's 8 meta-grid pixels: both ways count the same (C3 64 / 164 kept, C4 10 / 210 dropped).
  eq(labels(8, false), labels(8, true), "S = crop size");
  // S = 4 halves each side: the seed's way counts C3 as 16 voxels (16 / 164 < 0.3, dropped); scaled back to
  // meta-grid voxels it is 64 again (kept), as the 8 x 8 crop kept it.
  const meta = labels(4, false), seed = labels(4, true);
  eq([meta[3], meta[4], meta[5]], [1, 0, 0], "meta-grid voxels: C3 kept, C4 and C5 dropped");
  eq([seed[3], seed[4], seed[5]], [0, 0, 0], "the seed's count: C3 dropped too");
});

Deno.test("cls data: train sample counts slices outside the D window; pads the end", () => {
  const G = 16;
  // Case B: C3 spans z [0, 6) (96 voxels); C1's 44 voxels all lie in slices 0..1.
  const vol = new Uint8Array(8 * G * G);
  paint(vol, G, [0, 6], [4, 8], [4, 8], 3);
  paint(vol, G, [0, 2], [8, 10], [2, 10], 1); // 2 * 2 * 8 = 32
  paint(vol, G, [0, 1], [2, 4], [2, 8], 1); // 1 * 2 * 6 = 12 -> 44
  const s = { ...study("b", vol, [8, G, G], [16, G, G]), labels: [1, 1, 0, 1, 0, 0, 0, 0] };
  // D = 4: crop [0, 6) is longer, window start floor(0.99 * (6 - 4 + 1)) = 2 -> [2, 6).
  const spec = drawClsTrainSpec(s, script([0.1, 0]), { slices: 4, size: 8, margin: 2, minArea: 50 });
  eq([spec.crop!.z, spec.window], [[0, 6], [2, 6]], "crop and window");
  const img = new Float32Array(4 * 64).fill(120);
  const mask = Uint8Array.from(cut(vol, G, G, [0, 6], [2, 10], [2, 10]));
  const out = buildClsTrainSample(spec, img, mask);
  // C1: 44 / 144 = 0.306 -> kept although none of its slices is in the window (counted before the cut).
  eqArrays(out.labels, [1, 1, 0, 1, 0, 0, 0, 0], "labels");
  eqArrays(
    out.input.subarray(2 * 256),
    cut(vol, G, G, [2, 6], [2, 10], [2, 10]),
    "mask channel = window slices",
  );
  eqArrays(out.input.subarray(0, 256), new Array(256).fill(1), "(120 - 100) / 20 = 1", 1e-6);

  // The same study cut at 7 slices (volume end): D = 8, span 6: start in [max(6 - 8, 0), 0] = 0, [0, 8)
  // clipped to [0, 7); 7 slices then one slice of zeros in all three channels.
  const s7 = {
    ...s,
    grid: [7, G, G] as [number, number, number],
    full: [13, G, G] as [number, number, number],
  };
  const sp7 = drawClsTrainSpec(s7, script([0.1, 0]), { slices: 8, size: 8, margin: 2, minArea: 50 });
  eq([sp7.crop!.z, sp7.window], [[0, 7], [0, 7]], "truncated crop");
  const o7 = buildClsTrainSample(
    sp7,
    new Float32Array(7 * 64).fill(140),
    Uint8Array.from(cut(vol, G, G, [0, 7], [2, 10], [2, 10])),
  );
  eq(o7.shape, [3, 8, 8, 8], "shape D 8");
  for (let ch = 0; ch < 3; ch++) {
    const slice7 = o7.input.subarray((ch * 8 + 7) * 64, (ch * 8 + 8) * 64);
    if (slice7.some((v) => v !== 0)) throw new Error(`channel ${ch}: padding slice not 0`);
    const slice6 = o7.input.subarray((ch * 8 + 6) * 64, (ch * 8 + 7) * 64);
    if (ch < 2 && slice6.some((v) => Math.abs(v - 2) > 1e-6)) {
      throw new Error(`channel ${ch}: slice 6 not (140 - 100) / 20`);
    }
  }
});

Deno.test("cls data: full resolution 2x, real augmentation, no candidate", () => {
  const { vol, G, Z2 } = caseA(43);
  // Full grid 32 = 2x the prediction grid: yFull = 2 * [2, 10) = [4, 20). S = 8: LongestMaxSize halves it.
  const s = study("c", vol, [Z2, G, G], [12, 32, 32]);
  const r = mulberry32(3);
  let fired = 0;
  for (let t = 0; t < 20; t++) {
    const spec = drawClsTrainSpec(s, r, { slices: 4, size: 8, margin: 2, minArea: 50 });
    const c = spec.crop!;
    const fh = c.yFull[1] - c.yFull[0], fw = c.xFull[1] - c.xFull[0];
    const img = Float32Array.from(
      { length: (spec.window[1] - spec.window[0]) * fh * fw },
      (_, i) => (i * 13) % 97,
    );
    const mask = Uint8Array.from(cut(vol, G, G, c.z, c.y, c.x));
    const out = buildClsTrainSample(spec, img, mask);
    eq(
      [c.yFull[1] - c.yFull[0], c.xFull[1] - c.xFull[0]],
      [(c.y[1] - c.y[0]) * 2, (c.x[1] - c.x[0]) * 2],
      "2x",
    );
    // 2x nearest = every mask pixel repeated 2 x 2 (written here without cv2's index formula).
    const n = c.z[1] - c.z[0], mh = c.y[1] - c.y[0], mw = c.x[1] - c.x[0];
    const up = new Uint8Array(n * 4 * mh * mw);
    for (let z = 0; z < n; z++) {
      for (let y = 0; y < 2 * mh; y++) {
        for (let x = 0; x < 2 * mw; x++) {
          up[(z * 2 * mh + y) * 2 * mw + x] = mask[(z * mh + (y >> 1)) * mw + (x >> 1)];
        }
      }
    }
    eqArrays(upsampleMask(mask, n, [mh, mw], [2 * mh, 2 * mw]), up, "upsampleMask 2x");
    const fp = 4 * mh * mw, [a, b] = spec.window;
    const ref = applyPlan(spec.plan!, img, up.subarray(a * fp, b * fp), [b - a, 2 * mh, 2 * mw]);
    const V = 4 * 64, w = b - a;
    eqArrays(
      out.input.subarray(0, w * 64),
      Array.from(ref.image, (v) => Math.fround((v - 100) / 20)),
      "image",
      1e-5,
    );
    eqArrays(out.input.subarray(2 * V, 2 * V + w * 64), ref.mask!, "mask channel");
    if (out.input.subarray(2 * V).some((v) => !Number.isInteger(v) || v < 0 || v > 7)) {
      throw new Error("mask values");
    }
    if (spec.plan!.steps.length > 1) fired++;
  }
  if (!fired) throw new Error("no random augmentation drawn in 20 samples");
  // No candidate (minArea above every area): all-zero input, labels all 0 (nothing visible).
  const none = drawClsTrainSpec(s, r, { slices: 4, size: 8, minArea: 10000 });
  eq([none.crop, none.plan], [null, null], "no candidate");
  const z = buildClsTrainSample(none, [], new Uint8Array(0));
  if (z.input.length !== 3 * 4 * 64 || z.input.some((v) => v !== 0) || z.labels.some((v) => v !== 0)) {
    throw new Error("empty sample");
  }
  eq(z.vertebra, null, "vertebra null");
  const spec = drawClsTrainSpec(s, script([0.1, 0]), { slices: 4, size: 8, margin: 2, minArea: 50 });
  assertThrows(
    () => buildClsTrainSample(spec, new Float32Array(5), new Uint8Array(4 * 64)),
    "image has 5 values",
  );
  assertThrows(
    () => buildClsTrainSample(spec, new Float32Array(4 * 256), new Uint8Array(3)),
    "mask has 3 values",
  );
});

Deno.test("cls data: validation crops", () => {
  const G = 16;
  const vol = new Uint8Array(8 * G * G);
  paint(vol, G, [0, 6], [4, 8], [4, 8], 3); // span 6 > D = 4: two crops
  paint(vol, G, [5, 7], [8, 10], [2, 10], 1); // span 2: centred start max(0, 5 - floor(2 / 2)) = 4 -> [4, 8)
  paint(vol, G, [7, 8], [2, 4], [2, 8], 2); // span 1: start 7 - floor(3 / 2) = 6 -> [6, 10) clipped to [6, 8)
  const s = study("v", vol, [8, G, G], [16, 2 * G, 2 * G]);
  const o = { slices: 4, size: 8, margin: 2 };
  const crops = clsValCrops(s, o);
  eq(crops.map((c) => [c.vertebra, c.crop?.z ?? null]), [
    [1, [4, 8]],
    [2, [6, 8]],
    [3, [0, 4]],
    [3, [2, 6]],
    [4, null],
    [5, null],
    [6, null],
    [7, null],
  ], "crops: C3 first and last 4, missing C4..C7 as null");
  eq(clsValCrops(s, { ...o, seedValBug: true }).filter((c) => c.vertebra === 3).map((c) => c.crop!.z), [[
    0,
    4,
  ], [0, 4]], "seed bug");
  // A crop of 2 slices: LongestMaxSize 8 of 2x * 16 x 16 crop and padding; z padded with zeros after slice 2.
  const c2 = crops[1].crop!;
  const img = new Float32Array(2 * 12 * 20).fill(100 + 20 * 3);
  const mask = Uint8Array.from(cut(vol, G, G, c2.z, c2.y, c2.x));
  const out = buildClsValCrop(c2, img, mask, { mean: 100, std: 20, slices: 4, size: 8 });
  if (out.length !== 3 * 4 * 64) throw new Error("val crop size");
  for (let ch = 0; ch < 3; ch++) {
    if (out.subarray((ch * 4 + 2) * 64, (ch * 4 + 4) * 64).some((v) => v !== 0)) {
      throw new Error(`pad ch ${ch}`);
    }
  }
  // Crop y [0, 6) x [0, 10) on the 16 grid -> 12 x 20 at 2x -> LongestMaxSize 8: 5 x 8 (round(12 * 0.4) =
  // round(4.8)), PadIfNeeded 8: top 1, bottom 2 rows of raw 0 -> (0 - 100) / 20 = -5.
  eq([c2.y, c2.x, c2.yFull, c2.xFull], [[0, 6], [0, 10], [0, 12], [0, 20]], "C2 boxes");
  eqArrays(out.subarray(0, 8), new Array(8).fill(-5), "top padding row");
  eqArrays(out.subarray(8, 16), new Array(8).fill(3), "image row: (160 - 100) / 20", 1e-4);
  if (
    buildClsValCrop(null, [], new Uint8Array(0), { mean: 0, std: 1, slices: 4, size: 8 }).some((v) => v !== 0)
  ) {
    throw new Error("missing vertebra crop not zero");
  }
  assertThrows(
    () => buildClsValCrop(c2, img, new Uint8Array(2), { mean: 0, std: 1, slices: 4, size: 8 }),
    "expected",
  );
  // Into a view of a study's crop stack (the inference path): the same values, in place.
  const stack = new Float32Array(3 * out.length);
  const view = stack.subarray(out.length, 2 * out.length);
  const got = buildClsValCrop(c2, img, mask, { mean: 100, std: 20, slices: 4, size: 8 }, view);
  if (got !== view) throw new Error("buildClsValCrop did not fill the given view");
  eqArrays(stack.subarray(out.length, 2 * out.length), Array.from(out), "crop built in place");
  if (
    stack.subarray(0, out.length).some((v) => v !== 0) || stack.subarray(2 * out.length).some((v) => v !== 0)
  ) {
    throw new Error("buildClsValCrop wrote outside its view");
  }
  assertThrows(
    () => buildClsValCrop(c2, img, mask, { mean: 100, std: 20, slices: 4, size: 8 }, new Float32Array(5)),
    "out has 5 values",
  );
});

Deno.test("cls data: readers on a hand-written cache (full 8 x 8 = ratio 0.5, odd Z)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cls_data_test_" });
  try {
    const G = 16, Z = 15, Z2 = 8, H = 8, uid = "1.2.3.4";
    await Deno.mkdir(`${dir}/${uid}`, { recursive: true });
    // image_full [15, 8, 8] int16, each voxel encoding its position: z * 100 + y * 10 + x.
    const full = Int16Array.from({ length: Z * H * H }, (_, i) => {
      const z = Math.floor(i / 64), y = Math.floor(i / 8) % 8, x = i % 8;
      return z * 100 + y * 10 + x;
    });
    const header = {
      version: 1,
      uid,
      units: "stored",
      dtype: "int16",
      cubes: { image_full: [Z, H, H], image_256: [Z, 256, 256] },
      spacing: [1, 1, 1],
      rescale: { slope: 1, intercept: 0 },
      photometric: "MONOCHROME2",
      mean: 500,
      std: 250,
      mean2: 0,
      std2: 1,
    } satisfies CacheHeader;
    await Deno.writeTextFile(`${dir}/${uid}/header.json`, JSON.stringify(header));
    await Deno.writeFile(`${dir}/${uid}/image_full.raw`, new Uint8Array(full.buffer));
    const vol = new Uint8Array(Z2 * G * G);
    paint(vol, G, [2, 8], [4, 8], [4, 8], 3); // 6 slices reaching the last one; 96 voxels
    paint(vol, G, [3, 4], [2, 4], [2, 10], 1);
    const meta = computeMeta(vol, [Z2, G, G], { mean: 500, std: 250 });
    await writeSegPrediction(dir, uid, vol, [Z2, G, G], meta, ["test"]);

    const s = await readClsStudy(dir, uid, [1, 0, 0, 1, 0, 0, 0, 0]);
    eq([s.full, s.grid, s.mean, s.std], [[Z, H, H], [Z2, G, G], 500, 250], "study");
    // C3: z [2, 8), y [2, 10), x [2, 10) on the 16 grid -> full [1, 5) (ratio 8 / 16 = 0.5).
    const o = { slices: 4, size: 8, margin: 2, minArea: 50 };
    const spec = drawClsTrainSpec(s, script([0.1, 0]), o);
    eq([spec.crop, spec.window], [{
      vertebra: 3,
      z: [2, 8],
      y: [2, 10],
      x: [2, 10],
      yFull: [1, 5],
      xFull: [1, 5],
    }, [
      2,
      6,
    ]], "spec");
    const got = await readClsTrainSample(dir, spec);
    // Window [2, 6) of the crop = prediction slices [4, 8) = image_full slices 8, 10, 12, 14.
    const img = cut(full, H, H, [8, 15], [1, 5], [1, 5], 2);
    const msk = Uint8Array.from(cut(vol, G, G, [2, 8], [2, 10], [2, 10]));
    const want = buildClsTrainSample(spec, img, msk);
    eqArrays(got.input, want.input, "train sample read = built from hand cuts");
    eqArrays(got.labels, want.labels, "labels");
    // A JSON round trip of the spec (as posted to a Worker) reads the same sample.
    eqArrays(
      (await readClsTrainSample(dir, JSON.parse(JSON.stringify(spec)))).input,
      want.input,
      "spec via JSON",
    );

    const item = await readClsValItem(dir, s, o);
    // C1 span 1: start 3 - floor(3 / 2) = 2 -> [2, 6); C3 span 6: [2, 6) and [4, 8); C2, C4..C7 missing.
    eq(item.vertebrae, [1, 2, 3, 3, 4, 5, 6, 7], "val vertebrae");
    eq(item.shape, [8, 3, 4, 8, 8], "val shape");
    eqArrays(item.labels, [1, 0, 0, 1, 0, 0, 0, 0], "val labels");
    const per = 3 * 4 * 64;
    const crop = (i: number) => item.input.subarray(i * per, (i + 1) * per);
    const valCrops = clsValCrops(s, o);
    for (const i of [0, 2, 3]) {
      const c = valCrops[i].crop!;
      const ref = buildClsValCrop(
        c,
        cut(full, H, H, [2 * c.z[0], Math.min(2 * c.z[1], Z)], c.yFull, c.xFull, 2),
        Uint8Array.from(cut(vol, G, G, c.z, c.y, c.x)),
        { mean: 500, std: 250, slices: 4, size: 8 },
      );
      eqArrays(crop(i), ref, `val crop ${i}`);
    }
    for (const i of [1, 4, 5, 6, 7]) {
      if (crop(i).some((v) => v !== 0)) throw new Error(`val crop ${i} not zero`);
    }
    // The last crop of C3 is not the first (the seed's bug would repeat it).
    if (crop(2).every((v, j) => v === crop(3)[j])) throw new Error("C3 crops equal");
    const bug = await readClsValItem(dir, s, { ...o, seedValBug: true });
    eqArrays(bug.input.subarray(3 * per, 4 * per), crop(2), "seed bug: both C3 crops are the first");

    await assertRejectsWith(readClsStudy(dir, "nope", [0, 0, 0, 0, 0, 0, 0, 0]), "nope", "header");
    // A prediction that does not fit the cube.
    header.cubes.image_full = [Z + 4, H, H];
    await Deno.writeTextFile(`${dir}/${uid}/header.json`, JSON.stringify(header));
    await assertRejectsWith(
      readClsStudy(dir, uid, [0, 0, 0, 0, 0, 0, 0, 0]),
      "seg_meta.json",
      "does not fit",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cls data: fracture boxes ride the augmentation as the mask does; unknown gives none", () => {
  const { vol, G, Z2 } = caseA(43);
  // C3 fills grid slices [0, 4), rows and columns [4, 8): at 2x, full slices 0, 2, 4, 6, rows/columns [8, 16).
  const rects = [0, 2, 4, 6].map((z) => ({
    z,
    y: [8, 16] as [number, number],
    x: [8, 16] as [number, number],
  }));
  // an odd slice is not among the [::2] slices a crop shows
  rects.push({ z: 1, y: [0, 32], x: [0, 32] });
  const s = { ...study("f", vol, [Z2, G, G], [12, 32, 32]), fractures: rects };
  const r = mulberry32(5);
  let rotated = 0;
  for (let t = 0; t < 20; t++) {
    const spec = drawClsTrainSpec(s, r, { slices: 4, size: 8, margin: 2, minArea: 50 });
    const c = spec.crop!;
    const fh = c.yFull[1] - c.yFull[0], fw = c.xFull[1] - c.xFull[0], w = spec.window[1] - spec.window[0];
    const img = new Float32Array(w * fh * fw);
    const mask = Uint8Array.from(cut(vol, G, G, c.z, c.y, c.x));
    const out = buildClsTrainSample(spec, img, mask);
    const V = 4 * 64, m = out.input.subarray(2 * V, 3 * V);
    const want = Array.from(m, (v, i) => (i < w * 64 && v === 3 ? 1 : 0));
    eqArrays(out.fractures!, want, `fracture map = the augmented C3 mask (draw ${t})`);
    if (spec.plan!.steps.some((st) => st.name !== "LongestMaxSize" && st.name !== "PadIfNeeded")) rotated++;
  }
  if (rotated < 5) throw new Error(`only ${rotated} of 20 draws augmented`);
  const unknown = drawClsTrainSpec({ ...s, fractures: null }, mulberry32(5), {
    slices: 4,
    size: 8,
    minArea: 50,
  });
  const none = drawClsTrainSpec({ ...s, fractures: [] }, mulberry32(5), { slices: 4, size: 8, minArea: 50 });
  const c = none.crop!, w = none.window[1] - none.window[0];
  const img = new Float32Array(w * (c.yFull[1] - c.yFull[0]) * (c.xFull[1] - c.xFull[0]));
  const mask = Uint8Array.from(cut(vol, G, G, c.z, c.y, c.x));
  eq(buildClsTrainSample(unknown, img, mask).fractures, null, "unknown fractures: no map");
  const z = buildClsTrainSample(none, img, mask).fractures!;
  if (z.length !== 4 * 64 || z.some((v) => v)) throw new Error("a study without fractures: an empty map");
});
