/**
 * @file The seed's CSN-UNet segmentor: a ResNet3dCSN encoder, a decoder of nearest upsampling + (2+1)D
 * units with concatenated skips (filters [40, 64, 128, 256] whatever the encoder width), a last
 * upsampling + full 3x3x3 conv + SiLU block, and a 1x1x1 classifier. Names follow the seed's state dicts
 * (`decoder.decoder_stages.3.layer.1.conv1_s.weight`, `decoder.bottlenecks.0.seq.0.conv1_t.bias`, ...).
 */
import type { Device } from "../core/device.ts";
import type { Tensor } from "../core/tensor.ts";
import { cat } from "../kernels/slice.ts";
import { silu } from "../kernels/elementwise/mod.ts";
import { upsampleNearest3d } from "../kernels/pool.ts";
import type { Triple } from "../kernels/conv/mod.ts";
import { Module } from "../nn/module.ts";
import { Conv3d } from "../nn/layers.ts";
import { ModuleList } from "../nn/containers.ts";
import type { ResNet3dCSN } from "./csn.ts";
import { buildBackbone } from "./encoder.ts";

/** (2+1)D unit: (1,3,3) conv -> ReLU -> (3,1,1) conv -> ReLU, both with bias, Kaiming-normal init. */
export class Unit2p1d extends Module {
  readonly conv1_s: Conv3d;
  readonly conv1_t: Conv3d;
  constructor(cin: number, cout: number, device: Device) {
    super();
    this.conv1_s = this.registerModule(
      "conv1_s",
      new Conv3d(cin, cout, [1, 3, 3], { device, padding: [0, 1, 1] }),
    );
    this.conv1_t = this.registerModule(
      "conv1_t",
      new Conv3d(cout, cout, [3, 1, 1], { device, padding: [1, 0, 0] }),
    );
  }
  forward(x: Tensor): Tensor {
    // Each ReLU runs in its conv's output store (and its gradient in one pass with the bias's).
    const a = this.conv1_s.convAct(x, { relu: true, half: true });
    const r = this.conv1_t.convAct(a, { relu: true });
    a.dispose();
    return r;
  }
}

/** Upsample then (2+1)D unit: `layer.0` is the (parameterless) upsampling, `layer.1` the unit. */
class DecoderStage extends Module {
  readonly unit: Unit2p1d;
  constructor(cin: number, cout: number, readonly scale: Triple, device: Device) {
    super();
    this.unit = new Unit2p1d(cin, cout, device);
    this.registerModule("layer", new ModuleList([null, this.unit]));
  }
  forward(x: Tensor): Tensor {
    const u = upsampleNearest3d(x, this.scale);
    const r = this.unit.forward(u);
    u.dispose();
    return r;
  }
}

/** Skip block: `seq.0` is the (2+1)D unit applied to the concatenation. */
class SkipBlock extends Module {
  readonly unit: Unit2p1d;
  constructor(cin: number, cout: number, device: Device) {
    super();
    this.unit = new Unit2p1d(cin, cout, device);
    this.registerModule("seq", new ModuleList([this.unit]));
  }
  forward(x: Tensor): Tensor {
    return this.unit.forward(x);
  }
}

/** Upsample (1,2,2) -> Conv3d 3x3x3 (pad 1, bias) -> SiLU; the conv is `layer.1`. */
class LastBlock extends Module {
  readonly conv: Conv3d;
  constructor(cin: number, cout: number, device: Device) {
    super();
    this.conv = new Conv3d(cin, cout, 3, { device, padding: 1 });
    this.registerModule("layer", new ModuleList([null, this.conv]));
  }
  forward(x: Tensor): Tensor {
    const u = upsampleNearest3d(x, [1, 2, 2]);
    const c = this.conv.forward(u);
    u.dispose();
    const r = silu(c);
    c.dispose();
    return r;
  }
}

class Decoder extends Module {
  readonly stages: DecoderStage[];
  readonly skips: SkipBlock[];
  readonly last: LastBlock;
  constructor(skipCh: number[], top: number, filters: number[], lastCh: number, device: Device) {
    super();
    const scales: Triple[] = [[1, 2, 2], 2, 2, 2];
    const ins = [filters[1], filters[2], filters[3], top];
    this.stages = [0, 1, 2, 3].map((i) => new DecoderStage(ins[i], filters[i], scales[i], device));
    this.skips = [0, 1, 2, 3].map((i) =>
      new SkipBlock(filters[3 - i] + skipCh[3 - i], filters[3 - i], device)
    );
    this.registerModule("decoder_stages", new ModuleList(this.stages));
    this.registerModule("bottlenecks", new ModuleList(this.skips));
    this.last = this.registerModule("last_block", new LastBlock(filters[0], lastCh, device));
  }
  forward(x: Tensor): Tensor {
    return x;
  }
  /** feats = [stem, layer1, layer2, layer3, layer4]. */
  decode(feats: Tensor[]): Tensor {
    const skips = [feats[3], feats[2], feats[1], feats[0]];
    let x = feats[4];
    for (let i = 0; i < 4; i++) {
      const up = this.stages[3 - i].forward(x);
      if (x !== feats[4]) x.dispose();
      const c = cat([up, skips[i]], 1);
      up.dispose();
      x = this.skips[i].forward(c);
      c.dispose();
    }
    const r = this.last.forward(x);
    x.dispose();
    return r;
  }
}

/** Options of {@link CSNUNet}. */
export interface CSNUNetOptions {
  device: Device;
  /** "r50ir" (the seed's), or r{26,50,101,152}{ir,ip}. */
  encoder?: string;
  numClasses?: number;
  /** Encoder width (default 64); the decoder keeps the seed's widths. */
  baseChannels?: number;
  decoderFilters?: [number, number, number, number];
  lastChannels?: number;
}

/** The segmentor: logits [N, numClasses, D, H, W] for an input [N, 1 or 3, D, H, W] (D % 8 == 0, H, W % 32 == 0). */
export class CSNUNet extends Module {
  readonly backbone: ResNet3dCSN;
  readonly decoder: Decoder;
  readonly final: Conv3d;
  constructor(o: CSNUNetOptions) {
    super();
    this.backbone = this.registerModule(
      "backbone",
      buildBackbone(o.device, o.encoder ?? "r50ir", o.baseChannels),
    );
    const ch = this.backbone.channels;
    this.decoder = this.registerModule(
      "decoder",
      new Decoder(
        ch.slice(0, 4),
        ch[4],
        o.decoderFilters ?? [40, 64, 128, 256],
        o.lastChannels ?? 32,
        o.device,
      ),
    );
    this.final = this.registerModule(
      "final",
      // The seed's `final` is a plain nn.Conv3d: PyTorch's default init (only decoder blocks get Kaiming).
      new Conv3d(o.lastChannels ?? 32, o.numClasses ?? 8, 1, { device: o.device, init: "torch" }),
    );
  }
  forward(x: Tensor): Tensor {
    const [, , D, H, W] = x.shape;
    if (x.ndim !== 5 || D % 8 || H % 32 || W % 32) {
      throw new Error(
        `CSNUNet: input must be [N, C, D, H, W] with D % 8 == 0 and H, W % 32 == 0, got [${x.shape}]`,
      );
    }
    const feats = this.backbone.features(x);
    const d = this.decoder.decode(feats);
    for (const f of feats) f.dispose();
    const r = this.final.forward(d);
    d.dispose();
    return r;
  }
}
