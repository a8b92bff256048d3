/**
 * @file The segmentation stage's samples (seed-pipeline.md 2.1): a window of `slices` slices of the study's
 * `[::2]`-subsampled 256 cube, starting at the seed's random start (uniform in [0, Z - slices - 1]: the last
 * possible start is never drawn) or zero-padded (raw value 0) at the end when the study is shorter; one
 * augmentation draw replayed on every slice (raw values, constant border 0); Z padded to a multiple of 16
 * with raw zeros; z-scored with the study's `[::2]` mean/std (so padding becomes -mean/std); labels above 7
 * (thoracic) mapped to background. Everything here is pure computation on host arrays, so it runs in the
 * loader's Workers and in tests alike.
 */
import { applyPlan, type AugmentPlan } from "../data/augment.ts";
import { resampleSlices } from "../infer/resample.ts";

/** Where one sample comes from and how it is transformed: everything a Worker needs to build it. */
export interface SegSampleSpec {
  uid: string;
  /** First subsampled slice of the window (0 when the study is shorter than the window). */
  start: number;
  /** Slices in the window (the seed's `slice_size`, 64). */
  slices: number;
  /** In-plane size fed to the model (256 in the seed; smaller presets resample the 256 grid). */
  size: number;
  /** The study's [::2] statistics (cache header mean2 / std2). */
  mean: number;
  std: number;
  /** Augmentation drawn for this sample (null: none). */
  plan: AugmentPlan | null;
}

/** A built sample: image [Z, size, size] z-scored, target [Z, size, size] with classes 0..7. */
export interface SegSample {
  image: Float32Array;
  target: Uint8Array;
  shape: [number, number, number];
}

/** The seed's random window start over a subsampled study of `Z` slices (0 when it fits in one window). */
export function segWindowStart(Z: number, slices: number, rnd: () => number): number {
  if (Z <= slices) return 0;
  // randint(0, Z - slices - 1) inclusive: Z - slices values, the last start (Z - slices) never drawn.
  return Math.floor(rnd() * (Z - slices));
}

/**
 * Builds a sample from the window's raw voxels (`image`, `mask`: [n, H, W] with n <= slices, i.e. the slices
 * [start, start + n) of the subsampled cube).
 */
export function buildSegSample(
  spec: SegSampleSpec,
  image: ArrayLike<number>,
  mask: Uint8Array,
  shape: [number, number, number],
): SegSample {
  const [n, H, W] = shape;
  if (n > spec.slices) throw new Error(`buildSegSample: ${n} slices for a window of ${spec.slices}`);
  if (mask.length !== n * H * W || image.length !== n * H * W) {
    throw new Error(`buildSegSample: image/mask sizes do not match [${shape}]`);
  }
  const Z = Math.ceil(spec.slices / 16) * 16;
  // Zero-pad (raw 0) at the end to the window, and to a multiple of 16.
  let img: Float32Array = new Float32Array(Z * H * W);
  for (let i = 0; i < n * H * W; i++) img[i] = image[i];
  let msk: Uint8Array = new Uint8Array(Z * H * W);
  msk.set(mask);
  let h = H, w = W;
  if (H !== spec.size || W !== spec.size) {
    img = resampleSlices(img, [Z, H, W], spec.size, "linear");
    msk = resampleSlices(msk, [Z, H, W], spec.size, "nearest");
    h = w = spec.size;
  }
  if (spec.plan) {
    const r = applyPlan(spec.plan, img, msk, [Z, h, w]);
    img = r.image;
    msk = r.mask!;
    [, h, w] = r.shape;
  }
  const inv = 1 / spec.std;
  for (let i = 0; i < img.length; i++) img[i] = (img[i] - spec.mean) * inv;
  for (let i = 0; i < msk.length; i++) if (msk[i] > 7) msk[i] = 0;
  return { image: img, target: msk, shape: [Z, h, w] };
}
