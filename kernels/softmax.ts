/**
 * @file Softmax and log-softmax over one dim, numerically stable (max subtracted before exp). The input is
 * viewed as [O, R, I]; rows along R are handled by one workgroup each (I = 1, tree reductions in workgroup
 * memory) or by one thread per (o, i) (I > 1, coalesced across i). Backward is composed from elementwise
 * ops and a sum.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { f, launch, launch1d } from "./codegen.ts";
import { normAxes, sum } from "./reduce.ts";
import { exp } from "./elementwise/unary.ts";
import { mul, sub } from "./elementwise/binary.ts";

function kernel(op: string, x: Tensor, dim: number, logOut: boolean): Tensor {
  x.storage(op);
  if (x.dtype !== "f32") throw new Error(`${op}: expects f32, got ${x.describe()}`);
  const [a] = normAxes(op, x.ndim, dim);
  const O = x.shape.slice(0, a).reduce((p, d) => p * d, 1);
  const R = x.ndim ? x.shape[a] : 1;
  const I = x.shape.slice(a + 1).reduce((p, d) => p * d, 1);
  const y = Tensor.empty(x.device, x.shape, "f32", op);
  if (y.numel() === 0) return y;
  const args = [{ name: "x", t: x }, { name: "y", t: y, write: true }];
  const fin = logOut ? "v - m - log(s)" : "exp(v - m) / s";
  if (I === 1) {
    const WG = 64;
    launch({
      op,
      args,
      wg: WG,
      groups: O,
      uniforms: { R },
      decls: `var<workgroup> red: array<f32, ${WG}>;`,
      body: `  let base = wg * sh.R;
  var m = ${f(-Infinity)};
  for (var r = lid; r < sh.R; r = r + WG) { m = max(m, x_ld(base + r)); }
  red[lid] = m;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k = k / 2u) {
    if (lid < k) { red[lid] = max(red[lid], red[lid + k]); }
    workgroupBarrier();
  }
  m = red[0];
  workgroupBarrier();
  var s = 0.0;
  for (var r = lid; r < sh.R; r = r + WG) { s = s + exp(x_ld(base + r) - m); }
  red[lid] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k = k / 2u) {
    if (lid < k) { red[lid] = red[lid] + red[lid + k]; }
    workgroupBarrier();
  }
  s = red[0];
  for (var r = lid; r < sh.R; r = r + WG) { let v = x_ld(base + r); y_st(base + r, ${fin}); }`,
    });
  } else {
    launch1d({
      op,
      args,
      n: O * I,
      uniforms: { R, I: { d: I }, RI: R * I },
      body: `  let o = div_I(gid);
  let i = gid - o * sh.I;
  let base = o * sh.RI + i;
  var m = ${f(-Infinity)};
  for (var r = 0u; r < sh.R; r = r + 1u) { m = max(m, x_ld(base + r * sh.I)); }
  var s = 0.0;
  for (var r = 0u; r < sh.R; r = r + 1u) { s = s + exp(x_ld(base + r * sh.I) - m); }
  for (var r = 0u; r < sh.R; r = r + 1u) { let v = x_ld(base + r * sh.I); y_st(base + r * sh.I, ${fin}); }`,
    });
  }
  return y;
}

/** Softmax along `dim`. */
export function softmax(x: Tensor, dim: number): Tensor {
  const op = "F.softmax";
  const y = kernel(op, x, dim, false);
  return record(op, y, [x], [y], (g, [sy]) => {
    const gy = mul(g, sy);
    const s = sum(gy, dim, true);
    const d = sub(g, s);
    return [mul(sy, d)];
  });
}

/** Log-softmax along `dim` (stable: x - max - log(sum(exp(x - max)))). */
export function logSoftmax(x: Tensor, dim: number): Tensor {
  const op = "F.logSoftmax";
  const y = kernel(op, x, dim, true);
  return record(op, y, [x], [y], (g, [sy]) => {
    const s = sum(g, dim, true);
    return [sub(g, mul(exp(sy), s))];
  });
}
