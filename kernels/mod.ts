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
export { linear, matmul, type MatmulOptions } from "./matmul.ts";
export { batchNorm3d, type BatchNormOptions } from "./norm.ts";
export {
  adaptiveAvgPool3d,
  adaptiveMaxPool3d,
  maxPool3d,
  type MaxPoolOptions,
  upsampleNearest3d,
} from "./pool.ts";
export { cat, narrow } from "./slice.ts";
export { dropout, type DropoutOptions } from "./dropout.ts";
export {
  type BceOptions,
  bceWithLogits,
  crossEntropy,
  type CrossEntropyOptions,
  type Reduction,
  rsnaLoss,
  segLoss,
  type SegLossOptions,
} from "./loss.ts";
export { conv2p1d, type Conv2p1dOptions, conv3d, type Conv3dOptions, type Triple } from "./conv.ts";

registerGradOps({ add: (a, b) => add(a, b), onesLike });
