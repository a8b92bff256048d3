/**
 * @file Axis permutation (`permute`, `transpose`) as a gather: each output element computes its source
 * offset from sizes and strides passed as uniforms (one pipeline per merged rank). Output dims that stay adjacent in the input are merged first, so e.g.
 * [N,C,D,H,W] -> [N,D,H,W,C] is a 3-D index computation, not a 5-D one.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { launch1d, stridesOf, type Uniforms } from "./codegen.ts";
import { normAxes } from "./reduce.ts";

/** Reorders the dims of `x`: output dim i is input dim `dims[i]` (negative indices allowed). */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  const op = "F.permute";
  x.storage(op);
  const nd = x.ndim;
  const perm = dims.map((d) => {
    if (!Number.isInteger(d) || d < -nd || d >= nd) {
      throw new Error(`${op}: dim ${d} out of range for [${x.shape}]`);
    }
    return d < 0 ? d + nd : d;
  });
  if (perm.length !== nd || new Set(perm).size !== nd) {
    throw new Error(`${op}: [${dims}] is not a permutation of the ${nd} dims of [${x.shape}]`);
  }
  const outShape = perm.map((p) => x.shape[p]);
  const inStr = stridesOf(x.shape);
  // (size, input stride) per output dim, without size-1 dims, merged where contiguous.
  const dimsIn = perm.map((p) => ({ size: x.shape[p], stride: inStr[p] })).filter((d) => d.size !== 1);
  const merged: { size: number; stride: number }[] = [];
  for (const d of dimsIn) {
    const last = merged[merged.length - 1];
    if (last && last.stride === d.size * d.stride) {
      last.size *= d.size;
      last.stride = d.stride;
    } else merged.push({ ...d });
  }
  const y = Tensor.empty(x.device, outShape, x.dtype, op);
  const n = y.numel();
  if (n > 0) {
    if (merged.length <= 1) {
      // Identity order: a plain copy.
      launchGather(op, x, y, "let o = i;", {});
    } else {
      const lines = ["var r = i;", "var o = 0u;"];
      const uni: Uniforms = {};
      for (let d = merged.length - 1; d >= 0; d--) {
        const { size, stride } = merged[d];
        uni[`st${d}`] = stride;
        if (d === 0) lines.push(`o = o + r * sh.st${d};`);
        else {
          uni[`dz${d}`] = { d: size };
          lines.push(`{ let q = div_dz${d}(r); o = o + (r - q * sh.dz${d}) * sh.st${d}; r = q; }`);
        }
      }
      launchGather(op, x, y, lines.join("\n      "), uni);
    }
  }
  const inv = new Array(nd);
  perm.forEach((p, i) => (inv[p] = i));
  return record(op, y, [x], [], (g) => [permute(g, inv)]);
}

function launchGather(op: string, x: Tensor, y: Tensor, index: string, uni: Uniforms): void {
  const n = y.numel();
  const uniforms = { ...uni, total: n };
  if (x.dtype === "u8") {
    launch1d({
      op,
      args: [{ name: "x", t: x }, { name: "y", t: y, write: true }],
      n: Math.ceil(n / 4),
      uniforms,
      body: `  var w = 0u;
  for (var e = 0u; e < 4u; e = e + 1u) {
    let i = gid * 4u + e;
    if (i < sh.total) {
      ${index}
      w = w | (x_ld(o) << (e * 8u));
    }
  }
  y_stw(gid, w);`,
    });
    return;
  }
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "y", t: y, write: true }],
    n: Math.ceil(n / 4),
    uniforms,
    body: `  for (var e = 0u; e < 4u; e = e + 1u) {
    let i = gid * 4u + e;
    if (i < sh.total) {
      ${index}
      y_st(i, x_ld(o));
    }
  }`,
  });
}

/** Swaps two dims. */
export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  const [a] = normAxes("F.transpose", x.ndim, dim0);
  const [b] = normAxes("F.transpose", x.ndim, dim1);
  const perm = [...Array(x.ndim).keys()];
  perm[a] = b;
  perm[b] = a;
  return permute(x, perm);
}

/** Inserts a dim of size 1 at `dim`. */
export function unsqueeze(x: Tensor, dim: number): Tensor {
  const nd = x.ndim + 1;
  const d = dim < 0 ? dim + nd : dim;
  if (d < 0 || d >= nd) throw new Error(`F.unsqueeze: dim ${dim} out of range for [${x.shape}]`);
  const s = [...x.shape];
  s.splice(d, 0, 1);
  return x.reshape(s);
}

/** Removes size-1 dims (all, or the given ones). */
export function squeeze(x: Tensor, dims?: number | number[]): Tensor {
  const ax = dims === undefined
    ? x.shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0)
    : normAxes("F.squeeze", x.ndim, dims);
  for (const a of ax) if (x.shape[a] !== 1) throw new Error(`F.squeeze: dim ${a} of [${x.shape}] is not 1`);
  return x.reshape(x.shape.filter((_, i) => !ax.includes(i)));
}
