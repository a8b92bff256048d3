/**
 * @file The public elementwise ops (re-exported by kernels/mod.ts as part of `F`). The engine they are built
 * on, `map`, is in ./map.ts.
 */
export {
  abs,
  broadcastTo,
  cast,
  clamp,
  exp,
  log,
  neg,
  pow,
  relu,
  sigmoid,
  silu,
  sqrt,
  tanh,
  type UnaryOp,
} from "./unary.ts";
export { add, type BinaryOp, div, maximum, minimum, mul, sub } from "./binary.ts";
export { type CompareOp, eq, ge, gt, le, lt, ne, where } from "./compare.ts";
