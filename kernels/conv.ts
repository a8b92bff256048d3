/**
 * @file 3-D convolution (`F.conv3d`, PyTorch semantics, any stride / padding / dilation / groups) and the
 * (2+1)D unit (`F.conv2p1d`), forward and backward, as direct WGSL kernels.
 *
 * All three directions share one structure, chosen for both GPUs and llvmpipe: a workgroup owns a few
 * (ROWS) channels of its output and 64 positions; the values that only depend on the channel (the weights,
 * or the output gradient in the weight gradient) are the same for the whole workgroup, so they are uniform
 * loads (one scalar load on llvmpipe, a broadcast from cache on a GPU), while each lane loads only its own
 * activation and reuses it for ROWS multiply-adds. Out-of-range taps are read at a clamped address and
 * masked, so control flow stays uniform.
 *
 * - forward: out[n, o, p] = sum over (c, k) of w[o, c, k] * x[n, c, p*stride - pad + k*dil]
 * - grad input (a transposed conv as a gather): gx[n, c, q] = sum over (o, k) with q + pad - k*dil on the
 *   stride grid of w[o, c, k] * gy[n, o, (q + pad - k*dil) / stride]
 * - grad weight: gw[o, c, k] = sum over (n, p) of gy[n, o, p] * x[n, c, p*stride - pad + k*dil], split
 *   into segments over (n, p) whose partial sums are added by a reduction (no atomics)
 *
 * Depthwise (groups == channels) and pointwise (1x1x1) convs run through the same kernels with ROWS
 * adapted to the channels per group.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { launch, u } from "./codegen.ts";
import { sum } from "./reduce.ts";
import { relu } from "./elementwise.ts";

/** A size given for all three dims or per dim [d, h, w]. */
export type Triple = number | readonly [number, number, number];

/** Options of {@link conv3d}. */
export interface Conv3dOptions {
  stride?: Triple;
  padding?: Triple;
  dilation?: Triple;
  groups?: number;
}

function triple(v: Triple | undefined, def: number, name: string, op: string): [number, number, number] {
  const t = v === undefined ? [def, def, def] : typeof v === "number" ? [v, v, v] : [...v];
  if (t.length !== 3 || t.some((x) => !Number.isInteger(x) || x < 0)) {
    throw new Error(
      `${op}: ${name} must be a non-negative integer or a [d, h, w] triple, got ${JSON.stringify(v)}`,
    );
  }
  return t as [number, number, number];
}

/** Validated geometry of one convolution. */
interface Geo {
  N: number;
  C: number;
  O: number;
  G: number;
  CG: number;
  OG: number;
  D: number;
  H: number;
  W: number;
  OD: number;
  OH: number;
  OW: number;
  K: [number, number, number];
  S: [number, number, number];
  P: [number, number, number];
  L: [number, number, number];
}

function geometry(op: string, x: Tensor, w: Tensor, b: Tensor | null | undefined, o: Conv3dOptions): Geo {
  if (!(x instanceof Tensor) || !(w instanceof Tensor)) throw new Error(`${op}: x and w must be tensors`);
  x.storage(op);
  w.storage(op);
  if (x.ndim !== 5) throw new Error(`${op}: input must be 5-D [N, C, D, H, W], got [${x.shape}]`);
  if (w.ndim !== 5) throw new Error(`${op}: weight must be 5-D [O, C/groups, kD, kH, kW], got [${w.shape}]`);
  if (x.dtype !== "f32" || w.dtype !== "f32") {
    throw new Error(`${op}: expects f32, got ${x.describe()} and ${w.describe()}`);
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
  return { N, C, O, G, CG, OG: O / G, D, H, W, OD: outs[0], OH: outs[1], OW: outs[2], K, S, P, L };
}

const LANES = 64;

function rowsFor(n: number): number {
  return Math.min(8, n);
}

/** WGSL: decompose a flat position `v` of a [A, B, C] grid into `a`, `b`, `c` (as i32). */
function split3(v: string, B: number, C: number, a: string, b: string, c: string): string {
  return `let ${a} = i32(${v} / ${u(B * C)}); let ${b} = i32((${v} / ${u(C)}) % ${
    u(B)
  }); let ${c} = i32(${v} % ${u(C)});`;
}

function forward(op: string, x: Tensor, w: Tensor, b: Tensor | null, g: Geo): Tensor {
  const { N, C, O, G, CG, OG, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const out = Tensor.empty(x.device, [N, O, OD, OH, OW], "f32", op);
  const OS = OD * OH * OW, KK = K[0] * K[1] * K[2];
  const R = rowsFor(OG), rt = Math.ceil(OG / R), st = Math.ceil(OS / LANES);
  const rs = [...Array(R).keys()];
  const args = [{ name: "x", t: x }, { name: "w", t: w }, { name: "y", t: out, write: true }];
  if (b) args.splice(2, 0, { name: "b", t: b });
  launch({
    op,
    args,
    wg: LANES,
    groups: N * G * rt * st,
    body: `  let sTile = wg % ${u(st)};
  let r1 = wg / ${u(st)};
  let rTile = r1 % ${u(rt)};
  let r2 = r1 / ${u(rt)};
  let grp = r2 % ${u(G)};
  let n = r2 / ${u(G)};
  let p = sTile * ${u(LANES)} + lid;
  let pc = min(p, ${u(OS - 1)});
  ${split3("pc", OH, OW, "od", "oh", "ow")}
  let d0 = od * ${S[0]} - ${P[0]}; let h0 = oh * ${S[1]} - ${P[1]}; let w0 = ow * ${S[2]} - ${P[2]};
  let o0 = grp * ${u(OG)} + rTile * ${u(R)};
  ${rs.map((r) => `let or${r} = grp * ${u(OG)} + min(rTile * ${u(R)} + ${r}u, ${u(OG - 1)});`).join("\n  ")}
  ${rs.map((r) => `var a${r} = 0.0;`).join(" ")}
  for (var c = 0u; c < ${u(CG)}; c = c + 1u) {
    let xc = (n * ${u(C)} + grp * ${u(CG)} + c) * ${u(D * H * W)};
    for (var kd = 0; kd < ${K[0]}; kd = kd + 1) {
      let id = d0 + kd * ${L[0]};
      let okd = id >= 0 && id < ${D};
      for (var kh = 0; kh < ${K[1]}; kh = kh + 1) {
        let ih = h0 + kh * ${L[1]};
        let okh = okd && ih >= 0 && ih < ${H};
        for (var kw = 0; kw < ${K[2]}; kw = kw + 1) {
          let iw = w0 + kw * ${L[2]};
          let ok = okh && iw >= 0 && iw < ${W};
          let xi = xc + u32(clamp(id, 0, ${D - 1})) * ${u(H * W)} + u32(clamp(ih, 0, ${H - 1})) * ${
      u(W)
    } + u32(clamp(iw, 0, ${W - 1}));
          let xv = select(0.0, x_ld(xi), ok);
          let k = u32((kd * ${K[1]} + kh) * ${K[2]} + kw);
          ${
      rs.map((r) => `a${r} = fma(w_ld((or${r} * ${u(CG)} + c) * ${u(KK)} + k), xv, a${r});`).join(
        "\n          ",
      )
    }
        }
      }
    }
  }
  if (p < ${u(OS)}) {
    ${
      rs.map((r) =>
        `if (rTile * ${u(R)} + ${r}u < ${u(OG)}) { y_st((n * ${u(O)} + o0 + ${r}u) * ${u(OS)} + p, a${r}${
          b ? ` + b_ld(o0 + ${r}u)` : ""
        }); }`
      ).join("\n    ")
    }
  }`,
  });
  return out;
}

function gradInput(op: string, gy: Tensor, w: Tensor, g: Geo): Tensor {
  const { N, C, O, G, CG, OG, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const gx = Tensor.empty(gy.device, [N, C, D, H, W], "f32", op);
  const IS = D * H * W, OS = OD * OH * OW, KK = K[0] * K[1] * K[2];
  const R = rowsFor(CG), rt = Math.ceil(CG / R), st = Math.ceil(IS / LANES);
  const rs = [...Array(R).keys()];
  // Output coordinate along one dim for input coordinate q and tap k: (q + pad - k*dil) / stride when exact.
  const tap = (q: string, k: string, i: number, n: number, name: string) =>
    `let t${name} = ${q} + ${P[i]} - ${k} * ${L[i]}; let o${name} = t${name} / ${S[i]}; ` +
    `let v${name} = t${name} >= 0 && (t${name} % ${S[i]}) == 0 && o${name} < ${n};`;
  launch({
    op,
    args: [{ name: "gy", t: gy }, { name: "w", t: w }, { name: "gx", t: gx, write: true }],
    wg: LANES,
    groups: N * G * rt * st,
    body: `  let sTile = wg % ${u(st)};
  let r1 = wg / ${u(st)};
  let rTile = r1 % ${u(rt)};
  let r2 = r1 / ${u(rt)};
  let grp = r2 % ${u(G)};
  let n = r2 / ${u(G)};
  let q = sTile * ${u(LANES)} + lid;
  let qc = min(q, ${u(IS - 1)});
  ${split3("qc", H, W, "qd", "qh", "qw")}
  let c0 = rTile * ${u(R)};
  ${rs.map((r) => `let cr${r} = min(c0 + ${r}u, ${u(CG - 1)});`).join("\n  ")}
  ${rs.map((r) => `var a${r} = 0.0;`).join(" ")}
  for (var oo = 0u; oo < ${u(OG)}; oo = oo + 1u) {
    let o = grp * ${u(OG)} + oo;
    let yo = (n * ${u(O)} + o) * ${u(OS)};
    for (var kd = 0; kd < ${K[0]}; kd = kd + 1) {
      ${tap("qd", "kd", 0, OD, "d")}
      for (var kh = 0; kh < ${K[1]}; kh = kh + 1) {
        ${tap("qh", "kh", 1, OH, "h")}
        for (var kw = 0; kw < ${K[2]}; kw = kw + 1) {
          ${tap("qw", "kw", 2, OW, "w")}
          let ok = vd && vh && vw;
          let yi = yo + u32(clamp(od, 0, ${OD - 1})) * ${u(OH * OW)} + u32(clamp(oh, 0, ${OH - 1})) * ${
      u(OW)
    } + u32(clamp(ow, 0, ${OW - 1}));
          let gv = select(0.0, gy_ld(yi), ok);
          let k = u32((kd * ${K[1]} + kh) * ${K[2]} + kw);
          ${
      rs.map((r) => `a${r} = fma(w_ld((o * ${u(CG)} + cr${r}) * ${u(KK)} + k), gv, a${r});`).join(
        "\n          ",
      )
    }
        }
      }
    }
  }
  if (q < ${u(IS)}) {
    ${
      rs.map((r) =>
        `if (c0 + ${r}u < ${u(CG)}) { gx_st((n * ${u(C)} + grp * ${u(CG)} + c0 + ${r}u) * ${
          u(IS)
        } + q, a${r}); }`
      ).join("\n    ")
    }
  }`,
  });
  return gx;
}

function gradWeight(op: string, gy: Tensor, x: Tensor, g: Geo): Tensor {
  const { N, C, O, G, CG, OG, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const OS = OD * OH * OW, KK = K[0] * K[1] * K[2], J = CG * KK;
  const R = rowsFor(OG), rt = Math.ceil(OG / R), jt = Math.ceil(J / LANES);
  const total = N * OS;
  // Enough segments to occupy the device, each long enough to amortise its partial write.
  const target = Math.max(1, Math.floor(4096 / Math.max(1, G * rt * jt)));
  const segs = Math.max(1, Math.min(target, Math.ceil(total / 256)));
  const seg = Math.ceil(total / segs);
  const part = Tensor.empty(gy.device, [segs, O, CG, K[0], K[1], K[2]], "f32", op);
  const rs = [...Array(R).keys()];
  launch({
    op,
    args: [{ name: "gy", t: gy }, { name: "x", t: x }, { name: "gw", t: part, write: true }],
    wg: LANES,
    groups: segs * G * rt * jt,
    body: `  let jTile = wg % ${u(jt)};
  let r1 = wg / ${u(jt)};
  let rTile = r1 % ${u(rt)};
  let r2 = r1 / ${u(rt)};
  let grp = r2 % ${u(G)};
  let sg = r2 / ${u(G)};
  let j = jTile * ${u(LANES)} + lid;
  let jc = min(j, ${u(J - 1)});
  let c = jc / ${u(KK)};
  let kk = jc % ${u(KK)};
  let kd = i32(kk / ${u(K[1] * K[2])}); let kh = i32((kk / ${u(K[2])}) % ${u(K[1])}); let kw = i32(kk % ${
      u(K[2])
    });
  let o0 = grp * ${u(OG)} + rTile * ${u(R)};
  ${rs.map((r) => `let or${r} = grp * ${u(OG)} + min(rTile * ${u(R)} + ${r}u, ${u(OG - 1)});`).join("\n  ")}
  ${rs.map((r) => `var a${r} = 0.0;`).join(" ")}
  let e0 = sg * ${u(seg)};
  let e1 = min(e0 + ${u(seg)}, ${u(total)});
  for (var e = e0; e < e1; e = e + 1u) {
    let n = e / ${u(OS)};
    let p = e % ${u(OS)};
    ${split3("p", OH, OW, "od", "oh", "ow")}
    let id = od * ${S[0]} - ${P[0]} + kd * ${L[0]};
    let ih = oh * ${S[1]} - ${P[1]} + kh * ${L[1]};
    let iw = ow * ${S[2]} - ${P[2]} + kw * ${L[2]};
    let ok = id >= 0 && id < ${D} && ih >= 0 && ih < ${H} && iw >= 0 && iw < ${W};
    let xi = (n * ${u(C)} + grp * ${u(CG)} + c) * ${u(D * H * W)} + u32(clamp(id, 0, ${D - 1})) * ${
      u(H * W)
    } + u32(clamp(ih, 0, ${H - 1})) * ${u(W)} + u32(clamp(iw, 0, ${W - 1}));
    let xv = select(0.0, x_ld(xi), ok);
    ${rs.map((r) => `a${r} = fma(gy_ld((n * ${u(O)} + or${r}) * ${u(OS)} + p), xv, a${r});`).join("\n    ")}
  }
  if (j < ${u(J)}) {
    ${
      rs.map((r) =>
        `if (rTile * ${u(R)} + ${r}u < ${u(OG)}) { gw_st((sg * ${u(O)} + o0 + ${r}u) * ${u(J)} + j, a${r}); }`
      ).join("\n    ")
    }
  }`,
  });
  if (segs === 1) return part.reshape([O, CG, K[0], K[1], K[2]]);
  const r = sum(part, 0);
  part.dispose();
  return r;
}

/**
 * 3-D convolution with PyTorch `conv3d` semantics. x: [N, C, D, H, W]; w: [O, C/groups, kD, kH, kW];
 * b: [O] or null. `stride`, `padding`, `dilation` are ints or [d, h, w] triples. Differentiable in x, w, b.
 */
export function conv3d(x: Tensor, w: Tensor, b?: Tensor | null, opts: Conv3dOptions = {}): Tensor {
  const op = "F.conv3d";
  const g = geometry(op, x, w, b, opts);
  const y = forward(op, x, w, b ?? null, g);
  return record(op, y, [x, w, b ?? null], [x, w], (gy, [sx, sw]) => [
    x.requiresGrad ? gradInput(`${op}.backward`, gy, sw, g) : null,
    w.requiresGrad ? gradWeight(`${op}.backward`, gy, sx, g) : null,
    b?.requiresGrad ? sum(gy, [0, 2, 3, 4]) : null,
  ]);
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
  const act = opts.relu ?? true;
  const s = conv3d(x, ws, bs, { padding: [0, ph, pw] });
  const s2 = act ? relu(s) : s;
  if (act) s.dispose();
  const t = conv3d(s2, wt, bt, { padding: [pt, 0, 0] });
  s2.dispose();
  if (!act) return t;
  const r = relu(t);
  t.dispose();
  return r;
}
