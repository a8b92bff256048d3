/**
 * @file The functional op namespace `F`: every differentiable op over tensors.
 */
import { registerGradOps } from "../core/autograd.ts";
import { add } from "./elementwise.ts";
import { onesLike } from "./creation.ts";

export {
  abs,
  add,
  broadcastTo,
  cast,
  clamp,
  div,
  eq,
  exp,
  ge,
  gt,
  le,
  log,
  lt,
  maximum,
  minimum,
  mul,
  ne,
  neg,
  pow,
  relu,
  sigmoid,
  silu,
  sqrt,
  sub,
  tanh,
  where,
} from "./elementwise.ts";
export { argmax, max, mean, min, sum, sumTo } from "./reduce.ts";
export { logSoftmax, softmax } from "./softmax.ts";
export { permute, squeeze, transpose, unsqueeze } from "./permute.ts";
export { matmul, type MatmulOptions } from "./matmul.ts";
export { conv2p1d, type Conv2p1dOptions, conv3d, type Conv3dOptions, type Triple } from "./conv.ts";

registerGradOps({ add: (a, b) => add(a, b), onesLike });
