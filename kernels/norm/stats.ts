/**
 * @file Per-channel reductions of batch norm over x viewed as [N, C, S]: the forward's count, mean and sum of
 * squared deviations in one pass (Welford within a lane, Chan's merge across lanes and segments, so the
 * variance keeps f32 accuracy whatever the mean), and the backward's sums of g and g * (x - mean). Each is
 * a partial kernel (a workgroup per channel segment) and a per-channel finishing kernel (a workgroup per
 * channel merging the segments) into which the small per-channel steps are folded: 1 / std, the running
 * statistics, `num_batches_tracked`, the gradient coefficients. Loads are vec4 whenever S % 4 == 0.
 */
import { Tensor } from "../../core/tensor.ts";
import { type Arg, launch, launch1d, type Uniforms } from "../codegen.ts";

/** Lanes per workgroup of these kernels (the tree merges assume a power of two). */
export const WG = 64;

/** How a channel's values are walked: unit width (4 when S % 4 == 0), sizes in units, segments. */
export interface ChannelWalk {
  N: number;
  C: number;
  /** Units per (n, c) row. */
  S: number;
  /** Elements per unit: 4 (vec4 loads) or 1. */
  V: 1 | 4;
  /** Segments each channel is split into (workgroups per channel of the partial kernels). */
  segs: number;
  /** Units per segment. */
  L: number;
}

/**
 * The walk of x ([N, C, ...]): vec4 units when a row's length allows; a segment is ~4096 values for a
 * workgroup on the gpu profile, ~1024 for one lane on the cpu profile (see {@link laneLoop}).
 */
export function channelWalk(x: Tensor): ChannelWalk {
  const N = x.shape[0], C = x.shape[1], S0 = x.numel() / (N * C);
  const V = S0 % 4 === 0 ? 4 : 1, S = S0 / V, T = N * S;
  const per = x.device.profile === "cpu" ? 1024 : 4096;
  const segs = Math.max(1, Math.min(Math.ceil((T * V) / per), 1024, T));
  return { N, C, S, V, segs, L: Math.ceil(T / segs) };
}

/**
 * The cpu profile's partial kernels give a (segment, channel) one lane that walks the segment's units in
 * order and stores its own partial: no workgroup tree, whose barriers llvmpipe pays dearly for (it runs a
 * workgroup's lanes as one loop per barrier-free piece), and lanes reading units far apart cost it no more than
 * neighbours (it loads lane by lane). Lane `gid` is partial (sg, c) = (gid / C, gid % C); WGSL runs `visit`
 * with `i`, the unit's index in x.
 */
function laneLoop(visit: string): string {
  return `  let c = gid % sh.C;
  let sg = gid / sh.C;
  let e0 = sg * sh.L;
  let e1 = min(e0 + sh.L, sh.T);
  var n = e0 / sh.S;
  var s = e0 - n * sh.S;
  for (var e = e0; e < e1; e = e + 1u) {
    let i = n * sh.CS + c * sh.S + s;
    ${visit}
    s = s + 1u;
    if (s == sh.S) { s = 0u; n = n + 1u; }
  }`;
}

/** Whether x's partial kernels run a lane per (segment, channel) ({@link laneLoop}). */
function lanePartials(x: Tensor): boolean {
  return x.device.profile === "cpu";
}

/**
 * WGSL of the partial kernels' loop: lane `lid` of workgroup (segment sg, channel c) visits the units
 * e = n * S + s of its segment with stride WG, carrying (n, s) instead of dividing per unit, and runs
 * `visit` with `i`, the unit's index in x.
 */
function walkLoop(visit: string): string {
  return `  let c = wg % sh.C;
  let sg = wg / sh.C;
  let e0 = sg * sh.L + lid;
  let e1 = min((sg + 1u) * sh.L, sh.T);
  var n = e0 / sh.S;
  var s = e0 - n * sh.S;
  for (var e = e0; e < e1; e = e + WG) {
    let i = n * sh.CS + c * sh.S + s;
    ${visit}
    s = s + sh.ds;
    n = n + sh.dn;
    if (s >= sh.S) { s = s - sh.S; n = n + 1u; }
  }`;
}

function walkUniforms(w: ChannelWalk): Uniforms {
  return { C: w.C, S: w.S, L: w.L, T: w.N * w.S, CS: w.C * w.S, dn: Math.floor(WG / w.S), ds: WG % w.S };
}

/** Workgroup arrays and the merge of slot b into slot a: (count, mean, M2) by Chan's formula. */
export const MERGE_WGSL = `var<workgroup> wn: array<f32, ${WG}>;
var<workgroup> wm: array<f32, ${WG}>;
var<workgroup> wq: array<f32, ${WG}>;
fn merge_(a: u32, b: u32) {
  let nb = wn[b];
  if (nb > 0.0) {
    let na = wn[a];
    let nt = na + nb;
    let d = wm[b] - wm[a];
    let r = nb / nt;
    wm[a] = wm[a] + d * r;
    wq[a] = wq[a] + wq[b] + d * d * na * r;
    wn[a] = nt;
  }
}
fn tree_(lid: u32) {
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k = k / 2u) {
    if (lid < k) { merge_(lid, lid + k); }
    workgroupBarrier();
  }
}`;

/** Workgroup arrays and a tree sum of two values per lane. */
export const SUM_WGSL = `var<workgroup> w1: array<f32, ${WG}>;
var<workgroup> w2: array<f32, ${WG}>;
fn tree_(lid: u32) {
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k = k / 2u) {
    if (lid < k) { w1[lid] = w1[lid] + w1[lid + k]; w2[lid] = w2[lid] + w2[lid + k]; }
    workgroupBarrier();
  }
}`;

/** WGSL: sums a1, a2 of channel `c`'s segments first, first + step, ... from `p` ([segs, C, 2]). */
function sumLoop(first: string, step: string): string {
  return `  var a1 = 0.0;
  var a2 = 0.0;
  for (var sg = ${first}; sg < sh.segs; sg = sg + ${step}) {
    a1 = a1 + p_ld((sg * sh.C + c) * 2u);
    a2 = a2 + p_ld((sg * sh.C + c) * 2u + 1u);
  }`;
}

/** WGSL: lane `lid` sums segments lid, lid + WG, ... of channel `c` from `p` ([segs, C, 2]), then the tree. */
export const SUM_PARTS = `${sumLoop("lid", "WG")}
  w1[lid] = a1;
  w2[lid] = a2;
  tree_(lid);`;

/**
 * Forward partials: for each (segment, channel), the count, mean and M2 (sum of squared deviations from the
 * mean) of its values, as [segs, C, 3]. Means are of x - x[0, c, 0] (the channel's first value, see
 * {@link shiftOf}): small numbers whose sums keep f32's relative precision, so the mean is as exact as one
 * final rounding makes it even far from zero.
 */
export function momentParts(op: string, x: Tensor, w: ChannelWalk): Tensor {
  const part = Tensor.empty(x.device, [w.segs, w.C, 3], "f32", op);
  // A vec4 unit is merged as a block of 4 (its own mean and M2), a scalar one by Welford's update.
  const visit = w.V === 4
    ? `let v = x_ld(i) - vec4<f32>(k0);
    let cm = (v.x + v.y + v.z + v.w) * 0.25;
    let dv = v - vec4<f32>(cm);
    let n1 = cnt + 4.0;
    let dl = cm - mean;
    let r = 4.0 / n1;
    mean = mean + dl * r;
    m2 = m2 + dot(dv, dv) + dl * dl * cnt * r;
    cnt = n1;`
    : `let v = x_ld(i) - k0;
    cnt = cnt + 1.0;
    let dl = v - mean;
    mean = mean + dl / cnt;
    m2 = m2 + dl * (v - mean);`;
  launchParts(op, x, w, [{ name: "x", t: x, vec4: w.V === 4 }, { name: "p", t: part, write: true }], {
    key: `moments ${w.V}`,
    start: (c) =>
      `  let k0 = x_ld((${c}) * sh.S)${w.V === 4 ? ".x" : ""};
  var cnt = 0.0;
  var mean = 0.0;
  var m2 = 0.0;`,
    visit,
    accs: ["cnt", "mean", "m2"],
    decls: MERGE_WGSL,
    tree: ["wn", "wm", "wq"],
  });
  return part;
}

/**
 * Launches a partial kernel over x's channel walk: `start(c)` binds channel c's accumulators `accs`, `visit`
 * adds a unit to them, and partial (segment, channel) is stored as the accumulators in order. On the cpu
 * profile a lane per (segment, channel) ({@link laneLoop}); on the gpu profile a workgroup per (segment,
 * channel) whose lanes stride the segment and meet in the `tree` arrays (`decls`' `tree_`).
 */
function launchParts(
  op: string,
  x: Tensor,
  w: ChannelWalk,
  args: Arg[],
  o: {
    key: string;
    start: (c: string) => string;
    visit: string;
    accs: string[];
    decls: string;
    tree: string[];
  },
): void {
  const k = o.accs.length;
  if (lanePartials(x)) {
    launch1d({
      op,
      args,
      n: w.segs * w.C,
      uniforms: walkUniforms(w),
      key: `lanes ${o.key}`,
      body: () =>
        `${o.start("gid % sh.C")}
${laneLoop(o.visit)}
  ${o.accs.map((a, i) => `p_st(gid * ${k}u + ${i}u, ${a});`).join("\n  ")}`,
    });
    return;
  }
  launch({
    op,
    args,
    wg: WG,
    groups: w.segs * w.C,
    uniforms: walkUniforms(w),
    decls: o.decls,
    key: `tree ${o.key}`,
    body: () =>
      `${o.start("wg % sh.C")}
${walkLoop(o.visit)}
  ${o.tree.map((t, i) => `${t}[lid] = ${o.accs[i]};`).join("\n  ")}
  tree_(lid);
  if (lid == 0u) {
    let o = (sg * sh.C + c) * ${k}u;
    ${o.tree.map((t, i) => `p_st(o + ${i}u, ${t}[0]);`).join("\n    ")}
  }`,
  });
}

/** WGSL of the shift the partials' means are relative to, x[0, c, 0], read from x bound as scalars. */
const SHIFT = `x_ld(c * sh.S0)`;

/** The shift's binding and uniform for a finishing kernel. */
function shiftOf(x: Tensor): { arg: Arg; S0: number } {
  return { arg: { name: "x", t: x }, S0: x.numel() / (x.shape[0] * x.shape[1]) };
}

/** WGSL: merges (cnt, mean, m2) of channel `c`'s segments first, first + step, ... from `p` ([segs, C, 3]). */
function mergeLoop(first: string, step: string): string {
  return `  var cnt = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  for (var sg = ${first}; sg < sh.segs; sg = sg + ${step}) {
    let o = (sg * sh.C + c) * 3u;
    let nb = p_ld(o);
    if (nb > 0.0) {
      let nt = cnt + nb;
      let d = p_ld(o + 1u) - mean;
      let r = nb / nt;
      mean = mean + d * r;
      m2 = m2 + p_ld(o + 2u) + d * d * cnt * r;
      cnt = nt;
    }
  }`;
}

/** WGSL: lane `lid` merges segments lid, lid + WG, ... of channel `c` from `p` ([segs, C, 3]), then the tree. */
export const MERGE_PARTS = `${mergeLoop("lid", "WG")}
  wn[lid] = cnt;
  wm[lid] = mean;
  wq[lid] = m2;
  tree_(lid);`;

/**
 * A per-channel finishing kernel over the partials `p` of `segs` segments: `finish` (WGSL, for channel `c`)
 * reads the channel's totals as `tn`, `tm`, `tq` (count, mean, M2: kind "merge") or `t1`, `t2` (kind "sum").
 * The gpu profile gives each channel a workgroup whose lanes merge a share of the segments and then a tree;
 * the cpu profile a lane per channel looping over all of them, as llvmpipe pays dearly for each of a tree's
 * barriers (a workgroup's lanes run as one loop per barrier-free piece) and a channel has few segments there.
 */
function perChannel(
  op: string,
  kind: "merge" | "sum",
  o: { key: string; C: number; segs: number; args: Arg[]; uniforms?: Uniforms; finish: string },
): void {
  const uniforms = { C: o.C, segs: o.segs, ...o.uniforms };
  const cpu = lanePartials(o.args[0].t);
  const totals = kind === "merge"
    ? (cpu
      ? "let tn = cnt;\n    let tm = mean;\n    let tq = m2;"
      : "let tn = wn[0];\n    let tm = wm[0];\n    let tq = wq[0];")
    : (cpu ? "let t1 = a1;\n    let t2 = a2;" : "let t1 = w1[0];\n    let t2 = w2[0];");
  if (cpu) {
    launch1d({
      op,
      args: o.args,
      n: o.C,
      uniforms,
      key: `lanes ${kind} ${o.key}`,
      body: () =>
        `  let c = gid;
${kind === "merge" ? mergeLoop("0u", "1u") : sumLoop("0u", "1u")}
  {
    ${totals}
    ${o.finish}
  }`,
    });
    return;
  }
  launch({
    op,
    args: o.args,
    wg: WG,
    groups: o.C,
    uniforms,
    decls: kind === "merge" ? MERGE_WGSL : SUM_WGSL,
    key: `tree ${kind} ${o.key}`,
    body: () =>
      `  let c = wg;
${kind === "merge" ? MERGE_PARTS : SUM_PARTS}
  if (lid == 0u) {
    ${totals}
    ${o.finish}
  }`,
  });
}

/** What the forward's finishing step updates in place besides writing mean and 1 / std. */
export interface RunningStats {
  mean: Tensor | null;
  variance: Tensor | null;
  /** Incremented by one (an i32 scalar, the module's `num_batches_tracked`). */
  batches: Tensor | null;
  momentum: number;
  eps: number;
  /** Values per channel over all replicas, for the unbiased running variance. */
  count: number;
}

/** WGSL of the per-channel finish from `mu` and biased `va` of channel c: stats, running stats, counter. */
export function finishCode(r: RunningStats): string {
  return `st_st(c * 2u, mu);
    st_st(c * 2u + 1u, inverseSqrt(va + sh.eps));${
    r.mean && r.variance
      ? `
    rm_st(c, (1.0 - sh.mom) * rm_ld(c) + sh.mom * mu);
    rv_st(c, (1.0 - sh.mom) * rv_ld(c) + sh.mom * va * sh.unb);`
      : ""
  }${r.batches ? `\n    if (c == 0u) { nb_st(0u, nb_ld(0u) + 1); }` : ""}`;
}

/** The bindings and uniforms {@link finishCode} reads. */
export function finishArgs(st: Tensor, r: RunningStats): { args: Arg[]; uniforms: Uniforms } {
  const run = !!(r.mean && r.variance);
  return {
    args: [
      { name: "st", t: st, write: true },
      ...(run ? [{ name: "rm", t: r.mean!, write: true }, { name: "rv", t: r.variance!, write: true }] : []),
      ...(r.batches ? [{ name: "nb", t: r.batches, write: true }] : []),
    ],
    uniforms: { eps: { f: r.eps }, mom: { f: r.momentum }, unb: { f: r.count / Math.max(r.count - 1, 1) } },
  };
}

/**
 * Merges the forward partials into [C, 2] = (mean, 1 / sqrt(biased variance + eps)) and applies the
 * running-statistics update and the batch counter in the same kernel.
 */
export function finishMoments(op: string, x: Tensor, part: Tensor, r: RunningStats): Tensor {
  const [segs, C] = part.shape;
  const st = Tensor.empty(part.device, [C, 2], "f32", op);
  const f = finishArgs(st, r);
  const sh = shiftOf(x);
  perChannel(op, "merge", {
    key: `finishMoments ${!!(r.mean && r.variance)} ${!!r.batches}`,
    C,
    segs,
    args: [sh.arg, { name: "p", t: part }, ...f.args],
    uniforms: { S0: sh.S0, ...f.uniforms },
    finish: `let mu = ${SHIFT} + tm;
    let va = max(tq / tn, 0.0);
    ${finishCode(r)}`,
  });
  return st;
}

/** Merges the forward partials into this replica's [C, 2] = (mean, M2), for synchronised batch norm. */
export function localMoments(op: string, x: Tensor, part: Tensor): Tensor {
  const [segs, C] = part.shape;
  const loc = Tensor.empty(part.device, [C, 2], "f32", op);
  const sh = shiftOf(x);
  perChannel(op, "merge", {
    key: "localMoments",
    C,
    segs,
    args: [sh.arg, { name: "p", t: part }, { name: "lo", t: loc, write: true }],
    uniforms: { S0: sh.S0 },
    finish: `lo_st(c * 2u, ${SHIFT} + tm); lo_st(c * 2u + 1u, tq);`,
  });
  return loc;
}

/** {@link finishMoments} from a given mean and biased variance [C] (the replicas' global statistics). */
export function finishFrom(op: string, mean: Tensor, variance: Tensor, r: RunningStats): Tensor {
  const C = mean.shape[0];
  const st = Tensor.empty(mean.device, [C, 2], "f32", op);
  const f = finishArgs(st, r);
  launch1d({
    op,
    args: [{ name: "me", t: mean }, { name: "va", t: variance }, ...f.args],
    n: C,
    uniforms: f.uniforms,
    body: `  let c = gid;
  let mu = me_ld(c);
  let va = va_ld(c);
  ${finishCode(r)}`,
  });
  return st;
}

/** The statistics of eval mode from the running ones: [C, 2] = (running mean, 1 / sqrt(running var + eps)). */
export function evalStats(op: string, runningMean: Tensor, runningVar: Tensor, eps: number): Tensor {
  const C = runningMean.shape[0];
  const st = Tensor.empty(runningMean.device, [C, 2], "f32", op);
  launch1d({
    op,
    args: [{ name: "rm", t: runningMean }, { name: "rv", t: runningVar }, { name: "st", t: st, write: true }],
    n: C,
    uniforms: { eps: { f: eps } },
    body: `  st_st(gid * 2u, rm_ld(gid));\n  st_st(gid * 2u + 1u, inverseSqrt(rv_ld(gid) + sh.eps));`,
  });
  return st;
}

/**
 * Backward partials: per (segment, channel), the sums of ge and ge * (x - mean) as [segs, C, 2], where ge is
 * the output gradient `g`, masked to where the output `y` is positive when `y` is given (a fused ReLU).
 */
export function gradParts(
  op: string,
  g: Tensor,
  x: Tensor,
  y: Tensor | null,
  st: Tensor,
  w: ChannelWalk,
): Tensor {
  const part = Tensor.empty(x.device, [w.segs, w.C, 2], "f32", op);
  const v4 = w.V === 4;
  const zero = v4 ? "vec4<f32>(0.0)" : "0.0";
  const ge = y ? `select(${zero}, g_ld(i), y_ld(i) > ${zero})` : "g_ld(i)";
  const dot = (a: string, b: string) => v4 ? `dot(${a}, ${b})` : `${a} * ${b}`;
  const visit = `let ge = ${ge};
    let d = x_ld(i) - ${v4 ? "vec4<f32>(mu)" : "mu"};
    a1 = a1 + ${v4 ? "dot(ge, vec4<f32>(1.0))" : "ge"};
    a2 = a2 + ${dot("ge", "d")};`;
  launchParts(op, x, w, [
    { name: "g", t: g, vec4: v4 },
    { name: "x", t: x, vec4: v4 },
    ...(y ? [{ name: "y", t: y, vec4: v4 }] : []),
    { name: "st", t: st },
    { name: "p", t: part, write: true },
  ], {
    key: `gradParts ${v4} ${!!y}`,
    start: (c) =>
      `  let mu = st_ld((${c}) * 2u);
  var a1 = 0.0;
  var a2 = 0.0;`,
    visit,
    accs: ["a1", "a2"],
    decls: SUM_WGSL,
    tree: ["w1", "w2"],
  });
  return part;
}

/** Gradient tensors the backward's finishing step writes (each only where wanted). */
export interface GradOuts {
  /** [C, 4] per channel: mean, a, k1, k2 with gx = a * (ge - k1 - (x - mean) * k2). */
  coef: Tensor;
  weight: Tensor | null;
  bias: Tensor | null;
}

/**
 * From the backward partials [segs, C, 2]: the weight and bias gradients (this replica's sums) and the input
 * gradient's coefficients, from the sums over all replicas in `global` ([C, 2]) when given; `training` false
 * gives eval mode's gx = w * inv * ge (k1 = k2 = 0).
 */
export function finishGrads(
  op: string,
  part: Tensor,
  st: Tensor,
  weight: Tensor | null,
  o: { training: boolean; count: number; wantWeight: boolean; wantBias: boolean; global?: Tensor | null },
): GradOuts {
  const C = st.shape[0];
  const dev = st.device;
  const out: GradOuts = {
    coef: Tensor.empty(dev, [C, 4], "f32", op),
    weight: o.wantWeight ? Tensor.empty(dev, [C], "f32", op) : null,
    bias: o.wantBias ? Tensor.empty(dev, [C], "f32", op) : null,
  };
  const glob = o.global ?? null;
  const args: Arg[] = [
    { name: "p", t: part },
    ...(glob ? [{ name: "gl", t: glob }] : []),
    { name: "st", t: st },
    ...(weight ? [{ name: "w", t: weight }] : []),
    { name: "cf", t: out.coef, write: true },
    ...(out.weight ? [{ name: "gw", t: out.weight, write: true }] : []),
    ...(out.bias ? [{ name: "gb", t: out.bias, write: true }] : []),
  ];
  const finish = `let mu = st_ld(c * 2u);
    let inv = st_ld(c * 2u + 1u);
    ${out.weight ? "gw_st(c, t2 * inv);" : ""}
    ${out.bias ? "gb_st(c, t1);" : ""}
    let g1 = ${glob ? "gl_ld(c * 2u)" : "t1"};
    let g2 = ${glob ? "gl_ld(c * 2u + 1u)" : "t2"};
    cf_st(c * 4u, mu);
    cf_st(c * 4u + 1u, inv${weight ? " * w_ld(c)" : ""});
    cf_st(c * 4u + 2u, ${o.training ? "g1 * sh.rM" : "0.0"});
    cf_st(c * 4u + 3u, ${o.training ? "inv * inv * g2 * sh.rM" : "0.0"});`;
  perChannel(op, "sum", {
    key: `finishGrads ${!!glob} ${!!out.weight} ${!!out.bias} ${!!weight} ${o.training}`,
    C,
    segs: part.shape[0],
    args,
    uniforms: { rM: { f: 1 / o.count } },
    finish,
  });
  return out;
}

/** Sums the backward partials [segs, C, 2] into [C, 2] (synchronised batch norm hands these to the replicas). */
export function sumParts(op: string, part: Tensor): Tensor {
  const [segs, C] = part.shape;
  const out = Tensor.empty(part.device, [C, 2], "f32", op);
  perChannel(op, "sum", {
    key: "sumParts",
    C,
    segs,
    args: [{ name: "p", t: part }, { name: "o", t: out, write: true }],
    finish: "o_st(c * 2u, t1); o_st(c * 2u + 1u, t2);",
  });
  return out;
}
