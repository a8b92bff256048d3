/**
 * @file Folding an eval-mode batch norm into the conv before it (PyTorch's `fuse_conv_bn_weights` and
 * `fuse_conv_bn_eval` in torch.nn.utils.fusion). In eval mode a norm is a per-channel scale and shift, so
 * conv -> norm is one conv with scaled weights and a bias: at inference one op (and, with the ReLU and the
 * shortcut in its epilogue, one pass over memory) instead of two.
 */
import type { Tensor } from "../core/tensor.ts";
import { map } from "../kernels/elementwise/map.ts";
import { type BatchNorm3d, Conv3d } from "./layers.ts";

/**
 * w * s and (b - mean) * s + beta per output channel, with s = gamma / sqrt(var + eps) (gamma 1 and beta 0
 * without affine parameters, b 0 without a conv bias). New f32 tensors; the inputs are left as they are.
 */
export function fuseConvBnWeights(
  convWeight: Tensor,
  convBias: Tensor | null,
  runningMean: Tensor,
  runningVar: Tensor,
  eps: number,
  bnWeight: Tensor | null,
  bnBias: Tensor | null,
): { weight: Tensor; bias: Tensor } {
  const op = "nn.fuseConvBnWeights";
  const O = convWeight.shape[0];
  const perChannel = { runningMean, runningVar, bnWeight, bnBias, convBias };
  for (const [n, t] of Object.entries(perChannel)) {
    if (t && (t.shape.join() !== String(O) || t.dtype !== "f32")) {
      throw new Error(`${op}: ${n} must be f32 [${O}] for weight [${convWeight.shape}], got ${t.describe()}`);
    }
  }
  if (convWeight.dtype !== "f32") {
    throw new Error(`${op}: conv weight must be f32, got ${convWeight.describe()}`);
  }
  const scale = map(
    op,
    bnWeight ? [runningVar, eps, bnWeight] : [runningVar, eps],
    "f32",
    (v) => `${bnWeight ? v[2] : "1.0"} / sqrt(${v[0]} + ${v[1]})`,
  );
  const s5 = scale.reshape([O, ...convWeight.shape.slice(1).map(() => 1)]);
  const weight = map(op, [convWeight, s5], "f32", (v) => `${v[0]} * ${v[1]}`);
  const ins = [runningMean, scale, ...(convBias ? [convBias] : []), ...(bnBias ? [bnBias] : [])];
  const bias = map(op, ins, "f32", (v) => {
    const b = convBias ? v[2] : "0.0";
    return `(${b} - ${v[0]}) * ${v[1]}${bnBias ? ` + ${v[ins.length - 1]}` : ""}`;
  });
  s5.dispose();
  scale.dispose();
  return { weight, bias };
}

/**
 * A new Conv3d (with a bias) that computes `bn(conv(x))` of an eval-mode norm in one op; `conv` and `bn` keep
 * their tensors. Training the result trains the folded conv (there is no norm any more).
 */
export function fuseConvBnEval(conv: Conv3d, bn: BatchNorm3d): Conv3d {
  if (bn.training) {
    throw new Error("nn.fuseConvBnEval: the batch norm folds only in eval mode (call eval() first)");
  }
  if (bn.numFeatures !== conv.outChannels) {
    throw new Error(
      `nn.fuseConvBnEval: the norm has ${bn.numFeatures} channels, the conv ${conv.outChannels} outputs`,
    );
  }
  const w = fuseConvBnWeights(
    conv.weight,
    conv.bias,
    bn.runningMean,
    bn.runningVar,
    bn.eps,
    bn.weight,
    bn.bias,
  );
  return new Conv3d(conv.inChannels, conv.outChannels, conv.kernelSize, {
    ...conv.opts,
    bias: true,
    weights: w,
  });
}
