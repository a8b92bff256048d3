/**
 * @file Direct convs over whole planes of 4 positions: the "cpu" profile's forward and input gradient of
 * one-group, stride-1 convs whose input and output H x W planes hold 4 positions each but whose rows are not
 * whole vec4s (the CSN-UNet's bottom, 2 x 2 planes under 1x3x3 and 3x3x3 kernels), which the quads of
 * direct4.ts cannot take.
 *
 * On a 2 x 2 plane most taps of a 3 x 3 kernel fall into the padding, and the general direct kernel, which
 * gathers one scalar per position and tap and checks its bounds, ran them at about 1 GFLOP/s. Here a plane is
 * one vec4: a lane loads it once per (channel, kd) for each of its Q planes, and for each (kh, kw) tap adds
 * the weight's 4 rows (one vec4 of the weights packed as [channel, tap, row], direct4.ts) times the source
 * component to the accumulator of every output position the tap reaches from it. Which (output, source)
 * position pairs a tap joins is fixed when the shader is generated, so the padding costs nothing. Sums run in
 * the direct kernel's order (channel, then the taps in index order; the skipped products are exact zeros),
 * so the outputs are bit-identical to it.
 */
import { Tensor } from "../../core/tensor.ts";
import { launch, u } from "../codegen.ts";
import { act, type Geo, range } from "./common.ts";
import { forwardWeightIndex, gradInputWeightIndex, packedArgs, packWeights } from "./direct4.ts";

/** A one-group, stride-1, dilation-1 conv whose input and output planes are 4 positions each. */
export function planeFits(g: Geo): boolean {
  return g.G === 1 && g.S.every((s) => s === 1) && g.L.every((l) => l === 1) && g.H * g.W === 4 &&
    g.OH * g.OW === 4;
}

/** What differs between the forward and the input gradient (see direct4.ts's Direct4Spec). */
interface PlaneSpec {
  op: string;
  src: Tensor;
  w: Tensor;
  bias: Tensor | null;
  relu: boolean;
  out: Tensor;
  /** Planes along D of the source and of the output; the planes' H x W (source, output). */
  srcD: number;
  outD: number;
  srcHW: [number, number];
  outHW: [number, number];
  reduce: number;
  rows: number;
  /** +1: source coordinate out + k - pad (forward); -1: out - k + pad (input gradient). */
  sign: 1 | -1;
  K: [number, number, number];
  P: [number, number, number];
  weightIndex: (r: string, c: string, k: string) => string;
}

/** Direct forward over planes; needs {@link planeFits}. */
export function planeForward(op: string, x: Tensor, w: Tensor, b: Tensor | null, g: Geo): Tensor {
  const out = Tensor.empty(x.device, [g.N, g.O, g.OD, g.OH, g.OW], g.dtype, op);
  const KK = g.K[0] * g.K[1] * g.K[2];
  planeKernel({
    op,
    src: x,
    w,
    bias: b,
    relu: g.relu,
    out,
    srcD: g.D,
    outD: g.OD,
    srcHW: [g.H, g.W],
    outHW: [g.OH, g.OW],
    reduce: g.C,
    rows: g.O,
    sign: 1,
    K: g.K,
    P: g.P,
    weightIndex: forwardWeightIndex(KK),
  });
  return out;
}

/** Direct input gradient over planes (the transposed conv as a gather, taps mirrored); needs {@link planeFits}. */
export function planeGradInput(op: string, gy: Tensor, w: Tensor, g: Geo): Tensor {
  const gx = Tensor.empty(gy.device, [g.N, g.C, g.D, g.H, g.W], "f32", op);
  const KK = g.K[0] * g.K[1] * g.K[2];
  planeKernel({
    op,
    src: gy,
    w,
    bias: null,
    relu: false,
    out: gx,
    srcD: g.OD,
    outD: g.D,
    srcHW: [g.OH, g.OW],
    outHW: [g.H, g.W],
    reduce: g.O,
    rows: g.C,
    sign: -1,
    K: g.K,
    P: g.P,
    weightIndex: gradInputWeightIndex(KK),
  });
  return gx;
}

/**
 * For tap (kh, kw): the (output position, source position) pairs it joins within a plane, as flat indices
 * h * W + w, in output order.
 */
export function planePairs(s: Pick<PlaneSpec, "srcHW" | "outHW" | "sign" | "P">, kh: number, kw: number): [
  number,
  number,
][] {
  const [sH, sW] = s.srcHW, [oH, oW] = s.outHW;
  const pairs: [number, number][] = [];
  for (let oh = 0; oh < oH; oh++) {
    for (let ow = 0; ow < oW; ow++) {
      const ih = oh + s.sign * (kh - s.P[1]), iw = ow + s.sign * (kw - s.P[2]);
      if (ih >= 0 && ih < sH && iw >= 0 && iw < sW) pairs.push([oh * oW + ow, ih * sW + iw]);
    }
  }
  return pairs;
}

/** Lanes per workgroup: few, so that the few lanes of a bottom conv still spread over every core. */
const WG = 8;

function planeKernel(s: PlaneSpec): void {
  const N = s.src.shape[0];
  // 4 rows (one packed vec4) x 4 planes: 9 + 4 loads per (channel, kd) for up to 256 multiply-adds.
  const R = 4, Q = Math.min(4, N * s.outD);
  const rt = Math.ceil(s.rows / R), pt = Math.ceil((N * s.outD) / Q);
  const KK = s.K[0] * s.K[1] * s.K[2], rowsPad = rt * R;
  const wp = packWeights(s, KK, rowsPad);
  const lanes = rt * pt;
  launch({
    op: s.op,
    args: packedArgs(s, wp),
    wg: WG,
    groups: Math.ceil(lanes / WG),
    uniforms: { nRows: s.rows, nRed: s.reduce, nLanes: lanes, nPt: { d: pt }, xD: s.srcD, oD: { d: s.outD } },
    work: { flops: 2 * N * s.rows * s.reduce * s.outD * 4 * KK },
    // The batch is in the source (planes count N x D).
    key: JSON.stringify([s.K, s.P, s.sign, s.srcHW, s.outHW, !!s.bias, s.relu, Q, KK, rowsPad, N]),
    body: () => planeBody(s, Q, KK, rowsPad),
  });
  wp.dispose();
}

/** WGSL of {@link planeKernel}: a lane owns 4 rows x Q planes (consecutive along N x D) of 4 positions. */
function planeBody(s: PlaneSpec, Q: number, KK: number, rowsPad: number): string {
  const qs = range(Q), ps = range(4);
  const taps = range(s.K[1] * s.K[2]).map((t) => {
    const pairs = planePairs(s, Math.floor(t / s.K[2]), t % s.K[2]);
    if (!pairs.length) return "";
    const fmas = qs.flatMap((q) =>
      pairs.map(([o, i]) => `a${q}_${o} = fma(wv, vec4<f32>(x${q}[${i}]), a${q}_${o});`)
    );
    return `{ let wv = w_ld((c * ${u(KK)} + kb + ${u(t)}) * ${u(rowsPad / 4)} + rt); ${fmas.join(" ")} }`;
  });
  // Rows r0..r0+3 of plane q: output position p of row i is component i of accumulator a{q}_{p}.
  const stores = qs.flatMap((q) =>
    range(4).map((i) => {
      const v = ps.map((p) => act(`a${q}_${p}[${i}]${s.bias ? ` + bias${i}` : ""}`, s.relu));
      return `if (r0 + ${i}u < sh.nRows && pl${q} < nPl) {${
        s.bias ? ` let bias${i} = b_ld(r0 + ${i}u);` : ""
      } out_st((n${q} * sh.nRows + r0 + ${i}u) * sh.oD + od${q}, vec4<f32>(${v.join(", ")})); }`;
    })
  );
  const coord = (o: string) => s.sign > 0 ? `i32(${o}) + kd - ${s.P[0]}` : `i32(${o}) - kd + ${s.P[0]}`;
  return `  let lane = min(gid, sh.nLanes - 1u);
  let rt = div_nPt(lane);
  let pt = lane - rt * sh.nPt;
  let r0 = rt * 4u;
  let nPl = ${u(s.src.shape[0])} * sh.oD;
  ${
    qs.map((q) =>
      `let pl${q} = pt * ${u(Q)} + ${u(q)}; let n${q} = div_oD(min(pl${q}, nPl - 1u)); ` +
      `let od${q} = min(pl${q}, nPl - 1u) - n${q} * sh.oD;`
    ).join("\n  ")
  }
  ${qs.flatMap((q) => ps.map((p) => `var a${q}_${p} = vec4<f32>(0.0);`)).join(" ")}
  for (var c = 0u; c < sh.nRed; c = c + 1u) {
    for (var kd = 0; kd < ${s.K[0]}; kd = kd + 1) {
      ${
    qs.map((q) =>
      `let id${q} = ${coord(`od${q}`)}; let x${q} = select(vec4<f32>(0.0), ` +
      `x_ld((n${q} * sh.nRed + c) * sh.xD + u32(clamp(id${q}, 0, i32(sh.xD) - 1))), id${q} >= 0 && id${q} < i32(sh.xD));`
    ).join("\n      ")
  }
      let kb = u32(kd * ${s.K[1] * s.K[2]});
      ${taps.filter((t) => t).join("\n      ")}
    }
  }
  if (gid < sh.nLanes) {
    ${stores.join("\n    ")}
  }`;
}
