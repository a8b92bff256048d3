/**
 * @file A plain 3-D CNN classifier (VGG-like): blocks of a dense 3x3x3 conv + batch norm + ReLU with max pools,
 * a global max (or average) pool, dropout and a Linear to 8 logits, as the CSN classifier's drop-in; and
 * optionally a fracture head, a 1x1x1 conv on the last feature map that says where the fractures are. Dense
 * filters over all channels see a local break where the CSN's depthwise ones were slow to (docs/recipe.md,
 * "A fracture-map loss"); the head is trained on the boxes of train_bounding_boxes.csv.
 */
import type { Device } from "../core/device.ts";
import type { Tensor } from "../core/tensor.ts";
import { maxPool3d } from "../kernels/pool.ts";
import { Module } from "../nn/module.ts";
import { ModuleList } from "../nn/containers.ts";
import { Conv3d, Linear } from "../nn/layers.ts";
import { ConvModule } from "./csn.ts";
import { poolDropoutLinear } from "./classifier.ts";

/** Options of {@link PlainClassifier}. */
export interface PlainClassifierOptions {
  device: Device;
  /** Channels of each conv block (default 16, 32, 64, 64). */
  widths?: number[];
  /** Max pool after each block, kernel = stride; null for none (default (1, 2, 2), 2, 2, none). */
  pools?: ([number, number, number] | null)[];
  inChannels?: number;
  numClasses?: number;
  pool?: "max" | "avg";
  dropout?: number;
  /** Add `fracture_head` (see {@link PlainClassifier.forwardWithMap}). */
  fractureHead?: boolean;
}

/** Logits [N, numClasses] for crops [N, 3, D, H, W]; with the fracture head also a fracture map. */
export class PlainClassifier extends Module {
  readonly features: ModuleList<ConvModule>;
  readonly pools: ([number, number, number] | null)[];
  readonly final: Linear;
  readonly fractureHead: Conv3d | null;
  readonly pool: "max" | "avg";
  readonly p: number;
  constructor(o: PlainClassifierOptions) {
    super();
    const widths = o.widths ?? [16, 32, 64, 64];
    this.pools = o.pools ?? [[1, 2, 2], [2, 2, 2], [2, 2, 2], null];
    if (!widths.length || this.pools.length !== widths.length) {
      throw new Error(
        `PlainClassifier: ${widths.length} widths need as many pools, got ${this.pools.length}`,
      );
    }
    const device = o.device;
    this.features = this.registerModule(
      "features",
      new ModuleList(
        widths.map((w, i) =>
          new ConvModule(i ? widths[i - 1] : o.inChannels ?? 3, w, [3, 3, 3], { device, padding: [1, 1, 1] })
        ),
      ),
    );
    this.pool = o.pool ?? "max";
    if (this.pool !== "max" && this.pool !== "avg") {
      throw new Error(`PlainClassifier: pool must be "max" or "avg"`);
    }
    this.p = o.dropout ?? 0.5;
    const last = widths[widths.length - 1];
    this.final = this.registerModule("final", new Linear(last, o.numClasses ?? 8, { device }));
    this.fractureHead = o.fractureHead
      ? this.registerModule("fracture_head", new Conv3d(last, 1, [1, 1, 1], { device, init: "torch" }))
      : null;
  }

  /** The last block's feature map [N, C, d, h, w]. */
  featureMap(x: Tensor): Tensor {
    let h = x;
    this.pools.forEach((k, i) => {
      const y = this.features.at(i)!.forward(h);
      if (h !== x) h.dispose();
      h = y;
      if (k) {
        const z = maxPool3d(h, { kernel: k, stride: k });
        h.dispose();
        h = z;
      }
    });
    return h;
  }

  forward(x: Tensor): Tensor {
    const f = this.featureMap(x);
    const r = poolDropoutLinear(f, this.pool, this.p, this.training, this.final);
    f.dispose();
    return r;
  }

  /**
   * Logits and the fracture head's logits [N, 1, d, h, w] on the last feature map (a cell says whether a
   * fracture lies in its part of the crop).
   */
  forwardWithMap(x: Tensor): { logits: Tensor; map: Tensor } {
    if (!this.fractureHead) throw new Error("PlainClassifier.forwardWithMap: built without fractureHead");
    const f = this.featureMap(x);
    const logits = poolDropoutLinear(f, this.pool, this.p, this.training, this.final);
    const map = this.fractureHead.forward(f);
    f.dispose();
    return { logits, map };
  }
}
