/**
 * @file im2col + GEMM forward and weight gradient of one-group convs. On software adapters (profile "cpu")
 * the weight gradient runs this way (as fast as or faster than the direct kernel on Mesa 25); the forward
 * and input gradient use the direct (implicit-GEMM) kernels, which beat im2col there since their register
 * block grew to 6x4 (docs/perf.md). `im2colForward` stays for comparisons. Columns are built for a chunk of
 * output positions at a time, so the extra memory stays bounded.
 */
import { Tensor } from "../../core/tensor.ts";
import { launch1d, u } from "../codegen.ts";
import { map } from "../elementwise/map.ts";
import { gemm } from "../matmul.ts";
import { slab } from "../slice.ts";
import { addBias, type Geo } from "./common.ts";

/** Floats of one column buffer at the most (lavapipe: its memory is the host's). */
const COL_FLOATS = 8 * 2 ** 20;
/**
 * Floats of one column buffer on the "gpu" profile: chunks of 2^25 floats (128 MiB) keep the dispatches per
 * conv few (the UNet's last 3x3x3 conv at batch 4: 540 chunks instead of 2160) in a GPU's memory.
 */
export const GPU_COL_FLOATS = 2 ** 25;

/** WGSL: decompose a flat position `v` of a [A, B, C] grid into i32 `a`, `b`, `c` (constant divisors). */
function split3c(v: string, B: number, C: number, a: string, b: string, c: string): string {
  return `let ${a} = i32(${v} / ${u(B * C)}); let ${b} = i32((${v} / ${u(C)}) % ${
    u(B)
  }); let ${c} = i32(${v} % ${u(C)});`;
}

/**
 * WGSL: the masked input voxel `xv<s>` at i32 coords of the [D, H, W] volume at `base` (constant sizes); the
 * names it declares end in `s`, so several can share a scope.
 */
function gatherXc(
  base: string,
  [d, h, w]: [string, string, string],
  D: number,
  H: number,
  W: number,
  s = "",
): string {
  return `let id${s} = ${d}; let ih${s} = ${h}; let iw${s} = ${w};
    let ok${s} = id${s} >= 0 && id${s} < ${D} && ih${s} >= 0 && ih${s} < ${H} && iw${s} >= 0 && iw${s} < ${W};
    let xi${s} = ${base} + u32(clamp(id${s}, 0, ${D - 1})) * ${u(H * W)} + u32(clamp(ih${s}, 0, ${
    H - 1
  })) * ${u(W)} + u32(clamp(iw${s}, 0, ${W - 1}));
    let xv${s} = select(0.0, x_ld(xi${s}), ok${s});`;
}

/**
 * col[(c, k), j] = x[n, c, tap k of output position p0 + j] (0 outside the input). When the output rows and
 * the chunk are multiples of 4 wide, an invocation fills 4 neighbouring positions of one row (one index
 * decomposition, 4 gathers, one vec4 store): on lavapipe the scalar build wrote ~1 GB/s, as slow as the
 * GEMM that reads it.
 */
function im2col(op: string, x: Tensor, g: Geo, n: number, p0: number, len: number): Tensor {
  const { C, D, H, W, OH, OW, K, S, P, L } = g;
  const KK = K[0] * K[1] * K[2];
  const col = Tensor.empty(x.device, [C * KK, len], "f32", op);
  const V = OW % 4 === 0 && len % 4 === 0 && p0 % 4 === 0 ? 4 : 1;
  const cols = len / V;
  const at = (v: number) =>
    gatherXc(
      `(${u(n)} * ${u(C)} + c) * ${u(D * H * W)}`,
      [
        `od * ${S[0]} - ${P[0]} + kd * ${L[0]}`,
        `oh * ${S[1]} - ${P[1]} + kh * ${L[1]}`,
        `(ow + ${v}) * ${S[2]} - ${P[2]} + kw * ${L[2]}`,
      ],
      D,
      H,
      W,
      `${v}`,
    );
  const vs = [...Array(V).keys()];
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "col", t: col, write: true, vec4: V === 4 }],
    n: C * KK * cols,
    body: `  let j = gid % ${u(cols)};
  let ck = gid / ${u(cols)};
  let c = ck / ${u(KK)};
  let k = ck % ${u(KK)};
  let p = ${u(p0)} + j * ${u(V)};
  ${split3c("p", OH, OW, "od", "oh", "ow")}
  let kd = i32(k / ${u(K[1] * K[2])}); let kh = i32((k / ${u(K[2])}) % ${u(K[1])}); let kw = i32(k % ${
      u(K[2])
    });
  ${vs.map(at).join("\n  ")}
  col_st(gid, ${V === 4 ? "vec4<f32>(xv0, xv1, xv2, xv3)" : "xv0"});`,
  });
  return col;
}

/** Calls `fn` with the columns of each chunk of output positions [p0, p0 + len) of each sample n. */
function eachChunk(
  op: string,
  x: Tensor,
  g: Geo,
  colFloats: number,
  fn: (col: Tensor, n: number, p0: number, len: number) => void,
) {
  const { N, C, OD, OH, OW, K } = g;
  const KK = K[0] * K[1] * K[2], OS = OD * OH * OW;
  const chunk = Math.max(4, Math.min(OS, Math.floor(colFloats / (C * KK) / 4) * 4));
  for (let n = 0; n < N; n++) {
    for (let p0 = 0; p0 < OS; p0 += chunk) {
      const len = Math.min(chunk, OS - p0);
      const col = im2col(op, x, g, n, p0, len);
      fn(col, n, p0, len);
      col.dispose();
    }
  }
}

/**
 * Forward of a one-group conv as chunks of im2col + GEMM (columns of at most `colFloats` floats), written
 * into y [N, O, OS].
 */
export function im2colForward(
  op: string,
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  g: Geo,
  colFloats = COL_FLOATS,
): Tensor {
  const { N, C, O, OD, OH, OW, K } = g;
  const OS = OD * OH * OW;
  const y = Tensor.empty(x.device, [N, O, OD, OH, OW], "f32", op);
  const w2 = w.reshape([O, C * K[0] * K[1] * K[2]]);
  eachChunk(op, x, g, colFloats, (col, n, p0, len) => {
    const yc = gemm(op, w2, col, false, false);
    // y viewed as [N * O, OS]: rows n*O .. n*O+O-1, columns p0 .. p0+len.
    slab(op, yc, y, O, len, OS, 1, p0, true, n * O * OS);
    yc.dispose();
  });
  w2.dispose();
  return addBias(op, y, b, g.relu, g.dtype);
}

/**
 * Weight gradient of a one-group conv as chunks of gy @ col^T (columns of at most `colFloats` floats), summed
 * over batch and chunks.
 */
export function im2colGradWeight(op: string, gy: Tensor, x: Tensor, g: Geo, colFloats = COL_FLOATS): Tensor {
  const { C, O, OD, OH, OW, K } = g;
  const OS = OD * OH * OW;
  // (a cast, not an annotation: the callback assigns it, so it must not narrow to null here)
  let acc = null as Tensor | null;
  eachChunk(op, x, g, colFloats, (col, n, p0, len) => {
    const gyc = Tensor.empty(gy.device, [O, len], "f32", op);
    slab(op, gy, gyc, O, len, OS, 1, p0, false, n * O * OS);
    const part = gemm(op, gyc, col, false, true);
    gyc.dispose();
    if (acc) {
      const sum2 = map(op, [acc, part], "f32", (v) => `${v[0]} + ${v[1]}`);
      acc.dispose();
      part.dispose();
      acc = sum2;
    } else acc = part;
  });
  const r = acc!.reshape([O, C, K[0], K[1], K[2]]);
  acc!.dispose();
  return r;
}
