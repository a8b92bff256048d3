/**
 * @file What the conv algorithms share: the validated geometry ({@link Geo}), WGSL snippets for index
 * decomposition and bounds-masked gathers, and {@link directKernel}, the one generator behind the three
 * general direct kernels (forward, input gradient, weight gradient; see direct.ts).
 *
 * The direct structure, chosen for both GPUs and llvmpipe: a workgroup owns a few (ROWS) channels of its
 * output and 64 positions per lane column; the values that only depend on the channel (the weights, or the
 * output gradient in the weight gradient) are the same for the whole workgroup, so they are uniform loads
 * (one scalar load on llvmpipe, a broadcast from cache on a GPU), while each lane loads only its own
 * activation and reuses it for ROWS multiply-adds. Out-of-range taps are read at a clamped address and
 * masked, so control flow stays uniform.
 */
import type { Tensor } from "../../core/tensor.ts";
import { type Arg, type Geo3d, launch, u, type Uniforms } from "../codegen.ts";
import { map } from "../elementwise/map.ts";

/** Validated geometry of one convolution. */
export interface Geo extends Geo3d {
  O: number;
  G: number;
  CG: number;
  OG: number;
  K: [number, number, number];
  S: [number, number, number];
  P: [number, number, number];
  L: [number, number, number];
  /** The forward applies max(y, 0) as it stores (`Conv3dOptions.relu`). */
  relu: boolean;
  /** The forward output's dtype (`Conv3dOptions.dtype`); accumulation is f32 either way. */
  dtype: "f32" | "f16";
}

/** Lanes per workgroup of the conv kernels. */
export const LANES = 64;
/** Positions (or weight columns) per lane: each loaded activation feeds ROWS multiply-adds and each weight V. */
export const V = 4;

/**
 * ROWS: output channels per workgroup of a direct kernel with `n` channels per group. On the "cpu" profile
 * 6 rows x V = 24 scalar accumulators: on Mesa 25 lavapipe (256-bit SIMD, an accumulator is one register)
 * this was 1.0-1.9x faster than 4 rows for the stem, (2+1)D and 3x3x3 kernels; 8x2, 12x2 and 16x1 lost (more
 * weight loads per gathered value), 8x3 tied (docs/perf.md, 2026-11-30). Each gathered value then feeds 6
 * multiply-adds instead of 4.
 */
export function rowsFor(n: number, profile: string = "gpu"): number {
  return Math.min(profile === "cpu" ? 6 : 4, n);
}

/** 0, 1, ..., n - 1. */
export const range = (n: number): number[] => [...Array(n).keys()];

/**
 * Uniforms of a [D, H, W] volume named `<p>D`, `<p>H`, `<p>W` (a divisor), `<p>HW` (a divisor) and `<p>S`
 * (D * H * W, a divisor), for {@link split3} and {@link gatherX}: sizes travel as uniforms so that one pipeline serves
 * every layer shape (docs/perf.md, "Compile cost").
 */
export function volUniforms(p: string, D: number, H: number, W: number): Uniforms {
  return {
    [`${p}D`]: D,
    [`${p}H`]: H,
    [`${p}W`]: { d: W },
    [`${p}HW`]: { d: H * W },
    [`${p}S`]: { d: D * H * W },
  };
}

/**
 * WGSL: decompose a flat position `v` of the volume whose {@link volUniforms} prefix is `p` into i32 `a`,
 * `b`, `c` (two exact divisions through the uniform divisors' reciprocals).
 */
export function split3(v: string, p: string, a: string, b: string, c: string): string {
  return `let ${a}_q = div_${p}HW(${v}); let ${a}_r = ${v} - ${a}_q * sh.${p}HW; let ${b}_q = div_${p}W(${a}_r);
  let ${a} = i32(${a}_q); let ${b} = i32(${b}_q); let ${c} = i32(${a}_r - ${b}_q * sh.${p}W);`;
}

/**
 * WGSL: the input voxel at i32 coords (`d`, `h`, `w`) of the volume (uniforms of prefix `p`, see
 * {@link volUniforms}) starting at `base`, as `xv<s>` (0 outside the volume). The address is clamped so
 * the load is always legal; `ok<s>` masks it.
 */
export function gatherX(s: string, base: string, [d, h, w]: [string, string, string], p: string): string {
  const D = `i32(sh.${p}D)`, H = `i32(sh.${p}H)`, W = `i32(sh.${p}W)`;
  return `let id${s} = ${d}; let ih${s} = ${h}; let iw${s} = ${w};
    let ok${s} = id${s} >= 0 && id${s} < ${D} && ih${s} >= 0 && ih${s} < ${H} && iw${s} >= 0 && iw${s} < ${W};
    let xi${s} = ${base} + u32(clamp(id${s}, 0, ${D} - 1)) * sh.${p}HW + u32(clamp(ih${s}, 0, ${H} - 1)) * sh.${p}W + u32(clamp(iw${s}, 0, ${W} - 1));
    let xv${s} = select(0.0, x_ld(xi${s}), ok${s});`;
}

/** WGSL: loops over the kernel taps (i32 `kd`, `kh`, `kw`, flat u32 `k`) as [open, close]. */
export function tapLoops(K: [number, number, number]): [string, string] {
  return [
    `for (var kd = 0; kd < ${K[0]}; kd = kd + 1) {
      for (var kh = 0; kh < ${K[1]}; kh = kh + 1) {
        for (var kw = 0; kw < ${K[2]}; kw = kw + 1) {
          let k = u32((kd * ${K[1]} + kh) * ${K[2]} + kw);`,
    `}
      }
    }`,
  ];
}

/** A direct kernel: out[outer, grp, row, col] = sum over `loop` of rv<row> * xv<col>. */
export interface DirectSpec {
  op: string;
  /** Inputs; the output is appended as `out`. */
  args: Arg[];
  out: Tensor;
  /** Extent of the leading index (batch, or weight-gradient segments), bound in WGSL as `outerName`. */
  outer: number;
  outerName: string;
  /** Groups; bound in WGSL as `grp`. */
  G: number;
  /** Output rows (channels) per group; lane-uniform, ROWS of them per workgroup (`row<r>`, clamped). */
  rows: number;
  /** Output columns; V per lane (`col<v>`, and `cc<v>` clamped to the last one). */
  cols: number;
  /** WGSL run once per lane column v, after `cc<v>`. */
  colSetup: (v: number) => string;
  /** The reduction loops around the loads and multiply-adds: [open, close]. */
  loop: [string, string];
  /** WGSL defining the row factor `rv<r>` for `row<r>` (the group's first channel is `grp * rows`). */
  rowLoad: (r: number) => string;
  /** WGSL defining the lane factor `xv<v>`, masked to 0 where the tap is out of range. */
  laneLoad: (v: number) => string;
  /** Bias tensor (argument `b`) added per output channel. */
  bias?: Tensor | null;
  /** Store max(value, 0). */
  relu?: boolean;
  /** The sizes the snippets above read (as `sh.<name>`); names starting with "n" are the kernel's own. */
  uniforms: Uniforms;
}

/** Generates and launches a direct kernel (the workgroup-index decomposition, tiles, tails and stores). */
export function directKernel(s: DirectSpec): void {
  const R = rowsFor(s.rows, s.out.device.profile),
    rt = Math.ceil(s.rows / R),
    ct = Math.ceil(s.cols / (LANES * V));
  const rs = range(R), vs = range(V);
  const each = (f: (r: number, v: number) => string) => rs.flatMap((r) => vs.map((v) => f(r, v))).join(" ");
  const bias = s.bias ? [{ name: "b", t: s.bias }] : [];
  const args = [...s.args, ...bias, { name: "out", t: s.out, write: true }];
  launch({
    op: s.op,
    args,
    wg: LANES,
    groups: s.outer * s.G * rt * ct,
    uniforms: { nCt: { d: ct }, nRt: { d: rt }, nG: { d: s.G }, nRows: s.rows, nCols: s.cols, ...s.uniforms },
    body: `  let r1 = div_nCt(wg);
  let cTile = wg - r1 * sh.nCt;
  let r2 = div_nRt(r1);
  let rTile = r1 - r2 * sh.nRt;
  let ${s.outerName} = div_nG(r2);
  let grp = r2 - ${s.outerName} * sh.nG;
  ${
      vs.map((v) =>
        `let col${v} = cTile * ${u(LANES * V)} + ${
          u(v * LANES)
        } + lid; let cc${v} = min(col${v}, sh.nCols - 1u);
  ${s.colSetup(v)}`
      ).join("\n  ")
    }
  let r0 = rTile * ${u(R)};
  ${rs.map((r) => `let row${r} = min(r0 + ${r}u, sh.nRows - 1u);`).join("\n  ")}
  ${each((r, v) => `var a${r}_${v} = 0.0;`)}
  ${s.loop[0]}
    ${rs.map(s.rowLoad).join(" ")}
    ${vs.map(s.laneLoad).join("\n    ")}
    ${each((r, v) => `a${r}_${v} = fma(rv${r}, xv${v}, a${r}_${v});`)}
  ${s.loop[1]}
  let ob = (${s.outerName} * sh.nG + grp) * sh.nRows + r0;
  ${
      vs.map((v) =>
        `if (col${v} < sh.nCols) {
    ${
          rs.map((r) =>
            `if (r0 + ${r}u < sh.nRows) { out_st((ob + ${r}u) * sh.nCols + col${v}, ${
              act(`a${r}_${v}${s.bias ? ` + b_ld(grp * sh.nRows + r0 + ${r}u)` : ""}`, !!s.relu)
            }); }`
          ).join("\n    ")
        }
  }`
      ).join("\n  ")
    }`,
  });
}

/** WGSL of the stored value `v`: itself, or max(v, 0) for a conv with a fused ReLU. */
export function act(v: string, relu: boolean): string {
  return relu ? `max(${v}, 0.0)` : v;
}

/**
 * y + b over the channels of an [N, O, D, H, W] output, then max(., 0) when `relu`, stored as `dtype`, in one
 * pass (a new tensor; `y` is disposed); `y` itself when there is nothing to do.
 */
export function addBias(
  op: string,
  y: Tensor,
  b: Tensor | null,
  relu = false,
  dtype: "f32" | "f16" = "f32",
): Tensor {
  if (!b && !relu && y.dtype === dtype) return y;
  const ins = b ? [y, b.reshape([b.shape[0], 1, 1, 1])] : [y];
  const yb = map(op, ins, dtype, (v) => act(b ? `${v[0]} + ${v[1]}` : v[0], relu));
  y.dispose();
  return yb;
}
