/**
 * @file Elementwise ops with NumPy/PyTorch broadcasting: unary math, binary arithmetic, comparisons,
 * `where`, `cast`, `broadcastTo`. One generic "map" kernel is generated per (expression, shapes): same-shape
 * f32/i32 operands take a vec4 path; broadcast operands get their index from baked-in, collapsed strides.
 * Scalar operands travel in the params uniform, so `mul(x, lr)` does not recompile when `lr` changes.
 * Each op's backward sits beside its forward.
 */
import { Tensor } from "../core/tensor.ts";
import type { DType } from "../core/dtype.ts";
import { record } from "../core/autograd.ts";
import { type Arg, bindingsOf, launch, params, u } from "./codegen.ts";
import { storageBytes } from "../core/dtype.ts";
import { sumTo } from "./reduce.ts";

/** A tensor or a scalar broadcast to every element. */
export type Operand = Tensor | number;

/** Broadcast result shape of several shapes, or an error naming `op` and all shapes. */
export function broadcastShapes(op: string, ...shapes: (readonly number[])[]): number[] {
  const nd = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = new Array(nd).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const d = s[s.length - 1 - i];
      const k = nd - 1 - i;
      if (out[k] === 1) out[k] = d;
      else if (d !== 1 && d !== out[k]) {
        throw new Error(`${op}: shapes ${shapes.map((x) => `[${x}]`).join(" and ")} are not broadcastable`);
      }
    }
  }
  return out;
}

/** WGSL statements computing `o<k>` (flat index into input k) from `i` (flat output index). */
function indexCode(outShape: readonly number[], inShapes: (readonly number[] | null)[]): string {
  const nd = outShape.length;
  // Per output dim, per input: broadcast flag. Drop size-1 output dims.
  type Dim = { size: number; b: boolean[] };
  let dims: Dim[] = [];
  for (let d = 0; d < nd; d++) {
    if (outShape[d] === 1) continue;
    dims.push({
      size: outShape[d],
      b: inShapes.map((s) => {
        if (!s) return false;
        const k = d - (nd - s.length);
        return k < 0 || s[k] === 1;
      }),
    });
  }
  // Merge adjacent dims with the same broadcast pattern.
  const merged: Dim[] = [];
  for (const dm of dims) {
    const last = merged[merged.length - 1];
    if (last && last.b.every((x, k) => x === dm.b[k])) last.size *= dm.size;
    else merged.push({ size: dm.size, b: [...dm.b] });
  }
  dims = merged;
  const lines: string[] = [];
  const active = inShapes.map((s, k) => (s ? k : -1)).filter((k) => k >= 0);
  for (const k of active) lines.push(`var o${k} = 0u;`);
  lines.push("var r = i;");
  const stride = inShapes.map(() => 1);
  for (let d = dims.length - 1; d >= 0; d--) {
    const dm = dims[d];
    const outer = d === 0;
    const terms = active.filter((k) => !dm.b[k]);
    if (terms.length === 0 && outer) break;
    lines.push(outer ? `{ let c = r;` : `{ let c = r % ${u(dm.size)}; r = r / ${u(dm.size)};`);
    for (const k of terms) lines.push(`  o${k} = o${k} + c * ${u(stride[k])};`);
    lines.push("}");
    for (const k of terms) stride[k] *= dm.size;
  }
  return lines.join("\n");
}

/** Expression builder: operand expressions (already loaded) and the WGSL value type of the output lane. */
export type Expr = (v: string[], T: string) => string;

interface MapOptions {
  /** Extra WGSL helper functions used by the expression. */
  decls?: string;
  /** Allow the vec4 path (the expression must be valid for vec4 operands). */
  vec4?: boolean;
  /** Output shape, when it is larger than the operands' broadcast shape (broadcastTo). */
  outShape?: readonly number[];
  /** Type of scalar operands (default: the output's, or the first tensor's for u8 outputs). */
  scalarDtype?: "f32" | "i32";
}

function wgslOf(dtype: DType): string {
  return dtype === "f32" ? "f32" : dtype === "i32" ? "i32" : "u32";
}

/**
 * Runs an elementwise expression over broadcast operands and returns the new tensor. Scalars are typed as
 * `scalarType` (default: the first tensor's dtype). No autograd here; the ops below add it.
 */
export function map(
  op: string,
  operands: Operand[],
  outDtype: DType,
  expr: Expr,
  opts: MapOptions = {},
): Tensor {
  const tensors = operands.filter((x): x is Tensor => x instanceof Tensor);
  if (tensors.length === 0) throw new Error(`${op}: at least one operand must be a tensor`);
  const device = tensors[0].device;
  for (const t of tensors) {
    t.storage(op);
    if (t.device !== device) {
      throw new Error(
        `${op}: tensors are on different devices ("${device.info.label}" and "${t.device.info.label}"), ` +
          `shapes ${tensors.map((x) => `[${x.shape}]`).join(", ")}`,
      );
    }
    if (t.dtype === "f16") throw new Error(`${op}: dtype f16 is not supported yet`);
  }
  let outShape = broadcastShapes(op, ...tensors.map((t) => t.shape));
  if (opts.outShape) {
    const want = [...opts.outShape];
    if (broadcastShapes(op, outShape, want).join() !== want.join()) {
      throw new Error(`${op}: cannot broadcast [${outShape}] to [${want}]`);
    }
    outShape = want;
  }
  const out = Tensor.empty(device, outShape, outDtype, op);
  const n = out.numel();
  if (n === 0) return out;
  const scalarDtype = opts.scalarDtype ??
    (outDtype === "i32" ? "i32" : outDtype === "f32" ? "f32" : tensors[0].dtype === "i32" ? "i32" : "f32");
  const pvals: (number | { f: number })[] = [];
  const sameShape = tensors.every((t) => t.shape.join() === outShape.join());
  const windows = [out, ...tensors].reduce(
    (k, t) => k + Math.ceil(storageBytes(t.dtype, t.numel()) / device.bindingCap),
    0,
  );
  const fits = windows <= device.info.maxStorageBuffersPerShaderStage;
  const vec4 = fits && !!opts.vec4 && sameShape && n % 4 === 0 && outDtype !== "u8" &&
    tensors.every((t) => t.dtype !== "u8");
  const args: Arg[] = [{ name: "out", t: out, write: true, vec4 }];
  let ti = 0;
  const loads: string[] = [];
  const inShapes: (readonly number[] | null)[] = [];
  const T = vec4 ? `vec4<${wgslOf(outDtype)}>` : wgslOf(outDtype);
  for (const x of operands) {
    if (x instanceof Tensor) {
      const name = `x${ti++}`;
      args.push({ name, t: x, write: false, vec4 });
      const same = x.shape.join() === outShape.join();
      inShapes.push(same ? null : x.shape);
      const k = inShapes.length - 1;
      loads.push(`${name}_ld(${same ? "i" : `o${k}`})`);
    } else {
      const k = pvals.length;
      pvals.push(scalarDtype === "f32" ? { f: x } : x);
      const s = scalarDtype === "f32" ? `pf(${k}u)` : `pi(${k}u)`;
      loads.push(vec4 ? `vec4<${scalarDtype}>(${s})` : s);
      inShapes.push(null);
    }
  }
  const p = pvals.length ? params(...pvals) : undefined;
  const value = expr(loads, T);
  const WG = 64;
  if (vec4) {
    const n4 = n / 4;
    const per = device.profile === "cpu" ? 4 : 1;
    launch({
      op,
      args,
      wg: WG,
      groups: Math.ceil(n4 / per / WG),
      params: p,
      decls: opts.decls,
      body: `  for (var e = 0u; e < ${u(per)}; e = e + 1u) {
    let i = gid * ${u(per)} + e;
    if (i < ${u(n4)}) { out_st(i, ${value}); }
  }`,
    });
    return out;
  }
  const idx = indexCode(outShape, inShapes);
  const scalar = (o0: number, o1: number, ranged: Arg[]) => {
    const inner = `let i = base + e;
    if (i < ${u(o1)}) {
      ${idx}
      let v = ${value};`;
    const start = o0 ? `${u(o0)} + ` : "";
    const body = outDtype === "u8"
      ? `  let base = ${start}gid * 4u;
  var w = 0u;
  for (var e = 0u; e < 4u; e = e + 1u) {
    ${inner}
      w = w | ((u32(v) & 255u) << (e * 8u));
    }
  }
  if (base < ${u(o1)}) { out_stw(base / 4u, w); }`
      : `  let base = ${start}gid * 4u;
  for (var e = 0u; e < 4u; e = e + 1u) {
    ${inner}
      out_st(i, v);
    }
  }`;
    const count = o1 - o0;
    launch({
      op,
      args: ranged,
      wg: WG,
      groups: Math.ceil(Math.ceil(count / 4) / WG),
      params: p,
      decls: opts.decls,
      body,
    });
  };
  if (fits) {
    scalar(0, n, args);
    return out;
  }
  // Too many windows for one dispatch: split the output into chunks. Operands with the output's shape are
  // bound only over the chunk's range; broadcast operands (bias-like, usually small) are bound whole.
  const limit = device.info.maxStorageBuffersPerShaderStage;
  const full = (a: Arg) => a.t.shape.join() === outShape.join();
  const fixed = args.filter((a) => !full(a)).reduce((k, a) => k + bindingsOf(a, device), 0);
  const split = args.filter(full).length;
  const per = Math.floor((limit - fixed) / split);
  if (per < 2) {
    throw new Error(
      `${op}: operands [${tensors.map((t) => `[${t.shape}]`).join(", ")}] need ${windows} storage bindings ` +
        `(binding cap ${device.bindingCap} B), more than the device's ${limit}, even when split`,
    );
  }
  // One window less than the budget leaves room for the 256-byte alignment of each range's start.
  const chunk = Math.floor(((per - 1) * device.bindingCap) / 4 / 256) * 256;
  const ranged = (a: Arg, lo: number, hi: number): Arg => {
    const eb = a.t.dtype === "u8" ? 1 : 4;
    const b0 = Math.floor((lo * eb) / 256) * 256;
    const b1 = Math.min(storageBytes(a.t.dtype, a.t.numel()), Math.ceil(((hi + 1) * eb) / 16) * 16);
    return { ...a, vec4: false, range: { byteOffset: b0, bytes: b1 - b0 } };
  };
  for (let o0 = 0; o0 < n; o0 += chunk) {
    const o1 = Math.min(n, o0 + chunk);
    scalar(o0, o1, args.map((a) => (full(a) ? ranged(a, o0, o1 - 1) : a)));
  }
  return out;
}

function requireFloat(op: string, ...xs: Operand[]): void {
  for (const x of xs) {
    if (x instanceof Tensor && x.dtype !== "f32") {
      throw new Error(`${op}: expects f32 tensors, got ${x.describe()} (use F.cast)`);
    }
  }
}

function sameDtype(op: string, a: Operand, b: Operand): DType {
  const ta = a instanceof Tensor ? a : null;
  const tb = b instanceof Tensor ? b : null;
  if (ta && tb && ta.dtype !== tb.dtype) {
    throw new Error(`${op}: dtypes differ: ${ta.describe()} and ${tb.describe()} (use F.cast)`);
  }
  const dt = (ta ?? tb)!.dtype;
  if (dt === "u8") {
    throw new Error(`${op}: arithmetic on u8 tensors is not supported; cast to f32 or i32 first`);
  }
  return dt;
}

// ---------------------------------------------------------------------------------------------- unary

interface UnaryDef {
  expr: (x: string, T: string) => string;
  /** Gradient given (g, x, y) tensors. */
  grad: (g: Tensor, x: Tensor, y: Tensor) => Tensor;
  /** Whether the backward needs x and/or y saved. */
  save: "x" | "y";
  int?: boolean;
}

function unary(name: string, def: UnaryDef, x: Tensor): Tensor {
  const op = `F.${name}`;
  if (!(x instanceof Tensor)) throw new Error(`${op}: expected a tensor`);
  if (!def.int || x.dtype === "u8") requireFloat(op, x);
  const y = map(op, [x], x.dtype, (v, T) => def.expr(v[0], T), { vec4: true });
  if (x.dtype !== "f32") return y;
  const saved = def.save === "x" ? x : y;
  return record(op, y, [x], [saved], (g, [s]) => [def.save === "x" ? def.grad(g, s, s) : def.grad(g, s, s)]);
}

/** -x */
export function neg(x: Tensor): Tensor {
  return unary("neg", { expr: (a) => `-(${a})`, grad: (g) => neg(g), save: "x", int: true }, x);
}

/** e^x */
export function exp(x: Tensor): Tensor {
  return unary("exp", { expr: (a) => `exp(${a})`, grad: (g, _x, y) => mul(g, y), save: "y" }, x);
}

/** Natural log. */
export function log(x: Tensor): Tensor {
  return unary("log", { expr: (a) => `log(${a})`, grad: (g, xx) => div(g, xx), save: "x" }, x);
}

/** Square root. */
export function sqrt(x: Tensor): Tensor {
  return unary(
    "sqrt",
    {
      expr: (a) => `sqrt(${a})`,
      grad: (g, _x, y) =>
        map("F.sqrt.backward", [g, y], "f32", (v) => `0.5 * ${v[0]} / ${v[1]}`, { vec4: true }),
      save: "y",
    },
    x,
  );
}

/** |x| */
export function abs(x: Tensor): Tensor {
  return unary(
    "abs",
    {
      expr: (a) => `abs(${a})`,
      grad: (g, xx) =>
        map("F.abs.backward", [g, xx], "f32", (v) => `${v[0]} * sign(${v[1]})`, { vec4: true }),
      save: "x",
      int: true,
    },
    x,
  );
}

/** max(x, 0) */
export function relu(x: Tensor): Tensor {
  return unary(
    "relu",
    {
      expr: (a, T) => `max(${a}, ${T}(0))`,
      grad: (g, _x, y) =>
        map("F.relu.backward", [g, y], "f32", (v, T) => `select(${T}(0.0), ${v[0]}, ${v[1]} > ${T}(0.0))`, {
          vec4: true,
        }),
      save: "y",
      int: true,
    },
    x,
  );
}

/** 1 / (1 + e^-x) */
export function sigmoid(x: Tensor): Tensor {
  return unary(
    "sigmoid",
    {
      expr: (a) => `1.0 / (1.0 + exp(-(${a})))`,
      grad: (g, _x, y) =>
        map("F.sigmoid.backward", [g, y], "f32", (v) => `${v[0]} * ${v[1]} * (1.0 - ${v[1]})`, {
          vec4: true,
        }),
      save: "y",
    },
    x,
  );
}

/** tanh(x), computed stably for large |x|. */
export function tanh(x: Tensor): Tensor {
  return unary(
    "tanh",
    {
      // WGSL tanh may overflow through exp on some drivers; clamp keeps it exact to f32 precision.
      expr: (a, T) => `tanh(clamp(${a}, ${T}(-15.0), ${T}(15.0)))`,
      grad: (g, _x, y) =>
        map("F.tanh.backward", [g, y], "f32", (v) => `${v[0]} * (1.0 - ${v[1]} * ${v[1]})`, { vec4: true }),
      save: "y",
    },
    x,
  );
}

/** x * sigmoid(x) */
export function silu(x: Tensor): Tensor {
  return unary(
    "silu",
    {
      expr: (a) => `${a} / (1.0 + exp(-(${a})))`,
      grad: (g, xx) =>
        map(
          "F.silu.backward",
          [g, xx],
          "f32",
          (v) =>
            `${v[0]} * (1.0 / (1.0 + exp(-${v[1]}))) * (1.0 + ${v[1]} * (1.0 - 1.0 / (1.0 + exp(-${v[1]}))))`,
          { vec4: true },
        ),
      save: "x",
    },
    x,
  );
}

const POW_DECL = `fn powf(x: f32, p: f32) -> f32 {
  if (p == 0.0) { return 1.0; }
  if (p == 1.0) { return x; }
  if (p == 2.0) { return x * x; }
  let r = pow(abs(x), p);
  if (x >= 0.0) { return r; }
  if (x == 0.0) { return r; }
  if (floor(p) != p) { return bitcast<f32>(0x7fc00000u); }
  let odd = (i32(abs(p)) & 1) == 1;
  return select(r, -r, odd);
}`;

/** x^p for a scalar exponent (negative bases allowed for integer p, as in PyTorch). */
export function pow(x: Tensor, p: number): Tensor {
  const op = "F.pow";
  requireFloat(op, x);
  if (typeof p !== "number") throw new Error(`${op}: the exponent must be a number`);
  const y = map(op, [x, p], "f32", (v) => `powf(${v[0]}, ${v[1]})`, { decls: POW_DECL });
  return record(op, y, [x], [x], (g, [xx]) => [
    p === 0
      ? mul(g, 0)
      : map("F.pow.backward", [g, xx, p - 1, p], "f32", (v) => `${v[0]} * ${v[3]} * powf(${v[1]}, ${v[2]})`, {
        decls: POW_DECL,
      }),
  ]);
}

/** Clamps to [min, max] (either bound may be omitted). Gradient passes where min <= x <= max. */
export function clamp(x: Tensor, min?: number | null, max?: number | null): Tensor {
  const op = "F.clamp";
  const lo = min ?? -Infinity;
  const hi = max ?? Infinity;
  if (x.dtype === "i32") return map(op, [x, lo, hi], "i32", (v) => `clamp(${v[0]}, ${v[1]}, ${v[2]})`);
  requireFloat(op, x);
  const y = map(op, [x, lo, hi], "f32", (v) => `min(max(${v[0]}, ${v[1]}), ${v[2]})`, { vec4: true });
  return record(op, y, [x], [x], (g, [xx]) => [
    map(
      "F.clamp.backward",
      [g, xx, lo, hi],
      "f32",
      (v, T) => `select(${T}(0.0), ${v[0]}, ${v[1]} >= ${v[2]} & ${v[1]} <= ${v[3]})`,
      {
        vec4: true,
      },
    ),
  ]);
}

// ---------------------------------------------------------------------------------------------- binary

/** a + b (broadcasting). */
export function add(a: Operand, b: Operand): Tensor {
  const op = "F.add";
  const dt = sameDtype(op, a, b);
  const y = map(op, [a, b], dt, (v) => `${v[0]} + ${v[1]}`, { vec4: true });
  const ta = asT(a), tb = asT(b);
  return record(op, y, [ta, tb], [], (g) => [
    ta?.requiresGrad ? sumTo(g, ta.shape) : null,
    tb?.requiresGrad ? sumTo(g, tb.shape) : null,
  ]);
}

/** a - b (broadcasting). */
export function sub(a: Operand, b: Operand): Tensor {
  const op = "F.sub";
  const dt = sameDtype(op, a, b);
  const y = map(op, [a, b], dt, (v) => `${v[0]} - ${v[1]}`, { vec4: true });
  const ta = asT(a), tb = asT(b);
  return record(op, y, [ta, tb], [], (g) => [
    ta?.requiresGrad ? sumTo(g, ta.shape) : null,
    tb?.requiresGrad ? sumTo(neg(g), tb.shape) : null,
  ]);
}

/** a * b (broadcasting). */
export function mul(a: Operand, b: Operand): Tensor {
  const op = "F.mul";
  const dt = sameDtype(op, a, b);
  const y = map(op, [a, b], dt, (v) => `${v[0]} * ${v[1]}`, { vec4: true });
  const ta = asT(a), tb = asT(b);
  const save = [ta?.requiresGrad ? b : null, tb?.requiresGrad ? a : null].filter((x): x is Tensor =>
    x instanceof Tensor
  );
  return record(op, y, [ta, tb], save, (g, s) => {
    let k = 0;
    const sb = ta?.requiresGrad && b instanceof Tensor ? s[k++] : b;
    const sa = tb?.requiresGrad && a instanceof Tensor ? s[k++] : a;
    return [
      ta?.requiresGrad ? sumTo(mul(g, sb as Operand), ta.shape) : null,
      tb?.requiresGrad ? sumTo(mul(g, sa as Operand), tb.shape) : null,
    ];
  });
}

/** a / b (broadcasting; f32 only: true division). */
export function div(a: Operand, b: Operand): Tensor {
  const op = "F.div";
  requireFloat(op, a, b);
  const y = map(op, [a, b], "f32", (v) => `${v[0]} / ${v[1]}`, { vec4: true });
  const ta = asT(a), tb = asT(b);
  const bb = b;
  return record(op, y, [ta, tb], [b, y].filter((x): x is Tensor => x instanceof Tensor), (g, s) => {
    const sb = bb instanceof Tensor ? s[0] : bb;
    const sy = bb instanceof Tensor ? s[1] : s[0];
    return [
      ta?.requiresGrad ? sumTo(div(g, sb), ta.shape) : null,
      tb?.requiresGrad
        ? sumTo(
          map("F.div.backward", [g, sy, sb], "f32", (v) => `-${v[0]} * ${v[1]} / ${v[2]}`, { vec4: true }),
          tb.shape,
        )
        : null,
    ];
  });
}

function minmax(name: "maximum" | "minimum", a: Operand, b: Operand): Tensor {
  const op = `F.${name}`;
  const dt = sameDtype(op, a, b);
  const fn = name === "maximum" ? "max" : "min";
  const y = map(op, [a, b], dt, (v) => `${fn}(${v[0]}, ${v[1]})`, { vec4: true });
  if (dt !== "f32") return y;
  const ta = asT(a), tb = asT(b);
  const cmp = name === "maximum" ? ">" : "<";
  // PyTorch: the gradient is split evenly where a == b.
  const gradFor = (g: Tensor, x: Operand, o: Operand) =>
    map(
      `${op}.backward`,
      [g, x, o],
      "f32",
      (v, T) =>
        `select(select(${T}(0.0), ${v[0]}, ${v[1]} ${cmp} ${v[2]}), ${v[0]} * 0.5, ${v[1]} == ${v[2]})`,
      { vec4: true },
    );
  return record(op, y, [ta, tb], [a, b].filter((x): x is Tensor => x instanceof Tensor), (g, s) => {
    let k = 0;
    const sa = a instanceof Tensor ? s[k++] : a;
    const sb = b instanceof Tensor ? s[k++] : b;
    return [
      ta?.requiresGrad ? sumTo(gradFor(g, sa, sb), ta.shape) : null,
      tb?.requiresGrad ? sumTo(gradFor(g, sb, sa), tb.shape) : null,
    ];
  });
}

/** Elementwise max of a and b (broadcasting). */
export function maximum(a: Operand, b: Operand): Tensor {
  return minmax("maximum", a, b);
}

/** Elementwise min of a and b (broadcasting). */
export function minimum(a: Operand, b: Operand): Tensor {
  return minmax("minimum", a, b);
}

function asT(x: Operand): Tensor | null {
  return x instanceof Tensor ? x : null;
}

// ---------------------------------------------------------------------------------------------- compare

function compare(name: string, sym: string, a: Operand, b: Operand): Tensor {
  const op = `F.${name}`;
  const ta = asT(a), tb = asT(b);
  if (ta && tb && ta.dtype !== tb.dtype) {
    throw new Error(`${op}: dtypes differ: ${ta.describe()} and ${tb.describe()} (use F.cast)`);
  }
  const t = (ta ?? tb)!;
  if (t.dtype === "u8") {
    // u8 loads are u32; scalars travel as f32 bits, so compare in f32.
    return map(
      op,
      [a, b],
      "u8",
      (v) =>
        `select(0u, 1u, ${a instanceof Tensor ? `f32(${v[0]})` : v[0]} ${sym} ${
          b instanceof Tensor ? `f32(${v[1]})` : v[1]
        })`,
    );
  }
  return map(op, [a, b], "u8", (v) => `select(0u, 1u, ${v[0]} ${sym} ${v[1]})`);
}

/** a == b as u8 0/1. */
export function eq(a: Operand, b: Operand): Tensor {
  return compare("eq", "==", a, b);
}
/** a != b as u8 0/1. */
export function ne(a: Operand, b: Operand): Tensor {
  return compare("ne", "!=", a, b);
}
/** a < b as u8 0/1. */
export function lt(a: Operand, b: Operand): Tensor {
  return compare("lt", "<", a, b);
}
/** a <= b as u8 0/1. */
export function le(a: Operand, b: Operand): Tensor {
  return compare("le", "<=", a, b);
}
/** a > b as u8 0/1. */
export function gt(a: Operand, b: Operand): Tensor {
  return compare("gt", ">", a, b);
}
/** a >= b as u8 0/1. */
export function ge(a: Operand, b: Operand): Tensor {
  return compare("ge", ">=", a, b);
}

/** `cond ? a : b` elementwise with broadcasting; `cond` is any dtype (non-zero is true). */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  const op = "F.where";
  if (!(cond instanceof Tensor)) throw new Error(`${op}: cond must be a tensor`);
  const dt = sameDtype(op, a, b);
  const zero = cond.dtype === "f32" ? "0.0" : cond.dtype === "i32" ? "0" : "0u";
  const y = map(op, [cond, a, b], dt, (v) => `select(${v[2]}, ${v[1]}, ${v[0]} != ${zero})`);
  const ta = asT(a), tb = asT(b);
  return record(op, y, [null, ta, tb], [cond], (g, [c]) => [
    null,
    ta?.requiresGrad ? sumTo(where(c, g, 0), ta.shape) : null,
    tb?.requiresGrad ? sumTo(where(c, 0, g), tb.shape) : null,
  ]);
}

/** Converts dtype (f32 -> i32 truncates toward zero; -> u8 keeps the low 8 bits). f32 -> f32 copies. */
export function cast(x: Tensor, dtype: DType): Tensor {
  const op = "F.cast";
  if (dtype === "f16" || x.dtype === "f16") throw new Error(`${op}: dtype f16 is not supported yet`);
  const conv: Record<string, (v: string) => string> = {
    "f32>f32": (v) => v,
    "f32>i32": (v) => `i32(${v})`,
    "f32>u8": (v) => `u32(i32(${v})) & 255u`,
    "i32>f32": (v) => `f32(${v})`,
    "i32>i32": (v) => v,
    "i32>u8": (v) => `u32(${v}) & 255u`,
    "u8>f32": (v) => `f32(${v})`,
    "u8>i32": (v) => `i32(${v})`,
    "u8>u8": (v) => v,
  };
  const y = map(op, [x], dtype, (v) => conv[`${x.dtype}>${dtype}`](v[0]));
  if (dtype !== "f32" || x.dtype !== "f32") return y;
  return record(op, y, [x], [], (g) => [g]);
}

/** Materialises `x` broadcast to `shape`. Backward sums over the broadcast dims. */
export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  const op = "F.broadcastTo";
  const y = map(op, [x], x.dtype, (v) => v[0], { outShape: shape });
  const xs = x.shape;
  return record(op, y, [x], [], (g) => [sumTo(g, xs)]);
}
