/**
 * @file Batch normalisation over [N, C, D, H, W] (PyTorch `batch_norm` semantics). Training mode normalises
 * with the batch statistics (biased variance), updates the running statistics in place with the unbiased
 * variance, and has a fused backward; eval mode uses the running statistics. Per-channel statistics are
 * reductions over N, D, H, W on the GPU (a workgroup per (n, c) row, then over n).
 */
import type { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { map } from "./elementwise.ts";
import { mean, sum } from "./reduce.ts";

/** Options of {@link batchNorm3d}. */
export interface BatchNormOptions {
  /** Use batch statistics and update the running ones (default false: use the running statistics). */
  training?: boolean;
  /** Running-statistics momentum (default 0.1, PyTorch's convention: new = (1-m) old + m batch). */
  momentum?: number;
  /** Added to the variance (default 1e-3, as the CSN uses; PyTorch's default is 1e-5). */
  eps?: number;
}

/**
 * Batch norm over dim 1 of a 5-D (or any >= 2-D) tensor. `weight`, `bias`, `runningMean`, `runningVar` are
 * [C] or null. In training, `runningMean`/`runningVar` (when given) are updated in place.
 */
export function batchNorm3d(
  x: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  opts: BatchNormOptions = {},
): Tensor {
  const op = "F.batchNorm3d";
  x.storage(op);
  if (x.ndim < 2) throw new Error(`${op}: input must have a channel dim, got [${x.shape}]`);
  if (x.dtype !== "f32") throw new Error(`${op}: expects f32, got ${x.describe()}`);
  const C = x.shape[1];
  for (
    const [name, t] of [["weight", weight], ["bias", bias], ["runningMean", runningMean], [
      "runningVar",
      runningVar,
    ]] as const
  ) {
    if (t && (t.ndim !== 1 || t.shape[0] !== C)) {
      throw new Error(`${op}: ${name} must be [${C}], got [${t.shape}]`);
    }
  }
  const eps = opts.eps ?? 1e-3, momentum = opts.momentum ?? 0.1;
  const axes = [0, ...Array.from({ length: x.ndim - 2 }, (_, i) => i + 2)];
  const M = x.size / C;
  const cs = [1, C, ...Array(x.ndim - 2).fill(1)];
  const w = weight ? weight.reshape(cs) : null, b = bias ? bias.reshape(cs) : null;
  if (!opts.training) {
    if (!runningMean || !runningVar) throw new Error(`${op}: eval mode needs runningMean and runningVar`);
    // y = x * scale + shift with scale = w / sqrt(rv + eps), shift = b - rm * scale: per-channel terms are tiny,
    // the big pass is one broadcast kernel, and autograd derives every gradient.
    const inv = map(op, [runningVar.reshape(cs), eps], "f32", (v) => `inverseSqrt(${v[0]} + ${v[1]})`);
    const rm = runningMean.reshape(cs);
    const operands = [x, rm, inv, ...(w ? [w] : []), ...(b ? [b] : [])];
    const y = map(op, operands, "f32", (v) => {
      let e = `(${v[0]} - ${v[1]}) * ${v[2]}`;
      if (w) e = `${e} * ${v[3]}`;
      if (b) e = `${e} + ${v[w ? 4 : 3]}`;
      return e;
    });
    const out = record(
      op,
      y,
      [x, weight, bias],
      [x, rm, inv, ...(w ? [w] : [])],
      (g, [sx, srm, sinv, sw]) => {
        const gx = weight
          ? map(`${op}.backward`, [g, sinv, sw], "f32", (v) => `${v[0]} * ${v[1]} * ${v[2]}`)
          : map(`${op}.backward`, [g, sinv], "f32", (v) => `${v[0]} * ${v[1]}`);
        const gw = weight?.requiresGrad
          ? sum(
            map(
              `${op}.backward`,
              [g, sx, srm, sinv],
              "f32",
              (v) => `${v[0]} * (${v[1]} - ${v[2]}) * ${v[3]}`,
            ),
            axes,
          )
          : null;
        return [x.requiresGrad ? gx : null, gw, bias?.requiresGrad ? sum(g, axes) : null];
      },
    );
    for (const t of [inv, rm, w, b]) t?.dispose();
    return out;
  }
  if (M <= 1) {
    throw new Error(`${op}: training needs more than one value per channel, got input [${x.shape}]`);
  }
  const mu = mean(x, axes, true);
  const sq = map(op, [x, mu], "f32", (v) => `(${v[0]} - ${v[1]}) * (${v[0]} - ${v[1]})`);
  const varB = mean(sq, axes, true);
  sq.dispose();
  const inv = map(op, [varB, eps], "f32", (v) => `inverseSqrt(${v[0]} + ${v[1]})`);
  if (runningMean && runningVar) {
    const nm = map(
      op,
      [runningMean, mu.reshape([C]), momentum],
      "f32",
      (v) => `(1.0 - ${v[2]}) * ${v[0]} + ${v[2]} * ${v[1]}`,
    );
    const nv = map(
      op,
      [runningVar, varB.reshape([C]), momentum, M / (M - 1)],
      "f32",
      (v) => `(1.0 - ${v[2]}) * ${v[0]} + ${v[2]} * ${v[1]} * ${v[3]}`,
    );
    runningMean.assign(nm);
    runningVar.assign(nv);
    nm.dispose();
    nv.dispose();
  }
  varB.dispose();
  const operands = [x, mu, inv, ...(w ? [w] : []), ...(b ? [b] : [])];
  const y = map(op, operands, "f32", (v) => {
    let e = `(${v[0]} - ${v[1]}) * ${v[2]}`;
    if (w) e = `${e} * ${v[3]}`;
    if (b) e = `${e} + ${v[w ? 4 : 3]}`;
    return e;
  });
  const out = record(op, y, [x, weight, bias], [x, mu, inv, ...(w ? [w] : [])], (g, [sx, smu, sinv, sw]) => {
    // With xh = (x - mu) * inv: gx = w * inv * (g - mean(g) - xh * mean(g * xh)); gw = sum(g * xh); gb = sum(g).
    const gxh = map(
      `${op}.backward`,
      [g, sx, smu, sinv],
      "f32",
      (v) => `${v[0]} * (${v[1]} - ${v[2]}) * ${v[3]}`,
    );
    const sg = sum(g, axes, true);
    const sgx = sum(gxh, axes, true);
    gxh.dispose();
    const ops = [g, sx, smu, sinv, sg, sgx, 1 / M, ...(weight ? [sw] : [])];
    const gx = x.requiresGrad
      ? map(
        `${op}.backward`,
        ops,
        "f32",
        (v) =>
          `${weight ? `${v[7]} * ` : ""}${v[3]} * (${v[0]} - ${v[4]} * ${v[6]} - (${v[1]} - ${v[2]}) * ${
            v[3]
          } * ${v[5]} * ${v[6]})`,
      )
      : null;
    return [gx, weight?.requiresGrad ? sgx.reshape([C]) : null, bias?.requiresGrad ? sg.reshape([C]) : null];
  });
  mu.dispose();
  inv.dispose();
  w?.dispose();
  b?.dispose();
  return out;
}
