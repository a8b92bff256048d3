/**
 * @file What a training step of the recipe's dense 3x3x3 classifier (`bench/recipe/common.py`
 * PlainClassifier, with cls.py --fmap's fracture-map head) costs in this engine, beside the tiny ir-CSN's:
 * forward, both BCEs, backward and AdamW on random crops, the median of --steps steps after two warm ones.
 *   deno run -A bench/recipe/plain_step.ts [--batch 8] [--steps 8] [--widths 16,32,64,64]
 */
import { F, models, nn, openDevice, optim, rand, randn, tidy } from "../../mod.ts";
import type { Tensor } from "../../mod.ts";
import { parseFlags } from "../../cli/flags.ts";
import { driverInfo } from "../measure.ts";

const f = parseFlags(Deno.args, {
  batch: { type: "number", default: 8, help: "crops per step" },
  steps: { type: "number", default: 8, help: "timed steps" },
  widths: { type: "string", default: "16,32,64,64", help: "the plain CNN's four widths" },
});
const widths = String(f.widths).split(",").map(Number);
const B = f.batch as number, steps = f.steps as number;
const device = await openDevice();
console.log(`device: ${driverInfo(device).label}`);

/** conv 3x3x3 + BN + ReLU blocks of --widths, max pools (1,2,2), 2, 2; global max; Linear; map head. */
class Plain extends nn.Module {
  readonly features: nn.Sequential;
  readonly final: nn.Linear;
  readonly where: nn.Conv3d;
  constructor() {
    super();
    const pools: ([number, number, number] | null)[] = [[1, 2, 2], [2, 2, 2], [2, 2, 2], null];
    const layers: nn.Module[] = [];
    widths.forEach((w, i) => {
      layers.push(
        new nn.Conv3d(i ? widths[i - 1] : 3, w, [3, 3, 3], { device, padding: [1, 1, 1], bias: false }),
        new nn.BatchNorm3d(w, { device }),
        new nn.ReLU(),
      );
      if (pools[i]) layers.push(new nn.MaxPool3d(pools[i]!));
    });
    this.features = this.registerModule("features", new nn.Sequential(...layers));
    this.final = this.registerModule("final", new nn.Linear(widths[3], 8, { device }));
    this.where = this.registerModule("where", new nn.Conv3d(widths[3], 1, [1, 1, 1], { device }));
  }
  forward(x: Tensor): Tensor {
    return this.features.forward(x);
  }
}

async function time(name: string, model: nn.Module, step: (x: Tensor, y: Tensor) => Tensor) {
  const opt = new optim.AdamW(model.parameters(), { lr: 1e-3 });
  model.train();
  const ms: number[] = [];
  for (let s = 0; s < steps + 2; s++) {
    const t0 = performance.now();
    await tidy(async () => {
      const x = randn([B, 3, 16, 64, 64], { device, seed: s });
      const y = rand([B, 8], { device, seed: 100 + s });
      opt.zeroGrad();
      const loss = step(x, y);
      loss.backward();
      opt.step();
      return await loss.item();
    });
    if (s >= 2) ms.push(performance.now() - t0);
    if (s === steps) device.profiler?.reset();
  }
  ms.sort((a, b) => a - b);
  const n = model.parameters().reduce((a, p) => a + p.numel(), 0);
  console.log(
    `${name}: ${n.toLocaleString()} parameters, ${
      (ms[ms.length >> 1] / 1000).toFixed(3)
    } s a step (batch ${B})`,
  );
  if (device.profiler) {
    console.log(`GPU time by kernel, last step (CSN_PROFILE=1):\n${await device.profiler.report(14)}`);
  }
  model.dispose();
}

const plain = new Plain();
await time(`plain 3x3x3 CNN ${widths} + map head`, plain, (x, y) => {
  const feat = plain.forward(x);
  const logits = plain.final.forward(F.max(feat, [2, 3, 4]));
  const map = plain.where.forward(feat);
  const target = rand(map.shape, { device, seed: 7 });
  return F.add(F.bceWithLogits(logits, y), F.bceWithLogits(map, target));
});
const csn = new models.CSNClassifier({ device, encoder: "r26ir", baseChannels: 8, numClasses: 8 });
await time("tiny ir-CSN (r26ir width 8)", csn, (x, y) => F.bceWithLogits(csn.forward(x), y));
device.destroy();
