/**
 * @file Batch normalisation over [N, C, D, H, W] (PyTorch `batch_norm` semantics), with the ReLU and the
 * residual add that follow it in a ResNet folded in: y = relu(bn(x) + residual) in one pass. Training mode
 * normalises with the batch statistics (biased variance) and updates the running statistics in place with the
 * unbiased variance; eval mode uses the running statistics (one pass that reads them when nothing needs a
 * backward). A training forward is three dispatches (partial
 * moments, per-channel finish with the running statistics and the batch counter, the normalising pass), its
 * backward three more (kernels/norm/stats.ts has the reductions); the "gpu" profile folds each finish into
 * the pass after it, two and two (kernels/norm/fused.ts). Under mixed precision the input, the residual
 * and the output may be f16 (statistics, parameters and gradients stay f32; every pass computes in f32).
 */
import { Tensor } from "../../core/tensor.ts";
import { isGradEnabled, record } from "../../core/autograd.ts";
import { type Arg, launch1d } from "../codegen.ts";
import {
  channelWalk,
  evalStats,
  finishFrom,
  finishGrads,
  finishMoments,
  gradParts,
  localMoments,
  momentParts,
  type RunningStats,
  sumParts,
} from "./stats.ts";
import { gradInputMerged, gradInputWgsl, normalizeMerged, normalizeWgsl } from "./fused.ts";

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
  /** Added to the normalised output before the activation (a ResNet block's shortcut); x's shape. */
  residual?: Tensor | null;
  /** Apply ReLU to the result (after the residual add). */
  relu?: boolean;
  /** Training only: an i32 scalar incremented by one (the module's `num_batches_tracked`). */
  numBatchesTracked?: Tensor | null;
  /** Output dtype; default the input's (PyTorch's rule: an f16 conv output normalises to f16). */
  dtype?: "f32" | "f16";
  /**
   * Training, "gpu" profile, unsynchronised: x's per-channel partial moments [segments, C, 3] (count, mean,
   * sum of squared deviations; means not shifted) as the conv that wrote x computed them (`F.conv3d`'s
   * `moments`), so the forward is one pass over x instead of two. Ignored elsewhere; the caller owns it.
   */
  moments?: Tensor | null;
}

/**
 * Cross-replica reductions of synchronised batch norm (parallel/replicas.ts implements them over MPI). The
 * tensors handed out may be filled later, as long as the device runs the work recorded after them later.
 */
export interface BatchNormSync {
  /**
   * From this replica's per-channel [C, 2] = (mean, sum of squared deviations from it) over `count` values
   * each: the mean and biased variance [C] over all replicas, and their count.
   */
  stats(local: Tensor, count: number): { mean: Tensor; variance: Tensor; count: number };
  /** Backward: this replica's per-channel sums [C, 2] of g and g * (x - mean), summed over all replicas. */
  sum(local: Tensor): Tensor;
}

function checkArgs(
  op: string,
  x: Tensor,
  params: [string, Tensor | null][],
  residual: Tensor | null,
): void {
  x.storage(op);
  if (x.ndim < 2) throw new Error(`${op}: input must have a channel dim, got [${x.shape}]`);
  if (x.dtype !== "f32" && x.dtype !== "f16") {
    throw new Error(`${op}: expects f32 or f16, got ${x.describe()}`);
  }
  const C = x.shape[1];
  for (const [name, t] of params) {
    if (t && (t.ndim !== 1 || t.shape[0] !== C)) {
      throw new Error(`${op}: ${name} must be [${C}], got [${t.shape}]`);
    }
  }
  if (residual && (residual.shape.join() !== x.shape.join() || !["f32", "f16"].includes(residual.dtype))) {
    throw new Error(
      `${op}: residual must be f32 or f16 [${x.shape}] like the input, got ${residual.describe()}`,
    );
  }
}

/**
 * The per-element passes' shared pieces: one invocation per unit of x (a vec4 when a row's length allows),
 * and WGSL `head` binding the unit `i` and its channel `c`.
 */
function perElement(x: Tensor) {
  const { C, S, V } = channelWalk(x);
  const v4 = V === 4;
  return {
    v4,
    n: x.numel() / V,
    uniforms: { S: { d: S }, C: { d: C } },
    head: `  let i = gid;\n  let c = mod_C(div_S(i));`,
  };
}

/**
 * y = relu?((x - mean) * inv * w + b + residual) with st = [C, 2] (mean, inv), or with eval mode's running
 * statistics read directly (`st` = { rm, rv, eps }), in vec4 units when S % 4 == 0.
 */
function normalize(
  op: string,
  x: Tensor,
  st: Tensor | { rm: Tensor; rv: Tensor; eps: number },
  w: Tensor | null,
  b: Tensor | null,
  r: Tensor | null,
  relu: boolean,
  dtype: "f32" | "f16",
): Tensor {
  const y = Tensor.empty(x.device, x.shape, dtype, op);
  const { v4, n, uniforms, head } = perElement(x);
  const e = normalizeWgsl(v4, { w: !!w, b: !!b, r: !!r, relu });
  const direct = !(st instanceof Tensor);
  const args: Arg[] = [
    { name: "x", t: x, vec4: v4 },
    ...(direct ? [{ name: "rm", t: st.rm }, { name: "rv", t: st.rv }] : [{ name: "st", t: st }]),
    ...(w ? [{ name: "w", t: w }] : []),
    ...(b ? [{ name: "b", t: b }] : []),
    ...(r ? [{ name: "r", t: r, vec4: v4 }] : []),
    { name: "y", t: y, write: true, vec4: v4 },
  ];
  launch1d({
    op,
    args,
    n,
    uniforms: direct ? { ...uniforms, eps: { f: st.eps } } : uniforms,
    key: `normalize ${v4} ${direct} ${!!w} ${!!b} ${!!r} ${relu}`,
    // The same arithmetic as evalStats, so the one-pass eval output equals the two-pass one bit for bit.
    body: () =>
      `${head}
  let mu = ${direct ? "rm_ld(c)" : "st_ld(c * 2u)"};
  let inv = ${direct ? "inverseSqrt(rv_ld(c) + sh.eps)" : "st_ld(c * 2u + 1u)"};
  y_st(i, ${e});`,
  });
  return y;
}

/**
 * gx = a * (ge - k1 - (x - mean) * k2) from coef [C, 4] = (mean, a, k1, k2), and the residual's gradient ge
 * (g masked by y > 0 under a fused ReLU); either output may be skipped.
 */
function gradInput(
  op: string,
  g: Tensor,
  x: Tensor,
  y: Tensor | null,
  coef: Tensor | null,
  want: { x: boolean; residual: boolean },
): { gx: Tensor | null; gr: Tensor | null } {
  const { v4, n, uniforms, head } = perElement(x);
  const gx = want.x ? Tensor.empty(x.device, x.shape, "f32", op) : null;
  const gr = want.residual ? Tensor.empty(x.device, x.shape, "f32", op) : null;
  launch1d({
    op,
    args: [
      { name: "g", t: g, vec4: v4 },
      { name: "x", t: x, vec4: v4 },
      ...(y ? [{ name: "y", t: y, vec4: v4 }] : []),
      ...(coef && want.x ? [{ name: "cf", t: coef }] : []),
      ...(gx ? [{ name: "gx", t: gx, write: true, vec4: v4 }] : []),
      ...(gr ? [{ name: "gr", t: gr, write: true, vec4: v4 }] : []),
    ],
    n,
    uniforms,
    key: `gradInput ${v4} ${!!y} ${!!coef} ${!!gx} ${!!gr}`,
    body: () =>
      `${head}
  ${
        gx
          ? "let mu = cf_ld(c * 4u); let a = cf_ld(c * 4u + 1u); let k1 = cf_ld(c * 4u + 2u); let k2 = cf_ld(c * 4u + 3u);"
          : ""
      }
  ${gradInputWgsl(v4, { y: !!y, gx: !!gx, gr: !!gr })}`,
  });
  return { gx, gr };
}

/**
 * Batch norm over dim 1 of a 5-D (or any >= 2-D) tensor, optionally followed by `+ residual` and ReLU.
 * `weight`, `bias`, `runningMean`, `runningVar` are [C] or null. In training, `runningMean`/`runningVar`
 * (when given) and `numBatchesTracked` are updated in place.
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
  const residual = opts.residual ?? null, relu = !!opts.relu;
  checkArgs(op, x, [["weight", weight], ["bias", bias], ["runningMean", runningMean], [
    "runningVar",
    runningVar,
  ]], residual);
  const eps = opts.eps ?? 1e-3, momentum = opts.momentum ?? 0.1;
  const training = !!opts.training;
  const M = x.numel() / x.shape[1];
  const dtype = opts.dtype ?? (x.dtype as "f32" | "f16");
  // The "gpu" profile folds the per-channel finishes into the per-element passes (kernels/norm/fused.ts).
  const merged = x.device.profile === "gpu" && !(training && opts.sync);
  let st: Tensor, count = M, y: Tensor | null = null;
  if (!training) {
    if (!runningMean || !runningVar) throw new Error(`${op}: eval mode needs runningMean and runningVar`);
    if (!isGradEnabled() || ![x, weight, bias, residual].some((t) => t?.requiresGrad)) {
      // Nothing to save for a backward: one pass reading the running statistics (inference, validation).
      return normalize(op, x, { rm: runningMean, rv: runningVar, eps }, weight, bias, residual, relu, dtype);
    }
    st = evalStats(op, runningMean, runningVar, eps);
  } else {
    if (M <= 1) {
      throw new Error(`${op}: training needs more than one value per channel, got input [${x.shape}]`);
    }
    const run: RunningStats = {
      mean: runningMean,
      variance: runningVar,
      batches: opts.numBatchesTracked ?? null,
      momentum,
      eps,
      count: M,
    };
    ({ st, y } = batchStats(op, x, run, merged, { weight, bias, residual, relu, dtype }, opts));
    count = run.count;
  }
  y ??= normalize(op, x, st, weight, bias, residual, relu, dtype);
  const sync = training ? opts.sync ?? null : null;
  const saved = [x, st, ...(weight ? [weight] : []), ...(relu ? [y] : [])];
  const ctx: BackwardContext = {
    op: `${op}.backward`,
    x,
    weight,
    bias,
    residual,
    relu,
    merged,
    training,
    count,
    sync,
  };
  const out = record(op, y, [x, weight, bias, residual], saved, (g, sv) => batchNormBackward(ctx, g, sv));
  st.dispose();
  return out;
}

/**
 * Training: the batch statistics (`run.count` becomes the global count when synchronised) and, where the
 * "gpu" profile folds the finish into the normalising pass, the output too.
 */
function batchStats(
  op: string,
  x: Tensor,
  run: RunningStats,
  merged: boolean,
  out: {
    weight: Tensor | null;
    bias: Tensor | null;
    residual: Tensor | null;
    relu: boolean;
    dtype: "f32" | "f16";
  },
  opts: BatchNormOptions,
): { st: Tensor; y: Tensor | null } {
  const given = merged && !opts.sync ? opts.moments ?? null : null;
  if (given && (given.ndim !== 3 || given.shape[1] !== x.shape[1] || given.shape[2] !== 3)) {
    throw new Error(`${op}: moments must be [segments, ${x.shape[1]}, 3], got ${given.describe()}`);
  }
  const part = given ?? momentParts(op, x, channelWalk(x));
  let st: Tensor, y: Tensor | null = null;
  if (opts.sync) {
    const loc = localMoments(op, x, part);
    const g = opts.sync.stats(loc, run.count);
    run.count = g.count;
    st = finishFrom(op, g.mean, g.variance, run);
    for (const t of [loc, g.mean, g.variance]) t.dispose();
  } else if (merged) {
    const walk = given ? { ...channelWalk(x), segs: given.shape[0] } : channelWalk(x);
    ({ y, st } = normalizeMerged(op, x, part, walk, run, {
      w: out.weight,
      b: out.bias,
      r: out.residual,
      relu: out.relu,
      dtype: out.dtype,
      shifted: !given,
    }));
  } else {
    st = finishMoments(op, x, part, run);
  }
  if (part !== given) part.dispose();
  return { st, y };
}

/** What a batch norm's backward needs besides its saved tensors. */
interface BackwardContext {
  op: string;
  x: Tensor;
  weight: Tensor | null;
  bias: Tensor | null;
  residual: Tensor | null;
  relu: boolean;
  merged: boolean;
  training: boolean;
  count: number;
  sync: BatchNormSync | null;
}

/** Gradients of x, weight, bias and residual from the output gradient `g` and the saved [x, st, w?, y?]. */
function batchNormBackward(c: BackwardContext, g: Tensor, sv: Tensor[]): (Tensor | null)[] {
  const [sx, sst] = sv;
  const sw = c.weight ? sv[2] : null, sy = c.relu ? sv[sv.length - 1] : null;
  const bop = c.op, training = c.training, count = c.count;
  const wantW = !!c.weight?.requiresGrad, wantB = !!c.bias?.requiresGrad;
  const wantR = !!c.residual?.requiresGrad, wantX = c.x.requiresGrad;
  let gw: Tensor | null = null, gb: Tensor | null = null, coef: Tensor | null = null;
  if (c.merged && wantX) {
    const walk = channelWalk(sx);
    const part = gradParts(bop, g, sx, sy, sst, walk);
    const r = gradInputMerged(bop, { g, x: sx, y: sy, st: sst, part, weight: sw }, walk, {
      training,
      count,
      wantWeight: wantW,
      wantBias: wantB,
      wantResidual: wantR,
    });
    part.dispose();
    return [r.gx, r.gw, r.gb, wantR && !sy ? g.share() : r.gr];
  }
  if (wantX || wantW || wantB) {
    const part = gradParts(bop, g, sx, sy, sst, channelWalk(sx));
    // Synchronised: gx uses the sums over all replicas; weight and bias keep this replica's share (the
    // gradient all-reduce averages them like every other parameter's).
    const local = c.sync ? sumParts(bop, part) : null;
    const glob = local ? c.sync!.sum(local) : null;
    const f = finishGrads(bop, part, sst, sw, {
      training,
      count,
      wantWeight: wantW,
      wantBias: wantB,
      global: glob,
    });
    for (const t of [part, local, glob]) t?.dispose();
    gw = f.weight, gb = f.bias, coef = f.coef;
  }
  // One pass writes gx and, under a fused ReLU, the residual's masked gradient; without ReLU it is g itself.
  const r = wantX || (wantR && sy)
    ? gradInput(bop, g, sx, sy, coef, { x: wantX, residual: wantR && !!sy })
    : { gx: null, gr: null };
  coef?.dispose();
  const gr = wantR && !sy ? g.share() : r.gr;
  return [r.gx, gw, gb, gr];
}
