/**
 * @file Whole-study segmentation with the seed's z sliding window (seed spec 2.6): pad Z with raw zeros to a
 * multiple of 32, z-score, run windows of 384 slices overlapping by 128, sum the softmaxes of an ensemble and
 * take the argmax. Each window is computed on the GPU down to one byte per voxel and only the slices it
 * writes are read back, so memory stays bounded by one window whatever the study length. Models smaller than
 * the 256 grid (`size`) see slices resampled exactly as their training samples were (infer/resample.ts), and
 * their class probabilities come back to the grid by bilinear interpolation before the argmax (smooth
 * boundaries where labels resized nearest would be blocks of the model's pixels).
 */
import { F, type models, noGrad, type Tensor, tensor, tidy } from "../mod.ts";
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
   * bilinear otherwise) and the mean softmax back to H x W bilinearly (align_corners false) in the pass
   * that takes the argmax and the > 0.5 bits (`F.resizedArgmax`). Default: H x W. */
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
  const plane = H * W;
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
      const out = noGrad(() => tidy(() => windowLabels(nets, input, [L, MH, MW], [H, W], from, n, probs)));
      let packed: Int32Array;
      try {
        packed = (await out.toArray()) as Int32Array;
      } finally {
        out.dispose();
      }
      const dst = (s + from) * plane;
      for (let i = 0; i < n * plane; i++) labels[dst + i] = packed[i] & 255;
      if (above) { for (let i = 0; i < n * plane; i++) above[dst + i] = packed[i] >> 8; }
    }
    opts.onWindow?.(k + 1, starts.length);
  }
  return above ? { labels, above, shape: [Z, H, W] } : { labels, shape: [Z, H, W] };
}

/**
 * One window on the GPU: the softmax summed over the models (averaged for the > 0.5 bits), narrowed to the
 * `n` slices written from `from`, resampled to `out` (H x W) in-plane where the model ran smaller and reduced
 * in the same pass (`F.resizedArgmax`) to i32 [1, n, H, W]: the argmax label in the low byte, with `probs` the
 * classes above 0.5 as bits 8 + c.
 */
function windowLabels(
  nets: models.CSNUNet[],
  input: Float32Array,
  [L, MH, MW]: [number, number, number],
  [H, W]: [number, number],
  from: number,
  n: number,
  probs: boolean,
): Tensor {
  const device = nets[0].parameters()[0].device;
  const x = tensor(input, [1, 1, L, MH, MW], { device });
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
  if (probs && C > 8) {
    throw new Error(`predictVolume: probs needs at most 8 classes to pack bits in a byte, got ${C}`);
  }
  const part = from === 0 && n === L ? acc! : F.narrow(acc!, 2, from, n);
  if (part !== acc) acc!.dispose();
  // The mean, on the model's grid: interpolation is linear, so this is the mean of the resampled ones.
  const mean = nets.length === 1 ? part : F.div(part, nets.length);
  if (mean !== part) part.dispose();
  const out = F.resizedArgmax(mean, [H, W], { threshold: probs ? 0.5 : null });
  mean.dispose();
  return out;
}
