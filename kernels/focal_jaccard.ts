/**
 * @file The segmentor's loss (focal + soft Jaccard with the min-pixels rule, shared/docs/seed-pipeline.md
 * section 2.3) as four dispatches instead of the ~100 elementwise ops and reductions it takes when composed
 * from `F` ops: per-lane partial sums over voxels (focal term, valid count, and per class the soft
 * intersection, the soft prediction and the target count), their sum, a one-lane finish that forms the loss and
 * the per-(sample, class) gradient coefficients, and a backward that recomputes the softmax per voxel.
 *
 * With l = log p_t and q = e^l, a voxel's focal term is f = -w (1 - q)^gamma l, whose derivative in l is
 * -w ((1 - q)^gamma - gamma q l (1 - q)^(gamma - 1)), times dl/dx_j = [j = t] - p_j. The Jaccard term of
 * (n, c) is J = 1 - (I + eps) / U, U = P + T - I + eps, with dJ/dI = -(U + I + eps) / U^2 and
 * dJ/dP = (I + eps) / U^2; through the softmax, d(sum_c G_c p_c)/dx_j = p_j (G_j - sum_c G_c p_c).
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { storageBytes } from "../core/dtype.ts";
import { type Arg, bindingsOf, f, launch1d, type Uniforms } from "./codegen.ts";
import { sum } from "./reduce.ts";

/** Options of {@link focalJaccardLoss}; the defaults are the seed's. */
export interface FocalJaccardOptions {
  /** Focal exponent (default 2, >= 0). */
  gamma?: number;
  /** Weight of the Jaccard term (default 0.1). */
  jaccardWeight?: number;
  /** A class counts in the Jaccard term only if it has more target voxels than this (default 16). */
  minPixels?: number;
  /** Smoothing of the Jaccard ratio (default 1e-4). */
  eps?: number;
  /** Ignored target value (default 255). */
  ignoreIndex?: number;
  /** Weight of the focal term at foreground voxels, target > 0 (default 1). */
  fgWeight?: number;
}

/** Classes the kernels unroll at most. */
const MAX_CLASSES = 32;

/** Voxels a lane of the partial kernel sums (enough lanes for both cores of lavapipe at the tiny sizes). */
const PER_LANE = 256;

/** WGSL of b^gamma and of its derivative gamma b^(gamma - 1) for b = 1 - q in [0, 1], exact at b = 0. */
function powers(gamma: number): { pw: string; dpw: string } {
  if (Number.isInteger(gamma) && gamma <= 4) {
    const prod = (k: number) => k === 0 ? "1.0" : Array(k).fill("b").join(" * ");
    return {
      pw: prod(gamma),
      dpw: gamma === 0 ? "0.0" : `${f(gamma)} * ${prod(gamma - 1)}`,
    };
  }
  // pow(0, y) is undefined in WGSL: b = 0 gives 0 (gamma > 0), as PyTorch's pow does.
  return {
    pw: `select(pow(b, ${f(gamma)}), 0.0, b <= 0.0)`,
    dpw: `select(${f(gamma)} * pow(b, ${f(gamma - 1)}), 0.0, b <= 0.0)`,
  };
}

/**
 * WGSL shared by the forward and backward kernels: for voxel `s` of sample `n`, the class logits `x0..`, their
 * softmax `p0..`, the target `t`, `ok` (t is a class), `valid` (t is not ignored), `lpt` = log p_t (0 where not
 * ok), `q` = p_t and the focal weight `w`.
 */
function voxelCode(C: number): string {
  const cs = [...Array(C).keys()];
  return `  let t = t_ld(n * sh.S + s);
  ${cs.map((c) => `let x${c} = x_ld((n * ${C}u + ${c}u) * sh.S + s);`).join("\n  ")}
  var mx = x0;
  ${cs.slice(1).map((c) => `mx = max(mx, x${c});`).join("\n  ")}
  ${cs.map((c) => `let e${c} = exp(x${c} - mx);`).join("\n  ")}
  let se = ${cs.map((c) => `e${c}`).join(" + ")};
  let rs = 1.0 / se;
  ${cs.map((c) => `let p${c} = e${c} * rs;`).join("\n  ")}
  var xt = x0;
  ${cs.slice(1).map((c) => `xt = select(xt, x${c}, t == ${c});`).join("\n  ")}
  let valid = select(0.0, 1.0, t != sh.ignore);
  let ok = t != sh.ignore && t >= 0 && t < ${C};
  let lpt = select(0.0, (xt - mx) - log(se), ok);
  let q = exp(lpt);
  let b = 1.0 - q;
  let w = valid * select(1.0, sh.fgW, t > 0);`;
}

/**
 * Launches `per` lanes a sample over all samples at once, or sample by sample where the per-voxel tensors
 * `big` ([N, ...], bound whole) and the rest would need more storage bindings than the device has: then each
 * of `big` is bound over its sample's bytes only (a tensor larger than the binding cap is bound in windows).
 * The body sees `n`, the sample, and `i`, the lane's index within it.
 */
function launchBySample(
  op: string,
  N: number,
  big: Arg[],
  rest: Arg[],
  o: { per: number; uniforms: Uniforms; body: string },
): void {
  const device = big[0].t.device;
  const limit = device.info.maxStorageBuffersPerShaderStage;
  const count = (args: Arg[]) => args.reduce((k, a) => k + bindingsOf(a, device), 0);
  const run = (n0: number, n1: number, args: Arg[]) =>
    launch1d({
      op,
      args,
      n: (n1 - n0) * o.per,
      uniforms: { ...o.uniforms, per: o.per, n0 },
      body: `  let n = sh.n0 + gid / sh.per;
  let i = gid - (n - sh.n0) * sh.per;
${o.body}`,
    });
  if (count([...big, ...rest]) <= limit) {
    run(0, N, [...big, ...rest]);
    return;
  }
  for (let n = 0; n < N; n++) {
    const ranged = big.map((a): Arg => {
      const per = storageBytes(a.t.dtype, a.t.numel()) / N;
      const b0 = Math.floor((n * per) / 256) * 256;
      return { ...a, range: { byteOffset: b0, bytes: Math.ceil(((n + 1) * per - b0) / 16) * 16 } };
    });
    if (count([...ranged, ...rest]) > limit) {
      throw new Error(
        `${op}: one sample of [${big[0].t.shape}] needs more storage bindings than the device's ${limit} ` +
          `(binding cap ${device.bindingCap} B)`,
      );
    }
    run(n, n + 1, [...ranged, ...rest]);
  }
}

/**
 * Focal + soft Jaccard loss of logits [N, C, ...] (f32) against i32 labels [N, ...] (0 = background), as
 * `models.segLoss` defines it: the mean over non-ignored voxels of -w (1 - p_t)^gamma log p_t plus
 * `jaccardWeight` x the batch mean of each sample's mean soft Jaccard loss over the classes 1..C-1 with more
 * than `minPixels` target voxels (samples without any are dropped; the term is 0 if all are). A scalar.
 */
export function focalJaccardLoss(logits: Tensor, target: Tensor, opts: FocalJaccardOptions = {}): Tensor {
  const op = "F.focalJaccardLoss";
  if (logits.ndim < 3) throw new Error(`${op}: logits must be [N, C, ...], got [${logits.shape}]`);
  if (logits.dtype !== "f32") throw new Error(`${op}: expects f32 logits, got ${logits.describe()}`);
  if (target.dtype !== "i32") throw new Error(`${op}: target must be i32 labels, got ${target.describe()}`);
  const [N, C] = logits.shape;
  const tShape = [N, ...logits.shape.slice(2)];
  if (target.shape.join() !== tShape.join()) {
    throw new Error(`${op}: target [${target.shape}] must be [${tShape}] for logits [${logits.shape}]`);
  }
  // The classes are unrolled into the kernels (registers, not arrays): a segmentation's handful, not hundreds.
  if (C < 1 || C > MAX_CLASSES) throw new Error(`${op}: takes 1-${MAX_CLASSES} classes, got ${C}`);
  const gamma = opts.gamma ?? 2;
  if (!(gamma >= 0)) throw new Error(`${op}: gamma must be >= 0, got ${gamma}`);
  const S = logits.numel() / (N * C);
  const uniforms = {
    S,
    ignore: { i: opts.ignoreIndex ?? 255 },
    fgW: { f: opts.fgWeight ?? 1 },
  };
  const { pw, dpw } = powers(gamma);
  const totals = focalJaccardSums(op, logits, target, uniforms, pw);
  const loss = Tensor.empty(logits.device, [], "f32", op);
  const coef = Tensor.empty(logits.device, [N * C * 2 + 1], "f32", op);
  finish(op, totals, loss, coef, {
    N,
    C,
    jw: opts.jaccardWeight ?? 0.1,
    minPixels: opts.minPixels ?? 16,
    eps: opts.eps ?? 1e-4,
  });
  totals.dispose();
  return record(op, loss, [logits], [logits, target, coef], (g, [x, t, cf]) => {
    const gx = Tensor.empty(x.device, x.shape, "f32", `${op}.backward`);
    backward(`${op}.backward`, { g, x, t, cf, gx }, C, uniforms, { pw, dpw });
    return [gx];
  });
}

/** Partial sums per lane, summed: [N, K] with K = 3C + 2 = (I_c, P_c, T_c for each class, focal sum, valid). */
function focalJaccardSums(
  op: string,
  x: Tensor,
  target: Tensor,
  uniforms: Uniforms,
  pw: string,
): Tensor {
  const [N, C] = x.shape;
  const S = x.numel() / (N * C), K = 3 * C + 2;
  const lanes = Math.max(1, Math.ceil(S / PER_LANE));
  const part = Tensor.empty(x.device, [N, K, lanes], "f32", op);
  const cs = [...Array(C).keys()];
  // Lane i of sample n takes voxels i, i + lanes, ...: neighbouring lanes read neighbouring voxels on a GPU.
  const big: Arg[] = [{ name: "x", t: x }, { name: "t", t: target }];
  launchBySample(op, N, big, [{ name: "p", t: part, write: true }], {
    per: lanes,
    uniforms,
    body: `  ${cs.map((c) => `var i${c} = 0.0;\n  var s${c} = 0.0;\n  var n${c} = 0.0;`).join("\n  ")}
  var fs = 0.0;
  var vs = 0.0;
  for (var s = i; s < sh.S; s = s + sh.per) {
  ${voxelCode(C).replace(/\n/g, "\n  ")}
    fs = fs - w * (${pw}) * lpt;
    vs = vs + valid;
    ${
      cs.map((c) =>
        `let h${c} = select(0.0, 1.0, t == ${c});\n    i${c} = i${c} + valid * p${c} * h${c};\n    s${c} = s${c} + valid * p${c};\n    n${c} = n${c} + h${c};`
      ).join("\n    ")
    }
  }
  let o = n * ${K}u * sh.per + i;
  ${
      cs.map((c) =>
        `p_st(o + ${3 * c}u * sh.per, i${c});\n  p_st(o + ${3 * c + 1}u * sh.per, s${c});\n  p_st(o + ${
          3 * c + 2
        }u * sh.per, n${c});`
      ).join("\n  ")
    }
  p_st(o + ${3 * C}u * sh.per, fs);
  p_st(o + ${3 * C + 1}u * sh.per, vs);`,
  });
  const totals = sum(part, 2);
  part.dispose();
  return totals;
}

/**
 * One lane: the loss from the totals [N, K], and the backward's coefficients `cf` = [N, C, 2] (A, B: the
 * Jaccard term's derivative in I and in P, times the term's weight in the loss) then -1 / (valid voxels).
 */
function finish(
  op: string,
  totals: Tensor,
  loss: Tensor,
  coef: Tensor,
  o: { N: number; C: number; jw: number; minPixels: number; eps: number },
): void {
  const { N, C } = o, K = 3 * C + 2;
  launch1d({
    op,
    args: [{ name: "tt", t: totals }, { name: "l", t: loss, write: true }, {
      name: "cf",
      t: coef,
      write: true,
    }],
    n: 1,
    uniforms: { N, jw: { f: o.jw }, mp: { f: o.minPixels }, eps: { f: o.eps } },
    body: `  var fs = 0.0;
  var vs = 0.0;
  var sv = 0.0;
  var jac = 0.0;
  for (var n = 0u; n < sh.N; n = n + 1u) {
    fs = fs + tt_ld(n * ${K}u + ${3 * C}u);
    vs = vs + tt_ld(n * ${K}u + ${3 * C + 1}u);
    var k = 0.0;
    var per = 0.0;
    for (var c = 1u; c < ${C}u; c = c + 1u) {
      let T = tt_ld(n * ${K}u + 3u * c + 2u);
      if (T > sh.mp) {
        let I = tt_ld(n * ${K}u + 3u * c);
        let U = tt_ld(n * ${K}u + 3u * c + 1u) + T - I + sh.eps;
        per = per + (1.0 - (I + sh.eps) / U);
        k = k + 1.0;
      }
    }
    if (k > 0.0) {
      jac = jac + per / k;
      sv = sv + 1.0;
    }
  }
  let rv = 1.0 / max(vs, 1.0);
  l_st(0u, fs * rv + sh.jw * jac / max(sv, 1.0));
  for (var n = 0u; n < sh.N; n = n + 1u) {
    var k = 0.0;
    for (var c = 1u; c < ${C}u; c = c + 1u) {
      k = k + select(0.0, 1.0, tt_ld(n * ${K}u + 3u * c + 2u) > sh.mp);
    }
    for (var c = 0u; c < ${C}u; c = c + 1u) {
      let T = tt_ld(n * ${K}u + 3u * c + 2u);
      var A = 0.0;
      var B = 0.0;
      if (c > 0u && T > sh.mp) {
        let I = tt_ld(n * ${K}u + 3u * c);
        let U = tt_ld(n * ${K}u + 3u * c + 1u) + T - I + sh.eps;
        let a = sh.jw / (max(sv, 1.0) * k);
        A = -a * (U + I + sh.eps) / (U * U);
        B = a * (I + sh.eps) / (U * U);
      }
      cf_st((n * ${C}u + c) * 2u, A);
      cf_st((n * ${C}u + c) * 2u + 1u, B);
    }
  }
  cf_st(sh.N * ${C * 2}u, -rv);`,
  });
}

/** The input gradient, a lane per voxel: gx[n, c, s] = g (focal part + Jaccard part), see the file's notes. */
function backward(
  op: string,
  a: { g: Tensor; x: Tensor; t: Tensor; cf: Tensor; gx: Tensor },
  C: number,
  uniforms: Uniforms,
  p: { pw: string; dpw: string },
): void {
  const N = a.x.shape[0], S = a.x.numel() / (N * C);
  const cs = [...Array(C).keys()];
  const big: Arg[] = [{ name: "x", t: a.x }, { name: "t", t: a.t }, { name: "gx", t: a.gx, write: true }];
  launchBySample(op, N, big, [{ name: "g", t: a.g }, { name: "cf", t: a.cf }], {
    per: S,
    uniforms: { ...uniforms, N },
    body: `  let s = i;
${voxelCode(C)}
  let fl = select(0.0, cf_ld(sh.N * ${C * 2}u) * w * ((${p.pw}) - q * lpt * (${p.dpw})), ok);
  ${
      cs.map((c) =>
        `let G${c} = valid * (select(0.0, cf_ld((n * ${C}u + ${c}u) * 2u), t == ${c}) + cf_ld((n * ${C}u + ${c}u) * 2u + 1u));`
      ).join("\n  ")
    }
  let sg = ${cs.map((c) => `p${c} * G${c}`).join(" + ")};
  let gs = g_ld(0u);
  ${
      cs.map((c) =>
        `gx_st((n * ${C}u + ${c}u) * sh.S + s, gs * (fl * (select(0.0, 1.0, t == ${c}) - p${c}) + p${c} * (G${c} - sg)));`
      ).join("\n  ")
    }`,
  });
}
