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
import { map, relu } from "./elementwise.ts";
import { slab } from "./slice.ts";
import { gemm } from "./matmul.ts";

/** A size given for all three dims or per dim [d, h, w]. */
export type Triple = number | readonly [number, number, number];

/** Options of {@link conv3d}. */
export interface Conv3dOptions {
  stride?: Triple;
  padding?: Triple;
  dilation?: Triple;
  groups?: number;
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
/** Positions (or weight columns) per lane: each loaded activation feeds ROWS multiply-adds and each weight V. */
const V = 4;

function rowsFor(n: number): number {
  return Math.min(4, n);
}

/** WGSL: decompose a flat position `v` of a [A, B, C] grid into `a`, `b`, `c` (as i32). */
function split3(v: string, B: number, C: number, a: string, b: string, c: string): string {
  return `let ${a} = i32(${v} / ${u(B * C)}); let ${b} = i32((${v} / ${u(C)}) % ${
    u(B)
  }); let ${c} = i32(${v} % ${u(C)});`;
}

const range = (n: number) => [...Array(n).keys()];

/** WGSL: clamped flat index into a [D, H, W] volume at base `b` and the in-bounds flag, for coords with suffix s. */
function vox(b: string, s: string, D: number, H: number, W: number): string {
  return `let ok${s} = id${s} >= 0 && id${s} < ${D} && ih${s} >= 0 && ih${s} < ${H} && iw${s} >= 0 && iw${s} < ${W};
          let xi${s} = ${b} + u32(clamp(id${s}, 0, ${D - 1})) * ${u(H * W)} + u32(clamp(ih${s}, 0, ${
    H - 1
  })) * ${u(W)} + u32(clamp(iw${s}, 0, ${W - 1}));`;
}

function forward(op: string, x: Tensor, w: Tensor, b: Tensor | null, g: Geo): Tensor {
  const { N, C, O, G, CG, OG, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const out = Tensor.empty(x.device, [N, O, OD, OH, OW], "f32", op);
  const OS = OD * OH * OW, KK = K[0] * K[1] * K[2];
  const R = rowsFor(OG), rt = Math.ceil(OG / R), st = Math.ceil(OS / (LANES * V));
  const rs = range(R), vs = range(V);
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
  ${
      vs.map((v) =>
        `let p${v} = sTile * ${u(LANES * V)} + ${u(v * LANES)} + lid; let pc${v} = min(p${v}, ${u(OS - 1)});
  ${split3(`pc${v}`, OH, OW, `od${v}`, `oh${v}`, `ow${v}`)}
  let d0${v} = od${v} * ${S[0]} - ${P[0]}; let h0${v} = oh${v} * ${S[1]} - ${P[1]}; let w0${v} = ow${v} * ${
          S[2]
        } - ${P[2]};`
      ).join("\n  ")
    }
  let o0 = grp * ${u(OG)} + rTile * ${u(R)};
  ${rs.map((r) => `let or${r} = grp * ${u(OG)} + min(rTile * ${u(R)} + ${r}u, ${u(OG - 1)});`).join("\n  ")}
  ${rs.flatMap((r) => vs.map((v) => `var a${r}_${v} = 0.0;`)).join(" ")}
  for (var c = 0u; c < ${u(CG)}; c = c + 1u) {
    let xc = (n * ${u(C)} + grp * ${u(CG)} + c) * ${u(D * H * W)};
    for (var kd = 0; kd < ${K[0]}; kd = kd + 1) {
      for (var kh = 0; kh < ${K[1]}; kh = kh + 1) {
        for (var kw = 0; kw < ${K[2]}; kw = kw + 1) {
          let k = u32((kd * ${K[1]} + kh) * ${K[2]} + kw);
          ${rs.map((r) => `let w${r} = w_ld((or${r} * ${u(CG)} + c) * ${u(KK)} + k);`).join(" ")}
          ${
      vs.map((v) =>
        `let id${v} = d0${v} + kd * ${L[0]}; let ih${v} = h0${v} + kh * ${L[1]}; let iw${v} = w0${v} + kw * ${
          L[2]
        };
          ${vox("xc", `${v}`, D, H, W)}
          let xv${v} = select(0.0, x_ld(xi${v}), ok${v});`
      ).join("\n          ")
    }
          ${rs.flatMap((r) => vs.map((v) => `a${r}_${v} = fma(w${r}, xv${v}, a${r}_${v});`)).join(" ")}
        }
      }
    }
  }
  ${
      vs.map((v) =>
        `if (p${v} < ${u(OS)}) {
    ${
          rs.map((r) =>
            `if (rTile * ${u(R)} + ${r}u < ${u(OG)}) { y_st((n * ${u(O)} + o0 + ${r}u) * ${
              u(OS)
            } + p${v}, a${r}_${v}${b ? ` + b_ld(o0 + ${r}u)` : ""}); }`
          ).join("\n    ")
        }
  }`
      ).join("\n  ")
    }`,
  });
  return out;
}

function gradInput(op: string, gy: Tensor, w: Tensor, g: Geo): Tensor {
  const { N, C, O, G, CG, OG, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const gx = Tensor.empty(gy.device, [N, C, D, H, W], "f32", op);
  const IS = D * H * W, OS = OD * OH * OW, KK = K[0] * K[1] * K[2];
  const R = rowsFor(CG), rt = Math.ceil(CG / R), st = Math.ceil(IS / (LANES * V));
  const rs = range(R), vs = range(V);
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
  ${
      vs.map((v) =>
        `let q${v} = sTile * ${u(LANES * V)} + ${u(v * LANES)} + lid; let qc${v} = min(q${v}, ${u(IS - 1)});
  ${split3(`qc${v}`, H, W, `qd${v}`, `qh${v}`, `qw${v}`)}`
      ).join("\n  ")
    }
  let c0 = rTile * ${u(R)};
  ${rs.map((r) => `let cr${r} = min(c0 + ${r}u, ${u(CG - 1)});`).join("\n  ")}
  ${rs.flatMap((r) => vs.map((v) => `var a${r}_${v} = 0.0;`)).join(" ")}
  for (var oo = 0u; oo < ${u(OG)}; oo = oo + 1u) {
    let o = grp * ${u(OG)} + oo;
    let yo = (n * ${u(O)} + o) * ${u(OS)};
    for (var kd = 0; kd < ${K[0]}; kd = kd + 1) {
      for (var kh = 0; kh < ${K[1]}; kh = kh + 1) {
        for (var kw = 0; kw < ${K[2]}; kw = kw + 1) {
          let k = u32((kd * ${K[1]} + kh) * ${K[2]} + kw);
          ${rs.map((r) => `let w${r} = w_ld((o * ${u(CG)} + cr${r}) * ${u(KK)} + k);`).join(" ")}
          ${
      vs.map((v) =>
        `${tap(`qd${v}`, "kd", 0, OD, `d${v}`)}
          ${tap(`qh${v}`, "kh", 1, OH, `h${v}`)}
          ${tap(`qw${v}`, "kw", 2, OW, `w${v}`)}
          let yi${v} = yo + u32(clamp(od${v}, 0, ${OD - 1})) * ${u(OH * OW)} + u32(clamp(oh${v}, 0, ${
          OH - 1
        })) * ${u(OW)} + u32(clamp(ow${v}, 0, ${OW - 1}));
          let gv${v} = select(0.0, gy_ld(yi${v}), vd${v} && vh${v} && vw${v});`
      ).join("\n          ")
    }
          ${rs.flatMap((r) => vs.map((v) => `a${r}_${v} = fma(w${r}, gv${v}, a${r}_${v});`)).join(" ")}
        }
      }
    }
  }
  ${
      vs.map((v) =>
        `if (q${v} < ${u(IS)}) {
    ${
          rs.map((r) =>
            `if (c0 + ${r}u < ${u(CG)}) { gx_st((n * ${u(C)} + grp * ${u(CG)} + c0 + ${r}u) * ${
              u(IS)
            } + q${v}, a${r}_${v}); }`
          ).join("\n    ")
        }
  }`
      ).join("\n  ")
    }`,
  });
  return gx;
}

function gradWeight(op: string, gy: Tensor, x: Tensor, g: Geo): Tensor {
  const { N, C, O, G, CG, OG, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const OS = OD * OH * OW, KK = K[0] * K[1] * K[2], J = CG * KK;
  const R = rowsFor(OG), rt = Math.ceil(OG / R), jt = Math.ceil(J / (LANES * V));
  const total = N * OS;
  // Enough segments to occupy the device, each long enough to amortise its partial write.
  const target = Math.max(1, Math.floor(4096 / Math.max(1, G * rt * jt)));
  const segs = Math.max(1, Math.min(target, Math.ceil(total / 256)));
  const seg = Math.ceil(total / segs);
  const part = Tensor.empty(gy.device, [segs, O, CG, K[0], K[1], K[2]], "f32", op);
  const rs = range(R), vs = range(V);
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
  ${
      vs.map((v) =>
        `let j${v} = jTile * ${u(LANES * V)} + ${u(v * LANES)} + lid; let jc${v} = min(j${v}, ${u(J - 1)});
  let c${v} = jc${v} / ${u(KK)}; let kk${v} = jc${v} % ${u(KK)};
  let kd${v} = i32(kk${v} / ${u(K[1] * K[2])}); let kh${v} = i32((kk${v} / ${u(K[2])}) % ${
          u(K[1])
        }); let kw${v} = i32(kk${v} % ${u(K[2])});`
      ).join("\n  ")
    }
  let o0 = grp * ${u(OG)} + rTile * ${u(R)};
  ${rs.map((r) => `let or${r} = grp * ${u(OG)} + min(rTile * ${u(R)} + ${r}u, ${u(OG - 1)});`).join("\n  ")}
  ${rs.flatMap((r) => vs.map((v) => `var a${r}_${v} = 0.0;`)).join(" ")}
  let e0 = sg * ${u(seg)};
  let e1 = min(e0 + ${u(seg)}, ${u(total)});
  for (var e = e0; e < e1; e = e + 1u) {
    let n = e / ${u(OS)};
    let p = e % ${u(OS)};
    ${split3("p", OH, OW, "od", "oh", "ow")}
    ${rs.map((r) => `let g${r} = gy_ld((n * ${u(O)} + or${r}) * ${u(OS)} + p);`).join(" ")}
    ${
      vs.map((v) =>
        `let id${v} = od * ${S[0]} - ${P[0]} + kd${v} * ${L[0]};
    let ih${v} = oh * ${S[1]} - ${P[1]} + kh${v} * ${L[1]};
    let iw${v} = ow * ${S[2]} - ${P[2]} + kw${v} * ${L[2]};
    ${vox(`(n * ${u(C)} + grp * ${u(CG)} + c${v}) * ${u(D * H * W)}`, `${v}`, D, H, W)}
    let xv${v} = select(0.0, x_ld(xi${v}), ok${v});`
      ).join("\n    ")
    }
    ${rs.flatMap((r) => vs.map((v) => `a${r}_${v} = fma(g${r}, xv${v}, a${r}_${v});`)).join(" ")}
  }
  ${
      vs.map((v) =>
        `if (j${v} < ${u(J)}) {
    ${
          rs.map((r) =>
            `if (rTile * ${u(R)} + ${r}u < ${u(OG)}) { gw_st((sg * ${u(O)} + o0 + ${r}u) * ${
              u(J)
            } + j${v}, a${r}_${v}); }`
          ).join("\n    ")
        }
  }`
      ).join("\n  ")
    }`,
  });
  if (segs === 1) return part.reshape([O, CG, K[0], K[1], K[2]]);
  const r = sum(part, 0);
  part.dispose();
  return r;
}

// ------------------------------------------------------------------------------------------ depthwise
// groups == in == out channels (the CSN's channel-separated 3x3x3). Each lane computes V outputs along W and
// loads every input value of a kernel row once into registers (6 loads feed 12 multiply-adds for a 3-wide,
// stride-1 kernel); the KK weights of its channel are loaded once.

/** Distinct W offsets (relative to the first output's window start) needed by V outputs. */
function rowOffsets(K: number, S: number, Ld: number): number[] {
  const set = new Set<number>();
  for (let v = 0; v < V; v++) for (let k = 0; k < K; k++) set.add(v * S + k * Ld);
  return [...set].sort((a, b) => a - b);
}

/**
 * y[n, c] = correlation of x[n, c] with w[c] (flipped when `flip`, for the input gradient) at the given
 * stride / padding / dilation; output spatial size `out`.
 */
function dwConv(
  op: string,
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  out: [number, number, number],
  K: [number, number, number],
  S: [number, number, number],
  P: [number, number, number],
  L: [number, number, number],
  flip: boolean,
): Tensor {
  const [N, C, D, H, W] = x.shape;
  const [OD, OH, OW] = out;
  const KK = K[0] * K[1] * K[2];
  const y = Tensor.empty(x.device, [N, C, OD, OH, OW], "f32", op);
  const strips = Math.ceil(OW / V), OSs = OD * OH * strips, st = Math.ceil(OSs / LANES);
  const offs = rowOffsets(K[2], S[2], L[2]);
  const widx = (kd: number, kh: number, kw: number) => {
    const k = (kd * K[1] + kh) * K[2] + kw;
    return flip ? KK - 1 - k : k;
  };
  const rows: string[] = [];
  for (let kd = 0; kd < K[0]; kd++) {
    for (let kh = 0; kh < K[1]; kh++) {
      const loads = offs.map((o) =>
        `let x${o} = select(0.0, x_ld(rb + u32(clamp(bw + ${o}, 0, ${
          W - 1
        }))), okr && bw + ${o} >= 0 && bw + ${o} < ${W});`
      );
      const fmas: string[] = [];
      for (let v = 0; v < V; v++) {
        for (let kw = 0; kw < K[2]; kw++) {
          fmas.push(`a${v} = fma(w${widx(kd, kh, kw)}, x${v * S[2] + kw * L[2]}, a${v});`);
        }
      }
      rows.push(`{
    let id = d0 + ${kd * L[0]}; let ih = h0 + ${kh * L[1]};
    let okr = id >= 0 && id < ${D} && ih >= 0 && ih < ${H};
    let rb = xc + u32(clamp(id, 0, ${D - 1})) * ${u(H * W)} + u32(clamp(ih, 0, ${H - 1})) * ${u(W)};
    ${loads.join("\n    ")}
    ${fmas.join(" ")}
  }`);
    }
  }
  const args = [{ name: "x", t: x }, { name: "w", t: w }, { name: "y", t: y, write: true }];
  if (b) args.splice(2, 0, { name: "b", t: b });
  launch({
    op,
    args,
    wg: LANES,
    groups: N * C * st,
    body: `  let sTile = wg % ${u(st)};
  let nc = wg / ${u(st)};
  let c = nc % ${u(C)};
  let s = sTile * ${u(LANES)} + lid;
  let sc = min(s, ${u(OSs - 1)});
  let od = i32(sc / ${u(OH * strips)}); let oh = i32((sc / ${u(strips)}) % ${u(OH)}); let ow0 = i32(sc % ${
      u(strips)
    }) * ${V};
  let d0 = od * ${S[0]} - ${P[0]}; let h0 = oh * ${S[1]} - ${P[1]}; let bw = ow0 * ${S[2]} - ${P[2]};
  let xc = nc * ${u(D * H * W)};
  ${range(KK).map((k) => `let w${k} = w_ld(c * ${u(KK)} + ${u(k)});`).join(" ")}
  ${range(V).map((v) => `var a${v} = 0.0;`).join(" ")}
  ${rows.join("\n  ")}
  if (s < ${u(OSs)}) {
    let yb = nc * ${u(OD * OH * OW)} + u32(od * ${OH} + oh) * ${u(OW)} + u32(ow0);
    ${
      range(V).map((v) => `if (ow0 + ${v} < ${OW}) { y_st(yb + ${u(v)}, a${v}${b ? " + b_ld(c)" : ""}); }`)
        .join("\n    ")
    }
  }`,
  });
  return y;
}

/** gw[c, k] = sum over n and outputs of gy * x at the tap's input position; segments reduced afterwards. */
function dwGradWeight(op: string, gy: Tensor, x: Tensor, g: Geo): Tensor {
  const { N, C, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const KK = K[0] * K[1] * K[2];
  const strips = Math.ceil(OW / V), total = N * OD * OH * strips;
  const segs = Math.max(1, Math.min(Math.ceil(4096 / C), Math.ceil(total / (4 * LANES))));
  const seg = Math.ceil(total / segs);
  const part = Tensor.empty(gy.device, [segs, C, KK], "f32", op);
  const offs = rowOffsets(K[2], S[2], L[2]);
  const rows: string[] = [];
  for (let kd = 0; kd < K[0]; kd++) {
    for (let kh = 0; kh < K[1]; kh++) {
      const loads = offs.map((o) =>
        `let x${o} = select(0.0, x_ld(rb + u32(clamp(bw + ${o}, 0, ${
          W - 1
        }))), okr && bw + ${o} >= 0 && bw + ${o} < ${W});`
      );
      const fmas: string[] = [];
      for (let kw = 0; kw < K[2]; kw++) {
        const k = (kd * K[1] + kh) * K[2] + kw;
        for (let v = 0; v < V; v++) fmas.push(`a${k} = fma(g${v}, x${v * S[2] + kw * L[2]}, a${k});`);
      }
      rows.push(`{
      let id = d0 + ${kd * L[0]}; let ih = h0 + ${kh * L[1]};
      let okr = id >= 0 && id < ${D} && ih >= 0 && ih < ${H};
      let rb = xc + u32(clamp(id, 0, ${D - 1})) * ${u(H * W)} + u32(clamp(ih, 0, ${H - 1})) * ${u(W)};
      ${loads.join("\n      ")}
      ${fmas.join(" ")}
    }`);
    }
  }
  launch({
    op,
    args: [{ name: "gy", t: gy }, { name: "x", t: x }, { name: "gw", t: part, write: true }],
    wg: LANES,
    groups: segs * C,
    decls: `var<workgroup> red: array<f32, ${KK * LANES}>;`,
    body: `  let c = wg % ${u(C)};
  let sg = wg / ${u(C)};
  ${range(KK).map((k) => `var a${k} = 0.0;`).join(" ")}
  let e1 = min((sg + 1u) * ${u(seg)}, ${u(total)});
  for (var e = sg * ${u(seg)} + lid; e < e1; e = e + ${u(LANES)}) {
    let n = e / ${u(OD * OH * strips)};
    let r = e % ${u(OD * OH * strips)};
    let od = i32(r / ${u(OH * strips)}); let oh = i32((r / ${u(strips)}) % ${u(OH)}); let ow0 = i32(r % ${
      u(strips)
    }) * ${V};
    let d0 = od * ${S[0]} - ${P[0]}; let h0 = oh * ${S[1]} - ${P[1]}; let bw = ow0 * ${S[2]} - ${P[2]};
    let nc = n * ${u(C)} + c;
    let xc = nc * ${u(D * H * W)};
    let yb = nc * ${u(OD * OH * OW)} + u32(od * ${OH} + oh) * ${u(OW)} + u32(ow0);
    ${
      range(V).map((v) =>
        `let g${v} = select(0.0, gy_ld(min(yb + ${u(v)}, ${u(gy.numel() - 1)})), ow0 + ${v} < ${OW});`
      ).join(" ")
    }
    ${rows.join("\n    ")}
  }
  ${range(KK).map((k) => `red[${u(k * LANES)} + lid] = a${k};`).join(" ")}
  workgroupBarrier();
  if (lid < ${u(KK)}) {
    var t = 0.0;
    for (var i = 0u; i < ${u(LANES)}; i = i + 1u) { t = t + red[lid * ${u(LANES)} + i]; }
    gw_st((sg * ${u(C)} + c) * ${u(KK)} + lid, t);
  }`,
  });
  const r = segs === 1 ? part.reshape([C, KK]) : sum(part, 0);
  part.dispose();
  const out = r.reshape([C, 1, K[0], K[1], K[2]]);
  r.dispose();
  return out;
}

/**
 * Input gradient of a strided depthwise conv, split by the residue of the input position modulo the stride
 * ("sub-pixel" decomposition): within one residue class the set of taps that land on the output grid is the
 * same for every voxel, so each class is one dispatch with exactly those taps unrolled (about 27 / 8 taps
 * per voxel for stride 2, instead of 27 masked ones).
 */
function dwGradInputStrided(op: string, gy: Tensor, w: Tensor, g: Geo): Tensor {
  const { N, C, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const KK = K[0] * K[1] * K[2];
  const gx = Tensor.empty(gy.device, [N, C, D, H, W], "f32", op);
  const ins = [D, H, W], outs = [OD, OH, OW];
  // Valid taps of residue r along dim i: k with (r + P - k L) divisible by S; output offset (r + P - k L) / S.
  const taps = (i: number, r: number) => {
    const t: { k: number; off: number }[] = [];
    for (let k = 0; k < K[i]; k++) {
      const v = r + P[i] - k * L[i];
      if (((v % S[i]) + S[i]) % S[i] === 0) t.push({ k, off: Math.floor(v / S[i]) });
    }
    return t;
  };
  for (let rd = 0; rd < S[0]; rd++) {
    for (let rh = 0; rh < S[1]; rh++) {
      for (let rw = 0; rw < S[2]; rw++) {
        const r = [rd, rh, rw];
        const M = ins.map((n, i) => Math.max(0, Math.ceil((n - r[i]) / S[i])));
        const count = M[0] * M[1] * M[2];
        if (!count) continue;
        const td = taps(0, rd), th = taps(1, rh), tw = taps(2, rw);
        const lines: string[] = [];
        for (const a of td) {
          for (const b of th) {
            for (const c of tw) {
              const k = (a.k * K[1] + b.k) * K[2] + c.k;
              const o = [`md + ${a.off}`, `mh + ${b.off}`, `mw + ${c.off}`];
              const ok = o.map((e, i) => `(${e}) >= 0 && (${e}) < ${outs[i]}`).join(" && ");
              const idx = `u32((clamp(${o[0]}, 0, ${OD - 1}) * ${OH} + clamp(${o[1]}, 0, ${
                OH - 1
              })) * ${OW} + clamp(${o[2]}, 0, ${OW - 1}))`;
              lines.push(
                `acc = acc + w_ld(c * ${u(KK)} + ${u(k)}) * select(0.0, gy_ld(yb + ${idx}), ${ok});`,
              );
            }
          }
        }
        const st = Math.ceil(count / LANES);
        launch({
          op,
          args: [{ name: "gy", t: gy }, { name: "w", t: w }, { name: "gx", t: gx, write: true }],
          wg: LANES,
          groups: N * C * st,
          body: `  let sTile = wg % ${u(st)};
  let nc = wg / ${u(st)};
  let c = nc % ${u(C)};
  let m = sTile * ${u(LANES)} + lid;
  if (m >= ${u(count)}) { return; }
  ${split3("m", M[1], M[2], "md", "mh", "mw")}
  let yb = nc * ${u(OD * OH * OW)};
  var acc = 0.0;
  ${lines.join("\n  ")}
  let q = u32(((md * ${S[0]} + ${rd}) * ${H} + mh * ${S[1]} + ${rh}) * ${W} + mw * ${S[2]} + ${rw});
  gx_st(nc * ${u(D * H * W)} + q, acc);`,
        });
      }
    }
  }
  return gx;
}

/** Depthwise conv with its own kernels; the input gradient of a strided one uses the general kernel. */
function depthwise(op: string, x: Tensor, w: Tensor, b: Tensor | null, g: Geo): Tensor {
  const y = dwConv(op, x, w, b, [g.OD, g.OH, g.OW], g.K, g.S, g.P, g.L, false);
  const back = `${op}.backward`;
  return record(op, y, [x, w, b], [x, w], (gy, [sx, sw]) => {
    let gx: Tensor | null = null;
    if (x.requiresGrad) {
      // Stride 1: the input gradient is the correlation of gy with the flipped kernel, padded (K-1)*dil - pad.
      const Pf = g.K.map((k, i) => (k - 1) * g.L[i] - g.P[i]) as [number, number, number];
      gx = g.S.every((s) => s === 1) && Pf.every((p) => p >= 0)
        ? dwConv(back, gy, sw, null, [g.D, g.H, g.W], g.K, [1, 1, 1], Pf, g.L, true)
        : dwGradInputStrided(back, gy, sw, g);
    }
    return [
      gx,
      w.requiresGrad ? dwGradWeight(back, gy, sx, g) : null,
      b?.requiresGrad ? sum(gy, [0, 2, 3, 4]) : null,
    ];
  });
}

/** x[:, :, ::sd, ::sh, ::sw] as a new tensor (forward), or its adjoint: scatter into zeros (backward). */
function strided(
  op: string,
  src: Tensor,
  full: readonly number[],
  S: [number, number, number],
  adjoint: boolean,
): Tensor {
  const [N, C, D, H, W] = full;
  const OD = Math.ceil(D / S[0]), OH = Math.ceil(H / S[1]), OW = Math.ceil(W / S[2]);
  const out = Tensor.empty(src.device, adjoint ? full : [N, C, OD, OH, OW], "f32", op);
  const n = out.numel();
  const body = adjoint
    ? `  if (gid >= ${u(n)}) { return; }
  let r = gid % ${u(D * H * W)};
  ${split3("r", H, W, "d", "h", "w")}
  let ok = d % ${S[0]} == 0 && h % ${S[1]} == 0 && w % ${S[2]} == 0;
  let si = (gid / ${u(D * H * W)}) * ${u(OD * OH * OW)} + u32(d / ${S[0]}) * ${u(OH * OW)} + u32(h / ${
      S[1]
    }) * ${u(OW)} + u32(w / ${S[2]});
  out_st(gid, select(0.0, s_ld(min(si, ${u(src.numel() - 1)})), ok));`
    : `  if (gid >= ${u(n)}) { return; }
  let r = gid % ${u(OD * OH * OW)};
  ${split3("r", OH, OW, "d", "h", "w")}
  out_st(gid, s_ld((gid / ${u(OD * OH * OW)}) * ${u(D * H * W)} + u32(d * ${S[0]}) * ${u(H * W)} + u32(h * ${
      S[1]
    }) * ${u(W)} + u32(w * ${S[2]})));`;
  launch({
    op,
    args: [{ name: "s", t: src }, { name: "out", t: out, write: true }],
    wg: 64,
    groups: Math.ceil(n / 64),
    body,
  });
  return out;
}

/**
 * Pointwise (1x1x1, no padding, one group) convs are GEMMs over channels: y[n] = W (O x C) @ x[n] (C x S).
 * Strided ones first take the strided sample of x (and scatter it back in the gradient).
 */
function pointwise(op: string, x: Tensor, w: Tensor, b: Tensor | null, g: Geo): Tensor {
  const { N, C, O, OD, OH, OW, S } = g;
  const OS = OD * OH * OW;
  const strideOne = S.every((s) => s === 1);
  const xs = strideOne ? x : strided(op, x, x.shape, S, false);
  const w2 = w.reshape([O, C]);
  const xs3 = xs.reshape([N, C, OS]);
  const y3 = gemm(op, w2, xs3, false, false);
  let y = y3.reshape([N, O, OD, OH, OW]);
  y3.dispose();
  if (b) {
    const yb = map(op, [y, b.reshape([O, 1, 1, 1])], "f32", (v) => `${v[0]} + ${v[1]}`);
    y.dispose();
    y = yb;
  }
  w2.dispose();
  xs3.dispose();
  const xShape = x.shape;
  const out = record(op, y, [x, w, b], [xs, w], (gy, [sxs, sw]) => {
    const gy3 = gy.reshape([N, O, OS]);
    let gx: Tensor | null = null, gw: Tensor | null = null;
    if (x.requiresGrad) {
      const gxs = gemm(`${op}.backward`, sw.reshape([O, C]), gy3, true, false).reshape([N, C, OD, OH, OW]);
      gx = strideOne ? gxs : strided(`${op}.backward`, gxs, xShape, S, true);
    }
    if (w.requiresGrad) {
      const per = gemm(`${op}.backward`, gy3, sxs.reshape([N, C, OS]), false, true);
      gw = sum(per, 0).reshape([O, C, 1, 1, 1]);
    }
    return [gx, gw, b?.requiresGrad ? sum(gy, [0, 2, 3, 4]) : null];
  });
  if (!strideOne) xs.dispose();
  return out;
}

// ------------------------------------------------------------------------------------------ im2col
// On software adapters (profile "cpu") a general conv with one group runs faster as im2col + GEMM: the
// direct kernel is bound by per-lane loads (see docs/perf.md), the GEMM reuses each load 8x more. Columns
// are built for a chunk of output positions at a time, so the extra memory stays bounded.

const COL_FLOATS = 8 * 2 ** 20;

/** col[(c, k), j] = x[n, c, tap k of output position p0 + j] (0 outside the input). */
function im2col(op: string, x: Tensor, g: Geo, n: number, p0: number, len: number): Tensor {
  const { C, D, H, W, OH, OW, K, S, P, L } = g;
  const KK = K[0] * K[1] * K[2];
  const col = Tensor.empty(x.device, [C * KK, len], "f32", op);
  const total = C * KK * len;
  launch({
    op,
    args: [{ name: "x", t: x }, { name: "col", t: col, write: true }],
    wg: 64,
    groups: Math.ceil(total / 64),
    body: `  if (gid >= ${u(total)}) { return; }
  let j = gid % ${u(len)};
  let ck = gid / ${u(len)};
  let c = ck / ${u(KK)};
  let k = ck % ${u(KK)};
  let p = ${u(p0)} + j;
  ${split3("p", OH, OW, "od", "oh", "ow")}
  let kd = i32(k / ${u(K[1] * K[2])}); let kh = i32((k / ${u(K[2])}) % ${u(K[1])}); let kw = i32(k % ${
      u(K[2])
    });
  let id = od * ${S[0]} - ${P[0]} + kd * ${L[0]};
  let ih = oh * ${S[1]} - ${P[1]} + kh * ${L[1]};
  let iw = ow * ${S[2]} - ${P[2]} + kw * ${L[2]};
  ${vox(`(${u(n)} * ${u(C)} + c) * ${u(D * H * W)}`, "", D, H, W)}
  col_st(gid, select(0.0, x_ld(xi), ok));`,
  });
  return col;
}

/** Weight gradient of a one-group conv as chunks of gy @ col^T, summed over batch and chunks. */
function gradWeightIm2col(op: string, gy: Tensor, x: Tensor, g: Geo): Tensor {
  const { N, C, O, OD, OH, OW, K } = g;
  const KK = K[0] * K[1] * K[2], OS = OD * OH * OW;
  const chunk = Math.max(4, Math.min(OS, Math.floor(COL_FLOATS / (C * KK) / 4) * 4));
  let acc: Tensor | null = null;
  for (let n = 0; n < N; n++) {
    for (let p0 = 0; p0 < OS; p0 += chunk) {
      const len = Math.min(chunk, OS - p0);
      const col = im2col(op, x, g, n, p0, len);
      const gyc = Tensor.empty(gy.device, [O, len], "f32", op);
      slab(op, gy, gyc, O, len, OS, 1, p0, false, n * O * OS);
      const part = gemm(op, gyc, col, false, true);
      col.dispose();
      gyc.dispose();
      if (acc) {
        const sum2 = map(op, [acc, part], "f32", (v) => `${v[0]} + ${v[1]}`);
        acc.dispose();
        part.dispose();
        acc = sum2;
      } else acc = part;
    }
  }
  const r = acc!.reshape([O, C, K[0], K[1], K[2]]);
  acc!.dispose();
  return r;
}

/** Forward of a one-group conv as chunks of im2col + GEMM, written into y [N, O, OS]. */
function forwardIm2col(op: string, x: Tensor, w: Tensor, b: Tensor | null, g: Geo): Tensor {
  const { N, C, O, OD, OH, OW, K } = g;
  const KK = K[0] * K[1] * K[2], OS = OD * OH * OW;
  const y = Tensor.empty(x.device, [N, O, OD, OH, OW], "f32", op);
  const w2 = w.reshape([O, C * KK]);
  const chunk = Math.max(4, Math.min(OS, Math.floor(COL_FLOATS / (C * KK) / 4) * 4));
  for (let n = 0; n < N; n++) {
    for (let p0 = 0; p0 < OS; p0 += chunk) {
      const len = Math.min(chunk, OS - p0);
      const col = im2col(op, x, g, n, p0, len);
      const yc = gemm(op, w2, col, false, false);
      col.dispose();
      // y viewed as [N * O, OS]: rows n*O .. n*O+O-1, columns p0 .. p0+len.
      slab(op, yc, y, O, len, OS, 1, p0, true, n * O * OS);
      yc.dispose();
    }
  }
  w2.dispose();
  if (!b) return y;
  const yb = map(op, [y, b.reshape([O, 1, 1, 1])], "f32", (v) => `${v[0]} + ${v[1]}`);
  y.dispose();
  return yb;
}

/**
 * 3-D convolution with PyTorch `conv3d` semantics. x: [N, C, D, H, W]; w: [O, C/groups, kD, kH, kW];
 * b: [O] or null. `stride`, `padding`, `dilation` are ints or [d, h, w] triples. Differentiable in x, w, b.
 */
export function conv3d(x: Tensor, w: Tensor, b?: Tensor | null, opts: Conv3dOptions = {}): Tensor {
  const op = "F.conv3d";
  const g = geometry(op, x, w, b, opts);
  if (g.G === 1 && g.K.every((k) => k === 1) && g.P.every((p) => p === 0)) {
    return pointwise(op, x, w, b ?? null, g);
  }
  if (g.G === g.C && g.O === g.C && g.K[0] * g.K[1] * g.K[2] <= 64) return depthwise(op, x, w, b ?? null, g);
  const useIm2col = x.device.profile === "cpu" && g.G === 1 && g.K[0] * g.K[1] * g.K[2] > 1;
  const y = useIm2col ? forwardIm2col(op, x, w, b ?? null, g) : forward(op, x, w, b ?? null, g);
  return record(op, y, [x, w, b ?? null], [x, w], (gy, [sx, sw]) => [
    x.requiresGrad ? gradInput(`${op}.backward`, gy, sw, g) : null,
    w.requiresGrad ? (useIm2col ? gradWeightIm2col : gradWeight)(`${op}.backward`, gy, sx, g) : null,
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
