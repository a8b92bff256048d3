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
  // Split long rows into segments reduced again: it fills the GPU when there are few outputs, and for sums
  // it keeps every sequential chain short (a tree of partial sums), which matters for accuracy in f32.
  if (kind !== "argmax" && ((O * I < 2048 && R >= 8192) || (kind === "sum" && R >= 4096))) {
    const S = Math.min(Math.ceil(R / 2048), 4096);
    const L = Math.ceil(R / S);
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
) {
  const ty = x.dtype === "f32" ? "f32" : "i32";
  const rows = O * S;
  const argmax = kind === "argmax";
  const args = [{ name: "x", t: x }, { name: "out", t: out, write: true }];
  // Sizes are uniforms: one pipeline per (kind, dtype, path), whatever the shape.
  const uniforms = { S: { d: S }, L, R, I: { d: I } };
  if (I === 1 && L >= 256) {
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
      decls: `var<workgroup> sv: array<${ty}, ${WG}>;\nvar<workgroup> si: array<u32, ${WG}>;`,
      body: `  ${S === 1 ? "let o = wg; let s = 0u;" : "let o = wg / sh.S; let s = wg - o * sh.S;"}
  let r0 = s * sh.L;
  let r1 = min(r0 + sh.L, sh.R);
  var acc: ${ty} = ${init(kind, ty)};
  var ai = 0xffffffffu;
  for (var r = r0 + lid; r < r1; r = r + WG) {
    let v = x_ld(o * sh.R + r);
    ${upd}
  }
  sv[lid] = acc;
  si[lid] = ai;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k = k / 2u) {
    if (lid < k) { ${merge} }
    workgroupBarrier();
  }
  if (lid == 0u) { out_st(wg, ${argmax ? "i32(si[0])" : "sv[0]"}); }`,
    });
    return;
  }
  // One thread per output element.
  const upd = argmax ? `if (v > acc) { acc = v; ai = r; }` : `acc = ${combine(kind, "acc", "v")};`;
  launch1d({
    op,
    args,
    n: rows * I,
    uniforms,
    // I == 1 and S == 1 (the common cases) are variants without the divisions.
    body: `  ${I === 1 ? "let i = 0u; let os = gid;" : "let os = div_I(gid); let i = gid - os * sh.I;"}
  ${S === 1 ? "let o = os; let s = 0u;" : "let o = div_S(os); let s = os - o * sh.S;"}
  let r0 = s * sh.L;
  let r1 = min(r0 + sh.L, sh.R);
  var acc: ${ty} = x_ld((o * sh.R + r0) * sh.I + i);
  var ai = r0;
  for (var r = r0 + 1u; r < r1; r = r + 1u) {
    let v = x_ld((o * sh.R + r) * sh.I + i);
    ${upd}
  }
  out_st(gid, ${argmax ? "i32(ai)" : "acc"});`,
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
