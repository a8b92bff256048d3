/**
 * @file Layers with PyTorch's parameter names: Conv3d, BatchNorm3d, Linear, activations, pooling,
 * upsampling, dropout, Sequential and Identity. Convs default to Kaiming-normal weights and zero bias (the
 * seed's init); Linear uses PyTorch's default uniform init.
 */
import type { Device } from "../core/device.ts";
import type { Tensor } from "../core/tensor.ts";
import { ones, zeros } from "../kernels/creation.ts";
import { conv3d, type Triple } from "../kernels/conv/mod.ts";
import { batchNorm3d, type BatchNormSync } from "../kernels/norm/mod.ts";
import { type GemmMoments, linear } from "../kernels/matmul.ts";
import { relu, silu } from "../kernels/elementwise/mod.ts";
import { maxPool3d, upsampleNearest3d } from "../kernels/pool.ts";
import { sum } from "../kernels/reduce.ts";
import { dropout } from "../kernels/dropout.ts";
import { autocastFor, castFloat, castWeight } from "../kernels/cast.ts";
import { Module } from "./module.ts";
import { kaimingNormal, nextSeed, torchDefaultUniform } from "./init.ts";

const t3 = (
  v: Triple,
): [number, number, number] => (typeof v === "number" ? [v, v, v] : [...v] as [number, number, number]);

/** Options of {@link Conv3d}. */
export interface Conv3dModuleOptions {
  device: Device;
  stride?: Triple;
  padding?: Triple;
  dilation?: Triple;
  groups?: number;
  /** Learnable bias (default true, as PyTorch). */
  bias?: boolean;
  /** "kaiming" (default: N(0, 2/fan_in) weights, zero bias) or "torch" (PyTorch's default uniform). */
  init?: "kaiming" | "torch";
  seed?: number;
  /** Take these tensors (the layer owns them from now on) instead of initialising; `bias` then decides. */
  weights?: { weight: Tensor; bias: Tensor | null };
}

/** 3-D convolution layer: `weight` [out, in/groups, kD, kH, kW], `bias` [out]. */
export class Conv3d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: Triple,
    readonly opts: Conv3dModuleOptions,
  ) {
    super();
    const g = opts.groups ?? 1;
    if (inChannels % g || outChannels % g) {
      throw new Error(
        `nn.Conv3d: groups ${g} must divide in (${inChannels}) and out (${outChannels}) channels`,
      );
    }
    const shape = [outChannels, inChannels / g, ...t3(kernelSize)];
    if (opts.weights) {
      const { weight, bias } = opts.weights;
      if (weight.shape.join() !== shape.join() || (bias && bias.shape.join() !== String(outChannels))) {
        throw new Error(
          `nn.Conv3d: given weights ${weight.describe()}${
            bias ? ` and ${bias.describe()}` : ""
          } do not fit [${shape}]`,
        );
      }
      this.weight = this.registerParameter("weight", weight)!;
      this.bias = this.registerParameter("bias", bias);
      return;
    }
    const seed = opts.seed ?? nextSeed();
    const fan = shape.slice(1).reduce((p, d) => p * d, 1);
    const torchInit = opts.init === "torch";
    this.weight = this.registerParameter(
      "weight",
      torchInit
        ? torchDefaultUniform(shape, fan, opts.device, seed)
        : kaimingNormal(shape, opts.device, seed),
    )!;
    this.bias = (opts.bias ?? true)
      ? this.registerParameter(
        "bias",
        torchInit
          ? torchDefaultUniform([outChannels], fan, opts.device, seed + 1)
          : zeros([outChannels], { device: opts.device }),
      )
      : null;
  }
  /** Under `autocast` (kernels/cast.ts), input and a weight copy are cast to f16; the output stays f32. */
  forward(x: Tensor): Tensor {
    return this.convAct(x);
  }

  /**
   * relu?(conv(x) + residual?) with the ReLU and the residual fused into the conv (`F.conv3d`'s options) when
   * asked, and the output's moments for a batch norm (`moments`). `half`: under
   * autocast, keep the output in f16, for a consumer that reads f16 (a conv, a batch norm); else it is f32.
   */
  convAct(
    x: Tensor,
    opts: {
      relu?: boolean;
      half?: boolean;
      residual?: Tensor | null;
      moments?: GemmMoments | null;
      repeatedInput?: boolean;
    } = {},
  ): Tensor {
    const o = this.opts;
    const half = autocastFor(x.device) === "f16";
    const xh = half && x.dtype !== "f16" ? castFloat(x, "f16") : x;
    const folded = opts.repeatedInput ? this.foldedWeight(x) : null;
    const wh = folded
      ? (half ? castFloat(folded, "f16") : folded)
      : (half ? castWeight(this.weight) : this.weight);
    const y = conv3d(xh, wh, this.bias, {
      stride: o.stride,
      padding: o.padding,
      dilation: o.dilation,
      groups: o.groups,
      relu: opts.relu,
      residual: opts.residual,
      moments: opts.moments,
      dtype: half && opts.half ? "f16" : "f32",
    });
    if (xh !== x) xh.dispose();
    if (wh !== this.weight) wh.dispose();
    if (folded && folded !== wh) folded.dispose();
    return y;
  }

  /**
   * The weight for a one-channel `x` that stands for `inChannels` identical copies (a grey image tiled to a
   * stem's RGB, as the seed does): conv(repeat(x), w) = conv(x, w summed over its input channels), the same
   * sums in 1 / inChannels of the multiply-adds; its gradient reaches every channel's weights alike.
   */
  private foldedWeight(x: Tensor): Tensor {
    if (x.ndim !== 5 || x.shape[1] !== 1 || (this.opts.groups ?? 1) !== 1) {
      throw new Error(
        `nn.Conv3d: a repeated input must be one channel [N, 1, D, H, W] for a one-group conv, got ${x.describe()}`,
      );
    }
    return sum(this.weight, 1, true);
  }
}

/** Options of {@link BatchNorm3d}. */
export interface BatchNorm3dOptions {
  device: Device;
  /** Default 1e-5 (PyTorch); the CSN uses 1e-3. */
  eps?: number;
  momentum?: number;
  affine?: boolean;
}

/** Batch norm over channels with `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`. */
export class BatchNorm3d extends Module {
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  readonly numBatchesTracked: Tensor;
  readonly eps: number;
  readonly momentum: number;
  /** Cross-replica reductions in training mode (set by `Replicas.convertSyncBatchNorm` in parallel/replicas.ts). */
  sync: BatchNormSync | null = null;
  constructor(readonly numFeatures: number, opts: BatchNorm3dOptions) {
    super();
    const device = opts.device;
    this.eps = opts.eps ?? 1e-5;
    this.momentum = opts.momentum ?? 0.1;
    const affine = opts.affine ?? true;
    this.weight = affine ? this.registerParameter("weight", ones([numFeatures], { device })) : null;
    this.bias = affine ? this.registerParameter("bias", zeros([numFeatures], { device })) : null;
    this.runningMean = this.registerBuffer("running_mean", zeros([numFeatures], { device }))!;
    this.runningVar = this.registerBuffer("running_var", ones([numFeatures], { device }))!;
    this.numBatchesTracked = this.registerBuffer("num_batches_tracked", zeros([], { device, dtype: "i32" }))!;
  }
  forward(x: Tensor): Tensor {
    return this.normAct(x);
  }

  /**
   * Normalises x, then adds `residual` and applies ReLU when asked, all in the norm's single pass (a ResNet
   * block's shortcut and activation; see `F.batchNorm3d`). The output has x's dtype unless `dtype` says.
   */
  normAct(
    x: Tensor,
    opts: { residual?: Tensor | null; relu?: boolean; dtype?: "f32" | "f16"; moments?: Tensor | null } = {},
  ): Tensor {
    return batchNorm3d(x, this.weight, this.bias, this.runningMean, this.runningVar, {
      training: this.training,
      momentum: this.momentum,
      eps: this.eps,
      sync: this.sync,
      // num_batches_tracked += 1 happens on the GPU inside the statistics kernel (no readback).
      numBatchesTracked: this.training ? this.numBatchesTracked : null,
      ...opts,
    });
  }
}

/** Options of {@link Linear}. */
export interface LinearOptions {
  device: Device;
  bias?: boolean;
  seed?: number;
}

/** y = x W^T + b with `weight` [out, in] and `bias` [out], PyTorch's default init. */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LinearOptions) {
    super();
    const seed = opts.seed ?? nextSeed();
    this.weight = this.registerParameter(
      "weight",
      torchDefaultUniform([outFeatures, inFeatures], inFeatures, opts.device, seed),
    )!;
    this.bias = (opts.bias ?? true)
      ? this.registerParameter("bias", torchDefaultUniform([outFeatures], inFeatures, opts.device, seed + 1))
      : null;
  }
  /** Under `autocast` (kernels/cast.ts), input and a weight copy are cast to f16; the output stays f32. */
  forward(x: Tensor): Tensor {
    const half = autocastFor(x.device) === "f16";
    if (!half) return linear(x, this.weight, this.bias);
    const xh = x.dtype !== "f16" ? castFloat(x, "f16") : x;
    const wh = castWeight(this.weight);
    const y = linear(xh, wh, this.bias);
    if (xh !== x) xh.dispose();
    wh.dispose();
    return y;
  }
}

/** max(x, 0) */
export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

/** x * sigmoid(x) */
export class SiLU extends Module {
  forward(x: Tensor): Tensor {
    return silu(x);
  }
}

/** 3-D max pooling. */
export class MaxPool3d extends Module {
  constructor(readonly kernel: Triple, readonly stride?: Triple, readonly padding: Triple = 0) {
    super();
  }
  forward(x: Tensor): Tensor {
    return maxPool3d(x, { kernel: this.kernel, stride: this.stride, padding: this.padding });
  }
}

/** Nearest-neighbour upsampling by integer factors. */
export class Upsample extends Module {
  constructor(readonly scale: Triple) {
    super();
  }
  forward(x: Tensor): Tensor {
    return upsampleNearest3d(x, this.scale);
  }
}

/** Inverted dropout, active in training mode. */
export class Dropout extends Module {
  constructor(readonly p = 0.5) {
    super();
  }
  forward(x: Tensor): Tensor {
    return dropout(x, this.p, { training: this.training });
  }
}

/** Returns its input. */
export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x.reshape(x.shape);
  }
}

/** Applies children "0", "1", ... in order. */
export class Sequential extends Module {
  readonly layers: Module[];
  constructor(...layers: Module[]) {
    super();
    this.layers = layers;
    layers.forEach((m, i) => this.registerModule(String(i), m));
  }
  forward(x: Tensor): Tensor {
    let h = x;
    for (const m of this.layers) {
      const next = m.forward(h);
      if (h !== x) h.dispose();
      h = next;
    }
    return h === x ? x.reshape(x.shape) : h;
  }
}
