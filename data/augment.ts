/**
 * @file The seed's 2-D augmentations (albumentations 1.3 semantics) applied to every slice of a volume with
 * one random draw replayed on all slices, like albumentations' ReplayCompose: images bilinear, masks
 * nearest, constant border 0.
 *
 * Usage: `const plan = drawAugment(segAugment(), rng, H, W)` draws every random parameter once into a
 * plain JSON object (log it, post it to a Worker); `applyPlan(plan, image, mask, [Z, H, W])` replays it.
 * Each transform is reproduced as albumentations 1.3.x computes it with OpenCV 4.x (see augment/cv.ts):
 * - ShiftScaleRotate: `cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, scale)` plus
 *   `(dx * w, dy * h)` (the centre moved by -0.5 in albumentations 1.2.1; 1.0-1.2.0 used (w / 2, h / 2)),
 *   then `cv2.warpAffine`.
 * - GridDistortion: `functional.grid_distortion` maps, `cv2.remap`.
 * - ElasticTransform (approximate=False, the 1.x default): `cv2.warpAffine` by the random affine of three
 *   points, then `cv2.remap` by `x + gaussian_filter(U(-1, 1), sigma) * alpha` where gaussian_filter is
 *   scipy's (not cv2.GaussianBlur, which only the approximate=True path uses). The uniform noise comes from
 *   mulberry32(noiseSeed) instead of numpy's RandomState, so the plan stays small.
 * - LongestMaxSize: `cv2.resize` to round-half-even(dim * max_size / longest); PadIfNeeded: centred,
 *   top = (min - h) // 2; flips and RandomRotate90 as numpy's `[::-1]` / `np.rot90(img, k)`.
 * Which transforms fire and their parameters are drawn from the caller's `rng`, not Python's `random`.
 *
 * Pure TypeScript without Deno APIs, so it runs inside Workers. Resampling tables are built once per plan
 * and reused for every slice; mask index maps (all nearest or permutations) are composed into one gather.
 */
import {
  affineTransform,
  gather,
  gaussianFilter,
  gridDistortionAxis,
  type LinearResize,
  linearResize,
  type LinearTable,
  linearTable,
  nearestIndex,
  remapCoords,
  resizeLinear,
  resizeNearestIndex,
  rotationMatrix2D,
  roundHalfEven,
  sampleLinear,
  warpAffineCoords,
} from "./augment/cv.ts";

/** Uniform random numbers in [0, 1), e.g. `rng(seed)` from data/synth.ts. */
export type Rng = () => number;

/** One transform of a pipeline with its albumentations arguments (p = probability of applying). */
export type TransformSpec =
  | { name: "ShiftScaleRotate"; shiftLimit: number; scaleLimit: number; rotateLimit: number; p: number }
  | { name: "HorizontalFlip"; p: number }
  | { name: "VerticalFlip"; p: number }
  | { name: "RandomRotate90"; p: number }
  | { name: "LongestMaxSize"; maxSize: number; p?: number }
  | { name: "PadIfNeeded"; minHeight: number; minWidth: number; p?: number }
  | { name: "GridDistortion"; numSteps: number; distortLimit: number; p: number }
  | { name: "ElasticTransform"; alpha: number; sigma: number; alphaAffine: number; p: number }
  | { name: "OneOf"; transforms: TransformSpec[]; p: number };

/** One applied transform with its drawn parameters. */
export type AugmentStep =
  | { name: "ShiftScaleRotate"; angle: number; scale: number; dx: number; dy: number }
  | { name: "HorizontalFlip" }
  | { name: "VerticalFlip" }
  | { name: "RandomRotate90"; k: number }
  | { name: "LongestMaxSize"; maxSize: number; height: number; width: number }
  | {
    name: "PadIfNeeded";
    minHeight: number;
    minWidth: number;
    top: number;
    bottom: number;
    left: number;
    right: number;
  }
  | { name: "GridDistortion"; numSteps: number; stepsX: number[]; stepsY: number[] }
  | {
    name: "ElasticTransform";
    alpha: number;
    sigma: number;
    /** float32 offsets added to the three anchor points, [x0, y0, x1, y1, x2, y2]. */
    shifts: number[];
    /** mulberry32 seed of the two uniform noise fields (see `elasticNoise`). */
    noiseSeed: number;
  };

/** A drawn augmentation: JSON-serializable, replayable on any volume of slice shape [height, width]. */
export interface AugmentPlan {
  height: number;
  width: number;
  outHeight: number;
  outWidth: number;
  steps: AugmentStep[];
}

/**
 * The segmentation stage's train augmentation (seed §2.2) for slices of `size` pixels (the seed's 256). The
 * seed's lengths in pixels (ElasticTransform's sigma and alpha_affine) are for 256-px slices: at 32 px an
 * alpha_affine of 50 moves the three reference points (10 px from the centre) by up to 50 px, an affine that
 * folds or inverts the slice, so they are scaled by size / 256 (alpha by its square: the field's amplitude
 * goes as alpha / sigma), which keeps the distortions' share of the slice. Relative limits stay as they are.
 */
export function segAugment(size = 256): TransformSpec[] {
  if (!(size > 0)) throw new Error(`segAugment: size must be > 0 pixels, got ${size}`);
  const k = size / 256;
  return [
    { name: "ShiftScaleRotate", shiftLimit: 0.1, scaleLimit: 0.1, rotateLimit: 20, p: 0.5 },
    { name: "HorizontalFlip", p: 0.5 },
    {
      name: "OneOf",
      p: 0.2,
      transforms: [
        { name: "GridDistortion", numSteps: 5, distortLimit: 0.1, p: 0.5 },
        { name: "ElasticTransform", alpha: k * k, sigma: 50 * k, alphaAffine: 50 * k, p: 0.5 },
      ],
    },
  ];
}

/** The crop classifier's augmentation (seed §4.4, `CropAugsFullRes`); validation keeps resize + pad only. */
export function cropAugment(opts: { train: boolean; size?: number }): TransformSpec[] {
  const size = opts.size ?? 256;
  const base: TransformSpec[] = [
    { name: "LongestMaxSize", maxSize: size },
    { name: "PadIfNeeded", minHeight: size, minWidth: size },
  ];
  if (!opts.train) return base;
  return [
    ...base,
    { name: "ShiftScaleRotate", shiftLimit: 0.05, scaleLimit: 0.1, rotateLimit: 15, p: 0.5 },
    { name: "HorizontalFlip", p: 0.5 },
    { name: "VerticalFlip", p: 0.5 },
    { name: "RandomRotate90", p: 0.5 },
  ];
}

function checkSpec(t: TransformSpec, where: string): void {
  const bad = (what: string) => {
    throw new Error(`drawAugment: ${where} (${t.name}): ${what}`);
  };
  const p = t.p ?? 1;
  if (!(p >= 0 && p <= 1)) bad(`p must be in [0, 1], got ${p}`);
  switch (t.name) {
    case "ShiftScaleRotate":
      if (!(t.shiftLimit >= 0 && t.scaleLimit >= 0 && t.rotateLimit >= 0)) bad("limits must be >= 0");
      break;
    case "LongestMaxSize":
      if (!(Number.isInteger(t.maxSize) && t.maxSize >= 1)) bad(`maxSize must be a positive integer`);
      break;
    case "PadIfNeeded":
      if (!(Number.isInteger(t.minHeight) && Number.isInteger(t.minWidth))) {
        bad("minHeight/minWidth must be integers");
      }
      break;
    case "GridDistortion":
      if (!(Number.isInteger(t.numSteps) && t.numSteps >= 1)) bad("numSteps must be a positive integer");
      if (!(t.distortLimit >= 0)) bad("distortLimit must be >= 0");
      break;
    case "ElasticTransform":
      if (!(t.sigma > 0 && t.alphaAffine >= 0 && Number.isFinite(t.alpha))) {
        bad("needs sigma > 0, alphaAffine >= 0");
      }
      break;
    case "OneOf":
      if (!Array.isArray(t.transforms) || t.transforms.length === 0) bad("needs at least one transform");
      t.transforms.forEach((c, i) => checkSpec(c, `${where}.transforms[${i}]`));
      break;
    case "HorizontalFlip":
    case "VerticalFlip":
    case "RandomRotate90":
      break;
    default:
      throw new Error(
        `drawAugment: ${where}: unknown transform ${JSON.stringify((t as { name?: unknown }).name)}`,
      );
  }
}

/** Draws every random decision of `spec` (applied in order) for slices of shape [h, w]. */
export function drawAugment(spec: TransformSpec[], rng: Rng, h: number, w: number): AugmentPlan {
  if (!(Number.isInteger(h) && Number.isInteger(w) && h >= 1 && w >= 1)) {
    throw new Error(`drawAugment: slice shape must be positive integers, got ${h}x${w}`);
  }
  spec.forEach((t, i) => checkSpec(t, `spec[${i}]`));
  const steps: AugmentStep[] = [];
  let H = h, W = w;
  const uniform = (lo: number, hi: number) => lo + (hi - lo) * rng();
  const draw = (t: TransformSpec, force: boolean): void => {
    if (t.name === "OneOf") {
      if (!(rng() < t.p)) return;
      // The chosen child always runs (albumentations' force_apply), picked with probability p_i / sum(p).
      const total = t.transforms.reduce((s, c) => s + (c.p ?? 1), 0);
      let u = rng() * total, pick = t.transforms.length - 1;
      for (let i = 0; i < t.transforms.length; i++) {
        u -= t.transforms[i].p ?? 1;
        if (u < 0) {
          pick = i;
          break;
        }
      }
      return draw(t.transforms[pick], true);
    }
    if (!force && !(rng() < (t.p ?? 1))) return;
    switch (t.name) {
      case "ShiftScaleRotate":
        steps.push({
          name: t.name,
          angle: uniform(-t.rotateLimit, t.rotateLimit),
          scale: uniform(1 - t.scaleLimit, 1 + t.scaleLimit),
          dx: uniform(-t.shiftLimit, t.shiftLimit),
          dy: uniform(-t.shiftLimit, t.shiftLimit),
        });
        break;
      case "HorizontalFlip":
      case "VerticalFlip":
        steps.push({ name: t.name });
        break;
      case "RandomRotate90": {
        const k = Math.min(3, Math.floor(rng() * 4));
        steps.push({ name: t.name, k });
        if (k % 2) [H, W] = [W, H];
        break;
      }
      case "LongestMaxSize": {
        const scale = t.maxSize / Math.max(H, W);
        if (scale === 1) break;
        const nh = roundHalfEven(H * scale), nw = roundHalfEven(W * scale);
        if (nh < 1 || nw < 1) {
          throw new Error(`drawAugment: LongestMaxSize(${t.maxSize}) of ${H}x${W} is empty`);
        }
        steps.push({ name: t.name, maxSize: t.maxSize, height: nh, width: nw });
        [H, W] = [nh, nw];
        break;
      }
      case "PadIfNeeded": {
        const top = H < t.minHeight ? Math.floor((t.minHeight - H) / 2) : 0;
        const bottom = H < t.minHeight ? t.minHeight - H - top : 0;
        const left = W < t.minWidth ? Math.floor((t.minWidth - W) / 2) : 0;
        const right = W < t.minWidth ? t.minWidth - W - left : 0;
        if (top + bottom + left + right === 0) break;
        steps.push({ name: t.name, minHeight: t.minHeight, minWidth: t.minWidth, top, bottom, left, right });
        [H, W] = [H + top + bottom, W + left + right];
        break;
      }
      case "GridDistortion": {
        const d = () => 1 + uniform(-t.distortLimit, t.distortLimit);
        const stepsX = Array.from({ length: t.numSteps + 1 }, d);
        const stepsY = Array.from({ length: t.numSteps + 1 }, d);
        steps.push({ name: t.name, numSteps: t.numSteps, stepsX, stepsY });
        break;
      }
      case "ElasticTransform": {
        const shifts = Array.from({ length: 6 }, () => Math.fround(uniform(-t.alphaAffine, t.alphaAffine)));
        const noiseSeed = Math.floor(rng() * 4294967296) >>> 0;
        steps.push({ name: t.name, alpha: t.alpha, sigma: t.sigma, shifts, noiseSeed });
        break;
      }
    }
  };
  for (const t of spec) draw(t, false);
  return { height: h, width: w, outHeight: H, outWidth: W, steps };
}

/** The 2x3 matrix albumentations 1.3 `shift_scale_rotate` passes to cv2.warpAffine for an [h, w] slice. */
export function shiftScaleRotateMatrix(
  h: number,
  w: number,
  s: { angle: number; scale: number; dx: number; dy: number },
): number[] {
  const m = rotationMatrix2D(w / 2 - 0.5, h / 2 - 0.5, s.angle, s.scale);
  m[2] += s.dx * w;
  m[5] += s.dy * h;
  return m;
}

/** The random affine of albumentations 1.x `elastic_transform` (its (h, w)-as-(x, y) anchors included). */
export function elasticMatrix(h: number, w: number, shifts: ArrayLike<number>): number[] {
  const c0 = Math.floor(h / 2), c1 = Math.floor(w / 2), s = Math.floor(Math.min(h, w) / 3);
  const src = [c0 + s, c1 + s, c0 + s, c1 - s, c0 - s, c1 - s];
  return affineTransform(src, src.map((v, i) => Math.fround(v + Math.fround(shifts[i]))));
}

/** The two U(-1, 1) noise fields of an elastic step: mulberry32(seed), all of dx then all of dy. */
export function elasticNoise(seed: number, h: number, w: number): { dx: Float64Array; dy: Float64Array } {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const dx = new Float64Array(h * w), dy = new Float64Array(h * w);
  for (let i = 0; i < dx.length; i++) dx[i] = next() * 2 - 1;
  for (let i = 0; i < dy.length; i++) dy[i] = next() * 2 - 1;
  return { dx, dy };
}

type ImageOp =
  | { kind: "gather"; idx: Int32Array; outH: number; outW: number }
  | { kind: "linear"; t: LinearTable; pad: Float32Array; outH: number; outW: number }
  | { kind: "resize"; r: LinearResize; rows: Float32Array; outH: number; outW: number };

interface Compiled {
  ops: ImageOp[];
  /** Composed source index per output pixel for masks; null = identity. */
  maskIdx: Int32Array | null;
}

function compose(first: Int32Array | null, then: Int32Array): Int32Array {
  if (!first) return then;
  const out = new Int32Array(then.length);
  for (let i = 0; i < then.length; i++) out[i] = then[i] < 0 ? -1 : first[then[i]];
  return out;
}

function indexMap(
  oh: number,
  ow: number,
  f: (y: number, x: number) => number,
): Int32Array {
  const idx = new Int32Array(oh * ow);
  for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) idx[y * ow + x] = f(y, x);
  return idx;
}

/** Builds the per-plan resampling tables (done once, reused for every slice). */
function compilePlan(plan: AugmentPlan): Compiled {
  const ops: ImageOp[] = [];
  let maskIdx: Int32Array | null = null, H = plan.height, W = plan.width;
  const pushGather = (idx: Int32Array, oh: number, ow: number) => {
    const last = ops[ops.length - 1];
    if (last?.kind === "gather") {
      ops[ops.length - 1] = { kind: "gather", idx: compose(last.idx, idx), outH: oh, outW: ow };
    } else ops.push({ kind: "gather", idx, outH: oh, outW: ow });
    maskIdx = compose(maskIdx, idx);
  };
  // An affine warp or remap: bilinear table for images, nearest index for masks.
  const pushSampler = (lin: ReturnType<typeof remapCoords>, nn: ReturnType<typeof remapCoords>) => {
    ops.push({
      kind: "linear",
      t: linearTable(lin, H, W),
      pad: new Float32Array((H + 2) * (W + 2)),
      outH: H,
      outW: W,
    });
    maskIdx = compose(maskIdx, nearestIndex(nn, H, W));
  };
  for (const [i, s] of plan.steps.entries()) {
    const h = H, w = W;
    switch (s.name) {
      case "HorizontalFlip":
        pushGather(indexMap(h, w, (y, x) => y * w + w - 1 - x), h, w);
        break;
      case "VerticalFlip":
        pushGather(indexMap(h, w, (y, x) => (h - 1 - y) * w + x), h, w);
        break;
      case "RandomRotate90": {
        const k = ((s.k % 4) + 4) % 4;
        if (k === 0) break;
        // np.rot90 turns counter-clockwise: out[i, j] = in[j, w-1-i] for k = 1.
        const f = k === 1
          ? (y: number, x: number) => x * w + (w - 1 - y)
          : k === 2
          ? (y: number, x: number) => (h - 1 - y) * w + (w - 1 - x)
          : (y: number, x: number) => (h - 1 - x) * w + y;
        const [oh, ow] = k === 2 ? [h, w] : [w, h];
        pushGather(indexMap(oh, ow, f), oh, ow);
        [H, W] = [oh, ow];
        break;
      }
      case "PadIfNeeded": {
        const oh = h + s.top + s.bottom, ow = w + s.left + s.right;
        pushGather(
          indexMap(oh, ow, (y, x) => {
            const sy = y - s.top, sx = x - s.left;
            return sy >= 0 && sy < h && sx >= 0 && sx < w ? sy * w + sx : -1;
          }),
          oh,
          ow,
        );
        [H, W] = [oh, ow];
        break;
      }
      case "LongestMaxSize": {
        const oh = s.height, ow = s.width;
        ops.push({
          kind: "resize",
          r: linearResize(h, w, oh, ow),
          rows: new Float32Array(h * ow),
          outH: oh,
          outW: ow,
        });
        maskIdx = compose(maskIdx, resizeNearestIndex(h, w, oh, ow));
        [H, W] = [oh, ow];
        break;
      }
      case "ShiftScaleRotate": {
        const m = shiftScaleRotateMatrix(h, w, s);
        pushSampler(warpAffineCoords(m, h, w, false), warpAffineCoords(m, h, w, true));
        break;
      }
      case "GridDistortion": {
        const xx = gridDistortionAxis(w, s.numSteps, s.stepsX),
          yy = gridDistortionAxis(h, s.numSteps, s.stepsY);
        const mx = new Float32Array(h * w), my = new Float32Array(h * w);
        for (let y = 0; y < h; y++) mx.set(xx, y * w), my.fill(yy[y], y * w, (y + 1) * w);
        pushSampler(remapCoords(mx, my, false), remapCoords(mx, my, true));
        break;
      }
      case "ElasticTransform": {
        const m = elasticMatrix(h, w, s.shifts);
        pushSampler(warpAffineCoords(m, h, w, false), warpAffineCoords(m, h, w, true));
        const noise = elasticNoise(s.noiseSeed, h, w);
        const gx = gaussianFilter(noise.dx, h, w, s.sigma), gy = gaussianFilter(noise.dy, h, w, s.sigma);
        const mx = new Float32Array(h * w), my = new Float32Array(h * w);
        for (let y = 0, j = 0; y < h; y++) {
          for (let x = 0; x < w; x++, j++) {
            mx[j] = x + Math.fround(gx[j] * s.alpha);
            my[j] = y + Math.fround(gy[j] * s.alpha);
          }
        }
        pushSampler(remapCoords(mx, my, false), remapCoords(mx, my, true));
        break;
      }
      default:
        throw new Error(
          `applyPlan: unknown step ${JSON.stringify((s as { name?: string }).name)} at steps[${i}]`,
        );
    }
  }
  if (H !== plan.outHeight || W !== plan.outWidth) {
    throw new Error(`applyPlan: steps give ${H}x${W} but plan says ${plan.outHeight}x${plan.outWidth}`);
  }
  return { ops, maskIdx };
}

/**
 * Applies a plan to every slice of an [Z, H, W] float32 image and (optionally) its uint8 mask.
 * Returns new arrays of shape [Z, plan.outHeight, plan.outWidth].
 */
export function applyPlan(
  plan: AugmentPlan,
  image: Float32Array,
  mask: Uint8Array | null,
  shape: [number, number, number],
): { image: Float32Array; mask: Uint8Array | null; shape: [number, number, number] } {
  const [Z, H, W] = shape;
  if (!(Number.isInteger(Z) && Z >= 0) || H !== plan.height || W !== plan.width) {
    throw new Error(
      `applyPlan: shape [${shape}] does not match the plan's slices ${plan.height}x${plan.width}`,
    );
  }
  if (image.length !== Z * H * W) {
    throw new Error(`applyPlan: image has ${image.length} values, shape [${shape}]`);
  }
  if (mask && mask.length !== Z * H * W) {
    throw new Error(`applyPlan: mask has ${mask.length} values, shape [${shape}]`);
  }
  const { ops, maskIdx } = compilePlan(plan);
  const oh = plan.outHeight, ow = plan.outWidth, n = H * W, n2 = oh * ow;
  const outImage = new Float32Array(Z * n2), outMask = mask ? new Uint8Array(Z * n2) : null;
  const big = Math.max(n, ...ops.map((o) => o.outH * o.outW));
  const bufs = [new Float32Array(big), new Float32Array(big)];
  for (let z = 0; z < Z; z++) {
    const out = outImage.subarray(z * n2, (z + 1) * n2);
    let cur = image.subarray(z * n, (z + 1) * n);
    if (ops.length === 0) out.set(cur);
    for (let k = 0; k < ops.length; k++) {
      const op = ops[k];
      const dst = k === ops.length - 1 ? out : bufs[k % 2].subarray(0, op.outH * op.outW);
      if (op.kind === "gather") gather(cur, op.idx, dst);
      else if (op.kind === "linear") sampleLinear(cur, op.t, op.pad, dst);
      else resizeLinear(cur, op.r, op.rows, dst);
      cur = dst;
    }
    if (mask && outMask) {
      const m = mask.subarray(z * n, (z + 1) * n), mo = outMask.subarray(z * n2, (z + 1) * n2);
      if (maskIdx) gather(m, maskIdx, mo);
      else mo.set(m);
    }
  }
  return { image: outImage, mask: outMask, shape: [Z, oh, ow] };
}
