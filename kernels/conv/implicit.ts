/**
 * @file Dense convolutions (one group, taps > 1: the stem, the (2+1)D units, the decoder's 3x3x3) as implicit
 * GEMMs for the "gpu" profile: the shared-memory vec4 GEMM tile of kernels/matmul.ts with one operand gathered
 * straight from the activation (no column buffer), so each gathered value feeds 32-128 output channels and
 * each weight 128-256 positions, where the direct kernels (direct.ts) reuse them 4 times.
 *
 * - forward: y[o, (n, p)] = sum over (c, k) of w[o, (c, k)] * x[n, c, p * stride - pad + k * dil]
 * - grad input: gx[c, (n, q)] = sum over (o, k) of w[o, c, k] * gy[n, o, (q + pad - k * dil) / stride]
 *   (taps off the stride grid or outside the output are 0)
 * - grad weight: gw[o, (c, k)] = sum over (n, p) of gy[n, o, p] * x[n, c, p * stride - pad + k * dil], K
 *   split into segments whose partial products a reduction adds when the tiles are few
 */
import { Tensor } from "../../core/tensor.ts";
import { type Arg, launch, u, type Uniforms } from "../codegen.ts";
import { sum } from "../reduce.ts";
import { kSegments } from "../matmul.ts";
import { act, gatherX, type Geo, split3, volUniforms } from "./common.ts";

/** One implicit GEMM: out(m, n) = sum over k of A(m, k) * B(k, n), A and B given as WGSL. */
interface GatherGemm {
  op: string;
  /** Inputs; the output is appended as `out`. */
  args: Arg[];
  out: Tensor;
  M: number;
  N: number;
  K: number;
  /** K segments (each a multiple of 16 long); the output then has a leading [segs] dim (`sg`). */
  segs: number;
  segLen: number;
  uniforms: Uniforms;
  /** WGSL run once per thread for the column `bc` (clamped into range) that it loads B for. */
  colSetup: string;
  /** WGSL setting `v` to A(m, k); m and k are in range. */
  a: (m: string, k: string) => string;
  /** WGSL setting `v` to B(k, bc) (0 where a tap falls outside); k is in range. */
  b: (k: string) => string;
  /** WGSL storing `val` at (m, n) of segment `sg`; m and n are in range. */
  store: (m: string, n: string, val: string) => string;
}

/**
 * The output tile of a gathered GEMM with M rows: a workgroup of 256 threads as `ry` x `rx`, each thread `tm`
 * x `tn` outputs, so `bm` = ry tm rows by `bn` = rx tn columns. Narrow outputs take flat tiles so that rows do
 * not go to waste and each gathered value still feeds several FMAs: the UNet's decoder convs have 32, 40 and
 * 64 output channels (a 64 x 64 tile left half of a 32-channel conv's work idle), the stem 64.
 * - M > 64: 128 x 128, 8 x 8 per thread (as the GEMM's large tile: 4 vec4 loads for 64 FMAs);
 * - 32 < M <= 64: 64 x 128, 4 x 8 per thread (3 vec4 loads for 32 FMAs);
 * - M <= 32: 32 x 256, 4 x 8 per thread, 8 x 32 threads.
 */
export interface GatherTile {
  bm: number;
  bn: number;
  ry: number;
  rx: number;
  tm: number;
  tn: number;
}

/**
 * The tile of a gathered GEMM with M output rows (see {@link GatherTile}) on a device with `storage` bytes of
 * workgroup memory: the 32 x 256 tile stages 18 KiB, over WebGPU's guaranteed 16 KiB, so a device that
 * offers no more gets the 64 x 128 one instead.
 */
export function gatherTile(M: number, storage = 16384): GatherTile {
  if (M > 64) return { bm: 128, bn: 128, ry: 16, rx: 16, tm: 8, tn: 8 };
  if (M > 32 || storage < 16 * 4 * (32 + 256)) return { bm: 64, bn: 128, ry: 16, rx: 16, tm: 4, tn: 8 };
  return { bm: 32, bn: 256, ry: 8, rx: 32, tm: 4, tn: 8 };
}

/**
 * A `bm` x `bn` output tile per workgroup of 256 threads ({@link gatherTile}), K staged 16 at a time through
 * workgroup memory as vec4s (4 consecutive rows of A, 4 consecutive columns of B), so the inner step reads
 * tm / 4 + tn / 4 vec4s for tm x tn FMAs. A thread's rows are 4-row groups 4 ry apart, its columns 4-column
 * groups 4 rx apart, so neighbouring threads read neighbouring vec4s. Each thread gathers B for one column
 * (the column setup runs once, outside the K loop) and 16 bn / 256 of the step's k; A is loaded 16 k wide
 * per row, which is contiguous for every operand that is large (the weight gradient's output gradient).
 */
function gatherGemm(s: GatherGemm): void {
  const t = gatherTile(s.M, s.out.device.info.maxComputeWorkgroupStorageSize);
  const { bm, bn, ry, rx } = t, P = t.tm / 4, Q = t.tn / 4;
  const tm = Math.ceil(s.M / bm), tn = Math.ceil(s.N / bn), tiles = tm * tn;
  const ps = [...Array(P).keys()], qs = [...Array(Q).keys()], fours = [0, 1, 2, 3];
  // c{p}{i}{q}: the 4 columns of column group q for row i of row group p.
  const acc = ps.flatMap((p) => fours.flatMap((i) => qs.map((q) => `c${p}${i}${q}`)));
  const rowOf = (c: string) => `m0 + (${Number(c[1]) * ry}u + ty) * 4u + ${c[2]}u`;
  const colOf = (c: string) => `n0 + (${Number(c[3]) * rx}u + tx) * 4u`;
  launch({
    op: s.op,
    work: { flops: 2 * s.M * s.N * s.K },
    args: [...s.args, { name: "out", t: s.out, write: true }],
    wg: 256,
    groups: s.segs * tiles,
    decls: `var<workgroup> As: array<vec4<f32>, ${4 * bm}>;\nvar<workgroup> Bs: array<vec4<f32>, ${4 * bn}>;`,
    uniforms: {
      gM: s.M,
      gN: s.N,
      gK: s.K,
      gTiles: { d: tiles },
      gTn: { d: tn },
      gSeg: s.segLen,
      ...s.uniforms,
    },
    body: `  let sg = div_gTiles(wg);
  let t = wg - sg * sh.gTiles;
  let tq = div_gTn(t);
  let m0 = tq * ${u(bm)};
  let n0 = (t - tq * sh.gTn) * ${u(bn)};
  let lc = lid % ${u(bn)};
  let bc0 = n0 + lc;
  let bcIn = bc0 < sh.gN;
  let bc = min(bc0, sh.gN - 1u);
  ${s.colSetup}
  let tx = lid % ${u(rx)};
  let ty = lid / ${u(rx)};
  ${acc.map((c) => `var ${c} = vec4<f32>(0.0);`).join(" ")}
  let kEnd = min((sg + 1u) * sh.gSeg, sh.gK);
  for (var k0 = sg * sh.gSeg; k0 < kEnd; k0 = k0 + 16u) {
    for (var j = 0u; j < ${u(bm / 16)}; j = j + 1u) {
      let ar = lid / 16u + 16u * j;
      let am = m0 + ar;
      let ak = k0 + lid % 16u;
      var v = 0.0;
      if (am < sh.gM && ak < kEnd) { ${s.a("am", "ak")} }
      As[(lid % 16u) * ${u(bm / 4)} + ar / 4u][ar % 4u] = v;
    }
    for (var j = 0u; j < ${u(16 * bn / 256)}; j = j + 1u) {
      let kr = lid / ${u(bn)} + ${u(256 / bn)} * j;
      let bk = k0 + kr;
      var v = 0.0;
      if (bcIn && bk < kEnd) { ${s.b("bk")} }
      Bs[kr * ${u(bn / 4)} + lc / 4u][lc % 4u] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {
      ${ps.map((p) => `let a${p} = As[kk * ${u(bm / 4)} + ${p * ry}u + ty];`).join(" ")}
      ${qs.map((q) => `let b${q} = Bs[kk * ${u(bn / 4)} + ${q * rx}u + tx];`).join(" ")}
      ${acc.map((c) => `${c} = fma(vec4<f32>(a${c[1]}[${c[2]}]), b${c[3]}, ${c});`).join(" ")}
    }
    workgroupBarrier();
  }
  ${
      acc.map((c) =>
        `{ let m = ${rowOf(c)}; let nb = ${colOf(c)};
    if (m < sh.gM) { ${
          fours.map((j) =>
            `if (nb + ${j}u < sh.gN) { let n = nb + ${j}u; ${s.store("m", "n", `${c}[${j}]`)} }`
          )
            .join(" ")
        } } }`
      ).join("\n  ")
    }`,
  });
}

/** WGSL: the taps kd, kh, kw (i32) of flat tap index `kk` for kernel K. */
function splitTap(kk: string, K: [number, number, number], s = ""): string {
  return `let kd${s} = i32(${kk} / ${u(K[1] * K[2])}); let kh${s} = i32((${kk} / ${u(K[2])}) % ${u(K[1])});
    let kw${s} = i32(${kk} % ${u(K[2])});`;
}

/** Implicit-GEMM forward of a one-group conv: M = O, N = batch x output positions, K = C x taps. */
export function implicitForward(op: string, x: Tensor, w: Tensor, b: Tensor | null, g: Geo): Tensor {
  const { N, C, O, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const KK = K[0] * K[1] * K[2], OS = OD * OH * OW;
  const y = Tensor.empty(x.device, [N, O, OD, OH, OW], g.dtype, op);
  gatherGemm({
    op,
    args: [{ name: "x", t: x }, { name: "w", t: w }, ...(b ? [{ name: "b", t: b }] : [])],
    out: y,
    M: O,
    N: N * OS,
    K: C * KK,
    segs: 1,
    segLen: C * KK,
    uniforms: { ...volUniforms("x", D, H, W), ...volUniforms("o", OD, OH, OW), C, O },
    colSetup: `let bn = div_oS(bc); let bp = bc - bn * sh.oS;
  ${split3("bp", "o", "od", "oh", "ow")}
  let d0 = od * ${S[0]} - ${P[0]}; let h0 = oh * ${S[1]} - ${P[1]}; let w0 = ow * ${S[2]} - ${P[2]};`,
    a: (m, k) => `v = w_ld(${m} * sh.gK + ${k});`,
    b: (k) =>
      `let c = ${k} / ${u(KK)}; let kk = ${k} % ${u(KK)};
      ${splitTap("kk", K)}
      ${
        gatherX("", "(bn * sh.C + c) * sh.xS", [
          `d0 + kd * ${L[0]}`,
          `h0 + kh * ${L[1]}`,
          `w0 + kw * ${L[2]}`,
        ], "x")
      }
      v = xv;`,
    store: (m, n, val) =>
      `let sn = div_oS(${n}); out_st((sn * sh.O + ${m}) * sh.oS + ${n} - sn * sh.oS, ${
        act(`${val}${b ? ` + b_ld(${m})` : ""}`, g.relu)
      });`,
  });
  return y;
}

/** Implicit-GEMM input gradient: M = C, N = batch x input positions, K = O x taps. */
export function implicitGradInput(op: string, gy: Tensor, w: Tensor, g: Geo): Tensor {
  const { N, C, O, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const KK = K[0] * K[1] * K[2], XS = D * H * W;
  const gx = Tensor.empty(gy.device, [N, C, D, H, W], "f32", op);
  // Output coordinate along one dim for input coordinate q and tap k: (q + pad - k*dil) / stride when exact.
  const tap = (q: string, k: string, i: number, n: string, name: string) =>
    `let t${name} = ${q} + ${P[i]} - ${k} * ${L[i]}; let o${name} = t${name} / ${S[i]};
      let v${name} = t${name} >= 0 && (t${name} % ${S[i]}) == 0 && o${name} < ${n};`;
  gatherGemm({
    op,
    args: [{ name: "gy", t: gy }, { name: "w", t: w }],
    out: gx,
    M: C,
    N: N * XS,
    K: O * KK,
    segs: 1,
    segLen: O * KK,
    uniforms: { ...volUniforms("x", D, H, W), ...volUniforms("o", OD, OH, OW), C, O },
    colSetup: `let bn = div_xS(bc); let bq = bc - bn * sh.xS;
  ${split3("bq", "x", "qd", "qh", "qw")}`,
    a: (m, k) => `v = w_ld(((${k} / ${u(KK)}) * sh.C + ${m}) * ${u(KK)} + ${k} % ${u(KK)});`,
    b: (k) =>
      `let o = ${k} / ${u(KK)}; let kk = ${k} % ${u(KK)};
      ${splitTap("kk", K)}
      ${tap("qd", "kd", 0, "i32(sh.oD)", "d")}
      ${tap("qh", "kh", 1, "i32(sh.oH)", "h")}
      ${tap("qw", "kw", 2, "i32(sh.oW)", "w")}
      let yi = (bn * sh.O + o) * sh.oS + u32(clamp(od, 0, i32(sh.oD) - 1)) * sh.oHW +
        u32(clamp(oh, 0, i32(sh.oH) - 1)) * sh.oW + u32(clamp(ow, 0, i32(sh.oW) - 1));
      v = select(0.0, gy_ld(yi), vd && vh && vw);`,
    store: (m, n, val) =>
      `let sn = div_xS(${n}); out_st((sn * sh.C + ${m}) * sh.xS + ${n} - sn * sh.xS, ${val});`,
  });
  return gx;
}

/** Implicit-GEMM weight gradient: M = O, N = C x taps, K = batch x output positions (split when long). */
export function implicitGradWeight(op: string, gy: Tensor, x: Tensor, g: Geo): Tensor {
  const { N, C, O, D, H, W, OD, OH, OW, K, S, P, L } = g;
  const KK = K[0] * K[1] * K[2], OS = OD * OH * OW, J = C * KK;
  const tile = gatherTile(O, gy.device.info.maxComputeWorkgroupStorageSize);
  const { segs, segLen } = kSegments(Math.ceil(O / tile.bm) * Math.ceil(J / tile.bn), N * OS);
  const part = Tensor.empty(gy.device, [segs, O, C, K[0], K[1], K[2]], "f32", op);
  gatherGemm({
    op,
    args: [{ name: "gy", t: gy }, { name: "x", t: x }],
    out: part,
    M: O,
    N: J,
    K: N * OS,
    segs,
    segLen,
    uniforms: { ...volUniforms("x", D, H, W), ...volUniforms("o", OD, OH, OW), C, O, OJ: O * J },
    colSetup: `let bc_c = bc / ${u(KK)}; let bkk = bc % ${u(KK)};
  ${splitTap("bkk", K, "c")}`,
    a: (m, k) => `let an = div_oS(${k}); v = gy_ld((an * sh.O + ${m}) * sh.oS + ${k} - an * sh.oS);`,
    b: (k) =>
      `let bn = div_oS(${k}); let bp = ${k} - bn * sh.oS;
      ${split3("bp", "o", "od", "oh", "ow")}
      ${
        gatherX("", "(bn * sh.C + bc_c) * sh.xS", [
          `od * ${S[0]} - ${P[0]} + kdc * ${L[0]}`,
          `oh * ${S[1]} - ${P[1]} + khc * ${L[1]}`,
          `ow * ${S[2]} - ${P[2]} + kwc * ${L[2]}`,
        ], "x")
      }
      v = xv;`,
    store: (m, n, val) => `out_st(sg * sh.OJ + ${m} * sh.gN + ${n}, ${val});`,
  });
  if (segs === 1) return part.reshape([O, C, K[0], K[1], K[2]]);
  const r = sum(part, 0);
  part.dispose();
  return r;
}
