/**
 * @file The seed's classifier: ResNet3dCSN backbone -> global max (or average) pool of the last stage ->
 * dropout -> Linear (`final`) to 8 logits (patient_overall, C1..C7).
 */
import type { Device } from "../core/device.ts";
import type { Tensor } from "../core/tensor.ts";
import { max, mean } from "../kernels/reduce.ts";
import { dropout } from "../kernels/dropout.ts";
import { Module } from "../nn/module.ts";
import { Linear } from "../nn/layers.ts";
import type { ResNet3dCSN } from "./csn.ts";
import { buildBackbone } from "./encoder.ts";

/** Options of {@link CSNClassifier}. */
export interface CSNClassifierOptions {
  device: Device;
  /** "r152ir" (default) or "r152ip"; r26/r50/r101 for smaller runs. */
  encoder?: string;
  pool?: "max" | "avg";
  numClasses?: number;
  dropout?: number;
  baseChannels?: number;
}

/** Logits [N, numClasses] for crops [N, 1 or 3, D, H, W]. */
export class CSNClassifier extends Module {
  readonly backbone: ResNet3dCSN;
  readonly final: Linear;
  readonly pool: "max" | "avg";
  readonly p: number;
  constructor(o: CSNClassifierOptions) {
    super();
    this.backbone = this.registerModule(
      "backbone",
      buildBackbone(o.device, o.encoder ?? "r152ir", o.baseChannels),
    );
    this.pool = o.pool ?? "max";
    if (this.pool !== "max" && this.pool !== "avg") {
      throw new Error(`CSNClassifier: pool must be "max" or "avg"`);
    }
    this.p = o.dropout ?? 0.5;
    this.final = this.registerModule(
      "final",
      new Linear(this.backbone.channels[4], o.numClasses ?? 8, { device: o.device }),
    );
  }
  forward(x: Tensor): Tensor {
    const f = this.backbone.forward(x);
    const r = poolDropoutLinear(f, this.pool, this.p, this.training, this.final);
    f.dispose();
    return r;
  }
}

/** A classifier's head on its last feature map [N, C, d, h, w]: global max or average pool, dropout, Linear. */
export function poolDropoutLinear(
  f: Tensor,
  pool: "max" | "avg",
  p: number,
  training: boolean,
  final: Linear,
): Tensor {
  const pooled = pool === "max" ? max(f, [2, 3, 4]) : mean(f, [2, 3, 4]);
  const d = dropout(pooled, p, { training });
  pooled.dispose();
  const r = final.forward(d);
  d.dispose();
  return r;
}
