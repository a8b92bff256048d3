/**
 * @file Unary elementwise ops. The plain ones are rows of one table, each op's forward and derivative side by
 * side as WGSL; the exported functions are generated from it. Ops with scalar parameters (`pow`, `clamp`)
 * and the dtype/shape conversions (`cast`, `broadcastTo`) follow as functions.
 */
import { Tensor } from "../../core/tensor.ts";
import type { DType } from "../../core/dtype.ts";
import { record } from "../../core/autograd.ts";
import { map, mapRow, reads, requireFloat } from "./map.ts";
import { mul } from "./binary.ts";
import { sumTo } from "../reduce.ts";
import { castFloat } from "../cast.ts";

/** One row of {@link UNARY}. */
interface UnaryRow {
  /** y = f(x), WGSL over `x`; `T` is the lane type (f32, i32 or a vec4 of them). */
  forward: string;
  /** dL/dx, WGSL over `g` (dL/dy) and `x` and/or `y`: whichever it reads is saved for the backward. */
  derivative: string;
  /** Also defined on i32 tensors (without a gradient). */
  int?: boolean;
}

/** The unary op table. */
const UNARY = {
  neg: { forward: "-(x)", derivative: "-(g)", int: true },
  exp: { forward: "exp(x)", derivative: "g * y" },
  log: { forward: "log(x)", derivative: "g / x" },
  sqrt: { forward: "sqrt(x)", derivative: "0.5 * g / y" },
  abs: { forward: "abs(x)", derivative: "g * sign(x)", int: true },
  relu: { forward: "max(x, T(0))", derivative: "select(T(0.0), g, y > T(0.0))", int: true },
  sigmoid: { forward: "1.0 / (1.0 + exp(-(x)))", derivative: "g * y * (1.0 - y)" },
  // WGSL tanh may overflow through exp on some drivers; the clamp keeps it exact to f32 precision.
  tanh: { forward: "tanh(clamp(x, T(-15.0), T(15.0)))", derivative: "g * (1.0 - y * y)" },
  silu: {
    forward: "x / (1.0 + exp(-(x)))",
    derivative: "g * (1.0 / (1.0 + exp(-x))) * (1.0 + x * (1.0 - 1.0 / (1.0 + exp(-x))))",
  },
} satisfies Record<string, UnaryRow>;

/** A generated unary op. */
export type UnaryOp = (x: Tensor) => Tensor;

function unaryOp(name: keyof typeof UNARY): UnaryOp {
  const row: UnaryRow = UNARY[name];
  const op = `F.${name}`;
  const save = (["x", "y"] as const).filter((k) => reads(row.derivative, k));
  return (x) => {
    if (!(x instanceof Tensor)) throw new Error(`${op}: expected a tensor`);
    if (!row.int || x.dtype === "u8") requireFloat(op, x);
    const y = mapRow(op, row.forward, { x }, x.dtype, { vec4: true });
    if (x.dtype !== "f32") return y;
    return record(op, y, [x], save.map((k) => (k === "x" ? x : y)), (g, saved) => [
      mapRow(
        `${op}.backward`,
        row.derivative,
        { g, ...Object.fromEntries(save.map((k, i) => [k, saved[i]])) },
        "f32",
        { vec4: true },
      ),
    ]);
  };
}

/** -x */
export const neg: UnaryOp = unaryOp("neg");
/** e^x */
export const exp: UnaryOp = unaryOp("exp");
/** Natural log. */
export const log: UnaryOp = unaryOp("log");
/** Square root. */
export const sqrt: UnaryOp = unaryOp("sqrt");
/** |x| */
export const abs: UnaryOp = unaryOp("abs");
/** max(x, 0) */
export const relu: UnaryOp = unaryOp("relu");
/** 1 / (1 + e^-x) */
export const sigmoid: UnaryOp = unaryOp("sigmoid");
/** tanh(x), computed stably for large |x|. */
export const tanh: UnaryOp = unaryOp("tanh");
/** x * sigmoid(x) */
export const silu: UnaryOp = unaryOp("silu");

const POW_DECL = `fn powf(x: f32, p: f32) -> f32 {
  if (p == 0.0) { return 1.0; }
  if (p == 1.0) { return x; }
  if (p == 2.0) { return x * x; }
  let r = pow(abs(x), p);
  if (x >= 0.0) { return r; }
  if (x == 0.0) { return r; }
  if (floor(p) != p) { return bits_f32(0x7fc00000u); }
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
    mapRow("F.clamp.backward", "select(T(0.0), g, x >= lo & x <= hi)", { g, x: xx, lo, hi }, "f32", {
      vec4: true,
    }),
  ]);
}

/**
 * Converts dtype (f32 -> i32 truncates toward zero; -> u8 keeps the low 8 bits). f32 -> f32 copies. f32 <-> f16
 * rounds to nearest even (kernels/cast.ts; needs `shader-f16`).
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  const op = "F.cast";
  if (dtype === "f16" || x.dtype === "f16") return castFloat(x, dtype as "f32" | "f16");
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
