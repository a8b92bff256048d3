/**
 * @file ResNet3dCSN (channel-separated networks, mmaction2's definition as the seed configures it): a
 * 3x7x7 stem with stride (1,2,2) and a (1,3,3) max-pool, then four stages of bottlenecks whose 3x3x3 conv
 * is depthwise ("ir": interaction-reduced) or a 1x1x1 conv followed by the depthwise one ("ip":
 * interaction-preserved). Parameter names equal mmaction2's, so its checkpoints load.
 */
import type { Device } from "../core/device.ts";
import type { Tensor } from "../core/tensor.ts";
import type { Triple } from "../kernels/conv/mod.ts";
import { maxPool3d } from "../kernels/pool.ts";
import { autocastFor, castFloat } from "../kernels/cast.ts";
import type { GemmMoments } from "../kernels/matmul.ts";
import { Module } from "../nn/module.ts";
import { BatchNorm3d, Conv3d, Sequential } from "../nn/layers.ts";
import { fuseConvBnEval } from "../nn/fusion.ts";
import { repeatsToStem } from "./util.ts";

/** Blocks per stage for each supported depth (26 is a small test configuration). */
export const CSN_DEPTHS: Record<number, [number, number, number, number]> = {
  26: [2, 2, 2, 2],
  50: [3, 4, 6, 3],
  101: [3, 4, 23, 3],
  152: [3, 8, 36, 3],
};

/**
 * mmcv's ConvModule as the CSN uses it: `conv` (no bias) -> `bn` (eps 1e-3) -> optional ReLU. After
 * {@link ConvModule.fuseConvBn} (inference) the norm is folded into `conv`, which gains a bias, and `bn` is null.
 */
export class ConvModule extends Module {
  conv: Conv3d;
  bn: BatchNorm3d | null;
  constructor(
    cin: number,
    cout: number,
    kernel: Triple,
    o: { device: Device; stride?: Triple; padding?: Triple; groups?: number; act?: boolean },
  ) {
    super();
    this.conv = this.registerModule(
      "conv",
      new Conv3d(cin, cout, kernel, {
        device: o.device,
        stride: o.stride,
        padding: o.padding,
        groups: o.groups,
        bias: false,
        // From scratch the seed's backbone keeps PyTorch's default init (its pretrained weights replace it).
        init: "torch",
      }),
    );
    this.bn = this.registerModule("bn", new BatchNorm3d(cout, { device: o.device, eps: 1e-3 }));
    this.act = o.act ?? true;
  }
  readonly act: boolean;
  forward(x: Tensor): Tensor {
    return this.forwardHalf(x, false);
  }

  /**
   * Under autocast the conv's output stays f16 (the norm reads it so), and with `half` the norm's output too,
   * for a consumer that reads f16 (the next conv of a bottleneck, a shortcut): no cast pass, half the bytes.
   * `repeatedInput`: x is one channel standing for the conv's identical input channels (nn.Conv3d's option).
   */
  forwardHalf(x: Tensor, half: boolean, repeatedInput = false): Tensor {
    if (!this.bn) return this.conv.convAct(x, { relu: this.act, half, repeatedInput });
    const mom = this.momentsHolder();
    const c = this.conv.convAct(x, { half: true, moments: mom, repeatedInput });
    const y = this.bn.normAct(c, {
      relu: this.act,
      dtype: half ? c.dtype as "f32" | "f16" : "f32",
      moments: mom?.part,
    });
    c.dispose();
    mom?.part?.dispose();
    return y;
  }

  /**
   * relu(bn(conv(x)) + shortcut): a bottleneck's last conv, with its shortcut add and ReLU in the norm's pass
   * (folded: in the conv's epilogue).
   */
  forwardWithShortcut(x: Tensor, shortcut: Tensor, half = false): Tensor {
    if (!this.bn) return this.conv.convAct(x, { residual: shortcut, relu: true, half });
    const mom = this.momentsHolder();
    const c = this.conv.convAct(x, { half: true, moments: mom });
    const y = this.bn.normAct(c, {
      residual: shortcut,
      relu: true,
      dtype: half ? c.dtype as "f32" | "f16" : "f32",
      moments: mom?.part,
    });
    c.dispose();
    mom?.part?.dispose();
    return y;
  }

  /** In training, where the conv can hand its output's moments to the norm (one pass over it fewer). */
  private momentsHolder(): GemmMoments | null {
    return this.training && !this.bn?.sync ? { part: null } : null;
  }

  /**
   * Folds the eval-mode norm into the conv (`nn.fuseConvBnEval`): one op instead of two from now on; the
   * state dict then has `conv.weight` and `conv.bias` and no `bn.*`. Returns false when already folded.
   */
  fuseConvBn(): boolean {
    if (!this.bn) return false;
    if (this.training) throw new Error("ConvModule.fuseConvBn: folds only in eval mode (call eval() first)");
    const fused = fuseConvBnEval(this.conv, this.bn);
    fused.train(false);
    this.conv.dispose();
    this.bn.dispose();
    this.conv = this.registerModule("conv", fused);
    this.removeModule("bn");
    this.bn = null;
    return true;
  }
}

/**
 * Folds every batch norm of a CSN model (classifier, UNet or backbone) into its conv, for inference (as
 * torch.fx's `fuse` does for conv -> bn): `model` must be in eval mode. Returns how many were folded.
 */
export function fuseConvBn(model: Module): number {
  if (model.training) throw new Error("fuseConvBn: the model must be in eval mode (call eval() first)");
  let n = 0;
  for (const [, m] of model.namedModules()) if (m instanceof ConvModule && m.fuseConvBn()) n++;
  return n;
}

/** The CSN bottleneck: 1x1x1 reduce, (1x1x1 +) depthwise 3x3x3 with the stage's stride, 1x1x1 expand, residual. */
export class CSNBottleneck extends Module {
  readonly conv1: ConvModule;
  readonly conv2: Sequential;
  readonly conv3: ConvModule;
  readonly downsample: ConvModule | null;
  constructor(
    cin: number,
    planes: number,
    stride: [number, number, number],
    kind: "ir" | "ip",
    down: boolean,
    device: Device,
  ) {
    super();
    this.conv1 = this.registerModule("conv1", new ConvModule(cin, planes, 1, { device }));
    const dw = new ConvModule(planes, planes, 3, { device, stride, padding: 1, groups: planes });
    this.conv2 = this.registerModule(
      "conv2",
      new Sequential(
        ...(kind === "ir" ? [dw] : [new ConvModule(planes, planes, 1, { device, act: false }), dw]),
      ),
    );
    this.conv3 = this.registerModule("conv3", new ConvModule(planes, planes * 4, 1, { device, act: false }));
    this.downsample = down
      ? this.registerModule("downsample", new ConvModule(cin, planes * 4, 1, { device, stride, act: false }))
      : null;
  }
  forward(x: Tensor): Tensor {
    return this.forwardHalf(x, false);
  }

  /**
   * Inside the block, under autocast, activations stay f16 from conv to norm to conv (ConvModule.forwardHalf);
   * with `half` the block's output too (as PyTorch's autocast leaves a ResNet block's output), for a next
   * block that reads it as its input and its shortcut. An f32 input feeding two convs is cast once.
   */
  forwardHalf(x: Tensor, half: boolean): Tensor {
    const xh = this.downsample && x.dtype === "f32" && autocastFor(x.device) === "f16"
      ? castFloat(x, "f16")
      : x;
    let b = this.conv1.forwardHalf(xh, true);
    for (const m of this.conv2.layers as ConvModule[]) {
      const next = m.forwardHalf(b, true);
      b.dispose();
      b = next;
    }
    const idt = this.downsample ? this.downsample.forwardHalf(xh, true) : x;
    const r = this.conv3.forwardWithShortcut(b, idt, half);
    b.dispose();
    if (idt !== x) idt.dispose();
    if (xh !== x) xh.dispose();
    return r;
  }
}

/** A stage's blocks in order; under autocast the outputs between its blocks stay f16, its own output is f32. */
function runStage(stage: Sequential, x: Tensor): Tensor {
  const blocks = stage.layers as CSNBottleneck[];
  let h = x;
  blocks.forEach((b, i) => {
    const next = b.forwardHalf(h, i < blocks.length - 1);
    if (h !== x) h.dispose();
    h = next;
  });
  return h;
}

/** Options of {@link ResNet3dCSN}. */
export interface CSNOptions {
  device: Device;
  depth: 26 | 50 | 101 | 152;
  bottleneck: "ir" | "ip";
  /** Width of the stem; stage widths are 1x, 2x, 4x, 8x this (x4 after expansion). Default 64. */
  baseChannels?: number;
  /** Input channels (default 3). */
  inChannels?: number;
}

/** The ResNet3dCSN backbone; `forward` returns the last stage, `features` all five feature maps. */
export class ResNet3dCSN extends Module {
  readonly conv1: ConvModule;
  readonly layers: Sequential[] = [];
  readonly base: number;
  /** Channels of [stem, layer1, layer2, layer3, layer4]. */
  readonly channels: number[];
  constructor(o: CSNOptions) {
    super();
    const blocks = CSN_DEPTHS[o.depth];
    if (!blocks) {
      throw new Error(`ResNet3dCSN: depth must be one of ${Object.keys(CSN_DEPTHS)}, got ${o.depth}`);
    }
    if (o.bottleneck !== "ir" && o.bottleneck !== "ip") {
      throw new Error(`ResNet3dCSN: bottleneck must be "ir" or "ip", got ${o.bottleneck}`);
    }
    const base = this.base = o.baseChannels ?? 64;
    const device = o.device;
    this.conv1 = this.registerModule(
      "conv1",
      new ConvModule(o.inChannels ?? 3, base, [3, 7, 7], { device, stride: [1, 2, 2], padding: [1, 3, 3] }),
    );
    let cin = base;
    blocks.forEach((n, i) => {
      const planes = base * 2 ** i;
      const s = i === 0 ? 1 : 2;
      const list = [new CSNBottleneck(cin, planes, [s, s, s], o.bottleneck, true, device)];
      cin = planes * 4;
      for (let k = 1; k < n; k++) {
        list.push(new CSNBottleneck(cin, planes, [1, 1, 1], o.bottleneck, false, device));
      }
      this.layers.push(this.registerModule(`layer${i + 1}`, new Sequential(...list)));
    });
    this.channels = [base, 4 * base, 8 * base, 16 * base, 32 * base];
  }

  /**
   * [stem output before the max-pool, layer1, layer2, layer3, layer4]. A one-channel `x` where the stem takes 3
   * is the seed's grey image repeated to RGB, folded into the stem's weights ({@link repeatsToStem}).
   */
  features(x: Tensor): Tensor[] {
    const stem = this.conv1.forwardHalf(x, false, repeatsToStem(x, this.conv1.conv.inChannels));
    const pooled = maxPool3d(stem, { kernel: [1, 3, 3], stride: [1, 2, 2], padding: [0, 1, 1] });
    const outs = [stem];
    let h = pooled;
    for (const l of this.layers) {
      h = runStage(l, h);
      outs.push(h);
    }
    pooled.dispose();
    return outs;
  }

  /** The last stage's output. */
  forward(x: Tensor): Tensor {
    const f = this.features(x);
    for (const t of f.slice(0, 4)) t.dispose();
    return f[4];
  }
}
