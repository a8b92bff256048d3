/**
 * @file Losses: binary cross-entropy with logits (PyTorch semantics, stable for saturated logits), the RSNA
 * 2022 competition loss (row-weighted BCE), cross-entropy over the channel dim of a volume with
 * `ignoreIndex`, and the seed segmentor's loss (focal + 0.1 x soft Jaccard with the min-pixels rule, see
 * shared/docs/seed-pipeline.md section 2.3).
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { launch, u } from "./codegen.ts";
import { add, cast, div, eq, exp, gt, map, maximum, mul, ne, neg, pow, sub } from "./elementwise.ts";
import { mean, sum } from "./reduce.ts";
import { logSoftmax } from "./softmax.ts";
import { arange } from "./creation.ts";
import { narrow } from "./slice.ts";

/** How a loss over elements is reduced. */
export type Reduction = "mean" | "sum" | "none";

function reduce(op: string, l: Tensor, reduction: Reduction): Tensor {
  if (reduction === "none") return l;
  const r = reduction === "sum" ? sum(l) : reduction === "mean" ? mean(l) : null;
  if (!r) throw new Error(`${op}: reduction must be "mean", "sum" or "none", got "${reduction}"`);
  l.dispose();
  return r;
}

/** Options of {@link bceWithLogits}. */
export interface BceOptions {
  /** Per-element weight, broadcast to the logits. */
  weight?: Tensor | null;
  /** Weight of the positive term, broadcast along the last dim (PyTorch `pos_weight`). */
  posWeight?: Tensor | null;
  reduction?: Reduction;
}

/**
 * Binary cross-entropy on logits, computed as (1 - t) x + (1 + (pw - 1) t) (log(1 + e^-|x|) + max(-x, 0)),
 * which neither overflows nor loses the loss of saturated logits.
 */
export function bceWithLogits(logits: Tensor, target: Tensor, opts: BceOptions = {}): Tensor {
  const op = "F.bceWithLogits";
  if (logits.shape.join() !== target.shape.join()) {
    throw new Error(`${op}: logits [${logits.shape}] and target [${target.shape}] must have the same shape`);
  }
  if (logits.dtype !== "f32" || target.dtype !== "f32") {
    throw new Error(
      `${op}: expects f32 logits and target, got ${logits.describe()} and ${target.describe()}`,
    );
  }
  const w = opts.weight ?? null, pw = opts.posWeight ?? null;
  const ops: Tensor[] = [logits, target, ...(w ? [w] : []), ...(pw ? [pw] : [])];
  const W = w ? "v[2]" : null, PW = pw ? `v[${w ? 3 : 2}]` : null;
  const sp = (x: string) => `(log(1.0 + exp(-abs(${x}))) + max(-${x}, 0.0))`;
  const ex = (v: string[], body: string) => body.replace(/v\[(\d)\]/g, (_, k) => v[Number(k)]);
  const coef = PW ? `(1.0 + (${PW} - 1.0) * v[1])` : "1.0";
  const lossExpr = `${W ? `${W} * ` : ""}((1.0 - v[1]) * v[0] + ${coef} * ${sp("v[0]")})`;
  const l = map(op, ops, "f32", (v) => ex(v, lossExpr));
  if (l.shape.join() !== logits.shape.join()) {
    l.dispose();
    throw new Error(`${op}: weight/posWeight must broadcast to the logits [${logits.shape}]`);
  }
  const lr = record(op, l, [logits, target, w, pw], ops, (g, s) => {
    const gops = [g, ...s];
    const G = (v: string[], body: string) => ex(v.slice(1), body).replace(/^/, "");
    const gx = logits.requiresGrad
      ? map(
        `${op}.backward`,
        gops,
        "f32",
        (v) =>
          `${v[0]} * ${W ? `${G(v, W)} * ` : ""}((1.0 - ${v[2]}) - ${G(v, coef)} / (1.0 + exp(${v[1]})))`,
      )
      : null;
    const gt_ = target.requiresGrad
      ? map(
        `${op}.backward`,
        gops,
        "f32",
        (v) =>
          `${v[0]} * ${W ? `${G(v, W)} * ` : ""}(-${v[1]} + ${PW ? `(${G(v, PW)} - 1.0)` : "0.0"} * ${
            sp(v[1])
          })`,
      )
      : null;
    return [gx, gt_, null, null];
  });
  return reduce(op, lr, opts.reduction ?? "mean");
}

/**
 * The RSNA 2022 competition loss on logits [B, 8] (patient_overall, C1..C7) and 0/1 targets: per row,
 * weighted BCE with weights 7 / 14 (overall, negative / positive) and 1 / 2 (vertebrae), divided by the row's
 * weight sum, then averaged over rows.
 */
export function rsnaLoss(logits: Tensor, target: Tensor): Tensor {
  const op = "F.rsnaLoss";
  if (logits.ndim !== 2 || logits.shape[1] !== 8) {
    throw new Error(`${op}: logits must be [B, 8], got [${logits.shape}]`);
  }
  const bce = bceWithLogits(logits, target, { reduction: "none" });
  // weight = (1 + t) * (7 for column 0, else 1), built on the GPU.
  const col0 = cast(eq(arange(8, { device: logits.device, dtype: "i32" }), 0), "f32");
  const colScale = add(mul(col0, 6), 1);
  const w = mul(add(target, 1), colScale);
  const row = div(sum(mul(w, bce), 1), sum(w, 1));
  return mean(row);
}

/** logp[n, target[n, s], s] for logp [N, C, S...] and integer targets [N, S...]; 0 where ignored. */
function pick(op: string, logp: Tensor, target: Tensor, ignoreIndex: number): Tensor {
  const [N, C] = logp.shape;
  const S = logp.numel() / (N * C);
  if (target.dtype !== "i32") {
    throw new Error(`${op}: target must be i32 class indices, got ${target.describe()}`);
  }
  const tShape = [N, ...logp.shape.slice(2)];
  if (target.shape.join() !== tShape.join()) {
    throw new Error(`${op}: target [${target.shape}] must be [${tShape}] for input [${logp.shape}]`);
  }
  const y = Tensor.empty(logp.device, tShape, "f32", op);
  const ok = `t != ${ignoreIndex} && t >= 0 && t < ${C}`;
  launch({
    op,
    args: [{ name: "lp", t: logp }, { name: "t", t: target }, { name: "y", t: y, write: true }],
    wg: 64,
    groups: Math.ceil(y.numel() / 64),
    body: `  if (gid >= ${u(y.numel())}) { return; }
  let t = t_ld(gid);
  let n = gid / ${u(S)};
  let s = gid % ${u(S)};
  let ci = u32(clamp(t, 0, ${C - 1}));
  y_st(gid, select(0.0, lp_ld((n * ${u(C)} + ci) * ${u(S)} + s), ${ok}));`,
  });
  return record(op, y, [logp], [target], (g, [st]) => {
    const gl = Tensor.empty(g.device, logp.shape, "f32", `${op}.backward`);
    launch({
      op: `${op}.backward`,
      args: [{ name: "g", t: g }, { name: "t", t: st }, { name: "gl", t: gl, write: true }],
      wg: 64,
      groups: Math.ceil(gl.numel() / 64),
      body: `  if (gid >= ${u(gl.numel())}) { return; }
  let s = gid % ${u(S)};
  let c = i32((gid / ${u(S)}) % ${u(C)});
  let n = gid / ${u(C * S)};
  let t = t_ld(n * ${u(S)} + s);
  gl_st(gid, select(0.0, g_ld(n * ${u(S)} + s), t == c && ${ok}));`,
    });
    return [gl];
  });
}

/** Options of {@link crossEntropy}. */
export interface CrossEntropyOptions {
  /** Target value that contributes nothing (default -100, as PyTorch). */
  ignoreIndex?: number;
  reduction?: Reduction;
}

/** Cross-entropy of logits [N, C, ...] against i32 class indices [N, ...] (softmax over dim 1). */
export function crossEntropy(logits: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const op = "F.crossEntropy";
  if (logits.ndim < 2) throw new Error(`${op}: logits must be [N, C, ...], got [${logits.shape}]`);
  const ignore = opts.ignoreIndex ?? -100;
  const picked = pick(op, logSoftmax(logits, 1), target, ignore);
  const reduction = opts.reduction ?? "mean";
  if (reduction === "none") return neg(picked);
  if (reduction === "sum") return neg(sum(picked));
  const valid = sum(cast(ne(target, ignore), "f32"));
  return div(neg(sum(picked)), valid);
}

/** Options of {@link segLoss}. */
export interface SegLossOptions {
  /** Focal exponent (default 2). */
  gamma?: number;
  /** Weight of the Jaccard term (default 0.1). */
  jaccardWeight?: number;
  /** A class counts in the Jaccard term only if it has more target voxels than this (default 16). */
  minPixels?: number;
  /** Smoothing of the Jaccard ratio (default 1e-4). */
  eps?: number;
  /** Ignored target value (default 255). */
  ignoreIndex?: number;
}

/**
 * The seed segmentor's loss on logits [N, C, D, H, W] and i32 labels [N, D, H, W] (0 = background):
 * focal loss (mean over non-ignored voxels of -(1 - p_t)^gamma log p_t) + jaccardWeight x the soft Jaccard
 * loss over classes 1..C-1, where per sample only classes with more than minPixels target voxels count, a
 * sample without any is dropped, and the batch term is 0 if every sample is dropped.
 */
export function segLoss(logits: Tensor, target: Tensor, opts: SegLossOptions = {}): Tensor {
  const op = "F.segLoss";
  if (logits.ndim < 3) throw new Error(`${op}: logits must be [N, C, ...], got [${logits.shape}]`);
  const gamma = opts.gamma ?? 2, jw = opts.jaccardWeight ?? 0.1, minPixels = opts.minPixels ?? 16;
  const eps = opts.eps ?? 1e-4, ignore = opts.ignoreIndex ?? 255;
  const [N, C] = logits.shape;
  const S = logits.numel() / (N * C);
  const logp = logSoftmax(logits, 1);
  const lpt = pick(op, logp, target, ignore);
  const valid = cast(ne(target, ignore), "f32");
  const focalTerms = mul(mul(pow(sub(1, exp(lpt)), gamma), lpt), valid);
  const focal = div(neg(sum(focalTerms)), maximum(sum(valid), 1));
  const p = exp(logp).reshape([N, C, S]);
  const t3 = target.reshape([N, 1, S]);
  const onehot = cast(eq(t3, arange(C, { device: logits.device, dtype: "i32" }).reshape([1, C, 1])), "f32");
  const pv = mul(p, valid.reshape([N, 1, S]));
  const I = sum(mul(pv, onehot), 2);
  const P = sum(pv, 2);
  const T = sum(onehot, 2);
  const J = sub(1, div(add(I, eps), add(sub(add(P, T), I), eps)));
  const Jc = narrow(J, 1, 1, C - 1), Tc = narrow(T, 1, 1, C - 1);
  const m = cast(gt(Tc, minPixels), "f32");
  const k = sum(m, 1);
  const per = div(sum(mul(m, Jc), 1), maximum(k, 1));
  const v = cast(gt(k, 0), "f32");
  const jac = div(sum(mul(v, per)), maximum(sum(v), 1));
  return add(focal, mul(jac, jw));
}
