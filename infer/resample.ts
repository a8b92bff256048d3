/**
 * @file In-plane resampling of volumes between the 256 grid of the cache and a model's input size (the
 * seed runs at 256; smaller presets segment at, e.g., 64 and map labels back). Images go down by area
 * averaging (what cv2.INTER_AREA computes for an integer factor: the mean of each k x k block, so thin
 * structures are not aliased away) or bilinearly (cv2.INTER_LINEAR's half-pixel centres) otherwise; label
 * volumes use nearest (cv2.INTER_NEAREST: source index floor(d * src / dst)).
 */

/** Resamples every slice of a [Z, H, W] volume to [Z, size, size]. */
export function resampleSlices<T extends Float32Array | Uint8Array>(
  data: T,
  shape: readonly [number, number, number] | readonly number[],
  size: number,
  mode: "linear" | "nearest",
): T {
  const [Z, H, W] = shape;
  if (data.length !== Z * H * W) throw new Error(`resampleSlices: ${data.length} values for [${shape}]`);
  if (!Number.isInteger(size) || size < 1) throw new Error(`resampleSlices: bad size ${size}`);
  if (H === size && W === size) return data;
  const n = size * size;
  const out = (data instanceof Uint8Array ? new Uint8Array(Z * n) : new Float32Array(Z * n)) as T;
  if (mode === "nearest") {
    const ys = Int32Array.from({ length: size }, (_, d) => Math.min(H - 1, Math.floor((d * H) / size)));
    const xs = Int32Array.from({ length: size }, (_, d) => Math.min(W - 1, Math.floor((d * W) / size)));
    for (let z = 0; z < Z; z++) {
      for (let y = 0; y < size; y++) {
        const src = (z * H + ys[y]) * W, dst = z * n + y * size;
        for (let x = 0; x < size; x++) out[dst + x] = data[src + xs[x]];
      }
    }
    return out;
  }
  const ky = H / size, kx = W / size;
  if (Number.isInteger(ky) && Number.isInteger(kx)) {
    const inv = 1 / (ky * kx);
    for (let z = 0; z < Z; z++) {
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          let s = 0;
          for (let j = 0; j < ky; j++) {
            const row = (z * H + y * ky + j) * W + x * kx;
            for (let i = 0; i < kx; i++) s += data[row + i];
          }
          out[z * n + y * size + x] = s * inv;
        }
      }
    }
    return out;
  }
  const axis = (dst: number, src: number) => {
    const i0 = new Int32Array(dst), i1 = new Int32Array(dst), w = new Float32Array(dst);
    for (let d = 0; d < dst; d++) {
      const f = (d + 0.5) * (src / dst) - 0.5;
      let s = Math.floor(f), t = f - s;
      if (s < 0) (s = 0), (t = 0);
      if (s >= src - 1) (s = src - 1), (t = 0);
      i0[d] = s, i1[d] = Math.min(s + 1, src - 1), w[d] = t;
    }
    return { i0, i1, w };
  };
  const ay = axis(size, H), ax = axis(size, W);
  for (let z = 0; z < Z; z++) {
    for (let y = 0; y < size; y++) {
      const r0 = (z * H + ay.i0[y]) * W, r1 = (z * H + ay.i1[y]) * W, wy = ay.w[y];
      for (let x = 0; x < size; x++) {
        const a = data[r0 + ax.i0[x]] * (1 - ax.w[x]) + data[r0 + ax.i1[x]] * ax.w[x];
        const b = data[r1 + ax.i0[x]] * (1 - ax.w[x]) + data[r1 + ax.i1[x]] * ax.w[x];
        out[z * n + y * size + x] = a * (1 - wy) + b * wy;
      }
    }
  }
  return out;
}
