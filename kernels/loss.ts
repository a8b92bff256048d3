/**
 * @file Losses: binary cross-entropy with logits (PyTorch semantics, stable for saturated logits), and
 * negative log-likelihood / cross-entropy over the channel dim of a volume with `ignoreIndex`. The task's
 * losses built from these (RSNA competition loss, the segmentor's loss) are in `models/losses.ts`.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { launch1d } from "./codegen.ts";
import { cast, div, ne, neg } from "./elementwise/mod.ts";
import { map } from "./elementwise/map.ts";
import { mean, sum } from "./reduce.ts";
import { logSoftmax } from "./softmax.ts";

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
  const ok = `t != sh.ignore && t >= 0 && t < sh.Ci`;
  const uniforms = { S: { d: S }, C: { d: C }, Ci: { i: C }, ignore: { i: ignoreIndex } };
  launch1d({
    op,
    args: [{ name: "lp", t: logp }, { name: "t", t: target }, { name: "y", t: y, write: true }],
    n: y.numel(),
    uniforms,
    body: `  let t = t_ld(gid);
  let n = div_S(gid);
  let s = gid - n * sh.S;
  let ci = u32(clamp(t, 0, sh.Ci - 1));
  y_st(gid, select(0.0, lp_ld((n * sh.C + ci) * sh.S + s), ${ok}));`,
  });
  return record(op, y, [logp], [target], (g, [st]) => {
    const gl = Tensor.empty(g.device, logp.shape, "f32", `${op}.backward`);
    launch1d({
      op: `${op}.backward`,
      args: [{ name: "g", t: g }, { name: "t", t: st }, { name: "gl", t: gl, write: true }],
      n: gl.numel(),
      uniforms,
      body: `  let ns = div_S(gid);
  let s = gid - ns * sh.S;
  let n = div_C(ns);
  let c = i32(ns - n * sh.C);
  let t = t_ld(n * sh.S + s);
  gl_st(gid, select(0.0, g_ld(n * sh.S + s), t == c && ${ok}));`,
    });
    return [gl];
  });
}

/** Options of {@link crossEntropy} and {@link nllLoss}. */
export interface CrossEntropyOptions {
  /** Target value that contributes nothing (default -100, as PyTorch). */
  ignoreIndex?: number;
  reduction?: Reduction;
}

function nll(op: string, logp: Tensor, target: Tensor, opts: CrossEntropyOptions): Tensor {
  if (logp.ndim < 2) throw new Error(`${op}: input must be [N, C, ...], got [${logp.shape}]`);
  const ignore = opts.ignoreIndex ?? -100;
  const picked = pick(op, logp, target, ignore);
  const reduction = opts.reduction ?? "mean";
  if (reduction === "none") return neg(picked);
  if (reduction === "sum") return neg(sum(picked));
  const valid = sum(cast(ne(target, ignore), "f32"));
  return div(neg(sum(picked)), valid);
}

/** Cross-entropy of logits [N, C, ...] against i32 class indices [N, ...] (softmax over dim 1). */
export function crossEntropy(logits: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const op = "F.crossEntropy";
  if (logits.ndim < 2) throw new Error(`${op}: logits must be [N, C, ...], got [${logits.shape}]`);
  return nll(op, logSoftmax(logits, 1), target, opts);
}

/**
 * Negative log-likelihood of log-probabilities [N, C, ...] (e.g. `logSoftmax(x, 1)`) against i32 class
 * indices [N, ...]: -logp[n, target, ...]; 0 where the target is `ignoreIndex` (PyTorch's `nll_loss`).
 */
export function nllLoss(logp: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  return nll("F.nllLoss", logp, target, opts);
}
