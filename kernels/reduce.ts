/**
 * @file Reductions over chosen axes: sum, mean, max, min (amax/amin semantics), argmax, and `sumTo` (the
 * reduction that undoes broadcasting in gradients).
 *
 * A reduction over a contiguous run of axes views the input as [O, R, I] and reduces R. Long rows use a
 * workgroup per row with a tree in workgroup memory; short rows or I > 1 use one thread per output. When
 * there are few outputs and R is long, R is first split into segments whose partial results are reduced
 * again, so that the whole GPU works on e.g. the sum of a large tensor. Axes that are not contiguous are
 * reduced one run after another.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { f, launch, launch1d } from "./codegen.ts";
import { map } from "./elementwise/map.ts";

type Kind = "sum" | "max" | "min" | "argmax";

/** Normalises axes (negative allowed) to a sorted unique list, or an error naming `op`. */
export function normAxes(op: string, ndim: number, axes?: number | readonly number[] | null): number[] {
  if (axes === undefined || axes === null) return [...Array(ndim).keys()];
  const list = typeof axes === "number" ? [axes] : [...axes];
  const out = list.map((a) => {
    if (!Number.isInteger(a) || a < -ndim || a >= Math.max(ndim, 1)) {
      throw new Error(`${op}: axis ${a} is out of range for a tensor of ${ndim} dims`);
    }
    return a < 0 ? a + ndim : a;
  });
  return [...new Set(out)].sort((a, b) => a - b);
}

function init(kind: Kind, ty: string): string {
  if (kind === "sum") return ty === "f32" ? "0.0" : "0";
  const big = ty === "f32" ? f(Infinity) : "2147483647";
  const small = ty === "f32" ? f(-Infinity) : "(-2147483647 - 1)";
  return kind === "min" ? big : small;
}

function combine(kind: Kind, acc: string, v: string): string {
  return kind === "sum" ? `${acc} + ${v}` : kind === "min" ? `min(${acc}, ${v})` : `max(${acc}, ${v})`;
}

/** Reduces dim 1 of x viewed as [O, R, I] into a new tensor of `outShape` (O*I elements). */
function reduceORI(
  op: string,
  x: Tensor,
  O: number,
  R: number,
  I: number,
  kind: Kind,
  outShape: number[],
): Tensor {
  const device = x.device;
  const ty = x.dtype === "f32" ? "f32" : "i32";
  const outDtype = kind === "argmax" ? "i32" : x.dtype;
  const out = Tensor.empty(device, outShape, outDtype, op);
  if (O * I === 0) return out;
  if (R === 0) {
    if (kind !== "sum") throw new Error(`${op}: cannot reduce an empty dimension`);
    launch1d({
      op,
      args: [{ name: "out", t: out, write: true }],
      n: O * I,
      body: `  out_st(gid, ${init("sum", ty)});`,
    });
    return out;
  }
  const { S, L } = split(O * I, R, kind, laneRows(x, kind));
  if (S > 1) {
    const part = Tensor.empty(device, [O, S, I], x.dtype, op);
    reduceSegInto(op, x, part, O, R, I, kind, S, L);
    const res = reduceORI(op, part, O, S, I, kind, outShape);
    part.dispose();
    out.dispose();
    return res;
  }
  reduceSegInto(op, x, out, O, R, I, kind, 1, R);
  return out;
}

/**
 * Segments to split rows of length R into, reduced again afterwards (1: no split): it fills the GPU when there
 * are few outputs, and for sums it keeps every sequential chain short (a tree of partial sums), which
 * matters for accuracy in f32.
 */
function segments(outputs: number, R: number, kind: Kind, cpu: boolean): number {
  if (kind === "argmax") return 1;
  // The cpu profile's lanes walk ~1024 values each (see laneRows).
  if (cpu) return R >= 2048 ? Math.min(Math.ceil(R / 1024), 4096) : 1;
  if (!((outputs < 2048 && R >= 8192) || (kind === "sum" && R >= 4096))) return 1;
  return Math.min(Math.ceil(R / 2048), 4096);
}

/**
 * Rows of length R as S segments of L values, none empty (S = ceil(R / L)); on the cpu profile L is a multiple of
 * 4 where R is, so that the lanes load vec4s.
 */
function split(outputs: number, R: number, kind: Kind, cpu: boolean): { S: number; L: number } {
  const S0 = segments(outputs, R, kind, cpu);
  let L = Math.ceil(R / S0);
  if (cpu && R % 4 === 0) L = Math.ceil(L / 4) * 4;
  return { S: Math.ceil(R / L), L };
}

/**
 * Whether a row reduction runs a lane per (row, segment) with no workgroup tree: always on the cpu profile,
 * as llvmpipe pays dearly for a tree's barriers (it runs a workgroup's lanes as one loop per barrier-free piece)
 * and loads lane by lane whatever the lanes' addresses (kernels/norm/stats.ts does the same).
 */
function laneRows(x: Tensor, kind: Kind): boolean {
  return x.device.profile === "cpu" && kind !== "argmax";
}

/**
 * Reduces every axis but `a` (0 < a < ndim - 1) of x, viewed as [B, C, R]: the first pass reduces each
 * (b, c) row (in segments when long) into [C, B x segments], the second those per c. Two dispatches where
 * reducing the two runs of axes one after the other takes two or three (a conv bias's gradient).
 */
function reduceAllBut(
  op: string,
  x: Tensor,
  a: number,
  kind: Kind,
  reluOf?: { y: Tensor; out: Tensor },
): Tensor {
  const B = x.shape.slice(0, a).reduce((p, d) => p * d, 1);
  const C = x.shape[a];
  const R = x.shape.slice(a + 1).reduce((p, d) => p * d, 1);
  const { S, L } = split(B * C, R, kind, laneRows(x, kind));
  const part = Tensor.empty(x.device, [C, B * S], x.dtype, op);
  reduceSegInto(op, x, part, B * C, R, 1, kind, S, L, { keep: { C, B }, reluOf });
  const r = reduceORI(op, part, C, B * S, 1, kind, x.shape.map((d, i) => (i === a ? d : 1)));
  part.dispose();
  return r;
}

/** Options of {@link reduceSegInto}. */
interface SegOptions {
  /** I == 1 and rows o = b * C + c: write out[c, b, s] instead, so that a second pass reduces (b, s) per c. */
  keep?: { C: number; B: number };
  /** Reduce where(y > 0, x, 0) instead of x (a ReLU's gradient), and write those values to `out`. */
  reluOf?: { y: Tensor; out: Tensor };
}

/** out[o, s, i] = reduce over r in segment s (length L, last shorter) of x[o, r, i]. */
function reduceSegInto(
  op: string,
  x: Tensor,
  out: Tensor,
  O: number,
  R: number,
  I: number,
  kind: Kind,
  S: number,
  L: number,
  o: SegOptions = {},
) {
  const ty = x.dtype === "f32" ? "f32" : "i32";
  const rows = O * S;
  const argmax = kind === "argmax";
  const { keep, reluOf } = o;
  const tree = I === 1 && L >= 256 && !laneRows(x, kind);
  // The per-thread path walks f32 rows whose length and segments are multiples of 4 in vec4 units, four running
  // partials folded at the end.
  const V = !tree && I === 1 && R % 4 === 0 && L % 4 === 0 && ty === "f32" && !argmax ? 4 : 1;
  const v4 = V === 4, reg = v4 ? "vec4<f32>" : ty, zero = v4 ? "vec4<f32>(0.0)" : "0.0";
  const args = [
    { name: "x", t: x, vec4: v4 },
    { name: "out", t: out, write: true },
    ...(reluOf
      ? [{ name: "ry", t: reluOf.y, vec4: v4 }, { name: "rg", t: reluOf.out, write: true, vec4: v4 }]
      : []),
  ];
  // Sizes are uniforms: one pipeline per (kind, dtype, path), whatever the shape.
  const uniforms = {
    S: { d: S },
    L: L / V,
    R: R / V,
    I: { d: I },
    ...(keep ? { kC: { d: keep.C }, kB: keep.B } : {}),
  };
  const at = (flat: string) => keep ? `((o - div_kC(o) * sh.kC) * sh.kB + div_kC(o)) * sh.S + s` : flat;
  const ld = reluOf ? "relu_ld" : "x_ld";
  const decls = reluOf
    ? `fn relu_ld(i: u32) -> ${reg} { let v = select(${zero}, x_ld(i), ry_ld(i) > ${zero}); rg_st(i, v); return v; }\n`
    : "";
  if (tree) {
    // One workgroup per (o, s) row: strided partial sums, then a tree in workgroup memory.
    const WG = 64;
    const upd = argmax
      ? `if (v > acc || ai == 0xffffffffu) { acc = v; ai = r; }`
      : `acc = ${combine(kind, "acc", "v")};`;
    const merge = argmax
      ? `let ov = sv[lid + k]; let oi = si[lid + k];
         if (ov > sv[lid] || (ov == sv[lid] && oi < si[lid])) { sv[lid] = ov; si[lid] = oi; }`
      : `sv[lid] = ${combine(kind, "sv[lid]", "sv[lid + k]")};`;
    launch({
      op,
      args,
      wg: WG,
      groups: rows,
      uniforms,
      decls: `${decls}var<workgroup> sv: array<${ty}, ${WG}>;\nvar<workgroup> si: array<u32, ${WG}>;`,
      key: `tree ${kind} ${ty} ${S === 1} ${!!keep} ${!!reluOf}`,
      body: () =>
        `  ${S === 1 ? "let o = wg; let s = 0u;" : "let o = wg / sh.S; let s = wg - o * sh.S;"}
  let r0 = s * sh.L;
  let r1 = min(r0 + sh.L, sh.R);
  var acc: ${ty} = ${init(kind, ty)};
  var ai = 0xffffffffu;
  for (var r = r0 + lid; r < r1; r = r + WG) {
    let v = ${ld}(o * sh.R + r);
    ${upd}
  }
  sv[lid] = acc;
  si[lid] = ai;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k = k / 2u) {
    if (lid < k) { ${merge} }
    workgroupBarrier();
  }
  if (lid == 0u) { out_st(${at("wg")}, ${argmax ? "i32(si[0])" : "sv[0]"}); }`,
    });
    return;
  }
  // One thread per output element.
  const upd = argmax ? `if (v > acc) { acc = v; ai = r; }` : `acc = ${combine(kind, "acc", "v")};`;
  const result = argmax
    ? "i32(ai)"
    : !v4
    ? "acc"
    : kind === "sum"
    ? "(acc.x + acc.y) + (acc.z + acc.w)"
    : `${kind}(${kind}(acc.x, acc.y), ${kind}(acc.z, acc.w))`;
  launch1d({
    op,
    args,
    n: rows * I,
    uniforms,
    decls,
    key: `lanes ${kind} ${ty} ${v4} ${S === 1} ${I === 1} ${!!keep} ${!!reluOf}`,
    // I == 1 and S == 1 (the common cases) are variants without the divisions.
    body: () =>
      `  ${I === 1 ? "let i = 0u; let os = gid;" : "let os = div_I(gid); let i = gid - os * sh.I;"}
  ${S === 1 ? "let o = os; let s = 0u;" : "let o = div_S(os); let s = os - o * sh.S;"}
  let r0 = s * sh.L;
  let r1 = min(r0 + sh.L, sh.R);
  var acc: ${reg} = ${ld}((o * sh.R + r0) * sh.I + i);
  var ai = r0;
  for (var r = r0 + 1u; r < r1; r = r + 1u) {
    let v = ${ld}((o * sh.R + r) * sh.I + i);
    ${upd}
  }
  out_st(${at("gid")}, ${result});`,
  });
}

function checkReduceInput(op: string, x: Tensor): void {
  if (!(x instanceof Tensor)) throw new Error(`${op}: expected a tensor`);
  x.storage(op);
  if (x.dtype === "u8" || x.dtype === "f16") {
    throw new Error(`${op}: unsupported dtype ${x.dtype} (cast first)`);
  }
}

/** Reduces `axes` (sorted) without autograd; returns the keepDim-shaped result. */
function reduceAxes(op: string, x: Tensor, axes: number[], kind: Kind): Tensor {
  const shape = [...x.shape];
  // Group axes into contiguous runs; reduce from the last run so indices stay valid.
  const runs: [number, number][] = [];
  for (const a of axes) {
    const last = runs[runs.length - 1];
    if (last && last[1] === a) last[1] = a + 1;
    else runs.push([a, a + 1]);
  }
  if (runs.length === 0) return kind === "argmax" ? x : map(op, [x], x.dtype, (v) => v[0]);
  if (
    kind !== "argmax" && runs.length === 2 && runs[0][0] === 0 && runs[1][1] === shape.length &&
    runs[1][0] === runs[0][1] + 1 && x.numel() > 0
  ) {
    return reduceAllBut(op, x, runs[0][1], kind);
  }
  let cur = x;
  for (let k = runs.length - 1; k >= 0; k--) {
    const [a0, a1] = runs[k];
    const O = shape.slice(0, a0).reduce((p, d) => p * d, 1);
    const R = shape.slice(a0, a1).reduce((p, d) => p * d, 1);
    const I = shape.slice(a1).reduce((p, d) => p * d, 1);
    for (let d = a0; d < a1; d++) shape[d] = 1;
    const next = reduceORI(op, cur, O, R, I, kind, [...shape]);
    if (cur !== x) cur.dispose();
    cur = next;
  }
  return cur;
}

function dropAxes(shape: readonly number[], axes: number[]): number[] {
  return shape.filter((_, i) => !axes.includes(i));
}

function keptShape(shape: readonly number[], axes: number[]): number[] {
  return shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

/**
 * The gradient through a ReLU and its sum per channel in one pass (no autograd): for y = relu(z) and g the
 * gradient at y, both [N, C, ...], returns where(y > 0, g, 0) (the gradient at z) and its sum over every
 * axis but 1 (the gradient of a bias added to z, as in a conv with a fused ReLU).
 */
export function reluGradChannelSum(g: Tensor, y: Tensor): { grad: Tensor; sum: Tensor } {
  const op = "F.relu.backward";
  checkReduceInput(op, g);
  if (g.ndim < 2 || g.dtype !== "f32" || y.shape.join() !== g.shape.join()) {
    throw new Error(
      `${op}: needs an f32 gradient [N, C, ...] and an output of its shape, got ${g.describe()}, ${y.describe()}`,
    );
  }
  const grad = Tensor.empty(g.device, g.shape, "f32", op);
  if (g.numel() === 0) return { grad, sum: sum(grad, [0, ...g.shape.slice(2).map((_, i) => i + 2)]) };
  const k = reduceAllBut(op, g, 1, "sum", { y, out: grad });
  const r = k.reshape([g.shape[1]]);
  k.dispose();
  return { grad, sum: r };
}

/** Sum over `axes` (all by default). */
export function sum(x: Tensor, axes?: number | readonly number[] | null, keepDim = false): Tensor {
  const op = "F.sum";
  checkReduceInput(op, x);
  const ax = normAxes(op, x.ndim, axes);
  const k = reduceAxes(op, x, ax, "sum");
  const y = keepDim ? k : k.reshape(dropAxes(x.shape, ax));
  if (!keepDim) k.dispose();
  const xs = x.shape;
  return record(op, y, [x], [], (g) => [
    map("F.sum.backward", [g.reshape(keptShape(xs, ax))], g.dtype, (v) => v[0], { outShape: xs }),
  ]);
}

/** Mean over `axes` (all by default). */
export function mean(x: Tensor, axes?: number | readonly number[] | null, keepDim = false): Tensor {
  const op = "F.mean";
  checkReduceInput(op, x);
  if (x.dtype !== "f32") throw new Error(`${op}: expects f32, got ${x.describe()}`);
  const ax = normAxes(op, x.ndim, axes);
  const count = ax.reduce((p, a) => p * x.shape[a], 1);
  const k = reduceAxes(op, x, ax, "sum");
  const scaled = map(op, [k, 1 / count], "f32", (v) => `${v[0]} * ${v[1]}`, { vec4: true });
  k.dispose();
  const y = keepDim ? scaled : scaled.reshape(dropAxes(x.shape, ax));
  if (!keepDim) scaled.dispose();
  const xs = x.shape;
  return record(op, y, [x], [], (g) => [
    map("F.mean.backward", [g.reshape(keptShape(xs, ax)), 1 / count], "f32", (v) => `${v[0]} * ${v[1]}`, {
      outShape: xs,
    }),
  ]);
}

function extreme(
  kind: "max" | "min",
  x: Tensor,
  axes?: number | readonly number[] | null,
  keepDim = false,
): Tensor {
  const op = `F.${kind}`;
  checkReduceInput(op, x);
  const ax = normAxes(op, x.ndim, axes);
  for (const a of ax) {
    if (x.shape[a] === 0) throw new Error(`${op}: cannot reduce the empty axis ${a} of [${x.shape}]`);
  }
  const k = reduceAxes(op, x, ax, kind);
  const y = keepDim ? k : k.reshape(dropAxes(x.shape, ax));
  if (!keepDim) k.dispose();
  const xs = x.shape;
  // Gradient is shared evenly among the elements equal to the extreme (amax/amin semantics).
  return record(op, y, [x], [x, y], (g, [sx, sy]) => {
    const kshape = keptShape(xs, ax);
    const yk = sy.reshape(kshape);
    const maskF = map(`${op}.backward`, [sx, yk], "f32", (v) => `select(0.0, 1.0, ${v[0]} == ${v[1]})`);
    const cnt = reduceAxes(`${op}.backward`, maskF, ax, "sum");
    const gx = map(
      `${op}.backward`,
      [g.reshape(kshape), maskF, cnt],
      "f32",
      (v) => `${v[0]} * ${v[1]} / ${v[2]}`,
    );
    for (const t of [yk, maskF, cnt]) t.dispose();
    return [gx];
  });
}

/** Max over `axes` (all by default), like `torch.amax`. */
export function max(x: Tensor, axes?: number | readonly number[] | null, keepDim = false): Tensor {
  return extreme("max", x, axes, keepDim);
}

/** Min over `axes` (all by default), like `torch.amin`. */
export function min(x: Tensor, axes?: number | readonly number[] | null, keepDim = false): Tensor {
  return extreme("min", x, axes, keepDim);
}

/** Index (i32) of the first maximum along `axis`, or over the flattened tensor when `axis` is omitted. */
export function argmax(x: Tensor, axis?: number | null, keepDim = false): Tensor {
  const op = "F.argmax";
  checkReduceInput(op, x);
  if (axis === undefined || axis === null) {
    if (x.numel() === 0) throw new Error(`${op}: empty tensor`);
    const flat = x.reshape([x.numel()]);
    const r = reduceAxes(op, flat, [0], "argmax");
    flat.dispose();
    const y = r.reshape(keepDim ? x.shape.map(() => 1) : []);
    r.dispose();
    return y;
  }
  const [a] = normAxes(op, x.ndim, axis);
  if (x.shape[a] === 0) throw new Error(`${op}: cannot reduce the empty axis ${a} of [${x.shape}]`);
  const r = reduceAxes(op, x, [a], "argmax");
  if (keepDim) return r;
  const y = r.reshape(dropAxes(x.shape, [a]));
  r.dispose();
  return y;
}

/** Sums `g` over the dims that broadcasting expanded, giving a tensor of `shape` (gradient helper). */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (g.shape.join() === shape.join()) return g;
  const lead = g.ndim - shape.length;
  if (lead < 0) throw new Error(`sumTo: cannot reduce [${g.shape}] to [${shape}]`);
  const axes: number[] = [];
  for (let i = 0; i < g.ndim; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  const s = sum(g, axes, true);
  const r = s.reshape(shape);
  s.dispose();
  return r;
}
