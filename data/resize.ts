/**
 * @file 2-D resizing of CT slices as OpenCV's `cv2.resize(..., interpolation=INTER_LINEAR)` computes it for
 * 16-bit images (the seed's preprocessing), and nearest-neighbour for masks (INTER_NEAREST).
 *
 * OpenCV details reproduced: source coordinate (d + 0.5) * scale - 0.5 clamped at the borders, float32
 * weights, horizontal then vertical pass in float32, round half to even; and its shortcut for exact 2x
 * downscaling in both axes, which becomes INTER_AREA: floor((a + b + c + d + 2) / 4).
 */

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function coeffs(dst: number, src: number): { i0: Int32Array; i1: Int32Array; w: Float32Array } {
  const scale = src / dst;
  const i0 = new Int32Array(dst), i1 = new Int32Array(dst), w = new Float32Array(dst);
  for (let d = 0; d < dst; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (s < 0) (s = 0), (f = 0);
    if (s >= src - 1) (s = src - 1), (f = 0);
    i0[d] = s;
    i1[d] = Math.min(s + 1, src - 1);
    w[d] = f;
  }
  return { i0, i1, w };
}

/** Resizes one [h, w] slice of 16-bit values to [oh, ow] like cv2.resize INTER_LINEAR. */
export function resizeLinear16<T extends Int16Array | Uint16Array>(
  src: T,
  h: number,
  w: number,
  oh: number,
  ow: number,
): T {
  const out = new (src.constructor as new (n: number) => T)(oh * ow);
  const lo = src instanceof Int16Array ? -32768 : 0, hi = src instanceof Int16Array ? 32767 : 65535;
  if (h === 2 * oh && w === 2 * ow) {
    for (let y = 0; y < oh; y++) {
      const r0 = 2 * y * w, r1 = r0 + w;
      for (let x = 0; x < ow; x++) {
        const s = src[r0 + 2 * x] + src[r0 + 2 * x + 1] + src[r1 + 2 * x] + src[r1 + 2 * x + 1];
        out[y * ow + x] = Math.floor((s + 2) / 4);
      }
    }
    return out;
  }
  const cx = coeffs(ow, w), cy = coeffs(oh, h);
  const rowBuf = new Float32Array(h * ow);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < ow; x++) {
      const a = src[y * w + cx.i0[x]], b = src[y * w + cx.i1[x]], f = cx.w[x];
      rowBuf[y * ow + x] = Math.fround(Math.fround(a * Math.fround(1 - f)) + Math.fround(b * f));
    }
  }
  for (let y = 0; y < oh; y++) {
    const f = cy.w[y], r0 = cy.i0[y] * ow, r1 = cy.i1[y] * ow, g = Math.fround(1 - f);
    for (let x = 0; x < ow; x++) {
      const v = Math.fround(Math.fround(rowBuf[r0 + x] * g) + Math.fround(rowBuf[r1 + x] * f));
      out[y * ow + x] = Math.min(hi, Math.max(lo, roundHalfEven(v)));
    }
  }
  return out;
}

/** Nearest-neighbour resize of a uint8 [h, w] mask (cv2 INTER_NEAREST: source index floor(d * scale)). */
export function resizeNearest8(src: Uint8Array, h: number, w: number, oh: number, ow: number): Uint8Array {
  const out = new Uint8Array(oh * ow);
  const sy = h / oh, sx = w / ow;
  for (let y = 0; y < oh; y++) {
    const yy = Math.min(h - 1, Math.floor(y * sy));
    for (let x = 0; x < ow; x++) out[y * ow + x] = src[yy * w + Math.min(w - 1, Math.floor(x * sx))];
  }
  return out;
}
