/**
 * @file Binary arithmetic with broadcasting, as one table: each op's forward and its two partial
 * derivatives side by side as WGSL. The exported functions are generated from it; the gradient of an operand
 * that was broadcast is summed back to its shape.
 */
import { Tensor } from "../../core/tensor.ts";
import type { DType } from "../../core/dtype.ts";
import { record } from "../../core/autograd.ts";
import { asT, mapRow, type Operand, reads, requireFloat, sameDtype } from "./map.ts";
import { sumTo } from "../reduce.ts";

/** One row of {@link BINARY}. */
interface BinaryRow {
  /** y = a (op) b, WGSL over `a` and `b`; `T` is the lane type. */
  forward: string;
  /**
   * dL/da and dL/db, WGSL over `g` (dL/dy), `a`, `b` and `y`: what they read is saved for the backward.
   * Exactly `"g"` passes the gradient on without a kernel.
   */
  da: string;
  db: string;
  /** f32 only (true division); otherwise both operands share one dtype, f32 or i32. */
  float?: boolean;
}

// maximum/minimum split the gradient evenly where a == b, as PyTorch does.
/** The binary op table. */
const BINARY = {
  add: { forward: "a + b", da: "g", db: "g" },
  sub: { forward: "a - b", da: "g", db: "-(g)" },
  mul: { forward: "a * b", da: "g * b", db: "g * a" },
  div: { forward: "a / b", da: "g / b", db: "-g * y / b", float: true },
  maximum: {
    forward: "max(a, b)",
    da: "select(select(T(0.0), g, a > b), g * 0.5, a == b)",
    db: "select(select(T(0.0), g, b > a), g * 0.5, b == a)",
  },
  minimum: {
    forward: "min(a, b)",
    da: "select(select(T(0.0), g, a < b), g * 0.5, a == b)",
    db: "select(select(T(0.0), g, b < a), g * 0.5, b == a)",
  },
} satisfies Record<string, BinaryRow>;

/** A generated binary op: tensors or scalars (at least one tensor), broadcast against each other. */
export type BinaryOp = (a: Operand, b: Operand) => Tensor;

function binaryOp(name: keyof typeof BINARY): BinaryOp {
  const row: BinaryRow = BINARY[name];
  const op = `F.${name}`;
  return (a, b) => {
    let dt: DType = "f32";
    if (row.float) requireFloat(op, a, b);
    else dt = sameDtype(op, a, b);
    const y = mapRow(op, row.forward, { a, b }, dt, { vec4: true });
    const inputs = [asT(a), asT(b)];
    const grads = [inputs[0]?.requiresGrad ? row.da : null, inputs[1]?.requiresGrad ? row.db : null];
    const values: Record<string, Operand> = { a, b, y };
    const save = Object.keys(values).filter((k) =>
      values[k] instanceof Tensor && grads.some((d) => d !== null && reads(d, k))
    );
    return record(op, y, inputs, save.map((k) => values[k] as Tensor), (g, saved) => {
      const env: Record<string, Operand> = { g, ...values };
      save.forEach((k, i) => (env[k] = saved[i]));
      return grads.map((d, i) =>
        d === null
          ? null
          : sumTo(d === "g" ? g : mapRow(`${op}.backward`, d, env, "f32", { vec4: true }), inputs[i]!.shape)
      );
    });
  };
}

/** a + b (broadcasting). */
export const add: BinaryOp = binaryOp("add");
/** a - b (broadcasting). */
export const sub: BinaryOp = binaryOp("sub");
/** a * b (broadcasting). */
export const mul: BinaryOp = binaryOp("mul");
/** a / b (broadcasting; f32 only: true division). */
export const div: BinaryOp = binaryOp("div");
/** Elementwise max of a and b (broadcasting). */
export const maximum: BinaryOp = binaryOp("maximum");
/** Elementwise min of a and b (broadcasting). */
export const minimum: BinaryOp = binaryOp("minimum");
