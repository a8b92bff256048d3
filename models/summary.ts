/**
 * @file `models.summary`: parameter count, per-layer output shapes, multiply-adds and activation memory of a
 * model for an input shape, measured by running one forward pass (no autograd) with every conv / linear /
 * norm layer instrumented.
 */
import type { Tensor } from "../core/tensor.ts";
import { noGrad } from "../core/autograd.ts";
import { tidy } from "../core/scope.ts";
import { zeros } from "../kernels/creation.ts";
import type { Module } from "../nn/module.ts";
import { BatchNorm3d, Conv3d, Linear } from "../nn/layers.ts";

/** One instrumented layer. */
export interface LayerInfo {
  name: string;
  type: string;
  outShape: number[];
  params: number;
  macs: number;
}

/** What {@link summary} reports. */
export interface Summary {
  params: number;
  stateDictEntries: number;
  layers: LayerInfo[];
  /** Multiply-adds of convs and linears; FLOPs = 2 x this. */
  macs: number;
  /** Bytes of all instrumented layers' outputs (what a training step keeps for backward, roughly). */
  activationBytes: number;
  /** A printable table. */
  table(): string;
}

function walk(m: Module, prefix: string, out: [string, Module][]): void {
  for (const [k, c] of m.namedChildren()) {
    const name = prefix ? `${prefix}.${k}` : k;
    out.push([name, c]);
    walk(c, name, out);
  }
}

/** Runs `model` once on zeros of `inputShape` and reports its size and cost. */
export async function summary(model: Module, inputShape: number[]): Promise<Summary> {
  const params = model.parameters();
  if (!params.length) throw new Error("summary: the model has no parameters");
  const device = params[0].device;
  const mods: [string, Module][] = [];
  walk(model, "", mods);
  const layers: LayerInfo[] = [];
  const restore: (() => void)[] = [];
  for (const [name, m] of mods) {
    if (!(m instanceof Conv3d || m instanceof Linear || m instanceof BatchNorm3d)) continue;
    // The method the models call: a ConvModule calls convAct / normAct directly (fused ReLU, shortcut).
    const method = m instanceof Conv3d ? "convAct" : m instanceof BatchNorm3d ? "normAct" : "forward";
    const target = m as unknown as Record<string, (x: Tensor, ...rest: unknown[]) => Tensor>;
    const orig = target[method].bind(m);
    const own = m.parameters().reduce((p, t) => p + t.numel(), 0);
    target[method] = (x: Tensor, ...rest: unknown[]) => {
      const y = orig(x, ...rest);
      let macs = 0;
      if (m instanceof Conv3d) macs = y.numel() * m.weight.shape.slice(1).reduce((p, d) => p * d, 1);
      if (m instanceof Linear) macs = y.numel() * m.inFeatures;
      layers.push({ name, type: m.constructor.name, outShape: [...y.shape], params: own, macs });
      return y;
    };
    restore.push(() => {
      delete target[method];
    });
  }
  const wasTraining = model.training;
  model.eval();
  try {
    await noGrad(() =>
      tidy(async () => {
        const y = model.forward(zeros(inputShape, { device }));
        await y.toArray();
      })
    );
  } finally {
    for (const r of restore) r();
    model.train(wasTraining);
  }
  const total = params.reduce((p, t) => p + t.numel(), 0);
  const macs = layers.reduce((p, l) => p + l.macs, 0);
  const act = layers.reduce((p, l) => p + 4 * l.outShape.reduce((a, b) => a * b, 1), 0);
  const entries = Object.keys(model.stateDict()).length;
  return {
    params: total,
    stateDictEntries: entries,
    layers,
    macs,
    activationBytes: act,
    table() {
      const lines = layers.map((l) =>
        `${l.name.padEnd(42)} ${l.type.padEnd(12)} ${`[${l.outShape}]`.padEnd(24)} ${
          String(l.params).padStart(10)
        } ${(l.macs / 1e6).toFixed(1).padStart(12)}`
      );
      return [
        `${"layer".padEnd(42)} ${"type".padEnd(12)} ${"output".padEnd(24)} ${"params".padStart(10)} ${
          "MMACs".padStart(12)
        }`,
        ...lines,
        `params ${total.toLocaleString("en-US")} (${entries} state-dict entries), ${
          (macs / 1e9).toFixed(2)
        } GMACs ` +
        `(${(2 * macs / 1e9).toFixed(2)} GFLOP), layer outputs ${(act / 2 ** 20).toFixed(1)} MiB`,
      ].join("\n");
    },
  };
}
