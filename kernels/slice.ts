/**
 * @file Concatenation and slicing along one dim: `cat` writes each input into its slab of the output,
 * `narrow` copies a slab out; each is the other's backward. A tensor is viewed as [outer, dim, inner] so one
 * copy kernel serves every dim.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { launch1d } from "./codegen.ts";
import { normAxes } from "./reduce.ts";
import { zeros } from "./creation.ts";

/** Copies src viewed as [O, a, I] into dst viewed as [O, b, I] at offset `off` along the middle dim (or back); no autograd. */
export function slab(
  op: string,
  src: Tensor,
  dst: Tensor,
  O: number,
  a: number,
  b: number,
  I: number,
  off: number,
  into: boolean,
  base = 0,
) {
  // into: dst[o, off + j, i] = src[o, j, i] (src has a rows); else dst[o, j, i] = src[o, off + j, i] (dst has a rows).
  // Inner runs of whole vec4s (a cat of [N, C, D, H, W] along C) copy a vec4 a lane, in vec4 units.
  const v = I % 4 === 0 && base % 4 === 0 && src.dtype === "f32" ? 4 : 1;
  const n = (O * a * I) / v, In = I / v;
  if (n === 0) return;
  launch1d({
    op,
    args: [{ name: "s", t: src, vec4: v === 4 }, { name: "d", t: dst, write: true, vec4: v === 4 }],
    n,
    // I == 1 (cat/narrow along the last dim) skips a division.
    uniforms: { I: { d: In }, a: { d: a }, b, off, base: base / v },
    body: `  ${In === 1 ? "let i = 0u; let q = gid;" : "let q = div_I(gid); let i = gid - q * sh.I;"}
  let o = div_a(q);
  let j = q - o * sh.a;
  let big = sh.base + (o * sh.b + sh.off + j) * sh.I + i;
  ${into ? "d_st(big, s_ld(gid));" : "d_st(gid, s_ld(big));"}`,
  });
}

/** Concatenates tensors along `dim` (all other dims equal, same dtype and device). */
export function cat(xs: readonly Tensor[], dim = 0): Tensor {
  const op = "F.cat";
  if (!xs.length) throw new Error(`${op}: needs at least one tensor`);
  const first = xs[0];
  const [d] = normAxes(op, first.ndim, dim);
  for (const t of xs) {
    t.storage(op);
    if (t.ndim !== first.ndim || t.shape.some((s, i) => i !== d && s !== first.shape[i])) {
      throw new Error(`${op}: shapes ${xs.map((x) => `[${x.shape}]`).join(", ")} differ outside dim ${d}`);
    }
    if (t.dtype !== first.dtype || t.dtype === "u8") {
      throw new Error(
        `${op}: all tensors must share an f32/i32 dtype, got ${xs.map((x) => x.dtype).join(", ")}`,
      );
    }
    if (t.device !== first.device) throw new Error(`${op}: tensors are on different devices`);
  }
  const O = first.shape.slice(0, d).reduce((p, v) => p * v, 1);
  const I = first.shape.slice(d + 1).reduce((p, v) => p * v, 1);
  const total = xs.reduce((p, t) => p + t.shape[d], 0);
  const shape = [...first.shape];
  shape[d] = total;
  const y = Tensor.empty(first.device, shape, first.dtype, op);
  const offs: number[] = [];
  let off = 0;
  for (const t of xs) {
    offs.push(off);
    slab(op, t, y, O, t.shape[d], total, I, off, true);
    off += t.shape[d];
  }
  return record(
    op,
    y,
    xs,
    [],
    (g) => xs.map((t, k) => (t.requiresGrad ? narrow(g, d, offs[k], t.shape[d]) : null)),
  );
}

/** The slab [start, start + length) of `dim`, copied. */
export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  const op = "F.narrow";
  x.storage(op);
  const [d] = normAxes(op, x.ndim, dim);
  if (
    !Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 ||
    start + length > x.shape[d]
  ) {
    throw new Error(`${op}: range [${start}, ${start + length}) is outside dim ${d} of [${x.shape}]`);
  }
  if (x.dtype === "u8") throw new Error(`${op}: u8 is not supported (cast first)`);
  const O = x.shape.slice(0, d).reduce((p, v) => p * v, 1);
  const I = x.shape.slice(d + 1).reduce((p, v) => p * v, 1);
  const shape = [...x.shape];
  shape[d] = length;
  const y = Tensor.empty(x.device, shape, x.dtype, op);
  slab(op, x, y, O, length, x.shape[d], I, start, false);
  const xs = x.shape;
  return record(op, y, [x], [], (g) => {
    const gx = zeros(xs, { device: g.device });
    slab(`${op}.backward`, g, gx, O, length, xs[d], I, start, true);
    return [gx];
  });
}
