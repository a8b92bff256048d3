/**
 * @file OpenCV 4.x / scipy resampling primitives behind `data/augment.ts`, reproduced to the bit where the
 * libraries are deterministic (written from their documented algorithms; no Deno APIs, Worker-safe).
 *
 * - warpAffine / remap (imgwarp.cpp): the inverse matrix is sampled in fixed point, AB_BITS = 10 with
 *   round_delta 16 (bilinear) or 512 (nearest), and source positions are quantised to 1/32 pixel
 *   (INTER_BITS = 5); float maps become cvRound(v * 32). Bilinear weights come from the 32x32 float table
 *   and are summed in float32 in OpenCV's order; BORDER_CONSTANT 0 treats out-of-range taps as 0.
 * - resize (resize.cpp): source coordinate (d + 0.5) * (1 / (dst / src)) - 0.5 in float, float32 weights,
 *   horizontal pass then vertical, each a * w0 + b * w1 in float32; columns clamp their weight, rows clamp
 *   only their index. An exact 2x downscale becomes INTER_AREA's 2x2 mean, summed in the order of OpenCV's
 *   SSE build (4-lane body, scalar tail). INTER_NEAREST takes floor(d * scale).
 * - gaussian_filter (scipy.ndimage): separable, truncate 4, mode "reflect" (half-sample symmetric, repeated
 *   as often as the kernel needs), computed in float64.
 */

/** Rounds half to even, like cvRound / lrint under the default rounding mode. */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const INT_MIN = -2147483648, INT_MAX = 2147483647;

/** saturate_cast<int>(double): half-even rounding clamped to int32 (NaN becomes INT_MIN like cvtsd2si). */
function satInt(v: number): number {
  if (Number.isNaN(v)) return INT_MIN;
  const r = roundHalfEven(v);
  return r < INT_MIN ? INT_MIN : r > INT_MAX ? INT_MAX : r;
}

function satShort(v: number): number {
  return v < -32768 ? -32768 : v > 32767 ? 32767 : v;
}

/** Source positions of a resampling: integer pixel (short-saturated) plus, for bilinear, a 1/32 fraction index. */
export interface Coords {
  sx: Int32Array;
  sy: Int32Array;
  /** (fy * 32 + fx) for bilinear; absent for nearest. */
  fxy?: Uint16Array;
}

/** cv2.getRotationMatrix2D (center is a Point2f, so it is rounded to float32). */
export function rotationMatrix2D(cx: number, cy: number, angleDeg: number, scale: number): number[] {
  const a = angleDeg * (Math.PI / 180);
  const alpha = Math.cos(a) * scale, beta = Math.sin(a) * scale;
  const x = Math.fround(cx), y = Math.fround(cy);
  return [alpha, beta, (1 - alpha) * x - beta * y, -beta, alpha, beta * x + (1 - alpha) * y];
}

/** cv2.getAffineTransform: the 2x3 matrix mapping three src points onto three dst points ([x0, y0, x1, ...]). */
export function affineTransform(src: ArrayLike<number>, dst: ArrayLike<number>): number[] {
  const a = new Float64Array(36), b = new Float64Array(6);
  for (let i = 0; i < 3; i++) {
    const j = i * 12, k = i * 12 + 6;
    a[j] = a[k + 3] = src[2 * i];
    a[j + 1] = a[k + 4] = src[2 * i + 1];
    a[j + 2] = a[k + 5] = 1;
    b[2 * i] = dst[2 * i];
    b[2 * i + 1] = dst[2 * i + 1];
  }
  // Gaussian elimination with partial pivoting (OpenCV's LU for DECOMP_LU).
  for (let i = 0; i < 6; i++) {
    let k = i;
    for (let j = i + 1; j < 6; j++) if (Math.abs(a[j * 6 + i]) > Math.abs(a[k * 6 + i])) k = j;
    if (Math.abs(a[k * 6 + i]) < 2.220446049250313e-15) {
      throw new Error("affineTransform: the three source points are collinear");
    }
    if (k !== i) {
      for (let j = i; j < 6; j++) [a[i * 6 + j], a[k * 6 + j]] = [a[k * 6 + j], a[i * 6 + j]];
      [b[i], b[k]] = [b[k], b[i]];
    }
    const d = -1 / a[i * 6 + i];
    for (let j = i + 1; j < 6; j++) {
      const alpha = a[j * 6 + i] * d;
      for (let c = i + 1; c < 6; c++) a[j * 6 + c] += alpha * a[i * 6 + c];
      b[j] += alpha * b[i];
    }
    a[i * 6 + i] = -d;
  }
  for (let i = 5; i >= 0; i--) {
    let s = b[i];
    for (let c = i + 1; c < 6; c++) s -= a[i * 6 + c] * b[c];
    b[i] = s * a[i * 6 + i];
  }
  return Array.from(b);
}

/** The inverse map warpAffine samples with (its own closed form, same operation order). */
function invertAffine(m: ArrayLike<number>): number[] {
  const M = Array.from(m);
  let D = M[0] * M[4] - M[1] * M[3];
  D = D !== 0 ? 1 / D : 0;
  const A11 = M[4] * D, A22 = M[0] * D;
  M[0] = A11;
  M[1] *= -D;
  M[3] *= -D;
  M[4] = A22;
  const b1 = -M[0] * M[2] - M[1] * M[5];
  const b2 = -M[3] * M[2] - M[4] * M[5];
  M[2] = b1;
  M[5] = b2;
  return M;
}

/** Source positions cv2.warpAffine(src, m, (outW, outH)) samples, for INTER_LINEAR or INTER_NEAREST. */
export function warpAffineCoords(m: ArrayLike<number>, outH: number, outW: number, nearest: boolean): Coords {
  const M = invertAffine(m);
  const AB_SCALE = 1024, roundDelta = nearest ? 512 : 16;
  const adelta = new Int32Array(outW), bdelta = new Int32Array(outW);
  for (let x = 0; x < outW; x++) {
    adelta[x] = satInt(M[0] * x * AB_SCALE);
    bdelta[x] = satInt(M[3] * x * AB_SCALE);
  }
  const n = outH * outW;
  const sx = new Int32Array(n), sy = new Int32Array(n), fxy = nearest ? undefined : new Uint16Array(n);
  for (let y = 0; y < outH; y++) {
    const X0 = (satInt((M[1] * y + M[2]) * AB_SCALE) + roundDelta) | 0;
    const Y0 = (satInt((M[4] * y + M[5]) * AB_SCALE) + roundDelta) | 0;
    for (let x = 0, i = y * outW; x < outW; x++, i++) {
      if (fxy) {
        const X = ((X0 + adelta[x]) | 0) >> 5, Y = ((Y0 + bdelta[x]) | 0) >> 5;
        sx[i] = satShort(X >> 5);
        sy[i] = satShort(Y >> 5);
        fxy[i] = (Y & 31) * 32 + (X & 31);
      } else {
        sx[i] = satShort(((X0 + adelta[x]) | 0) >> 10);
        sy[i] = satShort(((Y0 + bdelta[x]) | 0) >> 10);
      }
    }
  }
  return { sx, sy, fxy };
}

/** Source positions cv2.remap samples for float32 maps (map_x, map_y of one shape), linear or nearest. */
export function remapCoords(mapX: Float32Array, mapY: Float32Array, nearest: boolean): Coords {
  const n = mapX.length;
  const sx = new Int32Array(n), sy = new Int32Array(n), fxy = nearest ? undefined : new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    if (fxy) {
      const X = satInt(Math.fround(mapX[i] * 32)), Y = satInt(Math.fround(mapY[i] * 32));
      sx[i] = satShort(X >> 5);
      sy[i] = satShort(Y >> 5);
      fxy[i] = (Y & 31) * 32 + (X & 31);
    } else {
      sx[i] = satShort(satInt(mapX[i]));
      sy[i] = satShort(satInt(mapY[i]));
    }
  }
  return { sx, sy, fxy };
}

/** OpenCV's BilinearTab_f: for index fy * 32 + fx the weights of taps (0,0), (0,1), (1,0), (1,1). */
const BILINEAR = (() => {
  const t = new Float32Array(1024 * 4), one = new Float32Array(64);
  for (let i = 0; i < 32; i++) {
    const x = Math.fround(i * Math.fround(1 / 32));
    one[2 * i] = Math.fround(1 - x);
    one[2 * i + 1] = x;
  }
  for (let i = 0; i < 32; i++) {
    for (let j = 0; j < 32; j++) {
      for (let k1 = 0; k1 < 2; k1++) {
        for (let k2 = 0; k2 < 2; k2++) t[(i * 32 + j) * 4 + k1 * 2 + k2] = one[i * 2 + k1] * one[j * 2 + k2];
      }
    }
  }
  return t;
})();

/** A bilinear sampling table over a source padded by one zero pixel on each side. */
export interface LinearTable {
  inH: number;
  inW: number;
  /** Index of tap (0,0) in the padded [(inH + 2), (inW + 2)] source, or -1 for a constant-border pixel. */
  off: Int32Array;
  fxy: Uint16Array;
}

/** Turns bilinear coords into a table; taps outside the source read the zero padding (BORDER_CONSTANT 0). */
export function linearTable(c: Coords, inH: number, inW: number): LinearTable {
  if (!c.fxy) throw new Error("linearTable: coords carry no fractions (nearest coords given)");
  const n = c.sx.length, off = new Int32Array(n), pw = inW + 2;
  for (let i = 0; i < n; i++) {
    const x = c.sx[i], y = c.sy[i];
    off[i] = x >= inW || x + 1 < 0 || y >= inH || y + 1 < 0 ? -1 : (y + 1) * pw + x + 1;
  }
  return { inH, inW, off, fxy: c.fxy };
}

/** Source index per output pixel for nearest coords, -1 where the border constant is used. */
export function nearestIndex(c: Coords, inH: number, inW: number): Int32Array {
  const n = c.sx.length, idx = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const x = c.sx[i], y = c.sy[i];
    idx[i] = x >= 0 && x < inW && y >= 0 && y < inH ? y * inW + x : -1;
  }
  return idx;
}

/** Samples one float32 slice through a bilinear table; `pad` is scratch of (inH + 2) * (inW + 2) zeros. */
export function sampleLinear(src: Float32Array, t: LinearTable, pad: Float32Array, dst: Float32Array): void {
  const pw = t.inW + 2, off = t.off, fxy = t.fxy, f = Math.fround;
  for (let y = 0; y < t.inH; y++) pad.set(src.subarray(y * t.inW, (y + 1) * t.inW), (y + 1) * pw + 1);
  for (let i = 0; i < off.length; i++) {
    const o = off[i];
    if (o < 0) {
      dst[i] = 0;
      continue;
    }
    const k = fxy[i] * 4;
    dst[i] = f(
      f(f(f(pad[o] * BILINEAR[k]) + f(pad[o + 1] * BILINEAR[k + 1])) + f(pad[o + pw] * BILINEAR[k + 2])) +
        f(pad[o + pw + 1] * BILINEAR[k + 3]),
    );
  }
}

/** Copies src[idx[i]] (or 0 where idx is -1) into dst. */
export function gather<T extends Float32Array | Uint8Array>(src: T, idx: Int32Array, dst: T): void {
  for (let i = 0; i < idx.length; i++) {
    const j = idx[i];
    dst[i] = j < 0 ? 0 : src[j];
  }
}

/** Per-axis coefficients of cv2.resize INTER_LINEAR for float data. */
interface Axis {
  i0: Int32Array;
  a0: Float32Array;
  a1: Float32Array;
  /** 1 where OpenCV copies the tap instead of interpolating (past the last source pixel). */
  single: Uint8Array;
}

function linearAxis(dst: number, src: number, clamp: boolean): Axis {
  const scale = 1 / (dst / src);
  const i0 = new Int32Array(dst), a0 = new Float32Array(dst), a1 = new Float32Array(dst);
  const single = new Uint8Array(dst);
  for (let d = 0; d < dst; d++) {
    let fx = Math.fround((d + 0.5) * scale - 0.5);
    let sx = Math.floor(fx);
    fx = Math.fround(fx - sx);
    // Columns are clamped with weight 0; rows keep their fraction and read a clamped row twice instead,
    // so the first/last output rows are v * (1 - f) + v * f in float32, not always v.
    if (clamp) {
      if (sx < 0) (fx = 0), (sx = 0);
      if (sx + 1 >= src) {
        single[d] = 1;
        if (sx >= src - 1) (fx = 0), (sx = src - 1);
      }
    }
    i0[d] = sx;
    a0[d] = Math.fround(1 - fx);
    a1[d] = fx;
  }
  return { i0, a0, a1, single };
}

/** A precomputed cv2.resize(INTER_LINEAR) of float32 slices. */
export interface LinearResize {
  inH: number;
  inW: number;
  outH: number;
  outW: number;
  /** Exact 2x downscale: OpenCV switches to INTER_AREA's 2x2 mean. */
  area2: boolean;
  x: Axis;
  y: Axis;
}

/** Prepares cv2.resize INTER_LINEAR from [inH, inW] to [outH, outW]. */
export function linearResize(inH: number, inW: number, outH: number, outW: number): LinearResize {
  return {
    inH,
    inW,
    outH,
    outW,
    area2: inW === 2 * outW && inH === 2 * outH,
    x: linearAxis(outW, inW, true),
    y: linearAxis(outH, inH, false),
  };
}

/** Resizes one float32 slice; `rows` is scratch of inH * outW floats. */
export function resizeLinear(
  src: Float32Array,
  r: LinearResize,
  rows: Float32Array,
  dst: Float32Array,
): void {
  const { inW, inH, outW, outH } = r, f = Math.fround;
  if (r.area2) {
    // OpenCV's 4-lane SIMD body adds (a + b) + (c + d); its scalar tail adds ((a + b) + c) + d.
    const simd = outW & ~3;
    for (let y = 0; y < outH; y++) {
      const r0 = 2 * y * inW, r1 = r0 + inW;
      for (let x = 0; x < outW; x++) {
        const a = src[r0 + 2 * x], b = src[r0 + 2 * x + 1], c = src[r1 + 2 * x], d = src[r1 + 2 * x + 1];
        const s = x < simd ? f(f(a + b) + f(c + d)) : f(f(f(a + b) + c) + d);
        dst[y * outW + x] = f(s * 0.25);
      }
    }
    return;
  }
  const { i0, a0, a1, single } = r.x;
  for (let y = 0; y < inH; y++) {
    const s = y * inW, o = y * outW;
    for (let x = 0; x < outW; x++) {
      const k = s + i0[x];
      rows[o + x] = single[x] ? src[k] : f(f(src[k] * a0[x]) + f(src[k + 1] * a1[x]));
    }
  }
  const ay = r.y;
  for (let y = 0; y < outH; y++) {
    const r0 = Math.min(Math.max(ay.i0[y], 0), inH - 1) * outW,
      r1 = Math.min(Math.max(ay.i0[y] + 1, 0), inH - 1) * outW;
    const b0 = ay.a0[y], b1 = ay.a1[y];
    for (let x = 0; x < outW; x++) dst[y * outW + x] = f(f(rows[r0 + x] * b0) + f(rows[r1 + x] * b1));
  }
}

/** Source index per output pixel of cv2.resize INTER_NEAREST: floor(d * (1 / (dst / src))), clamped. */
export function resizeNearestIndex(inH: number, inW: number, outH: number, outW: number): Int32Array {
  const fx = 1 / (outW / inW), fy = 1 / (outH / inH), idx = new Int32Array(outH * outW);
  for (let y = 0; y < outH; y++) {
    const sy = Math.min(Math.floor(y * fy), inH - 1);
    for (let x = 0; x < outW; x++) idx[y * outW + x] = sy * inW + Math.min(Math.floor(x * fx), inW - 1);
  }
  return idx;
}

/** numpy.linspace(start, stop, num) (endpoint included, last value exactly `stop`). */
function linspace(start: number, stop: number, num: number, out: Float32Array, at: number): void {
  if (num <= 0) return;
  const div = num - 1, step = div > 0 ? (stop - start) / div : 0;
  for (let i = 0; i < num; i++) out[at + i] = i * step + start;
  if (num > 1) out[at + num - 1] = stop;
}

/**
 * One axis of albumentations 1.x `grid_distortion`: `size // numSteps`-pixel cells stretched by
 * `steps[i]`, linearly interpolated; the last partial cell ends at `size`. Its quirks are kept (for sizes
 * where `numSteps + 1` cells fit, the tail past the last cell stays 0).
 */
export function gridDistortionAxis(size: number, numSteps: number, steps: ArrayLike<number>): Float32Array {
  const step = Math.floor(size / numSteps), out = new Float32Array(size);
  let prev = 0;
  for (let i = 0; i <= numSteps; i++) {
    const start = i * step;
    let end = start + step, cur: number;
    if (end > size) {
      end = size;
      cur = size;
    } else {
      cur = prev + step * steps[i];
    }
    linspace(prev, cur, end - start, out, start);
    prev = cur;
  }
  return out;
}

/** Kernel of scipy's 1-D filter folded onto `n` source samples under mode "reflect", row-major [n, n]. */
function foldedGaussian(
  n: number,
  w: Float64Array,
  r: number,
): { k: Float64Array; lo: Int32Array; hi: Int32Array } {
  const k = new Float64Array(n * n), lo = new Int32Array(n).fill(n), hi = new Int32Array(n);
  for (let o = 0; o < n; o++) {
    for (let t = -r; t <= r; t++) {
      let m = (o + t) % (2 * n);
      if (m < 0) m += 2 * n;
      if (m >= n) m = 2 * n - 1 - m;
      k[o * n + m] += w[t + r];
      if (m < lo[o]) lo[o] = m;
      if (m + 1 > hi[o]) hi[o] = m + 1;
    }
  }
  return { k, lo, hi };
}

/** scipy.ndimage.gaussian_filter(data, sigma) of an [h, w] float64 array (truncate 4, mode "reflect"). */
export function gaussianFilter(
  data: Float64Array,
  h: number,
  w: number,
  sigma: number,
  truncate = 4,
): Float64Array {
  if (!(sigma > 0)) throw new Error(`gaussianFilter: sigma must be > 0, got ${sigma}`);
  if (data.length !== h * w) {
    throw new Error(`gaussianFilter: data has ${data.length} values, shape ${h}x${w}`);
  }
  const r = Math.floor(truncate * sigma + 0.5), wt = new Float64Array(2 * r + 1);
  let sum = 0;
  for (let t = -r; t <= r; t++) sum += wt[t + r] = Math.exp((-0.5 / (sigma * sigma)) * (t * t));
  for (let t = 0; t < wt.length; t++) wt[t] /= sum;
  const ky = foldedGaussian(h, wt, r), kx = foldedGaussian(w, wt, r);
  const tmp = new Float64Array(h * w), out = new Float64Array(h * w);
  for (let o = 0; o < h; o++) {
    const row = tmp.subarray(o * w, (o + 1) * w);
    for (let s = ky.lo[o]; s < ky.hi[o]; s++) {
      const c = ky.k[o * h + s];
      if (c === 0) continue;
      for (let x = 0, j = s * w; x < w; x++, j++) row[x] += c * data[j];
    }
  }
  for (let y = 0; y < h; y++) {
    const src = y * w;
    for (let o = 0; o < w; o++) {
      let acc = 0;
      for (let s = kx.lo[o], k = o * w; s < kx.hi[o]; s++) acc += kx.k[k + s] * tmp[src + s];
      out[src + o] = acc;
    }
  }
  return out;
}
