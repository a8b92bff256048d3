/**
 * @file Whole-study segmentation with the seed's z sliding window (seed spec 2.6): pad Z with raw zeros to a
 * multiple of 32, z-score, run windows of 384 slices overlapping by 128, sum the softmaxes of an ensemble and
 * take the argmax. Each window is computed on the GPU down to one byte per voxel and only the slices it
 * writes are read back, so memory stays bounded by one window whatever the study length. Models smaller than
 * the 256 grid (`size`) see slices resampled exactly as their training samples were (infer/resample.ts).
 */
import { F, type models, noGrad, type Tensor, tensor, tidy } from "../mod.ts";
import { resizeNearest8 } from "../data/mod.ts";
import { resampleSlices } from "./resample.ts";

/** A study volume: raw values [Z, H, W], slice-major. */
export interface Volume {
  data: ArrayLike<number>;
  shape: [number, number, number];
}

/** Options of {@link predictVolume}. */
export interface PredictOptions {
  /** z-score statistics (the seed uses those of the [::2] 256 cube). */
  mean: number;
  std: number;
  /** Window length in slices (default 384). */
  window?: number;
  /** Overlap of consecutive windows (default 128); a window writes from overlap/2 on. */
  overlap?: number;
  /** Z is padded with raw zeros to a multiple of this before z-scoring (default 32). */
  padMultiple?: number;
  /** The model's in-plane size; when it differs from H or W, slices are resampled to size x size before
   * the model as the training samples are (infer/resample.ts "linear": box average for integer factors,
   * bilinear otherwise) and the labels resized back nearest (cv2 INTER_NEAREST). Default: H x W. */
  size?: number;
  /** Also return `above`: bit c set where the ensemble's mean probability of class c is > 0.5. */
  probs?: boolean;
  /** Progress after each window. */
  onWindow?: (done: number, total: number) => void;
}

/** Result of {@link predictVolume}: uint8 volumes [Z, H, W]. */
export interface VolumePrediction {
  /** argmax over classes of the softmax summed over the ensemble. */
  labels: Uint8Array;
  /** Bit c set where mean softmax probability of class c > 0.5 (only with `probs`). */
  above?: Uint8Array;
  shape: [number, number, number];
}

/**
 * Start indices of the z windows over a (padded) length `Z`, as the seed's slicer computes them: 0, stride,
 * 2 stride, ... while start + window < Z, then a last window moved back to end exactly at Z; a single
 * window at 0 when Z <= window.
 */
export function windowStarts(Z: number, window: number, overlap: number): number[] {
  for (const [k, v] of Object.entries({ Z, window, overlap })) {
    if (!Number.isInteger(v) || v < 0) {
      throw new Error(`windowStarts: ${k} must be an integer >= 0, got ${v}`);
    }
  }
  if (window < 1 || overlap >= window) {
    throw new Error(`windowStarts: need window >= 1 and 0 <= overlap < window, got ${window}, ${overlap}`);
  }
  if (Z <= window) return [0];
  const starts: number[] = [];
  let s = 0;
  for (; s + window < Z; s += window - overlap) starts.push(s);
  starts.push(Z - window);
  return starts;
}

function positiveInt(v: number, what: string, min = 1): number {
  if (!Number.isInteger(v) || v < min) {
    throw new Error(`predictVolume: ${what} must be an integer >= ${min}, got ${v}`);
  }
  return v;
}

/**
 * Segments a whole study with an ensemble of CSN-UNets (in eval mode) by the seed's sliding z window. Z is
 * padded with raw zeros to a multiple of `padMultiple` before z-scoring; windows follow
 * {@link windowStarts}; window k writes its slices from local index overlap/2 on (the first from 0), in order,
 * so later windows overwrite earlier ones; the result is cropped back to Z. Per window the models run under
 * noGrad, their softmaxes are summed on the GPU, argmax (and the > 0.5 bits) are taken there too, and one
 * byte per voxel of the written slices is read back: one GPU sync per window.
 */
export async function predictVolume(
  nets: models.CSNUNet[],
  image: Volume,
  opts: PredictOptions,
): Promise<VolumePrediction> {
  if (!Array.isArray(nets) || nets.length === 0) {
    throw new Error("predictVolume: models must be a non-empty array");
  }
  nets.forEach((m, i) => {
    if (m.training) throw new Error(`predictVolume: model ${i} is in training mode (call .eval() first)`);
  });
  const shape = image?.shape;
  if (!Array.isArray(shape) || shape.length !== 3 || shape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`predictVolume: image.shape must be [Z, H, W] of positive integers, got [${shape}]`);
  }
  const [Z, H, W] = shape;
  if (image.data.length !== Z * H * W) {
    throw new Error(
      `predictVolume: image.data has ${image.data.length} values, shape [${shape}] needs ${Z * H * W}`,
    );
  }
  const { mean, std } = opts;
  if (!Number.isFinite(mean) || !Number.isFinite(std) || !(std > 0)) {
    throw new Error(`predictVolume: need a finite mean and std > 0, got mean ${mean}, std ${std}`);
  }
  const window = positiveInt(opts.window ?? 384, "window");
  const overlap = positiveInt(opts.overlap ?? 128, "overlap", 0);
  if (overlap >= window) throw new Error(`predictVolume: overlap ${overlap} must be < window ${window}`);
  const padMultiple = positiveInt(opts.padMultiple ?? 32, "padMultiple");
  const S = opts.size === undefined ? null : positiveInt(opts.size, "size");
  const [MH, MW] = S === null ? [H, W] : [S, S];
  const resize = MH !== H || MW !== W;
  const device = nets[0].parameters()[0]?.device;
  if (!device) throw new Error("predictVolume: model 0 has no parameters");
  if (nets.some((m) => m.parameters()[0]?.device !== device)) {
    throw new Error("predictVolume: all models must be on the same device");
  }
  const probs = !!opts.probs;

  const Zpad = Math.ceil(Z / padMultiple) * padMultiple;
  const L = Math.min(window, Zpad);
  const starts = windowStarts(Zpad, window, overlap);
  const labels = new Uint8Array(Z * H * W);
  const above = probs ? new Uint8Array(Z * H * W) : undefined;
  const plane = H * W, mplane = MH * MW;
  const raw = new Float32Array(L * plane);

  for (let k = 0; k < starts.length; k++) {
    const s = starts[k];
    const from = k === 0 ? 0 : Math.floor(overlap / 2);
    // Written slices that fall in the padding are dropped anyway: do not read them back.
    const n = Math.min(L, Z - s) - from;
    if (n > 0) {
      // Raw values, zero-padded, resampled like the training samples (train/seg_data.ts), then z-scored.
      const real = Math.min(L, Z - s);
      for (let i = 0; i < real * plane; i++) raw[i] = image.data[s * plane + i];
      raw.fill(0, real * plane);
      const input = resize ? resampleSlices(raw, [L, H, W], S!, "linear") : raw;
      const inv = 1 / std;
      for (let i = 0; i < input.length; i++) input[i] = (input[i] - mean) * inv;
      const out = noGrad(() => tidy(() => windowBytes(nets, input, [L, MH, MW], from, n, probs)));
      let bytes: Uint8Array;
      try {
        bytes = (await out.toArray()) as Uint8Array;
      } finally {
        out.dispose();
      }
      for (let j = 0; j < n; j++) {
        const dst = (s + from + j) * plane;
        const lab = bytes.subarray(j * mplane, (j + 1) * mplane);
        labels.set(resize ? resizeNearest8(lab, MH, MW, H, W) : lab, dst);
        if (above) {
          const bits = bytes.subarray((n + j) * mplane, (n + j + 1) * mplane);
          above.set(resize ? resizeNearest8(bits, MH, MW, H, W) : bits, dst);
        }
      }
    }
    opts.onWindow?.(k + 1, starts.length);
  }
  return above ? { labels, above, shape: [Z, H, W] } : { labels, shape: [Z, H, W] };
}

/**
 * One window on the GPU: summed softmax over the models, narrowed to the `n` slices written from `from`,
 * reduced to u8 labels [n, H, W] (followed by u8 bit masks [n, H, W] when `probs`).
 */
function windowBytes(
  nets: models.CSNUNet[],
  input: Float32Array,
  [L, H, W]: [number, number, number],
  from: number,
  n: number,
  probs: boolean,
): Tensor {
  const device = nets[0].parameters()[0].device;
  const x = tensor(input, [1, 1, L, H, W], { device });
  let acc: Tensor | null = null;
  for (const m of nets) {
    const logits = m.forward(x);
    const p = F.softmax(logits, 1);
    logits.dispose();
    if (acc) {
      const s: Tensor = F.add(acc, p);
      acc.dispose();
      p.dispose();
      acc = s;
    } else acc = p;
  }
  x.dispose();
  const C = acc!.shape[1];
  const part = from === 0 && n === L ? acc! : F.narrow(acc!, 2, from, n);
  if (part !== acc) acc!.dispose();
  const lab = F.argmax(part, 1);
  if (!probs) return F.cast(lab, "u8");
  if (C > 8) throw new Error(`predictVolume: probs needs at most 8 classes to pack bits in a byte, got ${C}`);
  // Intermediates are freed as soon as used: each is as large as the window's probabilities.
  const meanP = nets.length === 1 ? part : F.div(part, nets.length);
  if (meanP !== part) part.dispose();
  const gt = F.gt(meanP, 0.5);
  meanP.dispose();
  const hit = F.cast(gt, "f32");
  gt.dispose();
  const pow2 = tensor(Array.from({ length: C }, (_, c) => 2 ** c), [1, C, 1, 1, 1], { device });
  const weighted = F.mul(hit, pow2);
  hit.dispose();
  const bits = F.sum(weighted, 1);
  weighted.dispose();
  return F.cast(F.cat([F.cast(lab, "f32"), bits], 0), "u8");
}
