/**
 * @file Batch norm's per-element passes with the per-channel finish folded in, for the "gpu" profile: a
 * training forward is two dispatches (partial moments, then normalise) and a backward two (partial sums,
 * then gx), not three each. Every workgroup of the per-element pass owns a chunk of one (n, c) row and first
 * merges its channel's partials itself, exactly as the finishing kernel does (same order, so the same f32
 * values); the workgroup of the channel's first chunk also writes what the finish wrote (the statistics the
 * backward reads, the running statistics, the counter, the parameter gradients). The merges are repeated
 * per chunk, so a chunk is long ({@link chunkUnits}) to keep them a few percent of the pass's traffic.
 */
import { Tensor } from "../../core/tensor.ts";
import { type Arg, launch } from "../codegen.ts";
import {
  type ChannelWalk,
  finishArgs,
  finishCode,
  MERGE_PARTS,
  MERGE_WGSL,
  type RunningStats,
  SUM_PARTS,
  SUM_WGSL,
  WG,
} from "./stats.ts";

/**
 * WGSL of y = relu?((x - mu) * inv * w + b + residual) for unit `i` of channel `c`, from the scalars `mu` and
 * `inv` (the normalising pass of both paths).
 */
export function normalizeWgsl(
  v4: boolean,
  p: { w: boolean; b: boolean; r: boolean; relu: boolean },
): string {
  const vec = (e: string) => v4 ? `vec4<f32>(${e})` : e;
  let e = `(x_ld(i) - ${vec("mu")}) * ${vec(`inv${p.w ? " * w_ld(c)" : ""}`)}`;
  if (p.b) e = `${e} + ${vec("b_ld(c)")}`;
  if (p.r) e = `${e} + r_ld(i)`;
  return p.relu ? `max(${e}, ${vec("0.0")})` : e;
}

/**
 * WGSL storing, for unit `i`, the residual's gradient ge (g masked by y > 0 under a fused ReLU) and
 * gx = a * (ge - k1 - (x - mu) * k2) from the scalars `a`, `k1`, `k2`, `mu` (the gradient pass of both paths).
 */
export function gradInputWgsl(v4: boolean, p: { y: boolean; gx: boolean; gr: boolean }): string {
  const vec = (e: string) => v4 ? `vec4<f32>(${e})` : e;
  return `let ge = ${p.y ? `select(${vec("0.0")}, g_ld(i), y_ld(i) > ${vec("0.0")})` : "g_ld(i)"};
    ${p.gr ? "gr_st(i, ge);" : ""}
    ${p.gx ? `gx_st(i, ${vec("a")} * (ge - ${vec("k1")} - (x_ld(i) - ${vec("mu")}) * ${vec("k2")}));` : ""}`;
}

/**
 * Units (vec4 or scalar) per workgroup of a per-element pass: at least 32 per lane, and enough that the
 * merge of the channel's partials (3 values a segment) stays ~3 % of the chunk's loads and stores.
 */
function chunkUnits(w: ChannelWalk): number {
  return Math.max(32 * WG, Math.ceil((w.segs * 48) / (w.V * WG)) * WG);
}

/** Workgroups over the rows' chunks, and WGSL binding `row`, `c`, `k` (chunk), `first` and the unit loop. */
function chunks(w: ChannelWalk, visit: string) {
  const CH = chunkUnits(w);
  const K = Math.ceil(w.S / CH);
  return {
    groups: w.N * w.C * K,
    uniforms: { K: { d: K }, C: { d: w.C }, S: w.S, CH },
    head: `  let row = div_K(wg);
  let k = wg - row * sh.K;
  let c = mod_C(row);
  let first = row < sh.C && k == 0u;`,
    loop: `  let u1 = min((k + 1u) * sh.CH, sh.S);
  for (var u = k * sh.CH + lid; u < u1; u = u + ${WG}u) {
    let i = row * sh.S + u;
    ${visit}
  }`,
  };
}

/**
 * Training forward's second pass: merges the partial moments `part` ([segs, C, 3], kernels/norm/stats.ts, or
 * a conv's epilogue)
 * and writes y = relu?((x - mean) * inv * w + b + residual) as `dtype`, and st = [C, 2] (mean, inv) with the
 * running statistics and the counter updated as `finishMoments` does.
 */
export function normalizeMerged(
  op: string,
  x: Tensor,
  part: Tensor,
  walk: ChannelWalk,
  run: RunningStats,
  p: {
    w: Tensor | null;
    b: Tensor | null;
    r: Tensor | null;
    relu: boolean;
    dtype: "f32" | "f16";
    /** The partials' means are relative to x[0, c, 0] (momentParts'), not absolute (a conv epilogue's). */
    shifted: boolean;
  },
): { y: Tensor; st: Tensor } {
  const v4 = walk.V === 4;
  const y = Tensor.empty(x.device, x.shape, p.dtype, op);
  const st = Tensor.empty(x.device, [walk.C, 2], "f32", op);
  const f = finishArgs(st, run);
  const e = normalizeWgsl(v4, { w: !!p.w, b: !!p.b, r: !!p.r, relu: p.relu });
  const ch = chunks(walk, `y_st(i, ${e});`);
  const args: Arg[] = [
    { name: "x", t: x, vec4: v4 },
    { name: "p", t: part },
    ...(p.w ? [{ name: "w", t: p.w }] : []),
    ...(p.b ? [{ name: "b", t: p.b }] : []),
    ...(p.r ? [{ name: "r", t: p.r, vec4: v4 }] : []),
    { name: "y", t: y, write: true, vec4: v4 },
    ...f.args,
  ];
  launch({
    op,
    args,
    wg: WG,
    groups: ch.groups,
    uniforms: { ...ch.uniforms, segs: walk.segs, ...f.uniforms },
    decls: MERGE_WGSL,
    key: `normalizeMerged ${[v4, !!p.w, !!p.b, !!p.r, p.relu, p.shifted, !!run.mean, !!run.batches]}`,
    // The shift of the partials' means is x[0, c, 0]: the first unit of row c (its .x when vec4).
    body: () =>
      `${ch.head}
${MERGE_PARTS}
  let mu = ${p.shifted ? `x_ld(c * sh.S)${v4 ? ".x" : ""} + ` : ""}wm[0];
  let va = max(wq[0] / wn[0], 0.0);
  let inv = inverseSqrt(va + sh.eps);
  if (first && lid == 0u) {
    ${finishCode(run)}
  }
${ch.loop}`,
  });
  return { y, st };
}

/**
 * Backward's second pass: sums the partials `part` ([segs, C, 2] of ge and ge * (x - mean)) and writes
 * gx = a * (ge - k1 - (x - mean) * k2) and, under a fused ReLU, the residual's gradient ge (g masked by
 * y > 0), plus the weight and bias gradients, as `finishGrads` and the unfused pass compute them.
 */
export function gradInputMerged(
  op: string,
  t: { g: Tensor; x: Tensor; y: Tensor | null; st: Tensor; part: Tensor; weight: Tensor | null },
  walk: ChannelWalk,
  o: { training: boolean; count: number; wantWeight: boolean; wantBias: boolean; wantResidual: boolean },
): { gx: Tensor; gr: Tensor | null; gw: Tensor | null; gb: Tensor | null } {
  const v4 = walk.V === 4;
  const dev = t.x.device;
  const gx = Tensor.empty(dev, t.x.shape, "f32", op);
  const gr = o.wantResidual && t.y ? Tensor.empty(dev, t.x.shape, "f32", op) : null;
  const gw = o.wantWeight ? Tensor.empty(dev, [walk.C], "f32", op) : null;
  const gb = o.wantBias ? Tensor.empty(dev, [walk.C], "f32", op) : null;
  const ch = chunks(walk, gradInputWgsl(v4, { y: !!t.y, gx: true, gr: !!gr }));
  launch({
    op,
    args: [
      { name: "g", t: t.g, vec4: v4 },
      { name: "x", t: t.x, vec4: v4 },
      ...(t.y ? [{ name: "y", t: t.y, vec4: v4 }] : []),
      { name: "st", t: t.st },
      { name: "p", t: t.part },
      ...(t.weight ? [{ name: "w", t: t.weight }] : []),
      { name: "gx", t: gx, write: true, vec4: v4 },
      ...(gr ? [{ name: "gr", t: gr, write: true, vec4: v4 }] : []),
      ...(gw ? [{ name: "gw", t: gw, write: true }] : []),
      ...(gb ? [{ name: "gb", t: gb, write: true }] : []),
    ],
    wg: WG,
    groups: ch.groups,
    uniforms: { ...ch.uniforms, segs: walk.segs, rM: { f: 1 / o.count } },
    decls: SUM_WGSL,
    key: `gradInputMerged ${v4} ${!!t.y} ${!!gr} ${!!gw} ${!!gb} ${!!t.weight} ${o.training}`,
    body: () =>
      `${ch.head}
${SUM_PARTS}
  let s1 = w1[0];
  let s2 = w2[0];
  let mu = st_ld(c * 2u);
  let inv = st_ld(c * 2u + 1u);
  if (first && lid == 0u) {
    ${gw ? "gw_st(c, s2 * inv);" : ""}
    ${gb ? "gb_st(c, s1);" : ""}
  }
  let a = inv${t.weight ? " * w_ld(c)" : ""};
  let k1 = ${o.training ? "s1 * sh.rM" : "0.0"};
  let k2 = ${o.training ? "inv * inv * s2 * sh.rM" : "0.0"};
${ch.loop}`,
  });
  return { gx, gr, gw, gb };
}
