/**
 * @file Batch normalisation over [N, C, D, H, W] (PyTorch `batch_norm` semantics). Training mode normalises
 * with the batch statistics (biased variance), updates the running statistics in place with the unbiased
 * variance, and has a fused backward; eval mode uses the running statistics. Per-channel statistics are
 * reductions over N, D, H, W on the GPU (a workgroup per (n, c) row, then over n).
 */
import type { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { Tensor as TensorClass } from "../core/tensor.ts";
import { map } from "./elementwise/map.ts";
import { sum } from "./reduce.ts";
import { launch, launch1d } from "./codegen.ts";

/** The two columns of a [C, 2] tensor as two [C] tensors. */
function splitPairs(op: string, t: Tensor, C: number): [Tensor, Tensor] {
  const a = TensorClass.empty(t.device, [C], "f32", op), b = TensorClass.empty(t.device, [C], "f32", op);
  launch1d({
    op,
    args: [{ name: "t", t }, { name: "a", t: a, write: true }, { name: "b", t: b, write: true }],
    n: C,
    body: `  a_st(gid, t_ld(2u * gid)); b_st(gid, t_ld(2u * gid + 1u));`,
  });
  return [a, b];
}

/**
 * Per-channel first and second moments in one pass over x viewed as [N, C, S]: without `g`, the sums of
 * (x - shift) and (x - shift)^2 with shift = `mu` (or x[0, c, 0] when not given); with `g` and `mu`, the
 * sums of g and g * (x - mu). Each workgroup reduces one segment of one channel (lanes, then a
 * tree in workgroup memory); segments are summed afterwards. Returns [C, 2].
 */
function channelMoments(op: string, x: Tensor, g: Tensor | null, mu: Tensor | null): Tensor {
  const N = x.shape[0], C = x.shape[1], S = x.numel() / (N * C), T = N * S;
  const segs = Math.max(1, Math.min(Math.ceil(T / 4096), 1024));
  const L = Math.ceil(T / segs);
  const part = TensorClass.empty(x.device, [segs, C, 2], "f32", op);
  const WG = 64;
  const args = [
    { name: "x", t: x },
    ...(g ? [{ name: "g", t: g }] : []),
    ...(mu ? [{ name: "mu", t: mu }] : []),
    { name: "p", t: part, write: true },
  ];
  const term = g
    ? `let d = x_ld(i) - m; let gv = g_ld(i); a1 = a1 + gv; a2 = a2 + gv * d;`
    : `let d = x_ld(i) - m; a1 = a1 + d; a2 = a2 + d * d;`;
  launch({
    op,
    args,
    wg: WG,
    groups: segs * C,
    // Sizes are uniforms (one pipeline for every BN layer). The lane walks e = n * S + s by steps of WG,
    // carrying (n, s) instead of dividing by the uniform S per element.
    uniforms: { C, S, L, T, CS: C * S, dn: Math.floor(WG / S), ds: WG % S },
    decls: `var<workgroup> s1: array<f32, ${WG}>;\nvar<workgroup> s2: array<f32, ${WG}>;`,
    body: `  let c = wg % sh.C;
  let sg = wg / sh.C;
  let m = ${mu ? "mu_ld(c)" : `x_ld(c * sh.S)`};
  var a1 = 0.0;
  var a2 = 0.0;
  let e0 = sg * sh.L + lid;
  let e1 = min((sg + 1u) * sh.L, sh.T);
  var n = e0 / sh.S;
  var s = e0 - n * sh.S;
  for (var e = e0; e < e1; e = e + WG) {
    let i = n * sh.CS + c * sh.S + s;
    ${term}
    s = s + sh.ds;
    n = n + sh.dn;
    if (s >= sh.S) { s = s - sh.S; n = n + 1u; }
  }
  s1[lid] = a1;
  s2[lid] = a2;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k = k / 2u) {
    if (lid < k) { s1[lid] = s1[lid] + s1[lid + k]; s2[lid] = s2[lid] + s2[lid + k]; }
    workgroupBarrier();
  }
  if (lid == 0u) { p_st((sg * sh.C + c) * 2u, s1[0]); p_st((sg * sh.C + c) * 2u + 1u, s2[0]); }`,
  });
  if (segs === 1) return part.reshape([C, 2]);
  const r = sum(part, 0);
  part.dispose();
  return r;
}

/** Options of {@link batchNorm3d}. */
export interface BatchNormOptions {
  /** Use batch statistics and update the running ones (default false: use the running statistics). */
  training?: boolean;
  /** Running-statistics momentum (default 0.1, PyTorch's convention: new = (1-m) old + m batch). */
  momentum?: number;
  /** Added to the variance (default 1e-3, as the CSN uses; PyTorch's default is 1e-5). */
  eps?: number;
  /** Training only: reduce the statistics and their gradients across replicas (synchronised batch norm). */
  sync?: BatchNormSync | null;
}

/**
 * Cross-replica reductions of synchronised batch norm (parallel/replicas.ts implements them over MPI). The
 * tensors handed out may be filled later, as long as the device runs the work recorded after them later.
 */
export interface BatchNormSync {
  /**
   * From this replica's per-channel shift `mean0` [C] and sums of (x - mean0) and (x - mean0)^2 `centred`
   * [C, 2] over `count` values each: the mean and biased variance [C] over all replicas, and their count.
   */
  stats(mean0: Tensor, centred: Tensor, count: number): { mean: Tensor; variance: Tensor; count: number };
  /** Backward: this replica's per-channel sums [C, 2] of g and g * (x - mean), summed over all replicas. */
  sum(local: Tensor): Tensor;
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
  const M = x.numel() / C;
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
  // Statistics in two passes, each fused: a shifted sum gives the mean; the sums of (x - mean) and
  // (x - mean)^2 then give the variance as the corrected two-pass formula (exact to f32 rounding even when
  // the mean is far from zero). A tiny per-channel kernel turns them into mean, variance and 1/std.
  const mom0 = channelMoments(op, x, null, null);
  const S = x.numel() / (x.shape[0] * C);
  const mean0 = TensorClass.empty(x.device, [C], "f32", op);
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "mom", t: mom0 }, { name: "mu", t: mean0, write: true }],
    n: C,
    uniforms: { S, M: { f: M } },
    body: `  mu_st(gid, x_ld(gid * sh.S) + mom_ld(gid * 2u) / sh.M);`,
  });
  mom0.dispose();
  const mom = channelMoments(op, x, null, mean0);
  const sync = opts.sync ?? null;
  // With sync, M becomes the count over all replicas (the running-variance correction and the backward).
  let muC: Tensor, varC: Tensor, invC: Tensor, Mg = M;
  if (sync) {
    const g = sync.stats(mean0, mom, M);
    muC = g.mean, varC = g.variance, Mg = g.count;
    invC = map(op, [varC, eps], "f32", (v) => `inverseSqrt(${v[0]} + ${v[1]})`);
  } else {
    muC = TensorClass.empty(x.device, [C], "f32", op);
    varC = TensorClass.empty(x.device, [C], "f32", op);
    invC = TensorClass.empty(x.device, [C], "f32", op);
    launch1d({
      op,
      args: [{ name: "m0", t: mean0 }, { name: "mom", t: mom }, { name: "mu", t: muC, write: true }, {
        name: "va",
        t: varC,
        write: true,
      }, { name: "iv", t: invC, write: true }],
      n: C,
      uniforms: { M: { f: M }, eps: { f: eps } },
      body: `  let m1 = mom_ld(gid * 2u) / sh.M;
  let v = max(mom_ld(gid * 2u + 1u) / sh.M - m1 * m1, 0.0);
  mu_st(gid, m0_ld(gid) + m1);
  va_st(gid, v);
  iv_st(gid, inverseSqrt(v + sh.eps));`,
    });
  }
  mom.dispose();
  mean0.dispose();
  const mu = muC.reshape(cs), varB = varC.reshape(cs), inv = invC.reshape(cs);
  muC.dispose();
  varC.dispose();
  invC.dispose();
  if (runningMean && runningVar) {
    const nm = map(
      op,
      [runningMean, mu.reshape([C]), momentum],
      "f32",
      (v) => `(1.0 - ${v[2]}) * ${v[0]} + ${v[2]} * ${v[1]}`,
    );
    const nv = map(
      op,
      [runningVar, varB.reshape([C]), momentum, Mg / (Mg - 1)],
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
    // One pass gives sum(g) and sum(g * (x - mu)); sum(g * xh) = inv * the latter.
    const gm = channelMoments(`${op}.backward`, sx, g, smu.reshape([C]));
    const sums = splitPairs(`${op}.backward`, gm, C);
    const sgC = sums[0],
      sgxC = map(`${op}.backward`, [sums[1], sinv.reshape([C])], "f32", (v) => `${v[0]} * ${v[1]}`);
    sums[1].dispose();
    // Synchronised: gx uses the sums over all replicas; weight and bias keep this replica's share (the
    // gradient all-reduce averages them like every other parameter's).
    let sgk = sgC.reshape(cs), sgx = sgxC.reshape(cs);
    if (sync) {
      const gmG = sync.sum(gm);
      const [a, bS] = splitPairs(`${op}.backward`, gmG, C);
      gmG.dispose();
      sgk.dispose(), sgx.dispose();
      sgk = a.reshape(cs);
      sgx = map(`${op}.backward`, [bS, sinv.reshape([C])], "f32", (v) => `${v[0]} * ${v[1]}`).reshape(cs);
      a.dispose(), bS.dispose();
    }
    gm.dispose();
    const ops = [g, sx, smu, sinv, sgk, sgx, 1 / Mg, ...(weight ? [sw] : [])];
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
    return [gx, weight?.requiresGrad ? sgxC : null, bias?.requiresGrad ? sgC : null];
  });
  mu.dispose();
  inv.dispose();
  w?.dispose();
  b?.dispose();
  return out;
}
