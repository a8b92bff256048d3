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
import type { Device } from "../../core/device.ts";
import { Tensor } from "../../core/tensor.ts";
import { type Arg, launch, u, type Uniforms } from "../codegen.ts";
import { sum } from "../reduce.ts";
import { kSegments } from "../matmul.ts";
import { GPU_COL_FLOATS, im2colForward, im2colGradWeight } from "./im2col.ts";
import { act, type Geo, split3, volUniforms } from "./common.ts";

/**
 * How a gathered GEMM loads its gathered operand B. Either way a thread's gather needs two parts: one that
 * depends on its column (an output or input position, or a weight column) and one that depends on k; the part
 * that many threads share is computed once into a small workgroup table (where memory allows), so a gathered
 * element costs a table read, three adds, three bounds tests and a load, not two or three integer divisions.
 */
type Gather = ColumnGather | RowGather;

/**
 * Each thread gathers one column of B (its setup runs once) at 16 bn / 256 k of each K step, so that
 * neighbouring threads read neighbouring positions (the forward and the input gradient). The 16 k of a step
 * are tabulated by 16 threads during the previous step's multiply-adds.
 */
interface ColumnGather {
  by: "column";
  /** WGSL run once per thread for its column `bc` (clamped into range). */
  setup: string;
  /** WGSL statements of `fn k_info(k: u32) -> vec4<i32>`: what gathering B(k, .) needs of k. */
  kInfo: string;
  /** WGSL setting `v` to B(k, bc) from `t` = k_info(k) (left 0 where a tap falls outside). */
  b: (t: string) => string;
}

/**
 * Each thread gathers B at one k, the k it loads A at (k0 + lid % 16), for bn / 16 columns, so that
 * neighbouring threads read neighbouring positions (the weight gradient, whose k are positions). The tile's
 * columns are tabulated once per workgroup.
 */
interface RowGather {
  by: "row";
  /** WGSL run once per K step for the thread's k, `kc` (clamped into range), before it loads A and B. */
  setup: string;
  /** WGSL statements of `fn col_info(n: u32) -> vec4<i32>`: what gathering B(., n) needs of column n. */
  colInfo: string;
  /** WGSL setting `v` to B(k, n) from `t` = col_info(n) (left 0 where a tap falls outside). */
  b: (t: string) => string;
}

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
  /** WGSL setting `v` to A(m, ak) (k `ak` = k0 + lid % 16); m and ak are in range. */
  a: (m: string) => string;
  gather: Gather;
  /** WGSL storing `val` at (m, n) of segment `sg`; m and n are in range. */
  store: (m: string, n: string, val: string) => string;
  /** The output tile ({@link tunedGather}'s choice). */
  tile: GatherTile;
  /**
   * What `a`, `gather` and `store` bake into the source beyond the launch's head (see `LaunchSpec.key`):
   * {@link gemmKey} of the conv's geometry and which GEMM this is.
   */
  key: string;
}

/**
 * The output tile of a gathered GEMM with M rows: a workgroup of 256 threads as `ry` x `rx`, each thread `tm`
 * x `tn` outputs, so `bm` = ry tm rows by `bn` = rx tn columns. Narrow outputs take flat tiles so that rows do
 * not go to waste and each gathered value still feeds several FMAs: the UNet's decoder convs have 32, 40 and
 * 64 output channels (a 64 x 64 tile left half of a 32-channel conv's work idle), the stem 64.
 * - M > 64: 128 x 128, 8 x 8 per thread (as the GEMM's large tile: 4 vec4 loads for 64 FMAs);
 * - 32 < M <= 64: 64 x 128, 4 x 8 per thread (3 vec4 loads for 32 FMAs);
 * - M <= 32: 32 x 256, 8 x 4 per thread, 4 x 64 threads (3 vec4 loads for 32 FMAs).
 * On a GPU the inner step is bound by workgroup-memory wavefronts as much as by FMAs: a warp's B loads
 * cover 16-32 different vec4s (2-4 wavefronts each), its A loads one or two (broadcast, one wavefront). The
 * flat tile's threads therefore take 8 rows and 4 columns (2 A + 1 B loads: 6 wavefronts per warp for 32
 * FMA instructions, within the 8 that an SM's one wavefront per cycle allows beside four schedulers' FMAs)
 * rather than 4 rows and 8 columns (1 + 2 loads: 9 wavefronts).
 */
export interface GatherTile {
  bm: number;
  bn: number;
  ry: number;
  rx: number;
  tm: number;
  tn: number;
  /** Load the next K step into registers while this one multiplies ({@link gatherGemm}). */
  prefetch?: boolean;
  /** A weight gradient's K split by `kSegments`' first rule only (a tuner variant; default both rules). */
  deepSplit?: boolean;
}

/**
 * The tile of a gathered GEMM with M output rows (see {@link GatherTile}) on a device with `storage` bytes of
 * workgroup memory: the 32 x 256 tile stages 18 KiB, over WebGPU's guaranteed 16 KiB, so a device that
 * offers no more gets the 64 x 128 one instead.
 */
export function gatherTile(M: number, storage = 16384): GatherTile {
  if (M > 64) return GATHER_TILES[0];
  if (M > 32 || !tileFits(GATHER_TILES[2], storage)) return GATHER_TILES[1];
  return GATHER_TILES[2];
}

/** The tiles of {@link gatherTile}: 128 x 128, 64 x 128, 32 x 256. */
export const GATHER_TILES: readonly GatherTile[] = [
  { bm: 128, bn: 128, ry: 16, rx: 16, tm: 8, tn: 8 },
  { bm: 64, bn: 128, ry: 16, rx: 16, tm: 4, tn: 8 },
  { bm: 32, bn: 256, ry: 4, rx: 64, tm: 8, tn: 4 },
];

/** Whether a tile's A and B stages fit `storage` bytes of workgroup memory. */
function tileFits(t: GatherTile, storage: number): boolean {
  return 64 * (t.bm + t.bn) <= storage;
}

/** A variant of a dense conv's GEMM on the "gpu" profile: a gathered tile, or im2col + the vec4 GEMM. */
type ConvVariant = GatherTile | "im2col";

/**
 * `run` with {@link gatherTile}'s tile for M rows, or with a tuner on the device (`CSN_BENCHMARK=1`) with the
 * fastest of the tiles that fit, each with and without prefetch, and the `im2col` variant where the caller
 * has one, timed on the conv's first call by runs whose outputs `run` returns and this disposes. `key` names
 * the conv's geometry and which of its GEMMs this is.
 */
function tunedGather(
  key: string,
  M: number,
  device: Device,
  run: (t: ConvVariant) => Tensor,
  im2col = false,
  shallowDiffers?: (t: GatherTile) => boolean,
): Tensor {
  const storage = device.info.maxComputeWorkgroupStorageSize;
  const rule = gatherTile(M, storage);
  const tuner = device.tuner;
  if (!tuner) return run(rule);
  const tiles = [rule, ...GATHER_TILES.filter((t) => t !== rule && tileFits(t, storage))];
  const variants: ConvVariant[] = [
    ...tiles,
    ...tiles.map((t) => ({ ...t, prefetch: true })),
    ...(shallowDiffers?.(rule) ? [{ ...rule, deepSplit: false }] : []),
    ...(im2col ? ["im2col" as const] : []),
  ];
  const label = (c: ConvVariant) =>
    c === "im2col"
      ? c
      : `${c.bm}x${c.bn}${c.prefetch ? " prefetch" : ""}${c.deepSplit === false ? " shallow split" : ""}`;
  return run(tuner.choose(`conv ${key}`, variants, (c) => run(c).dispose(), label));
}

/** The key of a conv's GEMM for {@link tunedGather}: which GEMM, and the geometry its speed depends on. */
function convKey(which: string, g: Geo, bias = false): string {
  const { N, C, O, D, H, W, K, S, P, L } = g;
  return `${which} x[${N},${C},${D},${H},${W}] w[${O},${C},${K}] stride ${S} pad ${P} dilation ${L} -> ${g.dtype}${
    bias ? " +bias" : ""
  }${g.relu ? " +relu" : ""}`;
}

/**
 * The source key of a conv's gathered GEMM (see {@link GatherGemm.key}): which GEMM, and the geometry its
 * gathers and stores write as literals (kernel, stride, padding, dilation, bias, ReLU); sizes are uniforms.
 */
function gemmKey(which: string, g: Geo, bias = false): string {
  return `${which} k${g.K} s${g.S} p${g.P} l${g.L}${bias ? " bias" : ""}${g.relu ? " relu" : ""}`;
}

/**
 * Where a gathered GEMM's workgroup memory goes: the A and B tiles (16 rows of bm and bn floats), the gather's
 * table (16 k of a step, or the tile's bn columns) and one vec4 of padding per tile row. The padding matters
 * where 16 neighbouring threads store 16 k of one column: unpadded rows are bm (or bn) floats apart, a
 * multiple of 32 banks, so those stores serialise 16-way; a row of bm + 4 floats spreads them over 8 bank
 * groups (2-way). The table comes first, then the padding, as far as `storage` allows; both change only
 * where values sit, not the arithmetic, so every layout gives the same bits.
 */
export function gatherLayout(
  t: GatherTile,
  by: "column" | "row",
  storage: number,
): { table: boolean; padA: number; padB: number } {
  const tiles = 64 * (t.bm + t.bn), tableBytes = 16 * (by === "column" ? 16 : t.bn);
  const table = tiles + tableBytes <= storage;
  const pads = 256 * (by === "row" ? 2 : 1);
  const pad = tiles + (table ? tableBytes : 0) + pads <= storage ? 1 : 0;
  return { table, padA: pad, padB: by === "row" ? pad : 0 };
}

/**
 * A `bm` x `bn` output tile per workgroup of 256 threads ({@link gatherTile}), K staged 16 at a time through
 * workgroup memory as vec4s (4 consecutive rows of A, 4 consecutive columns of B), so the inner step reads
 * tm / 4 + tn / 4 vec4s for tm x tn FMAs. A thread's rows are 4-row groups 4 ry apart, its columns 4-column
 * groups 4 rx apart, so neighbouring threads read neighbouring vec4s. A is loaded 16 k wide per row, which is
 * contiguous for every operand that is large (the weight gradient's output gradient); B as {@link Gather}
 * says, with the tables and padding of {@link gatherLayout}.
 */
function gatherGemm(s: GatherGemm): void {
  const t = s.tile;
  const g = s.gather, lay = gatherLayout(t, g.by, s.out.device.info.maxComputeWorkgroupStorageSize);
  const { bm, bn, ry, rx } = t, P = t.tm / 4, Q = t.tn / 4;
  const rowA = bm / 4 + lay.padA, rowB = bn / 4 + lay.padB;
  const tm = Math.ceil(s.M / bm), tn = Math.ceil(s.N / bn), tiles = tm * tn;
  const ps = [...Array(P).keys()], qs = [...Array(Q).keys()], fours = [0, 1, 2, 3];
  // c{p}{i}{q}: the 4 columns of column group q for row i of row group p.
  const acc = ps.flatMap((p) => fours.flatMap((i) => qs.map((q) => `c${p}${i}${q}`)));
  const rowOf = (c: string) => `m0 + (${Number(c[1]) * ry}u + ty) * 4u + ${c[2]}u`;
  const colOf = (c: string) => `n0 + (${Number(c[3]) * rx}u + tx) * 4u`;
  const table = () =>
    g.by === "column"
      ? `var<workgroup> Kt: array<vec4<i32>, ${
        t.prefetch ? 32 : 16
      }>;\nfn k_info(k: u32) -> vec4<i32> {\n  ${g.kInfo}\n}`
      : `var<workgroup> Ct: array<vec4<i32>, ${bn}>;\nfn col_info(n: u32) -> vec4<i32> {\n  ${g.colInfo}\n}`;
  launch({
    op: s.op,
    key: `${s.key} ${bm}x${bn} ${ry}x${rx} ${t.prefetch ? "prefetch" : ""} ${lay.table} ${rowA} ${rowB}`,
    work: { flops: 2 * s.M * s.N * s.K },
    args: [...s.args, { name: "out", t: s.out, write: true }],
    wg: 256,
    groups: s.segs * tiles,
    decls: () =>
      `var<workgroup> As: array<vec4<f32>, ${16 * rowA}>;\nvar<workgroup> Bs: array<vec4<f32>, ${
        16 * rowB
      }>;\n${lay.table ? table() : table().replace(/^var.*\n/, "")}`,
    uniforms: {
      gM: s.M,
      gN: s.N,
      gK: s.K,
      gTiles: { d: tiles },
      gTn: { d: tn },
      gSeg: s.segLen,
      ...s.uniforms,
    },
    body: () =>
      `  let sg = div_gTiles(wg);
  let t = wg - sg * sh.gTiles;
  let tq = div_gTn(t);
  let m0 = tq * ${u(bm)};
  let n0 = (t - tq * sh.gTn) * ${u(bn)};
  ${g.by === "column" ? columnSetup(g, bn, lay.table, !!t.prefetch) : lay.table ? rowTable(bn) : ""}
  let tx = lid % ${u(rx)};
  let ty = lid / ${u(rx)};
  ${acc.map((c) => `var ${c} = vec4<f32>(0.0);`).join(" ")}
  let kEnd = min((sg + 1u) * sh.gSeg, sh.gK);
  ${(t.prefetch ? prefetchLoop : plainLoop)(s, t, lay.table, rowA, rowB)}
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {
      ${ps.map((p) => `let a${p} = As[kk * ${u(rowA)} + ${p * ry}u + ty];`).join(" ")}
      ${qs.map((q) => `let b${q} = Bs[kk * ${u(rowB)} + ${q * rx}u + tx];`).join(" ")}
      ${acc.map((c) => `${c} = fma(vec4<f32>(a${c[1]}[${c[2]}]), b${c[3]}, ${c});`).join(" ")}
    }
    ${g.by === "column" && lay.table ? (t.prefetch ? fillK2("k0 + 32u", "par") : fillK("k0 + 16u")) : ""}
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

/**
 * WGSL: the K loop's head without prefetch: each step loads A and gathers B into the workgroup tiles, then
 * waits for all threads (the caller's multiply-adds and closing barrier follow).
 */
function plainLoop(s: GatherGemm, t: GatherTile, table: boolean, rowA: number, rowB: number): string {
  const g = s.gather;
  return `for (var k0 = sg * sh.gSeg; k0 < kEnd; k0 = k0 + 16u) {
    let ak = k0 + lid % 16u;
    let akIn = ak < kEnd;
    let kc = min(ak, kEnd - 1u);
    ${g.by === "row" ? g.setup : ""}
    for (var j = 0u; j < ${u(t.bm / 16)}; j = j + 1u) {
      let ar = lid / 16u + 16u * j;
      let am = m0 + ar;
      var v = 0.0;
      if (am < sh.gM && akIn) { ${s.a("am")} }
      As[(lid % 16u) * ${u(rowA)} + ar / 4u][ar % 4u] = v;
    }
    ${g.by === "column" ? columnLoads(g, t.bn, rowB, table) : rowLoads(g, t.bn, rowB, table)}
    workgroupBarrier();`;
}

/**
 * WGSL: the K loop's head with prefetch: the thread's A and B elements of a step are loaded into registers
 * (`ra<j>`, `rb<j>`: bm / 16 and 16 bn / 256 or bn / 16 of them) one step ahead, so the next step's loads
 * and gathers are in flight while this step multiplies; each step stores its registers into the tiles,
 * waits, and issues the next step's loads. A column gather's k table is double-buffered (parity `par`): the
 * next step's half is read while the step after next is tabulated into the other.
 */
function prefetchLoop(s: GatherGemm, t: GatherTile, table: boolean, rowA: number, rowB: number): string {
  const g = s.gather, nA = t.bm / 16, nB = g.by === "column" ? (16 * t.bn) / 256 : t.bn / 16;
  const js = (n: number) => [...Array(n).keys()];
  const bAt = (j: number) =>
    g.by === "column"
      ? { kr: `(lid / ${u(t.bn)} + ${u((256 / t.bn) * j)})`, lc: "lc" }
      : { kr: "(lid % 16u)", lc: `(lid / 16u + ${u(16 * j)})` };
  const load = (kb: string, half: string) =>
    `{
      let ak = ${kb} + lid % 16u;
      let akIn = ak < kEnd;
      let kc = min(ak, kEnd - 1u);
      ${g.by === "row" ? g.setup : ""}
      ${
      js(nA).map((j) =>
        `{ let am = m0 + lid / 16u + ${u(16 * j)}; var v = 0.0; if (am < sh.gM && akIn) { ${
          s.a("am")
        } } ra${j} = v; }`
      ).join("\n      ")
    }
      ${
      js(nB).map((j) => {
        const { kr, lc } = bAt(j);
        return g.by === "column"
          ? `{ let kr = ${kr}; let bk = ${kb} + kr; var v = 0.0;
        if (bcIn && bk < kEnd) { let bt = ${table ? `Kt[${half} * 16u + kr]` : "k_info(bk)"}; ${
            g.b("bt")
          } } rb${j} = v; }`
          : `{ let lc = ${lc}; let bn = n0 + lc; var v = 0.0;
        if (akIn && bn < sh.gN) { let bt = ${table ? "Ct[lc]" : "col_info(bn)"}; ${
            g.b("bt")
          } } rb${j} = v; }`;
      }).join("\n      ")
    }
    }`;
  const store = [
    ...js(nA).map((j) =>
      `{ let ar = lid / 16u + ${u(16 * j)}; As[(lid % 16u) * ${u(rowA)} + ar / 4u][ar % 4u] = ra${j}; }`
    ),
    ...js(nB).map((j) => {
      const { kr, lc } = bAt(j);
      return `Bs[${kr} * ${u(rowB)} + ${lc} / 4u][${lc} % 4u] = rb${j};`;
    }),
  ].join("\n    ");
  return `${js(nA).map((j) => `var ra${j} = 0.0;`).join(" ")} ${
    js(nB).map((j) => `var rb${j} = 0.0;`).join(" ")
  }
  var par = 0u;
  ${load("sg * sh.gSeg", "0u")}
  for (var k0 = sg * sh.gSeg; k0 < kEnd; k0 = k0 + 16u) {
    ${store}
    workgroupBarrier();
    if (k0 + 16u < kEnd) ${load("k0 + 16u", "(1u - par)")}`;
}

/**
 * WGSL: with prefetch, 16 threads tabulate `k_info` of the K step at `k` into the half `half` of the
 * double-buffered table (the step after next, into the half the current step was read from), and the
 * parity flips for the next step.
 */
function fillK2(k: string, half: string): string {
  return `${fillK(k, `${half} * 16u + `)}
    par = 1u - par;`;
}

/**
 * WGSL: 16 threads tabulate `k_info` of the K step that starts at `k` (column gathers fill the next step's
 * table while the current step multiplies), from table entry `at` on (WGSL prefix of the index).
 */
function fillK(k: string, at = ""): string {
  return `if (lid < 16u) { Kt[${at}lid] = k_info(min(${k} + lid, sh.gK - 1u)); }`;
}

/**
 * WGSL: a column gather's per-thread column, its setup, and the first step's k table (with prefetch, the
 * first two steps', one in each half).
 */
function columnSetup(g: ColumnGather, bn: number, table: boolean, prefetch: boolean): string {
  const fill = prefetch
    ? `${fillK("sg * sh.gSeg")} ${fillK("sg * sh.gSeg + 16u", "16u + ")}`
    : fillK("sg * sh.gSeg");
  return `let lc = lid % ${u(bn)};
  let bc0 = n0 + lc;
  let bcIn = bc0 < sh.gN;
  let bc = min(bc0, sh.gN - 1u);
  ${g.setup}
  ${table ? `${fill}\n  workgroupBarrier();` : ""}`;
}

/** WGSL: the row gather's column table, once per workgroup (bn <= 256 threads). */
function rowTable(bn: number): string {
  return `if (lid < ${u(bn)}) { Ct[lid] = col_info(min(n0 + lid, sh.gN - 1u)); }
  workgroupBarrier();`;
}

/** WGSL: a column gather's B loads of one K step: its column at 16 bn / 256 k. */
function columnLoads(g: ColumnGather, bn: number, rowB: number, table: boolean): string {
  return `for (var j = 0u; j < ${u(16 * bn / 256)}; j = j + 1u) {
      let kr = lid / ${u(bn)} + ${u(256 / bn)} * j;
      let bk = k0 + kr;
      var v = 0.0;
      if (bcIn && bk < kEnd) { let bt = ${table ? "Kt[kr]" : "k_info(bk)"}; ${g.b("bt")} }
      Bs[kr * ${u(rowB)} + lc / 4u][lc % 4u] = v;
    }`;
}

/** WGSL: a row gather's B loads of one K step: the thread's k for bn / 16 columns. */
function rowLoads(g: RowGather, bn: number, rowB: number, table: boolean): string {
  return `for (var j = 0u; j < ${u(bn / 16)}; j = j + 1u) {
      let lc = lid / 16u + 16u * j;
      let bn = n0 + lc;
      var v = 0.0;
      if (akIn && bn < sh.gN) { let bt = ${table ? "Ct[lc]" : "col_info(bn)"}; ${g.b("bt")} }
      Bs[(lid % 16u) * ${u(rowB)} + lc / 4u][lc % 4u] = v;
    }`;
}

/**
 * WGSL setting `v` to the element at i32 coords (`d`, `h`, `w`) of the volume whose {@link volUniforms} prefix
 * is `p`, in tensor `t` at flat index `base` (u32) + `off` (i32) + d pHW + h pW + w; left as it is outside.
 */
function gatherAt(t: string, base: string, off: string, [d, h, w]: string[], p: string): string {
  return `let gd = ${d}; let gh = ${h}; let gw = ${w};
      if (u32(gd) < sh.${p}D && u32(gh) < sh.${p}H && u32(gw) < sh.${p}W) {
        v = ${t}_ld(${base} + u32(${off} + gd * i32(sh.${p}HW) + gh * i32(sh.${p}W) + gw));
      }`;
}

/**
 * WGSL statements of a table function of flat index `k` = (channel, tap) for kernel `K`: the channel's offset
 * (channel x `stride`, a uniform) and each dim's tap offset `sign` x tap x dilation, plus `pad` when `sign`
 * is -1 (the input gradient's output coordinate is q + pad - tap x dilation).
 */
function tapInfo(k: string, g: Geo, stride: string, sign: 1 | -1): string {
  const { K, L, P } = g, KK = K[0] * K[1] * K[2];
  const dim = (t: string, i: number) => sign > 0 ? `${t} * ${L[i]}` : `${P[i]} - ${t} * ${L[i]}`;
  return `let c = ${k} / ${u(KK)}; let kk = ${k} % ${u(KK)};
  let kd = i32(kk / ${u(K[1] * K[2])}); let kh = i32((kk / ${u(K[2])}) % ${u(K[1])}); let kw = i32(kk % ${
    u(K[2])
  });
  return vec4<i32>(i32(c * sh.${stride}), ${dim("kd", 0)}, ${dim("kh", 1)}, ${dim("kw", 2)});`;
}

/**
 * WGSL of the forward's and the weight gradient's gather: x at the output position (`od`, `oh`, `ow`, i32)
 * of sample `xb` (its offset) and tap `t` ({@link tapInfo}, sign 1), 0 in the padding.
 */
function gatherInput(g: Geo): { setup: string; b: (t: string) => string } {
  const { S, P } = g;
  return {
    setup: `let d0 = od * ${S[0]} - ${P[0]}; let h0 = oh * ${S[1]} - ${P[1]}; let w0 = ow * ${S[2]} - ${
      P[2]
    };`,
    b: (t) => gatherAt("x", "xb", `${t}.x`, [`d0 + ${t}.y`, `h0 + ${t}.z`, `w0 + ${t}.w`], "x"),
  };
}

/** Implicit-GEMM forward of a one-group conv: M = O, N = batch x output positions, K = C x taps. */
export function implicitForward(op: string, x: Tensor, w: Tensor, b: Tensor | null, g: Geo): Tensor {
  const { N, C, O, D, H, W, OD, OH, OW, K } = g;
  const KK = K[0] * K[1] * K[2], OS = OD * OH * OW;
  const gx = gatherInput(g);
  return tunedGather(convKey("forward", g, !!b), O, x.device, (tile) => {
    if (tile === "im2col") return im2colForward(op, x, w, b, g, GPU_COL_FLOATS);
    const y = Tensor.empty(x.device, [N, O, OD, OH, OW], g.dtype, op);
    gatherGemm({
      tile,
      op,
      key: gemmKey("forward", g, !!b),
      args: [{ name: "x", t: x }, { name: "w", t: w }, ...(b ? [{ name: "b", t: b }] : [])],
      out: y,
      M: O,
      N: N * OS,
      K: C * KK,
      segs: 1,
      segLen: C * KK,
      uniforms: { ...volUniforms("x", D, H, W), ...volUniforms("o", OD, OH, OW), C, O },
      a: (m) => `v = w_ld(${m} * sh.gK + ak);`,
      gather: {
        by: "column",
        setup: `let cn = div_oS(bc); let cp = bc - cn * sh.oS;
  ${split3("cp", "o", "od", "oh", "ow")}
  let xb = cn * sh.C * sh.xS;
  ${gx.setup}`,
        kInfo: tapInfo("k", g, "xS", 1),
        b: gx.b,
      },
      store: (m, n, val) =>
        `let sn = div_oS(${n}); out_st((sn * sh.O + ${m}) * sh.oS + ${n} - sn * sh.oS, ${
          act(`${val}${b ? ` + b_ld(${m})` : ""}`, g.relu)
        });`,
    });
    return y;
  }, true);
}

/** Implicit-GEMM input gradient: M = C, N = batch x input positions, K = O x taps. */
export function implicitGradInput(op: string, gy: Tensor, w: Tensor, g: Geo): Tensor {
  const { N, C, O, D, H, W, OD, OH, OW, K, S } = g;
  const KK = K[0] * K[1] * K[2], XS = D * H * W;
  // The output coordinate along dim i of input coordinate q and tap offset (pad - tap x dilation): t / stride
  // where t = q + offset is on the stride grid, else -1 (outside).
  const at = (q: string, off: string, i: number) =>
    S[i] === 1
      ? `${q} + ${off}`
      : `select(-1, (${q} + ${off}) / ${S[i]}, ${q} + ${off} >= 0 && (${q} + ${off}) % ${S[i]} == 0)`;
  return tunedGather(convKey("input gradient", g), C, gy.device, (tile) => {
    if (tile === "im2col") throw new Error(`${op}: no im2col input gradient`);
    const gx = Tensor.empty(gy.device, [N, C, D, H, W], "f32", op);
    gatherGemm({
      tile,
      op,
      key: gemmKey("input gradient", g),
      args: [{ name: "gy", t: gy }, { name: "w", t: w }],
      out: gx,
      M: C,
      N: N * XS,
      K: O * KK,
      segs: 1,
      segLen: O * KK,
      uniforms: { ...volUniforms("x", D, H, W), ...volUniforms("o", OD, OH, OW), C, O },
      a: (m) => `v = w_ld(((ak / ${u(KK)}) * sh.C + ${m}) * ${u(KK)} + ak % ${u(KK)});`,
      gather: {
        by: "column",
        setup: `let cn = div_xS(bc); let cq = bc - cn * sh.xS;
  ${split3("cq", "x", "qd", "qh", "qw")}
  let yb = cn * sh.O * sh.oS;`,
        kInfo: tapInfo("k", g, "oS", -1),
        b: (t) =>
          gatherAt(
            "gy",
            "yb",
            `${t}.x`,
            [at("qd", `${t}.y`, 0), at("qh", `${t}.z`, 1), at("qw", `${t}.w`, 2)],
            "o",
          ),
      },
      store: (m, n, val) =>
        `let sn = div_xS(${n}); out_st((sn * sh.C + ${m}) * sh.xS + ${n} - sn * sh.xS, ${val});`,
    });
    return gx;
  });
}

/** Implicit-GEMM weight gradient: M = O, N = C x taps, K = batch x output positions (split when long). */
export function implicitGradWeight(op: string, gy: Tensor, x: Tensor, g: Geo): Tensor {
  const { N, C, O, D, H, W, OD, OH, OW, K } = g;
  const KK = K[0] * K[1] * K[2], OS = OD * OH * OW, J = C * KK;
  const gx = gatherInput(g);
  const tilesOf = (t: GatherTile) => Math.ceil(O / t.bm) * Math.ceil(J / t.bn);
  const shallowDiffers = (t: GatherTile) =>
    kSegments(tilesOf(t), N * OS, O * J, false).segs !== kSegments(tilesOf(t), N * OS, O * J).segs;
  return tunedGather(
    convKey("weight gradient", g),
    O,
    gy.device,
    (tile) => {
      if (tile === "im2col") return im2colGradWeight(op, gy, x, g, GPU_COL_FLOATS);
      const { segs, segLen } = kSegments(tilesOf(tile), N * OS, O * J, tile.deepSplit ?? true);
      const part = Tensor.empty(gy.device, [segs, O, C, K[0], K[1], K[2]], "f32", op);
      gatherGemm({
        tile,
        op,
        key: gemmKey("weight gradient", g),
        args: [{ name: "gy", t: gy }, { name: "x", t: x }],
        out: part,
        M: O,
        N: J,
        K: N * OS,
        segs,
        segLen,
        uniforms: { ...volUniforms("x", D, H, W), ...volUniforms("o", OD, OH, OW), C, O, OJ: O * J },
        a: (m) => `v = gy_ld(ab + ${m} * sh.oS);`,
        gather: {
          by: "row",
          setup: `let kn = div_oS(kc); let kp = kc - kn * sh.oS;
    ${split3("kp", "o", "od", "oh", "ow")}
    let xb = kn * sh.C * sh.xS;
    let ab = kn * sh.O * sh.oS + kp;
    ${gx.setup}`,
          colInfo: tapInfo("n", g, "xS", 1),
          b: gx.b,
        },
        store: (m, n, val) => `out_st(sg * sh.OJ + ${m} * sh.gN + ${n}, ${val});`,
      });
      const r = segs === 1 ? part.reshape([O, C, K[0], K[1], K[2]]) : sum(part, 0);
      part.dispose();
      return r;
    },
    true,
    shallowDiffers,
  );
}
