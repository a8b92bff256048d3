/**
 * @file Depthwise conv: groups == in == out channels (the CSN's channel-separated 3x3x3), forward, input
 * gradient and weight gradient. Each lane computes V outputs along W and loads every input value of a
 * kernel row once into registers (6 loads feed 12 multiply-adds for a 3-wide, stride-1 kernel); the KK
 * weights of its channel are loaded once.
 */
import { Tensor } from "../../core/tensor.ts";
import { launch, u, type Uniforms } from "../codegen.ts";
import { sum } from "../reduce.ts";
import { act, type Geo, LANES, range, split3, V, volUniforms } from "./common.ts";
import { quadTaps } from "./direct4.ts";

type Dims = [number, number, number];

/** Distinct W offsets (relative to the first output's window start) needed by V outputs. */
function rowOffsets(K: number, S: number, Ld: number): number[] {
  const set = new Set<number>();
  for (let v = 0; v < V; v++) for (let k = 0; k < K; k++) set.add(v * S + k * Ld);
  return [...set].sort((a, b) => a - b);
}

/**
 * Uniforms of the strips of V outputs along W over an [OD, OH, OW] output (see {@link stripCoords}): sizes
 * travel as uniforms, so one pipeline serves every layer shape with the same kernel, stride and padding.
 */
function stripUniforms(OD: number, OH: number, OW: number): Uniforms {
  const strips = Math.ceil(OW / V);
  return { sHS: { d: OH * strips }, strips: { d: strips }, OH, OW, yS: OD * OH * OW, OSs: OD * OH * strips };
}

/**
 * WGSL: coordinates of the strip of V outputs along W with flat index `s` over [OD, OH, strips]: `od`,
 * `oh`, the first column `ow0`, and the input window starts `d0`, `h0`, `bw`.
 */
function stripCoords(s: string, S: Dims, P: Dims): string {
  return `let od_q = div_sHS(${s}); let od_r = ${s} - od_q * sh.sHS; let oh_q = div_strips(od_r);
  let od = i32(od_q); let oh = i32(oh_q); let ow0 = i32(od_r - oh_q * sh.strips) * ${V};
  let d0 = od * ${S[0]} - ${P[0]}; let h0 = oh * ${S[1]} - ${P[1]}; let bw = ow0 * ${S[2]} - ${P[2]};`;
}

/**
 * WGSL: one block per kernel row (kd, kh) that loads the row's distinct inputs `x<offset>` of the
 * [D, H, W] volume at `xc` once (masked, clamped address) and then runs `fmas(kd, kh)` on them.
 */
function rowBlocks(
  K: Dims,
  S: Dims,
  L: Dims,
  fmas: (kd: number, kh: number) => string,
): string {
  const loads = rowOffsets(K[2], S[2], L[2]).map((o) =>
    `let x${o} = select(0.0, x_ld(rb + u32(clamp(bw + ${o}, 0, xW - 1))), okr && bw + ${o} >= 0 && bw + ${o} < xW);`
  ).join("\n    ");
  const rows: string[] = [];
  for (let kd = 0; kd < K[0]; kd++) {
    for (let kh = 0; kh < K[1]; kh++) {
      rows.push(`{
    let id = d0 + ${kd * L[0]}; let ih = h0 + ${kh * L[1]};
    let okr = id >= 0 && id < xD && ih >= 0 && ih < xH;
    let rb = xc + u32(clamp(id, 0, xD - 1)) * sh.xHW + u32(clamp(ih, 0, xH - 1)) * sh.xW;
    ${loads}
    ${fmas(kd, kh)}
  }`);
    }
  }
  return `let xD = i32(sh.xD); let xH = i32(sh.xH); let xW = i32(sh.xW);
  ${rows.join("\n  ")}`;
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
  out: Dims,
  K: Dims,
  S: Dims,
  P: Dims,
  L: Dims,
  flip: boolean,
  relu = false,
  dtype: "f32" | "f16" = "f32",
): Tensor {
  const [N, C, D, H, W] = x.shape;
  const [OD, OH, OW] = out;
  const KK = K[0] * K[1] * K[2];
  const y = Tensor.empty(x.device, [N, C, OD, OH, OW], dtype, op);
  if (quadsFit(x, out, S, L, dtype)) {
    dwConvQuads(op, x, w, b, y, K, P, flip, relu);
    return y;
  }
  const strips = Math.ceil(OW / V), OSs = OD * OH * strips, st = Math.ceil(OSs / LANES);
  const widx = (kd: number, kh: number, kw: number) => {
    const k = (kd * K[1] + kh) * K[2] + kw;
    return flip ? KK - 1 - k : k;
  };
  const rows = () =>
    rowBlocks(K, S, L, (kd, kh) => {
      const fmas: string[] = [];
      for (let v = 0; v < V; v++) {
        for (let kw = 0; kw < K[2]; kw++) {
          fmas.push(`a${v} = fma(w${widx(kd, kh, kw)}, x${v * S[2] + kw * L[2]}, a${v});`);
        }
      }
      return fmas.join(" ");
    });
  const args = [{ name: "x", t: x }, { name: "w", t: w }, { name: "y", t: y, write: true }];
  if (b) args.splice(2, 0, { name: "b", t: b });
  launch({
    op,
    args,
    wg: LANES,
    groups: N * C * st,
    uniforms: { st: { d: st }, C: { d: C }, ...volUniforms("x", D, H, W), ...stripUniforms(OD, OH, OW) },
    key: `dwConv ${K} ${S} ${P} ${L} ${flip} ${relu}`,
    body: () =>
      `  let nc = div_st(wg);
  let sTile = wg - nc * sh.st;
  let c = mod_C(nc);
  let s = sTile * ${u(LANES)} + lid;
  let sc = min(s, sh.OSs - 1u);
  ${stripCoords("sc", S, P)}
  let xc = nc * sh.xS;
  ${range(KK).map((k) => `let w${k} = w_ld(c * ${u(KK)} + ${u(k)});`).join(" ")}
  ${range(V).map((v) => `var a${v} = 0.0;`).join(" ")}
  ${rows()}
  if (s < sh.OSs) {
    let yb = nc * sh.yS + u32(od * i32(sh.OH) + oh) * sh.OW + u32(ow0);
    ${
        range(V).map((v) =>
          `if (ow0 + ${v} < i32(sh.OW)) { y_st(yb + ${u(v)}, ${
            act(`a${v}${b ? " + b_ld(c)" : ""}`, relu)
          }); }`
        )
          .join("\n    ")
      }
  }`,
  });
  return y;
}

/**
 * Whether {@link dwConvQuads} takes a depthwise conv: the "cpu" profile, stride and dilation 1, f32, input and
 * output rows whole vec4s.
 */
function quadsFit(x: Tensor, out: Dims, S: Dims, L: Dims, dtype: string): boolean {
  return x.device.profile === "cpu" && x.dtype === "f32" && dtype === "f32" && x.shape[4] % 4 === 0 &&
    out[2] % 4 === 0 && [...S, ...L].every((v) => v === 1);
}

/**
 * {@link dwConv} over quads of positions (kernels/conv/direct4.ts's idea for one channel): a lane owns 16, 8 or
 * 4 neighbouring outputs of one row and loads the aligned vec4s of each source row that cover all of their W
 * taps, 6 loads a row for 16 outputs of a 3-wide kernel instead of 6 scalar ones for 4; llvmpipe pays per
 * load instruction, vec4 or scalar. Each output sums its taps in dwConv's order: bit-identical to it. On
 * Mesa 25 lavapipe, 3x3x3 at batch 8: 8 channels of 16^3 5.1 -> 3.0 ms, 16 of 8^3 1.8 -> 1.4-1.6 ms; 2 x 16
 * channels of 32^3 18 -> 9-10 ms (32 outputs a lane: no better).
 */
function dwConvQuads(
  op: string,
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  y: Tensor,
  K: Dims,
  P: Dims,
  flip: boolean,
  relu: boolean,
): void {
  const [N, C, D, H, W] = x.shape;
  const [, , OD, OH, OW] = y.shape;
  const KK = K[0] * K[1] * K[2];
  const Q = OW % 16 === 0 ? 4 : OW % 8 === 0 ? 2 : 1, T = 4 * Q;
  const lanes = (OD * OH * OW) / T, st = Math.ceil(lanes / LANES);
  const { at, name: xb, bounds, loads } = quadTaps(K[2], P[2], 1, T);
  const widx = (kd: number, kh: number, kw: number) => {
    const k = (kd * K[1] + kh) * K[2] + kw;
    return flip ? KK - 1 - k : k;
  };
  const rowsOf = (): string[] => {
    const rows: string[] = [];
    for (let kd = 0; kd < K[0]; kd++) {
      for (let kh = 0; kh < K[1]; kh++) {
        const fmas = range(T).flatMap((t) =>
          range(K[2]).map((kw) => {
            const [blk, comp] = at(t, kw);
            return `a${t} = fma(w${widx(kd, kh, kw)}, ${xb(blk)}[${comp}], a${t});`;
          })
        );
        rows.push(`{
    let id = od + ${kd - P[0]}; let ih = oh + ${kh - P[1]};
    let ok = id >= 0 && id < xD && ih >= 0 && ih < xH;
    let rb = (xc + u32(clamp(id, 0, xD - 1)) * sh.xHW + u32(clamp(ih, 0, xH - 1)) * sh.xW) / 4u;
    ${loads("rb")}
    ${fmas.join(" ")}
  }`);
      }
    }
    return rows;
  };
  const args = [
    { name: "x", t: x, vec4: true },
    { name: "w", t: w },
    ...(b ? [{ name: "b", t: b }] : []),
    { name: "y", t: y, write: true, vec4: true },
  ];
  launch({
    op,
    args,
    wg: LANES,
    groups: N * C * st,
    uniforms: {
      st: { d: st },
      C: { d: C },
      nLanes: lanes,
      ...volUniforms("x", D, H, W),
      ...volUniforms("o", OD, OH, OW),
    },
    key: `dwConvQuads ${K} ${P} ${flip} ${relu} ${Q}`,
    body: () =>
      `  let nc = div_st(wg);
  let lane = (wg - nc * sh.st) * ${u(LANES)} + lid;
  let c = mod_C(nc);
  let ll = min(lane, sh.nLanes - 1u);
  ${split3(`ll * ${u(T)}`, "o", "od", "oh", "ow")}
  let j = ow / 4;
  let xD = i32(sh.xD); let xH = i32(sh.xH); let W4 = i32(sh.xW / 4u);
  let xc = nc * sh.xS;
  ${bounds}
  ${range(KK).map((k) => `let w${k} = w_ld(c * ${u(KK)} + ${u(k)});`).join(" ")}
  ${range(T).map((t) => `var a${t} = 0.0;`).join(" ")}
  ${rowsOf().join("\n  ")}
  if (lane < sh.nLanes) {
    ${b ? "let bc = b_ld(c);" : ""}
    ${
        range(Q).map((q) =>
          `y_st((nc * sh.oS + ll * ${u(T)}) / 4u + ${u(q)}, vec4<f32>(${
            range(4).map((i) => act(`a${4 * q + i}${b ? " + bc" : ""}`, relu)).join(", ")
          }));`
        ).join("\n    ")
      }
  }`,
  });
}

/** Depthwise forward. */
export function depthwiseForward(op: string, x: Tensor, w: Tensor, b: Tensor | null, g: Geo): Tensor {
  return dwConv(op, x, w, b, [g.OD, g.OH, g.OW], g.K, g.S, g.P, g.L, false, g.relu, g.dtype);
}

/** gw[c, k] = sum over n and outputs of gy * x at the tap's input position; segments reduced afterwards. */
export function depthwiseGradWeight(op: string, gy: Tensor, x: Tensor, g: Geo): Tensor {
  const { N, C, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const KK = K[0] * K[1] * K[2];
  const strips = Math.ceil(OW / V), total = N * OD * OH * strips;
  const segs = Math.max(1, Math.min(Math.ceil(4096 / C), Math.ceil(total / (4 * LANES))));
  const seg = Math.ceil(total / segs);
  const part = Tensor.empty(gy.device, [segs, C, KK], "f32", op);
  const rows = () =>
    rowBlocks(K, S, L, (kd, kh) => {
      const fmas: string[] = [];
      for (let kw = 0; kw < K[2]; kw++) {
        const k = (kd * K[1] + kh) * K[2] + kw;
        for (let v = 0; v < V; v++) fmas.push(`a${k} = fma(g${v}, x${v * S[2] + kw * L[2]}, a${k});`);
      }
      return fmas.join(" ");
    });
  launch({
    op,
    args: [{ name: "gy", t: gy }, { name: "x", t: x }, { name: "gw", t: part, write: true }],
    wg: LANES,
    groups: segs * C,
    uniforms: {
      C: { d: C },
      seg,
      total,
      eS: { d: OD * OH * strips },
      gyLast: gy.numel() - 1,
      ...volUniforms("x", D, H, W),
      ...stripUniforms(OD, OH, OW),
    },
    decls: `var<workgroup> red: array<f32, ${KK * LANES}>;`,
    key: `dwGradWeight ${K} ${S} ${P} ${L}`,
    body: () =>
      `  let sg = div_C(wg);
  let c = wg - sg * sh.C;
  ${range(KK).map((k) => `var a${k} = 0.0;`).join(" ")}
  let e1 = min((sg + 1u) * sh.seg, sh.total);
  for (var e = sg * sh.seg + lid; e < e1; e = e + ${u(LANES)}) {
    let n = div_eS(e);
    let r = e - n * sh.eS;
    ${stripCoords("r", S, P)}
    let nc = n * sh.C + c;
    let xc = nc * sh.xS;
    let yb = nc * sh.yS + u32(od * i32(sh.OH) + oh) * sh.OW + u32(ow0);
    ${
        range(V).map((v) =>
          `let g${v} = select(0.0, gy_ld(min(yb + ${u(v)}, sh.gyLast)), ow0 + ${v} < i32(sh.OW));`
        ).join(" ")
      }
    ${rows()}
  }
  ${range(KK).map((k) => `red[${u(k * LANES)} + lid] = a${k};`).join(" ")}
  workgroupBarrier();
  if (lid < ${u(KK)}) {
    var t = 0.0;
    for (var i = 0u; i < ${u(LANES)}; i = i + 1u) { t = t + red[lid * ${u(LANES)} + i]; }
    gw_st((sg * sh.C + c) * ${u(KK)} + lid, t);
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
  const ins = [D, H, W], outs = ["oD", "oH", "oW"];
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
        const lines = (): string[] => {
          const td = taps(0, rd), th = taps(1, rh), tw = taps(2, rw);
          const lines: string[] = [];
          for (const a of td) {
            for (const b of th) {
              for (const c of tw) {
                const k = (a.k * K[1] + b.k) * K[2] + c.k;
                const o = [`md + ${a.off}`, `mh + ${b.off}`, `mw + ${c.off}`];
                const ok = o.map((e, i) => `(${e}) >= 0 && (${e}) < ${outs[i]}`).join(" && ");
                const idx = `u32((clamp(${o[0]}, 0, oD - 1) * oH + clamp(${o[1]}, 0, oH - 1)) * oW + clamp(${
                  o[2]
                }, 0, oW - 1))`;
                lines.push(
                  `acc = acc + w_ld(c * ${u(KK)} + ${u(k)}) * select(0.0, gy_ld(yb + ${idx}), ${ok});`,
                );
              }
            }
          }
          return lines;
        };
        const st = Math.ceil(count / LANES);
        launch({
          op,
          args: [{ name: "gy", t: gy }, { name: "w", t: w }, { name: "gx", t: gx, write: true }],
          wg: LANES,
          groups: N * C * st,
          uniforms: {
            st: { d: st },
            C: { d: C },
            count,
            ...volUniforms("m", M[0], M[1], M[2]),
            OD,
            OH,
            OW,
            yS: OD * OH * OW,
            xH: H,
            xW: W,
            xS: D * H * W,
          },
          key: `dwGradInputStrided ${K} ${S} ${P} ${L} ${r}`,
          body: () =>
            `  let nc = div_st(wg);
  let sTile = wg - nc * sh.st;
  let c = mod_C(nc);
  let m = sTile * ${u(LANES)} + lid;
  if (m >= sh.count) { return; }
  ${split3("m", "m", "md", "mh", "mw")}
  let oD = i32(sh.OD); let oH = i32(sh.OH); let oW = i32(sh.OW);
  let yb = nc * sh.yS;
  var acc = 0.0;
  ${lines().join("\n  ")}
  let q = u32(((md * ${S[0]} + ${rd}) * i32(sh.xH) + mh * ${S[1]} + ${rh}) * i32(sh.xW) + mw * ${
              S[2]
            } + ${rw});
  gx_st(nc * sh.xS + q, acc);`,
        });
      }
    }
  }
  return gx;
}

/**
 * Depthwise input gradient. Stride 1: the correlation of gy with the flipped kernel, padded
 * (K-1)*dil - pad; otherwise (or where that padding would be negative) the sub-pixel kernel.
 */
export function depthwiseGradInput(op: string, gy: Tensor, w: Tensor, g: Geo): Tensor {
  const Pf = g.K.map((k, i) => (k - 1) * g.L[i] - g.P[i]) as Dims;
  return g.S.every((s) => s === 1) && Pf.every((p) => p >= 0)
    ? dwConv(op, gy, w, null, [g.D, g.H, g.W], g.K, [1, 1, 1], Pf, g.L, true)
    : dwGradInputStrided(op, gy, w, g);
}
