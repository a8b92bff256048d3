/**
 * @file Direct convs over quads of neighbouring output positions along W: the "cpu" profile's forward, input
 * gradient and weight gradient of one-group convs whose rows are whole vec4s (the CSN-UNet decoder's 3x3x3 and
 * (2+1)D 1x3x3 and 3x1x1 units; the stems' 3x7x7 at stride (1, 2, 2), forward and weight gradient).
 *
 * llvmpipe runs every load instruction lane by lane, about as dear for a vec4 as for a scalar and for a
 * workgroup-uniform address as for a per-lane one (docs/perf.md, "Where a lavapipe GEMM's time goes"), so
 * the rate of these kernels is set by their loads per multiply-add. The general direct kernel (direct.ts)
 * gathers one scalar per position and tap and loads one weight per row and tap: for a 3-wide kernel its 6 x 4
 * block takes 30 loads per (channel, kd, kh) for 72 multiply-adds. Here a lane owns 8 (or 4) neighbouring
 * positions of one row and loads the aligned vec4s of the source row that cover all of its W taps, and the
 * weights, packed as [channel, tap, row], come as vec4s of 4 rows: an 8 x 8 block takes 4 + 6 loads for 192
 * multiply-adds. The taps' values are the vec4s' components, fixed when the shader is generated. Forward and
 * input gradient multiply-add in the general kernel's order (channel, then the taps in index order), so their
 * results are bit-identical to it; the weight gradient sums in another order than im2col + GEMM.
 */
import { Tensor } from "../../core/tensor.ts";
import { sum } from "../reduce.ts";
import { launch, launch1d, u } from "../codegen.ts";
import { act, type Geo, LANES, range, split3, volUniforms } from "./common.ts";

/**
 * A dilation-1, one-group conv whose input and output rows are whole vec4s: its forward and weight gradient
 * run over quads (any stride: the stem's 3x7x7 at (1, 2, 2)); the input gradient too where
 * {@link direct4GradInputFits}.
 */
export function direct4Fits(g: Geo): boolean {
  const q = planes(g);
  return g.G === 1 && g.L.every((l) => l === 1) && q.W % 4 === 0 && q.OW % 4 === 0;
}

/** {@link direct4Fits} at stride 1: the input gradient is then a conv over quads too. */
export function direct4GradInputFits(g: Geo): boolean {
  return direct4Fits(g) && g.S.every((s) => s === 1);
}

/**
 * A conv with one tap and no padding in H and W (the (2+1)D units' 3x1x1) as one over [D, 1, H * W]: its
 * rows are whole planes, long and vec4-aligned even where W is 2 or 6.
 */
function planes(g: Geo): Geo {
  if (g.K[1] !== 1 || g.K[2] !== 1 || g.P[1] !== 0 || g.P[2] !== 0 || g.S[1] !== 1 || g.S[2] !== 1) return g;
  return { ...g, H: 1, W: g.H * g.W, OH: 1, OW: g.OH * g.OW };
}

/** What differs between the forward and the input gradient: the source volume, the weight's indexing, the tap sign. */
interface Direct4Spec {
  op: string;
  /** The source read by taps (x, or the output gradient). */
  src: Tensor;
  w: Tensor;
  bias: Tensor | null;
  relu: boolean;
  out: Tensor;
  /** Source [D, H, W] and output [D, H, W]. */
  srcDims: [number, number, number];
  outDims: [number, number, number];
  /** Channels summed over (the source's) and rows (the output's channels). */
  reduce: number;
  rows: number;
  /** +1: a source coordinate is out * stride + k - pad (forward); -1: out - k + pad (input gradient, stride 1). */
  sign: 1 | -1;
  S: [number, number, number];
  K: [number, number, number];
  P: [number, number, number];
  /** WGSL of the weight's flat index for row `r` (u32), summed channel `c` and tap `k`. */
  weightIndex: (r: string, c: string, k: string) => string;
}

/** A forward's weight [row = output channel, summed channel, tap] flat index (for {@link packWeights}). */
export function forwardWeightIndex(KK: number): Direct4Spec["weightIndex"] {
  return (r, c, k) => `(${r} * sh.nRed + ${c}) * ${u(KK)} + ${k}`;
}

/** An input gradient's weight index: rows are the input channels, the sum runs over the output channels. */
export function gradInputWeightIndex(KK: number): Direct4Spec["weightIndex"] {
  return (r, c, k) => `(${c} * sh.nRows + ${r}) * ${u(KK)} + ${k}`;
}

/** Direct forward over quads (see the file's comment); needs {@link direct4Fits}. */
export function direct4Forward(op: string, x: Tensor, w: Tensor, b: Tensor | null, geo: Geo): Tensor {
  const g = planes(geo);
  const out = Tensor.empty(x.device, [geo.N, geo.O, geo.OD, geo.OH, geo.OW], geo.dtype, op);
  const KK = g.K[0] * g.K[1] * g.K[2];
  direct4Kernel({
    op,
    src: x,
    w,
    bias: b,
    relu: g.relu,
    out,
    srcDims: [g.D, g.H, g.W],
    outDims: [g.OD, g.OH, g.OW],
    reduce: g.C,
    rows: g.O,
    sign: 1,
    S: g.S,
    K: g.K,
    P: g.P,
    weightIndex: forwardWeightIndex(KK),
  });
  return out;
}

/**
 * Direct input gradient over quads: the transposed conv as a gather, taps mirrored; needs
 * {@link direct4GradInputFits}.
 */
export function direct4GradInput(op: string, gy: Tensor, w: Tensor, geo: Geo): Tensor {
  const g = planes(geo);
  const gx = Tensor.empty(gy.device, [geo.N, geo.C, geo.D, geo.H, geo.W], "f32", op);
  const KK = g.K[0] * g.K[1] * g.K[2];
  direct4Kernel({
    op,
    src: gy,
    w,
    bias: null,
    relu: false,
    out: gx,
    srcDims: [g.OD, g.OH, g.OW],
    outDims: [g.D, g.H, g.W],
    reduce: g.O,
    rows: g.C,
    sign: -1,
    S: [1, 1, 1],
    K: g.K,
    P: g.P,
    weightIndex: gradInputWeightIndex(KK),
  });
  return gx;
}

/**
 * The W taps' offsets from a quad's first position, by position t (0..3) and tap kw: the vec4 blocks they
 * span (`blocks`, relative to the quad's own, in order) and, per (t, kw), the block and component;
 * and the WGSL of a row's loads: `name(b)` is block b's vec4, `bounds` binds each block's mask and clamped
 * index from the i32 `j` (the quad's own block in the source row) and `W4` (the row's vec4s), `loads(rb)`
 * loads the blocks of the row starting at vec4 `rb` (zeros where the row mask `ok` or the block's is false).
 */
export function quadTaps(kW: number, pad: number, sign: 1 | -1, positions = 4, stride = 1): {
  at: (t: number, kw: number) => [number, number];
  blocks: number[];
  name: (b: number) => string;
  bounds: string;
  loads: (rb: string) => string;
} {
  const off = (t: number, kw: number) => stride * t + sign * (kw - pad);
  const all = range(positions).flatMap((t) => range(kW).map((kw) => off(t, kw)));
  const lo = Math.floor(Math.min(...all) / 4), hi = Math.floor(Math.max(...all) / 4);
  const blocks = range(hi - lo + 1).map((i) => lo + i);
  const name = (b: number) => `xb${b < 0 ? `m${-b}` : b}`;
  return {
    at: (t, kw) => {
      const e = off(t, kw), blk = Math.floor(e / 4);
      return [blk, e - 4 * blk];
    },
    blocks,
    name,
    bounds: blocks.map((b) =>
      `let ok${name(b)} = j + ${b} >= 0 && j + ${b} < W4; let at${name(b)} = u32(clamp(j + ${b}, 0, W4 - 1));`
    ).join("\n  "),
    loads: (rb) =>
      blocks.map((b) =>
        `let ${name(b)} = select(vec4<f32>(0.0), x_ld(${rb} + at${name(b)}), ok && ok${name(b)});`
      ).join("\n    "),
  };
}

/** Register block: rows (output channels, a multiple of 4: the packed weights' vec4s) x positions (quads). */
function block(s: Direct4Spec): { R: number; Q: number } {
  // 8 rows x 8 positions measured best on Mesa 25 lavapipe for the decoder's 3x3x3, 1x3x3 and 3x1x1 (16-48
  // channels, 32^3): 2x the general kernel; 8x16 1.9x, 4x4 1.6x, 16x8 1.4x, 4x8 1.3x, 8x4 1.1x. A strided
  // stem's 7 taps over 6 source vec4s leave 4 rows better: the classifier's 3 -> 8 on 8 x 3x16x64x64 51 ms
  // against 60 for 8 rows (4 x 16 positions 60-77, 8 x 4 93).
  return { R: s.rows > 4 && s.S[2] === 1 ? 8 : 4, Q: s.outDims[2] % 8 === 0 ? 2 : 1 };
}

function direct4Kernel(s: Direct4Spec): void {
  const [sD, sH, sW] = s.srcDims, [oD, oH, oW] = s.outDims;
  const { R, Q } = block(s), rt = Math.ceil(s.rows / R);
  const KK = s.K[0] * s.K[1] * s.K[2], rowsPad = rt * R;
  const wp = packWeights(s, KK, rowsPad);
  const lanes = (oD * oH * oW) / (4 * Q), ct = Math.ceil(lanes / LANES);
  const N = s.src.shape[0];
  launch({
    op: s.op,
    args: packedArgs(s, wp),
    wg: LANES,
    groups: N * rt * ct,
    uniforms: {
      nCt: { d: ct },
      nRt: { d: rt },
      nRows: s.rows,
      nRed: s.reduce,
      nLanes: lanes,
      xW4: sW / 4,
      ...volUniforms("x", sD, sH, sW),
      ...volUniforms("o", oD, oH, oW),
    },
    work: { flops: 2 * N * s.rows * s.reduce * oD * oH * oW * KK },
    key: JSON.stringify([s.K, s.P, s.S, s.sign, !!s.bias, s.relu, R, Q, KK, rowsPad]),
    body: () => quadBody(s, R, Q, KK, rowsPad),
  });
  wp.dispose();
}

/** WGSL of {@link direct4Kernel}: `x` is the source, `w` the packed weights; a lane owns 4Q positions x R rows. */
function quadBody(s: Direct4Spec, R: number, Q: number, KK: number, rowsPad: number): string {
  const { at, name: xb, bounds, loads } = quadTaps(s.K[2], s.P[2], s.sign, 4 * Q, s.S[2]);
  const rs = range(R), ts = range(4 * Q);
  // Source coordinate along d or h for output coordinate `o` and tap `k`.
  const coord = (o: string, k: string, i: number) =>
    s.sign > 0 ? `${o} * ${s.S[i]} + ${k} - ${s.P[i]}` : `${o} - ${k} + ${s.P[i]}`;
  // Per W tap: the rows' weights as R / 4 vec4s, then R x 4Q multiply-adds on the blocks' components.
  const taps = range(s.K[2]).map((kw) => {
    const wts = range(R / 4).map((q) =>
      `let wv${q}_${kw} = w_ld(((c * ${u(KK)} + kb + ${u(kw)}) * ${u(rowsPad)} + r0) / 4u + ${u(q)});`
    );
    const fmas = rs.flatMap((r) =>
      ts.map((t) => {
        const [b, comp] = at(t, kw);
        return `a${r}_${t} = fma(wv${r >> 2}_${kw}[${r & 3}], ${xb(b)}[${comp}], a${r}_${t});`;
      })
    );
    return `${wts.join(" ")}\n        ${fmas.join(" ")}`;
  });
  const stores = rs.flatMap((r) =>
    range(Q).map((q) => {
      const v = range(4).map((i) => act(`a${r}_${4 * q + i}${s.bias ? ` + bias${r}` : ""}`, s.relu));
      return `if (r0 + ${r}u < sh.nRows) {${s.bias ? ` let bias${r} = b_ld(r0 + ${r}u);` : ""} ` +
        `out_st(((n * sh.nRows + r0 + ${r}u) * sh.oS) / 4u + ll * ${u(Q)} + ${u(q)}, vec4<f32>(${
          v.join(", ")
        })); }`;
    })
  );
  const xD = "i32(sh.xD)", xH = "i32(sh.xH)";
  return `${tileIndices("n", "lane")}
  let ll = min(lane, sh.nLanes - 1u);
  let p0 = ll * ${u(4 * Q)};
  ${split3("p0", "o", "od", "oh", "ow")}
  let j = ow / 4 * ${s.S[2]};
  let r0 = rTile * ${u(R)};
  ${rs.flatMap((r) => ts.map((t) => `var a${r}_${t} = 0.0;`)).join(" ")}
  let W4 = i32(sh.xW4);
  ${bounds}
  for (var c = 0u; c < sh.nRed; c = c + 1u) {
    let xc = (n * sh.nRed + c) * sh.xS;
    for (var kd = 0; kd < ${s.K[0]}; kd = kd + 1) {
      let id = ${coord("od", "kd", 0)};
      for (var kh = 0; kh < ${s.K[1]}; kh = kh + 1) {
        let ih = ${coord("oh", "kh", 1)};
        let ok = id >= 0 && id < ${xD} && ih >= 0 && ih < ${xH};
        let rb = (xc + u32(clamp(id, 0, ${xD} - 1)) * sh.xHW + u32(clamp(ih, 0, ${xH} - 1)) * sh.xW) / 4u;
        ${loads("rb")}
        let kb = u32((kd * ${s.K[1]} + kh) * ${s.K[2]});
        ${taps.join("\n        ")}
      }
    }
  }
  if (lane < sh.nLanes) {
    ${stores.join("\n    ")}
  }`;
}

/**
 * WGSL: a workgroup's (outer, row tile, column tile) from `wg` over the divisors nRt and nCt, and the lane's
 * column `lane` (both kernels launch outer x nRt x nCt workgroups of `lanes` lanes).
 */
function tileIndices(outer: string, lane: string, lanes = LANES): string {
  return `  let r1 = div_nCt(wg);
  let cTile = wg - r1 * sh.nCt;
  let ${outer} = div_nRt(r1);
  let rTile = r1 - ${outer} * sh.nRt;
  let ${lane} = cTile * ${u(lanes)} + lid;`;
}

/** The bindings of a kernel over packed weights: source and output as vec4s (plane.ts's too). */
export function packedArgs(s: Pick<Direct4Spec, "src" | "bias" | "out">, wp: Tensor) {
  return [
    { name: "x", t: s.src, vec4: true },
    { name: "w", t: wp, vec4: true },
    ...(s.bias ? [{ name: "b", t: s.bias }] : []),
    { name: "out", t: s.out, write: true, vec4: true },
  ];
}

/**
 * The weights as [reduced channel, tap, row] with the rows padded with zeros to `rowsPad`: a tap's rows are
 * vec4s (plane.ts packs its weights the same way).
 */
export function packWeights(
  s: Pick<Direct4Spec, "op" | "w" | "reduce" | "rows" | "weightIndex">,
  KK: number,
  rowsPad: number,
): Tensor {
  const out = Tensor.empty(s.w.device, [s.reduce, KK, rowsPad], "f32", s.op);
  launch1d({
    op: `${s.op} weights`,
    args: [{ name: "w", t: s.w }, { name: "out", t: out, write: true }],
    n: out.numel(),
    uniforms: { nRows: s.rows, nRed: s.reduce, nPad: { d: rowsPad }, nKK: { d: KK } },
    body: `  let q = div_nPad(gid); let r = gid - q * sh.nPad; let c = div_nKK(q); let k = q - c * sh.nKK;
  let v = w_ld(${s.weightIndex(`min(r, sh.nRows - 1u)`, "c", "k")});
  out_st(gid, select(0.0, v, r < sh.nRows));`,
  });
  return out;
}

/**
 * Direct weight gradient over quads: gw[o, c, k] = sum over (n, p) of gy[n, o, p] * x[n, c, p + k - pad]. A
 * lane owns one (c, kd) and all of its kH x kW taps (one (c, kd, kh) and its kW taps for kernels over 3 x 3;
 * one c and all of its kD taps for a 3x1x1, whose single tap per kd gave a lane too few multiply-adds per
 * load) for R output channels; the workgroup walks a segment of output rows quad by quad, whose R gradient vec4s
 * are the same for every lane, and each lane loads the vec4s of its source rows that cover the quad's taps.
 * Segments' partial sums are added by a reduction (no atomics). Needs {@link direct4Fits}.
 */
export function direct4GradWeight(op: string, gy: Tensor, x: Tensor, geo: Geo): Tensor {
  const g = planes(geo);
  const { N, C, O, K } = g;
  // 4 rows x 9 taps measured best for the 3x3x3 and 1x3x3 (2.4-2.6x im2col + GEMM on Mesa 25 lavapipe;
  // 8 rows, or one kh per lane, 1.3-2x).
  const Hl = K[1] * K[2] <= 9 ? K[1] : 1, Dl = K[1] * K[2] === 1 ? K[0] : 1;
  const R = Math.min(Dl * Hl * K[2] >= 7 ? 4 : 8, Math.ceil(O / 4) * 4);
  const rt = Math.ceil(O / R), cols = C * (K[0] / Dl) * (K[1] / Hl);
  // Workgroups no wider than the columns (in SIMD-8 steps): a 3x1x1's lane per channel leaves few of them.
  const wg = Math.min(LANES, Math.ceil(cols / 8) * 8), ct = Math.ceil(cols / wg);
  const rows = N * g.OD * g.OH;
  // Enough segments to keep every core busy, each about 256 quads long to amortise its partial sums.
  const segs = Math.max(1, Math.min(Math.floor(4096 / (rt * ct)), Math.ceil((rows * g.OW) / 4 / 256)));
  const part = Tensor.empty(gy.device, [segs, O, C, K[0], K[1], K[2]], "f32", op);
  launch({
    op,
    args: [{ name: "gy", t: gy, vec4: true }, { name: "x", t: x, vec4: true }, {
      name: "part",
      t: part,
      write: true,
    }],
    wg,
    groups: segs * rt * ct,
    uniforms: {
      nCt: { d: ct },
      nRt: { d: rt },
      nCols: cols,
      O,
      C,
      seg: Math.ceil(rows / segs),
      rows,
      oDH: { d: g.OD * g.OH },
      oHd: { d: g.OH },
      oW4: g.OW / 4,
      xW4: g.W / 4,
      ...volUniforms("x", g.D, g.H, g.W),
      ...volUniforms("o", g.OD, g.OH, g.OW),
    },
    work: { flops: 2 * N * O * C * g.OD * g.OH * g.OW * K[0] * K[1] * K[2] },
    key: JSON.stringify(["dw", g.K, g.P, g.S, R, Hl, Dl, wg]),
    body: () => gradWeightBody(g, R, Hl, Dl, wg),
  });
  if (segs === 1) return part.reshape([O, C, K[0], K[1], K[2]]);
  const r = sum(part, 0);
  part.dispose();
  return r;
}

/**
 * WGSL of {@link direct4GradWeight}: accumulators a<row>_<kd>_<kh>_<kw>, x blocks xb<kd>_<kh>_<block>; Dl kd
 * and Hl kh taps a lane.
 */
function gradWeightBody(g: Geo, R: number, Hl: number, Dl: number, wg: number): string {
  const { K, P, S } = g, KK = K[0] * K[1] * K[2], groups = K[1] / Hl, dGroups = K[0] / Dl;
  const { blocks, at } = quadTaps(K[2], P[2], 1, 4, S[2]);
  const rs = range(R), kws = range(K[2]), khs = range(Hl), kds = range(Dl);
  // The lane's (kd, kh) source rows, in the order their taps are stored.
  const taps = kds.flatMap((d) => khs.map((h) => [d, h] as const));
  const bn = (b: number) => (b < 0 ? `m${-b}` : `${b}`);
  const xb = (d: number, h: number, b: number) => `xb${d}_${h}_${bn(b)}`;
  const acc = (r: number, d: number, h: number, kw: number) => `a${r}_${d}_${h}_${kw}`;
  const fmas = rs.flatMap((r) =>
    taps.flatMap(([d, h]) =>
      kws.flatMap((kw) =>
        range(4).map((t) => {
          const [b, comp] = at(t, kw);
          return `${acc(r, d, h, kw)} = fma(gv${r}[${t}], ${xb(d, h, b)}[${comp}], ${acc(r, d, h, kw)});`;
        })
      )
    )
  );
  const stores = rs.map((r) =>
    `if (r0 + ${r}u < sh.O) { let ob = ((sg * sh.O + r0 + ${r}u) * sh.C + cc) * ${u(KK)} + kb; ${
      taps.flatMap(([d, h]) =>
        kws.map((kw) => `part_st(ob + ${u((d * K[1] + h) * K[2] + kw)}, ${acc(r, d, h, kw)});`)
      ).join(" ")
    } }`
  );
  const xD = "i32(sh.xD)", xH = "i32(sh.xH)";
  const depthAt = kds.map((d) =>
    `let id${d} = od * ${S[0]} + kd0 + ${d - P[0]};
    let okd${d} = id${d} >= 0 && id${d} < ${xD};
    let rbd${d} = ((n * sh.C + cc) * sh.xS + u32(clamp(id${d}, 0, ${xD} - 1)) * sh.xHW) / 4u;`
  );
  const rowsAt = taps.map(([d, h]) =>
    `let ih${d}_${h} = oh * ${S[1]} + kh0 + ${h - P[1]};
    let ok${d}_${h} = okd${d} && ih${d}_${h} >= 0 && ih${d}_${h} < ${xH};
    let rb${d}_${h} = rbd${d} + u32(clamp(ih${d}_${h}, 0, ${xH} - 1)) * sh.xW / 4u;`
  );
  const blockLoads = taps.flatMap(([d, h]) =>
    blocks.map((b) =>
      `let ${xb(d, h, b)} = select(vec4<f32>(0.0), x_ld(rb${d}_${h} + u32(clamp(js + ${b}, 0, W4 - 1))), ` +
      `ok${d}_${h} && okj${bn(b)});`
    )
  );
  return `${tileIndices("sg", "col", wg)}
  let cl = min(col, sh.nCols - 1u);
  let cc = cl / ${u(dGroups * groups)};
  let kdg = cl - cc * ${u(dGroups * groups)};
  let kd0 = i32(kdg / ${u(groups)}) * ${Dl};
  let kh0 = i32(kdg % ${u(groups)}) * ${Hl};
  let kb = u32(kd0 * ${K[1]} + kh0) * ${u(K[2])};
  let r0 = rTile * ${u(R)};
  ${rs.map((r) => `let row${r} = min(r0 + ${r}u, sh.O - 1u);`).join(" ")}
  ${rs.flatMap((r) => taps.flatMap(([d, h]) => kws.map((kw) => `var ${acc(r, d, h, kw)} = 0.0;`))).join(" ")}
  let W4 = i32(sh.xW4);
  let W4o = i32(sh.oW4);
  let e0 = sg * sh.seg;
  let e1 = min(e0 + sh.seg, sh.rows);
  for (var e = e0; e < e1; e = e + 1u) {
    let n = div_oDH(e);
    let dh = e - n * sh.oDH;
    let od = i32(div_oHd(dh));
    let oh = i32(dh) - od * i32(sh.oH);
    ${depthAt.join("\n    ")}
    ${rowsAt.join("\n    ")}
    let gb = ((n * sh.O) * sh.oS + u32(od) * sh.oHW + u32(oh) * sh.oW) / 4u;
    for (var j = 0; j < W4o; j = j + 1) {
      let js = j * ${S[2]};
      ${blocks.map((b) => `let okj${bn(b)} = js + ${b} >= 0 && js + ${b} < W4;`).join(" ")}
      ${blockLoads.join("\n      ")}
      ${rs.map((r) => `let gv${r} = gy_ld(gb + row${r} * sh.oS / 4u + u32(j));`).join(" ")}
      ${fmas.join(" ")}
    }
  }
  if (col < sh.nCols) {
    ${stores.join("\n    ")}
  }`;
}
