/**
 * @file Comparisons as a table of WGSL expressions, each giving a u8 0/1 tensor (no gradient), and `where`,
 * which selects by such a mask.
 */
import { Tensor } from "../../core/tensor.ts";
import { record } from "../../core/autograd.ts";
import { asT, fill, map, mapRow, type Operand, sameDtype } from "./map.ts";
import { sumTo } from "../reduce.ts";

/** The comparison table: WGSL over `a` and `b`. */
const COMPARE = {
  eq: "a == b",
  ne: "a != b",
  lt: "a < b",
  le: "a <= b",
  gt: "a > b",
  ge: "a >= b",
} satisfies Record<string, string>;

/** A generated comparison: tensors or scalars (at least one tensor) of one dtype, broadcast; u8 0/1 out. */
export type CompareOp = (a: Operand, b: Operand) => Tensor;

function compareOp(name: keyof typeof COMPARE): CompareOp {
  const op = `F.${name}`;
  return (a, b) => {
    const ta = asT(a), tb = asT(b);
    if (ta && tb && ta.dtype !== tb.dtype) {
      throw new Error(`${op}: dtypes differ: ${ta.describe()} and ${tb.describe()} (use F.cast)`);
    }
    // u8 loads are u32; scalars travel as f32 bits, so u8 tensors compare in f32.
    const u8 = (ta ?? tb)!.dtype === "u8";
    const src = u8 ? fill(COMPARE[name], { a: ta ? "f32(a)" : "a", b: tb ? "f32(b)" : "b" }) : COMPARE[name];
    return mapRow(op, `select(0u, 1u, ${src})`, { a, b }, "u8");
  };
}

/** a == b as u8 0/1. */
export const eq: CompareOp = compareOp("eq");
/** a != b as u8 0/1. */
export const ne: CompareOp = compareOp("ne");
/** a < b as u8 0/1. */
export const lt: CompareOp = compareOp("lt");
/** a <= b as u8 0/1. */
export const le: CompareOp = compareOp("le");
/** a > b as u8 0/1. */
export const gt: CompareOp = compareOp("gt");
/** a >= b as u8 0/1. */
export const ge: CompareOp = compareOp("ge");

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
