/**
 * @file Batched matrix multiply with optional transposes and broadcast batch dims (PyTorch `matmul`
 * semantics for >= 1-D operands). Profile "gpu": shared-memory tiled GEMMs ({@link gemmVec4}, else
 * {@link gemmTiled}); profile "cpu": register-blocked kernels without workgroup memory (`gemmLanes`,
 * `gemmNT`), see docs/perf.md.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { type Arg, launch, launch1d, u, type Uniforms } from "./codegen.ts";
import { broadcastShapes, map } from "./elementwise/map.ts";
import { add } from "./elementwise/binary.ts";
import { sum, sumTo } from "./reduce.ts";
import { castFloat } from "./cast.ts";
import { env } from "../core/adapter.ts";

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** Use the transpose of the last two dims of `a`. */
  transA?: boolean;
  /** Use the transpose of the last two dims of `b`. */
  transB?: boolean;
}

function batchOffsetCode(
  name: string,
  outBatch: readonly number[],
  inBatch: readonly number[],
  matSize: number,
  uni: Uniforms,
): string {
  // Offset of the matrix for linear output batch index `bi`, broadcasting size-1 / missing batch dims. Which
  // dims broadcast decides the code; their sizes and strides are uniforms (`<name>b<d>`, `<name>s<d>`).
  const nd = outBatch.length;
  const lines = [`var ${name} = 0u;`, `{ var r = bi;`];
  let stride = matSize;
  for (let d = nd - 1; d >= 0; d--) {
    const k = d - (nd - inBatch.length);
    const bcast = k < 0 || inBatch[k] === 1;
    if (outBatch[d] === 1) continue;
    uni[`${name}b${d}`] = { d: outBatch[d] };
    if (!bcast) uni[`${name}s${d}`] = stride;
    lines.push(
      `  { let q = div_${name}b${d}(r); let c = r - q * sh.${name}b${d}; r = q;${
        bcast ? "" : ` ${name} = ${name} + c * sh.${name}s${d};`
      } }`,
    );
    if (!bcast) stride *= inBatch[k];
  }
  lines.push("}");
  return lines.join("\n");
}

/**
 * What a GEMM applies to each result as it stores it: `+ bias[m]`, `+ residual`, then max(., 0) (a pointwise
 * conv's bias, a bottleneck's shortcut and its ReLU, with no pass of their own). Where the K split or a
 * batch sum leaves partial products, one pass after their sum applies it instead.
 */
export interface GemmEpilogue {
  /** [M]: added to every row m of each product. */
  bias?: Tensor | null;
  /** A contiguous tensor of the output's shape, added elementwise (f32 or f16). */
  residual?: Tensor | null;
  /** max(., 0) after the additions. */
  relu?: boolean;
}

/**
 * Where a GEMM hands over the per-row moments of what it stored, for a training-mode batch norm over the rows
 * of every product (a pointwise conv's output channels): `part` becomes [segments, M, 3] (count, mean, sum
 * of squared deviations; means not shifted) where the kernel can compute them as it stores (the "gpu"
 * profile's vec4 tiles without a K split), and stays null otherwise. The caller disposes it.
 */
export interface GemmMoments {
  part: Tensor | null;
}

/** Options of {@link gemm}. */
export interface GemmOptions extends GemmEpilogue {
  /** Ask for the output's per-row moments ({@link GemmMoments}). */
  moments?: GemmMoments | null;
  /** Sum the batch's products into one [M, N] matrix. */
  sumBatch?: boolean;
  /** Stored dtype (default f32); accumulation is f32 either way. */
  dtype?: "f32" | "f16";
  /** The vec4 tile of the "gpu" profile instead of {@link gemmTile}'s choice (tests, measurements). */
  tile?: GemmTile;
  /**
   * The vec4 kernel loads the next K step while it multiplies this one (tests, measurements; a tuner on the
   * device, `CSN_BENCHMARK=1`, times both ways). Giving `tile`, `prefetch` or `deepSplit` turns tuning off
   * for the call.
   */
  prefetch?: boolean;
  /** False: K split by {@link kSegments}' first rule only (tests, measurements; a tuner variant). */
  deepSplit?: boolean;
}

/**
 * op(a) @ op(b) for tensors of rank >= 2 with broadcast batch dims (no autograd; used by other ops). With
 * `sumBatch` the batch's products are summed into one [M, N] matrix (a pointwise conv's weight gradient over
 * the samples): on the "gpu" profile the tiles write each product as one more partial of the K split, so
 * the batch sum costs no dispatch of its own. `dtype` "f16" stores the f32-accumulated result rounded; the
 * epilogue options ({@link GemmEpilogue}) are applied before that rounding.
 */
export function gemm(
  op: string,
  a: Tensor,
  b: Tensor,
  transA: boolean,
  transB: boolean,
  opts: GemmOptions = {},
): Tensor {
  const dtype = opts.dtype ?? "f32";
  if (dtype === "f16" && opts.sumBatch) throw new Error(`${op}: a batch-summed GEMM stores f32`);
  const epi = epilogueOf(opts);
  if (epi && opts.sumBatch) throw new Error(`${op}: a batch-summed GEMM takes no epilogue`);
  const ar = a.shape.slice(-2), br = b.shape.slice(-2);
  const M = transA ? ar[1] : ar[0];
  const K = transA ? ar[0] : ar[1];
  const Kb = transB ? br[1] : br[0];
  const N = transB ? br[0] : br[1];
  if (K !== Kb) {
    throw new Error(
      `${op}: inner dims differ: [${a.shape}]${transA ? "^T" : ""} @ [${b.shape}]${
        transB ? "^T" : ""
      } (${K} vs ${Kb})`,
    );
  }
  const batch = broadcastShapes(op, a.shape.slice(0, -2), b.shape.slice(0, -2));
  const nb = batch.reduce((p, d) => p * d, 1);
  const cpuNT = a.device.profile === "cpu" && transB && !transA && K % 4 === 0;
  if (opts.sumBatch && nb !== 1 && ((a.device.profile === "cpu" && !cpuNT) || nb === 0 || K === 0)) {
    // The "cpu" lanes kernel has no K split to fold the batch into: sum the products afterwards.
    const full = gemm(op, a, b, transA, transB);
    const r = sum(full.reshape([nb, M, N]), 0);
    full.dispose();
    return r;
  }
  const outShape = opts.sumBatch ? [M, N] : [...batch, M, N];
  if (epi) checkEpilogue(op, epi, M, outShape, a);
  if (K === 0 && epi) {
    const z = gemm(op, a, b, transA, transB);
    const r = epilogueMap(op, z, epi, dtype);
    z.dispose();
    return r;
  }
  const out = Tensor.empty(a.device, outShape, dtype, op);
  if (out.numel() === 0) return out;
  if (K === 0) {
    launch1d({
      op,
      args: [{ name: "c", t: out, write: true }],
      n: out.numel(),
      body: `  c_st(gid, 0.0);`,
    });
    return out;
  }
  // A(m, k) and B(k, n) addresses within one batch matrix.
  // Sizes, strides and batch offsets are uniforms (`sh.M`, ...): one pipeline per layout variant (transposes,
  // vec4 paths, broadcast pattern), not per shape (docs/perf.md, "Compile cost").
  const aIdx = (m: string, k: string) => (transA ? `${k} * sh.M + ${m}` : `${m} * sh.K + ${k}`);
  const bIdx = (k: string, n: string) => (transB ? `${n} * sh.K + ${k}` : `${k} * sh.N + ${n}`);
  const uni: Uniforms = { M, N, K };
  const offsets = `${batchOffsetCode("aoff", batch, a.shape.slice(0, -2), M * K, uni)}
  ${batchOffsetCode("boff", batch, b.shape.slice(0, -2), K * N, uni)}`;
  const base = { M, N, K, nb, aIdx, bIdx, offsets, transA, transB, uni, epi };
  if (cpuNT) {
    gemmNT(op, a, b, out, { ...base, sumBatch: opts.sumBatch ?? false });
    return out;
  }
  if (a.device.profile === "cpu") {
    gemmLanes(op, a, b, out, { ...base, sumBatch: false });
    return out;
  }
  const geo = { ...base, sumBatch: opts.sumBatch ?? false };
  if (vec4Layout(geo)) {
    const moments = opts.moments ?? null;
    const v = opts.tile || opts.prefetch !== undefined || opts.deepSplit !== undefined
      ? {
        tile: opts.tile ?? gemmTile(M, N, K, nb, !!moments),
        prefetch: !!opts.prefetch,
        deepSplit: opts.deepSplit,
      }
      : tunedVariant(op, a, b, geo, outShape, dtype, moments);
    gemmVec4(op, a, b, out, geo, v.tile, moments, v.prefetch, v.deepSplit);
  } else gemmTiled(op, a, b, out, geo);
  return out;
}

/** A variant of the vec4 GEMM: its tile, and whether it loads the next K step while multiplying. */
export interface GemmVariant {
  tile: GemmTile;
  prefetch: boolean;
  /** {@link kSegments}' second rule (default) or only its first. */
  deepSplit?: boolean;
}

/**
 * {@link gemmTile}'s tile without prefetch, or with a tuner on the device (`CSN_BENCHMARK=1`) the fastest of
 * the tiles that suit the product, each with and without prefetch, timed into scratch outputs on the
 * product's first call.
 */
function tunedVariant(
  op: string,
  a: Tensor,
  b: Tensor,
  g: GemmGeo,
  outShape: number[],
  dtype: "f32" | "f16",
  moments: GemmMoments | null,
): GemmVariant {
  const tuner = a.device.tuner;
  if (!tuner) return { tile: gemmTile(g.M, g.N, g.K, g.nb, !!moments), prefetch: false };
  const variants = gemmVariants(g.M, g.N, g.K, g.nb, !!moments);
  const e = g.epi;
  const key = [
    `gemm ${a.dtype}[${a.shape}]${g.transA ? "^T" : ""} @ ${b.dtype}[${b.shape}]${
      g.transB ? "^T" : ""
    } -> ${dtype}`,
    g.sumBatch ? "summed" : "",
    e?.bias ? "+bias" : "",
    e?.residual ? `+residual ${e.residual.dtype}` : "",
    e?.relu ? "+relu" : "",
    moments ? "+moments" : "",
  ].filter((x) => x).join(" ");
  return tuner.choose(key, variants, (v) => {
    const o = Tensor.empty(a.device, outShape, dtype, op);
    const m: GemmMoments | null = moments && { part: null };
    gemmVec4(op, a, b, o, g, v.tile, m, v.prefetch, v.deepSplit);
    o.dispose();
    m?.part?.dispose();
  }, gemmVariantLabel);
}

/**
 * The vec4 GEMM's variants for an M x N x K product (batch `nb`), {@link gemmTile}'s tile without prefetch
 * first: each tile that suits it (with the `moments` epilogue, BN >= BM) without and with prefetch, and where
 * K is long enough for {@link kSegments}' second rule, the rule's tile split by the first rule only. With
 * moments, only those that fuse them as the rule's tile does (a split product hands them to a pass of its
 * own, which a trial would not time).
 */
export function gemmVariants(M: number, N: number, K: number, nb = 1, moments = false): GemmVariant[] {
  const rule = gemmTile(M, N, K, nb, moments);
  const tiles = [
    rule,
    ...GEMM_TILES.filter((t) => !(t[0] === rule[0] && t[1] === rule[1]) && !(moments && t[1] < t[0])),
  ];
  const v: GemmVariant[] = [false, true].flatMap((prefetch) => tiles.map((tile) => ({ tile, prefetch })));
  const segs = (t: GemmTile, deep?: boolean) => tileSplit(M, N, K, nb, t, deep).segs;
  if (segs(rule, false) !== segs(rule)) v.push({ tile: rule, prefetch: false, deepSplit: false });
  const fused = (x: GemmVariant) => segs(x.tile, x.deepSplit) === 1;
  return moments ? v.filter((x) => fused(x) === fused(v[0])) : v;
}

/** "128x64", "128x64 prefetch", "64x64 shallow split": a variant as the tuner's table shows it. */
export function gemmVariantLabel(v: GemmVariant): string {
  return `${16 * v.tile[0]}x${16 * v.tile[1]}${v.prefetch ? " prefetch" : ""}${
    v.deepSplit === false ? " shallow split" : ""
  }`;
}

/** Sizes, index expressions and uniforms of one GEMM, as `gemm` hands them to a kernel. */
interface GemmGeo {
  M: number;
  N: number;
  K: number;
  nb: number;
  aIdx: (m: string, k: string) => string;
  bIdx: (k: string, n: string) => string;
  offsets: string;
  transA: boolean;
  transB: boolean;
  uni: Uniforms;
  /** Sum the batch's products into one matrix (see {@link gemm}). */
  sumBatch: boolean;
  /** Applied as the results are stored, or by one pass after the partials' sum. */
  epi: GemmEpilogue | null;
}

/** The options' epilogue, or null when it does nothing. */
function epilogueOf(o: GemmEpilogue): GemmEpilogue | null {
  return o.bias || o.residual || o.relu
    ? { bias: o.bias ?? null, residual: o.residual ?? null, relu: !!o.relu }
    : null;
}

function checkEpilogue(op: string, e: GemmEpilogue, M: number, shape: number[], a: Tensor): void {
  const { bias, residual } = e;
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== M || bias.device !== a.device)) {
    throw new Error(`${op}: epilogue bias must be [${M}] on the operands' device, got ${bias.describe()}`);
  }
  if (residual && (residual.shape.join() !== shape.join() || residual.device !== a.device)) {
    throw new Error(
      `${op}: residual must be [${shape}] on the operands' device, got ${residual.describe()}`,
    );
  }
  if (residual && residual.dtype !== "f32" && residual.dtype !== "f16") {
    throw new Error(`${op}: residual must be f32 or f16, got ${residual.describe()}`);
  }
}

/**
 * The epilogue in a kernel that stores `out` itself: its bindings and the WGSL function `epi(v, m, i)` of a
 * result of row m at output index i (with `vec4`: four results of row m at vec4 index i, the residual bound
 * as vec4). Nothing when `part` is not `out` (the pass after the sum applies it).
 */
function epilogueCode(
  e: GemmEpilogue | null,
  part: Tensor,
  out: Tensor,
  vec4: boolean,
): { args: Arg[]; decls: string; at: (v: string, m: string, i: string) => string } {
  if (!e || part !== out) return { args: [], decls: "", at: (v) => v };
  const args: Arg[] = [];
  if (e.bias) args.push({ name: "eb", t: e.bias });
  if (e.residual) args.push({ name: "er", t: e.residual, vec4 });
  const T = vec4 ? "vec4<f32>" : "f32";
  const decls = `fn epi(v: ${T}, m: u32, i: u32) -> ${T} {
  var r = v;${e.bias ? ` r = r + ${T}(eb_ld(m));` : ""}${e.residual ? " r = r + er_ld(i);" : ""}
  return ${e.relu ? `max(r, ${T}(0.0))` : "r"};
}`;
  return { args, decls, at: (v, m, i) => `epi(${v}, ${m}, ${i})` };
}

/** The epilogue as its own pass over `y` (after a K split's sum), stored as `dtype`. */
function epilogueMap(op: string, y: Tensor, e: GemmEpilogue, dtype: "f32" | "f16"): Tensor {
  const M = y.shape[y.ndim - 2];
  const ins = [y, ...(e.bias ? [e.bias.reshape([M, 1])] : []), ...(e.residual ? [e.residual] : [])];
  return map(op, ins, dtype, (v) => {
    let r = v[0];
    if (e.bias) r = `${r} + ${v[1]}`;
    if (e.residual) r = `${r} + ${v[ins.length - 1]}`;
    return e.relu ? `max(${r}, 0.0)` : r;
  });
}

/**
 * The "gpu" profile's fallback GEMM (operands {@link gemmVec4} cannot load as vec4): the classic shared-memory
 * kernel, a 64x64 output tile per workgroup of 256 threads,
 * K staged through workgroup memory 16 at a time, 4x4 outputs per thread as four vec4 accumulators; tile loads
 * read 4 consecutive elements per thread in whichever layout (normal or transposed) the operand is stored.
 * When the tiles are too few to fill a GPU and K is long (the weight gradient of a pointwise conv, K =
 * positions: one 64x64 tile over 262144 positions ran at 0.04 TFLOP/s on an H200), K is split into segments
 * whose partial products a reduction adds.
 */
function gemmTiled(
  op: string,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  g: GemmGeo,
): void {
  const { M, N, K, nb, aIdx, bIdx, transA, transB } = g;
  const offsets = g.offsets;
  const BM = 64, BN = 64, BK = 16, WG = 256;
  const tm = Math.ceil(M / BM), tn = Math.ceil(N / BN), tiles = nb * tm * tn;
  const { segs, segLen } = kSegments(tiles, K, M * N * nb);
  const part = partials(op, out, segs, g);
  const ep = epilogueCode(g.epi, part, out, false);
  // Tile loaders: each thread loads 4 elements that are consecutive in memory.
  const loadA = transA
    ? `{ let kk = lid / 16u; let mq = (lid % 16u) * 4u; let k = k0 + kk;
         for (var j = 0u; j < 4u; j = j + 1u) { let m = m0 + mq + j;
           var v = 0.0; if (m < sh.M && k < sh.K) { v = a_ld(aoff + ${aIdx("m", "k")}); }
           As[kk * ${u(BM)} + mq + j] = v; } }`
    : `{ let mm = lid / 4u; let kq = (lid % 4u) * 4u; let m = m0 + mm;
         for (var j = 0u; j < 4u; j = j + 1u) { let k = k0 + kq + j;
           var v = 0.0; if (m < sh.M && k < sh.K) { v = a_ld(aoff + ${aIdx("m", "k")}); }
           As[(kq + j) * ${u(BM)} + mm] = v; } }`;
  const loadB = transB
    ? `{ let nn = lid / 4u; let kq = (lid % 4u) * 4u; let n = n0 + nn;
         for (var j = 0u; j < 4u; j = j + 1u) { let k = k0 + kq + j;
           var v = 0.0; if (n < sh.N && k < sh.K) { v = b_ld(boff + ${bIdx("k", "n")}); }
           Bs[(kq + j) * ${u(BN)} + nn] = v; } }`
    : `{ let kk = lid / 16u; let nq = (lid % 16u) * 4u; let k = k0 + kk;
         for (var j = 0u; j < 4u; j = j + 1u) { let n = n0 + nq + j;
           var v = 0.0; if (n < sh.N && k < sh.K) { v = b_ld(boff + ${bIdx("k", "n")}); }
           Bs[kk * ${u(BN)} + nq + j] = v; } }`;
  launch({
    op,
    work: { flops: 2 * M * N * K * nb },
    args: [{ name: "a", t: a }, { name: "b", t: b }, { name: "c", t: part, write: true }, ...ep.args],
    wg: WG,
    groups: segs * tiles,
    decls: `var<workgroup> As: array<f32, ${BK * BM}>;
var<workgroup> Bs: array<f32, ${BK * BN}>;
${ep.decls}`,
    uniforms: { ...g.uni, nb, tiles: { d: tiles }, tmn: { d: tm * tn }, tn: { d: tn }, segLen },
    body: `${tileStart(BM, BN)}
  ${offsets}
  let tx = lid % 16u;
  let ty = lid / 16u;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  let kEnd = min((sg + 1u) * sh.segLen, sh.K);
  for (var k0 = sg * sh.segLen; k0 < kEnd; k0 = k0 + ${u(BK)}) {
    ${loadA}
    ${loadB}
    workgroupBarrier();
    for (var kk = 0u; kk < ${u(BK)}; kk = kk + 1u) {
      let ab = kk * ${u(BM)} + ty * 4u;
      let bb = kk * ${u(BN)} + tx * 4u;
      let av = vec4<f32>(As[ab], As[ab + 1u], As[ab + 2u], As[ab + 3u]);
      let bv = vec4<f32>(Bs[bb], Bs[bb + 1u], Bs[bb + 2u], Bs[bb + 3u]);
      acc0 = fma(vec4<f32>(av.x), bv, acc0);
      acc1 = fma(vec4<f32>(av.y), bv, acc1);
      acc2 = fma(vec4<f32>(av.z), bv, acc2);
      acc3 = fma(vec4<f32>(av.w), bv, acc3);
    }
    workgroupBarrier();
  }
  let coff = (sg * sh.nb + bi) * sh.M * sh.N;
  let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
  for (var i = 0u; i < 4u; i = i + 1u) {
    let m = m0 + ty * 4u + i;
    if (m < sh.M) {
      let row = accs[i];
      for (var j = 0u; j < 4u; j = j + 1u) {
        let n = n0 + tx * 4u + j;
        if (n < sh.N) { let ci = coff + m * sh.N + n; c_st(ci, ${ep.at("row[j]", "m", "ci")}); }
      }
    }
  }`,
  });
  addSegments(op, part, out, g.epi);
}

/**
 * WGSL of a tiled GEMM's workgroup position: K segment `sg`, batch `bi`, and the output tile's first row `m0`
 * and column `n0` (uniforms `tiles`, `tmn`, `tn`).
 */
function tileStart(BM: number, BN: number): string {
  return `  let sg = div_tiles(wg);
  let t0 = wg - sg * sh.tiles;
  let bi = div_tmn(t0);
  let t = t0 - bi * sh.tmn;
  let tq = div_tn(t);
  let m0 = tq * ${u(BM)};
  let n0 = (t - tq * sh.tn) * ${u(BN)};`;
}

/**
 * Where a tiled GEMM writes: `out` itself, or partial products [segs x batches, M, N] (K segment major, as
 * the kernels' `coff` counts) when K is split or the batch is summed (`g.sumBatch`: `out` is [M, N]).
 */
function partials(op: string, out: Tensor, segs: number, g: GemmGeo): Tensor {
  const batches = g.sumBatch ? g.nb : 1;
  if (segs * batches === 1) return out;
  return Tensor.empty(out.device, [segs * batches, ...out.shape], "f32", op);
}

/**
 * Sums the partial products `part` ([segs x batches, ...]) into `out`, then applies the epilogue; nothing when
 * `part` is `out` (the kernel applied it).
 */
function addSegments(op: string, part: Tensor, out: Tensor, epi: GemmEpilogue | null): void {
  if (part === out) return;
  const s = sum(part, 0);
  const r = epi
    ? epilogueMap(op, s, epi, out.dtype as "f32" | "f16")
    : s.dtype === out.dtype
    ? s
    : castFloat(s, out.dtype as "f16");
  out.assign(r);
  if (r !== s) r.dispose();
  s.dispose();
  part.dispose();
}

/**
 * Whether {@link gemmVec4} can run a GEMM: every operand's contiguous dim and N a multiple of 4, so that each
 * vec4 lies wholly inside or wholly outside the matrix (ragged M, N, K at the tile edges are then masked per
 * vec4) and batch offsets stay vec4-aligned. Pointwise convs with channels and positions divisible by 4 (all
 * of the CSN's but the stem's input) qualify in all three of their GEMMs.
 */
function vec4Layout(g: GemmGeo): boolean {
  return g.N % 4 === 0 && (g.transA ? g.M : g.K) % 4 === 0 && (g.transB ? g.K : g.N) % 4 === 0;
}

/**
 * K segments when the output tiles are too few to fill a GPU (under ~2 workgroups per SM of a 132-SM part)
 * and K is long, as in weight gradients (K = positions): enough for 264 workgroups with segments of at least
 * 16 K tiles of 16, and where K is much longer, up to ~2048 workgroups with segments of at least 256 K tiles
 * (so a forward's K = channels is never split by it). A few hundred workgroups that each run for the whole
 * kernel leave most of a GPU's warp slots empty (the UNet's 3x3x3 weight gradient, 5 tiles: 265 workgroups
 * of 20k K steps each on the H200, 3.2 TFLOP/s), and the partial products stay small beside the work (one
 * tile per 256 K steps). `outElems` (M x N x batch) caps them at 64 MiB, unless the first rule needs more.
 * `deepSplit` false keeps to the first rule (a tuner variant, to measure the second).
 */
export function kSegments(
  tiles: number,
  K: number,
  outElems = 0,
  deepSplit = true,
): { segs: number; segLen: number } {
  const kTiles = Math.ceil(K / 16);
  if (tiles >= 264) return { segs: 1, segLen: kTiles * 16 };
  const fill = Math.min(Math.floor(264 / tiles), Math.floor(kTiles / 16));
  const deep = deepSplit
    ? Math.min(Math.floor(2048 / tiles), Math.floor(kTiles / 256), Math.floor(2 ** 24 / outElems))
    : 0;
  const per = Math.ceil(kTiles / Math.max(1, fill, deep));
  return { segs: Math.ceil(kTiles / per), segLen: per * 16 };
}

/** A {@link gemmVec4} tile: TM x TN outputs per thread (4 or 8 each), so BM = 16 TM rows by BN = 16 TN columns. */
export type GemmTile = [4 | 8, 4 | 8];

/** The output tiles of an M x N product (batch `nb`) in tile `t`, and how {@link kSegments} splits its K. */
function tileSplit(
  M: number,
  N: number,
  K: number,
  nb: number,
  t: GemmTile,
  deepSplit = true,
): { tiles: number; segs: number; segLen: number } {
  const tiles = nb * Math.ceil(M / (16 * t[0])) * Math.ceil(N / (16 * t[1]));
  return { tiles, ...kSegments(tiles, K, M * N * nb, deepSplit) };
}

/** Every {@link GemmTile}. */
const GEMM_TILES: readonly GemmTile[] = [[4, 4], [8, 4], [4, 8], [8, 8]];

/**
 * The vec4 GEMM's tile for an M x N x K product (batch `nb`). With K under 256 (a forward or input gradient
 * of a pointwise conv with few channels) 8 x 8 only where M and N are both 512 or more, else 4 x 4: on the
 * H200 the 64 x 64 tile beat 128 x 128 on such shapes (docs/perf.md, the tiling scan: 7.2 against 4.5
 * TFLOP/s at K = 64), as more workgroups per SM hide the loads of few K steps. From K = 256 on (weight
 * gradients: K = positions) the tile with the best estimated rate: the scan's rate at 4096^3 relative to 4 x
 * 4 (8 x 8 1.32, 8 x 4 1.17, 4 x 8 1.05: fewer workgroup-memory reads per FMA), times the share of 264
 * workgroups it gives (K segments included; two per SM of a 132-SM GPU), over the padding its edge tiles
 * add. `wide` (the batch-norm moments epilogue) needs BN >= BM. Env `CSN_GEMM_TILES=square` keeps the
 * short-K rule for every K, to measure one against the other.
 */
export function gemmTile(M: number, N: number, K: number, nb = 1, wide = false): GemmTile {
  const square: GemmTile = M >= 512 && N >= 512 ? [8, 8] : [4, 4];
  if (K < 256 || env("CSN_GEMM_TILES") === "square") return square;
  const rate = (t: GemmTile) => {
    const bm = 16 * t[0], bn = 16 * t[1];
    const { tiles, segs } = tileSplit(M, N, K, nb, t);
    const groups = tiles * segs;
    const padding = (Math.ceil(M / bm) * bm * Math.ceil(N / bn) * bn) /
      (Math.ceil(M / 64) * 64 * Math.ceil(N / 64) * 64);
    const speed = t[0] === 8 ? (t[1] === 8 ? 1.32 : 1.17) : (t[1] === 8 ? 1.05 : 1);
    return speed * Math.min(1, groups / 264) / padding;
  };
  let best: GemmTile = [4, 4];
  for (const t of [[8, 8], [8, 4], [4, 8]] as GemmTile[]) {
    if (!(wide && t[1] < t[0]) && rate(t) > rate(best)) best = t;
  }
  return best;
}

/**
 * The "gpu" profile's main GEMM: a (16 TM) x (16 TN) output tile per workgroup of 16 x 16 threads, TM x TN
 * outputs per thread (4 or 8 each, {@link gemmTile}), K staged through workgroup memory 16 at a time as
 * vec4s, so the inner step reads (TM + TN) / 4 vec4s for TM TN FMAs. Global loads and stores
 * are vec4 in whichever layout each operand is stored; a thread's rows and columns are 4-wide groups strided
 * by 64 so that neighbouring threads read neighbouring vec4s. The tiling of the scan in docs/perf.md
 * (128 x 128 x 16, 8 x 8: 30.7 TFLOP/s, 60 % of cuBLAS, on an H200), here with masked edges, batch and
 * the K split.
 */
function gemmVec4(
  op: string,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  g: GemmGeo,
  [TM, TN]: GemmTile,
  moments: GemmMoments | null,
  prefetch = false,
  deepSplit = true,
): void {
  const { M, N, K, nb } = g;
  const BM = 16 * TM, BN = 16 * TN, BK = 16;
  if (moments && BN < BM) {
    throw new Error(`${op}: the moments epilogue needs a tile at least as wide as tall`);
  }
  const tm = Math.ceil(M / BM), tn = Math.ceil(N / BN);
  const { tiles, segs, segLen } = tileSplit(M, N, K, nb, [TM, TN], deepSplit);
  const part = partials(op, out, segs, g);
  const ep = epilogueCode(g.epi, part, out, true);
  // Row groups of 64 (a thread's rows r * 64 + ty * 4 + i) and column groups of 64.
  const rms = [...Array(TM / 4).keys()], rns = [...Array(TN / 4).keys()];
  // An operand stored along k is scattered into the tile by 4 neighbouring threads holding 4 k of one row:
  // with rows BM floats apart (a multiple of 32 banks) those stores meet 4-way in a bank on a GPU; a row
  // padded by one vec4 makes it 2-way. Only where the memory allows (16 KiB fits the 128 tile unpadded).
  const padded = 16 * BK * (BM / 4 + BN / 4 + 2) <= out.device.info.maxComputeWorkgroupStorageSize;
  const rowA = BM / 4 + (padded && !g.transA ? 1 : 0), rowB = BN / 4 + (padded && g.transB ? 1 : 0);
  const mom = moments && part === out ? Tensor.empty(out.device, [nb * tn, M, 3], "f32", op) : null;
  if (moments) moments.part = mom;
  // A tile of B rows x BK (B = BM for A, BN for B; B / 64 passes of 256 threads) from an operand stored
  // contiguous along k (4 vec4 per row, scattered into the k-major workgroup array) or along its rows (B / 4
  // vec4 per k, copied as they are): each pass loads one vec4 into a register (`load`, for the K step at
  // `kb`) that `store` then puts into the workgroup tile.
  const loaders = (
    t: string,
    W: string,
    row: number,
    B: number,
    rows: string,
    lim: string,
    alongK: boolean,
    idx: (r: string, k: string) => string,
  ) => {
    const ps = [...Array(B / 64).keys()];
    const reg = (p: number) => `${t}r${p}`;
    // Per pass: the thread's row and k offset in the tile (alongK: 4 threads per row; else B / 4 per k).
    const at = (p: number) =>
      alongK
        ? [`${p * 64}u + lid / 4u`, `(lid % 4u) * 4u`]
        : [`(lid + ${p * 256}u) % ${u(B / 4)} * 4u`, `(lid + ${p * 256}u) / ${u(B / 4)}`];
    return {
      decl: ps.map((p) => `var ${reg(p)} = vec4<f32>(0.0);`).join(" "),
      load: (kb: string) =>
        ps.map((p) => {
          const [rr, kq] = at(p);
          return `{ let r = ${rows} + ${rr}; let k = ${kb} + ${kq}; ${reg(p)} = vec4<f32>(0.0);
      if (r < ${lim} && k < sh.K) { ${reg(p)} = ${t}_ld((${t}off + ${idx("r", "k")}) / 4u); } }`;
        }).join("\n    "),
      store: ps.map((p) => {
        const [rr, kq] = at(p);
        return alongK
          ? `{ let rr = ${rr}; let kq = ${kq};
      for (var j = 0u; j < 4u; j = j + 1u) { ${W}[(kq + j) * ${u(row)} + rr / 4u][rr % 4u] = ${
            reg(p)
          }[j]; } }`
          : `${W}[(${kq}) * ${u(row)} + (${rr}) / 4u] = ${reg(p)};`;
      }).join("\n    "),
    };
  };
  // Generated only when the source is not kept yet (LaunchSpec.key).
  const code = () => {
    const ldA = loaders(
      "a",
      "As",
      rowA,
      BM,
      "m0",
      "sh.M",
      !g.transA,
      (m, k) => g.transA ? `${k} * sh.M + ${m}` : `${m} * sh.K + ${k}`,
    );
    const ldB = loaders(
      "b",
      "Bs",
      rowB,
      BN,
      "n0",
      "sh.N",
      g.transB,
      (n, k) => g.transB ? `${n} * sh.K + ${k}` : `${k} * sh.N + ${n}`,
    );
    // Prefetch: the next K step's loads are issued before this step's multiply-adds, so that one workgroup's
    // global-memory latency overlaps its own arithmetic (a GPU fits only two 128 x 128 workgroups per SM).
    const loop = prefetch
      ? `${ldA.load("kBeg")}
    ${ldB.load("kBeg")}
    for (var k0 = kBeg; k0 < kEnd; k0 = k0 + ${u(BK)}) {
      ${ldA.store}
      ${ldB.store}
      workgroupBarrier();
      if (k0 + ${u(BK)} < kEnd) {
        ${ldA.load(`k0 + ${u(BK)}`)}
        ${ldB.load(`k0 + ${u(BK)}`)}
      }`
      : `for (var k0 = kBeg; k0 < kEnd; k0 = k0 + ${u(BK)}) {
      ${ldA.load("k0")}
      ${ldB.load("k0")}
      ${ldA.store}
      ${ldB.store}
      workgroupBarrier();`;
    const accs = rms.flatMap((r) => [0, 1, 2, 3].flatMap((i) => rns.map((s) => `c${r}${i}${s}`)));
    return { ldA, ldB, loop, accs };
  };
  launch({
    op,
    work: { flops: 2 * M * N * K * nb },
    args: [
      { name: "a", t: a, vec4: true },
      { name: "b", t: b, vec4: true },
      {
        name: "c",
        t: part,
        write: true,
        vec4: true,
      },
      ...ep.args,
      ...(mom ? [{ name: "mo", t: mom, write: true }] : []),
    ],
    wg: 256,
    groups: segs * tiles,
    decls: `var<workgroup> As: array<vec4<f32>, ${BK * rowA}>;
var<workgroup> Bs: array<vec4<f32>, ${BK * rowB}>;
${ep.decls}`,
    uniforms: { ...g.uni, nb, tiles: { d: tiles }, tmn: { d: tm * tn }, tn: { d: tn }, segLen },
    key:
      `gemmVec4 ${TM} ${TN} ${rowA} ${rowB} ${g.transA} ${g.transB} ${prefetch} ${!!mom} ${out.dtype} ${g.offsets}`,
    body: () => {
      const { ldA, ldB, loop, accs } = code();
      return `${tileStart(BM, BN)}
  ${g.offsets}
  let tx = lid % 16u;
  let ty = lid / 16u;
  ${accs.map((c) => `var ${c} = vec4<f32>(0.0);`).join(" ")}
  let kBeg = sg * sh.segLen;
  let kEnd = min(kBeg + sh.segLen, sh.K);
  ${ldA.decl} ${ldB.decl}
  ${loop}
    for (var kk = 0u; kk < ${u(BK)}; kk = kk + 1u) {
      ${rms.map((r) => `let a${r} = As[kk * ${u(rowA)} + ${r * 16}u + ty];`).join(" ")}
      ${rns.map((s) => `let b${s} = Bs[kk * ${u(rowB)} + ${s * 16}u + tx];`).join(" ")}
      ${accs.map((c) => `${c} = fma(vec4<f32>(a${c[1]}[${c[2]}]), b${c[3]}, ${c});`).join("\n      ")}
    }
    workgroupBarrier();
  }
  let coff = (sg * sh.nb + bi) * sh.M * sh.N;
  ${
        accs.map((c) =>
          `{ let m = m0 + ${Number(c[1]) * 64 + Number(c[2])}u + ty * 4u; let n = n0 + ${
            Number(c[3]) * 64
          }u + tx * 4u; let ci = (coff + m * sh.N + n) / 4u; ${c} = ${
            ep.at(c, "m", "ci")
          }; if (m < sh.M && n < sh.N) { c_st(ci, ${c}); } }`
        ).join("\n  ")
      }
${mom ? momentsWgsl(rms, rns, BM, BN, out.dtype === "f16") : ""}`;
    },
  });
  addSegments(op, part, out, g.epi);
}

/**
 * WGSL after {@link gemmVec4}'s stores: the (count, mean, M2) of each of the tile's rows over its stored
 * columns (the values as stored, so an f16 output's rounded ones) into `mo` ([batch x column tiles, M, 3]).
 * Each thread reduces its TN values of a row in registers (two passes: mean, then squared deviations), the
 * 16 threads of a row hand theirs over through the free tile arrays (As: means, Bs: M2; a thread's count
 * follows from its column), and one thread per row merges them in order by Chan's formula.
 */
function momentsWgsl(rms: number[], rns: number[], BM: number, BN: number, half: boolean): string {
  const rowsOf = rms.flatMap((r) => [0, 1, 2, 3].map((i) => [r, i]));
  const ok = (s: number) => `(n0 + ${s * 64}u + tx * 4u < sh.N)`;
  // An f16 output's values as stored: read back (the compiler may fold an f32 -> f16 -> f32 round trip away,
  // lavapipe does), from the thread's own stores, so program order makes them visible.
  const val = (r: number, i: number, s: number) =>
    half
      ? `c_ld((coff + min(m0 + mloc, sh.M - 1u) * sh.N + n0 + ${s * 64}u + tx * 4u) / 4u)`
      : `c${r}${i}${s}`;
  const cnt = rns.map((s) => `select(0.0, 4.0, ${ok(s)})`).join(" + ");
  return `  let tcnt = ${cnt};
  ${
    rowsOf.map(([r, i]) =>
      `{ let mloc = ${r * 64 + i}u + ty * 4u;
    var sm = 0.0;
    ${rns.map((s) => `if ${ok(s)} { sm = sm + dot(${val(r, i, s)}, vec4<f32>(1.0)); }`).join(" ")}
    let mu = sm / max(tcnt, 1.0);
    var q = 0.0;
    ${rns.map((s) => `if ${ok(s)} { let d = ${val(r, i, s)} - vec4<f32>(mu); q = q + dot(d, d); }`).join(" ")}
    let wi = mloc * 16u + tx;
    As[wi / 4u][wi % 4u] = mu;
    Bs[wi / 4u][wi % 4u] = q; }`
    ).join("\n  ")
  }
  workgroupBarrier();
  if (lid < ${BM}u && m0 + lid < sh.M) {
    var cn = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var t2 = 0u; t2 < 16u; t2 = t2 + 1u) {
      var nb2 = 0.0;
      ${rns.map((s) => `if (n0 + ${s * 64}u + t2 * 4u < sh.N) { nb2 = nb2 + 4.0; }`).join(" ")}
      if (nb2 > 0.0) {
        let wi = lid * 16u + t2;
        let nt = cn + nb2;
        let d = As[wi / 4u][wi % 4u] - mean;
        let r = nb2 / nt;
        mean = mean + d * r;
        m2 = m2 + Bs[wi / 4u][wi % 4u] + d * d * cn * r;
        cn = nt;
      }
    }
    let o = ((bi * sh.tn + n0 / ${BN}u) * sh.M + m0 + lid) * 3u;
    mo_st(o, cn);
    mo_st(o + 1u, mean);
    mo_st(o + 2u, m2);
  }`;
}

/**
 * GEMM for software adapters. llvmpipe runs a workgroup as SIMD lanes and executes every load whose address
 * differs between lanes one lane at a time, while a load whose address is the same for the whole workgroup
 * is a single scalar load. So: a workgroup owns ROWS rows of C (their A values are uniform loads), each lane
 * owns 4 adjacent columns (its B loads are the only per-lane ones) and keeps ROWS vec4 accumulators.
 * Measured on lavapipe this is ~5x the shared-memory kernel (see docs/perf.md).
 */
function gemmLanes(
  op: string,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  g: GemmGeo,
): void {
  const { M, N, K, nb } = g;
  const ROWS = 8, LANES = 64;
  const tm = Math.ceil(M / ROWS), tn = Math.ceil(N / (4 * LANES));
  const rs = [...Array(ROWS).keys()];
  // Rows of C whose length is a multiple of 4 are stored a vec4 at a time (8 stores a lane, not 32).
  const cVec = N % 4 === 0;
  const ep = epilogueCode(g.epi, out, out, cVec);
  // vec4 loads cost about as much as scalar ones per lane on llvmpipe, so use them wherever the layout allows:
  // B rows when B is not transposed and N % 4 == 0; A along k when A is not transposed and K % 4 == 0.
  const bVec = !g.transB && N % 4 === 0;
  const aVec = !g.transA && K % 4 === 0;
  // A transposed ([K, M] in memory) with M % 4 == 0: the 8 rows of a k are two vec4 loads.
  const aRows = g.transA && M % 4 === 0;
  const bLoad = (k: string) =>
    bVec
      ? `b_ld((boff + ${k} * sh.N + n0) / 4u)`
      : `vec4<f32>(${[0, 1, 2, 3].map((j) => `b_ld(boff + ${g.bIdx(k, `n${j}`)})`).join(", ")})`;
  const loop = aVec
    ? `for (var k4 = 0u; k4 < sh.K4; k4 = k4 + 1u) {
    let k = k4 * 4u;
    let b0 = ${bLoad("k")}; let b1 = ${bLoad("(k + 1u)")}; let b2 = ${bLoad("(k + 2u)")}; let b3 = ${
      bLoad("(k + 3u)")
    };
    ${
      rs.map((r) =>
        `{ let av = a_ld((aoff + mr${r} * sh.K) / 4u + k4);
      c${r} = fma(vec4<f32>(av.x), b0, c${r}); c${r} = fma(vec4<f32>(av.y), b1, c${r});
      c${r} = fma(vec4<f32>(av.z), b2, c${r}); c${r} = fma(vec4<f32>(av.w), b3, c${r}); }`
      ).join("\n    ")
    }
  }`
    : aRows
    ? `let g1 = min(m0 + 4u, sh.M - 4u);
  for (var k = 0u; k < sh.K; k = k + 1u) {
    let bv = ${bLoad("k")};
    let av0 = a_ld((aoff + k * sh.M + m0) / 4u);
    let av1 = a_ld((aoff + k * sh.M + g1) / 4u);
    ${rs.map((r) => `c${r} = fma(vec4<f32>(av${r >> 2}.${"xyzw"[r & 3]}), bv, c${r});`).join(" ")}
  }`
    : `for (var k = 0u; k < sh.K; k = k + 1u) {
    let bv = ${bLoad("k")};
    ${
      rs.map((r) => `c${r} = fma(vec4<f32>(a_ld(aoff + ${g.aIdx(`mr${r}`, "k")})), bv, c${r});`).join(
        "\n    ",
      )
    }
  }`;
  launch({
    op,
    work: { flops: 2 * M * N * K * nb },
    args: [{ name: "a", t: a, vec4: aVec || aRows }, { name: "b", t: b, vec4: bVec }, {
      name: "c",
      t: out,
      write: true,
      vec4: cVec,
    }, ...ep.args],
    wg: LANES,
    groups: nb * tm * tn,
    decls: ep.decls,
    uniforms: {
      ...g.uni,
      K4: Math.floor(K / 4),
      tmn: { d: tm * tn },
      tn: { d: tn },
      n0max: Math.max(0, bVec ? N - 4 : N - 1),
    },
    body: `  let bi = div_tmn(wg);
  let t = wg - bi * sh.tmn;
  let tq = div_tn(t);
  let m0 = tq * ${u(ROWS)};
  let nbase = ((t - tq * sh.tn) * ${u(LANES)} + lid) * 4u;
  ${g.offsets}
  // Clamped indices keep loads in bounds; the stores below are masked instead.
  ${rs.map((r) => `let mr${r} = min(m0 + ${r}u, sh.M - 1u);`).join(" ")}
  let n0 = min(nbase, sh.n0max); let n1 = min(nbase + 1u, sh.N - 1u);
  let n2 = min(nbase + 2u, sh.N - 1u); let n3 = min(nbase + 3u, sh.N - 1u);
  ${rs.map((r) => `var c${r} = vec4<f32>(0.0);`).join(" ")}
  ${loop}
  let coff = bi * sh.M * sh.N;
  ${
      rs.map((r) =>
        cVec
          ? `if (m0 + ${r}u < sh.M && nbase < sh.N) { let ci = (coff + (m0 + ${r}u) * sh.N + nbase) / 4u; c_st(ci, ${
            ep.at(`c${r}`, `(m0 + ${r}u)`, "ci")
          }); }`
          : `if (m0 + ${r}u < sh.M) { for (var j = 0u; j < 4u; j = j + 1u) { if (nbase + j < sh.N) { let ci = coff + (m0 + ${r}u) * sh.N + nbase + j; c_st(ci, ${
            ep.at(`c${r}[j]`, `(m0 + ${r}u)`, "ci")
          }); } } }`
      ).join("\n  ")
    }`,
  });
}

/** What {@link gemmNT} and {@link gemmNTBlocks} are given. */
interface NTGeo {
  M: number;
  N: number;
  K: number;
  nb: number;
  offsets: string;
  uni: Uniforms;
  epi: GemmEpilogue | null;
  sumBatch: boolean;
}

/**
 * Where an NT kernel writes: `out`, or partials [segs, nb, M, N] when K is split or (sumBatch) the batch's
 * products are summed into out [M, N] ({@link addSegments} adds them); its epilogue and bindings.
 */
function ntOutput(op: string, a: Tensor, b: Tensor, out: Tensor, g: NTGeo, segs: number) {
  const parts = segs * (g.sumBatch ? g.nb : 1);
  const part = parts === 1 ? out : Tensor.empty(a.device, [parts, ...out.shape], "f32", op);
  const ep = epilogueCode(g.epi, part, out, false);
  const args: Arg[] = [
    { name: "a", t: a, vec4: true },
    { name: "b", t: b, vec4: true },
    { name: "c", t: part, write: true },
    ...ep.args,
  ];
  return { part, ep, args };
}

/**
 * WGSL of an NT lane's work once `sg` (K segment), `bi` (batch), `mb` and `nbase` (its 4 x 4 block's first row
 * and column) are bound: 4 + 4 vec4 loads along K a step for 16 dot products, then the masked stores into
 * partial `sg` (through the epilogue when the kernel writes C itself).
 */
function ntBlock(offsets: string, ep: ReturnType<typeof epilogueCode>): string {
  const ij = [...Array(16).keys()];
  return `${offsets}
  ${[0, 1, 2, 3].map((i) => `let ar${i} = (aoff + min(mb + ${i}u, sh.M - 1u) * sh.K) / 4u;`).join(" ")}
  ${[0, 1, 2, 3].map((j) => `let br${j} = (boff + min(nbase + ${j}u, sh.N - 1u) * sh.K) / 4u;`).join(" ")}
  ${ij.map((k) => `var s${k} = 0.0;`).join(" ")}
  let k1 = min((sg + 1u) * sh.seg, sh.K4);
  for (var k = sg * sh.seg; k < k1; k = k + 1u) {
    ${[0, 1, 2, 3].map((i) => `let a${i} = a_ld(ar${i} + k);`).join(" ")}
    ${[0, 1, 2, 3].map((j) => `let b${j} = b_ld(br${j} + k);`).join(" ")}
    ${ij.map((k) => `s${k} = s${k} + dot(a${k >> 2}, b${k & 3});`).join(" ")}
  }
  let cb = (sg * sh.nb + bi) * sh.M * sh.N;
  ${
    ij.map((k) =>
      `if (mb + ${k >> 2}u < sh.M && nbase + ${k & 3}u < sh.N) { let ci = cb + (mb + ${
        k >> 2
      }u) * sh.N + nbase + ${k & 3}u; c_st(ci, ${ep.at(`s${k}`, `(mb + ${k >> 2}u)`, "ci")}); }`
    ).join("\n  ")
  }`;
}

/**
 * op(a) @ b^T for software adapters when both operands are contiguous along K (e.g. weight gradients, where
 * K is the number of voxels): each lane owns a 4x4 block of C, loads 4 + 4 vec4 along K per step and
 * accumulates 16 dot products; long K is split into segments whose partial results are summed. With N >= 128
 * a workgroup owns 4 whole rows and its 64 lanes 4 columns each: the rows' A loads are then the same for every
 * lane (one scalar load on llvmpipe, not one per lane), so a step costs 4 lane loads instead of 8. The
 * segments follow the 32 x 32 tiling either way, so both give the same bits. With `sumBatch` the batch's
 * products are more partials of the same sum (a pointwise conv's weight gradient: one reduction, not two).
 */
function gemmNT(
  op: string,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  g: NTGeo,
) {
  const { M, N, K, nb } = g;
  const K4 = K / 4;
  // Rows per workgroup x columns: 32 x 32 (lanes 8 x 8 of 4 x 4), or 4 uniform rows x 256 columns.
  const rows = N >= 128 ? 4 : 32, cols = rows === 4 ? 256 : 32;
  const tm = Math.ceil(M / rows), tn = Math.ceil(N / cols);
  if (rows === 32 && M * N < 0.75 * tm * tn * 1024) {
    gemmNTBlocks(op, a, b, out, g);
    return;
  }
  const segs = Math.max(1, Math.min(Math.ceil(K4 / 256), Math.ceil(128 / (nb * tm * tn))));
  const seg = Math.ceil(K4 / segs);
  const tiles = nb * tm * tn;
  const { part, ep, args } = ntOutput(op, a, b, out, g, segs);
  launch({
    op,
    work: { flops: 2 * M * N * K * nb },
    args,
    wg: 64,
    groups: segs * tiles,
    decls: ep.decls,
    uniforms: { ...g.uni, nb, K4, seg, tiles: { d: tiles }, tmn: { d: tm * tn }, tn: { d: tn } },
    body: `  let sg = div_tiles(wg);
  let t0 = wg - sg * sh.tiles;
  let bi = div_tmn(t0);
  let t = t0 - bi * sh.tmn;
  let tq = div_tn(t);
  let mb = tq * ${u(rows)}${rows === 4 ? "" : " + (lid / 8u) * 4u"};
  let nbase = (t - tq * sh.tn) * ${u(cols)} + (lid % ${u(cols / 4)}) * 4u;
${ntBlock(g.offsets, ep)}`,
  });
  addSegments(op, part, out, g.epi);
}

/**
 * {@link gemmNT} for outputs that would leave most of a 32 x 32 tile's lanes idle (a pointwise conv's weight
 * gradient at 8-32 channels: an 8 x 8 output used 4 of a tile's 64 lanes): a lane per 4 x 4 block of C and
 * K segment, as many segments as keep ~2048 lanes busy with at least 64 vec4 steps each, and their partial
 * products summed after (the batch's too under `sumBatch`).
 */
function gemmNTBlocks(
  op: string,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  g: NTGeo,
) {
  const { M, N, K, nb } = g;
  const K4 = K / 4;
  const bm = Math.ceil(M / 4), bn = Math.ceil(N / 4), items = nb * bm * bn;
  const segs = Math.max(1, Math.min(Math.ceil(K4 / 64), Math.ceil(2048 / items)));
  const seg = Math.ceil(K4 / segs);
  const { part, ep, args } = ntOutput(op, a, b, out, g, segs);
  launch1d({
    op,
    work: { flops: 2 * M * N * K * nb },
    args,
    n: segs * items,
    decls: ep.decls,
    uniforms: { ...g.uni, nb, K4, seg, items: { d: items }, bmn: { d: bm * bn }, bn: { d: bn } },
    body: `  let sg = div_items(gid);
  let t0 = gid - sg * sh.items;
  let bi = div_bmn(t0);
  let t = t0 - bi * sh.bmn;
  let tq = div_bn(t);
  let mb = tq * 4u;
  let nbase = (t - tq * sh.bn) * 4u;
${ntBlock(g.offsets, ep)}`,
  });
  addSegments(op, part, out, g.epi);
}

/**
 * Matrix product with PyTorch `matmul` semantics: 1-D operands are promoted (and the added dim removed),
 * batch dims broadcast. `transA`/`transB` use the transpose of the last two dims without copying.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const op = "F.matmul";
  if (!(a instanceof Tensor) || !(b instanceof Tensor)) throw new Error(`${op}: expected two tensors`);
  a.storage(op);
  b.storage(op);
  if ((a.dtype !== "f32" && a.dtype !== "f16") || (b.dtype !== "f32" && b.dtype !== "f16")) {
    throw new Error(`${op}: expects f32 or f16, got ${a.describe()} and ${b.describe()}`);
  }
  if (a.device !== b.device) {
    throw new Error(`${op}: tensors are on different devices, shapes [${a.shape}] and [${b.shape}]`);
  }
  if (a.ndim === 0 || b.ndim === 0) {
    throw new Error(`${op}: both operands need at least 1 dim, got [${a.shape}] and [${b.shape}]`);
  }
  if (a.ndim === 1 || b.ndim === 1) {
    const a2 = a.ndim === 1 ? a.reshape([1, a.shape[0]]) : a;
    const b2 = b.ndim === 1 ? b.reshape([b.shape[0], 1]) : b;
    const r = matmul(a2, b2, {
      transA: a.ndim === 1 ? false : opts.transA,
      transB: b.ndim === 1 ? false : opts.transB,
    });
    const s = [...r.shape];
    if (b.ndim === 1) s.splice(s.length - 1, 1);
    if (a.ndim === 1) s.splice(s.length - (b.ndim === 1 ? 1 : 2), 1);
    const y = r.reshape(s);
    for (const t of [a2, b2, r]) if (t !== a && t !== b) t.dispose();
    return y;
  }
  const tA = !!opts.transA, tB = !!opts.transB;
  const y = gemm(op, a, b, tA, tB);
  const as = a.shape, bs = b.shape;
  const back = `${op}.backward`;
  // A 2-D operand broadcast over a batch gets the batch's products summed inside the GEMM (no sumTo pass).
  const reduced = (full: (o: { sumBatch: boolean }) => Tensor, shape: readonly number[]) => {
    if (shape.length === 2) return full({ sumBatch: true });
    const f = full({ sumBatch: false });
    const r = sumTo(f, shape);
    if (r !== f) f.dispose();
    return r;
  };
  return record(op, y, [a, b], [a, b], (g, [sa, sb]) => [
    a.requiresGrad
      ? reduced((o) => (tA ? gemm(back, sb, g, tB, true, o) : gemm(back, g, sb, false, !tB, o)), as)
      : null,
    b.requiresGrad
      ? reduced((o) => (tB ? gemm(back, g, sa, true, tA, o) : gemm(back, sa, g, !tA, false, o)), bs)
      : null,
  ]);
}

/** y = x @ w^T + b, with w: [out, in] and b: [out] (PyTorch `linear`). */
export function linear(x: Tensor, w: Tensor, b?: Tensor | null): Tensor {
  const op = "F.linear";
  if (w.ndim !== 2) throw new Error(`${op}: weight must be [out, in], got [${w.shape}]`);
  if (x.shape[x.ndim - 1] !== w.shape[1]) {
    throw new Error(`${op}: input [${x.shape}] does not end in ${w.shape[1]} features (weight [${w.shape}])`);
  }
  if (b && (b.ndim !== 1 || b.shape[0] !== w.shape[0])) {
    throw new Error(`${op}: bias must be [${w.shape[0]}], got [${b.shape}]`);
  }
  const y = matmul(x, w, { transB: true });
  if (!b) return y;
  const r = add(y, b);
  y.dispose();
  return r;
}
