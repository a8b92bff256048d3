/**
 * @file `interpolate`: linear resampling of [N, C, D, H, W] to a new size (PyTorch's `F.interpolate` with mode
 * "trilinear" and `align_corners=False`). Linear interpolation is separable, so it runs as one 1-D pass per
 * axis whose size changes (two taps an output instead of eight, and an axis that keeps its size costs
 * nothing). The backward runs the transposed passes in reverse order, each in gather form: an input element
 * sums the few outputs that read it, so no atomics.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { launch1d } from "./codegen.ts";
import { type Triple, triple } from "./conv/mod.ts";

/** Options of {@link interpolate}. */
export interface InterpolateOptions {
  /** Output size [D, H, W]. */
  size: Triple;
  /** Only "trilinear" (align_corners false); nearest upsampling by integer factors is `upsampleNearest3d`. */
  mode?: "trilinear";
}

/** One axis to resample: the tensor as [outer, from, inner] becomes [outer, to, inner]. */
interface Pass {
  outer: number;
  from: number;
  to: number;
  inner: number;
}

/**
 * WGSL of the two taps of output index `o` along an axis of `len` inputs (uniform names), PyTorch's source
 * index for align_corners false: s = (o + 0.5) * scale - 0.5 (scale = from / to), clamped at 0; taps `${t}0`
 * = floor(s) and `${t}1`, the next index (the same one at the last), weighted 1 - `l${t}` and `l${t}`.
 */
function taps(o: string, scale: string, len: string, t: string): string {
  return `let s${t} = max((f32(${o}) + 0.5) * sh.${scale} - 0.5, 0.0);
  let ${t}0 = min(u32(s${t}), sh.${len} - 1u); let l${t} = s${t} - f32(${t}0); let ${t}1 = min(${t}0 + 1u, sh.${len} - 1u);`;
}

function uniforms(p: Pass) {
  return { inner: { d: p.inner }, len: { d: p.from }, to: { d: p.to }, scale: { f: p.from / p.to } };
}

/** out[q, o, e] = (1 - li) x[q, i0, e] + li x[q, i1, e]. */
function forwardPass(op: string, x: Tensor, p: Pass, shape: number[]): Tensor {
  const y = Tensor.empty(x.device, shape, "f32", op);
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "y", t: y, write: true }],
    n: y.numel(),
    uniforms: uniforms(p),
    body: `  let qo = div_inner(gid); let e = gid - qo * sh.inner;
  let q = div_to(qo); let o = qo - q * sh.to;
  ${taps("o", "scale", "len", "i")}
  let b = q * sh.len;
  y_st(gid, (1.0 - li) * x_ld((b + i0) * sh.inner + e) + li * x_ld((b + i1) * sh.inner + e));`,
  });
  return y;
}

/**
 * gx[q, i, e] = sum over the outputs o whose taps include i of their weight times g[q, o, e]. Those o have a
 * source index in [i - 1, i + 1), so they lie in [(i - 0.5) to / from - 0.5, (i + 1.5) to / from - 0.5),
 * widened by one each side for rounding; each is then tested exactly as the forward computes it.
 */
function backwardPass(op: string, g: Tensor, p: Pass, shape: number[]): Tensor {
  const gx = Tensor.empty(g.device, shape, "f32", op);
  launch1d({
    op,
    args: [{ name: "g", t: g }, { name: "gx", t: gx, write: true }],
    n: gx.numel(),
    uniforms: { ...uniforms(p), inv: { f: p.to / p.from } },
    body: `  let qi = div_inner(gid); let e = gid - qi * sh.inner;
  let q = div_len(qi); let i = qi - q * sh.len;
  let lo = u32(max(floor((f32(i) - 0.5) * sh.inv - 0.5) - 1.0, 0.0));
  let hi = min(u32(max(ceil((f32(i) + 1.5) * sh.inv - 0.5), 0.0)) + 1u, sh.to);
  var acc = 0.0;
  for (var o = lo; o < hi; o = o + 1u) {
    ${taps("o", "scale", "len", "i")}
    let v = g_ld((q * sh.to + o) * sh.inner + e);
    if (i0 == i) { acc = acc + (1.0 - li) * v; }
    if (i1 == i) { acc = acc + li * v; }
  }
  gx_st(gid, acc);`,
  });
  return gx;
}

/**
 * Resamples a [N, C, D, H, W] f32 tensor to `size` by trilinear interpolation with PyTorch's
 * `align_corners=False` source indices (`F.interpolate(x, size, mode="trilinear")`), with its backward.
 * Downsampling reads two taps per axis (no antialiasing), as PyTorch's does.
 */
export function interpolate(x: Tensor, opts: InterpolateOptions): Tensor {
  const op = "F.interpolate";
  x.storage(op);
  if (x.ndim !== 5) throw new Error(`${op}: input must be 5-D [N, C, D, H, W], got [${x.shape}]`);
  if (x.dtype !== "f32") throw new Error(`${op}: input must be f32, got ${x.dtype}`);
  const mode = opts.mode ?? "trilinear";
  if (mode !== "trilinear") {
    throw new Error(`${op}: mode "${mode}" is not supported (use "trilinear", or F.upsampleNearest3d)`);
  }
  const size = triple(opts.size, undefined, "size", op);
  if (size.some((v) => !Number.isInteger(v) || v < 1)) {
    throw new Error(`${op}: size must be positive integers, got [${size}]`);
  }
  if (x.numel() === 0) return Tensor.empty(x.device, [x.shape[0], x.shape[1], ...size], "f32", op);
  // The passes in axis order, each with the shape it starts from.
  const passes: { p: Pass; before: number[]; after: number[] }[] = [];
  let shape = [...x.shape];
  for (let a = 2; a < 5; a++) {
    if (shape[a] === size[a - 2]) continue;
    const after = shape.map((v, i) => i === a ? size[a - 2] : v);
    const outer = shape.slice(0, a).reduce((s, v) => s * v, 1);
    const inner = shape.slice(a + 1).reduce((s, v) => s * v, 1);
    passes.push({ p: { outer, from: shape[a], to: size[a - 2], inner }, before: shape, after });
    shape = after;
  }
  const chain = (t: Tensor, steps: typeof passes, run: (t: Tensor, s: (typeof passes)[0]) => Tensor) => {
    let cur = t;
    for (const s of steps) {
      const next = run(cur, s);
      if (cur !== t) cur.dispose();
      cur = next;
    }
    return cur;
  };
  // The same size: a copy (from = to makes each output its own source), as PyTorch returns a new tensor.
  const copy = { outer: x.numel() / shape[4], from: shape[4], to: shape[4], inner: 1 };
  const y = passes.length === 0
    ? forwardPass(op, x, copy, shape)
    : chain(x, passes, (t, s) => forwardPass(op, t, s.p, s.after));
  return record(op, y, [x], [], (g) => {
    if (passes.length === 0) return [forwardPass(`${op}.backward`, g, copy, shape)];
    return [chain(g, [...passes].reverse(), (t, s) => backwardPass(`${op}.backward`, t, s.p, s.before))];
  });
}

/** Options of {@link resizedArgmax}. */
export interface ResizedArgmaxOptions {
  /** Also set bit 8 + c where class c's resampled score is above it (at most 24 classes). */
  threshold?: number | null;
}

/**
 * Class labels of per-class scores [N, C, D, h, w] resampled in-plane to `size` [H, W]: for each output voxel
 * the bilinear (align_corners false) value of every class from its four taps, the first class with the
 * largest one (`argmax(interpolate(x, [D, H, W]), 1)`), and with `threshold` bit 8 + c set where class c's
 * value is above it; i32 [N, D, H, W]. One pass that never stores the resampled scores (C x 4 bytes a voxel
 * at the output's size); with `size` [h, w] it is the argmax (and bits) of `x` itself.
 */
export function resizedArgmax(x: Tensor, size: [number, number], opts: ResizedArgmaxOptions = {}): Tensor {
  const op = "F.resizedArgmax";
  x.storage(op);
  if (x.ndim !== 5) throw new Error(`${op}: input must be 5-D [N, C, D, H, W], got [${x.shape}]`);
  if (x.dtype !== "f32") throw new Error(`${op}: input must be f32, got ${x.dtype}`);
  const [N, C, D, h, w] = x.shape, [H, W] = size;
  if (![H, W].every((v) => Number.isInteger(v) && v >= 1)) {
    throw new Error(`${op}: size must be two positive integers, got [${size}]`);
  }
  const thr = opts.threshold ?? null;
  if (thr !== null && C > 24) throw new Error(`${op}: bits need at most 24 classes, got ${C}`);
  const y = Tensor.empty(x.device, [N, D, H, W], "i32", op);
  if (y.numel() === 0) return y;
  if (C === 0) throw new Error(`${op}: no classes`);
  // The same size reads each class once (the seed's 256 grid); otherwise four taps.
  const same = h === H && w === W;
  const value =
    `let v = (1.0 - ly) * ((1.0 - lx) * x_ld(at + y0 * sh.w + x0) + lx * x_ld(at + y0 * sh.w + x1)) +
      ly * ((1.0 - lx) * x_ld(at + y1 * sh.w + x0) + lx * x_ld(at + y1 * sh.w + x1));`;
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "y", t: y, write: true }],
    n: y.numel(),
    uniforms: {
      W: { d: W },
      H: { d: H },
      D: { d: D },
      h,
      w,
      C,
      sy: { f: h / H },
      sx: { f: w / W },
      thr: { f: thr ?? 0 },
    },
    body: `  let r = div_W(gid); let ox = gid - r * sh.W;
  let q = div_H(r); let oy = r - q * sh.H;
  let n = div_D(q); let d = q - n * sh.D;
  ${same ? "" : taps("oy", "sy", "h", "y")}
  ${same ? "" : taps("ox", "sx", "w", "x")}
  let plane = sh.h * sh.w;
  var at = (n * sh.C * sh.D + d) * plane;
  var best = 0.0;
  var arg = 0u;
  var bits = 0u;
  for (var c = 0u; c < sh.C; c = c + 1u) {
    ${same ? "let v = x_ld(at + oy * sh.w + ox);" : value}
    if (c == 0u || v > best) { best = v; arg = c; }
    ${thr === null ? "" : "if (v > sh.thr) { bits = bits | (1u << (8u + c)); }"}
    at = at + sh.D * plane;
  }
  y_st(gid, i32(arg | bits));`,
  });
  return y;
}
