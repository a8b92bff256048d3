/**
 * @file Dense convolutions (one group, taps > 1: the stem, the (2+1)D units, the decoder's 3x3x3) as implicit
 * GEMMs for the "gpu" profile: the shared-memory GEMM tile of kernels/matmul.ts with one operand gathered
 * straight from the activation (no column buffer), so each gathered value feeds 64 output channels and each
 * weight 64 positions, where the direct kernels (direct.ts) reuse them 4 times.
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
 * The tile of a gathered GEMM with M output rows: T x T outputs per thread of a 16 x 16 workgroup, so a
 * (16 T) x (16 T) tile. T = 8 (128 x 128: each shared-memory value feeds 8 FMAs instead of 4, as the GEMM's
 * large tile) once M fills a 128-row tile; T = 4 (64 x 64) below.
 */
export function gatherTile(M: number): 4 | 8 {
  return M >= 128 ? 8 : 4;
}

/**
 * A (16 T) x (16 T) output tile per workgroup of 256 threads ({@link gatherTile}), T x T per thread, K staged
 * 16 at a time. A thread's rows are 4-row groups 64 apart (ty * 4 + 64 p + i), its columns likewise, so
 * neighbouring threads read neighbouring shared-memory words. B's columns are gathered in groups of 64; with
 * one group (T = 4) the column setup runs once, with two it runs per K step inside each group's block (a
 * few integer ops against 1024 FMAs).
 */
function gatherGemm(s: GatherGemm): void {
  const T = gatherTile(s.M), BM = 16 * T, R = T / 4;
  const tm = Math.ceil(s.M / BM), tn = Math.ceil(s.N / BM), tiles = tm * tn;
  const rs = [...Array(R).keys()], fours = [0, 1, 2, 3];
  const acc = rs.flatMap((p) =>
    fours.flatMap((i) => rs.flatMap((q) => fours.map((j) => `c${p}${i}${q}${j}`)))
  );
  const colVars = (r: number) =>
    `let bc0 = n0 + lid % 64u + ${64 * r}u;
      let bcIn = bc0 < sh.gN;
      let bc = min(bc0, sh.gN - 1u);`;
  const loadB = (r: number) =>
    `for (var j = 0u; j < 4u; j = j + 1u) {
        let kr = lid / 64u + 4u * j;
        let bk = k0 + kr;
        var v = 0.0;
        if (bcIn && bk < kEnd) { ${s.b("bk")} }
        Bs[kr * ${u(BM)} + lid % 64u + ${64 * r}u] = v;
      }`;
  launch({
    op: s.op,
    work: { flops: 2 * s.M * s.N * s.K },
    args: [...s.args, { name: "out", t: s.out, write: true }],
    wg: 256,
    groups: s.segs * tiles,
    decls: `var<workgroup> As: array<f32, ${16 * BM}>;\nvar<workgroup> Bs: array<f32, ${16 * BM}>;`,
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
  let m0 = tq * ${u(BM)};
  let n0 = (t - tq * sh.gTn) * ${u(BM)};
  ${R === 1 ? `${colVars(0)}\n  ${s.colSetup}` : ""}
  let tx = lid % 16u;
  let ty = lid / 16u;
  ${acc.map((c) => `var ${c} = 0.0;`).join(" ")}
  let kEnd = min((sg + 1u) * sh.gSeg, sh.gK);
  for (var k0 = sg * sh.gSeg; k0 < kEnd; k0 = k0 + 16u) {
    for (var j = 0u; j < ${u(T)}; j = j + 1u) {
      let am = m0 + lid / 16u + 16u * j;
      let ak = k0 + lid % 16u;
      var v = 0.0;
      if (am < sh.gM && ak < kEnd) { ${s.a("am", "ak")} }
      As[(lid % 16u) * ${u(BM)} + lid / 16u + 16u * j] = v;
    }
    ${
      R === 1 ? loadB(0) : rs.map((r) =>
        `{
      ${colVars(r)}
      ${s.colSetup}
      ${loadB(r)}
    }`
      ).join("\n    ")
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {
      ${
      rs.map((p) =>
        fours.map((i) => `let a${p}${i} = As[kk * ${u(BM)} + ty * 4u + ${64 * p + i}u];`).join(" ")
      ).join("\n      ")
    }
      ${
      rs.map((q) =>
        fours.map((j) => `let b${q}${j} = Bs[kk * ${u(BM)} + tx * 4u + ${64 * q + j}u];`).join(" ")
      ).join("\n      ")
    }
      ${acc.map((c) => `${c} = fma(a${c[1]}${c[2]}, b${c[3]}${c[4]}, ${c});`).join(" ")}
    }
    workgroupBarrier();
  }
  ${
      acc.map((c) =>
        `{ let m = m0 + ty * 4u + ${64 * Number(c[1]) + Number(c[2])}u; let n = n0 + tx * 4u + ${
          64 * Number(c[3]) + Number(c[4])
        }u;
    if (m < sh.gM && n < sh.gN) { ${s.store("m", "n", c)} } }`
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
  const tile = 16 * gatherTile(O);
  const { segs, segLen } = kSegments(Math.ceil(O / tile) * Math.ceil(J / tile), N * OS);
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
