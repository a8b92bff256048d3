/**
 * @file 3-D convolution (`F.conv3d`, PyTorch semantics, any stride / padding / dilation / groups) and the
 * (2+1)D unit (`F.conv2p1d`), forward and backward, as WGSL kernels.
 *
 * This module validates the geometry, chooses an algorithm by shape and device profile, and wires its
 * gradient kernels into autograd; each algorithm's forward, input gradient and weight gradient live side by
 * side in their own file:
 *
 * - pointwise.ts: 1x1x1, unpadded, one group: GEMMs over channels
 * - depthwise.ts: groups == in == out channels, up to 64 taps: per-channel register-blocked kernels
 * - im2col.ts: the weight gradient of other one-group convs on the "cpu" profile (im2col + GEMM)
 * - implicit.ts: one-group convs with taps on the "gpu" profile: shared-memory implicit GEMMs
 * - direct4.ts: the "cpu" profile's one-group convs with vec4 rows: direct kernels over quads of positions
 * - plane.ts: the "cpu" profile's one-group convs over planes of 4 positions (2 x 2): a plane per vec4
 * - direct.ts: everything else: direct tiled kernels (implicit GEMMs in registers: no column buffer)
 */
import { Tensor } from "../../core/tensor.ts";
import { record } from "../../core/autograd.ts";
import { reluGradChannelSum, sum } from "../reduce.ts";
import { map } from "../elementwise/map.ts";
import { act, type Geo } from "./common.ts";
import type { GemmMoments } from "../matmul.ts";
import { directForward, directGradInput, directGradWeight } from "./direct.ts";
import {
  direct4Fits,
  direct4Forward,
  direct4GradInput,
  direct4GradInputFits,
  direct4GradWeight,
} from "./direct4.ts";
import { planeFits, planeForward, planeGradInput } from "./plane.ts";
import { depthwiseForward, depthwiseGradInput, depthwiseGradWeight } from "./depthwise.ts";
import { im2colGradWeight } from "./im2col.ts";
import { implicitForward, implicitGradInput, implicitGradWeight } from "./implicit.ts";
import { pointwiseForward, pointwiseGradInput, pointwiseGradWeight } from "./pointwise.ts";

/** A size given for all three dims or per dim [d, h, w]. */
export type Triple = number | readonly [number, number, number];

/** Options of {@link conv3d}. */
export interface Conv3dOptions {
  stride?: Triple;
  padding?: Triple;
  dilation?: Triple;
  groups?: number;
  /**
   * relu(conv3d(x, w, b)) in one op: the ReLU is applied as the conv stores its output, and the backward
   * masks the gradient and sums the bias's gradient in one pass (the seed decoder's conv -> ReLU).
   */
  relu?: boolean;
  /**
   * Output dtype (default f32). "f16" stores the f32-accumulated output rounded to half precision, for a
   * consumer that reads f16 (under autocast: the next conv or a batch norm); the gradients stay f32.
   */
  dtype?: "f32" | "f16";
  /**
   * relu?(conv3d(x, w, b) + residual) in one op: a tensor of the output's shape (f32 or f16) added before the
   * ReLU, as a ResNet block's shortcut. Pointwise convs add it as their GEMM stores; other algorithms take one
   * pass more. Its gradient is the output's (masked by the ReLU).
   */
  residual?: Tensor | null;
  /**
   * Ask for the output's per-channel moments for a following training-mode batch norm (its `moments`
   * option): filled where the conv computes them as it stores (pointwise convs on the "gpu" profile's vec4
   * GEMM tiles), left null elsewhere; the caller disposes them.
   */
  moments?: GemmMoments | null;
}

/** A size option as [d, h, w]; `def` fills an omitted one (omitting it without a default is an error). */
export function triple(
  v: Triple | undefined,
  def: number | undefined,
  name: string,
  op: string,
): [number, number, number] {
  if (v === undefined && def === undefined) throw new Error(`${op}: ${name} is required`);
  const t = v === undefined ? [def!, def!, def!] : typeof v === "number" ? [v, v, v] : [...v];
  if (t.length !== 3 || t.some((x) => !Number.isInteger(x) || x < 0)) {
    throw new Error(
      `${op}: ${name} must be a non-negative integer or a [d, h, w] triple, got ${JSON.stringify(v)}`,
    );
  }
  return t as [number, number, number];
}

function geometry(op: string, x: Tensor, w: Tensor, b: Tensor | null | undefined, o: Conv3dOptions): Geo {
  if (!(x instanceof Tensor) || !(w instanceof Tensor)) throw new Error(`${op}: x and w must be tensors`);
  x.storage(op);
  w.storage(op);
  if (x.ndim !== 5) throw new Error(`${op}: input must be 5-D [N, C, D, H, W], got [${x.shape}]`);
  if (w.ndim !== 5) throw new Error(`${op}: weight must be 5-D [O, C/groups, kD, kH, kW], got [${w.shape}]`);
  if ((x.dtype !== "f32" && x.dtype !== "f16") || (w.dtype !== "f32" && w.dtype !== "f16")) {
    throw new Error(`${op}: expects f32 or f16, got ${x.describe()} and ${w.describe()}`);
  }
  if (x.device !== w.device || (b && b.device !== x.device)) {
    throw new Error(`${op}: tensors are on different devices`);
  }
  const G = o.groups ?? 1;
  const [N, C, D, H, W] = x.shape;
  const [O, CG, kd, kh, kw] = w.shape;
  if (!Number.isInteger(G) || G < 1) throw new Error(`${op}: groups must be a positive integer, got ${G}`);
  if (C % G !== 0) {
    throw new Error(`${op}: groups ${G} does not divide the ${C} input channels of [${x.shape}]`);
  }
  if (O % G !== 0) {
    throw new Error(`${op}: groups ${G} does not divide the ${O} output channels of weight [${w.shape}]`);
  }
  if (CG !== C / G) {
    throw new Error(
      `${op}: weight [${w.shape}] expects ${
        CG * G
      } input channels (groups ${G}), input [${x.shape}] has ${C}`,
    );
  }
  if (b && (b.ndim !== 1 || b.shape[0] !== O)) {
    throw new Error(`${op}: bias must be [${O}], got [${b.shape}]`);
  }
  const S = triple(o.stride, 1, "stride", op), P = triple(o.padding, 0, "padding", op);
  const L = triple(o.dilation, 1, "dilation", op);
  if (S.some((s) => s < 1) || L.some((l) => l < 1)) {
    throw new Error(`${op}: stride and dilation must be >= 1`);
  }
  const K: [number, number, number] = [kd, kh, kw];
  const ins = [D, H, W];
  const outs = ins.map((n, i) => {
    const span = L[i] * (K[i] - 1) + 1;
    if (n + 2 * P[i] < span) {
      throw new Error(
        `${op}: kernel [${K}] (dilation [${L}]) is larger than the padded input [${
          ins.map((v, j) => v + 2 * P[j])
        }] ` +
          `(input [${x.shape}], padding [${P}])`,
      );
    }
    return Math.floor((n + 2 * P[i] - span) / S[i]) + 1;
  });
  const relu = !!o.relu, dtype = o.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "f16") {
    throw new Error(`${op}: dtype must be "f32" or "f16", got ${dtype}`);
  }
  const [OD, OH, OW] = outs;
  const r = o.residual;
  if (r) {
    if (!(r instanceof Tensor)) throw new Error(`${op}: residual must be a tensor`);
    r.storage(op);
    if (r.device !== x.device) throw new Error(`${op}: residual is on another device`);
    if (r.shape.join() !== [N, O, ...outs].join() || (r.dtype !== "f32" && r.dtype !== "f16")) {
      throw new Error(
        `${op}: residual must be f32 or f16 of the output's shape [${[N, O, ...outs]}], got ${r.describe()}`,
      );
    }
  }
  return { N, C, O, G, CG, OG: O / G, D, H, W, OD, OH, OW, K, S, P, L, relu, dtype };
}

/**
 * A gradient kernel: `t` is the weight (input gradient) or the saved input (weight gradient); `acc`, where the
 * chosen algorithm accumulates (`Chosen.accumulates`), a gradient the result must include.
 */
type GradKernel = (op: string, gy: Tensor, t: Tensor, g: Geo, acc?: Tensor | null) => Tensor;

/** The forward output of the chosen algorithm, the input it saves, and its gradient kernels. */
interface Chosen {
  y: Tensor;
  /** What the weight gradient reads: `x`, or a derived tensor the caller disposes once it is saved. */
  saved: Tensor;
  gradInput: GradKernel;
  gradWeight: GradKernel;
  /** The input gradient kernel adds a given gradient as it stores (a GEMM epilogue). */
  accumulates?: boolean;
}

/**
 * Kernel names per algorithm, so that a profile (`CSN_PROFILE=1`) tells a decoder's 3x3x3 from a pointwise
 * conv: "F.conv3d implicit 3x3x3", "F.conv3d.backward implicit 3x3x3 dx" (the taps are in the shader already,
 * so the names add no pipelines).
 */
function named(c: Chosen, alg: string, dwAlg = alg): Chosen {
  const tag = (k: GradKernel, name: string): GradKernel => (o, gy, t, g, acc) =>
    k(`${o} ${name}`, gy, t, g, acc);
  return { ...c, gradInput: tag(c.gradInput, `${alg} dx`), gradWeight: tag(c.gradWeight, `${dwAlg} dw`) };
}

function choose(
  op: string,
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  g: Geo,
  r: Tensor | null,
  moments: GemmMoments | null = null,
): Chosen {
  const KK = g.K[0] * g.K[1] * g.K[2], taps = g.K.join("x");
  if (g.G === 1 && KK === 1 && g.P.every((p) => p === 0)) {
    const { y, xs } = pointwiseForward(`${op} pointwise`, x, w, b, g, r, moments);
    return named({
      y,
      saved: xs,
      gradInput: pointwiseGradInput,
      gradWeight: pointwiseGradWeight,
      accumulates: g.S.every((s) => s === 1),
    }, "pointwise");
  }
  if (r) {
    // The other algorithms store conv + bias in f32; the residual, the ReLU and the dtype take one pass more.
    const c = choose(op, x, w, b, { ...g, relu: false, dtype: "f32" }, null);
    const y = map(op, [c.y, r], g.dtype, (v) => act(`${v[0]} + ${v[1]}`, g.relu));
    c.y.dispose();
    return { ...c, y };
  }
  if (g.G === g.C && g.O === g.C && KK <= 64) {
    const y = depthwiseForward(`${op} depthwise ${taps}`, x, w, b, g);
    return named(
      { y, saved: x, gradInput: depthwiseGradInput, gradWeight: depthwiseGradWeight },
      `depthwise ${taps}`,
    );
  }
  if (x.device.profile === "cpu" && g.G === 1 && KK > 1) {
    // Convs whose rows are whole vec4s (the decoder's, the stems) take quads of neighbouring positions: a
    // lane's vec4 loads cover all its W taps (direct4.ts: 2-2.8x the direct kernel and im2col + GEMM on Mesa
    // 25 lavapipe, docs/perf.md 2026-12-05; forward and input gradient bit-identical to the direct kernel).
    // Elsewhere the direct kernel (an implicit GEMM in registers) beat im2col + GEMM forward and input
    // gradient, and the chunked im2col weight gradient the direct one (docs/perf.md, 2026-11-30).
    // Planes of 4 positions whose rows are not vec4s (the UNet's 2 x 2 bottom) are one vec4 each (plane.ts:
    // bit-identical to the direct kernel too).
    const quads = direct4Fits(g), dxQuads = direct4GradInputFits(g), plane = !quads && planeFits(g);
    const fwd = quads ? "direct4" : plane ? "plane" : "direct";
    const dx = dxQuads ? "direct4" : plane ? "plane" : "direct";
    const forward = quads ? direct4Forward : plane ? planeForward : directForward;
    return named(
      {
        y: forward(`${op} ${fwd} ${taps}`, x, w, b, g),
        saved: x,
        gradInput: dxQuads ? direct4GradInput : plane ? planeGradInput : directGradInput,
        gradWeight: quads ? direct4GradWeight : (o, gy, t, gg) => im2colGradWeight(o, gy, t, gg),
      },
      `${dx} ${taps}`,
      `${quads ? "direct4" : "im2col"} ${taps}`,
    );
  }
  if (g.G === 1 && KK > 1) {
    // "gpu" profile: shared-memory implicit GEMMs (each gathered value feeds 32-128 channels, not 4).
    const y = implicitForward(`${op} implicit ${taps}`, x, w, b, g);
    return named(
      { y, saved: x, gradInput: implicitGradInput, gradWeight: implicitGradWeight },
      `implicit ${taps}`,
    );
  }
  const y = directForward(`${op} direct ${taps}`, x, w, b, g);
  return named({ y, saved: x, gradInput: directGradInput, gradWeight: directGradWeight }, `direct ${taps}`);
}

/**
 * 3-D convolution with PyTorch `conv3d` semantics. x: [N, C, D, H, W]; w: [O, C/groups, kD, kH, kW];
 * b: [O] or null. `stride`, `padding`, `dilation` are ints or [d, h, w] triples. Differentiable in x, w, b.
 */
export function conv3d(x: Tensor, w: Tensor, b?: Tensor | null, opts: Conv3dOptions = {}): Tensor {
  const op = "F.conv3d", back = `${op}.backward`;
  const g = geometry(op, x, w, b, opts);
  const bias = b ?? null, res = opts.residual ?? null;
  const { y, saved, gradInput, gradWeight, accumulates } = choose(
    op,
    x,
    w,
    bias,
    g,
    res,
    opts.moments ?? null,
  );
  const ins = [x, w, bias, res];
  const out = record(op, y, ins, g.relu ? [saved, w, y] : [saved, w], (gy, [sx, sw, sy], pending) => {
    const wantBias = !!bias?.requiresGrad, wantRes = !!res?.requiresGrad;
    let gz = gy, gb: Tensor | null = null;
    if (g.relu && wantBias) ({ grad: gz, sum: gb } = reluGradChannelSum(gy, sy));
    else if (g.relu) gz = map(back, [gy, sy], "f32", (v) => `select(0.0, ${v[0]}, ${v[1]} > 0.0)`);
    else if (wantBias) gb = sum(gy, [0, 2, 3, 4]);
    const grads = [
      // x's gradient from its other consumers (a shortcut) is added as the GEMM stores: no add pass.
      x.requiresGrad ? gradInput(back, gz, sw, g, accumulates ? pending(0) : null) : null,
      w.requiresGrad ? gradWeight(back, gz, sx, g) : null,
      gb,
      // The residual's gradient is the (masked) output gradient itself.
      wantRes ? (gz === gy ? gy.share() : gz) : null,
    ];
    if (gz !== gy && !wantRes) gz.dispose();
    return grads;
  });
  if (saved !== x) saved.dispose();
  return out;
}

/** Options of {@link conv2p1d}. */
export interface Conv2p1dOptions {
  /** Spatial padding of the (1, kH, kW) conv; default half the kernel ("same"). */
  spatialPadding?: [number, number];
  /** Temporal padding of the (kT, 1, 1) conv; default half the kernel. */
  temporalPadding?: number;
  /** Apply ReLU after each conv, as the seed's decoder unit does (default true). */
  relu?: boolean;
}

/**
 * The (2+1)D unit of the seed's decoder: a (1, kH, kW) conv (`ws`, `bs`), ReLU, then a (kT, 1, 1) conv
 * (`wt`, `bt`), ReLU. Weights: ws [M, C, 1, kH, kW], wt [O, M, kT, 1, 1].
 */
export function conv2p1d(
  x: Tensor,
  ws: Tensor,
  bs: Tensor | null,
  wt: Tensor,
  bt: Tensor | null,
  opts: Conv2p1dOptions = {},
): Tensor {
  const op = "F.conv2p1d";
  if (ws.ndim !== 5 || ws.shape[2] !== 1) {
    throw new Error(`${op}: spatial weight must be [M, C, 1, kH, kW], got [${ws.shape}]`);
  }
  if (wt.ndim !== 5 || wt.shape[3] !== 1 || wt.shape[4] !== 1) {
    throw new Error(`${op}: temporal weight must be [O, M, kT, 1, 1], got [${wt.shape}]`);
  }
  const [ph, pw] = opts.spatialPadding ?? [Math.floor(ws.shape[3] / 2), Math.floor(ws.shape[4] / 2)];
  const pt = opts.temporalPadding ?? Math.floor(wt.shape[2] / 2);
  const relu = opts.relu ?? true;
  const s = conv3d(x, ws, bs, { padding: [0, ph, pw], relu });
  const t = conv3d(s, wt, bt, { padding: [pt, 0, 0], relu });
  s.dispose();
  return t;
}
