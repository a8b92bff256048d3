/**
 * @file The functional op namespace `F`: every differentiable op over tensors.
 */
import { registerGradOps } from "../core/autograd.ts";
import { add } from "./elementwise/binary.ts";
import { onesLike } from "./creation.ts";
import type { Tensor } from "../core/tensor.ts";

export * from "./elementwise/mod.ts";
export { argmax, max, mean, min, sum } from "./reduce.ts";
export { logSoftmax, softmax } from "./softmax.ts";
export { permute, squeeze, transpose, unsqueeze } from "./permute.ts";
export { linear, matmul, type MatmulOptions } from "./matmul.ts";
export { batchNorm3d, type BatchNormOptions } from "./norm/mod.ts";
export {
  adaptiveAvgPool3d,
  adaptiveMaxPool3d,
  maxPool3d,
  type MaxPoolOptions,
  upsampleNearest3d,
} from "./pool.ts";
export { cat, narrow } from "./slice.ts";
export {
  interpolate,
  type InterpolateOptions,
  resizedArgmax,
  type ResizedArgmaxOptions,
} from "./interpolate.ts";
export { dropout, type DropoutOptions } from "./dropout.ts";
export {
  type BceOptions,
  bceWithLogits,
  crossEntropy,
  type CrossEntropyOptions,
  nllLoss,
  type Reduction,
} from "./loss.ts";
export { focalJaccardLoss, type FocalJaccardOptions } from "./focal_jaccard.ts";
export { conv2p1d, type Conv2p1dOptions, conv3d, type Conv3dOptions, type Triple } from "./conv/mod.ts";

registerGradOps({ add: (a, b) => add(a as Tensor, b as Tensor), onesLike: (t) => onesLike(t as Tensor) });
